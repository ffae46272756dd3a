//! A ResNet with bottleneck blocks (ResNet-50 as in CXR-CLIP, or a tiny one for CPU runs),
//! with torchvision / timm tensor names (`conv1.weight`, `bn1.running_mean`,
//! `layer1.0.conv2.weight`, `layer1.0.downsample.0.weight`, …), trainable end to end.
//!
//! Two candle pieces are replaced: batch normalisation is written with elementary operations
//! (batch statistics in training mode, running statistics — updated with momentum 0.1 — in
//! evaluation mode), and the stem's 3×3/2 max-pool is the maximum of nine shifted strided
//! views, because candle 0.11.1's `max_pool2d` backward is wrong. Running statistics are
//! variables named `running_mean`/`running_var`; [`is_buffer`] tells an optimiser to skip them.

use std::sync::Mutex;

use candle_core::{IndexOp, Module, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{EncoderError, Result};

/// `true` for variables that are statistics, not parameters (never give them to an optimiser).
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
}

/// ResNet hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResNetConfig {
    /// Bottleneck blocks per stage (ResNet-50: 3, 4, 6, 3).
    pub layers: [usize; 4],
    /// Width of the first stage's 3×3 convolutions (ResNet-50: 64); outputs are 4× wider.
    pub base_width: usize,
    /// Input channels.
    pub channels: usize,
    /// Batch-norm epsilon.
    pub eps: f64,
}

impl Default for ResNetConfig {
    /// A tiny ResNet: one block per stage, base width 8 (feature width 256).
    fn default() -> Self {
        Self {
            layers: [1, 1, 1, 1],
            base_width: 8,
            channels: 3,
            eps: 1e-5,
        }
    }
}

impl ResNetConfig {
    /// ResNet-50.
    pub fn resnet50() -> Self {
        Self {
            layers: [3, 4, 6, 3],
            base_width: 64,
            channels: 3,
            eps: 1e-5,
        }
    }

    /// Width of the pooled feature (`8 × base_width`, 2048 for ResNet-50).
    pub fn feature_dim(&self) -> usize {
        self.base_width * 8 * 4
    }
}

/// Batch normalisation over `[B, C, H, W]` from differentiable operations.
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: f64,
    update: Mutex<()>,
}

impl BatchNorm {
    /// `weight`, `bias`, `running_mean`, `running_var` of size `c` under `vb`.
    pub fn new(c: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(c, "weight", candle_nn::init::ONE)?,
            bias: vb.get_with_hints(c, "bias", candle_nn::init::ZERO)?,
            running_mean: vb.get_with_hints(c, "running_mean", candle_nn::init::ZERO)?,
            running_var: vb.get_with_hints(c, "running_var", candle_nn::init::ONE)?,
            eps,
            update: Mutex::new(()),
        })
    }

    /// Normalise; in training mode with batch statistics (and update the running ones).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = x.dim(1)?;
        let shape = (1, c, 1, 1);
        let (mean, var) = if train {
            let flat = x.transpose(0, 1)?.flatten_from(1)?; // [C, B·H·W]
            let n = flat.dim(1)? as f64;
            let mean = flat.mean(D::Minus1)?;
            let var = flat
                .broadcast_sub(&mean.unsqueeze(1)?)?
                .sqr()?
                .mean(D::Minus1)?;
            let _guard = self.update.lock().expect("batch-norm update lock");
            // Running statistics use the unbiased variance, as PyTorch does; they are buffers
            // and need no gradient.
            let unbiased = (var.detach() * (n / (n - 1.0).max(1.0)))?;
            let rm = ((&self.running_mean * 0.9)? + (mean.detach() * 0.1)?)?;
            let rv = ((&self.running_var * 0.9)? + (unbiased * 0.1)?)?;
            set_buffer(&self.running_mean, &rm)?;
            set_buffer(&self.running_var, &rv)?;
            (mean, var)
        } else {
            (self.running_mean.clone(), self.running_var.clone())
        };
        let normed = x
            .broadcast_sub(&mean.reshape(shape)?)?
            .broadcast_div(&(var.reshape(shape)? + self.eps)?.sqrt()?)?;
        Ok(normed
            .broadcast_mul(&self.weight.reshape(shape)?)?
            .broadcast_add(&self.bias.reshape(shape)?)?)
    }
}

/// Overwrite a buffer in place: the tensor shares its storage with the variable (or the
/// loaded constant) it came from, so the running statistics are kept and saved.
fn set_buffer(buffer: &Tensor, value: &Tensor) -> candle_core::Result<()> {
    buffer.slice_set(&value.to_dtype(buffer.dtype())?, 0, 0)
}

