//! The closed-form sigmoid match probability `p = sigmoid(−a·d + b)` (SPEC §3).
//!
//! `a` (scale) and `b` (shift) are learned; `a` is clamped to at least [`MIN_SCALE`] so the
//! probability always decreases with distance. Under the softmax (InfoNCE) objective `b`
//! cancels and gets no gradient: the probability only means something once `(a, b)` are
//! fitted with a sigmoid loss or calibrated post hoc.

use ndarray::{Array2, ArrayView2};

use crate::error::{CoreError, Result};

/// Lower clamp on the scale `a`.
pub const MIN_SCALE: f64 = 1e-3;

/// The parameters `(a, b)` of `p(match | d) = sigmoid(−max(a, 1e-3)·d + b)`.
///
/// ```
/// use medprob_core::MatchProbability;
/// let p = MatchProbability::PCMEPP_INIT; // a = 5, b = 5
/// assert!((p.probability(1.0) - 0.5).abs() < 1e-12);
/// assert!(p.probability(0.5) > p.probability(2.0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MatchProbability {
    /// Scale `a` (negative values act as [`MIN_SCALE`]).
    pub a: f64,
    /// Shift `b`.
    pub b: f64,
}

impl MatchProbability {
    /// MedProbCLIP's initial values, `a = 1, b = 0`.
    pub const MEDPROBCLIP_INIT: Self = Self { a: 1.0, b: 0.0 };
    /// PCME++'s initial values, `a = 5, b = 5`.
    pub const PCMEPP_INIT: Self = Self { a: 5.0, b: 5.0 };

    /// Finite `a` and `b`.
    pub fn new(a: f64, b: f64) -> Result<Self> {
        for (name, value) in [("a", a), ("b", b)] {
            if !value.is_finite() {
                return Err(CoreError::InvalidParameter {
                    name,
                    value,
                    reason: "match-probability parameters must be finite",
                });
            }
        }
        Ok(Self { a, b })
    }

    /// The scale actually used, `max(a, 1e-3)`.
    pub fn scale(&self) -> f64 {
        self.a.max(MIN_SCALE)
    }

    /// `−max(a, 1e-3)·d + b`.
    pub fn logit(&self, d: f64) -> f64 {
        -self.scale() * d + self.b
    }

    /// `sigmoid(logit(d))`.
    pub fn probability(&self, d: f64) -> f64 {
        sigmoid(self.logit(d))
    }

    /// Probabilities for a matrix of distances.
    pub fn probabilities(&self, d: ArrayView2<'_, f32>) -> Array2<f32> {
        d.mapv(|x| self.probability(x as f64) as f32)
    }
}

/// Logistic function without overflow for large |x|.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_clamped() {
        let p = MatchProbability::new(-3.0, 0.0).unwrap();
        assert_eq!(p.scale(), MIN_SCALE);
        assert_eq!(p.logit(2.0), -2e-3);
    }

    #[test]
    fn sigmoid_is_stable_at_extremes() {
        assert_eq!(sigmoid(-800.0), 0.0);
        assert_eq!(sigmoid(800.0), 1.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-15);
        assert!((sigmoid(-30.0) - (-30f64).exp() / (1.0 + (-30f64).exp())).abs() < 1e-25);
    }

    #[test]
    fn rejects_non_finite() {
        assert!(MatchProbability::new(f64::NAN, 0.0).is_err());
        let e = MatchProbability::new(1.0, f64::INFINITY).unwrap_err();
        assert!(e.to_string().contains("invalid b"), "{e}");
    }
}
