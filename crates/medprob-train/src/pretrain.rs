//! The shared pretraining stage: both backbones learn to read the training split's CSV
//! labels before any method's own training starts from them.
//!
//! What it sees, plainly: the training studies' images (both views, augmented as in
//! training), their first report section whole (findings, the impression when findings
//! are empty: the text the labels are read from; no text augmentation) and the 14 CheXpert label columns of the
//! training CSV. A linear classifier on each backbone's pooled feature is trained with a
//! binary cross-entropy per label (`1` positive; `0` and blank negative; `−1` left out).
//! It never sees the validation or test labels, SynthCXR's hidden state, or a pairing of
//! images with reports: image and text are trained side by side, not against each other,
//! so every method still has to learn the alignment itself. The classifiers are thrown
//! away; every method starts from the same two backbones and the same tokenizer, so the
//! comparison stays fair.
//!
//! ```text
//! <dir>/image.safetensors   the image backbone (names without the `image.` prefix)
//! <dir>/text.safetensors    the text backbone (names without the `text.` prefix)
//! <dir>/tokenizer.json      the tokenizer both were trained with
//! <dir>/log.jsonl           loss per step, validation AUROC per epoch
//! <dir>/pretrain.json       the settings, written last: its presence marks a finished stage
//! ```
//!
//! A finished stage with the same settings is reused (the quickstart's four methods share
//! one); a folder holding a stage with other settings is an error, never overwritten.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Module, Tensor};
use medprob_data::record::{Label, StudyRecord};
use medprob_data::tokenize::ReportTokenizer;
use medprob_encoders::SeededVarMap;
use medprob_losses::ops::weighted_bce_with_logits;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::objective::{image_tensor, text_tensors};
use crate::optim::{clip_global_norm, collect_grads, AdamW, OptimConfig};
use crate::setup::{build_model, build_tokenizer, loader, read_splits};
use crate::trainer::{batches_per_epoch, print_line, step_bar, Verbosity};

/// Settings of the pretraining stage (`[pretrain]`); `epochs = 0` turns it off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// Passes over the training split (0: no pretraining, backbones start at random).
    pub epochs: usize,
    /// Peak learning rate (warm-up and cosine decay as in training).
    pub lr: f64,
    /// Folder of the stage (default: `<out>/pretrain`; the quickstart shares one).
    pub dir: Option<PathBuf>,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            epochs: 0,
            lr: 2e-3,
            dir: None,
        }
    }
}

/// What a finished stage left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Pretrained {
    /// The stage's folder.
    pub dir: PathBuf,
    /// Validation mean AUROC of the image classifier at the last epoch.
    pub image_auroc: Option<f64>,
    /// Validation mean AUROC of the text classifier at the last epoch.
    pub text_auroc: Option<f64>,
}

impl Pretrained {
    /// The image backbone's weights.
    pub fn image_weights(&self) -> PathBuf {
        self.dir.join("image.safetensors")
    }
    /// The text backbone's weights.
    pub fn text_weights(&self) -> PathBuf {
        self.dir.join("text.safetensors")
    }
    /// The tokenizer.
    pub fn tokenizer(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
}

/// Everything the stage's result depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StageKey {
    data: crate::config::DataConfig,
    image: medprob_encoders::ImageBackbone,
    text: crate::config::TextSpec,
    text_pooling: medprob_encoders::Pooling,
    image_weights: Option<PathBuf>,
    batch_size: usize,
    seed: u64,
    epochs: usize,
    lr: f64,
}

/// What `pretrain.json` records: the settings and the last validation AUROCs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StageRecord {
    #[serde(flatten)]
    settings: StageKey,
    #[serde(default)]
    image_auroc: Option<f64>,
    #[serde(default)]
    text_auroc: Option<f64>,
}

