//! From a config to the objects a run needs: the splits, the tokenizer, the model and the
//! loaders.

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use medprob_data::image::ImageTransform;
use medprob_data::loader::{LoaderConfig, StudyLoader};
use medprob_data::tokenize::ReportTokenizer;
use medprob_data::{read_studies_limited, InputLimits, Split, StudyRecord};
use medprob_encoders::hub::{model_folder, HubOptions};
use medprob_encoders::{BertConfig, HeadKind, MedProbModel, ModelConfig, ModelFolder};

use crate::config::{Method, TextSpec, TrainConfig};
use crate::error::{Result, TrainError};

/// The studies of each split.
pub struct Splits {
    pub train: Vec<StudyRecord>,
    pub validate: Vec<StudyRecord>,
    pub test: Vec<StudyRecord>,
}

/// Read the study CSV (under `limits`) and divide it by its `split` column.
pub fn read_splits(path: &Path, limits: &InputLimits) -> Result<Splits> {
    let all = read_studies_limited(path, limits)?;
    let mut s = Splits {
        train: Vec::new(),
        validate: Vec::new(),
        test: Vec::new(),
    };
    let mut unassigned = 0usize;
    for r in all {
        match r.split {
            Some(Split::Train) => s.train.push(r),
            Some(Split::Validate) => s.validate.push(r),
            Some(Split::Test) => s.test.push(r),
            None => unassigned += 1,
        }
    }
    if s.train.is_empty() || s.validate.is_empty() {
        return Err(TrainError::Input {
            path: path.to_path_buf(),
            reason: format!(
                "needs a `split` column with train and validate studies ({} train, {} validate, {} test, {unassigned} without a split)",
                s.train.len(),
                s.validate.len(),
                s.test.len()
            ),
        });
    }
    Ok(s)
}

/// The text encoder's folder for a pretrained source: a local folder, else a hub id.
pub fn pretrained_folder(source: &str) -> Result<ModelFolder> {
    let local = Path::new(source);
    if local.is_dir() {
        Ok(ModelFolder::open(local)?)
    } else {
        Ok(model_folder(source, &HubOptions::default())?)
    }
}

/// The tokenizer: WordPiece trained on the training reports (tiny text encoder), or the
/// pretrained model's own.
pub fn build_tokenizer(config: &TrainConfig, train: &[StudyRecord]) -> Result<ReportTokenizer> {
    let max = config.data.max_tokens;
    match &config.model.text {
        TextSpec::Tiny { vocab_size, .. } => {
            let corpus = train
                .iter()
                .flat_map(|s| [s.findings.as_str(), s.impression.as_str()])
                .filter(|t| !t.trim().is_empty());
            Ok(ReportTokenizer::train_wordpiece(
                corpus,
                *vocab_size,
                2,
                max,
            )?)
        }
        TextSpec::Pretrained { source } => folder_tokenizer(&pretrained_folder(source)?, max),
    }
}

/// A pretrained model folder's own tokenizer (`tokenizer.json`, else `vocab.txt`),
/// `max_tokens` tokens per text.
pub fn folder_tokenizer(folder: &ModelFolder, max_tokens: usize) -> Result<ReportTokenizer> {
    Ok(match (&folder.tokenizer, &folder.vocab) {
        (Some(t), _) => ReportTokenizer::from_file(t, max_tokens)?,
        (None, Some(v)) => ReportTokenizer::from_bert_vocab(v, true, max_tokens)?,
        (None, None) => unreachable!("ModelFolder::open requires one of them"),
    })
}

/// A fresh model for the method (pretrained weights loaded where configured).
pub fn build_model(
    config: &TrainConfig,
    vocab_size: usize,
    device: &Device,
) -> Result<MedProbModel> {
    let (text, pretrained) = match &config.model.text {
        TextSpec::Tiny {
            hidden_size,
            layers,
            heads,
            ..
        } => {
            let mut t = BertConfig::tiny(vocab_size);
            t.hidden_size = *hidden_size;
            t.num_hidden_layers = *layers;
            t.num_attention_heads = *heads;
            t.intermediate_size = 2 * hidden_size;
            t.max_position_embeddings = t.max_position_embeddings.max(config.data.max_tokens);
            (t, None)
        }
        TextSpec::Pretrained { source } => {
            let folder = pretrained_folder(source)?;
            (BertConfig::from_file(&folder.config)?, Some(folder.weights))
        }
    };
    let (init_scale, init_shift) = match config.method {
        Method::MedProbClip => (config.medprobclip.init_scale, config.medprobclip.init_shift),
        Method::Pcmepp => (config.pcmepp.init_scale, config.pcmepp.init_shift),
        _ => (1.0, 0.0),
    };
    let init_logit_scale = match config.method {
        Method::CxrClip => config.cxr_clip.init_logit_scale,
        _ => config.clip.init_logit_scale,
    };
    let model = MedProbModel::new(
        ModelConfig {
            image: config.model.image.clone(),
            text,
            text_pooling: config.model.text_pooling,
            embed_dim: config.model.embed_dim,
            head: if config.method.probabilistic() {
                HeadKind::Probabilistic
            } else {
                HeadKind::Deterministic
            },
            init_scale,
            init_shift,
            init_logit_scale,
            freeze_image: false,
            freeze_text: false,
            seed: config.seed,
            method: config.method.key().to_string(),
            tokenizer: Some("tokenizer.json".into()),
            normalize_mean: config
                .model
                .normalize_mean
                .unwrap_or(config.method == Method::Pcmepp),
            log_variance_offset: config.log_variance_offset(),
        },
        device,
    )?;
    if let Some(w) = pretrained {
        model.load_pretrained("text", &w)?;
    }
    if let Some(w) = &config.model.image_weights {
        model.load_pretrained("image", w)?;
    }
    Ok(model)
}

/// The loader settings of a run (`train = false`: evaluation order, no augmentation).
pub fn loader_config(config: &TrainConfig, train: bool) -> LoaderConfig {
    let channels = match &config.model.image {
        medprob_encoders::ImageBackbone::Vit(v) => v.channels,
        medprob_encoders::ImageBackbone::ResNet(r) => r.channels,
    };
    LoaderConfig {
        image_root: config.image_root(),
        batch_size: if train {
            config.batch_size
        } else {
            config.eval_batch_size
        },
        image: ImageTransform {
            size: config.data.image_size,
            channels,
            ..ImageTransform::default()
        },
        augment: config.data.augment.clone(),
        text_augment: if train {
            config.data.text_augment.clone()
        } else {
            None
        },
        on_bad_study: config.data.on_bad_study,
        seed: config.seed,
        workers: config.data.workers,
        shuffle: train,
        drop_last: train,
        // Both transforms first reduce the shorter side to `image_size`, so that is the
        // size to keep: a larger cache only adds a resize to every item of every epoch.
        cache_side: config.data.cache_images.then_some(config.data.image_size),
        limits: config.data.limits,
        ..LoaderConfig::default()
    }
}

/// A loader over `studies`.
pub fn loader(
    config: &TrainConfig,
    studies: Vec<StudyRecord>,
    train: bool,
) -> Result<Arc<StudyLoader>> {
    Ok(Arc::new(StudyLoader::new(
        studies,
        loader_config(config, train),
    )?))
}
