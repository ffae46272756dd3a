//! The PCME++ objective (Chun, ICLR 2024), SPEC §4:
//!
//! `L = 2·BCE(L, M) + β·(KL_I + KL_T) + α·[BCE(L, M′) + BCE(Lᵀ, M″)]`,
//! `L_ij = −a·CSD(i, j) + b`, `M` the targets (identity by default), `M′`/`M″` the targets
//! plus pseudo-positives `L_ij ≥ L_ii` of each direction; the KL uses PCME++'s reduction (mean
//! over batch and dimensions) and each modality's KL is dropped from the total on its own when it exceeds the guard.
//! The factor 2 stands for the identical image→text and text→image BCE terms.

use candle_core::Tensor;
use medprob_core::{tensor, Distance, GaussianTensor};
use serde::{Deserialize, Serialize};

use crate::error::{finite, non_negative, LossError, Result};
use crate::ops::{bce_with_logits, check_rows_have_positive, scalar};
use crate::parts::{LossOutput, LossParts};
use crate::pseudo::{with_pseudo_positives, PseudoRule};
use crate::vib::{vib_kl, VibReduction};

/// Hyper-parameters of PCME++; defaults are its paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PcmeppConfig {
    /// Distance inside the logits (CSD; W2 for the paper's ablation).
    pub distance: Distance,
    /// Initial scale `a` ("negative_scale").
    pub init_scale: f64,
    /// Initial shift `b` ("shift").
    pub init_shift: f64,
    /// `β`, weight of the VIB term.
    pub vib_beta: f64,
    /// `α`, weight of the pseudo-positive terms (0 turns them off).
    pub smoothness_alpha: f64,
    /// Each modality's VIB term (`KL_I`, `KL_T`) is left out of the total on its own when
    /// it exceeds this, as in the official code.
    pub vib_guard: f64,
}

impl Default for PcmeppConfig {
    fn default() -> Self {
        Self {
            distance: Distance::Csd,
            init_scale: 5.0,
            init_shift: 5.0,
            vib_beta: 1e-4,
            smoothness_alpha: 0.1,
            vib_guard: 1e4,
        }
    }
}

impl PcmeppConfig {
    /// Rejects negative or non-finite weights, naming the field.
    pub fn validate(&self) -> Result<()> {
        non_negative("vib_beta", self.vib_beta)?;
        non_negative("smoothness_alpha", self.smoothness_alpha)?;
        non_negative("vib_guard", self.vib_guard)?;
        finite("init_scale", self.init_scale)?;
        finite("init_shift", self.init_shift)?;
        Ok(())
    }
}

/// The PCME++ objective.
#[derive(Debug, Clone)]
pub struct PcmeppLoss {
    config: PcmeppConfig,
}

impl PcmeppLoss {
    /// A loss with a validated config.
    pub fn new(config: PcmeppConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The config in force.
    pub fn config(&self) -> &PcmeppConfig {
        &self.config
    }

    /// The loss for `N` aligned image and text embeddings; `scale`/`shift` are `a`/`b`;
    /// `targets` an optional `[N, N]` matrix of (possibly soft) match targets.
    pub fn forward(
        &self,
        image: &GaussianTensor,
        text: &GaussianTensor,
        scale: &Tensor,
        shift: &Tensor,
        targets: Option<&Tensor>,
    ) -> Result<LossOutput> {
        let n = image.len();
        if text.len() != n {
            return Err(LossError::Shape {
                what: "PcmeppLoss::forward",
                detail: format!("{n} images against {} texts", text.len()),
            });
        }
        let c = &self.config;
        let d = tensor::pairwise(c.distance, image, text)?;
        let l = tensor::match_logits(&d, scale, shift)?;
        let eye;
        let m = match targets {
            Some(t) => {
                if t.dims() != [n, n] {
                    return Err(LossError::Shape {
                        what: "PcmeppLoss::forward targets",
                        detail: format!("expected [{n}, {n}], got {:?}", t.dims()),
                    });
                }
                check_rows_have_positive("PcmeppLoss::forward targets", t)?;
                t
            }
            None => {
                eye = Tensor::eye(n, l.dtype(), l.device())?;
                &eye
            }
        };
        let matching = bce_with_logits(&l, m)?.affine(2.0, 0.0)?;
        let mut total = matching;

        let r = VibReduction::MeanAll;
        let kl_i = vib_kl(image, r)?;
        let kl_t = vib_kl(text, r)?;
        // As the official code: each modality's KL is dropped on its own when it exceeds
        // the guard, so a diverging text head does not switch off the image's VIB term.
        let (kl_i_value, kl_t_value) = (scalar(&kl_i)?, scalar(&kl_t)?);
        let mut vib_value = 0.0;
        if c.vib_beta > 0.0 {
            for (kl, value) in [(&kl_i, kl_i_value), (&kl_t, kl_t_value)] {
                if value <= c.vib_guard {
                    vib_value += c.vib_beta * value;
                    total = (total + kl.affine(c.vib_beta, 0.0)?)?;
                }
            }
        }

        let mut n_pseudo = 0;
        let mut pseudo_value = 0.0;
        if c.smoothness_alpha > 0.0 {
            let lt = l.t()?;
            let mt = m.t()?;
            let (p, a1) = with_pseudo_positives(&l, Some(m), PseudoRule::AtLeastDiagonal)?;
            let (pt, a2) = with_pseudo_positives(&lt, Some(&mt), PseudoRule::AtLeastDiagonal)?;
            n_pseudo = a1 + a2;
            let smooth = (bce_with_logits(&l, &p)? + bce_with_logits(&lt, &pt)?)?
                .affine(c.smoothness_alpha, 0.0)?;
            pseudo_value = scalar(&smooth)?;
            total = (total + smooth)?;
        }
        let parts = LossParts {
            total: scalar(&total)?,
            inter: Some(scalar(&total)? - vib_value - pseudo_value),
            vib: Some(vib_value),
            kl_image: Some(kl_i_value),
            kl_text: Some(kl_t_value),
            pseudo: Some(pseudo_value),
            n_pseudo: Some(n_pseudo),
            scale: Some(scalar(scale)?.max(medprob_core::MIN_SCALE)),
            shift: Some(scalar(shift)?),
            ..LossParts::default()
        };
        Ok(LossOutput { total, parts })
    }
}