impl StageKey {
    fn of(config: &TrainConfig) -> Self {
        Self {
            // The stage reads whole texts (labels describe the whole text): text
            // augmentation is not one of its settings.
            data: crate::config::DataConfig {
                text_augment: None,
                ..config.data.clone()
            },
            image: config.model.image.clone(),
            text: config.model.text.clone(),
            text_pooling: config.model.text_pooling,
            image_weights: config.model.image_weights.clone(),
            batch_size: config.batch_size,
            seed: config.seed,
            epochs: config.pretrain.epochs,
            lr: config.pretrain.lr,
        }
    }
}

/// The stage's folder for `config`.
pub fn stage_dir(config: &TrainConfig) -> PathBuf {
    config
        .pretrain
        .dir
        .clone()
        .unwrap_or_else(|| config.out.join("pretrain"))
}

/// Targets and weights `[B, 14]` of the CSV labels (`−1` and unlabelled studies weigh 0).
fn label_targets(studies: &[&StudyRecord], device: &Device) -> Result<(Tensor, Tensor)> {
    let (mut t, mut w) = (Vec::new(), Vec::new());
    for s in studies {
        match &s.labels {
            Some(labels) => {
                for l in labels {
                    t.push(f32::from(*l == Label::Positive));
                    w.push(f32::from(*l != Label::Uncertain));
                }
            }
            None => {
                t.extend([0.0; 14]);
                w.extend([0.0; 14]);
            }
        }
    }
    let n = studies.len();
    Ok((
        Tensor::from_vec(t, (n, 14), device)?,
        Tensor::from_vec(w, (n, 14), device)?,
    ))
}

