//! Pseudo-positive selection (SPEC §4), computed on detached logits on the host.
//!
//! PCME++ marks `M′_ij = 1` where `L_ij ≥ L_{i,gt(i)}` ("at least as close as the true
//! match"). The MedProbCLIP reference defines a top-k rule (k = 8) and a threshold but never
//! uses either; ours offers both rules.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Which off-target entries of a row become pseudo-positives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum PseudoRule {
    /// `L_ij ≥ L_ii` (PCME++).
    AtLeastDiagonal,
    /// The `k` largest logits of the row outside the targets.
    TopK {
        /// How many per row.
        k: usize,
    },
}

/// Targets `max(M, pseudo)` as a 0/1 tensor shaped like `logits`, and the number of
/// pseudo-positives added (entries that were 0 in `M`). `targets = None` means identity.
pub fn with_pseudo_positives(
    logits: &Tensor,
    targets: Option<&Tensor>,
    rule: PseudoRule,
) -> Result<(Tensor, usize)> {
    let l = logits
        .detach()
        .to_dtype(candle_core::DType::F64)?
        .to_vec2::<f64>()?;
    let n = l.len();
    let m: Vec<Vec<f64>> = match targets {
        Some(t) => t.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?,
        None => (0..n)
            .map(|i| (0..l[i].len()).map(|j| (i == j) as u8 as f64).collect())
            .collect(),
    };
    let mut out = m.clone();
    let mut added = 0;
    for i in 0..n {
        let row = &l[i];
        let chosen: Vec<usize> = match rule {
            PseudoRule::AtLeastDiagonal => (0..row.len()).filter(|&j| row[j] >= row[i]).collect(),
            PseudoRule::TopK { k } => {
                let mut idx: Vec<usize> = (0..row.len()).filter(|&j| m[i][j] <= 0.0).collect();
                idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                idx.truncate(k);
                idx
            }
        };
        for j in chosen {
            if out[i][j] <= 0.0 {
                out[i][j] = 1.0;
                added += 1;
            }
        }
    }
    let flat: Vec<f64> = out.into_iter().flatten().collect();
    let t = Tensor::from_vec(flat, logits.dims(), logits.device())?.to_dtype(logits.dtype())?;
    Ok((t, added))
}

/// Each row divided by its sum (rows with the diagonal always have one).
pub(crate) fn row_normalise(t: &Tensor) -> Result<Tensor> {
    Ok(t.broadcast_div(&t.sum_keepdim(candle_core::D::Minus1)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn rules_pick_the_expected_entries() {
        let l = Tensor::new(
            &[[0.0f64, 1.0, -1.0, 0.5], [2.0, 1.0, 3.0, 0.0]],
            &Device::Cpu,
        )
        .unwrap();
        let (t, n) = with_pseudo_positives(&l, None, PseudoRule::AtLeastDiagonal).unwrap();
        assert_eq!(
            t.to_vec2::<f64>().unwrap(),
            vec![vec![1., 1., 0., 1.], vec![1., 1., 1., 0.]]
        );
        assert_eq!(n, 4);
        let (t, n) = with_pseudo_positives(&l, None, PseudoRule::TopK { k: 1 }).unwrap();
        assert_eq!(
            t.to_vec2::<f64>().unwrap(),
            vec![vec![1., 1., 0., 0.], vec![0., 1., 1., 0.]]
        );
        assert_eq!(n, 2);
    }
}
