//! Hubness: gallery items that are the nearest neighbour of far more queries than their
//! share (Radovanović, Nanopoulos & Ivanović 2010). A hub report is returned for many
//! images whatever they show; under MLS, whose log-variance term favours confident
//! items, low-variance gallery items tend to become hubs.
//!
//! `N_k(j)` counts the queries that have gallery item `j` among their first `k` results;
//! its skewness over the gallery is the usual hubness figure (0 for a symmetric spread,
//! large and positive when a few items take most of the occurrences). Exact distance ties
//! (byte-identical reports give byte-identical embeddings) are not broken by gallery
//! index here: the items tied at a query's `k`-th place share the remaining places
//! equally, and the items tied for first share the top-1 occurrence.

use medprob_core::{kernels, Distance, GaussianEmbeddings};
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::report::Direction;

/// Queries per distance tile (the tile is `QUERY_BLOCK × gallery` floats).
const QUERY_BLOCK: usize = 64;

/// Hubness of one direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hubness {
    pub direction: Direction,
    /// The `k` of `N_k`.
    pub k: usize,
    /// Sample skewness of `N_k` over the gallery items (`m₃ / m₂^{3/2}`).
    #[serde(with = "crate::nan_null")]
    pub skewness: f64,
    /// The largest share of queries whose first result is one and the same gallery item.
    pub max_top1_share: f64,
    /// That item's gallery index.
    pub largest_hub: usize,
    /// The largest `N_k`, as a share of the queries.
    pub max_k_share: f64,
    /// The largest hub's total variance `Σσ²` over the gallery's mean total variance (NaN
    /// when the gallery has no variance).
    #[serde(with = "crate::nan_null")]
    pub hub_variance_ratio: f64,
}

/// `N_k` and top-1 occurrence counts (tie-shared, so fractional) of every gallery item.
pub fn occurrences(
    distance: Distance,
    queries: &GaussianEmbeddings,
    gallery: &GaussianEmbeddings,
    k: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    if queries.is_empty() || gallery.is_empty() {
        return Err(MetricsError::Empty {
            what: "hubness",
            detail: "no queries or an empty gallery",
        });
    }
    if k == 0 {
        return Err(MetricsError::InvalidParameter {
            name: "k",
            value: 0.0,
            reason: "N_k needs k ≥ 1",
        });
    }
    let m = gallery.len();
    let k = k.min(m);
    let (mut nk, mut top1) = (vec![0.0; m], vec![0.0; m]);
    let mut q0 = 0;
    let mut sorted = vec![0f32; m];
    while q0 < queries.len() {
        let q1 = (q0 + QUERY_BLOCK).min(queries.len());
        let tile = kernels::pairwise(distance, &queries.slice(q0..q1), gallery)?;
        for row in tile.rows() {
            sorted.copy_from_slice(row.as_slice().expect("a fresh tile is contiguous"));
            sorted.sort_unstable_by(f32::total_cmp);
            let (first, kth) = (sorted[0], sorted[k - 1]);
            let below = sorted.partition_point(|&d| d.total_cmp(&kth).is_lt());
            let at = sorted[below..]
                .iter()
                .take_while(|&&d| d.total_cmp(&kth).is_eq())
                .count();
            let share = (k - below) as f64 / at as f64;
            let firsts = sorted
                .iter()
                .take_while(|&&d| d.total_cmp(&first).is_eq())
                .count();
            for (j, &d) in row.iter().enumerate() {
                match d.total_cmp(&kth) {
                    std::cmp::Ordering::Less => nk[j] += 1.0,
                    std::cmp::Ordering::Equal => nk[j] += share,
                    std::cmp::Ordering::Greater => {}
                }
                if d.total_cmp(&first).is_eq() {
                    top1[j] += 1.0 / firsts as f64;
                }
            }
        }
        q0 = q1;
    }
    Ok((nk, top1))
}

