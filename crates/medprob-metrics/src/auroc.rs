//! Area under the ROC curve.

use crate::error::{MetricsError, Result};

/// AUROC of `scores` (higher = more likely positive) against binary `labels`: the
/// probability that a random positive scores above a random negative, ties counting one
/// half (the Mann–Whitney statistic with mid-ranks; equal to scikit-learn's
/// `roc_auc_score`). `None` when the labels hold only one class.
///
/// ```
/// use medprob_metrics::auroc::auroc;
/// // Positives 0.8 and 0.4, negatives 0.5 and 0.1: three of four pairs are ordered.
/// assert_eq!(auroc(&[0.8, 0.5, 0.4, 0.1], &[true, false, true, false])?, Some(0.75));
/// # Ok::<(), medprob_metrics::MetricsError>(())
/// ```
pub fn auroc(scores: &[f64], labels: &[bool]) -> Result<Option<f64>> {
    crate::check::len("auroc: labels", scores.len(), labels.len())?;
    if let Some((i, &s)) = scores.iter().enumerate().find(|(_, s)| s.is_nan()) {
        return Err(MetricsError::BadValue {
            what: "auroc: score",
            index: i,
            value: s,
            reason: "NaN cannot be ranked",
        });
    }
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Ok(None);
    }
    let (order, groups) = crate::check::tie_groups(scores, false);
    // Sum of the (1-based, mid-ranked) ranks of the positives.
    let mut rank_sum = 0.0;
    for g in groups {
        let mid_rank = (g.start + 1 + g.end) as f64 / 2.0;
        rank_sum += mid_rank * order[g].iter().filter(|&&i| labels[i]).count() as f64;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Ok(Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_cases() {
        assert_eq!(
            auroc(&[0.1, 0.2, 0.3], &[false, false, true]).unwrap(),
            Some(1.0)
        );
        assert_eq!(
            auroc(&[0.3, 0.2, 0.1], &[false, false, true]).unwrap(),
            Some(0.0)
        );
        // Every score tied: chance.
        assert_eq!(
            auroc(&[0.5; 4], &[true, false, true, false]).unwrap(),
            Some(0.5)
        );
        // One tie between a positive and a negative counts a half: (1 + 0.5) / 2.
        assert_eq!(
            auroc(&[0.9, 0.5, 0.5], &[true, true, false]).unwrap(),
            Some(0.75)
        );
        assert_eq!(auroc(&[0.9, 0.5], &[true, true]).unwrap(), None);
        assert!(auroc(&[f64::NAN, 0.5], &[true, false]).is_err());
    }
}
