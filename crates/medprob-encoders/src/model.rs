//! The model: an image encoder and a text encoder, each with a head, and the parameters of
//! the match probability (`a`, `b`) or the softmax temperature — everything one method
//! trains, in one seeded variable map with one checkpoint format.
//!
//! Variable names: `image.*` (ViT, timm names), `text.*` (BERT, Hugging Face names),
//! `image_head.proj.*`, `text_head.proj.*`, `match.scale`, `match.shift`, `logit_scale`.
//! A checkpoint is a folder with `model.safetensors` and `config.json`, both written
//! atomically (temporary file + rename), so an interrupted save never destroys the previous
//! one; loading it reproduces the saved model's outputs bit for bit.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use medprob_core::{GaussianTensor, LogVarianceClamp};
use serde::{Deserialize, Serialize};

use crate::bert::{BertConfig, BertEncoder, Pooling};
use crate::error::{EncoderError, Result};
use crate::heads::{DeterministicHead, ProbabilisticHead};
use crate::init::SeededVarMap;
use crate::resnet::{ResNet, ResNetConfig};
use crate::vit::{VisionTransformer, VitConfig};

/// Which image backbone, with its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageBackbone {
    /// Vision Transformer (MedProbCLIP: ViT-B/16, mean-pooled patch tokens).
    Vit(VitConfig),
    /// Bottleneck ResNet (CXR-CLIP: ResNet-50).
    ResNet(ResNetConfig),
}

impl ImageBackbone {
    /// Width of the pooled feature the head sees.
    pub fn feature_dim(&self) -> usize {
        match self {
            ImageBackbone::Vit(c) => c.dim,
            ImageBackbone::ResNet(c) => c.feature_dim(),
        }
    }
}

enum ImageEncoder {
    Vit(VisionTransformer),
    ResNet(ResNet),
}

impl ImageEncoder {
    fn forward(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            ImageEncoder::Vit(m) => m.forward(images, train),
            ImageEncoder::ResNet(m) => m.forward(images, train),
        }
    }
}

/// Probabilistic (MedProbCLIP, PCME++) or deterministic (CLIP, CXR-CLIP) embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// `(mu, log-variance)`.
    Probabilistic,
    /// Unit-norm vectors.
    Deterministic,
}

/// Everything needed to rebuild a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Image encoder.
    pub image: ImageBackbone,
    /// Text encoder.
    pub text: BertConfig,
    /// Text pooling.
    pub text_pooling: Pooling,
    /// Embedding dimension `D`.
    pub embed_dim: usize,
    /// Head kind.
    pub head: HeadKind,
    /// Initial `a` and `b` of the match probability.
    pub init_scale: f64,
    /// Initial `b`.
    pub init_shift: f64,
    /// Initial `logit_scale` (deterministic heads).
    pub init_logit_scale: f64,
    /// Keep the image backbone fixed (heads still train).
    pub freeze_image: bool,
    /// Keep the text backbone fixed.
    pub freeze_text: bool,
    /// Seed of initialisation and dropout.
    pub seed: u64,
    /// The training method's name, for the record (`medprobclip`, `pcmepp`, `clip`, `cxr_clip`).
    pub method: String,
    /// File name of the tokenizer saved beside the checkpoint, if any.
    pub tokenizer: Option<String>,
    /// L2-normalise the means of probabilistic heads (PCME++).
    #[serde(default)]
    pub normalize_mean: bool,
    /// Constant added to the heads' log-variances (start from small variances).
    #[serde(default)]
    pub log_variance_offset: f64,
}

/// An embedded batch.
#[derive(Debug, Clone)]
pub enum Embedded {
    /// Probabilistic embeddings.
    Gaussian(GaussianTensor),
    /// Unit-norm embeddings.
    Unit(Tensor),
}

