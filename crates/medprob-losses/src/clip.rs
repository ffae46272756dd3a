//! The deterministic baselines: CLIP's symmetric InfoNCE and CXR-CLIP (SPEC §4).
//!
//! Both use L2-normalised embeddings (the means, for a Gaussian head) and a learnable
//! temperature `t = exp(logit_scale)`, initialised to `1/0.07` and clamped to `t ≤ 100`.

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use crate::error::{non_negative, LossError, Result};
use crate::ops::{multi_positive_cross_entropy, scalar};
use crate::parts::{LossOutput, LossParts};

/// Largest temperature.
pub const MAX_TEMPERATURE: f64 = 100.0;

/// `ln(1/0.07)`, CLIP's initial `logit_scale`.
pub fn initial_logit_scale() -> f64 {
    (1.0f64 / 0.07).ln()
}

/// `t · x̂·ŷᵀ` with rows L2-normalised and `t = min(exp(logit_scale), 100)`.
pub fn clip_logits(x: &Tensor, y: &Tensor, logit_scale: &Tensor) -> Result<Tensor> {
    let unit = |t: &Tensor| -> Result<Tensor> {
        let norm = (t.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
        Ok(t.broadcast_div(&norm)?)
    };
    let temp = temperature(logit_scale)?;
    Ok(unit(x)?.matmul(&unit(y)?.t()?)?.broadcast_mul(&temp)?)
}

fn temperature(logit_scale: &Tensor) -> Result<Tensor> {
    Ok(logit_scale.flatten_all()?.exp()?.minimum(MAX_TEMPERATURE)?)
}

/// `½[CE(L) + CE(Lᵀ)]`, multi-positive when `targets` is given.
pub fn symmetric_info_nce(logits: &Tensor, targets: Option<&Tensor>) -> Result<Tensor> {
    let tt = match targets {
        Some(t) => Some(t.t()?),
        None => None,
    };
    Ok((multi_positive_cross_entropy(logits, targets)?
        + multi_positive_cross_entropy(&logits.t()?, tt.as_ref())?)?
    .affine(0.5, 0.0)?)
}

fn check(what: &'static str, xs: &[&Tensor], targets: Option<&Tensor>) -> Result<usize> {
    let n = xs[0].dim(0)?;
    for x in xs {
        if x.rank() != 2 || x.dims() != xs[0].dims() {
            return Err(LossError::Shape {
                what,
                detail: format!(
                    "embeddings must all be [N, D]: {:?} vs {:?}",
                    x.dims(),
                    xs[0].dims()
                ),
            });
        }
    }
    if let Some(t) = targets {
        if t.dims() != [n, n] {
            return Err(LossError::Shape {
                what,
                detail: format!("targets must be [{n}, {n}], got {:?}", t.dims()),
            });
        }
        crate::ops::check_rows_have_positive(what, t)?;
    }
    Ok(n)
}

/// CLIP: symmetric InfoNCE between image and text embeddings `[N, D]`.
pub fn clip_loss(
    image: &Tensor,
    text: &Tensor,
    logit_scale: &Tensor,
    targets: Option<&Tensor>,
) -> Result<LossOutput> {
    check("clip_loss", &[image, text], targets)?;
    let total = symmetric_info_nce(&clip_logits(image, text, logit_scale)?, targets)?;
    let parts = LossParts {
        total: scalar(&total)?,
        inter: Some(scalar(&total)?),
        temperature: Some(scalar(&temperature(logit_scale)?)?),
        ..LossParts::default()
    };
    Ok(LossOutput { total, parts })
}

/// CLIP's one hyper-parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClipConfig {
    /// Initial `logit_scale` (`ln(1/0.07)`); the temperature is `exp` of it, at most 100.
    pub init_logit_scale: f64,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            init_logit_scale: initial_logit_scale(),
        }
    }
}

/// Weights of CXR-CLIP's extra terms; defaults are its paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CxrClipConfig {
    /// Initial `logit_scale`, as CLIP.
    pub init_logit_scale: f64,
    /// Weight of the image–image contrastive term (ICL).
    pub icl_weight: f64,
    /// Weight of the text–text contrastive term (TCL).
    pub tcl_weight: f64,
}

impl Default for CxrClipConfig {
    fn default() -> Self {
        Self {
            init_logit_scale: initial_logit_scale(),
            icl_weight: 1.0,
            tcl_weight: 0.5,
        }
    }
}

/// CXR-CLIP: CLIP averaged over the four (view, section) pairs, plus
/// `icl_weight·ICL(I1, I2) + tcl_weight·TCL(T1, T2)`, all with the shared temperature.
#[allow(clippy::too_many_arguments)]
pub fn cxr_clip_loss(
    config: &CxrClipConfig,
    image1: &Tensor,
    image2: &Tensor,
    text1: &Tensor,
    text2: &Tensor,
    logit_scale: &Tensor,
    targets: Option<&Tensor>,
) -> Result<LossOutput> {
    non_negative("icl_weight", config.icl_weight)?;
    non_negative("tcl_weight", config.tcl_weight)?;
    check("cxr_clip_loss", &[image1, image2, text1, text2], targets)?;
    let nce =
        |x: &Tensor, y: &Tensor| symmetric_info_nce(&clip_logits(x, y, logit_scale)?, targets);
    let inter = (((nce(image1, text1)? + nce(image1, text2)?)? + nce(image2, text1)?)?
        + nce(image2, text2)?)?
    .affine(0.25, 0.0)?;
    let icl = nce(image1, image2)?;
    let tcl = nce(text1, text2)?;
    let total = ((inter.clone() + icl.affine(config.icl_weight, 0.0)?)?
        + tcl.affine(config.tcl_weight, 0.0)?)?;
    let parts = LossParts {
        total: scalar(&total)?,
        inter: Some(scalar(&inter)?),
        intra_image: Some(scalar(&icl)?),
        intra_text: Some(scalar(&tcl)?),
        temperature: Some(scalar(&temperature(logit_scale)?)?),
        ..LossParts::default()
    };
    Ok(LossOutput { total, parts })
}
