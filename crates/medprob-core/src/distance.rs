//! Distances between diagonal Gaussian embeddings: one definition each.
//!
//! Each distance is written once here, per pair, as three small pieces: how an item's
//! per-dimension quantities are prepared from `(mu, v)`, the per-dimension term, and how the
//! summed terms become the distance. The naive per-pair function ([`pair_distance`]), the
//! blocked `f32` retrieval kernels ([`crate::kernels`]) and the property tests all go through
//! these pieces, so the definitions cannot drift apart. The differentiable candle path
//! ([`crate::tensor`]) states the same formulas with tensor operations and is checked against
//! this module by tests.
//!
//! With `s = exp(v)` the variance, `σ = exp(v/2)`, `Δ = mu1 − mu2` and sums over dimensions:
//!
//! | [`Distance`] | formula | source |
//! |---|---|---|
//! | `Csd` | `‖Δ‖² + Σ (s1 + s2)` = `E‖z1 − z2‖²` | PCME++ (Chun, ICLR 2024), eq. 2 |
//! | `Mls` | `½ Σ [Δ²/(s1+s2) + ln(s1+s2+ε)]`, `s = max(eᵛ, ε)`, `ε = 1e-6` | mutual likelihood score (Shi & Jain 2019); MedProbCLIP's code calls it `csd` |
//! | `Wasserstein2` | `‖Δ‖² + Σ (σ1 − σ2)²` (squared 2-Wasserstein) | PCME++ ablation |
//! | `Bhattacharyya` | `Σ [¼ Δ²/(s1+s2) + ½ ln((s1+s2)/2) − ¼ (v1+v2)]` | Bhattacharyya (1943), diagonal case |
//! | `Hellinger` | `1 − exp(−D_B)`, the *squared* Hellinger distance, in `[0, 1]` | from the Bhattacharyya coefficient |
//! | `SymmetricKl` | `KL(1‖2) + KL(2‖1) = ½ Σ [s1/s2 + s2/s1 − 2 + Δ² (1/s1 + 1/s2)]` (Jeffreys divergence) | |
//!
//! `Csd`, `Mls` and `Wasserstein2` are what the losses and retrieval use; the others serve
//! ProbMED-style models and comparisons. None of them clamps the log-variance.

use serde::{Deserialize, Serialize};

use crate::real::Real;

/// `ε` of the mutual likelihood score, as in the MedProbCLIP reference code.
pub const MLS_EPS: f64 = 1e-6;

/// Which distance between two Gaussian embeddings (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distance {
    /// Closed-form sampled distance (PCME++): `‖Δ‖² + Σ(s1 + s2)`.
    Csd,
    /// Mutual likelihood score (the distance MedProbCLIP trains with).
    Mls,
    /// Squared 2-Wasserstein distance.
    Wasserstein2,
    /// Bhattacharyya distance.
    Bhattacharyya,
    /// Squared Hellinger distance, `1 − exp(−D_B)`.
    Hellinger,
    /// Symmetric Kullback–Leibler divergence (sum of both directions).
    SymmetricKl,
}

impl Distance {
    /// Every distance, in table order.
    pub const ALL: [Distance; 6] = [
        Distance::Csd,
        Distance::Mls,
        Distance::Wasserstein2,
        Distance::Bhattacharyya,
        Distance::Hellinger,
        Distance::SymmetricKl,
    ];

    /// The snake-case name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Distance::Csd => "csd",
            Distance::Mls => "mls",
            Distance::Wasserstein2 => "wasserstein2",
            Distance::Bhattacharyya => "bhattacharyya",
            Distance::Hellinger => "hellinger",
            Distance::SymmetricKl => "symmetric_kl",
        }
    }
}

impl std::fmt::Display for Distance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Distance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Distance::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown distance {s:?}; expected one of csd, mls, wasserstein2, \
                     bhattacharyya, hellinger, symmetric_kl"
                )
            })
    }
}

/// The three pieces that define a distance (see the module docs).
pub(crate) trait Definition {
    /// Per-dimension quantities `(x, y)` of one item from its mean and log-variance. `x`
    /// is the mean itself for every distance (the kernels borrow the means as `x`).
    fn prep<R: Real>(mu: R, v: R) -> (R, R);
    /// Per-item scalar that enters [`Definition::finish`] (a sum over the item's dimensions).
    fn item_offset<R: Real>(_mu: &[R], _v: &[R]) -> R {
        R::zero()
    }
    /// Per-dimension term of a pair.
    fn term<R: Real>(x1: R, y1: R, x2: R, y2: R) -> R;
    /// `true` when `term = quad + ln(log_arg)`: the kernels then sum the logarithms as the
    /// logarithm of blocked products, one `ln` per several dimensions instead of one each.
    const LOG_SPLIT: bool = false;
    /// The rational part of a split term.
    #[inline(always)]
    fn quad<R: Real>(x1: R, y1: R, x2: R, y2: R) -> R {
        Self::term(x1, y1, x2, y2)
    }
    /// The argument of the logarithm of a split term.
    #[inline(always)]
    fn log_arg<R: Real>(_y1: R, _y2: R) -> R {
        R::one()
    }
    /// The distance from the summed terms and the two items' offsets.
    fn finish<R: Real>(sum: R, off1: R, off2: R, dim: usize) -> R;
}