impl Embedded {
    /// The means (or the unit vectors).
    pub fn mean(&self) -> &Tensor {
        match self {
            Embedded::Gaussian(g) => &g.mean,
            Embedded::Unit(t) => t,
        }
    }

    /// Rows `start..start + len` (differentiable).
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        Ok(match self {
            Embedded::Gaussian(g) => Embedded::Gaussian(GaussianTensor::new(
                g.mean.narrow(0, start, len)?,
                g.log_var.narrow(0, start, len)?,
            )?),
            Embedded::Unit(t) => Embedded::Unit(t.narrow(0, start, len)?),
        })
    }

    /// Split into consecutive parts of `sizes` rows.
    fn split(&self, sizes: &[usize]) -> Result<Vec<Self>> {
        let mut start = 0;
        sizes
            .iter()
            .map(|&n| {
                let part = self.narrow(start, n);
                start += n;
                part
            })
            .collect()
    }
}

enum Heads {
    Probabilistic(ProbabilisticHead, ProbabilisticHead),
    Deterministic(DeterministicHead, DeterministicHead),
}

/// Image encoder + text encoder + heads + match parameters.
pub struct MedProbModel {
    config: ModelConfig,
    dtype: DType,
    vars: SeededVarMap,
    image: ImageEncoder,
    text: BertEncoder,
    heads: Heads,
    scale: Tensor,
    shift: Tensor,
    logit_scale: Tensor,
}

impl MedProbModel {
    /// A freshly initialised model (seeded by `config.seed`), in `f32`.
    pub fn new(config: ModelConfig, device: &Device) -> Result<Self> {
        Self::with_dtype(config, device, DType::F32)
    }

