//! AdamW with parameter groups, warm-up + cosine learning rate stepped per optimisation
//! step, global-norm gradient clipping and gradient accumulation — the pieces candle does
//! not provide (its `AdamW` has one weight decay for every variable and no clipping), with
//! a state that checkpoints and resumes exactly.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Optimiser and schedule settings (defaults: the reference recipe, SPEC §9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay, applied to matrices only (not to biases, norms, `a`, `b`
    /// or the temperature: every parameter with fewer than two dimensions).
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Share of all optimisation steps spent warming up linearly from 0.
    pub warmup_fraction: f64,
    /// Final learning rate as a share of the peak.
    pub min_lr_fraction: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub grad_clip: f64,
    /// Micro-batches whose gradients are summed (and averaged) per optimisation step.
    pub accumulation: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 5e-5,
            weight_decay: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_fraction: 0.05,
            min_lr_fraction: 0.0,
            grad_clip: 1.0,
            accumulation: 1,
        }
    }
}

impl OptimConfig {
    /// Reject values that cannot train, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, value: f64, reason: &str| {
            Err(TrainError::Config {
                field: format!("optim.{field}"),
                reason: format!("{value} {reason}"),
            })
        };
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", self.lr, "must be a positive number");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("weight_decay", self.weight_decay, "must be ≥ 0");
        }
        for (f, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return bad(f, v, "must lie in [0, 1)");
            }
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return bad("eps", self.eps, "must be > 0");
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return bad(
                "warmup_fraction",
                self.warmup_fraction,
                "must lie in [0, 1)",
            );
        }
        if !(0.0..=1.0).contains(&self.min_lr_fraction) {
            return bad(
                "min_lr_fraction",
                self.min_lr_fraction,
                "must lie in [0, 1]",
            );
        }
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return bad(
                "grad_clip",
                self.grad_clip,
                "must be ≥ 0 (0 turns clipping off)",
            );
        }
        if self.accumulation == 0 {
            return bad("accumulation", 0.0, "must be ≥ 1");
        }
        Ok(())
    }

    /// Learning rate at optimisation step `step` (0-based) of `total`: linear warm-up to
    /// `lr`, then a cosine down to `min_lr_fraction · lr` at the last step.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let total = total.max(1);
        let warmup = ((self.warmup_fraction * total as f64).round() as usize).min(total - 1);
        if step < warmup {
            return self.lr * (step + 1) as f64 / warmup as f64;
        }
        let span = (total - warmup).max(1) as f64;
        let progress = ((step - warmup) as f64 / span).min(1.0);
        let floor = self.min_lr_fraction * self.lr;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// One parameter and its moments.
struct Slot {
    name: String,
    var: Var,
    /// First and second moments, `[2, n]` in `f32` (`n` = the parameter's element count),
    /// side by side so that the fused CPU update reads them as one input.
    mv: Tensor,
    decay: bool,
}

impl Slot {
    /// First (`0`) or second (`1`) moment in the parameter's shape.
    fn moment(&self, which: usize) -> Result<Tensor> {
        Ok(self.mv.get(which)?.reshape(self.var.shape())?)
    }
}

/// AdamW (Loshchilov & Hutter 2019) over named variables.
pub struct AdamW {
    config: OptimConfig,
    slots: Vec<Slot>,
    step: usize,
}

impl AdamW {
    /// Moments start at zero; parameters with fewer than two dimensions get no weight decay.
    pub fn new(vars: Vec<(String, Var)>, config: OptimConfig) -> Result<Self> {
        config.validate()?;
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                Ok(Slot {
                    decay: var.rank() >= 2,
                    name,
                    mv: Tensor::zeros((2, var.elem_count()), DType::F32, var.device())?,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            slots,
            step: 0,
        })
    }

