//! Selective retrieval with a guarantee (SPEC §7): answer a query only when its confidence
//! clears a threshold chosen on a calibration split, so that the error rate is controlled
//! on new queries. Two guarantees, and every reported number says which one it carries:
//!
//! * [`conformal_risk_control`] (Angelopoulos, Bates, Fisch, Lei & Schuster, 2022) bounds
//!   the **joint** loss `E[1{answered} · loss] ≤ α` *in expectation* over the calibration
//!   draw and the new query. It holds for any exchangeable data and any confidence.
//! * [`selection_with_guaranteed_risk`] (Geifman & El-Yaniv, 2017) bounds the **selective**
//!   risk `P(wrong | answered) ≤ α` *with probability at least 1 − δ* over the calibration
//!   draw, using one-sided Clopper–Pearson bounds at a binary search's `⌈log₂ n⌉` thresholds
//!   (union bound). When no threshold can be certified it answers nothing.

use serde::{Deserialize, Serialize};
use statrs::distribution::{Beta, ContinuousCDF};

use crate::error::{MetricsError, Result};

/// Which guarantee a threshold carries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Guarantee {
    /// Conformal risk control: `E[1{answered and wrong}] ≤ alpha`, in expectation.
    JointRiskInExpectation { alpha: f64 },
    /// Selection with guaranteed risk: `P(wrong | answered) ≤ alpha` with probability
    /// `≥ 1 − delta` over the calibration split.
    SelectiveRiskWithProbability { alpha: f64, delta: f64 },
}

impl Guarantee {
    /// A one-line statement for reports.
    pub fn describe(&self) -> String {
        match *self {
            Self::JointRiskInExpectation { alpha } => format!(
                "conformal risk control: E[answered and wrong] ≤ {alpha} (in expectation)"
            ),
            Self::SelectiveRiskWithProbability { alpha, delta } => format!(
                "selection with guaranteed risk: P(wrong ∣ answered) ≤ {alpha} with probability ≥ {}",
                1.0 - delta
            ),
        }
    }
}

/// A confidence threshold: answer when `confidence > threshold` (or `≥` when `inclusive`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Selector {
    /// The threshold (`+∞` answers nothing, `−∞` everything).
    pub threshold: f64,
    /// Whether a confidence equal to the threshold is answered.
    pub inclusive: bool,
}

impl Selector {
    /// A selector that answers nothing.
    pub const ABSTAIN: Selector = Selector {
        threshold: f64::INFINITY,
        inclusive: false,
    };

    /// Whether a query with this confidence is answered.
    pub fn answers(&self, confidence: f64) -> bool {
        if self.inclusive {
            confidence >= self.threshold
        } else {
            confidence > self.threshold
        }
    }

    /// Coverage and risks of this selector on a set of queries.
    pub fn evaluate(&self, confidence: &[f64], loss: &[f64]) -> Result<SelectiveOutcome> {
        check(confidence, loss, "Selector::evaluate")?;
        let (mut answered, mut lost) = (0usize, 0.0);
        for (&c, &l) in confidence.iter().zip(loss) {
            if self.answers(c) {
                answered += 1;
                lost += l;
            }
        }
        let n = confidence.len() as f64;
        Ok(SelectiveOutcome {
            queries: confidence.len(),
            answered,
            coverage: answered as f64 / n,
            selective_risk: if answered > 0 {
                Some(lost / answered as f64)
            } else {
                None
            },
            joint_risk: lost / n,
        })
    }
}

/// What a selector did on one split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SelectiveOutcome {
    /// Queries seen.
    pub queries: usize,
    /// Queries answered.
    pub answered: usize,
    /// `answered / queries`.
    pub coverage: f64,
    /// Mean loss over the answered queries (`None` when nothing was answered).
    pub selective_risk: Option<f64>,
    /// Mean of `1{answered} · loss` over all queries.
    pub joint_risk: f64,
}

