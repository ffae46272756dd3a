//! A gradient checker for trainable modules, shared by the tests of every encoder and head:
//! every variable must receive a finite, non-zero gradient, and sampled coordinates must
//! agree with central finite differences. Run it on an `f64` model.

use candle_core::{Tensor, Var};
use rand::{Rng, SeedableRng};

/// Result of [`check_gradients`]: the worst finite-difference disagreement seen.
#[derive(Debug, Clone, PartialEq)]
pub struct GradientReport {
    /// Variables checked.
    pub variables: usize,
    /// Coordinates compared with finite differences.
    pub probes: usize,
    /// Largest `|analytic − numeric| / max(1, |numeric|)`.
    pub worst_relative_error: f64,
    /// Name of the variable where it occurred.
    pub worst_variable: String,
}

/// Check every variable of `vars` against `loss` (a deterministic scalar function of them).
///
/// Fails with a message naming the first variable without a gradient, with a non-finite or
/// all-zero gradient, or whose finite differences disagree by more than `tolerance`.
pub fn check_gradients(
    vars: &[(String, Var)],
    loss: impl Fn() -> candle_core::Result<Tensor>,
    probes_per_variable: usize,
    step: f64,
    tolerance: f64,
) -> Result<GradientReport, String> {
    let grads = loss()
        .and_then(|l| l.backward())
        .map_err(|e| format!("backward failed: {e}"))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut report = GradientReport {
        variables: vars.len(),
        probes: 0,
        worst_relative_error: 0.0,
        worst_variable: String::new(),
    };
    let value = |t: Tensor| -> Result<f64, String> {
        t.to_dtype(candle_core::DType::F64)
            .and_then(|t| t.to_scalar::<f64>())
            .map_err(|e| e.to_string())
    };
    for (name, var) in vars {
        let g = grads
            .get(var.as_tensor())
            .ok_or_else(|| format!("{name}: no gradient (the graph is cut before it)"))?;
        let g: Vec<f64> = g
            .to_dtype(candle_core::DType::F64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(|e| e.to_string())?;
        if g.iter().any(|x| !x.is_finite()) {
            return Err(format!("{name}: non-finite gradient"));
        }
        if g.iter().all(|&x| x == 0.0) {
            return Err(format!("{name}: gradient is all zeros"));
        }
        let original = var.as_tensor().copy().map_err(|e| e.to_string())?;
        let base: Vec<f64> = original
            .to_dtype(candle_core::DType::F64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(|e| e.to_string())?;
        // Probe the largest-gradient coordinate and random ones.
        let largest = (0..g.len())
            .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .expect("non-empty");
        let mut coords = vec![largest];
        coords.extend((1..probes_per_variable).map(|_| rng.random_range(0..g.len())));
        for k in coords {
            let at = |delta: f64| -> Result<f64, String> {
                let mut v = base.clone();
                v[k] += delta;
                let t = Tensor::from_vec(v, original.shape(), original.device())
                    .and_then(|t| t.to_dtype(original.dtype()))
                    .map_err(|e| e.to_string())?;
                var.set(&t).map_err(|e| e.to_string())?;
                value(loss().map_err(|e| e.to_string())?)
            };
            let numeric = (at(step)? - at(-step)?) / (2.0 * step);
            var.set(&original).map_err(|e| e.to_string())?;
            let err = (g[k] - numeric).abs() / numeric.abs().max(1.0);
            report.probes += 1;
            if err > report.worst_relative_error {
                report.worst_relative_error = err;
                report.worst_variable = name.clone();
            }
            if err > tolerance {
                return Err(format!(
                    "{name}[{k}]: analytic gradient {} but finite difference {numeric} (relative error {err:e})",
                    g[k]
                ));
            }
        }
    }
    Ok(report)
}

/// The largest `|a − b|` over all elements (same shapes), in `f64`: how the tests compare a
/// fused kernel with its reference, a precision with another, or two paths that must agree.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f64> {
    let dtype = candle_core::DType::F64;
    (a.to_dtype(dtype)? - b.to_dtype(dtype)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f64>()
}
