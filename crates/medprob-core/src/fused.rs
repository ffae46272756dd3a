//! Pairwise MLS as one operation (CPU, and CUDA with the `cuda` feature) with a hand-written
//! backward pass.
//!
//! Written with tensor operations (`[N, 1, D]` against `[1, M, D]`), MLS costs a dozen
//! `N×M×D` temporaries forward and, backward, strided reductions over the broadcast
//! dimensions — the largest single cost of a MedProbCLIP training step on a CPU. Here the
//! forward pass is one loop over `(i, j, d)` and the backward pass two (one per side), with
//! no temporaries beyond the outputs:
//!
//! `MLS_ij = ½ Σ_d [ (μ_id − μ'_jd)² / t + log(t + ε) ]`, `t = s_id + s'_jd`,
//! `s = max(e^v, ε)`, so with `q = (μ_id − μ'_jd) / t`:
//! `∂/∂μ_id = q`, `∂/∂μ'_jd = −q`, `∂/∂v_id = ½ (1/(t + ε) − q²) · e^v` (zero where
//! `e^v < ε`), and likewise for `v'_jd`.
//!
//! Inputs are `[N, 2D]` rows `mean ‖ log_var` (joined with a differentiable `cat`, so
//! gradients reach both tensors). On the CPU, arithmetic is in `f64` whatever the storage
//! type (`f32` or `f64`). With the `cuda` feature both operations also run on CUDA devices
//! (`kernels/mls_pairwise.cu`, launched from `src/cuda/mls.rs`): tiled kernels that never
//! form an `N×M×D` array, computing `f32`, `f16` and `bf16` in `f32` and `f64` in `f64`.
//! [`crate::tensor::pairwise`] uses the tensor formula on other devices (Metal).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::distance::MLS_EPS;

#[cfg(feature = "cuda")]
#[path = "cuda/mls.rs"]
mod cuda;

/// Rows `[n, 2d]` of one side, in `f64`, with `s = max(e^v, ε)` precomputed.
struct Side {
    n: usize,
    mean: Vec<f64>,
    var: Vec<f64>,
    /// `dv/ds`: `e^v` where it exceeds the clamp, else 0.
    dvar: Vec<f64>,
}

fn to_f64(s: &CpuStorage, l: &Layout, what: &str) -> candle_core::Result<Vec<f64>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: input must be contiguous");
    };
    Ok(match s {
        CpuStorage::F32(v) => v[start..end].iter().map(|&x| x as f64).collect(),
        CpuStorage::F64(v) => v[start..end].to_vec(),
        _ => candle_core::bail!("{what}: only f32 and f64 are supported"),
    })
}

fn from_f64(values: Vec<f64>, like: &CpuStorage) -> CpuStorage {
    match like {
        CpuStorage::F32(_) => CpuStorage::F32(values.into_iter().map(|x| x as f32).collect()),
        _ => CpuStorage::F64(values),
    }
}

fn side(s: &CpuStorage, l: &Layout, d: usize) -> candle_core::Result<Side> {
    let dims = l.shape().dims();
    if dims.len() != 2 || dims[1] != 2 * d {
        candle_core::bail!("mls-pairwise: expected [N, {}], got {dims:?}", 2 * d);
    }
    let n = dims[0];
    let rows = to_f64(s, l, "mls-pairwise")?;
    let mut mean = Vec::with_capacity(n * d);
    let mut var = Vec::with_capacity(n * d);
    let mut dvar = Vec::with_capacity(n * d);
    for row in rows.chunks_exact(2 * d) {
        mean.extend_from_slice(&row[..d]);
        for &v in &row[d..] {
            let e = v.exp();
            var.push(e.max(MLS_EPS));
            dvar.push(if e >= MLS_EPS { e } else { 0.0 });
        }
    }
    Ok(Side { n, mean, var, dvar })
}

/// The forward operation: `[N, 2D] × [M, 2D] → [N, M]`.
pub(crate) struct MlsPairwise {
    pub(crate) dim: usize,
}

