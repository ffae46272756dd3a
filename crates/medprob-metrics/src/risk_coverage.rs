//! Risk–coverage curves, AURC and E-AURC (Geifman, Uziel & El-Yaniv 2019; SPEC §7), and
//! AUGRC (Traub et al., "Overcoming common flaws in the evaluation of selective
//! classification systems", NeurIPS 2024).
//!
//! Queries are answered in order of decreasing confidence; the selective risk at coverage
//! `i/N` is the mean loss of the `i` most confident queries. AURC is the mean of that risk
//! over the `N` coverage levels, and E-AURC subtracts the AURC of an oracle that answers the
//! correct queries first. Queries with equal confidence cannot be ordered by the
//! confidence function, so each of them carries the mean loss of its tie group — the
//! expected curve over a random order within ties — and a constant confidence gives a flat
//! curve rather than one that depends on input order.

use crate::error::Result;

/// The coverages of a selective-retrieval table: 100 %, 90 %, …, 10 %.
pub const TABLE_COVERAGES: [f64; 10] = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1];

/// A risk–coverage curve: the cumulative selective risk at every coverage `i/N`.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskCoverage {
    /// `risk[i]` = mean loss of the `i + 1` most confident queries.
    risk: Vec<f64>,
    /// The same for the oracle ordering (lowest loss first).
    oracle: Vec<f64>,
    /// `generalized[i]` = summed loss of the `i + 1` most confident queries over `N`: the
    /// joint probability of "answered and wrong" at coverage `(i + 1)/N`.
    generalized: Vec<f64>,
}

impl RiskCoverage {
    /// The curve for per-query `confidence` (higher = more confident) and `loss` in `[0, 1]`
    /// (e.g. `1{best positive not within the first K}`).
    ///
    /// ```
    /// use medprob_metrics::risk_coverage::RiskCoverage;
    /// // The two confident queries are right, the unsure one is wrong.
    /// let rc = RiskCoverage::new(&[0.9, 0.8, 0.1], &[0.0, 0.0, 1.0])?;
    /// assert!((rc.aurc() - (0.0 + 0.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
    /// assert!(rc.eaurc().abs() < 1e-12); // already the oracle's order
    /// # Ok::<(), medprob_metrics::MetricsError>(())
    /// ```
    pub fn new(confidence: &[f64], loss: &[f64]) -> Result<Self> {
        crate::check::confidence_and_loss("RiskCoverage", confidence, loss)?;
        let (order, groups) = crate::check::tie_groups(confidence, true);
        let mut ordered = Vec::with_capacity(order.len());
        for g in groups {
            let mean = order[g.clone()].iter().map(|&i| loss[i]).sum::<f64>() / g.len() as f64;
            ordered.extend(std::iter::repeat_n(mean, g.len()));
        }
        let mut best = loss.to_vec();
        best.sort_by(f64::total_cmp);
        let n = ordered.len() as f64;
        let mut sum = 0.0;
        let generalized = ordered
            .iter()
            .map(|&l| {
                sum += l;
                sum / n
            })
            .collect();
        Ok(Self {
            risk: cumulative_mean(&ordered),
            oracle: cumulative_mean(&best),
            generalized,
        })
    }

    /// Area under the risk–coverage curve: the mean risk over the `N` coverage levels.
    pub fn aurc(&self) -> f64 {
        mean(&self.risk)
    }

    /// AURC minus the oracle's AURC (0 = the confidence orders queries perfectly).
    pub fn eaurc(&self) -> f64 {
        self.aurc() - mean(&self.oracle)
    }

    /// Area under the generalized risk–coverage curve: the mean, over the `N` coverage
    /// levels, of `P(answered and wrong)`. Unlike AURC it does not weigh the few most
    /// confident answers as heavily as all the others, and it is 0 only when nothing
    /// answered is wrong (Traub et al. 2024, §3).
    pub fn augrc(&self) -> f64 {
        mean(&self.generalized)
    }

