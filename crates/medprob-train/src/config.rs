//! The run configuration: one serde struct, defaults that give a CPU-sized run on
//! SynthCXR, loadable from TOML or JSON, checked field by field before any work starts,
//! printed at the start of a run and saved beside its results.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use medprob_core::Distance;
use medprob_data::image::Augment;
use medprob_data::loader::OnBadStudy;
use medprob_data::sampling::TextAugment;
use medprob_data::InputLimits;
use medprob_encoders::{ImageBackbone, Pooling, VitConfig};
use medprob_losses::medprobclip::MedProbClipConfig;
use medprob_losses::pcmepp::PcmeppConfig;
use medprob_losses::{ClipConfig, CxrClipConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optim::OptimConfig;
use crate::pretrain::PretrainConfig;

/// The four methods of the comparison: same data, same encoders, different heads and
/// objectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Deterministic embeddings, symmetric InfoNCE.
    Clip,
    /// Probabilistic embeddings, CSD, sigmoid pair loss with pseudo-positives and VIB.
    Pcmepp,
    /// Deterministic, CLIP over both views and sections plus image–image and text–text terms.
    CxrClip,
    /// Probabilistic, MLS, multi-view multi-section loss with VIB.
    #[serde(rename = "medprobclip")]
    MedProbClip,
}

impl Method {
    /// All four, in report order.
    pub const ALL: [Method; 4] = [Self::Clip, Self::Pcmepp, Self::CxrClip, Self::MedProbClip];

    /// The name in tables.
    pub fn display_name(&self) -> &'static str {
        match self {
            Self::Clip => "CLIP",
            Self::Pcmepp => "PCME++",
            Self::CxrClip => "CXR-CLIP",
            Self::MedProbClip => "MedProbCLIP",
        }
    }

    /// The name in configs and on the command line.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Clip => "clip",
            Self::Pcmepp => "pcmepp",
            Self::CxrClip => "cxr_clip",
            Self::MedProbClip => "medprobclip",
        }
    }

    /// Whether the method's embeddings are Gaussian.
    pub fn probabilistic(&self) -> bool {
        matches!(self, Self::Pcmepp | Self::MedProbClip)
    }
}

impl FromStr for Method {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.key() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                TrainError::config(
                    "method",
                    format!("unknown method {s:?}: expected clip, pcmepp, cxr_clip or medprobclip"),
                )
            })
    }
}

/// The text encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TextSpec {
    /// A small BERT trained from scratch with a WordPiece vocabulary learned on the
    /// training reports.
    Tiny {
        hidden_size: usize,
        layers: usize,
        heads: usize,
        vocab_size: usize,
    },
    /// A pretrained BERT-family model: a local folder (config.json, model.safetensors,
    /// tokenizer.json or vocab.txt) or a Hugging Face hub id.
    Pretrained { source: String },
}

/// Where the studies are and how they become tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Study CSV with a `split` column (train / validate / test).
    pub studies: PathBuf,
    /// Folder image paths are relative to (default: the CSV's folder).
    pub image_root: Option<PathBuf>,
    /// Side length of the model's input.
    pub image_size: u32,
    /// Keep decoded images in memory, downscaled to twice `image_size` (small datasets).
    pub cache_images: bool,
    /// Maximum report length in tokens.
    pub max_tokens: usize,
    /// Error or skip on a bad study.
    pub on_bad_study: OnBadStudy,
    /// Decoding threads (0: one per core).
    pub workers: usize,
    /// Training image augmentation.
    pub augment: Augment,
    /// Training text augmentation.
    pub text_augment: Option<TextAugment>,
    /// Bounds on image size, report length and CSV line length (`[data.limits]`).
    pub limits: InputLimits,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            studies: PathBuf::from("runs/synthcxr/studies.csv"),
            image_root: None,
            image_size: 64,
            cache_images: true,
            max_tokens: 64,
            on_bad_study: OnBadStudy::Error,
            workers: 0,
            augment: Augment::default(),
            text_augment: None,
            limits: InputLimits::default(),
        }
    }
}

/// The encoders and the embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSpec {
    /// Image backbone (its input size must equal `data.image_size`).
    pub image: ImageBackbone,
    /// Text encoder.
    pub text: TextSpec,
    /// Text pooling.
    pub text_pooling: Pooling,
    /// Embedding dimension.
    pub embed_dim: usize,
    /// Pretrained image weights (safetensors with the backbone's names), if any.
    pub image_weights: Option<PathBuf>,
    /// L2-normalise the means of Gaussian embeddings (default: PCME++ yes, MedProbCLIP no,
    /// as their reference code does).
    pub normalize_mean: Option<bool>,
    /// Constant added to the heads' log-variances, so training starts from small variances
    /// (default: PCME++ −4, others 0; see [`TrainConfig::log_variance_offset`]).
    pub log_variance_offset: Option<f64>,
}

