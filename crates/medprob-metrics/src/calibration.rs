//! Calibration of "the top-1 result is correct" against its predicted probability (SPEC §7):
//! expected calibration error with equal-width and equal-mass bins (Guo et al. 2017;
//! Nixon et al. 2019), Brier score, negative log-likelihood and reliability-diagram data.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};

/// The number of bins MedProbCLIP's evaluation uses.
pub const DEFAULT_BINS: usize = 15;

/// How confidences are grouped for ECE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binning {
    /// Bins `(b/B, (b+1)/B]` (a confidence of exactly 0 goes to the first bin).
    EqualWidth,
    /// Confidences sorted and cut into `B` groups of (nearly) equal size, the first
    /// `N mod B` groups one larger (NumPy's `array_split`).
    EqualMass,
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge of the bin (the smallest confidence in it for equal-mass bins).
    pub lower: f64,
    /// Upper edge (the largest confidence in it for equal-mass bins).
    pub upper: f64,
    /// Mean predicted probability.
    pub confidence: f64,
    /// Share correct.
    pub accuracy: f64,
    /// Queries in the bin.
    pub count: usize,
}

/// ECE, Brier, NLL and the diagram, for one set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    /// ECE with [`DEFAULT_BINS`] equal-width bins.
    pub ece: f64,
    /// ECE with [`DEFAULT_BINS`] equal-mass bins.
    pub ece_equal_mass: f64,
    /// Mean squared error of the probability against the 0/1 outcome.
    pub brier: f64,
    /// Mean negative log-likelihood of the outcome (probabilities clipped to
    /// `[1e-12, 1 − 1e-12]`).
    pub nll: f64,
    /// Mean predicted probability.
    pub mean_confidence: f64,
    /// Share correct.
    pub accuracy: f64,
    /// Equal-width reliability diagram.
    pub diagram: Vec<ReliabilityBin>,
}

impl CalibrationReport {
    /// Every calibration figure for probabilities `p` of binary outcomes `correct`.
    pub fn new(p: &[f64], correct: &[bool]) -> Result<Self> {
        check(p, correct)?;
        let n = p.len() as f64;
        Ok(Self {
            ece: ece(p, correct, DEFAULT_BINS, Binning::EqualWidth)?,
            ece_equal_mass: ece(p, correct, DEFAULT_BINS, Binning::EqualMass)?,
            brier: brier(p, correct)?,
            nll: nll(p, correct)?,
            mean_confidence: p.iter().sum::<f64>() / n,
            accuracy: correct.iter().filter(|&&c| c).count() as f64 / n,
            diagram: reliability_bins(p, correct, DEFAULT_BINS, Binning::EqualWidth)?,
        })
    }
}

/// Reliability-diagram bins (empty bins are left out).
pub fn reliability_bins(
    p: &[f64],
    correct: &[bool],
    bins: usize,
    binning: Binning,
) -> Result<Vec<ReliabilityBin>> {
    check(p, correct)?;
    if bins == 0 {
        return Err(MetricsError::InvalidParameter {
            name: "bins",
            value: 0.0,
            reason: "needs at least one bin",
        });
    }
    let summarise = |idx: &[usize], lower: f64, upper: f64| ReliabilityBin {
        lower,
        upper,
        confidence: idx.iter().map(|&i| p[i]).sum::<f64>() / idx.len() as f64,
        accuracy: idx.iter().filter(|&&i| correct[i]).count() as f64 / idx.len() as f64,
        count: idx.len(),
    };
    Ok(match binning {
        Binning::EqualWidth => {
            let mut members: Vec<Vec<usize>> = vec![Vec::new(); bins];
            for (i, &pi) in p.iter().enumerate() {
                let b = ((pi * bins as f64).ceil() as isize - 1).clamp(0, bins as isize - 1);
                members[b as usize].push(i);
            }
            members
                .iter()
                .enumerate()
                .filter(|(_, m)| !m.is_empty())
                .map(|(b, m)| summarise(m, b as f64 / bins as f64, (b + 1) as f64 / bins as f64))
                .collect()
        }
        Binning::EqualMass => {
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|&a, &b| p[a].total_cmp(&p[b])); // stable, like argsort(kind="stable")
            equal_mass_chunks(p.len(), bins)
                .into_iter()
                .map(|r| {
                    let idx = &order[r];
                    summarise(idx, p[idx[0]], p[idx[idx.len() - 1]])
                })
                .collect()
        }
    })
}

/// Expected calibration error: `Σ_b (n_b / N)·|accuracy_b − confidence_b|`.
///
/// ```
/// use medprob_metrics::calibration::{ece, Binning};
/// // Two bins: {0.2, 0.2} with one correct (|0.5 − 0.2|), {0.9} correct (|1 − 0.9|).
/// let e = ece(&[0.2, 0.2, 0.9], &[true, false, true], 2, Binning::EqualWidth)?;
/// assert!((e - (2.0 / 3.0 * 0.3 + 1.0 / 3.0 * 0.1)).abs() < 1e-12);
/// # Ok::<(), medprob_metrics::MetricsError>(())
/// ```
pub fn ece(p: &[f64], correct: &[bool], bins: usize, binning: Binning) -> Result<f64> {
    let n = p.len() as f64;
    Ok(reliability_bins(p, correct, bins, binning)?
        .iter()
        .map(|b| b.count as f64 / n * (b.accuracy - b.confidence).abs())
        .sum())
}