    /// A freshly initialised model whose variables and backbone arithmetic are `dtype`
    /// (`BF16` for mixed-precision training on CUDA). Whatever `dtype` is, images go in
    /// and embeddings and match parameters come out as `f32`, so the losses and metrics
    /// always work in `f32`; layer norms and softmaxes are computed in `f32` inside.
    pub fn with_dtype(config: ModelConfig, device: &Device, dtype: DType) -> Result<Self> {
        let vars = SeededVarMap::new(config.seed);
        let vb = vars.builder(dtype, device);
        let image = match &config.image {
            ImageBackbone::Vit(c) => ImageEncoder::Vit(VisionTransformer::new(
                c,
                vb.pp("image"),
                config.seed ^ 0x1,
            )?),
            ImageBackbone::ResNet(c) => ImageEncoder::ResNet(ResNet::new(c, vb.pp("image"))?),
        };
        let text = BertEncoder::new(&config.text, vb.pp("text"), config.seed ^ 0x2)?;
        let (fi, ft, d) = (
            config.image.feature_dim(),
            config.text.hidden_size,
            config.embed_dim,
        );
        let heads = match config.head {
            HeadKind::Probabilistic => {
                let c = LogVarianceClamp::default();
                let (n, o) = (config.normalize_mean, config.log_variance_offset);
                Heads::Probabilistic(
                    ProbabilisticHead::new(fi, d, c, vb.pp("image_head"))?.with_options(n, o),
                    ProbabilisticHead::new(ft, d, c, vb.pp("text_head"))?.with_options(n, o),
                )
            }
            HeadKind::Deterministic => Heads::Deterministic(
                DeterministicHead::new(fi, d, vb.pp("image_head"))?,
                DeterministicHead::new(ft, d, vb.pp("text_head"))?,
            ),
        };
        let scalar = |name: &str, v: f64| vb.get_with_hints(1, name, candle_nn::Init::Const(v));
        let scale = scalar("match.scale", config.init_scale)?;
        let shift = scalar("match.shift", config.init_shift)?;
        let logit_scale = scalar("logit_scale", config.init_logit_scale)?;
        Ok(Self {
            config,
            dtype,
            vars,
            image,
            text,
            heads,
            scale,
            shift,
            logit_scale,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The dtype of the variables and of the backbones' arithmetic.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Match-probability scale `a` and shift `b` (scalar variables, as `f32`).
    pub fn match_parameters(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            self.scale.to_dtype(DType::F32)?,
            self.shift.to_dtype(DType::F32)?,
        ))
    }

    /// The softmax `logit_scale` (deterministic methods), as `f32`.
    pub fn logit_scale(&self) -> Result<Tensor> {
        Ok(self.logit_scale.to_dtype(DType::F32)?)
    }

    /// The image backbone's pooled features `[B, F]` (before the head, in the model's
    /// dtype): what a classifier of the shared pretraining stage reads.
    pub fn image_features(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        self.image.forward(&images.to_dtype(self.dtype)?, train)
    }

    /// The text backbone's pooled features `[B, H]` (before the head).
    pub fn text_features(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        let hidden = self.text.forward(ids, mask, train)?;
        BertEncoder::pool(&hidden, mask, self.config.text_pooling)
    }

    /// The variables under `prefix` (`image`, `text`) with the prefix stripped, as
    /// [`MedProbModel::load_pretrained`] reads them back.
    pub fn backbone_tensors(&self, prefix: &str) -> std::collections::HashMap<String, Tensor> {
        self.all_vars()
            .into_iter()
            .filter_map(|(name, var)| {
                name.strip_prefix(&format!("{prefix}."))
                    .map(|rest| (rest.to_string(), var.as_tensor().detach()))
            })
            .collect()
    }

    /// Embed images `[B, C, S, S]` (any float dtype; embeddings come out as `f32`).
    pub fn encode_images(&self, images: &Tensor, train: bool) -> Result<Embedded> {
        let mut f = self.image_features(images, train)?;
        if self.config.freeze_image {
            f = f.detach();
        }
        self.head_f32(match &self.heads {
            Heads::Probabilistic(h, _) => Embedded::Gaussian(h.forward(&f)?),
            Heads::Deterministic(h, _) => Embedded::Unit(h.forward(&f)?),
        })
    }

    /// Embed several batches of images (a study's views), each `[B_k, C, S, S]`, one
    /// embedding batch per input, as [`MedProbModel::encode_images`] would embed each.
    ///
    /// A ViT embeds every image independently of the others, so the views go through it
    /// as one batch: half the operations (and autograd records) of one call per view,
    /// which on a CPU is most of the cost of a small model. A ResNet in training
    /// normalises with its batch's statistics, so there each view keeps its own call.
    /// Dropout masks are drawn per call, so the two ways draw different (equally seeded)
    /// masks.
    pub fn encode_image_views(&self, views: &[&Tensor], train: bool) -> Result<Vec<Embedded>> {
        if views.len() < 2 || matches!(self.image, ImageEncoder::ResNet(_)) {
            return views.iter().map(|v| self.encode_images(v, train)).collect();
        }
        let sizes = views
            .iter()
            .map(|v| v.dim(0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let joined = Tensor::cat(views, 0)?;
        self.encode_images(&joined, train)?.split(&sizes)
    }

    /// Embed several batches of report sections (findings, impression), each token ids
    /// `[B_k, L_k]` with their mask, one embedding batch per input, in one pass of the
    /// text encoder. Shorter sections are padded (id 0, mask 0) to the longest: padded
    /// keys get no attention weight (exactly zero in `f32`) and pooling skips them, so each
    /// embedding is what [`MedProbModel::encode_texts`] gives for its section alone.
    pub fn encode_text_sections(
        &self,
        sections: &[(&Tensor, &Tensor)],
        train: bool,
    ) -> Result<Vec<Embedded>> {
        if sections.len() < 2 {
            return sections
                .iter()
                .map(|(ids, mask)| self.encode_texts(ids, mask, train))
                .collect();
        }
        let longest = sections
            .iter()
            .map(|(ids, _)| ids.dim(1))
            .collect::<candle_core::Result<Vec<_>>>()?
            .into_iter()
            .max()
            .unwrap_or(0);
        let pad = |t: &Tensor| -> candle_core::Result<Tensor> {
            let l = t.dim(1)?;
            t.pad_with_zeros(1, 0, longest - l)
        };
        let (mut ids, mut masks, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
        for (i, m) in sections {
            if i.dims() != m.dims() {
                return Err(EncoderError::Input {
                    what: "MedProbModel::encode_text_sections",
                    detail: format!("ids {:?} and mask {:?} differ in shape", i.dims(), m.dims()),
                });
            }
            ids.push(pad(i)?);
            masks.push(pad(m)?);
            sizes.push(i.dim(0)?);
        }
        let (ids, masks) = (Tensor::cat(&ids, 0)?, Tensor::cat(&masks, 0)?);
        self.encode_texts(&ids, &masks, train)?.split(&sizes)
    }

    /// Embeddings as `f32` (a differentiable cast; nothing happens for an `f32` model).
    fn head_f32(&self, e: Embedded) -> Result<Embedded> {
        if self.dtype == DType::F32 {
            return Ok(e);
        }
        Ok(match e {
            Embedded::Gaussian(g) => Embedded::Gaussian(GaussianTensor::new(
                g.mean.to_dtype(DType::F32)?,
                g.log_var.to_dtype(DType::F32)?,
            )?),
            Embedded::Unit(t) => Embedded::Unit(t.to_dtype(DType::F32)?),
        })
    }

    /// Set every variable of `self` whose name satisfies `which` to the same-named
    /// variable of `source`, converted to `self`'s dtype (mixed precision: the `f32`
    /// master weights into the `bf16` working copy, and running statistics back).
    pub fn copy_vars_from(
        &self,
        source: &MedProbModel,
        which: impl Fn(&str) -> bool,
    ) -> Result<usize> {
        let from: std::collections::HashMap<String, Var> = source.all_vars().into_iter().collect();
        let mut n = 0;
        for (name, var) in self.all_vars() {
            if !which(&name) {
                continue;
            }
            let src = from.get(&name).ok_or_else(|| EncoderError::Input {
                what: "MedProbModel::copy_vars_from",
                detail: format!("the source model has no variable {name}"),
            })?;
            same_shape(&name, &var, src.dims())?;
            var.set(&src.as_tensor().detach().to_dtype(self.dtype)?)?;
            n += 1;
        }
        Ok(n)
    }

    /// Embed token ids `[B, L]` with their attention mask.
    pub fn encode_texts(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Embedded> {
        let mut f = self.text_features(ids, mask, train)?;
        if self.config.freeze_text {
            f = f.detach();
        }
        self.head_f32(match &self.heads {
            Heads::Probabilistic(_, h) => Embedded::Gaussian(h.forward(&f)?),
            Heads::Deterministic(_, h) => Embedded::Unit(h.forward(&f)?),
        })
    }

    /// Draw every dropout mask for optimisation step `step`, so that training resumed at a
    /// step draws exactly the masks an uninterrupted run draws there.
    pub fn set_step(&self, step: u64) {
        self.text.set_step(step);
        if let ImageEncoder::Vit(v) = &self.image {
            v.set_step(step);
        }
    }

    /// The variables the optimiser should update: all, minus frozen backbones and
    /// statistics buffers.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        let frozen = |name: &str| {
            (self.config.freeze_image && name.starts_with("image."))
                || (self.config.freeze_text && name.starts_with("text."))
                || crate::resnet::is_buffer(name)
        };
        self.all_vars()
            .into_iter()
            .filter(|(k, _)| !frozen(k))
            .collect()
    }

    /// Every variable, by name.
    pub fn all_vars(&self) -> Vec<(String, Var)> {
        self.vars.named_vars()
    }

    /// Overwrite the variables under `prefix` (e.g. `text`) with a pretrained checkpoint whose
    /// names lack the prefix (an optional `bert.` in the file is accepted). A variable the file
    /// lacks, or one of another shape, is an error naming the tensor.
    pub fn load_pretrained(&self, prefix: &str, weights: &Path) -> Result<usize> {
        // SAFETY: read-only memory map of a file that must not change while loading.
        let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(weights)? };
        let names: std::collections::HashSet<String> =
            file.tensors().into_iter().map(|(n, _)| n).collect();
        let mut n = 0;
        for (name, var) in self.all_vars() {
            let Some(rest) = name.strip_prefix(&format!("{prefix}.")) else {
                continue;
            };
            let key = [rest.to_string(), format!("bert.{rest}")]
                .into_iter()
                .find(|k| names.contains(k))
                .ok_or_else(|| EncoderError::Config {
                    path: weights.to_path_buf(),
                    reason: format!("tensor {rest} (for {name}) is not in the checkpoint"),
                })?;
            let t = file.load(&key, var.device())?.to_dtype(var.dtype())?;
            same_shape(&key, &var, t.dims())?;
            var.set(&t)?;
            n += 1;
        }
        Ok(n)
    }

    /// Save `model.safetensors` and `config.json` into `dir`, each atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let io = |path: &Path, e: std::io::Error| EncoderError::Config {
            path: path.to_path_buf(),
            reason: format!("cannot write: {e}"),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let tensors: std::collections::HashMap<String, Tensor> = self
            .all_vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        save_safetensors(&dir.join("model.safetensors"), &tensors)?;
        let json = serde_json::to_vec_pretty(&self.config).expect("config serialises");
        let config = dir.join("config.json");
        medprob_core::fs::write_atomic(&config, &json).map_err(|e| io(&config, e))
    }

    /// Load a checkpoint written by [`MedProbModel::save`].
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let weights = dir.join("model.safetensors");
        for p in [&config_path, &weights] {
            if !p.exists() {
                return Err(EncoderError::MissingFile {
                    path: p.clone(),
                    needed: "config.json and model.safetensors (written by MedProbModel::save)",
                });
            }
        }
        let text = std::fs::read_to_string(&config_path).map_err(|e| EncoderError::Config {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        let config: ModelConfig =
            serde_json::from_str(&text).map_err(|e| EncoderError::Config {
                path: config_path.clone(),
                reason: e.to_string(),
            })?;
        let model = Self::new(config, device)?;
        // SAFETY: read-only memory map of a file that must not change while loading.
        let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(&weights)? };
        for (name, var) in model.all_vars() {
            let t = file.load(&name, device).map_err(|_| EncoderError::Config {
                path: weights.clone(),
                reason: format!("tensor {name} is missing"),
            })?;
            same_shape(&name, &var, t.dims())?;
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        Ok(model)
    }
}

/// `Ok` when `found` is `var`'s shape, else the error naming tensor `name`.
fn same_shape(name: &str, var: &Var, found: &[usize]) -> Result<()> {
    if found == var.dims() {
        return Ok(());
    }
    Err(EncoderError::TensorShape {
        name: name.to_string(),
        expected: var.dims().to_vec(),
        found: found.to_vec(),
    })
}

/// Write named tensors to `path` as safetensors without ever leaving a half-written file:
/// streamed to a temporary file in the same folder, flushed to disk, then renamed over
/// `path` (the in-memory copy `medprob_core::fs::write_atomic` would need can be as large
/// as the model).
pub fn save_safetensors(
    path: &Path,
    tensors: &std::collections::HashMap<String, Tensor>,
) -> Result<()> {
    let io = |e: std::io::Error| EncoderError::Config {
        path: path.to_path_buf(),
        reason: format!("cannot write: {e}"),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tensors".into());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let written = candle_core::safetensors::save(tensors, &tmp)
        .map_err(EncoderError::from)
        .and_then(|()| {
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(io)
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