impl Default for ModelSpec {
    /// Encoders sized for two CPU cores: a ViT on 64-pixel images with 16-pixel patches
    /// (16 tokens), width 128, and a one-layer, 64-wide BERT with mean pooling. After the
    /// shared label pretraining the 128-wide ViT reads the labels best per second of the
    /// variants measured (docs/TRAINING.md, "Pretraining"); from scratch, 8-pixel patches,
    /// two text layers or CLS pooling stayed at chance for longer than a CPU quickstart
    /// can afford.
    fn default() -> Self {
        Self {
            image: ImageBackbone::Vit(VitConfig {
                patch_size: 16,
                dim: 128,
                ..VitConfig::default()
            }),
            text: TextSpec::Tiny {
                hidden_size: 64,
                layers: 1,
                heads: 4,
                vocab_size: 2000,
            },
            text_pooling: Pooling::Mean,
            embed_dim: 64,
            image_weights: None,
            normalize_mean: None,
            log_variance_offset: None,
        }
    }
}

/// Compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Cpu,
    /// The first CUDA device (needs the `cuda` feature).
    Cuda,
}

impl FromStr for DeviceKind {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => Err(TrainError::config(
                "device",
                format!("{other:?}: expected cpu or cuda"),
            )),
        }
    }
}

impl DeviceKind {
    /// The candle device, or an error saying how to get CUDA.
    pub fn device(&self) -> Result<candle_core::Device> {
        match self {
            Self::Cpu => Ok(candle_core::Device::Cpu),
            Self::Cuda => {
                if candle_core::utils::cuda_is_available() {
                    Ok(candle_core::Device::new_cuda(0)?)
                } else {
                    Err(TrainError::config(
                        "device",
                        "cuda requested, but this binary was built without the `cuda` feature \
                         (rebuild with `--features cuda`) or no CUDA device is visible",
                    ))
                }
            }
        }
    }
}

/// Arithmetic precision of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in `f32`.
    #[default]
    F32,
    /// Mixed precision: the optimiser keeps `f32` master weights and moments; each step
    /// copies them into a `bf16` working model whose backbones run in `bf16` (layer norms
    /// and softmaxes in `f32` inside), and the embeddings, losses and gradients handed to
    /// the optimiser are `f32`. Meant for CUDA (tensor cores); on the CPU it is correct
    /// but slower than `f32`. Validation and checkpoints use the `f32` weights.
    Bf16,
}

impl FromStr for Precision {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => Err(TrainError::config(
                "precision",
                format!("{other:?}: expected f32 or bf16"),
            )),
        }
    }
}

/// Everything one training run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Which method to train.
    pub method: Method,
    pub data: DataConfig,
    pub model: ModelSpec,
    pub optim: OptimConfig,
    /// Passes over the training split.
    pub epochs: usize,
    /// Studies per micro-batch.
    pub batch_size: usize,
    /// Studies per batch when embedding validation and test sets.
    pub eval_batch_size: usize,
    /// Seed of initialisation, dropout, sampling and augmentation.
    pub seed: u64,
    pub device: DeviceKind,
    /// `f32`, or `bf16` mixed precision (see [`Precision`]).
    pub precision: Precision,
    /// Save a resumable checkpoint every this many optimisation steps (0: at epoch ends).
    pub checkpoint_every: usize,
    /// Stop after this many consecutive steps with a non-finite loss or gradient.
    pub max_bad_steps: usize,
    /// Output folder: config, log, checkpoints, tokenizer.
    pub out: PathBuf,
    /// The shared pretraining stage both backbones start from (`[pretrain]`, module
    /// [`crate::pretrain`]).
    pub pretrain: PretrainConfig,
    pub medprobclip: MedProbClipConfig,
    pub pcmepp: PcmeppConfig,
    pub clip: ClipConfig,
    pub cxr_clip: CxrClipConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: Method::MedProbClip,
            data: DataConfig::default(),
            model: ModelSpec::default(),
            // CPU-sized: on SynthCXR, 5 epochs of batch 16 at lr 2e-3 reach a higher
            // validation RSUM than batch 32 or 64 at any of 1e-3…6e-3 in the same wall time
            // (docs/TRAINING.md, "Choosing the CPU defaults").
            optim: OptimConfig {
                lr: 2e-3,
                weight_decay: 1e-4,
                warmup_fraction: 0.1,
                ..OptimConfig::default()
            },
            // 6 epochs: with the fused CPU kernels a quickstart epoch takes about 16 s per
            // method, and all four methods' validation recall still rises at epoch 5
            // (docs/TRAINING.md).
            epochs: 6,
            batch_size: 16,
            eval_batch_size: 128,
            seed: 0,
            device: DeviceKind::Cpu,
            precision: Precision::F32,
            checkpoint_every: 0,
            max_bad_steps: 5,
            out: PathBuf::from("runs/train"),
            // λ_I = 0.1 instead of the reference's 1.0: with tiny encoders trained from
            // scratch, matching frontal to lateral views at full weight slows image–text
            // learning (validation RSUM 209 at 1.0, 233 at 0.1). `MedProbClipConfig::default()`
            // keeps the reference's values for real training configs.
            // The shared label pretraining (docs/TRAINING.md, "Pretraining"): 8 epochs take
            // the image classifier's validation mean AUROC to 0.82 and the text's to 1.00.
            pretrain: PretrainConfig {
                epochs: 8,
                ..PretrainConfig::default()
            },
            medprobclip: MedProbClipConfig {
                lambda_image: 0.1,
                ..MedProbClipConfig::default()
            },
            pcmepp: PcmeppConfig::default(),
            clip: ClipConfig::default(),
            cxr_clip: CxrClipConfig::default(),
        }
    }
}

