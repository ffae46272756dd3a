//! The BERT family of text encoders (BERT, BiomedBERT, Bio_ClinicalBERT, MiniLM), trainable.
//!
//! Tensor names are Hugging Face's (`embeddings.word_embeddings.weight`,
//! `encoder.layer.0.attention.self.query.weight`, …, optionally under `bert.`), so the same
//! code loads a pretrained checkpoint or creates fresh variables through any `VarBuilder`.
//! Unlike candle-transformers' BERT, every operation has a backward pass (layer norm and
//! softmax are [`crate::ops`]'), and dropout really runs, seeded, in training mode.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, VarBuilder};

use crate::ops::Linear;
use serde::{Deserialize, Serialize};

use crate::attention::multi_head_attention;
use crate::error::{EncoderError, Result};
use crate::ops::{Dropout, LayerNorm, StepClock};

/// The fields of a Hugging Face BERT `config.json` that the encoder uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Activation; `gelu` (erf form) is what BERT checkpoints use.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Dropout after embeddings, attention output and feed-forward.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Longest sequence.
    pub max_position_embeddings: usize,
    /// Token-type vocabulary.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// A tiny configuration that trains on two CPU cores in minutes.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 128,
            hidden_act: default_act(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 256,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
        }
    }

    /// Read `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EncoderError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let c: Self = serde_json::from_str(&text).map_err(|e| EncoderError::Config {
            path: path.to_path_buf(),
            reason: format!("not a BERT config: {e}"),
        })?;
        if !c.hidden_size.is_multiple_of(c.num_attention_heads.max(1)) || c.num_attention_heads == 0
        {
            return Err(EncoderError::Config {
                path: path.to_path_buf(),
                reason: format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    c.hidden_size, c.num_attention_heads
                ),
            });
        }
        Ok(c)
    }
}

/// How a sequence of hidden states becomes one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The first token (`[CLS]`).
    Cls,
    /// Mean over the non-padding tokens.
    Mean,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    attn_dropout: Dropout,
    hidden_dropout: Dropout,
}

/// A BERT encoder.
pub struct BertEncoder {
    config: BertConfig,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: LayerNorm,
    emb_dropout: Dropout,
    layers: Vec<Layer>,
    clock: StepClock,
}