/// Run the stage for `config` (or reuse the finished one in its folder); `None` when
/// `pretrain.epochs` is 0.
pub fn pretrain(config: &TrainConfig, verbosity: Verbosity) -> Result<Option<Pretrained>> {
    if config.pretrain.epochs == 0 {
        return Ok(None);
    }
    let dir = stage_dir(config);
    let key = StageKey::of(config);
    let marker = dir.join("pretrain.json");
    if marker.is_file() {
        let text = std::fs::read_to_string(&marker).map_err(|e| TrainError::io(&marker, e))?;
        let saved: StageRecord = serde_json::from_str(&text).map_err(|e| TrainError::Input {
            path: marker.clone(),
            reason: e.to_string(),
        })?;
        if saved.settings != key {
            return Err(TrainError::config(
                "pretrain.dir",
                format!(
                    "{} holds a pretraining stage with other settings; choose another pretrain.dir or out",
                    dir.display()
                ),
            ));
        }
        return Ok(Some(Pretrained {
            dir,
            image_auroc: saved.image_auroc,
            text_auroc: saved.text_auroc,
        }));
    }
    let started = Instant::now();
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    let device = config.device.device()?;
    let splits = read_splits(&config.data.studies, &config.data.limits)?;
    if !splits.train.iter().any(|s| s.labels.is_some()) {
        return Err(TrainError::Input {
            path: config.data.studies.clone(),
            reason: "pretraining (pretrain.epochs > 0) needs the 14 CheXpert label columns; no training study has them".into(),
        });
    }
    let tokenizer = build_tokenizer(config, &splits.train)?;
    let model = build_model(config, tokenizer.vocab_size(), &device)?;
    let heads = SeededVarMap::new(config.seed ^ 0x0070_7265);
    let vb = heads.builder(candle_core::DType::F32, &device);
    let image_cls = candle_nn::linear(
        config.model.image.feature_dim(),
        14,
        vb.pp("image_classifier"),
    )?;
    let text_dim = model.config().text.hidden_size;
    let text_cls = candle_nn::linear(text_dim, 14, vb.pp("text_classifier"))?;
    let mut vars = model.trainable_vars();
    vars.extend(heads.named_vars());
    let optim = OptimConfig {
        lr: config.pretrain.lr,
        ..config.optim.clone()
    };
    let mut optimizer = AdamW::new(vars.clone(), optim.clone())?;
    // Whole texts: a sentence subset would no longer carry every label of the study.
    let whole = TrainConfig {
        data: key.data.clone(),
        ..config.clone()
    };
    let train_loader = loader(&whole, splits.train, true)?;
    let val_loader = loader(&whole, splits.validate, false)?;
    let batches = batches_per_epoch(config, &train_loader)?;
    let total = batches * config.pretrain.epochs;
    let log_path = dir.join("log.jsonl");
    let mut log = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&log_path)
        .map_err(|e| TrainError::io(&log_path, e))?;
    let mut write_log = |v: serde_json::Value| -> Result<()> {
        writeln!(log, "{v}").map_err(|e| TrainError::io(&log_path, e))
    };
    let bar = step_bar(verbosity, total, "pretraining (labels)");
    let size = config.data.image_size;
    let mut step = 0usize;
    let (mut image_auroc, mut text_auroc) = (None, None);
    for epoch in 0..config.pretrain.epochs {
        for b in 0..batches {
            model.set_step(step as u64);
            let items = train_loader.train_batch(epoch as u64, b)?;
            let studies: Vec<&StudyRecord> = items
                .iter()
                .map(|it| &train_loader.studies()[it.study_index])
                .collect();
            let (targets, weights) = label_targets(&studies, &device)?;
            let views: Vec<&[f32]> = items
                .iter()
                .flat_map(|it| [it.images[0].as_slice(), it.images[1].as_slice()])
                .collect();
            let images = image_tensor(&views, size, &device)?;
            let f = model
                .image_features(&images, true)?
                .to_dtype(candle_core::DType::F32)?;
            let image_logits = image_cls.forward(&f)?;
            let n = items.len();
            let twice = |t: &Tensor| -> Result<Tensor> {
                Ok(t.unsqueeze(1)?.repeat((1, 2, 1))?.reshape((2 * n, 14))?)
            };
            let image_loss =
                weighted_bce_with_logits(&image_logits, &twice(&targets)?, &twice(&weights)?)?;
            let texts: Vec<&str> = items.iter().map(|it| it.texts[0].as_str()).collect();
            let (ids, mask) = text_tensors(&tokenizer, &texts, &device)?;
            let g = model
                .text_features(&ids, &mask, true)?
                .to_dtype(candle_core::DType::F32)?;
            let text_loss = weighted_bce_with_logits(&text_cls.forward(&g)?, &targets, &weights)?;
            let loss = (&image_loss + &text_loss)?;
            let grads = loss.backward()?;
            let mut grads: BTreeMap<String, Tensor> = collect_grads(&vars, &grads);
            let norm = clip_global_norm(&mut grads, optim.grad_clip)?;
            let lr = optim.lr_at(step, total);
            let (li, lt) = (
                image_loss.to_scalar::<f32>()? as f64,
                text_loss.to_scalar::<f32>()? as f64,
            );
            if !(li.is_finite() && lt.is_finite() && norm.is_finite()) {
                bar.abandon();
                return Err(TrainError::Diverged(format!(
                    "pretraining step {step}: non-finite loss or gradient (image {li}, text {lt}); lower pretrain.lr"
                )));
            }
            optimizer.step(&grads, lr)?;
            step += 1;
            write_log(json!({
                "event": "step", "epoch": epoch + 1, "step": step, "lr": lr,
                "image_loss": li, "text_loss": lt, "grad_norm": norm,
            }))?;
            bar.set_message(format!("image {li:.3} text {lt:.3}"));
            bar.inc(1);
        }
        let (ia, ta) = validation_auroc(
            &model,
            &image_cls,
            &text_cls,
            &tokenizer,
            &val_loader,
            size,
            &device,
        )?;
        (image_auroc, text_auroc) = (ia, ta);
        write_log(json!({
            "event": "validation", "epoch": epoch + 1, "step": step,
            "image_mean_auroc": ia, "text_mean_auroc": ta,
        }))?;
        let line = format!(
            "pretraining epoch {}/{}: validation mean AUROC of the label classifiers: image {}, text {}",
            epoch + 1,
            config.pretrain.epochs,
            ia.map_or("n/a".into(), |v| format!("{v:.3}")),
            ta.map_or("n/a".into(), |v| format!("{v:.3}"))
        );
        print_line(&bar, verbosity, &line);
    }
    bar.finish_and_clear();
    medprob_encoders::model::save_safetensors(
        &dir.join("image.safetensors"),
        &model.backbone_tensors("image"),
    )?;
    medprob_encoders::model::save_safetensors(
        &dir.join("text.safetensors"),
        &model.backbone_tensors("text"),
    )?;
    tokenizer.save(&dir.join("tokenizer.json"))?;
    let done = StageRecord {
        settings: key,
        image_auroc,
        text_auroc,
    };
    let json = serde_json::to_vec_pretty(&done).expect("stage record serialises");
    medprob_core::fs::write_atomic(&marker, &json).map_err(|e| TrainError::io(&marker, e))?;
    if verbosity.progress {
        println!(
            "pretraining: {step} steps in {:.0} s, into {}",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
    }
    Ok(Some(Pretrained {
        dir,
        image_auroc,
        text_auroc,
    }))
}