/// The threshold of conformal risk control for the loss `1{answered} · loss_i`, which can
/// only fall as the threshold rises: the lowest `λ` with
/// `(Σ_i loss_i·1{c_i > λ} + 1) / (n + 1) ≤ α`. On a new exchangeable query,
/// `E[1{answered} · loss] ≤ α`. Losses must lie in `[0, 1]`.
///
/// ```
/// use medprob_metrics::selective::conformal_risk_control;
/// // Nine calibration queries; the three least confident are wrong.
/// let c = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1];
/// let l = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
/// // α = 0.2: (errors + 1) / 10 ≤ 0.2 allows one error: answer c > 0.2.
/// let s = conformal_risk_control(&c, &l, 0.2)?;
/// assert_eq!(s.threshold, 0.2);
/// assert!(s.answers(0.3) && !s.answers(0.2));
/// # Ok::<(), medprob_metrics::MetricsError>(())
/// ```
pub fn conformal_risk_control(confidence: &[f64], loss: &[f64], alpha: f64) -> Result<Selector> {
    check(confidence, loss, "conformal_risk_control")?;
    check_level("alpha", alpha)?;
    let n = confidence.len();
    let budget = alpha * (n + 1) as f64 - 1.0;
    if budget < 0.0 {
        return Ok(Selector::ABSTAIN);
    }
    let (order, groups) = crate::check::tie_groups(confidence, true);
    let mut best = Selector::ABSTAIN;
    let mut sum = 0.0;
    for g in groups {
        let end = g.end;
        sum += order[g].iter().map(|&i| loss[i]).sum::<f64>();
        if sum > budget + 1e-12 {
            break;
        }
        // Everything above the next lower value is answered.
        best = Selector {
            threshold: if end < n {
                confidence[order[end]]
            } else {
                f64::NEG_INFINITY
            },
            inclusive: false,
        };
    }
    Ok(best)
}

/// Selection with guaranteed risk (Geifman & El-Yaniv 2017, Algorithm 1): a binary search
/// over the calibration confidences for the lowest threshold whose one-sided
/// Clopper–Pearson bound on `P(wrong | answered)`, at level `δ / ⌈log₂ n⌉`, is at most
/// `α`. With probability at least `1 − δ` over the calibration split, the selective risk of
/// the returned threshold is at most `α`. Returns [`Selector::ABSTAIN`] when no tested
/// threshold is certified.
///
/// ```
/// use medprob_metrics::selective::selection_with_guaranteed_risk;
/// // 1,000 calibration queries: the 500 most confident are all right, the rest all wrong.
/// let c: Vec<f64> = (0..1000).map(|i| i as f64).collect();
/// let wrong: Vec<bool> = (0..1000).map(|i| i < 500).collect();
/// let s = selection_with_guaranteed_risk(&c, &wrong, 0.05, 0.1)?;
/// assert!(s.answers(999.0) && !s.answers(100.0));
/// # Ok::<(), medprob_metrics::MetricsError>(())
/// ```
pub fn selection_with_guaranteed_risk(
    confidence: &[f64],
    wrong: &[bool],
    alpha: f64,
    delta: f64,
) -> Result<Selector> {
    let loss: Vec<f64> = wrong.iter().map(|&w| f64::from(u8::from(w))).collect();
    check(confidence, &loss, "selection_with_guaranteed_risk")?;
    check_level("alpha", alpha)?;
    check_level("delta", delta)?;
    let n = confidence.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| confidence[a].total_cmp(&confidence[b])); // ascending
                                                                     // errors_above[z] = wrong answers among order[z..].
    let mut errors_above = vec![0usize; n + 1];
    for z in (0..n).rev() {
        errors_above[z] = errors_above[z + 1] + usize::from(wrong[order[z]]);
    }
    let tests = (n as f64).log2().ceil().max(1.0) as usize;
    let level = delta / tests as f64;
    let (mut lo, mut hi) = (0usize, n - 1);
    let mut best = Selector::ABSTAIN;
    for _ in 0..tests {
        let z = (lo + hi).div_ceil(2);
        let theta = confidence[order[z]];
        // Answer c ≥ θ: everything from the first occurrence of θ in the sorted order.
        let first = order.partition_point(|&i| confidence[i] < theta);
        let answered = n - first;
        let bound = clopper_pearson_upper(errors_above[first], answered, level);
        if bound <= alpha {
            best = Selector {
                threshold: theta,
                inclusive: true,
            };
            hi = z;
        } else {
            lo = z;
        }
    }
    Ok(best)
}