/// 3×3 max-pool, stride 2, padding 1, as the maximum of nine shifted strided views.
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    // Pad with a very negative value so padding never wins.
    let padded = x
        .pad_with_same(2, 1, 2 * ho + 1 - h)?
        .pad_with_same(3, 1, 2 * wo + 1 - w)?;
    let padded = mask_border(&padded, h, w)?;
    let mut out: Option<Tensor> = None;
    for dy in 0..3 {
        for dx in 0..3 {
            let v = padded
                .narrow(2, dy, 2 * ho)?
                .narrow(3, dx, 2 * wo)?
                .reshape((b, c, ho, 2, wo, 2))?
                .i((.., .., .., 0, .., 0))?;
            out = Some(match out {
                None => v,
                Some(o) => o.maximum(&v)?,
            });
        }
    }
    Ok(out.expect("nine views"))
}

/// Replace the replicated border of a padded `[B, C, 1 + H + r, 1 + W + r']` tensor by −1e30.
fn mask_border(p: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, ph, pw) = p.dims4()?;
    let inside: Vec<u8> = (0..ph * pw)
        .map(|k| {
            let (y, x) = (k / pw, k % pw);
            (y >= 1 && y <= h && x >= 1 && x <= w) as u8
        })
        .collect();
    let mask = Tensor::from_vec(inside, (1, 1, ph, pw), p.device())?.broadcast_as(p.shape())?;
    let low = Tensor::full(-1e30f64, p.shape(), p.device())?.to_dtype(p.dtype())?;
    Ok(mask.where_cond(p, &low)?)
}

struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Conv2d,
    bn3: BatchNorm,
    downsample: Option<(Conv2d, BatchNorm)>,
}

fn conv(i: usize, o: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        stride,
        ..Default::default()
    };
    Ok(candle_nn::conv2d_no_bias(i, o, k, cfg, vb)?)
}

impl Bottleneck {
    fn new(inp: usize, width: usize, stride: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let out = width * 4;
        let downsample = if stride != 1 || inp != out {
            Some((
                conv(inp, out, 1, stride, vb.pp("downsample.0"))?,
                BatchNorm::new(out, eps, vb.pp("downsample.1"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: conv(inp, width, 1, 1, vb.pp("conv1"))?,
            bn1: BatchNorm::new(width, eps, vb.pp("bn1"))?,
            conv2: conv(width, width, 3, stride, vb.pp("conv2"))?,
            bn2: BatchNorm::new(width, eps, vb.pp("bn2"))?,
            conv3: conv(width, out, 1, 1, vb.pp("conv3"))?,
            bn3: BatchNorm::new(out, eps, vb.pp("bn3"))?,
            downsample,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.bn1.forward_t(&self.conv1.forward(x)?, train)?.relu()?;
        let y = self
            .bn2
            .forward_t(&self.conv2.forward(&y)?, train)?
            .relu()?;
        let y = self.bn3.forward_t(&self.conv3.forward(&y)?, train)?;
        let skip = match &self.downsample {
            Some((c, bn)) => bn.forward_t(&c.forward(x)?, train)?,
            None => x.clone(),
        };
        Ok((y + skip)?.relu()?)
    }
}

/// The ResNet backbone; `forward` returns globally average-pooled features.
pub struct ResNet {
    config: ResNetConfig,
    conv1: Conv2d,
    bn1: BatchNorm,
    stages: Vec<Vec<Bottleneck>>,
}

impl ResNet {
    /// Build from `vb` (a torchvision/timm checkpoint or fresh variables).
    pub fn new(config: &ResNetConfig, vb: VarBuilder) -> Result<Self> {
        if config.base_width == 0 || config.layers.contains(&0) {
            return Err(EncoderError::Input {
                what: "ResNetConfig",
                detail: "base_width and every stage's block count must be ≥ 1".into(),
            });
        }
        let w = config.base_width;
        let conv1 = candle_nn::conv2d_no_bias(
            config.channels,
            w,
            7,
            Conv2dConfig {
                padding: 3,
                stride: 2,
                ..Default::default()
            },
            vb.pp("conv1"),
        )?;
        let bn1 = BatchNorm::new(w, config.eps, vb.pp("bn1"))?;
        let mut stages = Vec::new();
        let mut inp = w;
        for (s, &n) in config.layers.iter().enumerate() {
            let width = w << s;
            let mut blocks = Vec::new();
            for k in 0..n {
                let stride = if s > 0 && k == 0 { 2 } else { 1 };
                blocks.push(Bottleneck::new(
                    inp,
                    width,
                    stride,
                    config.eps,
                    vb.pp(format!("layer{}.{k}", s + 1)),
                )?);
                inp = width * 4;
            }
            stages.push(blocks);
        }
        Ok(Self {
            config: config.clone(),
            conv1,
            bn1,
            stages,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// `[B, C, H, W]` → `[B, feature_dim]`.
    pub fn forward(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let x = self
            .bn1
            .forward_t(&self.conv1.forward(images)?, train)?
            .relu()?;
        let mut x = max_pool_3x3_s2(&x)?;
        for stage in &self.stages {
            for block in stage {
                x = block.forward_t(&x, train)?;
            }
        }
        Ok(x.flatten_from(2)?.mean(D::Minus1)?)
    }
}
