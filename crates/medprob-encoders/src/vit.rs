//! A Vision Transformer with timm's tensor names (`cls_token`, `pos_embed`,
//! `patch_embed.proj.weight`, `blocks.0.attn.qkv.weight`, …, `norm.weight`), so timm and
//! Hugging Face-converted ViT checkpoints load; every operation is differentiable.
//!
//! Pooling is the `[CLS]` token or the mean of the patch tokens (MedProbCLIP's choice), both
//! after the final layer norm. The patch embedding is the convolution written as
//! unfold + matrix product (same weights, `[D, C, P, P]`).

use candle_core::{Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::ops::Linear;
use serde::{Deserialize, Serialize};

use crate::attention::multi_head_attention;
use crate::bert::Pooling;
use crate::error::{EncoderError, Result};
use crate::ops::{Dropout, LayerNorm, StepClock};

/// ViT hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VitConfig {
    /// Input side length.
    pub image_size: usize,
    /// Patch side length.
    pub patch_size: usize,
    /// Input channels.
    pub channels: usize,
    /// Token width.
    pub dim: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP width as a multiple of `dim`.
    pub mlp_ratio: f64,
    /// Layer-norm epsilon (timm: 1e-6).
    pub layer_norm_eps: f64,
    /// Dropout inside blocks (training only).
    pub dropout: f64,
    /// `cls` or `mean` (of patch tokens).
    pub pooling: Pooling,
}

impl Default for VitConfig {
    /// A tiny ViT for CPU training: 64×64 input, 8×8 patches, width 64, 2 blocks.
    fn default() -> Self {
        Self {
            image_size: 64,
            patch_size: 8,
            channels: 3,
            dim: 64,
            depth: 2,
            heads: 4,
            mlp_ratio: 2.0,
            layer_norm_eps: 1e-6,
            dropout: 0.0,
            pooling: Pooling::Mean,
        }
    }
}

impl VitConfig {
    /// ViT-B/16 at 224×224 (timm `vit_base_patch16_224`), mean-pooled as in MedProbCLIP.
    pub fn base_patch16_224() -> Self {
        Self {
            image_size: 224,
            patch_size: 16,
            channels: 3,
            dim: 768,
            depth: 12,
            heads: 12,
            mlp_ratio: 4.0,
            layer_norm_eps: 1e-6,
            dropout: 0.0,
            pooling: Pooling::Mean,
        }
    }

    fn check(&self) -> Result<()> {
        let bad = |detail: String| EncoderError::Input {
            what: "VitConfig",
            detail,
        };
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(bad(format!(
                "image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            )));
        }
        if self.heads == 0 || !self.dim.is_multiple_of(self.heads) {
            return Err(bad(format!(
                "dim {} is not a multiple of heads {}",
                self.dim, self.heads
            )));
        }
        Ok(())
    }
}

struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    dropout: Dropout,
}

/// The Vision Transformer.
pub struct VisionTransformer {
    config: VitConfig,
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    clock: StepClock,
}

impl VisionTransformer {
    /// Build from `vb` (a timm checkpoint or fresh variables); `seed` seeds dropout.
    pub fn new(config: &VitConfig, vb: VarBuilder, seed: u64) -> Result<Self> {
        config.check()?;
        let (d, p, c) = (config.dim, config.patch_size, config.channels);
        let n = (config.image_size / p).pow(2);
        let pe = vb.pp("patch_embed.proj");
        let patch_weight = pe.get_with_hints(
            (d, c, p, p),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let patch_bias = pe.get_with_hints(d, "bias", candle_nn::init::ZERO)?;
        let small = candle_nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let cls_token = vb.get_with_hints((1, 1, d), "cls_token", small)?;
        let pos_embed = vb.get_with_hints((1, n + 1, d), "pos_embed", small)?;
        let hidden = (d as f64 * config.mlp_ratio).round() as usize;
        let eps = config.layer_norm_eps;
        let clock = StepClock::default();
        let mut blocks = Vec::with_capacity(config.depth);
        for i in 0..config.depth {
            let b = vb.pp(format!("blocks.{i}"));
            blocks.push(Block {
                norm1: LayerNorm::new(d, eps, b.pp("norm1"))?,
                qkv: Linear::new(d, 3 * d, b.pp("attn.qkv"))?,
                proj: Linear::new(d, d, b.pp("attn.proj"))?,
                norm2: LayerNorm::new(d, eps, b.pp("norm2"))?,
                fc1: Linear::new(d, hidden, b.pp("mlp.fc1"))?,
                fc2: Linear::new(hidden, d, b.pp("mlp.fc2"))?,
                dropout: Dropout::with_clock(config.dropout, seed ^ (i as u64 + 1), clock.clone()),
            });
        }
        Ok(Self {
            config: config.clone(),
            patch_weight,
            patch_bias,
            cls_token,
            pos_embed,
            blocks,
            norm: LayerNorm::new(d, eps, vb.pp("norm"))?,
            clock,
        })
    }

    /// Draw dropout masks for optimisation step `step` (see [`StepClock`]).
    pub fn set_step(&self, step: u64) {
        self.clock.set(step);
    }

    /// The configuration.
    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// Token sequence after the final norm, `[B, 1 + N, D]`, for images `[B, C, S, S]`.
    pub fn forward_features(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let c = &self.config;
        let (b, ch, h, w) = images.dims4().map_err(|_| EncoderError::Input {
            what: "VisionTransformer::forward",
            detail: format!(
                "images must be [batch, channels, height, width], got {:?}",
                images.dims()
            ),
        })?;
        if (ch, h, w) != (c.channels, c.image_size, c.image_size) {
            return Err(EncoderError::Input {
                what: "VisionTransformer::forward",
                detail: format!(
                    "expected [*, {}, {}, {}], got {:?}",
                    c.channels,
                    c.image_size,
                    c.image_size,
                    images.dims()
                ),
            });
        }
        let (p, g, d) = (c.patch_size, c.image_size / c.patch_size, c.dim);
        // Unfold into patches [B, N, C·P·P] in the weight's (C, P, P) order.
        let patches = images
            .reshape((b, ch, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, g * g, ch * p * p))?;
        let w = self.patch_weight.reshape((d, ch * p * p))?;
        let tokens = Linear::from_parts(w, Some(self.patch_bias.clone())).forward(&patches)?;
        let cls = self.cls_token.broadcast_as((b, 1, d))?;
        let mut x = Tensor::cat(&[&cls, &tokens], 1)?.broadcast_add(&self.pos_embed)?;
        let heads = c.heads;
        for blk in &self.blocks {
            let y = blk.norm1.forward(&x)?;
            let qkv = blk.qkv.forward(&y)?;
            let out = multi_head_attention(&qkv, heads, None, None)?;
            x = (x + blk.proj.forward_dropout(&out, &blk.dropout, train)?)?;
            let y = blk.norm2.forward(&x)?;
            let y = crate::ops::gelu_erf(&blk.fc1.forward(&y)?)?;
            x = (x + blk.fc2.forward_dropout(&y, &blk.dropout, train)?)?;
        }
        Ok(self.norm.forward(&x)?)
    }

    /// Pooled image features `[B, D]`.
    pub fn forward(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.forward_features(images, train)?;
        Ok(match self.config.pooling {
            Pooling::Cls => x.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let n = x.dim(1)?;
                x.narrow(1, 1, n - 1)?.mean(D::Minus2)?
            }
        })
    }
}