    /// Optimisation steps taken.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Names of the parameters that receive weight decay.
    pub fn decayed(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|s| s.decay)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// Apply one update with learning rate `lr` from `grads` (one gradient per variable,
    /// by name; a variable without a gradient keeps its value and moments).
    pub fn step(&mut self, grads: &BTreeMap<String, Tensor>, lr: f64) -> Result<()> {
        self.step += 1;
        let c = &self.config;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for slot in &mut self.slots {
            let Some(g) = grads.get(&slot.name) else {
                continue;
            };
            let rule = Rule {
                lr,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                bc1,
                bc2,
                decay: if slot.decay { c.weight_decay } else { 0.0 },
            };
            let theta = slot.var.as_tensor();
            let g = g.to_dtype(DType::F32)?;
            if theta.device().is_cpu() && theta.dtype() == DType::F32 {
                // The moments, then the parameter, each updated in place.
                slot.mv.inplace_op2(&g, &MomentsUpdate(rule))?;
                theta.inplace_op2(&slot.mv, &ParamUpdate(rule))?;
            } else {
                let (next, mv) =
                    rule.composed(&theta.flatten_all()?, &g.flatten_all()?, &slot.mv)?;
                slot.mv = mv;
                slot.var
                    .set(&next.reshape(theta.shape())?.to_dtype(theta.dtype())?)?;
            }
        }
        Ok(())
    }

    /// Save the moments and the step count (safetensors), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for s in &self.slots {
            tensors.insert(format!("m.{}", s.name), s.moment(0)?);
            tensors.insert(format!("v.{}", s.name), s.moment(1)?);
        }
        tensors.insert(
            "step".into(),
            Tensor::new(&[self.step as u32], &Device::Cpu)?,
        );
        Ok(medprob_encoders::model::save_safetensors(path, &tensors)?)
    }

    /// Restore what [`save`](Self::save) wrote; every parameter must be present.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let bad = |reason: String| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let map = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| bad(format!("cannot read optimiser state: {e}")))?;
        for s in &mut self.slots {
            let mut moments = Vec::with_capacity(2);
            for which in ["m", "v"] {
                let t = map
                    .get(&format!("{which}.{}", s.name))
                    .ok_or_else(|| bad(format!("no {which} moment for {}", s.name)))?;
                if t.dims() != s.var.dims() {
                    return Err(bad(format!(
                        "{which} moment of {} has shape {:?}",
                        s.name,
                        t.dims()
                    )));
                }
                moments.push(t.to_dtype(DType::F32)?.flatten_all()?);
            }
            s.mv = Tensor::stack(&moments, 0)?.to_device(s.var.device())?;
        }
        self.step = map
            .get("step")
            .ok_or_else(|| bad("no step count".into()))?
            .to_vec1::<u32>()?[0] as usize;
        Ok(())
    }
}

/// One AdamW update of a flattened parameter `θ` from its gradient `g` and moments
/// (`[2, n]`): `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `θ ← θ(1 − lr·decay) − lr·(m/bc₁)/(√(v/bc₂) + ε)`.
///
/// On the CPU in `f32` it is two passes that update the moments and then the parameter in
/// place ([`MomentsUpdate`], [`ParamUpdate`]: nothing allocated, nothing copied);
/// elsewhere it is composed from candle operations, about fourteen per parameter, each
/// allocating a tensor.
#[derive(Debug, Clone, Copy)]
struct Rule {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// Bias corrections `1 − β₁ᵗ`, `1 − β₂ᵗ`.
    bc1: f64,
    bc2: f64,
    /// Weight decay of this parameter (0 for vectors).
    decay: f64,
}

impl Rule {
    /// `(θ', [m', v'])` from candle operations (any device and dtype).
    fn composed(&self, theta: &Tensor, g: &Tensor, mv: &Tensor) -> Result<(Tensor, Tensor)> {
        let (m, v) = (mv.get(0)?, mv.get(1)?);
        let m = ((m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
        let v = ((v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
        let update = ((&m / self.bc1)? / ((&v / self.bc2)?.sqrt()? + self.eps)?)?;
        let mut theta = theta.to_dtype(DType::F32)?;
        if self.decay > 0.0 {
            theta = (theta * (1.0 - self.lr * self.decay))?;
        }
        let next = (theta - (update * self.lr)?)?;
        Ok((next, Tensor::stack(&[m, v], 0)?))
    }
}

/// A contiguous `f32` CPU slice of a kernel's input, or an error naming the kernel.
fn f32_slice<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (candle_core::CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what}: inputs must be contiguous f32"),
    }
}

/// [`f32_slice`], writable.
fn f32_slice_mut<'a>(
    s: &'a mut candle_core::CpuStorage,
    l: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (candle_core::CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("{what}: inputs must be contiguous f32"),
    }
}

/// Elements per parallel task of the fused updates.
const CHUNK: usize = 1 << 14;

/// `[m; v] ← [β₁m + (1−β₁)g; β₂v + (1−β₂)g²]`, in place on the `[2, n]` moments.
struct MomentsUpdate(Rule);

impl candle_core::InplaceOp2 for MomentsUpdate {
    fn name(&self) -> &'static str {
        "medprob-adamw-moments"
    }

