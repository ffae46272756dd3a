//! Post-hoc calibration on validation data (SPEC §3, §7): fit `p = σ(a·s + b)` to binary
//! outcomes by maximum likelihood (Platt scaling), or only the scale `a` (temperature
//! scaling, `T = 1/a`).
//!
//! With `s = −d` for a distance `d`, the fitted `(a, b)` are the match probability's own
//! parameters, so a softmax-trained model (whose `b` never received a gradient), PCME++
//! and a deterministic baseline (`s` = cosine) are all compared with probabilities fitted
//! the same way on the same validation split.

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};

/// A fitted logistic map from a score to a probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    /// Scale `a` (the inverse temperature).
    pub scale: f64,
    /// Shift `b` (0 for temperature scaling).
    pub shift: f64,
}

/// A tiny ridge keeps the fit finite when the validation outcomes are perfectly separable.
const RIDGE: f64 = 1e-6;

impl Platt {
    /// The identity-like map `σ(s)`.
    pub const IDENTITY: Platt = Platt {
        scale: 1.0,
        shift: 0.0,
    };

    /// Probability for one score.
    pub fn probability(&self, score: f64) -> f64 {
        medprob_core::sigmoid(self.scale * score + self.shift)
    }

    /// Fit `a` and `b` by Newton's method on the mean log-loss.
    ///
    /// ```
    /// use medprob_metrics::posthoc::Platt;
    /// // Outcomes drawn exactly at σ(2s − 1) frequencies are recovered.
    /// let mut s = Vec::new();
    /// let mut y = Vec::new();
    /// for (score, pos, neg) in [(0.0, 269, 731), (0.5, 500, 500), (1.0, 731, 269)] {
    ///     s.extend(std::iter::repeat_n(score, pos + neg));
    ///     y.extend((0..pos + neg).map(|i| i < pos));
    /// }
    /// let p = Platt::fit(&s, &y)?;
    /// assert!((p.scale - 2.0).abs() < 0.01 && (p.shift + 1.0).abs() < 0.01);
    /// # Ok::<(), medprob_metrics::MetricsError>(())
    /// ```
    pub fn fit(scores: &[f64], outcomes: &[bool]) -> Result<Self> {
        fit(scores, outcomes, true)
    }

    /// Fit only the scale, `σ(a·s)` (temperature scaling).
    pub fn fit_scale(scores: &[f64], outcomes: &[bool]) -> Result<Self> {
        fit(scores, outcomes, false)
    }
}

fn fit(s: &[f64], y: &[bool], with_shift: bool) -> Result<Platt> {
    crate::check::len("Platt::fit: outcomes", s.len(), y.len())?;
    if s.is_empty() {
        return Err(MetricsError::Empty {
            what: "Platt::fit",
            detail: "no validation pairs",
        });
    }
    if let Some((i, &v)) = s.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(MetricsError::BadValue {
            what: "Platt::fit: score",
            index: i,
            value: v,
            reason: "not finite",
        });
    }
    let n = s.len() as f64;
    let loss = |a: f64, b: f64| -> f64 {
        s.iter()
            .zip(y)
            .map(|(&s, &y)| {
                let z = a * s + b;
                // log(1 + e^z) − y·z, stable for either sign of z.
                let softplus = z.max(0.0) + (-z.abs()).exp().ln_1p();
                softplus - if y { z } else { 0.0 }
            })
            .sum::<f64>()
            / n
            + RIDGE * (a * a + b * b)
    };
    let (mut a, mut b) = (1.0, 0.0);
    let mut current = loss(a, b);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&s, &y) in s.iter().zip(y) {
            let p = medprob_core::sigmoid(a * s + b);
            let r = p - f64::from(u8::from(y));
            let w = p * (1.0 - p);
            ga += r * s;
            gb += r;
            haa += w * s * s;
            hab += w * s;
            hbb += w;
        }
        let (ga, gb) = (ga / n + 2.0 * RIDGE * a, gb / n + 2.0 * RIDGE * b);
        let (haa, hab, hbb) = (haa / n + 2.0 * RIDGE, hab / n, hbb / n + 2.0 * RIDGE);
        let (da, db) = if with_shift {
            let det = haa * hbb - hab * hab;
            ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det)
        } else {
            (ga / haa, 0.0)
        };
        // Halve the Newton step until the loss does not rise.
        let mut step = 1.0;
        let mut accepted = false;
        while step > 1e-10 {
            let (na, nb) = (a - step * da, b - step * db);
            let l = loss(na, nb);
            if l <= current {
                let done = (current - l).abs() < 1e-15 && (step * da).abs() < 1e-12;
                a = na;
                b = nb;
                current = l;
                accepted = !done;
                break;
            }
            step /= 2.0;
        }
        if !accepted || (da.abs() < 1e-12 && db.abs() < 1e-12) {
            break;
        }
    }
    Ok(Platt { scale: a, shift: b })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_is_zero_at_the_fit() {
        let s: Vec<f64> = (0..200).map(|i| (i as f64 / 20.0).sin() * 3.0).collect();
        let y: Vec<bool> = (0..200).map(|i| (i * 7919 % 13) < 6 + (i % 3)).collect();
        let p = Platt::fit(&s, &y).unwrap();
        let (mut ga, mut gb) = (0.0, 0.0);
        for (&s, &y) in s.iter().zip(&y) {
            let r = p.probability(s) - f64::from(u8::from(y));
            ga += r * s;
            gb += r;
        }
        assert!(
            ga.abs() / 200.0 < 1e-6 && gb.abs() / 200.0 < 1e-6,
            "{ga} {gb}"
        );
        let t = Platt::fit_scale(&s, &y).unwrap();
        assert_eq!(t.shift, 0.0);
    }

    #[test]
    fn separable_outcomes_stay_finite() {
        let p = Platt::fit(&[-1.0, -0.5, 0.5, 1.0], &[false, false, true, true]).unwrap();
        assert!(p.scale.is_finite() && p.scale > 5.0, "{p:?}");
        assert!(p.probability(1.0) > 0.99);
        assert!(Platt::fit(&[f64::NAN], &[true]).is_err());
    }
}
