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

/// The match probability `σ(−a·d + b)` fitted by maximum likelihood to distances `d` and
/// outcomes (is this pair a match?), as the one [`MatchProbability`] every report, answer
/// and index uses. The scale obeys the same floor as every match probability
/// ([`medprob_core::MIN_SCALE`]): when the free fit's slope falls below it (distance does
/// not predict a match), the slope is held at the floor and only `b` is fitted, so the
/// probability still falls with distance and is the maximum-likelihood one among those
/// that do.
///
/// ```
/// use medprob_metrics::posthoc::fit_match_probability;
/// // Matches at small distances, non-matches at large ones.
/// let d = [0.1, 0.2, 0.3, 1.0, 1.1, 1.2, 0.25, 1.05];
/// let y = [true, true, true, false, false, false, false, true];
/// let m = fit_match_probability(&d, &y)?;
/// assert!(m.a > 1.0 && m.probability(0.1) > m.probability(1.2));
/// # Ok::<(), medprob_metrics::MetricsError>(())
/// ```
///
/// [`MatchProbability`]: medprob_core::MatchProbability
pub fn fit_match_probability(
    distances: &[f64],
    outcomes: &[bool],
) -> Result<medprob_core::MatchProbability> {
    let scores: Vec<f64> = distances.iter().map(|&d| -d).collect();
    let free = fit(&scores, outcomes, true)?;
    let (a, b) = if free.scale >= medprob_core::MIN_SCALE {
        (free.scale, free.shift)
    } else {
        let a = medprob_core::MIN_SCALE;
        (a, fit_shift(&scores, outcomes, a))
    };
    Ok(medprob_core::MatchProbability::new(a, b)?)
}

/// [`fit_match_probability`] with the two Gaussians' uncertainties as inputs: the
/// maximum-likelihood `σ(−a·d + q·u_query + h·u_hit + b)`, `u` being mean log-variances
/// ([`medprob_core::GaussianEmbeddings::mean_log_variances`]). An uncertainty that does not
/// vary over the pairs (a deterministic embedding's, or one with a constant head) gets no
/// weight; when neither varies this is [`fit_match_probability`] exactly. The distance's
/// slope obeys the same floor: when the free fit's is below it, it is held there and the
/// other weights are fitted.
///
/// ```
/// use medprob_metrics::posthoc::fit_match_probability_with_uncertainty;
/// // Whether a pair matches depends on the hit's uncertainty, not on distance.
/// let d = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0];
/// let u_query = [0.0; 8];
/// let u_hit = [1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0];
/// let y = [true, true, false, false, true, false, false, true];
/// let m = fit_match_probability_with_uncertainty(&d, &u_query, &u_hit, &y)?;
/// assert_eq!(m.query, 0.0);
/// assert!(m.hit > 0.5);
/// assert!(m.probability_of(1.5, 0.0, 1.0) > 0.6 && m.probability_of(1.5, 0.0, -1.0) < 0.4);
/// # Ok::<(), medprob_metrics::MetricsError>(())
/// ```
pub fn fit_match_probability_with_uncertainty(
    distances: &[f64],
    u_query: &[f64],
    u_hit: &[f64],
    outcomes: &[bool],
) -> Result<medprob_core::MatchProbability> {
    crate::check::len(
        "fit_match_probability_with_uncertainty: u_query",
        distances.len(),
        u_query.len(),
    )?;
    crate::check::len(
        "fit_match_probability_with_uncertainty: u_hit",
        distances.len(),
        u_hit.len(),
    )?;
    crate::check::finite("fit_match_probability_with_uncertainty: u_query", u_query)?;
    crate::check::finite("fit_match_probability_with_uncertainty: u_hit", u_hit)?;
    let varies = |v: &[f64]| v.iter().any(|&x| x != v[0]);
    let (use_q, use_h) = (varies(u_query), varies(u_hit));
    if !use_q && !use_h {
        return fit_match_probability(distances, outcomes);
    }
    let neg_d: Vec<f64> = distances.iter().map(|&d| -d).collect();
    let mut columns: Vec<&[f64]> = vec![&neg_d];
    if use_q {
        columns.push(u_query);
    }
    if use_h {
        columns.push(u_hit);
    }
    let mut w = logistic(&columns, None, outcomes);
    let a = if w[0] >= medprob_core::MIN_SCALE {
        w[0]
    } else {
        let a = medprob_core::MIN_SCALE;
        let offset: Vec<f64> = neg_d.iter().map(|&s| a * s).collect();
        let rest = logistic(&columns[1..], Some(&offset), outcomes);
        w = std::iter::once(a).chain(rest).collect();
        a
    };
    // w = [a, q if used, h if used, b].
    let b = w[w.len() - 1];
    let mut fitted = w[1..w.len() - 1].iter().copied();
    let mut weight = |used: bool| {
        if used {
            fitted.next().expect("a weight")
        } else {
            0.0
        }
    };
    let (q, h) = (weight(use_q), weight(use_h));
    Ok(medprob_core::MatchProbability::new(a, b)?.with_uncertainty(q, h)?)
}

