//! The MedProbCLIP multi-view, multi-section objective (SPEC §4).
//!
//! With two image views `I1, I2` and two report sections `T1, T2` per study,
//! `ℓ(X, Y) = ½[CE(L) + CE(Lᵀ)]`, `L_ij = −a·d(x_i, y_j) + b` and `d` the MLS by default:
//!
//! `¼[ℓ(I1,T1) + ℓ(I1,T2) + ℓ(I2,T1) + ℓ(I2,T2)] + λ_I ℓ(I1,I2) + λ_T ℓ(T1,T2)
//!  + β_I ½(KL(I1) + KL(I2)) + β_T ½(KL(T1) + KL(T2))`.
//!
//! Departures from the reference code, each deliberate and optional:
//! * `objective = sigmoid` replaces the softmax by a BCE on the same logits, so that `b`
//!   receives a gradient and `sigmoid(L)` becomes a calibrated match probability (under the
//!   softmax, `b` cancels);
//! * pseudo-positive smoothing, defined but never used by the reference, is wired here
//!   (off by default): each pair term adds `α·½[CE_soft(L, P) + CE_soft(Lᵀ, Pᵀ)]` with `P` the
//!   row-normalised targets plus pseudo-positives, `α` warmed up linearly;
//! * a target matrix (duplicates) replaces the identity when given.

use candle_core::Tensor;
use medprob_core::{tensor, Distance, GaussianTensor};
use serde::{Deserialize, Serialize};

use crate::error::{finite, non_negative, LossError, Result};
use crate::ops::{bce_with_logits, multi_positive_cross_entropy, scalar, soft_cross_entropy};
use crate::parts::{LossOutput, LossParts};
use crate::pseudo::{row_normalise, with_pseudo_positives, PseudoRule};
use crate::vib::{vib_kl, VibReduction};

/// Softmax (InfoNCE, the reference) or sigmoid (BCE) pair terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// `½[CE(L) + CE(Lᵀ)]`, multi-positive when targets are given.
    Softmax,
    /// `½[BCE(L, M) + BCE(Lᵀ, Mᵀ)]`, mean over all entries (as PCME++).
    Sigmoid,
}

/// Pseudo-positive smoothing for MedProbCLIP's pair terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PseudoPositives {
    /// Off by default, as in the reference (where it is dead code).
    pub enabled: bool,
    /// Selection rule; the reference's is top-k with k = 8.
    pub rule: PseudoRule,
    /// Weight `α` after warm-up.
    pub alpha: f64,
    /// Optimisation steps over which `α` rises linearly from 0 (the reference: one epoch).
    pub warmup_steps: usize,
}

impl Default for PseudoPositives {
    fn default() -> Self {
        Self {
            enabled: false,
            rule: PseudoRule::TopK { k: 8 },
            alpha: 0.1,
            warmup_steps: 0,
        }
    }
}

/// Hyper-parameters of the MedProbCLIP loss; defaults are the reference training run's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MedProbClipConfig {
    /// Distance inside the logits (MLS in the reference).
    pub distance: Distance,
    /// Softmax (reference) or sigmoid pair terms.
    pub objective: Objective,
    /// `λ_I`, weight of the image–image term.
    pub lambda_image: f64,
    /// `λ_T`, weight of the text–text term (reference run: 0.1; its class default is 1.0).
    pub lambda_text: f64,
    /// `β_I`, weight of the image VIB term.
    pub beta_image: f64,
    /// `β_T`, weight of the text VIB term.
    pub beta_text: f64,
    /// Initial scale `a`.
    pub init_scale: f64,
    /// Initial shift `b`.
    pub init_shift: f64,
    /// Pseudo-positive smoothing (off by default).
    pub pseudo_positives: PseudoPositives,
}

impl Default for MedProbClipConfig {
    fn default() -> Self {
        Self {
            distance: Distance::Mls,
            objective: Objective::Softmax,
            lambda_image: 1.0,
            lambda_text: 0.1,
            beta_image: 1e-4,
            beta_text: 1e-4,
            init_scale: 1.0,
            init_shift: 0.0,
            pseudo_positives: PseudoPositives::default(),
        }
    }
}

impl MedProbClipConfig {
    /// Rejects negative or non-finite weights and an empty top-k, naming the field.
    pub fn validate(&self) -> Result<()> {
        let weights = [
            ("lambda_image", self.lambda_image),
            ("lambda_text", self.lambda_text),
            ("beta_image", self.beta_image),
            ("beta_text", self.beta_text),
            ("pseudo_positives.alpha", self.pseudo_positives.alpha),
        ];
        for (field, v) in weights {
            non_negative(field, v)?;
        }
        finite("init_scale", self.init_scale)?;
        finite("init_shift", self.init_shift)?;
        if let PseudoRule::TopK { k: 0 } = self.pseudo_positives.rule {
            return Err(LossError::Config {
                field: "pseudo_positives.rule.k",
                value: "0".into(),
                reason: "top-k needs k ≥ 1",
            });
        }
        Ok(())
    }
}

/// Two image views and two report sections of the same `N` studies, row-aligned.
#[derive(Debug, Clone, Copy)]
pub struct MultiView<'a> {
    /// First image view.
    pub image1: &'a GaussianTensor,
    /// Second image view (the same image differently augmented when a study has one).
    pub image2: &'a GaussianTensor,
    /// First report section (findings).
    pub text1: &'a GaussianTensor,
    /// Second report section (impression).
    pub text2: &'a GaussianTensor,
}

/// The MedProbCLIP objective.
#[derive(Debug, Clone)]
pub struct MedProbClipLoss {
    config: MedProbClipConfig,
}