    fn cpu_fwd(
        &self,
        s1: &mut candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        use rayon::prelude::*;
        let g = f32_slice(s2, l2, self.name())?;
        let mv = f32_slice_mut(s1, l1, self.name())?;
        let n = g.len();
        if mv.len() != 2 * n {
            candle_core::bail!(
                "{}: gradient of {n} and moments {:?} do not fit",
                self.name(),
                l1.dims()
            );
        }
        let r = &self.0;
        let (b1, b2) = (r.beta1 as f32, r.beta2 as f32);
        let (c1, c2) = ((1.0 - r.beta1) as f32, (1.0 - r.beta2) as f32);
        let (m, v) = mv.split_at_mut(n);
        m.par_chunks_mut(CHUNK)
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|((m, v), g)| {
                for ((m, v), &g) in m.iter_mut().zip(v.iter_mut()).zip(g) {
                    *m = *m * b1 + g * c1;
                    *v = *v * b2 + g * g * c2;
                }
            });
        Ok(())
    }
}

/// `θ ← θ(1 − lr·decay) − lr·(m/bc₁)/(√(v/bc₂) + ε)`, in place, from the updated moments.
struct ParamUpdate(Rule);

impl candle_core::InplaceOp2 for ParamUpdate {
    fn name(&self) -> &'static str {
        "medprob-adamw-param"
    }

    fn cpu_fwd(
        &self,
        s1: &mut candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        use rayon::prelude::*;
        let mv = f32_slice(s2, l2, self.name())?;
        let theta = f32_slice_mut(s1, l1, self.name())?;
        let n = theta.len();
        if mv.len() != 2 * n {
            candle_core::bail!(
                "{}: parameter of {n} and moments {:?} do not fit",
                self.name(),
                l2.dims()
            );
        }
        let r = &self.0;
        let (eps, lr) = (r.eps as f32, r.lr as f32);
        let (inv_bc1, inv_bc2) = ((1.0 / r.bc1) as f32, (1.0 / r.bc2) as f32);
        let shrink = (1.0 - r.lr * r.decay) as f32;
        let (m, v) = mv.split_at(n);
        theta
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK))
            .zip(v.par_chunks(CHUNK))
            .for_each(|((th, m), v)| {
                for ((th, &m), &v) in th.iter_mut().zip(m).zip(v) {
                    let update = (m * inv_bc1) / ((v * inv_bc2).sqrt() + eps);
                    *th = *th * shrink - update * lr;
                }
            });
        Ok(())
    }
}

/// Gradients of the named variables from one backward pass, as owned, detached tensors.
///
/// candle leaves the gradients of leaf variables attached to the graph that computed them
/// (a convolution's weight gradient references the forward activations). Keeping such a
/// tensor — in Adam's moments, or summed over accumulation steps — would keep every step's
/// graph alive, so they are detached here, once.
pub fn collect_grads(vars: &[(String, Var)], grads: &GradStore) -> BTreeMap<String, Tensor> {
    vars.iter()
        .filter_map(|(n, v)| grads.get(v.as_tensor()).map(|g| (n.clone(), g.detach())))
        .collect()
}

