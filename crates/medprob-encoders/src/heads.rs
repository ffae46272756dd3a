//! Heads from a backbone feature to an embedding.
//!
//! * [`ProbabilisticHead`]: one linear layer to `2·D`, split into mean and log-variance, the
//!   log-variance clamped to `[-6, 6]` (SPEC §1; the only clamp in medprob).
//! * [`DeterministicHead`]: one linear layer to `D`, L2-normalised (CLIP and CXR-CLIP).

use candle_core::{Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::ops::Linear;
use medprob_core::{GaussianTensor, LogVarianceClamp};

use crate::error::Result;

/// Backbone feature → Gaussian embedding `(mu, v)`.
pub struct ProbabilisticHead {
    proj: Linear,
    dim: usize,
    clamp: LogVarianceClamp,
    normalize_mean: bool,
    log_variance_offset: f64,
}

impl ProbabilisticHead {
    /// `in_dim → 2·dim` under `vb` (`proj.weight`, `proj.bias`).
    pub fn new(in_dim: usize, dim: usize, clamp: LogVarianceClamp, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            proj: Linear::new(in_dim, 2 * dim, vb.pp("proj"))?,
            dim,
            clamp,
            normalize_mean: false,
            log_variance_offset: 0.0,
        })
    }

    /// L2-normalise the means (PCME++ does; MedProbCLIP does not, SPEC §1) and add a
    /// constant to the log-variance before the clamp (where training should start from
    /// small variances: `v = offset + proj(x)`).
    pub fn with_options(mut self, normalize_mean: bool, log_variance_offset: f64) -> Self {
        self.normalize_mean = normalize_mean;
        self.log_variance_offset = log_variance_offset;
        self
    }

    /// `[B, in_dim]` → mean and clamped log-variance, each `[B, dim]`.
    pub fn forward(&self, features: &Tensor) -> Result<GaussianTensor> {
        let out = self.proj.forward(features)?;
        let mut mean = out.narrow(D::Minus1, 0, self.dim)?;
        if self.normalize_mean {
            let norm = mean
                .sqr()?
                .sum_keepdim(D::Minus1)?
                .affine(1.0, 1e-12)?
                .sqrt()?;
            mean = mean.broadcast_div(&norm)?;
        }
        let log_var = self.clamp.apply_tensor(
            &out.narrow(D::Minus1, self.dim, self.dim)?
                .affine(1.0, self.log_variance_offset)?,
        )?;
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
            proj: Linear::new(in_dim, dim, vb.pp("proj"))?,
        })
    }

    /// `[B, in_dim]` → `[B, dim]`, each row of unit L2 norm.
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let e = self.proj.forward(features)?;
        let norm = (e.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
        Ok(e.broadcast_div(&norm)?)
    }
}
