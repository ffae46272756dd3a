//! Recall@K, RSUM and rank statistics for image→text and text→image retrieval (SPEC §6).

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::ranking::QueryRank;

/// The cut-offs of MedProbCLIP's table: R@1, R@5, R@10, R@100.
pub const RECALL_KS: [usize; 4] = [1, 5, 10, 100];

/// Recall@K of one direction: the share of queries whose best positive is among the first
/// `k` results, in percent. Queries without any positive in the gallery are left out
/// (they are counted in [`DirectionReport::without_positive`]).
///
/// ```
/// use medprob_metrics::retrieval::recall_at_k;
/// assert_eq!(recall_at_k(&[Some(0), Some(3), Some(12), None], 5), Some(200.0 / 3.0));
/// ```
pub fn recall_at_k(ranks: &[Option<usize>], k: usize) -> Option<f64> {
    let with: Vec<usize> = ranks.iter().flatten().copied().collect();
    if with.is_empty() {
        return None;
    }
    let hits = with.iter().filter(|&&r| r < k).count();
    Some(100.0 * hits as f64 / with.len() as f64)
}

/// Retrieval in one direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionReport {
    /// `(K, Recall@K in percent)` for each K of [`RECALL_KS`].
    pub recall: Vec<(usize, f64)>,
    /// Mean rank of the best positive, 1-based (1 = first).
    pub mean_rank: f64,
    /// Median rank, 1-based (the mean of the two middle ranks for an even count).
    pub median_rank: f64,
    /// Queries scored.
    pub queries: usize,
    /// Queries whose study has no item in the gallery (left out of every figure).
    pub without_positive: usize,
}

impl DirectionReport {
    /// Summarise the ranks of one direction.
    pub fn from_ranks(ranks: &[QueryRank]) -> Result<Self> {
        let r: Vec<Option<usize>> = ranks.iter().map(|q| q.rank).collect();
        let mut with: Vec<usize> = r.iter().flatten().copied().collect();
        if with.is_empty() {
            return Err(MetricsError::Empty {
                what: "DirectionReport::from_ranks",
                detail: "no query has a positive in the gallery",
            });
        }
        with.sort_unstable();
        let n = with.len();
        let mean_rank = with.iter().map(|&x| x as f64 + 1.0).sum::<f64>() / n as f64;
        let median_rank = if n % 2 == 1 {
            with[n / 2] as f64 + 1.0
        } else {
            (with[n / 2 - 1] + with[n / 2]) as f64 / 2.0 + 1.0
        };
        Ok(Self {
            recall: RECALL_KS
                .iter()
                .map(|&k| (k, recall_at_k(&r, k).expect("non-empty")))
                .collect(),
            mean_rank,
            median_rank,
            queries: n,
            without_positive: r.len() - n,
        })
    }

    /// Recall@K for one of [`RECALL_KS`].
    pub fn recall_at(&self, k: usize) -> Option<f64> {
        self.recall.iter().find(|(kk, _)| *kk == k).map(|(_, v)| *v)
    }
}

/// Both directions and the two RSUMs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalReport {
    /// Image→text.
    pub image_to_text: DirectionReport,
    /// Text→image.
    pub text_to_image: DirectionReport,
    /// Sum of the eight recalls (K = 1, 5, 10, 100 both ways): MedProbCLIP's RSUM.
    pub rsum: f64,
    /// Sum of the six recalls with K = 1, 5, 10: PCME++'s RSUM.
    pub rsum6: f64,
}

impl RetrievalReport {
    /// Combine the two directions.
    pub fn new(image_to_text: DirectionReport, text_to_image: DirectionReport) -> Self {
        let sum = |ks: &[usize]| -> f64 {
            ks.iter()
                .map(|&k| {
                    image_to_text.recall_at(k).unwrap_or(0.0)
                        + text_to_image.recall_at(k).unwrap_or(0.0)
                })
                .sum()
        };
        let rsum = sum(&RECALL_KS);
        let rsum6 = sum(&RECALL_KS[..3]);
        Self {
            image_to_text,
            text_to_image,
            rsum,
            rsum6,
        }
    }
}