/// Add `more` into `sum` (gradient accumulation).
pub fn accumulate(
    sum: &mut BTreeMap<String, Tensor>,
    more: BTreeMap<String, Tensor>,
) -> Result<()> {
    for (k, g) in more {
        let next = match sum.remove(&k) {
            Some(s) => (s + g)?,
            None => g,
        };
        sum.insert(k, next);
    }
    Ok(())
}

/// Multiply every gradient by `factor`.
pub fn scale_grads(grads: &mut BTreeMap<String, Tensor>, factor: f64) -> Result<()> {
    if factor == 1.0 {
        return Ok(());
    }
    for g in grads.values_mut() {
        *g = (&*g * factor)?;
    }
    Ok(())
}

/// The global L2 norm of all gradients (`NaN` or `∞` when any entry is), summed in name
/// order so that it is the same number on every run.
pub fn global_norm(grads: &BTreeMap<String, Tensor>) -> Result<f64> {
    let mut sum = 0.0f64;
    for g in grads.values() {
        sum += g
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f32>()? as f64;
    }
    Ok(sum.sqrt())
}

/// Scale all gradients so their global norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_global_norm(grads: &mut BTreeMap<String, Tensor>, max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if max_norm > 0.0 && norm.is_finite() && norm > max_norm {
        scale_grads(grads, max_norm / (norm + 1e-6))?;
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_cpu_update_matches_the_composed_rule_over_several_steps() {
        // 40,000 values: more than one parallel chunk.
        let n = 40_000;
        let theta: Vec<f32> = (0..n).map(|i| (i as f32 * 0.013).sin()).collect();
        let theta = Tensor::from_vec(theta, n, &Device::Cpu).unwrap();
        let mut mv = Tensor::zeros((2, n), DType::F32, &Device::Cpu).unwrap();
        // Copies: the fused update writes into its tensors' storage.
        let (fused, mut composed) = (theta.copy().unwrap(), theta);
        let mv_fused = mv.copy().unwrap();
        for t in 1..=3 {
            let g: Vec<f32> = (0..n)
                .map(|i| ((i * 7 + t * 131) as f32 * 0.0007).cos() * 0.3)
                .collect();
            let g = Tensor::from_vec(g, n, &Device::Cpu).unwrap();
            let rule = Rule {
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                bc1: 1.0 - 0.9f64.powi(t as i32),
                bc2: 1.0 - 0.999f64.powi(t as i32),
                decay: if t == 2 { 0.0 } else { 0.1 },
            };
            mv_fused.inplace_op2(&g, &MomentsUpdate(rule)).unwrap();
            fused.inplace_op2(&mv_fused, &ParamUpdate(rule)).unwrap();
            assert_eq!(mv_fused.dims(), [2, n]);
            let (next, next_mv) = rule.composed(&composed, &g, &mv).unwrap();
            composed = next;
            mv = next_mv;
        }
        let diff = |a: &Tensor, b: &Tensor| medprob_encoders::testing::max_abs_diff(a, b).unwrap();
        assert!(diff(&fused, &composed) < 1e-6, "θ differs");
        assert!(diff(&mv_fused, &mv) < 1e-6, "moments differ");
        // Three steps of about lr each moved the parameters.
        let moved = diff(
            &fused,
            &Tensor::from_vec(
                (0..n).map(|i| (i as f32 * 0.013).sin()).collect::<Vec<_>>(),
                n,
                &Device::Cpu,
            )
            .unwrap(),
        );
        assert!(moved > 0.02, "moved {moved}");
        // Moments of the wrong size are refused.
        let bad = Tensor::zeros((2, n - 1), DType::F32, &Device::Cpu).unwrap();
        let g = Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap();
        let rule = Rule {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            bc1: 0.1,
            bc2: 0.01,
            decay: 0.0,
        };
        let err = bad
            .inplace_op2(&g, &MomentsUpdate(rule))
            .unwrap_err()
            .to_string();
        assert!(err.contains("do not fit"), "{err}");
        let err = fused
            .inplace_op2(&bad, &ParamUpdate(rule))
            .unwrap_err()
            .to_string();
        assert!(err.contains("do not fit"), "{err}");
    }

    #[test]
    fn schedule_warms_up_then_decays_by_cosine() {
        let c = OptimConfig {
            lr: 1.0,
            warmup_fraction: 0.1,
            ..OptimConfig::default()
        };
        // 100 steps: 10 of warm-up reaching the peak at step 9.
        assert!((c.lr_at(0, 100) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(9, 100) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(10, 100) - 1.0).abs() < 1e-12);
        // Half-way through the cosine: 0.5.
        assert!((c.lr_at(55, 100) - 0.5).abs() < 1e-12);
        assert!(c.lr_at(99, 100) < 0.001);
        let floor = OptimConfig {
            min_lr_fraction: 0.1,
            ..c
        };
        assert!((floor.lr_at(100, 100) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn clipping_scales_to_the_global_norm() {
        let mut g = BTreeMap::new();
        g.insert(
            "a".to_string(),
            Tensor::new(&[3.0f32, 0.0], &Device::Cpu).unwrap(),
        );
        g.insert(
            "b".to_string(),
            Tensor::new(&[[4.0f32]], &Device::Cpu).unwrap(),
        );
        let before = clip_global_norm(&mut g, 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-6);
        assert!((global_norm(&g).unwrap() - 1.0).abs() < 1e-5);
        let a = g["a"].to_vec1::<f32>().unwrap();
        assert!((a[0] - 0.6).abs() < 1e-5);
        // Below the limit nothing changes.
        let after = clip_global_norm(&mut g, 10.0).unwrap();
        assert!((after - 1.0).abs() < 1e-5);
    }

    #[test]
    fn adamw_matches_the_update_rule_and_skips_decay_on_vectors() {
        let w = Var::new(&[[1.0f32, -2.0]], &Device::Cpu).unwrap();
        let b = Var::new(&[0.5f32], &Device::Cpu).unwrap();
        let cfg = OptimConfig {
            lr: 0.1,
            weight_decay: 0.5,
            ..OptimConfig::default()
        };
        let mut opt =
            AdamW::new(vec![("w".into(), w.clone()), ("b".into(), b.clone())], cfg).unwrap();
        assert_eq!(opt.decayed(), vec!["w"]);
        let mut g = BTreeMap::new();
        g.insert(
            "w".to_string(),
            Tensor::new(&[[0.2f32, -0.4]], &Device::Cpu).unwrap(),
        );
        g.insert(
            "b".to_string(),
            Tensor::new(&[1.0f32], &Device::Cpu).unwrap(),
        );
        opt.step(&g, 0.1).unwrap();
        // First step: m̂ = g, v̂ = g², update = g/(|g| + eps) ≈ sign(g).
        let w1 = w.as_tensor().to_vec2::<f32>().unwrap();
        assert!(
            (w1[0][0] - (1.0 * (1.0 - 0.05) - 0.1)).abs() < 1e-5,
            "{w1:?}"
        );
        assert!(
            (w1[0][1] - (-2.0 * (1.0 - 0.05) + 0.1)).abs() < 1e-5,
            "{w1:?}"
        );
        let b1 = b.as_tensor().to_vec1::<f32>().unwrap();
        assert!((b1[0] - 0.4).abs() < 1e-5, "no decay on a bias: {b1:?}");
    }

    #[test]
    fn state_round_trips_and_bad_config_names_the_field() {
        let w = Var::new(&[[1.0f32, 2.0]], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), w.clone())], OptimConfig::default()).unwrap();
        let mut g = BTreeMap::new();
        g.insert(
            "w".to_string(),
            Tensor::new(&[[0.3f32, 0.1]], &Device::Cpu).unwrap(),
        );
        opt.step(&g, 0.01).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        opt.save(&path).unwrap();
        let mut other = AdamW::new(vec![("w".into(), w)], OptimConfig::default()).unwrap();
        other.load(&path).unwrap();
        assert_eq!(other.steps(), 1);
        assert_eq!(
            other.slots[0].moment(1).unwrap().to_vec2::<f32>().unwrap(),
            opt.slots[0].moment(1).unwrap().to_vec2::<f32>().unwrap()
        );
        let e = OptimConfig {
            lr: -1.0,
            ..OptimConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("optim.lr"), "{e}");
    }
}
