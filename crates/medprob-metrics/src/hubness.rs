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

/// A retrieval-time hub correction: CSLS (Conneau et al. 2018, "Word translation without
/// parallel data") on the method's own distance.
///
/// CSLS scores a pair by `2·sim(q, g) − r(q) − r(g)`, where `r(g)` is the mean similarity
/// of `g` to its `k` nearest queries of a reference bank. In distances (`sim = −d`), and
/// leaving out `r(q)`, which is the same for every item a query ranks, the corrected
/// distance is `d(q, g) − ½·m(g)`, `m(g)` the mean distance from `g` to its `k` nearest
/// bank queries: an item near many queries (a hub) keeps its distances, an item far from
/// every query is brought nearer. The correction uses the method's own distance between
/// the Gaussians (MLS, CSD, …), one constant per gallery item, and the bank is the
/// validation split's queries of the other modality, so nothing about the test queries is
/// used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HubCorrection {
    /// Bank neighbours averaged per gallery item.
    pub k: usize,
}

impl Default for HubCorrection {
    /// `k = 10`, CSLS's usual neighbourhood.
    fn default() -> Self {
        Self { k: 10 }
    }
}

impl HubCorrection {
    /// The gallery offsets `−½·m(g)` of `gallery` against `bank` (see
    /// [`GaussianEmbeddings::with_gallery_offset`]); any offset `gallery` or `bank` already
    /// carries is ignored.
    pub fn offsets(
        &self,
        distance: Distance,
        bank: &GaussianEmbeddings,
        gallery: &GaussianEmbeddings,
    ) -> Result<Vec<f32>> {
        if bank.is_empty() || gallery.is_empty() {
            return Err(MetricsError::Empty {
                what: "HubCorrection::offsets",
                detail: "an empty bank or gallery",
            });
        }
        if self.k == 0 {
            return Err(MetricsError::InvalidParameter {
                name: "k",
                value: 0.0,
                reason: "the hub correction needs k ≥ 1",
            });
        }
        // The nearest bank items of each gallery item (distances are symmetric). The bank is
        // the gallery side of this search, so an offset it carries would be added: strip it.
        // The gallery is the query side here, where offsets are not used.
        let plain;
        let bank = match bank.gallery_offset() {
            Some(_) => {
                plain = bank.clone().without_gallery_offset();
                &plain
            }
            None => bank,
        };
        let top = kernels::top_k(
            distance,
            gallery,
            bank,
            self.k.min(bank.len()),
            &medprob_core::TopKOptions::default(),
        )?;
        Ok(top
            .distances
            .rows()
            .into_iter()
            .map(|r| {
                let m = r.iter().map(|&d| d as f64).sum::<f64>() / r.len() as f64;
                (-0.5 * m) as f32
            })
            .collect())
    }

    /// `gallery` with its offsets against `bank` attached.
    pub fn apply(
        &self,
        distance: Distance,
        bank: &GaussianEmbeddings,
        gallery: &GaussianEmbeddings,
    ) -> Result<GaussianEmbeddings> {
        let offsets = self.offsets(distance, bank, gallery)?;
        Ok(gallery.clone().with_gallery_offset(offsets)?)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn csls_offsets_are_half_the_mean_bank_distance_and_tame_a_hub() {
        // 1-D, unit variances: CSD = (x − y)² + 2.
        let e = |xs: &[f32]| {
            GaussianEmbeddings::from_vecs(xs.len(), 1, xs.to_vec(), vec![0.0; xs.len()]).unwrap()
        };
        let bank = e(&[0.0, 1.0, 2.0, 10.0]);
        let gallery = e(&[0.0, 10.0]);
        let c = HubCorrection { k: 2 }
            .offsets(Distance::Csd, &bank, &gallery)
            .unwrap();
        // Item 0: nearest bank items 0 and 1 → (2 + 3) / 2 = 2.5; item 1: 10 and 2 →
        // (2 + 66) / 2 = 34.
        assert_eq!(c, vec![-1.25, -17.0]);
        // The offsets reach every kernel where the batch is the gallery, not the query side.
        let corrected = HubCorrection { k: 2 }
            .apply(Distance::Csd, &bank, &gallery)
            .unwrap();
        let q = e(&[4.0]);
        let raw = kernels::pairwise(Distance::Csd, &q, &gallery).unwrap();
        let d = kernels::pairwise(Distance::Csd, &q, &corrected).unwrap();
        assert_eq!(raw.row(0).to_vec(), vec![18.0, 38.0]);
        assert_eq!(d.row(0).to_vec(), vec![16.75, 21.0]);
        let top = kernels::top_k(
            Distance::Csd,
            &q,
            &corrected,
            2,
            &medprob_core::TopKOptions {
                query_block: 1,
                gallery_block: 1,
            },
        )
        .unwrap();
        assert_eq!(top.distances.row(0).to_vec(), vec![16.75, 21.0]);
        let as_query = kernels::pairwise(Distance::Csd, &corrected, &q).unwrap();
        assert_eq!(as_query.column(0).to_vec(), vec![18.0, 38.0]);
        assert_eq!(
            corrected.slice(1..2).gallery_offset(),
            Some(&[-17.0f32][..])
        );
        // A hub: one gallery item in the middle of the queries is everyone's nearest; the
        // correction hands the queries near the outer items back to them.
        let queries = e(&[-3.2, -3.0, -0.2, 0.2, 3.0, 3.2]);
        let gallery = e(&[-7.0, 0.0, 7.0]);
        let share = |g: &GaussianEmbeddings| {
            occurrences(Distance::Csd, &queries, g, 1).unwrap().1[1] / queries.len() as f64
        };
        assert_eq!(share(&gallery), 1.0);
        let fixed = HubCorrection { k: 2 }
            .apply(Distance::Csd, &queries, &gallery)
            .unwrap();
        assert!(
            (share(&fixed) - 2.0 / 6.0).abs() < 1e-12,
            "{}",
            share(&fixed)
        );
        assert!(HubCorrection { k: 0 }
            .offsets(Distance::Csd, &queries, &gallery)
            .is_err());
        assert!(gallery.clone().with_gallery_offset(vec![0.0]).is_err());
        assert!(gallery
            .clone()
            .with_gallery_offset(vec![0.0, f32::NAN, 0.0])
            .is_err());
    }

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
