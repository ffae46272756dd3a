//! The differentiable path: the same distances as [`crate::distance`], written with candle
//! tensor operations so that losses can back-propagate through them.
//!
//! Every operation used here has a backward pass in candle (no fused softmax or layer
//! norm), and nothing clamps the log-variance. Pairwise functions take `[N, D]` and
//! `[M, D]` and return `[N, M]`; paired functions take two `[N, D]` and return `[N]`. Both
//! share one formula per distance: a pairwise call broadcasts `[N, 1, D]` against
//! `[1, M, D]`, a paired call compares `[N, D]` with `[N, D]`. Pairwise CSD instead uses
//! its GEMM decomposition, `‖mu1‖² + ‖mu2‖² − 2·mu1·mu2ᵀ + Σs1 + Σs2`, which never forms
//! the `N×M×D` tensor, and pairwise MLS on the CPU and on CUDA devices is one fused
//! operation with its own backward pass ([`pairwise_formula`] is the broadcast form, used
//! on other devices).

use candle_core::{Tensor, D};

use crate::distance::{Distance, MLS_EPS};
use crate::error::{CoreError, Result};
use crate::match_prob::MIN_SCALE;

/// A batch of Gaussian embeddings as candle tensors: mean and log-variance, both `[N, D]`.
#[derive(Debug, Clone)]
pub struct GaussianTensor {
    /// Means `[N, D]`.
    pub mean: Tensor,
    /// Log-variances `v = log σ²`, `[N, D]`.
    pub log_var: Tensor,
}

impl GaussianTensor {
    /// Checks that both are floating-point `[N, D]` tensors of one shape, dtype and device,
    /// with `D ≥ 1`. (Finiteness is not checked here: it would copy the data to the host.)
    pub fn new(mean: Tensor, log_var: Tensor) -> Result<Self> {
        let bad = |detail: String| CoreError::Tensor {
            what: "GaussianTensor::new",
            detail,
        };
        if mean.rank() != 2 {
            return Err(bad(format!("mean must be [N, D], got {:?}", mean.dims())));
        }
        if mean.dims() != log_var.dims() {
            return Err(CoreError::Shape {
                what: "GaussianTensor::new",
                detail: format!(
                    "mean is {:?} but log-variance is {:?}",
                    mean.dims(),
                    log_var.dims()
                ),
            });
        }
        if mean.dim(1)? == 0 {
            return Err(CoreError::Empty {
                what: "GaussianTensor::new",
                detail: "embedding dimension D must be at least 1",
            });
        }
        if mean.dtype() != log_var.dtype() || !mean.dtype().is_float() {
            return Err(bad(format!(
                "mean and log-variance need one float dtype, got {:?} and {:?}",
                mean.dtype(),
                log_var.dtype()
            )));
        }
        if !mean.device().same_device(log_var.device()) {
            return Err(bad("mean and log-variance are on different devices".into()));
        }
        Ok(Self { mean, log_var })
    }

    /// Number of items `N`.
    pub fn len(&self) -> usize {
        self.mean.dims()[0]
    }

    /// `true` when `N = 0`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Embedding dimension `D`.
    pub fn dim(&self) -> usize {
        self.mean.dims()[1]
    }

    /// Variances `exp(v)`.
    pub fn variance(&self) -> Result<Tensor> {
        Ok(self.log_var.exp()?)
    }

    /// `KL(N(mu, σ²) ‖ N(0, I)) = ½ Σ_d (σ² + mu² − 1 − v)` per item, `[N]` (the VIB term;
    /// reductions over the batch are the losses' business).
    pub fn kl_to_standard_normal(&self) -> Result<Tensor> {
        let t = ((self.log_var.exp()? + self.mean.sqr()?)? - &self.log_var)?;
        Ok((t.sum(D::Minus1)? - self.dim() as f64)?.affine(0.5, 0.0)?)
    }

    /// The same embeddings with each mean scaled to unit L2 norm (PCME++ style).
    pub fn l2_normalized(&self) -> Result<Self> {
        let norm = self.mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        Ok(Self {
            mean: self.mean.broadcast_div(&norm)?,
            log_var: self.log_var.clone(),
        })
    }

    /// Reparameterised samples `mu + σ·ε` for given noise `ε` of shape `[N, K, D]`
    /// (candle's CPU generator cannot be seeded, so the caller draws `ε`).
    pub fn sample_with_noise(&self, noise: &Tensor) -> Result<Tensor> {
        let sigma = self.log_var.affine(0.5, 0.0)?.exp()?.unsqueeze(1)?;
        Ok(self
            .mean
            .unsqueeze(1)?
            .broadcast_add(&noise.broadcast_mul(&sigma)?)?)
    }

    /// Copy to the host as validated `f32` embeddings.
    pub fn to_embeddings(&self) -> Result<crate::GaussianEmbeddings> {
        crate::GaussianEmbeddings::from_tensors(&self.mean, &self.log_var)
    }
}