/// Mean AUROC over the labels with both classes among the validation studies, of the
/// image classifier (evaluation view) and the text classifier (evaluation text).
fn validation_auroc(
    model: &medprob_encoders::MedProbModel,
    image_cls: &candle_nn::Linear,
    text_cls: &candle_nn::Linear,
    tokenizer: &ReportTokenizer,
    val: &medprob_data::loader::StudyLoader,
    size: u32,
    device: &Device,
) -> Result<(Option<f64>, Option<f64>)> {
    let (mut image_scores, mut text_scores, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    let batches = val.len().div_ceil(val.config().batch_size.max(1));
    for b in 0..batches {
        let items = val.eval_batch(b)?;
        if items.is_empty() {
            continue;
        }
        let views: Vec<&[f32]> = items.iter().map(|it| it.image.as_slice()).collect();
        let images = image_tensor(&views, size, device)?;
        let f = model
            .image_features(&images, false)?
            .to_dtype(candle_core::DType::F32)?;
        image_scores.extend(image_cls.forward(&f)?.to_vec2::<f32>()?);
        let texts: Vec<&str> = items.iter().map(|it| it.text.as_str()).collect();
        let (ids, mask) = text_tensors(tokenizer, &texts, device)?;
        let g = model
            .text_features(&ids, &mask, false)?
            .to_dtype(candle_core::DType::F32)?;
        text_scores.extend(text_cls.forward(&g)?.to_vec2::<f32>()?);
        labels.extend(items.iter().map(|it| val.studies()[it.study_index].labels));
    }
    let mean_auroc = |scores: &[Vec<f32>]| -> Result<Option<f64>> {
        let mut aurocs = Vec::new();
        for c in 0..14 {
            let (mut s, mut y) = (Vec::new(), Vec::new());
            for (row, l) in scores.iter().zip(&labels) {
                match l.map(|l| l[c]) {
                    Some(Label::Uncertain) | None => {}
                    Some(l) => {
                        s.push(row[c] as f64);
                        y.push(l == Label::Positive);
                    }
                }
            }
            if let Some(a) = medprob_metrics::auroc::auroc(&s, &y)? {
                aurocs.push(a);
            }
        }
        Ok((!aurocs.is_empty()).then(|| aurocs.iter().sum::<f64>() / aurocs.len() as f64))
    };
    Ok((mean_auroc(&image_scores)?, mean_auroc(&text_scores)?))
}

/// Start `model`'s backbones from a finished stage (both prefixes; the tokenizer is the
/// caller's to copy).
pub fn load_into(model: &medprob_encoders::MedProbModel, stage: &Pretrained) -> Result<()> {
    model.load_pretrained("image", &stage.image_weights())?;
    model.load_pretrained("text", &stage.text_weights())?;
    Ok(())
}

/// The stage's tokenizer.
pub fn stage_tokenizer(stage: &Pretrained, max_tokens: usize) -> Result<ReportTokenizer> {
    Ok(ReportTokenizer::from_file(&stage.tokenizer(), max_tokens)?)
}