pub(crate) struct CsdDef;
pub(crate) struct MlsDef;
pub(crate) struct W2Def;
pub(crate) struct BhattacharyyaDef;
pub(crate) struct HellingerDef;
pub(crate) struct SymKlDef;

impl Definition for CsdDef {
    #[inline(always)]
    fn prep<R: Real>(mu: R, v: R) -> (R, R) {
        (mu, v.exp())
    }
    #[inline(always)]
    fn term<R: Real>(x1: R, y1: R, x2: R, y2: R) -> R {
        let d = x1 - x2;
        d * d + y1 + y2
    }
    #[inline(always)]
    fn finish<R: Real>(sum: R, _: R, _: R, _: usize) -> R {
        sum
    }
}

impl Definition for MlsDef {
    #[inline(always)]
    fn prep<R: Real>(mu: R, v: R) -> (R, R) {
        (mu, v.exp().max(R::lit(MLS_EPS)))
    }
    #[inline(always)]
    fn term<R: Real>(x1: R, y1: R, x2: R, y2: R) -> R {
        Self::quad(x1, y1, x2, y2) + Self::log_arg(y1, y2).ln_pos()
    }
    const LOG_SPLIT: bool = true;
    #[inline(always)]
    fn quad<R: Real>(x1: R, y1: R, x2: R, y2: R) -> R {
        let d = x1 - x2;
        d * d / (y1 + y2)
    }
    #[inline(always)]
    fn log_arg<R: Real>(y1: R, y2: R) -> R {
        y1 + y2 + R::lit(MLS_EPS)
    }
    #[inline(always)]
    fn finish<R: Real>(sum: R, _: R, _: R, _: usize) -> R {
        R::lit(0.5) * sum
    }
}

impl Definition for W2Def {
    #[inline(always)]
    fn prep<R: Real>(mu: R, v: R) -> (R, R) {
        (mu, (R::lit(0.5) * v).exp())
    }
    #[inline(always)]
    fn term<R: Real>(x1: R, y1: R, x2: R, y2: R) -> R {
        let d = x1 - x2;
        let e = y1 - y2;
        d * d + e * e
    }
    #[inline(always)]
    fn finish<R: Real>(sum: R, _: R, _: R, _: usize) -> R {
        sum
    }
}

impl Definition for BhattacharyyaDef {
    #[inline(always)]
    fn prep<R: Real>(mu: R, v: R) -> (R, R) {
        (mu, v.exp())
    }
    /// `−¼ Σ v`: the `−¼(v1 + v2)` part of the term, summed once per item.
    fn item_offset<R: Real>(_mu: &[R], v: &[R]) -> R {
        R::lit(-0.25) * v.iter().copied().sum::<R>()
    }
    /// `½Δ²/t + ln t`; the outer `½`, the `−½ ln 2` per dimension and the log-variance
    /// offsets are applied in `finish`.
    #[inline(always)]
    fn term<R: Real>(x1: R, y1: R, x2: R, y2: R) -> R {
        Self::quad(x1, y1, x2, y2) + Self::log_arg(y1, y2).ln_pos()
    }
    const LOG_SPLIT: bool = true;
    #[inline(always)]
    fn quad<R: Real>(x1: R, y1: R, x2: R, y2: R) -> R {
        let d = x1 - x2;
        R::lit(0.5) * d * d / (y1 + y2)
    }
    #[inline(always)]
    fn log_arg<R: Real>(y1: R, y2: R) -> R {
        y1 + y2
    }
    #[inline(always)]
    fn finish<R: Real>(sum: R, off1: R, off2: R, dim: usize) -> R {
        R::lit(0.5) * sum - R::lit(0.5 * std::f64::consts::LN_2 * dim as f64) + off1 + off2
    }
}