impl BertEncoder {
    /// Build from `vb` (pretrained weights or fresh variables); a `bert.` prefix in the
    /// checkpoint is detected. `seed` seeds the dropout masks.
    pub fn new(config: &BertConfig, vb: VarBuilder, seed: u64) -> Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let e = vb.pp("embeddings");
        let word = candle_nn::embedding(config.vocab_size, h, e.pp("word_embeddings"))?;
        let position = candle_nn::embedding(
            config.max_position_embeddings,
            h,
            e.pp("position_embeddings"),
        )?;
        let token_type =
            candle_nn::embedding(config.type_vocab_size, h, e.pp("token_type_embeddings"))?;
        let emb_norm = LayerNorm::new(h, eps, e.pp("LayerNorm"))?;
        let clock = StepClock::default();
        let dropout = |p: f64, seed: u64| Dropout::with_clock(p, seed, clock.clone());
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            let s = 2 * i as u64 + 1;
            layers.push(Layer {
                query: Linear::new(h, h, a.pp("self.query"))?,
                key: Linear::new(h, h, a.pp("self.key"))?,
                value: Linear::new(h, h, a.pp("self.value"))?,
                attn_out: Linear::new(h, h, a.pp("output.dense"))?,
                attn_norm: LayerNorm::new(h, eps, a.pp("output.LayerNorm"))?,
                intermediate: Linear::new(h, config.intermediate_size, l.pp("intermediate.dense"))?,
                output: Linear::new(config.intermediate_size, h, l.pp("output.dense"))?,
                out_norm: LayerNorm::new(h, eps, l.pp("output.LayerNorm"))?,
                attn_dropout: dropout(config.attention_probs_dropout_prob, seed ^ s),
                hidden_dropout: dropout(config.hidden_dropout_prob, seed ^ (s + 1)),
            });
        }
        Ok(Self {
            config: config.clone(),
            word,
            position,
            token_type,
            emb_norm,
            emb_dropout: dropout(config.hidden_dropout_prob, seed),
            layers,
            clock,
        })
    }

    /// Draw dropout masks for optimisation step `step` (see [`StepClock`]).
    pub fn set_step(&self, step: u64) {
        self.clock.set(step);
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Hidden states `[B, L, H]` for token ids `[B, L]` (u32) and an attention mask
    /// `[B, L]` (1 = token, 0 = padding).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        let (b, l) = ids.dims2().map_err(|_| EncoderError::Input {
            what: "BertEncoder::forward",
            detail: format!("token ids must be [batch, length], got {:?}", ids.dims()),
        })?;
        if l > self.config.max_position_embeddings {
            return Err(EncoderError::Input {
                what: "BertEncoder::forward",
                detail: format!(
                    "{l} tokens exceed max_position_embeddings {}",
                    self.config.max_position_embeddings
                ),
            });
        }
        let dev = ids.device();
        // Every sequence has positions 0..L and token type 0: their embeddings are one
        // [L, H] table added to each sequence's word embeddings.
        let position_and_type = self
            .position
            .embeddings()
            .narrow(0, 0, l)?
            .broadcast_add(&self.token_type.embeddings().get(0)?)?;
        let x = self.word.forward(ids)?.broadcast_add(&position_and_type)?;
        let mut x = self
            .emb_dropout
            .forward_t(&self.emb_norm.forward(&x)?, train)?;
        let dtype = x.dtype();
        // Additive mask: 0 for tokens, a large negative number for padding.
        let bias = mask.to_dtype(dtype)?.affine(1.0, -1.0)?.affine(1e4, 0.0)?;
        let heads = self.config.num_attention_heads;
        for layer in &self.layers {
            let qkv = Linear::stacked(&[&layer.query, &layer.key, &layer.value])?.forward(&x)?;
            let drop = layer
                .attn_dropout
                .mask(&(b, heads, l, l).into(), dtype, dev, train)?;
            let ctx = multi_head_attention(&qkv, heads, Some(&bias), drop.as_ref())?;
            let attn = layer
                .attn_out
                .forward_dropout(&ctx, &layer.hidden_dropout, train)?;
            let x1 = layer.attn_norm.forward(&(attn + &x)?)?;
            let ff = layer.intermediate.forward(&x1)?;
            let ff = match self.config.hidden_act.as_str() {
                "gelu_new" | "gelu_pytorch_tanh" => ff.gelu()?,
                "relu" => ff.relu()?,
                _ => crate::ops::gelu_erf(&ff)?,
            };
            let ff = layer
                .output
                .forward_dropout(&ff, &layer.hidden_dropout, train)?;
            x = layer.out_norm.forward(&(ff + x1)?)?;
        }
        Ok(x)
    }

    /// Pool hidden states `[B, L, H]` to `[B, H]`.
    pub fn pool(hidden: &Tensor, mask: &Tensor, pooling: Pooling) -> Result<Tensor> {
        Ok(match pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let m = mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
                let sum = hidden.broadcast_mul(&m)?.sum(1)?;
                sum.broadcast_div(&m.sum(1)?.clamp(1.0, f64::INFINITY)?)?
            }
        })
    }
}

/// The files of a local BERT model folder.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors`.
    pub weights: PathBuf,
    /// `tokenizer.json`, if present.
    pub tokenizer: Option<PathBuf>,
    /// `vocab.txt`, if present.
    pub vocab: Option<PathBuf>,
}

impl ModelFolder {
    /// Check that `dir` holds a config, safetensors weights and a tokenizer or vocabulary.
    pub fn open(dir: &Path) -> Result<Self> {
        let need = |name: &str, needed: &'static str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.exists() {
                Ok(p)
            } else {
                Err(EncoderError::MissingFile { path: p, needed })
            }
        };
        let config = need(
            "config.json",
            "config.json, model.safetensors and tokenizer.json or vocab.txt",
        )?;
        let weights = need(
            "model.safetensors",
            "config.json, model.safetensors and tokenizer.json or vocab.txt",
        )?;
        let opt = |n: &str| Some(dir.join(n)).filter(|p| p.exists());
        let (tokenizer, vocab) = (opt("tokenizer.json"), opt("vocab.txt"));
        if tokenizer.is_none() && vocab.is_none() {
            return Err(EncoderError::MissingFile {
                path: dir.join("tokenizer.json"),
                needed: "tokenizer.json or vocab.txt beside the weights",
            });
        }
        Ok(Self {
            config,
            weights,
            tokenizer,
            vocab,
        })
    }

    /// Load the encoder from the folder's weights (memory-mapped).
    pub fn load_bert(&self, dtype: DType, device: &Device, seed: u64) -> Result<BertEncoder> {
        let config = BertConfig::from_file(&self.config)?;
        let vb = if self.weights.extension().is_some_and(|e| e == "bin") {
            VarBuilder::from_pth(&self.weights, dtype, device)?
        } else {
            // SAFETY: the file is memory-mapped read-only; it must not change while loaded.
            unsafe { VarBuilder::from_mmaped_safetensors(&[&self.weights], dtype, device)? }
        };
        BertEncoder::new(&config, vb, seed)
    }
}