/// Brier score `mean((p − y)²)`.
pub fn brier(p: &[f64], correct: &[bool]) -> Result<f64> {
    check(p, correct)?;
    Ok(p.iter()
        .zip(correct)
        .map(|(&p, &c)| (p - f64::from(u8::from(c))).powi(2))
        .sum::<f64>()
        / p.len() as f64)
}

/// Negative log-likelihood `−mean(y·ln p + (1 − y)·ln(1 − p))`, `p` clipped to
/// `[1e-12, 1 − 1e-12]` so a confidently wrong answer costs about 27.6 nats, not infinity.
pub fn nll(p: &[f64], correct: &[bool]) -> Result<f64> {
    check(p, correct)?;
    Ok(-p
        .iter()
        .zip(correct)
        .map(|(&p, &c)| {
            let p = p.clamp(1e-12, 1.0 - 1e-12);
            if c {
                p.ln()
            } else {
                (1.0 - p).ln()
            }
        })
        .sum::<f64>()
        / p.len() as f64)
}

/// `n` items cut into at most `bins` contiguous ranges of (nearly) equal size, the first
/// `n mod bins` one larger; empty ranges are left out.
pub(crate) fn equal_mass_chunks(n: usize, bins: usize) -> Vec<Range<usize>> {
    let (base, extra) = (n / bins, n % bins);
    let mut out = Vec::with_capacity(bins);
    let mut start = 0;
    for b in 0..bins {
        let len = base + usize::from(b < extra);
        if len > 0 {
            out.push(start..start + len);
        }
        start += len;
    }
    out
}

fn check(p: &[f64], correct: &[bool]) -> Result<()> {
    crate::check::len("calibration: outcomes", p.len(), correct.len())?;
    if p.is_empty() {
        return Err(MetricsError::Empty {
            what: "calibration",
            detail: "no predictions",
        });
    }
    if let Some((i, &v)) = p
        .iter()
        .enumerate()
        .find(|(_, v)| !(0.0..=1.0).contains(*v))
    {
        return Err(MetricsError::BadValue {
            what: "calibration: probability",
            index: i,
            value: v,
            reason: "probabilities must lie in [0, 1]",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_bins_and_scores() {
        let p = [0.0, 0.1, 0.5, 0.55, 1.0];
        let c = [false, false, true, false, true];
        // Equal width, B = 2: (0, .5] ∪ {0} holds 0, .1, .5; (.5, 1] holds .55, 1.
        let bins = reliability_bins(&p, &c, 2, Binning::EqualWidth).unwrap();
        assert_eq!(bins.len(), 2);
        assert_eq!(bins[0].count, 3);
        assert!((bins[0].confidence - 0.2).abs() < 1e-12);
        assert!((bins[0].accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!((bins[1].count, bins[1].accuracy), (2, 0.5));
        let want = 0.6 * (1.0f64 / 3.0 - 0.2).abs() + 0.4 * (0.5f64 - 0.775).abs();
        let got = ece(&p, &c, 2, Binning::EqualWidth).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        // Equal mass, B = 2: sizes 3 and 2, the same split here.
        let em = ece(&p, &c, 2, Binning::EqualMass).unwrap();
        assert!((em - want).abs() < 1e-12);
        // Brier and NLL.
        let b = brier(&p, &c).unwrap();
        assert!((b - (0.0 + 0.01 + 0.25 + 0.3025 + 0.0) / 5.0).abs() < 1e-12);
        let l = nll(&[0.5, 0.8], &[true, false]).unwrap();
        assert!((l - (-(0.5f64.ln()) - (0.2f64).ln()) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn perfectly_calibrated_has_zero_ece() {
        // In each bin the accuracy equals the mean confidence.
        let p = [0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75];
        let c = [true, false, false, false, true, true, true, false];
        assert!(ece(&p, &c, 15, Binning::EqualWidth).unwrap().abs() < 1e-12);
        assert!(ece(&p, &c, 2, Binning::EqualMass).unwrap().abs() < 1e-12);
    }

    #[test]
    fn fewer_items_than_bins() {
        assert_eq!(equal_mass_chunks(3, 5), vec![0..1, 1..2, 2..3]);
        assert_eq!(equal_mass_chunks(7, 3), vec![0..3, 3..5, 5..7]);
    }

    #[test]
    fn bad_probability_is_named() {
        let e = ece(&[0.5, 1.5], &[true, true], 15, Binning::EqualWidth).unwrap_err();
        assert!(e.to_string().contains("index 1"), "{e}");
        let e = brier(&[0.5], &[true, false]).unwrap_err();
        assert!(e.to_string().contains("length mismatch"), "{e}");
        assert!(nll(&[f64::NAN], &[true]).is_err());
    }
}
