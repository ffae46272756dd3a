//! What every objective returns: the differentiable total and its named parts for logging.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// The named parts of a loss, as host numbers (one JSONL record per step in training).
/// Parts an objective does not have stay `None` and are left out of the JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LossParts {
    /// The total loss.
    pub total: f64,
    /// Image–text terms (MedProbCLIP: mean of the four view/section pairs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inter: Option<f64>,
    /// Image–image term, unweighted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intra_image: Option<f64>,
    /// Text–text term, unweighted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intra_text: Option<f64>,
    /// The weighted VIB contribution to the total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vib: Option<f64>,
    /// Image KL (the objective's reduction, averaged over views).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_image: Option<f64>,
    /// Text KL (the objective's reduction, averaged over sections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_text: Option<f64>,
    /// The weighted pseudo-positive (smoothing) contribution to the total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudo: Option<f64>,
    /// Pseudo-positives added in this batch (both directions, all pairs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_pseudo: Option<usize>,
    /// Match-probability scale `a` as used (after the clamp).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Match-probability shift `b`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shift: Option<f64>,
    /// Softmax temperature `t = exp(logit_scale)` as used (after the clamp).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
}

/// A loss value to back-propagate and its parts to log.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// Scalar tensor; call `backward()` on it.
    pub total: Tensor,
    /// Host copies of the parts.
    pub parts: LossParts,
}