/// `[N, M]` distances between every item of `a` and every item of `b`.
pub fn pairwise(distance: Distance, a: &GaussianTensor, b: &GaussianTensor) -> Result<Tensor> {
    check_pair("tensor::pairwise", a, b, false)?;
    if distance == Distance::Csd {
        return csd_gemm(a, b);
    }
    // The fused operation has a CUDA kernel only with this crate's `cuda` feature (candle
    // may have CUDA through another crate's feature without it).
    let device = a.mean.device();
    if distance == Distance::Mls
        && (device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda()))
    {
        return mls_fused(a, b);
    }
    pairwise_formula(distance, a, b)
}

/// Pairwise MLS on the CPU or a CUDA device as one operation with a hand-written backward
/// pass ([`crate::fused`]); the same values and gradients as the tensor formula, without
/// its `N×M×D` temporaries.
fn mls_fused(a: &GaussianTensor, b: &GaussianTensor) -> Result<Tensor> {
    let rows = |g: &GaussianTensor| Tensor::cat(&[&g.mean, &g.log_var], 1)?.contiguous();
    let op = crate::fused::MlsPairwise { dim: a.dim() };
    Ok(rows(a)?.apply_op2(&rows(b)?, op)?)
}

/// Pairwise distances by the broadcast tensor formula (what every device can run); the
/// reference the fused CPU and CUDA kernels are tested against.
pub fn pairwise_formula(
    distance: Distance,
    a: &GaussianTensor,
    b: &GaussianTensor,
) -> Result<Tensor> {
    check_pair("tensor::pairwise_formula", a, b, false)?;
    let u = |t: &Tensor, dim| t.unsqueeze(dim);
    formula(
        distance,
        &u(&a.mean, 1)?,
        &u(&a.log_var, 1)?,
        &u(&b.mean, 0)?,
        &u(&b.log_var, 0)?,
    )
}

/// `[N]` distances between `a_i` and `b_i`.
pub fn paired(distance: Distance, a: &GaussianTensor, b: &GaussianTensor) -> Result<Tensor> {
    check_pair("tensor::paired", a, b, true)?;
    formula(distance, &a.mean, &a.log_var, &b.mean, &b.log_var)
}

/// The closed-form match logits `−max(a, 1e-3)·d + b` (SPEC §3) with learnable scalar
/// tensors `a` and `b` (shape `[]` or `[1]`); `sigmoid` of this is the match probability.
pub fn match_logits(d: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let a = a.maximum(MIN_SCALE)?.flatten_all()?;
    let b = b.flatten_all()?;
    if a.dims() != [1] || b.dims() != [1] {
        return Err(CoreError::Tensor {
            what: "tensor::match_logits",
            detail: format!(
                "a and b must be scalars, got {:?} and {:?}",
                a.dims(),
                b.dims()
            ),
        });
    }
    Ok(d.broadcast_mul(&a)?.neg()?.broadcast_add(&b)?)
}

fn check_pair(
    what: &'static str,
    a: &GaussianTensor,
    b: &GaussianTensor,
    same_len: bool,
) -> Result<()> {
    if a.dim() != b.dim() || (same_len && a.len() != b.len()) {
        return Err(CoreError::Shape {
            what,
            detail: format!("{:?} against {:?}", a.mean.dims(), b.mean.dims()),
        });
    }
    if a.mean.dtype() != b.mean.dtype() {
        return Err(CoreError::Tensor {
            what,
            detail: format!(
                "dtypes differ: {:?} vs {:?}",
                a.mean.dtype(),
                b.mean.dtype()
            ),
        });
    }
    Ok(())
}

/// `‖mu1‖² + ‖mu2‖² − 2·mu1·mu2ᵀ + Σs1 + Σs2`: one matrix product instead of `N×M×D`.
fn csd_gemm(a: &GaussianTensor, b: &GaussianTensor) -> Result<Tensor> {
    let row = |g: &GaussianTensor| -> Result<Tensor> {
        Ok((g.mean.sqr()?.sum_keepdim(1)? + g.log_var.exp()?.sum_keepdim(1)?)?)
    };
    let cross = a.mean.matmul(&b.mean.t()?)?.affine(-2.0, 0.0)?;
    Ok(cross
        .broadcast_add(&row(a)?)?
        .broadcast_add(&row(b)?.t()?)?)
}