impl CustomOp2 for MlsPairwise {
    fn name(&self) -> &'static str {
        "medprob-mls-pairwise"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dim;
        let (a, b) = (side(s1, l1, d)?, side(s2, l2, d)?);
        let mut out = vec![0.0f64; a.n * b.n];
        out.par_chunks_mut(b.n.max(1))
            .enumerate()
            .for_each(|(i, row)| {
                let (ma, sa) = (&a.mean[i * d..(i + 1) * d], &a.var[i * d..(i + 1) * d]);
                for (j, o) in row.iter_mut().enumerate() {
                    let (mb, sb) = (&b.mean[j * d..(j + 1) * d], &b.var[j * d..(j + 1) * d]);
                    let mut acc = 0.0;
                    for k in 0..d {
                        let t = sa[k] + sb[k];
                        let dm = ma[k] - mb[k];
                        acc += dm * dm / t + (t + MLS_EPS).ln();
                    }
                    *o = 0.5 * acc;
                }
            });
        Ok((from_f64(out, s1), Shape::from((a.n, b.n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::forward(self.dim, s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        arg1: &Tensor,
        arg2: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let n = arg1.dim(0)?;
        let m = arg2.dim(0)?;
        let g = arg1.apply_op3_no_bwd(
            arg2,
            &grad_res.contiguous()?,
            &MlsPairwiseGrad { dim: self.dim },
        )?;
        Ok((Some(g.narrow(0, 0, n)?), Some(g.narrow(0, n, m)?)))
    }
}

/// The backward operation: `(a [N, 2D], b [M, 2D], G [N, M]) → [N + M, 2D]`, the gradients
/// of `Σ G ⊙ MLS(a, b)` with respect to `a`'s rows, then `b`'s.
struct MlsPairwiseGrad {
    dim: usize,
}

/// Gradient rows of one side: `this` is the side whose rows are written, `other` the side
/// summed over; `g(i, j)` reads the upstream gradient for (this row i, other row j). MLS is
/// symmetric in its two arguments, so one formula serves both sides: `q` is computed as
/// `(this − other) / t`, which is already `−q` for the second argument.
fn grad_rows(
    this: &Side,
    other: &Side,
    d: usize,
    g: impl Fn(usize, usize) -> f64 + Sync,
) -> Vec<f64> {
    let mut out = vec![0.0f64; this.n * 2 * d];
    out.par_chunks_mut(2 * d).enumerate().for_each(|(i, row)| {
        let (gm, gv) = row.split_at_mut(d);
        let (mi, si) = (
            &this.mean[i * d..(i + 1) * d],
            &this.var[i * d..(i + 1) * d],
        );
        for j in 0..other.n {
            let w = g(i, j);
            if w == 0.0 {
                continue;
            }
            let (mj, sj) = (
                &other.mean[j * d..(j + 1) * d],
                &other.var[j * d..(j + 1) * d],
            );
            for k in 0..d {
                let t = si[k] + sj[k];
                let q = (mi[k] - mj[k]) / t;
                gm[k] += w * q;
                gv[k] += w * 0.5 * (1.0 / (t + MLS_EPS) - q * q);
            }
        }
        for (k, v) in gv.iter_mut().enumerate() {
            *v *= this.dvar[i * d + k];
        }
    });
    out
}

impl CustomOp3 for MlsPairwiseGrad {
    fn name(&self) -> &'static str {
        "medprob-mls-pairwise-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dim;
        let (a, b) = (side(s1, l1, d)?, side(s2, l2, d)?);
        let g = to_f64(s3, l3, "mls-pairwise-grad")?;
        if g.len() != a.n * b.n {
            candle_core::bail!(
                "mls-pairwise-grad: gradient has {} values for [{}, {}]",
                g.len(),
                a.n,
                b.n
            );
        }
        let m = b.n;
        let mut out = grad_rows(&a, &b, d, |i, j| g[i * m + j]);
        out.extend(grad_rows(&b, &a, d, |j, i| g[i * m + j]));
        Ok((from_f64(out, s1), Shape::from((a.n + b.n, 2 * d))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::backward(self.dim, (s1, l1), (s2, l2), (s3, l3))
    }
}
