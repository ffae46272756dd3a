//! Numerically stable building blocks shared by the objectives, written with operations
//! that candle can differentiate.

use candle_core::{Tensor, D};

use crate::error::{LossError, Result};

/// Mean binary cross-entropy with logits, `mean(max(x, 0) − x·y + ln(1 + e^{−|x|}))`.
///
/// candle's `binary_cross_entropy_with_logit` takes `sigmoid` and then `ln`: in `f32` it
/// returns `inf` at a logit of +20 with target 0. This softplus form is finite for every
/// finite logit. `targets` may be soft (in `[0, 1]`).
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    same_shape("bce_with_logits", logits, targets)?;
    Ok(bce_terms(logits, targets)?.mean_all()?)
}

/// [`bce_with_logits`] with a weight per element: `Σ w·bce / max(Σ w, 1)` (a weight of 0
/// leaves an element out, e.g. an uncertain label).
pub fn weighted_bce_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> Result<Tensor> {
    same_shape("weighted_bce_with_logits", logits, targets)?;
    same_shape("weighted_bce_with_logits", logits, weights)?;
    let total = weights.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
    Ok(((bce_terms(logits, targets)? * weights)?.sum_all()? / total)?)
}

/// The per-element `max(x, 0) − x·y + ln(1 + e^{−|x|})`.
fn bce_terms(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let softplus_neg_abs = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok(((logits.relu()? - (logits * targets)?)? + softplus_neg_abs)?)
}

/// Row-wise `ln Σ_j exp(x_ij)`, shifted by the (detached) row maximum for stability.
pub fn log_sum_exp_rows(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let s = x.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok((s + m)?.squeeze(D::Minus1)?)
}

/// Mean over rows of `−ln Σ_{j ∈ P(i)} softmax(L_i)_j`, the multi-positive InfoNCE term.
///
/// `positives` is a 0/1 matrix of `L`'s shape (`None`: the diagonal, the one-to-one case).
/// Every row needs at least one positive.
pub fn multi_positive_cross_entropy(logits: &Tensor, positives: Option<&Tensor>) -> Result<Tensor> {
    let all = log_sum_exp_rows(logits)?;
    let pos = match positives {
        None => {
            let n = logits.dim(0)?.min(logits.dim(1)?);
            let idx = Tensor::arange(0u32, n as u32, logits.device())?.unsqueeze(1)?;
            logits
                .narrow(0, 0, n)?
                .contiguous()?
                .gather(&idx, 1)?
                .squeeze(1)?
        }
        Some(p) => {
            same_shape("multi_positive_cross_entropy", logits, p)?;
            // Non-positives are pushed to −1e30 (exactly zero weight after exp).
            let masked = (logits + ((p - 1.0)? * 1e30)?)?;
            log_sum_exp_rows(&masked)?
        }
    };
    Ok((all - pos)?.mean_all()?)
}

/// Mean over rows of `−Σ_j P_ij ln softmax(L_i)_j` for row-stochastic soft targets `P`.
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    same_shape("soft_cross_entropy", logits, targets)?;
    let log_p = logits.broadcast_sub(&log_sum_exp_rows(logits)?.unsqueeze(1)?)?;
    Ok((targets * log_p)?.sum(D::Minus1)?.neg()?.mean_all()?)
}

/// `true` if every row of a 0/1 matrix has at least one 1 (checked on the host).
pub(crate) fn check_rows_have_positive(what: &'static str, m: &Tensor) -> Result<()> {
    let rows = m
        .sum(D::Minus1)?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1::<f64>()?;
    if let Some(i) = rows.iter().position(|&s| s <= 0.0) {
        return Err(LossError::Shape {
            what,
            detail: format!("row {i} of the target matrix has no positive"),
        });
    }
    Ok(())
}

pub(crate) fn same_shape(what: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(LossError::Shape {
            what,
            detail: format!("{:?} against {:?}", a.dims(), b.dims()),
        });
    }
    Ok(())
}

/// A host copy of a scalar tensor, for logging.
pub(crate) fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1::<f64>()?[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn bce_is_finite_at_extreme_logits_in_f32() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[20.0f32, -100.0, 90.0, -20.0], &dev).unwrap();
        let y = Tensor::new(&[0.0f32, 1.0, 0.0, 1.0], &dev).unwrap();
        let got = bce_with_logits(&x, &y).unwrap().to_scalar::<f32>().unwrap();
        // Per element: softplus(20), softplus(100), softplus(90), softplus(20).
        let want = ((20.0f64 + (-20f64).exp().ln_1p()) * 2.0 + 100.0 + 90.0) / 4.0;
        assert!((got as f64 - want).abs() < 1e-4, "{got} vs {want}");
        // candle's own version overflows here.
        let candle = candle_nn_free_bce(&x, &y);
        assert!(!candle.is_finite());
    }

    /// What candle-nn's `binary_cross_entropy_with_logit` computes: `ln σ(x)` via sigmoid.
    fn candle_nn_free_bce(x: &Tensor, y: &Tensor) -> f32 {
        let s = (x.neg().unwrap().exp().unwrap() + 1.0)
            .unwrap()
            .recip()
            .unwrap();
        let l = ((y * s.log().unwrap()).unwrap()
            + ((y.affine(-1.0, 1.0).unwrap()) * (s.affine(-1.0, 1.0).unwrap()).log().unwrap())
                .unwrap())
        .unwrap();
        l.neg()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn multi_positive_equals_identity_form_for_the_diagonal() {
        let dev = Device::Cpu;
        let l = Tensor::new(
            &[[1.0f64, 2.0, 0.5], [0.1, -1.0, 3.0], [2.0, 2.0, 2.0]],
            &dev,
        )
        .unwrap();
        let eye = Tensor::eye(3, DType::F64, &dev).unwrap();
        let a = scalar(&multi_positive_cross_entropy(&l, None).unwrap()).unwrap();
        let b = scalar(&multi_positive_cross_entropy(&l, Some(&eye)).unwrap()).unwrap();
        let soft = scalar(&soft_cross_entropy(&l, &eye).unwrap()).unwrap();
        // Row 0: lse(1, 2, .5) − 1, etc.
        let lse = |r: [f64; 3]| r.iter().map(|x| x.exp()).sum::<f64>().ln();
        let want =
            ((lse([1.0, 2.0, 0.5]) - 1.0) + (lse([0.1, -1.0, 3.0]) + 1.0) + (lse([2.0; 3]) - 2.0))
                / 3.0;
        for v in [a, b, soft] {
            assert!((v - want).abs() < 1e-12, "{v} vs {want}");
        }
    }

    #[test]
    fn empty_target_row_is_an_error() {
        let dev = Device::Cpu;
        let m = Tensor::new(&[[1.0f32, 0.0], [0.0, 0.0]], &dev).unwrap();
        let e = check_rows_have_positive("t", &m).unwrap_err();
        assert!(e.to_string().contains("row 1"), "{e}");
    }
}