impl Definition for HellingerDef {
    #[inline(always)]
    fn prep<R: Real>(mu: R, v: R) -> (R, R) {
        BhattacharyyaDef::prep(mu, v)
    }
    fn item_offset<R: Real>(mu: &[R], v: &[R]) -> R {
        BhattacharyyaDef::item_offset(mu, v)
    }
    #[inline(always)]
    fn term<R: Real>(x1: R, y1: R, x2: R, y2: R) -> R {
        BhattacharyyaDef::term(x1, y1, x2, y2)
    }
    const LOG_SPLIT: bool = true;
    #[inline(always)]
    fn quad<R: Real>(x1: R, y1: R, x2: R, y2: R) -> R {
        BhattacharyyaDef::quad(x1, y1, x2, y2)
    }
    #[inline(always)]
    fn log_arg<R: Real>(y1: R, y2: R) -> R {
        BhattacharyyaDef::log_arg(y1, y2)
    }
    #[inline(always)]
    fn finish<R: Real>(sum: R, off1: R, off2: R, dim: usize) -> R {
        let db = BhattacharyyaDef::finish(sum, off1, off2, dim);
        // 1 − e^{−D_B} without cancellation for small D_B; D_B ≥ 0 up to rounding.
        -(-db.max(R::zero())).exp_m1()
    }
}

impl Definition for SymKlDef {
    /// `(mu, v)` kept as is: the term needs `s1/s2 = exp(v1 − v2)`, which is exactly 1
    /// for identical items (a ratio of separately rounded exponentials would not be).
    #[inline(always)]
    fn prep<R: Real>(mu: R, v: R) -> (R, R) {
        (mu, v)
    }
    #[inline(always)]
    fn term<R: Real>(x1: R, y1: R, x2: R, y2: R) -> R {
        let d = x1 - x2;
        // s1/s2 + s2/s1 − 2 = (√r − 1/√r)², written so it never goes below zero.
        let h = (R::lit(0.5) * (y1 - y2)).exp();
        let g = h - R::one() / h;
        g * g + d * d * ((-y1).exp() + (-y2).exp())
    }
    #[inline(always)]
    fn finish<R: Real>(sum: R, _: R, _: R, _: usize) -> R {
        R::lit(0.5) * sum
    }
}

/// Calls `$body` with `$def` bound to the definition type of `$dist`.
macro_rules! with_definition {
    ($dist:expr, $def:ident => $body:expr) => {
        match $dist {
            $crate::distance::Distance::Csd => {
                type $def = $crate::distance::CsdDef;
                $body
            }
            $crate::distance::Distance::Mls => {
                type $def = $crate::distance::MlsDef;
                $body
            }
            $crate::distance::Distance::Wasserstein2 => {
                type $def = $crate::distance::W2Def;
                $body
            }
            $crate::distance::Distance::Bhattacharyya => {
                type $def = $crate::distance::BhattacharyyaDef;
                $body
            }
            $crate::distance::Distance::Hellinger => {
                type $def = $crate::distance::HellingerDef;
                $body
            }
            $crate::distance::Distance::SymmetricKl => {
                type $def = $crate::distance::SymKlDef;
                $body
            }
        }
    };
}
pub(crate) use with_definition;

/// The distance between two single Gaussian embeddings, straight from the definition.
///
/// This is the naive path: one pair at a time, no blocking, no GEMM. Use it for a handful
/// of pairs or as a reference; use [`crate::kernels`] for batches.
///
/// # Panics
/// If the four slices do not all have the same length.
///
/// ```
/// use medprob_core::{pair_distance, Distance};
/// // Two one-dimensional Gaussians with unit variance (v = 0), means 0 and 2.
/// let d = pair_distance(Distance::Csd, &[0.0f64], &[0.0], &[2.0], &[0.0]);
/// assert!((d - 6.0).abs() < 1e-12); // 2² + 1 + 1
/// ```
pub fn pair_distance<R: Real>(distance: Distance, mu1: &[R], v1: &[R], mu2: &[R], v2: &[R]) -> R {
    let dim = mu1.len();
    assert!(
        v1.len() == dim && mu2.len() == dim && v2.len() == dim,
        "pair_distance: all four slices must have the same length"
    );
    with_definition!(distance, D => pair_with::<D, R>(mu1, v1, mu2, v2))
}

#[inline]
fn pair_with<D: Definition, R: Real>(mu1: &[R], v1: &[R], mu2: &[R], v2: &[R]) -> R {
    let mut sum = R::zero();
    for k in 0..mu1.len() {
        let (x1, y1) = D::prep(mu1[k], v1[k]);
        let (x2, y2) = D::prep(mu2[k], v2[k]);
        sum = sum + D::term(x1, y1, x2, y2);
    }
    D::finish(
        sum,
        D::item_offset(mu1, v1),
        D::item_offset(mu2, v2),
        mu1.len(),
    )
}