/// PCME++'s default log-variance offset (see [`TrainConfig::log_variance_offset`]).
pub const PCMEPP_LOG_VARIANCE_OFFSET: f64 = -4.0;

impl TrainConfig {
    /// Read a TOML (`.toml`) or JSON file; unknown fields are errors.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let bad = |reason: String| TrainError::Input {
            path: path.to_path_buf(),
            reason,
        };
        if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
        } else {
            toml::from_str(&text).map_err(|e| bad(e.to_string()))
        }
    }

    /// The distance the method ranks with (CSD on unit vectors = cosine for deterministic
    /// methods).
    pub fn distance(&self) -> Distance {
        match self.method {
            Method::MedProbClip => self.medprobclip.distance,
            Method::Pcmepp => self.pcmepp.distance,
            Method::Clip | Method::CxrClip => Distance::Csd,
        }
    }

    /// The log-variance offset in force: the configured one, else −4 for PCME++ and 0 for
    /// the others.
    ///
    /// PCME++ ranks by CSD `‖Δmu‖² + Σ(s1+s2)` and its sigmoid starts at `a = b = 5`. With
    /// unit-norm means and untrained heads (`v ≈ 0`, so `Σ s ≈ D` per side) every logit
    /// starts near `−5·2D`: the BCE then pulls the positives together and gives the
    /// negatives no gradient, and the means collapse to one point, a fixed point with zero
    /// gradient (validation recall stays at chance). Starting from `s ≈ e⁻⁴` keeps the
    /// variance term below the mean term, as with the pretrained features PCME++ was
    /// designed for. MedProbCLIP's MLS with a softmax loss has no such trap.
    pub fn log_variance_offset(&self) -> f64 {
        self.model.log_variance_offset.unwrap_or(match self.method {
            Method::Pcmepp => PCMEPP_LOG_VARIANCE_OFFSET,
            _ => 0.0,
        })
    }

    /// Check every field that can be checked without doing the work; the error names the
    /// field.
    pub fn validate(&self) -> Result<()> {
        self.optim.validate()?;
        if self.epochs == 0 {
            return Err(TrainError::config("epochs", "must be ≥ 1"));
        }
        if self.batch_size < 2 {
            return Err(TrainError::config(
                "batch_size",
                format!(
                    "{}: contrastive training needs at least 2 studies per batch",
                    self.batch_size
                ),
            ));
        }
        if !(self.pretrain.lr > 0.0 && self.pretrain.lr.is_finite()) {
            return Err(TrainError::config(
                "pretrain.lr",
                format!("{} must be > 0", self.pretrain.lr),
            ));
        }
        if self.eval_batch_size == 0 {
            return Err(TrainError::config("eval_batch_size", "must be ≥ 1"));
        }
        if let Some(o) = self.model.log_variance_offset {
            if !o.is_finite() {
                return Err(TrainError::config(
                    "model.log_variance_offset",
                    format!("{o} must be finite"),
                ));
            }
        }
        if self.model.embed_dim == 0 {
            return Err(TrainError::config("model.embed_dim", "must be ≥ 1"));
        }
        if self.data.max_tokens < 4 {
            return Err(TrainError::config("data.max_tokens", "must be ≥ 4"));
        }
        if !self.data.studies.is_file() {
            return Err(TrainError::config(
                "data.studies",
                format!(
                    "{} does not exist or is not a file",
                    self.data.studies.display()
                ),
            ));
        }
        if let Some(root) = &self.data.image_root {
            if !root.is_dir() {
                return Err(TrainError::config(
                    "data.image_root",
                    format!("{} is not a folder", root.display()),
                ));
            }
        }
        match &self.model.image {
            ImageBackbone::Vit(v) => {
                if v.image_size != self.data.image_size as usize {
                    return Err(TrainError::config(
                        "model.image.image_size",
                        format!(
                            "{} differs from data.image_size = {}",
                            v.image_size, self.data.image_size
                        ),
                    ));
                }
            }
            ImageBackbone::ResNet(_) => {}
        }
        if let Some(w) = &self.model.image_weights {
            if !w.is_file() {
                return Err(TrainError::config(
                    "model.image_weights",
                    format!("{} does not exist", w.display()),
                ));
            }
        }
        match &self.model.text {
            TextSpec::Tiny {
                hidden_size,
                heads,
                vocab_size,
                layers,
            } => {
                if *heads == 0 || hidden_size % heads != 0 || *layers == 0 {
                    return Err(TrainError::config(
                        "model.text",
                        format!("hidden_size {hidden_size} must be a multiple of heads {heads}, layers ≥ 1"),
                    ));
                }
                if *vocab_size < 100 {
                    return Err(TrainError::config("model.text.vocab_size", "must be ≥ 100"));
                }
            }
            TextSpec::Pretrained { source } => {
                if source.trim().is_empty() {
                    return Err(TrainError::config("model.text.source", "is empty"));
                }
            }
        }
        medprob_losses::medprobclip::MedProbClipLoss::new(self.medprobclip.clone())
            .map_err(|e| TrainError::config("medprobclip", e.to_string()))?;
        medprob_losses::pcmepp::PcmeppLoss::new(self.pcmepp.clone())
            .map_err(|e| TrainError::config("pcmepp", e.to_string()))?;
        for (f, v) in [
            ("cxr_clip.icl_weight", self.cxr_clip.icl_weight),
            ("cxr_clip.tcl_weight", self.cxr_clip.tcl_weight),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(TrainError::config(f, format!("{v} must be ≥ 0")));
            }
        }
        Ok(())
    }

    /// The folder image paths are relative to.
    pub fn image_root(&self) -> PathBuf {
        self.data.image_root.clone().unwrap_or_else(|| {
            self.data
                .studies
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_csv() -> (tempfile::TempDir, TrainConfig) {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("studies.csv");
        std::fs::write(
            &csv,
            "study_id,image_paths,view_names,findings,impression\n",
        )
        .unwrap();
        let mut c = TrainConfig::default();
        c.data.studies = csv;
        (dir, c)
    }

    #[test]
    fn defaults_validate_and_bad_values_name_their_field() {
        let (_d, c) = with_csv();
        c.validate().unwrap();
        let cases: Vec<(TrainConfig, &str)> = vec![
            (
                TrainConfig {
                    optim: OptimConfig {
                        lr: -0.1,
                        ..c.optim.clone()
                    },
                    ..c.clone()
                },
                "optim.lr",
            ),
            (
                TrainConfig {
                    epochs: 0,
                    ..c.clone()
                },
                "epochs",
            ),
            (
                TrainConfig {
                    batch_size: 1,
                    ..c.clone()
                },
                "batch_size",
            ),
            (
                TrainConfig {
                    data: DataConfig {
                        studies: "/no/such/studies.csv".into(),
                        ..c.data.clone()
                    },
                    ..c.clone()
                },
                "data.studies",
            ),
            (
                TrainConfig {
                    data: DataConfig {
                        image_size: 96,
                        ..c.data.clone()
                    },
                    ..c.clone()
                },
                "model.image.image_size",
            ),
        ];
        for (cfg, field) in cases {
            let e = cfg.validate().unwrap_err();
            assert!(
                e.to_string().contains(&format!("`{field}`")),
                "{field}: {e}"
            );
        }
        let e = "mystery".parse::<Method>().unwrap_err();
        assert!(
            e.to_string().contains("`method`") && e.to_string().contains("mystery"),
            "{e}"
        );
        assert_eq!("CXR_CLIP".parse::<Method>().unwrap(), Method::CxrClip);
    }

    #[test]
    fn toml_round_trip_and_unknown_fields() {
        let (dir, c) = with_csv();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(TrainConfig::from_file(&path).unwrap(), c);
        std::fs::write(&path, "method = \"medprobclip\"\nlearning_rate = 3\n").unwrap();
        let e = TrainConfig::from_file(&path).unwrap_err();
        assert!(e.to_string().contains("learning_rate"), "{e}");
        std::fs::write(&path, "method = \"simclr\"\n").unwrap();
        let e = TrainConfig::from_file(&path).unwrap_err();
        assert!(e.to_string().contains("simclr"), "{e}");
    }
}
