//! One batch through the model and the method's objective.
//!
//! Every method sees the same data: two image views and two report sections per study.
//! MedProbCLIP and CXR-CLIP use all four in their own objectives; CLIP and PCME++ are
//! single-pair objectives, applied to (view 1, section 1) and (view 2, section 2) and
//! averaged, so no method sees less of the data than another.

use candle_core::{Device, Tensor};
use medprob_data::loader::TrainItem;
use medprob_data::tokenize::ReportTokenizer;
use medprob_encoders::{Embedded, MedProbModel};
use medprob_losses::medprobclip::{MedProbClipLoss, MultiView};
use medprob_losses::pcmepp::PcmeppLoss;
use medprob_losses::{clip_loss, cxr_clip_loss, targets, LossOutput, LossParts};

use crate::config::{Method, TrainConfig};
use crate::error::{Result, TrainError};

/// Images `[B, C, S, S]` from flat `[C·S·S]` buffers.
pub fn image_tensor(images: &[&[f32]], size: u32, device: &Device) -> Result<Tensor> {
    let per = images.first().map_or(0, |i| i.len());
    let s = size as usize;
    let channels = if s > 0 { per / (s * s) } else { 0 };
    if channels == 0 || images.iter().any(|i| i.len() != per) || per != channels * s * s {
        return Err(TrainError::config(
            "data.image_size",
            format!("image buffers of {per} values do not form [C, {s}, {s}]"),
        ));
    }
    let flat: Vec<f32> = images.iter().flat_map(|i| i.iter().copied()).collect();
    Ok(Tensor::from_vec(
        flat,
        (images.len(), channels, s, s),
        device,
    )?)
}

/// Token ids and mask `[B, L]` for a list of texts.
pub fn text_tensors<S: AsRef<str> + Send + Sync>(
    tokenizer: &ReportTokenizer,
    texts: &[S],
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let b = tokenizer.encode_batch(texts)?;
    let ids = Tensor::from_vec(b.ids, (b.batch, b.length), device)?;
    let mask = Tensor::from_vec(b.attention_mask, (b.batch, b.length), device)?;
    Ok((ids, mask))
}

/// The method's loss on one batch.
pub struct Objective {
    method: Method,
    medprobclip: MedProbClipLoss,
    pcmepp: PcmeppLoss,
    config: TrainConfig,
}

impl Objective {
    /// Build from a validated config.
    pub fn new(config: &TrainConfig) -> Result<Self> {
        Ok(Self {
            method: config.method,
            medprobclip: MedProbClipLoss::new(config.medprobclip.clone())?,
            pcmepp: PcmeppLoss::new(config.pcmepp.clone())?,
            config: config.clone(),
        })
    }

    /// Forward pass and loss; `step` drives MedProbCLIP's pseudo-positive warm-up.
    pub fn loss(
        &self,
        model: &MedProbModel,
        tokenizer: &ReportTokenizer,
        batch: &[TrainItem],
        step: usize,
        device: &Device,
    ) -> Result<LossOutput> {
        let size = self.config.data.image_size;
        let view = |k: usize| -> Result<Tensor> {
            let v: Vec<&[f32]> = batch.iter().map(|it| it.images[k].as_slice()).collect();
            image_tensor(&v, size, device)
        };
        let text = |k: usize| -> Result<(Tensor, Tensor)> {
            let t: Vec<&str> = batch.iter().map(|it| it.texts[k].as_str()).collect();
            text_tensors(tokenizer, &t, device)
        };
        let (i1, i2) = (view(0)?, view(1)?);
        let ((t1, m1), (t2, m2)) = (text(0)?, text(1)?);
        // Both views (and both sections) in one pass of their encoder each.
        let [e_i1, e_i2]: [Embedded; 2] = model
            .encode_image_views(&[&i1, &i2], true)?
            .try_into()
            .map_err(|_| {
            TrainError::config("model", "two image views gave other than two embeddings")
        })?;
        let [e_t1, e_t2]: [Embedded; 2] = model
            .encode_text_sections(&[(&t1, &m1), (&t2, &m2)], true)?
            .try_into()
            .map_err(|_| {
                TrainError::config("model", "two sections gave other than two embeddings")
            })?;
        let ids: Vec<&str> = batch.iter().map(|it| it.study_id.as_str()).collect();
        let tg = targets::from_keys(&ids, candle_core::DType::F32, device)?;
        let (scale, shift) = model.match_parameters()?;
        let (scale, shift) = (&scale, &shift);
        let gaussian = |e: &Embedded| match e {
            Embedded::Gaussian(g) => Ok(g.clone()),
            Embedded::Unit(_) => Err(TrainError::config(
                "method",
                "a probabilistic method got deterministic embeddings",
            )),
        };
        Ok(match self.method {
            Method::MedProbClip => {
                let (a, b, c, d) = (
                    gaussian(&e_i1)?,
                    gaussian(&e_i2)?,
                    gaussian(&e_t1)?,
                    gaussian(&e_t2)?,
                );
                let views = MultiView {
                    image1: &a,
                    image2: &b,
                    text1: &c,
                    text2: &d,
                };
                self.medprobclip
                    .forward(&views, scale, shift, Some(&tg), step)?
            }
            Method::Pcmepp => {
                let one = self.pcmepp.forward(
                    &gaussian(&e_i1)?,
                    &gaussian(&e_t1)?,
                    scale,
                    shift,
                    Some(&tg),
                )?;
                let two = self.pcmepp.forward(
                    &gaussian(&e_i2)?,
                    &gaussian(&e_t2)?,
                    scale,
                    shift,
                    Some(&tg),
                )?;
                average(one, two)?
            }
            Method::Clip => {
                let ls = model.logit_scale()?;
                let one = clip_loss(e_i1.mean(), e_t1.mean(), &ls, Some(&tg))?;
                let two = clip_loss(e_i2.mean(), e_t2.mean(), &ls, Some(&tg))?;
                average(one, two)?
            }
            Method::CxrClip => cxr_clip_loss(
                &self.config.cxr_clip,
                e_i1.mean(),
                e_i2.mean(),
                e_t1.mean(),
                e_t2.mean(),
                &model.logit_scale()?,
                Some(&tg),
            )?,
        })
    }
}

/// The mean of two losses and of their logged parts.
fn average(a: LossOutput, b: LossOutput) -> Result<LossOutput> {
    let total = ((&a.total + &b.total)? * 0.5)?;
    let mean = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => Some((x + y) / 2.0),
        _ => x.or(y),
    };
    let (p, q) = (a.parts, b.parts);
    let parts = LossParts {
        total: (p.total + q.total) / 2.0,
        inter: mean(p.inter, q.inter),
        intra_image: mean(p.intra_image, q.intra_image),
        intra_text: mean(p.intra_text, q.intra_text),
        vib: mean(p.vib, q.vib),
        kl_image: mean(p.kl_image, q.kl_image),
        kl_text: mean(p.kl_text, q.kl_text),
        pseudo: mean(p.pseudo, q.pseudo),
        n_pseudo: p.n_pseudo.or(q.n_pseudo),
        scale: p.scale.or(q.scale),
        shift: p.shift.or(q.shift),
        temperature: p.temperature.or(q.temperature),
    };
    Ok(LossOutput { total, parts })
}