    /// The selective risk when answering the `⌈c·N⌉` most confident queries (at least one).
    pub fn risk_at(&self, coverage: f64) -> f64 {
        let n = self.risk.len();
        let count = ((coverage * n as f64 - 1e-9).ceil() as usize).clamp(1, n);
        self.risk[count - 1]
    }

    /// `(coverage, risk)` at `points` evenly spaced coverages from `1/N` to 1, for plots.
    pub fn curve(&self, points: usize) -> Vec<(f64, f64)> {
        let n = self.risk.len();
        let points = points.clamp(2, n.max(2));
        (0..points)
            .map(|p| {
                let count = (1 + p * (n - 1) / (points - 1)).min(n);
                (count as f64 / n as f64, self.risk[count - 1])
            })
            .collect()
    }

    /// `(coverage, selective risk)` at each of [`TABLE_COVERAGES`].
    pub fn table(&self) -> Vec<(f64, f64)> {
        TABLE_COVERAGES
            .iter()
            .map(|&c| (c, self.risk_at(c)))
            .collect()
    }
}

fn cumulative_mean(x: &[f64]) -> Vec<f64> {
    let mut sum = 0.0;
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            sum += v;
            sum / (i + 1) as f64
        })
        .collect()
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_curve() {
        // Order by confidence: losses 0, 1, 0, 1 → risks 0, 1/2, 1/3, 1/2.
        let rc = RiskCoverage::new(&[0.9, 0.7, 0.8, 0.2], &[0.0, 0.0, 1.0, 1.0]).unwrap();
        let aurc = (0.0 + 0.5 + 1.0 / 3.0 + 0.5) / 4.0;
        assert!((rc.aurc() - aurc).abs() < 1e-12);
        // Oracle: 0, 0, 1, 1 → 0, 0, 1/3, 1/2.
        let oracle = (0.0 + 0.0 + 1.0 / 3.0 + 0.5) / 4.0;
        assert!((rc.eaurc() - (aurc - oracle)).abs() < 1e-12);
        // Generalized risk: cumulative losses 0, 1, 1, 2 over N = 4.
        assert!((rc.augrc() - (0.0 + 0.25 + 0.25 + 0.5) / 4.0).abs() < 1e-12);
        assert_eq!(rc.risk_at(0.5), 0.5);
        assert_eq!(rc.risk_at(1.0), 0.5);
        assert_eq!(rc.risk_at(0.1), 0.0); // at least one query
        assert_eq!(rc.table().len(), 10);
        assert_eq!(
            rc.curve(4),
            vec![(0.25, 0.0), (0.5, 0.5), (0.75, 1.0 / 3.0), (1.0, 0.5)]
        );
    }

    #[test]
    fn ties_carry_their_group_mean() {
        // A constant confidence cannot rank: the curve is flat at the overall risk.
        let rc = RiskCoverage::new(&[0.5; 4], &[1.0, 0.0, 0.0, 0.0]).unwrap();
        assert!((rc.aurc() - 0.25).abs() < 1e-12);
        // Each query carries loss 1/4: generalized risk i/16 at coverage i/4.
        assert!((rc.augrc() - (1.0 + 2.0 + 3.0 + 4.0) / 16.0 / 4.0).abs() < 1e-12);
        // Input order does not matter.
        let rc2 = RiskCoverage::new(&[0.5; 4], &[0.0, 0.0, 0.0, 1.0]).unwrap();
        assert_eq!(rc, rc2);
    }

    #[test]
    fn bad_inputs_are_named() {
        let e = RiskCoverage::new(&[0.1, f64::NAN], &[0.0, 1.0]).unwrap_err();
        assert!(e.to_string().contains("index 1"), "{e}");
        let e = RiskCoverage::new(&[0.1], &[2.0]).unwrap_err();
        assert!(e.to_string().contains("[0, 1]"), "{e}");
        assert!(RiskCoverage::new(&[], &[]).is_err());
    }
}
