//! The floating-point types the scalar definitions are written for.
//!
//! Every distance is defined once, per pair, in [`crate::distance`], generic over [`Real`].
//! `f64` gives the reference values the property tests use; `f32` is what the blocked
//! retrieval kernels run. The only difference between the two is the logarithm: `f32` uses
//! [`ln_f32`], a branch-free polynomial that the compiler can vectorise (the libm call
//! cannot be), accurate to a few ulps over the normal range.

use num_traits::Float;

/// A float type the distance definitions are instantiated for (`f32` or `f64`).
pub trait Real: Float + Send + Sync + std::fmt::Debug + std::iter::Sum + 'static {
    /// Natural logarithm of a positive, normal, finite number; the `f32` version vectorises.
    fn ln_pos(self) -> Self;
    /// Lossless conversion from a literal.
    fn lit(x: f64) -> Self;
}

impl Real for f64 {
    #[inline(always)]
    fn ln_pos(self) -> Self {
        self.ln()
    }
    #[inline(always)]
    fn lit(x: f64) -> Self {
        x
    }
}

impl Real for f32 {
    #[inline(always)]
    fn ln_pos(self) -> Self {
        ln_f32(self)
    }
    #[inline(always)]
    fn lit(x: f64) -> Self {
        x as f32
    }
}

/// Branch-free natural logarithm for positive, normal, finite `f32`.
///
/// Splits `x = m·2^e` with `m ∈ [√½, √2)` and evaluates the Cephes `logf` minimax
/// polynomial for `ln(1 + f)`, `f = m − 1`; `ln 2` is split in two parts so that
/// `e·ln 2` adds no rounding error. Relative error stays below 3 ulps for normal inputs.
/// Zero, negative, subnormal, infinite and NaN inputs give meaningless results: callers
/// pass sums of variances, which are positive and normal by construction.
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let bits = x.to_bits();
    // frexp: x = m·2^e with m in [0.5, 1).
    let mut e = ((bits >> 23) & 0xff) as i32 - 126;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    let small = m < SQRT_HALF;
    e -= small as i32;
    let f = if small { m + m - 1.0 } else { m - 1.0 };
    let e = e as f32;
    let z = f * f;
    let mut y = 7.037_683_6e-2_f32;
    y = y * f - 1.151_461e-1;
    y = y * f + 1.167_699_9e-1;
    y = y * f - 1.242_014_1e-1;
    y = y * f + 1.424_932_3e-1;
    y = y * f - 1.666_805_8e-1;
    y = y * f + 2.000_071_5e-1;
    y = y * f - 2.499_999_4e-1;
    y = y * f + 3.333_333e-1;
    y = y * f * z;
    y += -2.121_944_4e-4 * e;
    y += -0.5 * z;
    f + y + 0.693_359_4 * e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_f32_matches_std_over_the_normal_range() {
        let mut worst = 0.0f64;
        let mut x = f32::MIN_POSITIVE;
        while x < 1e38 {
            for k in 0..64 {
                let y = x * (1.0 + k as f32 / 64.0);
                let exact = (y as f64).ln();
                let got = ln_f32(y) as f64;
                let err = (got - exact).abs() / exact.abs().max(1e-30);
                // Near 1 the relative error of ln is ill-conditioned; measure absolute there.
                let err = if exact.abs() < 1.0 {
                    (got - exact).abs()
                } else {
                    err
                };
                worst = worst.max(err);
            }
            x *= 1.37;
        }
        assert!(worst < 4.0 * f32::EPSILON as f64, "worst error {worst}");
    }

    #[test]
    fn ln_f32_exact_points() {
        assert_eq!(ln_f32(1.0), 0.0);
        assert!((ln_f32(std::f32::consts::E) - 1.0).abs() < 2e-7);
        assert!((ln_f32(1e-6) - (1e-6f64).ln() as f32).abs() < 4e-6);
    }
}
