//! The closed-form sigmoid match probability `p = sigmoid(−a·d + b)` (SPEC §3).
//!
//! `a` (scale) and `b` (shift) are learned; `a` is clamped to at least [`MIN_SCALE`] so the
//! probability always decreases with distance. Under the softmax (InfoNCE) objective `b`
//! cancels and gets no gradient: the probability only means something once `(a, b)` are
//! fitted with a sigmoid loss or calibrated post hoc.
//!
//! A probability fitted post hoc may also read the two Gaussians' uncertainties:
//! `sigmoid(−a·d + q·u_query + h·u_hit + b)`, with `u` an embedding's mean log-variance
//! ([`crate::Uncertainty::mean_log_variance`]). A broad embedding is one that fits many
//! inputs, so it says how many plausible matches a query or a hit has, which distance alone
//! does not. Training's `(a, b)` have `q = h = 0`.

use ndarray::{Array2, ArrayView2};

use crate::error::{CoreError, Result};

/// Lower clamp on the scale `a`.
pub const MIN_SCALE: f64 = 1e-3;

/// The parameters of `p(match | d, u_query, u_hit) = sigmoid(−max(a, 1e-3)·d + q·u_query +
/// h·u_hit + b)`; `q` and `h` are 0 unless set by [`MatchProbability::with_uncertainty`].
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
    /// Weight `q` of the query's mean log-variance (0: not read).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub query: f64,
    /// Weight `h` of the hit's mean log-variance (0: not read).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hit: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl MatchProbability {
    /// MedProbCLIP's initial values, `a = 1, b = 0`.
    pub const MEDPROBCLIP_INIT: Self = Self {
        a: 1.0,
        b: 0.0,
        query: 0.0,
        hit: 0.0,
    };
    /// PCME++'s initial values, `a = 5, b = 5`.
    pub const PCMEPP_INIT: Self = Self {
        a: 5.0,
        b: 5.0,
        query: 0.0,
        hit: 0.0,
    };

    /// Finite `a` and `b`; the probability reads no uncertainty.
    pub fn new(a: f64, b: f64) -> Result<Self> {
        check("a", a)?;
        check("b", b)?;
        Ok(Self {
            a,
            b,
            query: 0.0,
            hit: 0.0,
        })
    }

    /// The same probability with weights `query` and `hit` on the query's and the hit's
    /// mean log-variance (finite).
    ///
    /// ```
    /// use medprob_core::MatchProbability;
    /// let p = MatchProbability::new(1.0, 0.0)?.with_uncertainty(0.0, 2.0)?;
    /// // At one distance, a broader hit (more plausible matches) is likelier.
    /// assert!(p.probability_of(1.0, 0.0, 0.5) > p.probability_of(1.0, 0.0, -0.5));
    /// assert_eq!(p.probability_of(1.0, 3.0, 0.0), p.probability(1.0));
    /// # Ok::<(), medprob_core::CoreError>(())
    /// ```
    pub fn with_uncertainty(self, query: f64, hit: f64) -> Result<Self> {
        check("query", query)?;
        check("hit", hit)?;
        Ok(Self { query, hit, ..self })
    }

    /// Whether the probability reads either uncertainty.
    pub fn reads_uncertainty(&self) -> bool {
        self.query != 0.0 || self.hit != 0.0
    }

    /// The scale actually used, `max(a, 1e-3)`.
    pub fn scale(&self) -> f64 {
        self.a.max(MIN_SCALE)
    }

    /// `−max(a, 1e-3)·d + b`: the logit of a pair whose uncertainties are not read (or
    /// are 0). A probability that reads them needs [`MatchProbability::logit_of`].
    pub fn logit(&self, d: f64) -> f64 {
        -self.scale() * d + self.b
    }

    /// `sigmoid(logit(d))` (see [`MatchProbability::logit`]).
    pub fn probability(&self, d: f64) -> f64 {
        sigmoid(self.logit(d))
    }

    /// `−max(a, 1e-3)·d + q·u_query + h·u_hit + b`, with `u` the mean log-variances.
    pub fn logit_of(&self, d: f64, u_query: f64, u_hit: f64) -> f64 {
        self.logit(d) + self.query * u_query + self.hit * u_hit
    }

    /// `sigmoid(logit_of(d, u_query, u_hit))`.
    pub fn probability_of(&self, d: f64, u_query: f64, u_hit: f64) -> f64 {
        sigmoid(self.logit_of(d, u_query, u_hit))
    }

    /// Probabilities for a matrix of distances, `[queries, gallery]`, given each query's
    /// and each gallery item's mean log-variance (ignored when the probability reads no
    /// uncertainty; otherwise their lengths must match the matrix).
    pub fn probabilities(
        &self,
        d: ArrayView2<'_, f32>,
        u_query: &[f64],
        u_gallery: &[f64],
    ) -> Result<Array2<f32>> {
        if !self.reads_uncertainty() {
            return Ok(d.mapv(|x| self.probability(x as f64) as f32));
        }
        if u_query.len() != d.nrows() || u_gallery.len() != d.ncols() {
            return Err(CoreError::Shape {
                what: "MatchProbability::probabilities",
                detail: format!(
                    "{} × {} distances need as many query and gallery uncertainties, got {} and {}",
                    d.nrows(),
                    d.ncols(),
                    u_query.len(),
                    u_gallery.len()
                ),
            });
        }
        Ok(Array2::from_shape_fn(d.dim(), |(i, j)| {
            self.probability_of(d[[i, j]] as f64, u_query[i], u_gallery[j]) as f32
        }))
    }
}

