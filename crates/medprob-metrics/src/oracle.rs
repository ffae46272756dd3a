//! Oracle references for instance retrieval on a paired split (query `i`'s own item is
//! gallery item `i`).
//!
//! A *group oracle* knows each study's group (its positive label set, or its hidden state)
//! and nothing else: it ranks every study of the query's group first, in random order,
//! then the rest. Its expected instance Recall@K is the mean over queries of
//! `min(1, K / |g|)`, `g` being the query's group (its own study included). It is a
//! reference, not a ceiling: a model that sees what the group does not (side, severity)
//! can beat it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};

/// One oracle's expected instance recall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OracleRecall {
    /// "labels", "state".
    pub name: String,
    /// `(K, expected Recall@K)`, fractions; the same both ways on a paired split.
    pub recall: Vec<(usize, f64)>,
    /// Number of distinct groups.
    pub groups: usize,
    /// Size of the largest group.
    pub largest_group: usize,
    /// Chance: the expected share of queries whose first hit is in their group (plausible
    /// P@1) when the gallery is ranked at random, `Σ_g |g|² / n²`.
    #[serde(default)]
    pub chance_p1: f64,
}

/// The expected Recall@K of the group oracle, for each of `ks`.
///
/// ```
/// use medprob_metrics::oracle::group_oracle_recall;
/// // Groups of sizes 1 and 3: R@1 = (1 + 3·⅓) / 4, R@2 = (1 + 3·⅔) / 4.
/// let o = group_oracle_recall("labels", &["a", "b", "b", "b"], &[1, 2])?;
/// assert!((o.recall[0].1 - 0.5).abs() < 1e-12 && (o.recall[1].1 - 0.75).abs() < 1e-12);
/// // A random first hit is in the query's group with probability (1² + 3²) / 4².
/// assert_eq!(o.chance_p1, 10.0 / 16.0);
/// # Ok::<(), medprob_metrics::MetricsError>(())
/// ```
pub fn group_oracle_recall<K: std::hash::Hash + Eq>(
    name: &str,
    groups: &[K],
    ks: &[usize],
) -> Result<OracleRecall> {
    if groups.is_empty() {
        return Err(MetricsError::Empty {
            what: "group_oracle_recall",
            detail: "no studies",
        });
    }
    let mut size: HashMap<&K, usize> = HashMap::new();
    for g in groups {
        *size.entry(g).or_insert(0) += 1;
    }
    let n = groups.len() as f64;
    let recall = ks
        .iter()
        .map(|&k| {
            let sum: f64 = groups
                .iter()
                .map(|g| (k as f64 / size[g] as f64).min(1.0))
                .sum();
            (k, sum / n)
        })
        .collect();
    Ok(OracleRecall {
        name: name.to_string(),
        recall,
        groups: size.len(),
        largest_group: size.values().copied().max().unwrap_or(0),
        chance_p1: size.values().map(|&c| (c * c) as f64).sum::<f64>() / (n * n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use medprob_core::{Distance, GaussianEmbeddings, TopKOptions};

    use crate::ranking::rank_queries;
    use crate::retrieval::recall_at_k;

    #[test]
    fn the_oracle_reaches_its_own_ceiling() {
        // A small generated split: 60 studies in groups of sizes 1..=10, shuffled.
        let mut x = 99u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut groups: Vec<u32> = Vec::new();
        for (g, size) in [1usize, 2, 3, 4, 5, 6, 7, 8, 10, 14].iter().enumerate() {
            groups.extend(std::iter::repeat_n(g as u32, *size));
        }
        for i in (1..groups.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            groups.swap(i, j);
        }
        let n = groups.len();
        // The oracle as a model: every study of a group at the same point, one group per
        // axis. Within a group all distances tie and the ranking takes them in gallery
        // order, so query `i` of a group of size s finds its own item at a position spread
        // evenly over 0..s: exactly the oracle's expectation.
        let dim = 10;
        let mut mean = vec![0.0f32; n * dim];
        for (i, &g) in groups.iter().enumerate() {
            mean[i * dim + g as usize] = 1.0;
        }
        let e = GaussianEmbeddings::from_vecs(n, dim, mean, vec![0.0; n * dim]).unwrap();
        let keys: Vec<usize> = (0..n).collect();
        let ranks =
            rank_queries(Distance::Csd, &e, &keys, &e, &keys, &TopKOptions::default()).unwrap();
        let ranks: Vec<Option<usize>> = ranks.iter().map(|r| r.rank).collect();
        let ks = [1, 2, 5, 10];
        let o = group_oracle_recall("labels", &groups, &ks).unwrap();
        assert_eq!((o.groups, o.largest_group), (10, 14));
        let squares: usize = [1usize, 2, 3, 4, 5, 6, 7, 8, 10, 14]
            .iter()
            .map(|s| s * s)
            .sum();
        assert!((o.chance_p1 - squares as f64 / (n * n) as f64).abs() < 1e-12);
        for (k, expected) in o.recall {
            let measured = recall_at_k(&ranks, k).unwrap() / 100.0;
            assert!(
                (measured - expected).abs() < 1e-12,
                "R@{k}: {measured} vs {expected}"
            );
        }
        assert!(group_oracle_recall::<u32>("x", &[], &[1]).is_err());
    }
}