/// One-sided `1 − level` Clopper–Pearson upper bound on a binomial proportion after
/// `errors` in `trials`: the `b` with `P(Bin(trials, b) ≤ errors) = level`.
pub fn clopper_pearson_upper(errors: usize, trials: usize, level: f64) -> f64 {
    if errors >= trials {
        return 1.0;
    }
    let beta = Beta::new(errors as f64 + 1.0, (trials - errors) as f64)
        .expect("shape parameters are positive");
    beta.inverse_cdf(1.0 - level)
}

fn check(confidence: &[f64], loss: &[f64], what: &'static str) -> Result<()> {
    crate::check::confidence_and_loss(what, confidence, loss)
}

fn check_level(name: &'static str, value: f64) -> Result<()> {
    if !(value > 0.0 && value < 1.0) {
        return Err(MetricsError::InvalidParameter {
            name,
            value,
            reason: "must lie strictly between 0 and 1",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformal_threshold_by_hand() {
        let c = [0.9, 0.8, 0.8, 0.5, 0.1];
        let l = [0.0, 1.0, 0.0, 1.0, 0.0];
        // n = 5: budget = α·6 − 1. α = 0.5 → 2 errors allowed: everything.
        let s = conformal_risk_control(&c, &l, 0.5).unwrap();
        assert_eq!(s.threshold, f64::NEG_INFINITY);
        // α = 0.34 → budget 1.04: one error: the tie group at 0.8 is taken whole (c > 0.5).
        let s = conformal_risk_control(&c, &l, 0.34).unwrap();
        assert_eq!((s.threshold, s.inclusive), (0.5, false));
        // α = 0.2 → budget 0.2: no error allowed; only 0.9 (c > 0.8).
        assert_eq!(conformal_risk_control(&c, &l, 0.2).unwrap().threshold, 0.8);
        // α < 1/(n+1): nothing can be answered.
        assert_eq!(
            conformal_risk_control(&c, &l, 0.1).unwrap(),
            Selector::ABSTAIN
        );
        let o = Selector {
            threshold: 0.5,
            inclusive: false,
        }
        .evaluate(&c, &l)
        .unwrap();
        assert_eq!(
            (o.answered, o.coverage, o.selective_risk),
            (3, 0.6, Some(1.0 / 3.0))
        );
        assert!((o.joint_risk - 0.2).abs() < 1e-12);
    }

    #[test]
    fn clopper_pearson_known_values() {
        // No errors in n trials: the bound solves (1 − b)^n = level.
        let b = clopper_pearson_upper(0, 100, 0.05);
        assert!((b - (1.0 - 0.05f64.powf(0.01))).abs() < 1e-9, "{b}");
        assert_eq!(clopper_pearson_upper(5, 5, 0.05), 1.0);
        // P(Bin(50, b) ≤ 10) = 0.025 at the bound (checked by summing the pmf).
        let b = clopper_pearson_upper(10, 50, 0.025);
        let mut cdf = 0.0;
        let mut pmf = (1.0 - b).powi(50);
        for k in 0..=10 {
            cdf += pmf;
            pmf *= (50 - k) as f64 / (k + 1) as f64 * b / (1.0 - b);
        }
        assert!((cdf - 0.025).abs() < 1e-9, "{cdf}");
    }

    #[test]
    fn guaranteed_risk_abstains_when_nothing_certifies() {
        let c: Vec<f64> = (0..50).map(|i| i as f64).collect();
        let wrong = vec![true; 50];
        let s = selection_with_guaranteed_risk(&c, &wrong, 0.1, 0.1).unwrap();
        assert_eq!(s, Selector::ABSTAIN);
    }

    #[test]
    fn bad_levels_are_named() {
        let e = conformal_risk_control(&[0.5], &[0.0], 1.5).unwrap_err();
        assert!(e.to_string().contains("alpha"), "{e}");
        let e = selection_with_guaranteed_risk(&[0.5], &[false], 0.1, 0.0).unwrap_err();
        assert!(e.to_string().contains("delta"), "{e}");
        let e = conformal_risk_control(&[0.5, f64::NAN], &[0.0, 0.0], 0.1).unwrap_err();
        assert!(e.to_string().contains("index 1"), "{e}");
    }
}