/// Ridge on the standardised weights of [`logistic`] (per pair): enough to keep a
/// separable or collinear fit finite, far too little to move a fit on thousands of pairs.
const LOGISTIC_RIDGE: f64 = 1e-6;

/// Maximum-likelihood logistic regression `σ(Σ_j w_j·x_j + offset + b)` by Newton's
/// method on standardised columns; returns the weights in the columns' own units, then `b`.
fn logistic(columns: &[&[f64]], offset: Option<&[f64]>, y: &[bool]) -> Vec<f64> {
    let n = y.len();
    let p = columns.len();
    let stats: Vec<(f64, f64)> = columns
        .iter()
        .map(|c| {
            let mean = c.iter().sum::<f64>() / n as f64;
            let var = c.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            (mean, var.sqrt().max(1e-12))
        })
        .collect();
    // Row i's standardised features, then 1 for the bias.
    let row = |i: usize| -> Vec<f64> {
        stats
            .iter()
            .zip(columns)
            .map(|(&(mean, sd), c)| (c[i] - mean) / sd)
            .chain(std::iter::once(1.0))
            .collect()
    };
    let ridge = LOGISTIC_RIDGE * n as f64;
    let mut w = vec![0.0; p + 1];
    let pos = y.iter().filter(|&&v| v).count() as f64;
    w[p] = ((pos + 0.5) / (n as f64 - pos + 0.5)).ln();
    for _ in 0..100 {
        let mut g = vec![0.0; p + 1];
        let mut h = vec![vec![0.0; p + 1]; p + 1];
        for (i, &yi) in y.iter().enumerate() {
            let x = row(i);
            let z =
                x.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + offset.map_or(0.0, |o| o[i]);
            let pi = medprob_core::sigmoid(z);
            let (r, v) = (pi - f64::from(u8::from(yi)), pi * (1.0 - pi));
            for (j, (gj, hj)) in g.iter_mut().zip(&mut h).enumerate() {
                *gj += r * x[j];
                for (hjk, xk) in hj.iter_mut().zip(&x) {
                    *hjk += v * x[j] * xk;
                }
            }
        }
        for j in 0..p {
            g[j] += ridge * w[j];
            h[j][j] += ridge;
        }
        for (j, hj) in h.iter_mut().enumerate() {
            hj[j] += 1e-12 * n as f64;
        }
        let step = solve(h, g);
        let size = step.iter().fold(0.0f64, |m, s| m.max(s.abs()));
        for (wj, sj) in w.iter_mut().zip(&step) {
            *wj -= sj;
        }
        if size < 1e-10 {
            break;
        }
    }
    // Back to the columns' units: w_j·(x − m)/s = (w_j/s)·x − w_j·m/s.
    let mut out = Vec::with_capacity(p + 1);
    let mut b = w[p];
    for j in 0..p {
        out.push(w[j] / stats[j].1);
        b -= w[j] * stats[j].0 / stats[j].1;
    }
    out.push(b);
    out
}

/// Solve the small symmetric positive-definite system `h·x = g` (Gaussian elimination with
/// partial pivoting).
fn solve(mut h: Vec<Vec<f64>>, mut g: Vec<f64>) -> Vec<f64> {
    let m = g.len();
    for c in 0..m {
        let pivot = (c..m)
            .max_by(|&a, &b| h[a][c].abs().total_cmp(&h[b][c].abs()))
            .expect("a row");
        h.swap(c, pivot);
        g.swap(c, pivot);
        let (top, rest) = h.split_at_mut(c + 1);
        let pivot_row = &top[c];
        for (r, hr) in rest.iter_mut().enumerate() {
            let f = hr[c] / pivot_row[c];
            for (a, b) in hr[c..].iter_mut().zip(&pivot_row[c..]) {
                *a -= f * b;
            }
            g[c + 1 + r] -= f * g[c];
        }
    }
    let mut x = vec![0.0; m];
    for c in (0..m).rev() {
        let s: f64 = (c + 1..m).map(|k| h[c][k] * x[k]).sum();
        x[c] = (g[c] - s) / h[c][c];
    }
    x
}