/// Recall@K within bins of a per-query score (e.g. uncertainty): queries are sorted by the
/// score and cut into `bins` groups of (nearly) equal size. Returns, per bin, the mean
/// score, Recall@K in percent and the number of queries. Queries without a positive are
/// left out.
pub fn recall_by_bins(
    score: &[f64],
    ranks: &[QueryRank],
    k: usize,
    bins: usize,
) -> Result<Vec<(f64, f64, usize)>> {
    crate::check::len("recall_by_bins: scores", ranks.len(), score.len())?;
    if bins == 0 {
        return Err(MetricsError::InvalidParameter {
            name: "bins",
            value: 0.0,
            reason: "needs at least one bin",
        });
    }
    let mut items: Vec<(f64, bool)> = score
        .iter()
        .zip(ranks)
        .filter(|(_, r)| r.rank.is_some())
        .map(|(&s, r)| (s, r.hit(k)))
        .collect();
    items.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(crate::calibration::equal_mass_chunks(items.len(), bins)
        .into_iter()
        .map(|range| {
            let chunk = &items[range];
            let n = chunk.len() as f64;
            let mean = chunk.iter().map(|x| x.0).sum::<f64>() / n;
            let recall = 100.0 * chunk.iter().filter(|x| x.1).count() as f64 / n;
            (mean, recall, chunk.len())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranks(r: &[Option<usize>]) -> Vec<QueryRank> {
        r.iter()
            .map(|&rank| QueryRank {
                rank,
                positive_distance: 0.0,
                top1: (0, 0.0),
                top2: (0, 0.0),
            })
            .collect()
    }

    #[test]
    fn hand_computed_direction() {
        // Ranks 0, 0, 4, 9, 150 and one query without a positive.
        let d = DirectionReport::from_ranks(&ranks(&[
            Some(0),
            Some(4),
            None,
            Some(0),
            Some(9),
            Some(150),
        ]))
        .unwrap();
        assert_eq!(d.queries, 5);
        assert_eq!(d.without_positive, 1);
        assert_eq!(
            d.recall,
            vec![(1, 40.0), (5, 60.0), (10, 80.0), (100, 80.0)]
        );
        assert_eq!(d.mean_rank, (1.0 + 1.0 + 5.0 + 10.0 + 151.0) / 5.0);
        assert_eq!(d.median_rank, 5.0);
    }

    #[test]
    fn rsum_adds_eight_and_six_values() {
        let a = DirectionReport::from_ranks(&ranks(&[Some(0), Some(7)])).unwrap(); // 50 50 100 100
        let b = DirectionReport::from_ranks(&ranks(&[Some(2), Some(200)])).unwrap(); // 0 50 50 50
        let r = RetrievalReport::new(a, b);
        assert_eq!(
            r.rsum,
            50.0 + 50.0 + 100.0 + 100.0 + 0.0 + 50.0 + 50.0 + 50.0
        );
        assert_eq!(r.rsum6, 50.0 + 50.0 + 100.0 + 0.0 + 50.0 + 50.0);
        let even = DirectionReport::from_ranks(&ranks(&[Some(1), Some(4)])).unwrap();
        assert_eq!(even.median_rank, 3.5);
    }

    #[test]
    fn no_positive_anywhere_is_an_error() {
        let e = DirectionReport::from_ranks(&ranks(&[None, None])).unwrap_err();
        assert!(e.to_string().contains("no query has a positive"), "{e}");
        assert_eq!(recall_at_k(&[None], 1), None);
    }

    #[test]
    fn recall_by_uncertainty_bins() {
        // Low scores hit, high scores miss.
        let score = [0.1, 0.2, 0.9, 0.8, 0.5, 0.6];
        let r = ranks(&[Some(0), Some(0), Some(50), Some(50), Some(0), Some(50)]);
        let bins = recall_by_bins(&score, &r, 1, 3).unwrap();
        assert_eq!(bins.len(), 3);
        assert!((bins[0].0 - 0.15).abs() < 1e-12);
        assert_eq!((bins[0].1, bins[0].2), (100.0, 2));
        assert_eq!((bins[1].1, bins[1].2), (50.0, 2));
        assert_eq!((bins[2].1, bins[2].2), (0.0, 2));
    }
}
