//! Embedding an evaluation split: one image and one report per study, in study order,
//! without gradients — optionally with every image corrupted first.

use candle_core::{Device, Tensor};
use medprob_core::{Distance, GaussianEmbeddings};
use medprob_data::loader::StudyLoader;
use medprob_data::tokenize::ReportTokenizer;
use medprob_encoders::{Embedded, MedProbModel};
use medprob_metrics::corruption::Corruption;
use medprob_metrics::hubness::HubCorrection;

use crate::error::Result;
use crate::objective::{image_tensor, text_tensors};

/// The embeddings of a split and the studies they belong to.
#[derive(Debug, Clone)]
pub struct SplitEmbeddings {
    pub images: GaussianEmbeddings,
    pub texts: GaussianEmbeddings,
    /// Study ids, row-aligned with both.
    pub study_ids: Vec<String>,
    /// Index of each row's study in the loader's list.
    pub study_index: Vec<usize>,
}

impl SplitEmbeddings {
    /// These embeddings with both galleries hub-corrected against `bank` (a calibration
    /// split's embeddings): the images get their offsets against the bank's reports, the
    /// reports against the bank's images. Offsets only act where a batch is the gallery.
    pub fn hub_corrected(
        &self,
        correction: &HubCorrection,
        distance: Distance,
        bank: &SplitEmbeddings,
    ) -> Result<Self> {
        Ok(Self {
            images: correction.apply(distance, &bank.texts, &self.images)?,
            texts: correction.apply(distance, &bank.images, &self.texts)?,
            study_ids: self.study_ids.clone(),
            study_index: self.study_index.clone(),
        })
    }
}

/// Host embeddings from a model output (unit vectors get log-variance 0).
pub fn to_gaussian(e: &Embedded) -> Result<GaussianEmbeddings> {
    Ok(match e {
        Embedded::Gaussian(g) => GaussianEmbeddings::from_tensors(&g.mean, &g.log_var)?,
        Embedded::Unit(t) => GaussianEmbeddings::from_tensors(t, &t.zeros_like()?)?,
    })
}

fn stack(parts: Vec<GaussianEmbeddings>, dim: usize) -> Result<GaussianEmbeddings> {
    let n: usize = parts.iter().map(|p| p.len()).sum();
    let (mut m, mut v) = (Vec::with_capacity(n * dim), Vec::with_capacity(n * dim));
    for p in &parts {
        m.extend_from_slice(p.mean_slice());
        v.extend_from_slice(p.log_var_slice());
    }
    Ok(GaussianEmbeddings::from_vecs(n, dim, m, v)?)
}

/// Corrupt one model-input image `[C, S, S]` (normalised with `mean`/`std`, grey replicated
/// over channels): back to intensities, corrupt, normalise again.
pub fn corrupt_input(
    image: &[f32],
    size: u32,
    mean: f32,
    std: f32,
    corruption: Corruption,
    severity: u8,
    seed: u64,
) -> Result<Vec<f32>> {
    let plane = (size * size) as usize;
    let grey: Vec<f32> = image[..plane]
        .iter()
        .map(|&x| (x * std + mean).clamp(0.0, 1.0))
        .collect();
    let out = corruption.apply(severity, &grey, size, size, seed)?;
    let channels = image.len() / plane;
    let normalised: Vec<f32> = out.iter().map(|&x| (x - mean) / std).collect();
    Ok(normalised.repeat(channels))
}

/// Embed every evaluation item of `loader`. With `corruption`, each image is corrupted
/// (seeded by its study index) before encoding; reports are left clean.
pub fn embed_split(
    model: &MedProbModel,
    tokenizer: &ReportTokenizer,
    loader: &StudyLoader,
    size: u32,
    corruption: Option<(Corruption, u8)>,
    device: &Device,
) -> Result<SplitEmbeddings> {
    embed(model, Some(tokenizer), loader, size, corruption, device)
}

/// Embed only the images (`texts` is left empty): the robustness sweep re-encodes images
/// under each corruption against the clean reports it already has.
pub fn embed_images(
    model: &MedProbModel,
    loader: &StudyLoader,
    size: u32,
    corruption: Option<(Corruption, u8)>,
    device: &Device,
) -> Result<SplitEmbeddings> {
    embed(model, None, loader, size, corruption, device)
}

fn embed(
    model: &MedProbModel,
    tokenizer: Option<&ReportTokenizer>,
    loader: &StudyLoader,
    size: u32,
    corruption: Option<(Corruption, u8)>,
    device: &Device,
) -> Result<SplitEmbeddings> {
    let batches = loader.len().div_ceil(loader.config().batch_size.max(1));
    let (mut images, mut texts) = (Vec::new(), Vec::new());
    let (mut ids, mut index) = (Vec::new(), Vec::new());
    let t = &loader.config().image;
    for b in 0..batches {
        let items = loader.eval_batch(b)?;
        if items.is_empty() {
            continue;
        }
        let pixels: Vec<Vec<f32>> = match corruption {
            None => items.iter().map(|it| it.image.clone()).collect(),
            Some((c, s)) => items
                .iter()
                .map(|it| {
                    corrupt_input(&it.image, size, t.mean, t.std, c, s, it.study_index as u64)
                })
                .collect::<Result<_>>()?,
        };
        let refs: Vec<&[f32]> = pixels.iter().map(|p| p.as_slice()).collect();
        let x: Tensor = image_tensor(&refs, size, device)?;
        images.push(to_gaussian(&model.encode_images(&x, false)?)?);
        if let Some(tokenizer) = tokenizer {
            let text: Vec<&str> = items.iter().map(|it| it.text.as_str()).collect();
            let (tok, mask) = text_tensors(tokenizer, &text, device)?;
            texts.push(to_gaussian(&model.encode_texts(&tok, &mask, false)?)?);
        }
        ids.extend(items.iter().map(|it| it.study_id.clone()));
        index.extend(items.iter().map(|it| it.study_index));
    }
    let dim = model.config().embed_dim;
    Ok(SplitEmbeddings {
        images: stack(images, dim)?,
        texts: stack(texts, dim)?,
        study_ids: ids,
        study_index: index,
    })
}

/// Embed a list of texts (e.g. zero-shot prompts).
pub fn embed_texts(
    model: &MedProbModel,
    tokenizer: &ReportTokenizer,
    texts: &[String],
    device: &Device,
) -> Result<GaussianEmbeddings> {
    let (tok, mask) = text_tensors(tokenizer, texts, device)?;
    to_gaussian(&model.encode_texts(&tok, &mask, false)?)
}