fn check(name: &'static str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(CoreError::InvalidParameter {
            name,
            value,
            reason: "match-probability parameters must be finite",
        })
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
    fn uncertainty_terms_add_to_the_logit() {
        let p = MatchProbability::new(2.0, 0.5)
            .unwrap()
            .with_uncertainty(-1.0, 3.0)
            .unwrap();
        // −2·0.25 + (−1)·0.4 + 3·(−0.1) + 0.5 = −0.7
        assert!((p.logit_of(0.25, 0.4, -0.1) + 0.7).abs() < 1e-12);
        assert!(p.reads_uncertainty() && !MatchProbability::PCMEPP_INIT.reads_uncertainty());
        let d = ndarray::array![[0.25f32, 1.0]];
        let m = p.probabilities(d.view(), &[0.4], &[-0.1, 0.0]).unwrap();
        assert!((m[[0, 0]] as f64 - sigmoid(-0.7)).abs() < 1e-6);
        assert!((m[[0, 1]] as f64 - sigmoid(-2.0 - 0.4 + 0.5)).abs() < 1e-6);
        let e = p.probabilities(d.view(), &[0.4], &[0.0]).unwrap_err();
        assert!(e.to_string().contains("1 × 2 distances"), "{e}");
        assert!(p.with_uncertainty(f64::NAN, 0.0).is_err());
    }

    #[test]
    fn serialises_without_unused_weights() {
        let p = MatchProbability::new(0.5, -1.0).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"a":0.5,"b":-1.0}"#);
        let back: MatchProbability = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        let q = p.with_uncertainty(0.0, 1.5).unwrap();
        let json = serde_json::to_string(&q).unwrap();
        assert_eq!(json, r#"{"a":0.5,"b":-1.0,"hit":1.5}"#);
        assert_eq!(serde_json::from_str::<MatchProbability>(&json).unwrap(), q);
    }

    #[test]
    fn rejects_non_finite() {
        assert!(MatchProbability::new(f64::NAN, 0.0).is_err());
        let e = MatchProbability::new(1.0, f64::INFINITY).unwrap_err();
        assert!(e.to_string().contains("invalid b"), "{e}");
    }
}
