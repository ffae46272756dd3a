//! The variational information bottleneck term `KL(N(mu, σ²) ‖ N(0, I))` (SPEC §4), with
//! the two reductions the reference codes use under one name each.

use candle_core::Tensor;
use medprob_core::GaussianTensor;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// How the per-dimension KL terms are reduced to one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VibReduction {
    /// MedProbCLIP: sum over dimensions, mean over the batch.
    SumDimsMeanBatch,
    /// PCME++: mean over the batch *and* the dimensions (`D` times smaller).
    MeanAll,
}

/// The VIB KL of a batch under `reduction`, a scalar tensor.
pub fn vib_kl(g: &GaussianTensor, reduction: VibReduction) -> Result<Tensor> {
    let per_item = g.kl_to_standard_normal()?;
    let kl = per_item.mean_all()?;
    Ok(match reduction {
        VibReduction::SumDimsMeanBatch => kl,
        VibReduction::MeanAll => kl.affine(1.0 / g.dim() as f64, 0.0)?,
    })
}
