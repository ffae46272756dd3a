//! Differentiable replacements for candle's fused kernels.
//!
//! On the CPU (`f32`/`f64`) softmax, layer norm and GELU run as the fused kernels of
//! [`crate::fused`], whose backward passes are written by hand; elsewhere they are composed
//! from elementary operations.
//!
//! In candle 0.11.1 the fused `candle_nn::LayerNorm` (with bias, contiguous input),
//! `ops::softmax_last_dim` and `ops::rms_norm` have no backward pass: a graph through them is
//! cut silently and the layers before them never learn. These versions are written with
//! elementary operations that all have a backward pass. `Dropout` here really drops in
//! training mode, from a seeded generator (candle-transformers' BERT dropout is a no-op and
//! candle's CPU generator cannot be seeded).

use std::sync::Mutex;

use candle_core::{DType, Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::fused::{cpu_float, GeluErf, LayerNormOp, LinearOp, SoftmaxLastDim};
use rand::{Rng, SeedableRng};

/// Softmax over the last dimension, `exp(x − max) / Σ exp(x − max)` (max detached),
/// computed in `f32` for half-precision inputs and returned in the input's dtype.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    in_f32(x, |x| {
        if cpu_float(x) {
            return x.contiguous()?.apply_op1(SoftmaxLastDim);
        }
        let max = x.max_keepdim(D::Minus1)?.detach();
        let e = x.broadcast_sub(&max)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    })
}

/// A linear layer `x·Wᵀ + b` with candle's parameters, names and initialisation; on the CPU
/// one fused operation (see [`crate::fused`]) with its own backward pass, which computes
/// the three gradients directly instead of through candle's reshape, transpose and
/// broadcast operations.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
}

impl Linear {
    /// `in_dim → out_dim` with a bias, under `vb` (`weight`, `bias`), initialised as
    /// `candle_nn::linear`.
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            inner: candle_nn::linear(in_dim, out_dim, vb)?,
        })
    }

    /// Several linear layers of the same input as one: `x·[W₁; W₂; …]ᵀ + [b₁; b₂; …]`,
    /// their outputs side by side in the last dimension (BERT's query, key and value
    /// projections, packed as [`crate::attention::multi_head_attention`] reads them).
    /// The stacked weights are built from the layers' own, so each gets its gradient.
    pub fn stacked(layers: &[&Linear]) -> candle_core::Result<Self> {
        let weights: Vec<&Tensor> = layers.iter().map(|l| l.inner.weight()).collect();
        let biases: Option<Vec<&Tensor>> = layers.iter().map(|l| l.inner.bias()).collect();
        let bias = match biases {
            Some(b) => Some(Tensor::cat(&b, 0)?),
            None if layers.iter().all(|l| l.inner.bias().is_none()) => None,
            None => candle_core::bail!("Linear::stacked: some layers have a bias and some not"),
        };
        Ok(Self::from_parts(Tensor::cat(&weights, 0)?, bias))
    }

    /// The layer of weight `[out, in]` and optional bias `[out]` (tensors already held
    /// elsewhere, such as a ViT's patch-embedding convolution seen as a product).
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            inner: candle_nn::Linear::new(weight, bias),
        }
    }

    /// `dropout(x·Wᵀ + b)`, on the CPU in one fused operation (the mask is applied in the
    /// layer's own pass, forward and backward). The mask is the one `dropout.forward_t`
    /// would draw for the output, so the result is the same as applying it after.
    pub fn forward_dropout(
        &self,
        x: &Tensor,
        dropout: &Dropout,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let mut shape = x.dims().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = self.inner.weight().dim(0)?;
        }
        let mask = dropout.mask(&shape.into(), x.dtype(), x.device(), train)?;
        self.forward_masked(x, mask)
    }

    /// `(x·Wᵀ + b) ⊙ mask`: the fused operation on the CPU, candle's layer elsewhere.
    fn forward_masked(&self, x: &Tensor, mask: Option<Tensor>) -> candle_core::Result<Tensor> {
        match self.inner.bias() {
            Some(b) if cpu_float(x) && b.dtype() == x.dtype() => x.contiguous()?.apply_op3(
                &self.inner.weight().contiguous()?,
                &b.contiguous()?,
                LinearOp { mask },
            ),
            _ => {
                let y = self.inner.forward(x)?;
                match mask {
                    Some(m) => y * m,
                    None => Ok(y),
                }
            }
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_masked(x, None)
    }
}

/// Exact (erf) GELU; a fused kernel on the CPU (see [`crate::fused`]).
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if cpu_float(x) {
        x.contiguous()?.apply_op1(GeluErf)
    } else {
        x.gelu_erf()
    }
}

/// `f(x)` evaluated in `f32` when `x` is half precision (`bf16`/`f16`), cast back after:
/// sums over a row (norms, softmax) lose too much in 8 mantissa bits. The casts are
/// differentiable, so gradients flow through in the same precision.
fn in_f32(
    x: &Tensor,
    f: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    match x.dtype() {
        DType::BF16 | DType::F16 => f(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype()),
        _ => f(x),
    }
}

