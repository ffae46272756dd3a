//! The confidence of a retrieval answer (SPEC §7), one per query:
//!
//! * [`ConfidenceKind::Uncertainty`]: `−Σ_d σ²` of the query embedding — how sure the
//!   model is about the query itself, before looking at the gallery;
//! * [`ConfidenceKind::Top1Probability`]: the match probability of the first result;
//! * [`ConfidenceKind::Margin`]: the logit of the first result minus that of the second.
//!
//! Deterministic baselines have no variance and only the last two.

use serde::{Deserialize, Serialize};

use crate::ranking::QueryRank;

/// A confidence function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfidenceKind {
    /// Negative total variance of the query embedding.
    Uncertainty,
    /// Match probability of the top-1 result.
    Top1Probability,
    /// Logit margin between the top-1 and top-2 results.
    Margin,
}

impl ConfidenceKind {
    /// All three, in report order.
    pub const ALL: [ConfidenceKind; 3] = [Self::Uncertainty, Self::Top1Probability, Self::Margin];

    /// The name used in reports and plots.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Uncertainty => "uncertainty (−Σσ²)",
            Self::Top1Probability => "top-1 probability",
            Self::Margin => "top-1/top-2 margin",
        }
    }
}

/// Per-query confidences of one kind. `logit(query, item, d)` maps a query, a gallery item
/// and their distance to the model's match logit (`−a·d + b` with the uncertainty terms of
/// [`medprob_core::MatchProbability::logit_of`], or a cosine logit for deterministic
/// models); `total_variance` holds
/// `Σ_d σ²` per query and is required only for [`ConfidenceKind::Uncertainty`] (returns
/// `None` without it).
pub fn confidences(
    kind: ConfidenceKind,
    ranks: &[QueryRank],
    logit: impl Fn(usize, usize, f64) -> f64,
    total_variance: Option<&[f64]>,
) -> Option<Vec<f64>> {
    let l = |q: usize, (item, d): (usize, f32)| logit(q, item, d as f64);
    match kind {
        ConfidenceKind::Uncertainty => total_variance.map(|v| v.iter().map(|&s| -s).collect()),
        ConfidenceKind::Top1Probability => Some(
            ranks
                .iter()
                .enumerate()
                .map(|(q, r)| medprob_core::sigmoid(l(q, r.top1)))
                .collect(),
        ),
        ConfidenceKind::Margin => Some(
            ranks
                .iter()
                .enumerate()
                .map(|(q, r)| l(q, r.top1) - l(q, r.top2))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_by_hand() {
        let r = [QueryRank {
            rank: Some(0),
            positive_distance: 1.0,
            top1: (3, 1.0),
            top2: (4, 3.0),
        }];
        let logit = |_: usize, _: usize, d: f64| -2.0 * d + 1.0;
        let p = confidences(ConfidenceKind::Top1Probability, &r, logit, None).unwrap();
        assert!((p[0] - medprob_core::sigmoid(-1.0)).abs() < 1e-12);
        let m = confidences(ConfidenceKind::Margin, &r, logit, None).unwrap();
        assert_eq!(m, vec![4.0]);
        // A logit that reads the item (as an uncertainty-reading probability does): item 4
        // gets +0.5, so the margin shrinks by that.
        let by_item =
            |_: usize, item: usize, d: f64| -2.0 * d + 1.0 + 0.5 * (item == 4) as u8 as f64;
        let m = confidences(ConfidenceKind::Margin, &r, by_item, None).unwrap();
        assert_eq!(m, vec![3.5]);
        assert_eq!(
            confidences(ConfidenceKind::Uncertainty, &r, logit, None),
            None
        );
        let u = confidences(ConfidenceKind::Uncertainty, &r, logit, Some(&[2.5])).unwrap();
        assert_eq!(u, vec![-2.5]);
    }
}