/// The maximum-likelihood shift `b` of `σ(a·s + b)` with `a` held fixed (Newton's method
/// on a convex function of one variable, started at the log-odds of the base rate).
fn fit_shift(s: &[f64], y: &[bool], a: f64) -> f64 {
    let n = s.len() as f64;
    let pos = y.iter().filter(|&&v| v).count() as f64;
    let base = ((pos + 0.5) / (n - pos + 0.5)).ln();
    let mean_s = s.iter().sum::<f64>() / n;
    let mut b = base - a * mean_s;
    for _ in 0..100 {
        let (mut g, mut h) = (0.0, 0.0);
        for (&s, &y) in s.iter().zip(y) {
            let p = medprob_core::sigmoid(a * s + b);
            g += p - f64::from(u8::from(y));
            h += p * (1.0 - p);
        }
        let step = g / (h + RIDGE * n);
        b -= step;
        if step.abs() < 1e-12 {
            break;
        }
    }
    b
}

fn fit(s: &[f64], y: &[bool], with_shift: bool) -> Result<Platt> {
    crate::check::len("Platt::fit: outcomes", s.len(), y.len())?;
    if s.is_empty() {
        return Err(MetricsError::Empty {
            what: "Platt::fit",
            detail: "no validation pairs",
        });
    }
    crate::check::finite("Platt::fit: score", s)?;
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
    fn match_probability_keeps_the_floor_and_fits_the_shift() {
        // Outcomes that do not depend on distance (a quarter are matches at every
        // distance): the free slope is ~0, below the floor; the floored fit still gets
        // the base rate right on average.
        let mut d = Vec::new();
        let mut y = Vec::new();
        for i in 0..400 {
            d.push((i % 10) as f64);
            y.push((i / 10) % 4 == 0);
        }
        let m = fit_match_probability(&d, &y).unwrap();
        assert_eq!(m.a, medprob_core::MIN_SCALE);
        let mean_p = d.iter().map(|&x| m.probability(x)).sum::<f64>() / d.len() as f64;
        assert!((mean_p - 0.25).abs() < 1e-6, "{mean_p}");
        // Outcomes that do depend on distance keep their free fit.
        let platt = Platt::fit(
            &d.iter().map(|x| -x).collect::<Vec<_>>(),
            &d.iter().map(|&x| x < 3.0).collect::<Vec<_>>(),
        )
        .unwrap();
        let m = fit_match_probability(&d, &d.iter().map(|&x| x < 3.0).collect::<Vec<_>>()).unwrap();
        assert_eq!((m.a, m.b), (platt.scale, platt.shift));
        assert!(fit_match_probability(&[], &[]).is_err());
    }

    /// Pairs drawn from a known `σ(−a·d + q·u_q + h·u_h + b)`: the fit recovers it.
    #[test]
    fn uncertainty_fit_recovers_known_weights() {
        let (a, q, h, b) = (1.5, -0.8, 2.0, 0.3);
        let (mut d, mut uq, mut uh, mut y) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // A fixed SplitMix64 stream, so the fit's input is exactly reproducible.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut uniform = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as f64 / u64::MAX as f64
        };
        for _ in 0..20_000 {
            let (di, qi, hi) = (
                uniform() * 3.0,
                uniform() * 2.0 - 1.0,
                uniform() * 2.0 - 1.0,
            );
            let p = medprob_core::sigmoid(-a * di + q * qi + h * hi + b);
            d.push(di);
            uq.push(qi);
            uh.push(hi);
            y.push(uniform() < p);
        }
        let m = fit_match_probability_with_uncertainty(&d, &uq, &uh, &y).unwrap();
        for (got, want, what) in [
            (m.a, a, "a"),
            (m.query, q, "q"),
            (m.hit, h, "h"),
            (m.b, b, "b"),
        ] {
            assert!((got - want).abs() < 0.15, "{what}: {got} vs {want}");
        }
        // Constant uncertainties: exactly the distance-only fit.
        let zeros = vec![0.0; d.len()];
        let plain = fit_match_probability(&d, &y).unwrap();
        assert_eq!(
            fit_match_probability_with_uncertainty(&d, &zeros, &zeros, &y).unwrap(),
            plain
        );
        // A distance that predicts the wrong way: the slope stays at the floor, the hit's
        // weight is still fitted.
        let far: Vec<f64> = d.iter().map(|x| 3.0 - x).collect();
        let m = fit_match_probability_with_uncertainty(&far, &zeros, &uh, &y).unwrap();
        assert_eq!(m.a, medprob_core::MIN_SCALE);
        assert!(m.hit > 1.0, "{m:?}");
        let e = fit_match_probability_with_uncertainty(&d, &zeros[..3], &uh, &y).unwrap_err();
        assert!(e.to_string().contains("u_query"), "{e}");
    }

    #[test]
    fn separable_outcomes_stay_finite() {
        let p = Platt::fit(&[-1.0, -0.5, 0.5, 1.0], &[false, false, true, true]).unwrap();
        assert!(p.scale.is_finite() && p.scale > 5.0, "{p:?}");
        assert!(p.probability(1.0) > 0.99);
        assert!(Platt::fit(&[f64::NAN], &[true]).is_err());
    }
}