/// Layer normalisation over the last dimension with a learnable scale and shift.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// `weight` and `bias` of size `dim` under `vb` (names `weight`/`bias`, or the older
    /// `gamma`/`beta` that some BERT checkpoints use).
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        let (w, b) = if vb.contains_tensor("gamma") && !vb.contains_tensor("weight") {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(Self {
            weight: vb.get_with_hints(dim, w, candle_nn::init::ONE)?,
            bias: vb.get_with_hints(dim, b, candle_nn::init::ZERO)?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    /// Normalised in `f32` for half-precision inputs (see [`in_f32`]).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        in_f32(x, |x| {
            if cpu_float(x) && self.weight.dtype() == x.dtype() {
                return x.contiguous()?.apply_op3(
                    &self.weight,
                    &self.bias,
                    LayerNormOp { eps: self.eps },
                );
            }
            let mean = x.mean_keepdim(D::Minus1)?;
            let centred = x.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
            normed
                .broadcast_mul(&self.weight.to_dtype(x.dtype())?)?
                .broadcast_add(&self.bias.to_dtype(x.dtype())?)
        })
    }
}

/// The optimisation step dropout masks are drawn for, shared by every [`Dropout`] of a
/// module. A mask depends only on (seed, step, call within the step), so a run resumed
/// at step `k` draws exactly the masks an uninterrupted run draws there.
#[derive(Debug, Clone, Default)]
pub struct StepClock(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl StepClock {
    /// Set the current step.
    pub fn set(&self, step: u64) {
        self.0.store(step, std::sync::atomic::Ordering::SeqCst);
    }

    /// The current step.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Inverted dropout from the project's own seeded generator.
#[derive(Debug)]
pub struct Dropout {
    p: f64,
    seed: u64,
    clock: StepClock,
    /// (step the calls are counted for, calls so far in that step)
    calls: Mutex<(u64, u64)>,
}

impl Dropout {
    /// Drop probability `p ∈ [0, 1)`, seeded, with a clock of its own that stays at 0
    /// (every call then draws a fresh mask).
    pub fn new(p: f64, seed: u64) -> Self {
        Self::with_clock(p, seed, StepClock::default())
    }

    /// Drop probability `p`, seeded, drawing masks for the step `clock` shows.
    pub fn with_clock(p: f64, seed: u64, clock: StepClock) -> Self {
        Self {
            p: p.clamp(0.0, 0.999),
            seed,
            clock,
            calls: Mutex::new((0, 0)),
        }
    }

    /// Apply (only when `train`).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self.mask(x.shape(), x.dtype(), x.device(), train)? {
            Some(mask) => x * mask,
            None => Ok(x.clone()),
        }
    }

    /// The next inverted-dropout mask (0 or `1/(1 − p)` per element) for a tensor of
    /// `shape`, drawn exactly as [`Dropout::forward_t`] would draw it; `None` when it would
    /// leave its input alone (not training, or `p = 0`). For layers that apply the mask
    /// inside a fused kernel ([`crate::attention::multi_head_attention`]).
    pub fn mask(
        &self,
        shape: &candle_core::Shape,
        dtype: DType,
        device: &candle_core::Device,
        train: bool,
    ) -> candle_core::Result<Option<Tensor>> {
        if !train || self.p == 0.0 {
            return Ok(None);
        }
        let step = self.clock.get();
        let call = {
            let mut c = self.calls.lock().expect("dropout counter lock");
            if c.0 != step {
                *c = (step, 0);
            }
            c.1 += 1;
            c.1 - 1
        };
        // ChaCha8 and one 32-bit draw per element: masks cost a third of what `StdRng`'s
        // ChaCha12 with 64-bit draws did, and 2⁻³² is far finer than any dropout rate.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(mix(self.seed, step, call));
        let keep = 1.0 - self.p;
        // keep < 1 here, so the threshold fits in 32 bits.
        let threshold = (keep * 4_294_967_296.0) as u32;
        let kept = (1.0 / keep) as f32;
        // The draws in blocks (the same numbers, in the same order, as one `next_u32` per
        // element), then a branch-free comparison the compiler vectorises.
        let mut draws = vec![0u32; shape.elem_count()];
        rng.fill(&mut draws[..]);
        let mask: Vec<f32> = draws
            .iter()
            .map(|&u| if u < threshold { kept } else { 0.0 })
            .collect();
        Tensor::from_vec(mask, shape, device)?
            .to_dtype(dtype)
            .map(Some)
    }
}