/// One formula per distance, summed over the last dimension; operands broadcast.
fn formula(
    distance: Distance,
    m1: &Tensor,
    v1: &Tensor,
    m2: &Tensor,
    v2: &Tensor,
) -> Result<Tensor> {
    let dim = m1.dim(D::Minus1)? as f64;
    let dm2 = m1.broadcast_sub(m2)?.sqr()?;
    let out = match distance {
        Distance::Csd => dm2
            .broadcast_add(&v1.exp()?)?
            .broadcast_add(&v2.exp()?)?
            .sum(D::Minus1)?,
        Distance::Mls => {
            let s1 = v1.exp()?.maximum(MLS_EPS)?;
            let s2 = v2.exp()?.maximum(MLS_EPS)?;
            let t = s1.broadcast_add(&s2)?;
            ((dm2 / &t)? + (t + MLS_EPS)?.log()?)?
                .sum(D::Minus1)?
                .affine(0.5, 0.0)?
        }
        Distance::Wasserstein2 => {
            let sd1 = v1.affine(0.5, 0.0)?.exp()?;
            let sd2 = v2.affine(0.5, 0.0)?.exp()?;
            (dm2 + sd1.broadcast_sub(&sd2)?.sqr()?)?.sum(D::Minus1)?
        }
        Distance::Bhattacharyya | Distance::Hellinger => {
            let db = bhattacharyya(dm2, v1, v2, dim)?;
            if distance == Distance::Bhattacharyya {
                db
            } else {
                // 1 − e^{−D_B}; D_B ≥ 0 up to rounding.
                db.maximum(0.0)?.neg()?.exp()?.neg()?.affine(1.0, 1.0)?
            }
        }
        Distance::SymmetricKl => {
            // s1/s2 + s2/s1 − 2 = (h − 1/h)², h = exp((v1 − v2)/2): never negative, and
            // exactly zero for identical items.
            let h = v1.broadcast_sub(v2)?.affine(0.5, 0.0)?.exp()?;
            let g = (&h - h.recip()?)?.sqr()?;
            let inv = v1.neg()?.exp()?.broadcast_add(&v2.neg()?.exp()?)?;
            (g + (dm2 * inv)?)?.sum(D::Minus1)?.affine(0.5, 0.0)?
        }
    };
    Ok(out)
}

fn bhattacharyya(dm2: Tensor, v1: &Tensor, v2: &Tensor, dim: f64) -> Result<Tensor> {
    let t = v1.exp()?.broadcast_add(&v2.exp()?)?;
    let per_dim = ((dm2 / &t)?.affine(0.25, 0.0)? + t.log()?.affine(0.5, 0.0)?)?;
    let v_sum = v1
        .sum_keepdim(D::Minus1)?
        .broadcast_add(&v2.sum_keepdim(D::Minus1)?)?
        .squeeze(D::Minus1)?;
    Ok((per_dim.sum(D::Minus1)? - v_sum.affine(0.25, 0.5 * std::f64::consts::LN_2 * dim)?)?)
}

/// A float dtype check for callers that build tensors from user data.
pub fn ensure_float(what: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(CoreError::Tensor {
            what,
            detail: format!("expected a float tensor, got {:?}", t.dtype()),
        })
    }
}

#[cfg(test)]
mod fused_tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Values and gradients (of a weighted sum, so every output carries a different upstream
    /// gradient) of `pairwise` and `pairwise_formula`.
    fn both(dtype: DType, log_var_scale: f64) -> Vec<(Tensor, Tensor)> {
        let dev = Device::Cpu;
        let (n, m, d) = (5, 7, 6);
        let lin = |len: usize, k: f64| {
            Tensor::new(
                (0..len)
                    .map(|i| (i as f64 * k).sin() * 1.7)
                    .collect::<Vec<f64>>(),
                &dev,
            )
            .unwrap()
        };
        let var = |rows: usize, k: f64, scale: f64| {
            let t = (lin(rows * d, k) * scale)
                .unwrap()
                .reshape((rows, d))
                .unwrap();
            Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
        };
        let (ma, va) = (var(n, 0.37, 1.0), var(n, 0.91, log_var_scale));
        let (mb, vb) = (var(m, 0.53, 1.0), var(m, 0.29, log_var_scale));
        let w = lin(n * m, 1.13)
            .reshape((n, m))
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let a = GaussianTensor::new(ma.as_tensor().clone(), va.as_tensor().clone()).unwrap();
        let b = GaussianTensor::new(mb.as_tensor().clone(), vb.as_tensor().clone()).unwrap();
        let mut out = Vec::new();
        type Pairwise = fn(Distance, &GaussianTensor, &GaussianTensor) -> Result<Tensor>;
        for f in [pairwise as Pairwise, pairwise_formula] {
            let y = f(Distance::Mls, &a, &b).unwrap();
            let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g: Vec<Tensor> = [&ma, &va, &mb, &vb]
                .iter()
                .map(|v| grads.get(v.as_tensor()).unwrap().flatten_all().unwrap())
                .collect();
            out.push((y.flatten_all().unwrap(), Tensor::cat(&g, 0).unwrap()));
        }
        out
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
        let a = a.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
        let b = b.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
        let scale = b.iter().fold(1.0f64, |s, x| s.max(x.abs()));
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() / scale)
            .fold(0.0, f64::max)
    }

    #[test]
    fn fused_mls_matches_the_formula_in_value_and_gradient() {
        // Scale 10 puts log-variances near ±17, beyond the ε clamp (ln 1e-6 ≈ −13.8).
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            for scale in [1.0, 10.0] {
                let r = both(dtype, scale);
                let (fused, formula) = (&r[0], &r[1]);
                let (dv, dg) = (max_rel(&fused.0, &formula.0), max_rel(&fused.1, &formula.1));
                assert!(dv < tol, "{dtype:?} scale {scale}: values differ by {dv}");
                assert!(
                    dg < tol,
                    "{dtype:?} scale {scale}: gradients differ by {dg}"
                );
            }
        }
    }
}