/// Sample skewness `m₃ / m₂^{3/2}` (NaN for a constant sample).
pub fn skewness(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let m2 = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let m3 = x.iter().map(|v| (v - mean).powi(3)).sum::<f64>() / n;
    if m2 > 0.0 {
        m3 / m2.powf(1.5)
    } else {
        f64::NAN
    }
}

/// Hubness of `gallery` for `queries`.
pub fn hubness(
    direction: Direction,
    distance: Distance,
    queries: &GaussianEmbeddings,
    gallery: &GaussianEmbeddings,
    k: usize,
) -> Result<Hubness> {
    let (nk, top1) = occurrences(distance, queries, gallery, k)?;
    let n = queries.len() as f64;
    let (largest_hub, &max_top1) = top1
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .expect("a non-empty gallery");
    let max_k = nk.iter().copied().fold(0.0, f64::max);
    let variance: Vec<f64> = gallery
        .uncertainty()
        .iter()
        .map(|u| u.total_variance)
        .collect();
    let mean_var = variance.iter().sum::<f64>() / variance.len() as f64;
    Ok(Hubness {
        direction,
        k,
        skewness: skewness(&nk),
        max_top1_share: max_top1 / n,
        largest_hub,
        max_k_share: max_k / n,
        hub_variance_ratio: if mean_var > 0.0 {
            variance[largest_hub] / mean_var
        } else {
            f64::NAN
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_hand_with_ties_shared() {
        // Queries at 0 and 5; gallery at 1, 1 (tied copies), 4, 9.
        let q = GaussianEmbeddings::from_vecs(2, 1, vec![0.0, 5.0], vec![0.0; 2]).unwrap();
        let g =
            GaussianEmbeddings::from_vecs(4, 1, vec![1.0, 1.0, 4.0, 9.0], vec![0.0; 4]).unwrap();
        let (nk, top1) = occurrences(Distance::Csd, &q, &g, 1).unwrap();
        // Query 0: items 0 and 1 tie for first → ½ each. Query 1: item 2 (distance 1).
        assert_eq!(top1, vec![0.5, 0.5, 1.0, 0.0]);
        assert_eq!(nk, top1);
        let (n2, _) = occurrences(Distance::Csd, &q, &g, 2).unwrap();
        // k = 2: query 0 takes both copies; query 1 takes item 2, and items 0, 1 and 3
        // (each 4 away) tie for its second place, a third each.
        let third = 1.0 / 3.0;
        let expect = [1.0 + third, 1.0 + third, 1.0, third];
        for (a, b) in n2.iter().zip(expect) {
            assert!((a - b).abs() < 1e-12, "{n2:?}");
        }
        assert!((n2.iter().sum::<f64>() - 4.0).abs() < 1e-12);
    }

    #[test]
    fn a_single_hub_is_skewed_and_found() {
        // Every query is nearest to item 0.
        let q = GaussianEmbeddings::from_vecs(5, 1, vec![0.0, 0.1, 0.2, 0.3, 0.4], vec![0.0; 5])
            .unwrap();
        let g = GaussianEmbeddings::from_vecs(
            5,
            1,
            vec![0.2, 5.0, 6.0, 7.0, 8.0],
            vec![-1.0, 0.0, 0.0, 0.0, 0.0],
        )
        .unwrap();
        let h = hubness(Direction::ImageToText, Distance::Csd, &q, &g, 1).unwrap();
        assert_eq!((h.largest_hub, h.max_top1_share), (0, 1.0));
        // N_1 = (5, 0, 0, 0, 0): skewness of one outlier among five is 1.5.
        assert!((h.skewness - 1.5).abs() < 1e-12, "{}", h.skewness);
        assert!(h.hub_variance_ratio < 1.0);
        assert!(skewness(&[1.0, 1.0]).is_nan());
        assert!(occurrences(Distance::Csd, &q, &g, 0).is_err());
    }
}
