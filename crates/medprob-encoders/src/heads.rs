//! Heads from a backbone feature to an embedding.
//!
//! * [`ProbabilisticHead`]: one linear layer to `2·D`, split into mean and log-variance, the
//!   log-variance clamped to `[-6, 6]` (SPEC §1; the only clamp in medprob).
//! * [`DeterministicHead`]: one linear layer to `D`, L2-normalised (CLIP and CXR-CLIP).

use candle_core::{Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use medprob_core::{GaussianTensor, LogVarianceClamp};

use crate::error::Result;

/// Backbone feature → Gaussian embedding `(mu, v)`.
pub struct ProbabilisticHead {
    proj: Linear,
    dim: usize,
    clamp: LogVarianceClamp,
}

impl ProbabilisticHead {
    /// `in_dim → 2·dim` under `vb` (`proj.weight`, `proj.bias`).
    pub fn new(in_dim: usize, dim: usize, clamp: LogVarianceClamp, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            proj: candle_nn::linear(in_dim, 2 * dim, vb.pp("proj"))?,
            dim,
            clamp,
        })
    }

    /// `[B, in_dim]` → mean and clamped log-variance, each `[B, dim]`.
    pub fn forward(&self, features: &Tensor) -> Result<GaussianTensor> {
        let out = self.proj.forward(features)?;
        let mean = out.narrow(D::Minus1, 0, self.dim)?;
        let log_var = self
            .clamp
            .apply_tensor(&out.narrow(D::Minus1, self.dim, self.dim)?)?;
        Ok(GaussianTensor::new(
            mean.contiguous()?,
            log_var.contiguous()?,
        )?)
    }
}

/// Backbone feature → unit-norm embedding.
pub struct DeterministicHead {
    proj: Linear,
}

impl DeterministicHead {
    /// `in_dim → dim` under `vb` (`proj.weight`, `proj.bias`).
    pub fn new(in_dim: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            proj: candle_nn::linear(in_dim, dim, vb.pp("proj"))?,
        })
    }

    /// `[B, in_dim]` → `[B, dim]`, each row of unit L2 norm.
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let e = self.proj.forward(features)?;
        let norm = (e.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
        Ok(e.broadcast_div(&norm)?)
    }
}