impl MedProbClipLoss {
    /// A loss with a validated config.
    pub fn new(config: MedProbClipConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The config in force.
    pub fn config(&self) -> &MedProbClipConfig {
        &self.config
    }

    /// The loss for one batch.
    ///
    /// `scale` and `shift` are the learnable `a` and `b` (scalar tensors); `targets` an
    /// optional `[N, N]` 0/1 matrix of true matches (default identity), applied to every
    /// pair term; `step` the optimisation step, for the pseudo-positive warm-up.
    pub fn forward(
        &self,
        views: &MultiView<'_>,
        scale: &Tensor,
        shift: &Tensor,
        targets: Option<&Tensor>,
        step: usize,
    ) -> Result<LossOutput> {
        let n = views.image1.len();
        for (what, g) in [
            ("image2", views.image2),
            ("text1", views.text1),
            ("text2", views.text2),
        ] {
            if g.len() != n || g.dim() != views.image1.dim() {
                return Err(LossError::Shape {
                    what: "MedProbClipLoss::forward",
                    detail: format!(
                        "{what} is {:?}, image1 is {:?}",
                        g.mean.dims(),
                        views.image1.mean.dims()
                    ),
                });
            }
        }
        if let Some(t) = targets {
            if t.dims() != [n, n] {
                return Err(LossError::Shape {
                    what: "MedProbClipLoss::forward targets",
                    detail: format!("expected [{n}, {n}], got {:?}", t.dims()),
                });
            }
            crate::ops::check_rows_have_positive("MedProbClipLoss::forward targets", t)?;
        }
        let c = &self.config;
        let pp = &c.pseudo_positives;
        let alpha = if pp.enabled {
            let ramp = if pp.warmup_steps == 0 {
                1.0
            } else {
                (step as f64 / pp.warmup_steps as f64).min(1.0)
            };
            pp.alpha * ramp
        } else {
            0.0
        };
        let mut n_pseudo = 0;
        // Smoothing value of each pair term, unweighted, in call order.
        let mut smoothing: Vec<f64> = Vec::with_capacity(6);
        let mut term = |x: &GaussianTensor, y: &GaussianTensor| -> Result<Tensor> {
            let d = tensor::pairwise(c.distance, x, y)?;
            let l = tensor::match_logits(&d, scale, shift)?;
            let lt = l.t()?;
            let tt = match targets {
                Some(t) => Some(t.t()?),
                None => None,
            };
            let base = match c.objective {
                Objective::Softmax => {
                    (multi_positive_cross_entropy(&l, targets)?
                        + multi_positive_cross_entropy(&lt, tt.as_ref())?)?
                }
                Objective::Sigmoid => {
                    let eye;
                    let (m, mt) = match (targets, tt.as_ref()) {
                        (Some(m), Some(mt)) => (m, mt),
                        _ => {
                            eye = Tensor::eye(n, l.dtype(), l.device())?;
                            (&eye, &eye)
                        }
                    };
                    (bce_with_logits(&l, m)? + bce_with_logits(&lt, mt)?)?
                }
            };
            let mut value = base.affine(0.5, 0.0)?;
            if alpha > 0.0 {
                let (p, added) = with_pseudo_positives(&l, targets, pp.rule)?;
                let (pt, added_t) = with_pseudo_positives(&lt, tt.as_ref(), pp.rule)?;
                n_pseudo += added + added_t;
                let smooth = (soft_cross_entropy(&l, &row_normalise(&p)?)?
                    + soft_cross_entropy(&lt, &row_normalise(&pt)?)?)?
                .affine(0.5 * alpha, 0.0)?;
                smoothing.push(scalar(&smooth)?);
                value = (value + smooth)?;
            }
            Ok(value)
        };
        let (i1, i2, t1, t2) = (views.image1, views.image2, views.text1, views.text2);
        let inter = (((term(i1, t1)? + term(i1, t2)?)? + term(i2, t1)?)? + term(i2, t2)?)?
            .affine(0.25, 0.0)?;
        let intra_i = term(i1, i2)?;
        let intra_t = term(t1, t2)?;
        let pseudo_total = match smoothing[..] {
            [s1, s2, s3, s4, si, st] => {
                0.25 * (s1 + s2 + s3 + s4) + c.lambda_image * si + c.lambda_text * st
            }
            _ => 0.0,
        };
        let r = VibReduction::SumDimsMeanBatch;
        let kl_i = (vib_kl(i1, r)? + vib_kl(i2, r)?)?.affine(0.5, 0.0)?;
        let kl_t = (vib_kl(t1, r)? + vib_kl(t2, r)?)?.affine(0.5, 0.0)?;
        let vib = (kl_i.affine(c.beta_image, 0.0)? + kl_t.affine(c.beta_text, 0.0)?)?;
        let total = (((inter.clone() + intra_i.affine(c.lambda_image, 0.0)?)?
            + intra_t.affine(c.lambda_text, 0.0)?)?
            + &vib)?;
        let parts = LossParts {
            total: scalar(&total)?,
            inter: Some(scalar(&inter)?),
            intra_image: Some(scalar(&intra_i)?),
            intra_text: Some(scalar(&intra_t)?),
            vib: Some(scalar(&vib)?),
            kl_image: Some(scalar(&kl_i)?),
            kl_text: Some(scalar(&kl_t)?),
            pseudo: pp.enabled.then_some(pseudo_total),
            n_pseudo: pp.enabled.then_some(n_pseudo),
            scale: Some(scalar(scale)?.max(medprob_core::MIN_SCALE)),
            shift: Some(scalar(shift)?),
            temperature: None,
        };
        Ok(LossOutput { total, parts })
    }
}