/// SplitMix64 of three numbers: an independent stream per (seed, step, call).
fn mix(seed: u64, step: u64, call: u64) -> u64 {
    let mut z =
        seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ call.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn linear_with_dropout_equals_dropout_after_the_layer_in_value_and_gradient() {
        let dev = Device::Cpu;
        let (k, n) = (6, 5);
        let w = Var::from_vec(
            (0..n * k)
                .map(|i| (i as f64 * 0.31).sin())
                .collect::<Vec<_>>(),
            (n, k),
            &dev,
        )
        .unwrap();
        let b = Var::from_vec((0..n).map(|i| i as f64 * 0.2).collect::<Vec<_>>(), n, &dev).unwrap();
        let x = Var::from_vec(
            (0..4 * 3 * k)
                .map(|i| (i as f64 * 0.7).cos())
                .collect::<Vec<_>>(),
            (4, 3, k),
            &dev,
        )
        .unwrap();
        let layer = Linear::from_parts(w.as_tensor().clone(), Some(b.as_tensor().clone()));
        let run = |fused: bool| {
            // A fresh dropout with the same seed: the same mask for the first call.
            let dropout = Dropout::new(0.4, 11);
            let y = if fused {
                layer
                    .forward_dropout(x.as_tensor(), &dropout, true)
                    .unwrap()
            } else {
                dropout
                    .forward_t(&layer.forward(x.as_tensor()).unwrap(), true)
                    .unwrap()
            };
            let c = Tensor::arange(0.0f64, y.elem_count() as f64, &dev)
                .unwrap()
                .reshape(y.shape())
                .unwrap();
            let g = (&y * c).unwrap().sum_all().unwrap().backward().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            [
                flat(&y),
                flat(g.get(x.as_tensor()).unwrap()),
                flat(g.get(w.as_tensor()).unwrap()),
                flat(g.get(b.as_tensor()).unwrap()),
            ]
        };
        let (fused, composed) = (run(true), run(false));
        let dropped = fused[0].iter().filter(|&&v| v == 0.0).count();
        assert!(
            dropped > 10 && dropped < 50,
            "{dropped} of 60 outputs dropped"
        );
        for (p, q) in fused.iter().zip(&composed) {
            for (u, v) in p.iter().zip(q) {
                assert!((u - v).abs() < 1e-12, "{u} vs {v}");
            }
        }
        // Not training: no mask, the plain layer.
        let plain = layer
            .forward_dropout(x.as_tensor(), &Dropout::new(0.4, 11), false)
            .unwrap();
        let diff =
            crate::testing::max_abs_diff(&plain, &layer.forward(x.as_tensor()).unwrap()).unwrap();
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn softmax_and_layer_norm_match_candle_and_have_gradients() {
        let dev = Device::Cpu;
        let x = Var::new(&[[1.0f64, 2.0, 0.5, -1.0], [3.0, 3.0, 3.0, 2.0]], &dev).unwrap();
        let ours = softmax_last_dim(x.as_tensor()).unwrap();
        let theirs = candle_nn::ops::softmax_last_dim(x.as_tensor()).unwrap();
        let diff = crate::testing::max_abs_diff(&ours, &theirs).unwrap();
        assert!(diff < 1e-12);
        let w = Tensor::new(&[0.5f64, 2.0, 1.0, -1.0], &dev).unwrap();
        let loss = ours
            .broadcast_mul(&w.unsqueeze(0).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let g = loss.backward().unwrap();
        assert!(g.get(x.as_tensor()).is_some(), "softmax passes gradients");

        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &dev);
        let ln = LayerNorm::new(4, 1e-12, vb.pp("ln")).unwrap();
        let y = ln.forward(x.as_tensor()).unwrap();
        // Against the definition, row by row.
        let rows = x.as_tensor().to_vec2::<f64>().unwrap();
        let got = y.to_vec2::<f64>().unwrap();
        for (r, g) in rows.iter().zip(&got) {
            let m = r.iter().sum::<f64>() / 4.0;
            let v = r.iter().map(|a| (a - m).powi(2)).sum::<f64>() / 4.0;
            for (a, b) in r.iter().zip(g) {
                assert!(((a - m) / (v + 1e-12).sqrt() - b).abs() < 1e-9);
            }
        }
        let loss = y
            .broadcast_mul(&w.unsqueeze(0).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let g = loss.backward().unwrap();
        assert!(g.get(x.as_tensor()).is_some());
        for v in vm.all_vars() {
            assert!(
                g.get(v.as_tensor()).is_some(),
                "layer-norm parameters get gradients"
            );
        }
    }

    #[test]
    fn dropout_drops_in_training_only_and_is_seeded() {
        let x = Tensor::ones((50, 40), DType::F32, &Device::Cpu).unwrap();
        let d = Dropout::new(0.25, 3);
        let y = d
            .forward_t(&x, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let zeros = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
        assert!((zeros - 0.25).abs() < 0.04, "{zeros}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        let again = Dropout::new(0.25, 3)
            .forward_t(&x, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(y, again);
        // The mask is one 32-bit ChaCha8 draw per element, in order, kept below
        // keep · 2³²: the stream of the first call of step 0.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(mix(3, 0, 0));
        let threshold = (0.75f64 * 4_294_967_296.0) as u64;
        let expected: Vec<f32> = (0..2000)
            .map(|_| {
                if u64::from(rand::RngCore::next_u32(&mut rng)) < threshold {
                    1.0 / 0.75
                } else {
                    0.0
                }
            })
            .collect();
        assert_eq!(y, expected);
        assert_eq!(
            d.forward_t(&x, false)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![1.0; 2000]
        );
    }
}
