//! Label-aware retrieval: plausible-match R-precision (PMRP, Chun et al. 2021, PCME) and
//! mAP@R (Musgrave et al. 2020), SPEC §6.
//!
//! Near-identical normal reports make one-to-one recall pessimistic: a retrieved report
//! that is not the query's own but says the same thing counts as a miss. Here a gallery item
//! is a *plausible match* for a query when their binary label vectors (CheXpert's 14
//! labels, positive or not) differ in at most ζ places. With `R` plausible matches,
//! PMRP is the share of plausible items among the first `R` results, and mAP@R is
//! `(1/R)·Σ_{i ≤ R} precision@i · 1{item i plausible}`.

use medprob_core::{Distance, GaussianEmbeddings, TopKAccumulator, TopKOptions};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};

/// The ζ values of PCME's tables.
pub const ZETAS: [u32; 3] = [0, 1, 2];

/// Queries per top-R search: the working memory is `QUERY_BLOCK × R_max × 12` bytes.
const QUERY_BLOCK: usize = 64;

/// PMRP and mAP@R at one ζ, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelRetrieval {
    /// Hamming-distance tolerance on the label vectors.
    pub zeta: u32,
    /// Plausible-match R-precision, percent.
    #[serde(with = "crate::nan_null")]
    pub pmrp: f64,
    /// Mean average precision at R, percent.
    #[serde(with = "crate::nan_null")]
    pub map_at_r: f64,
    /// Queries with at least one plausible match (the others are left out).
    pub queries: usize,
}

/// PMRP and mAP@R for each ζ in `zetas`. Labels are bit masks: bit `c` set when label `c` is
/// positive.
pub fn label_retrieval(
    distance: Distance,
    queries: &GaussianEmbeddings,
    query_labels: &[u32],
    gallery: &GaussianEmbeddings,
    gallery_labels: &[u32],
    zetas: &[u32],
    options: &TopKOptions,
) -> Result<Vec<LabelRetrieval>> {
    crate::check::len(
        "label_retrieval: query labels",
        queries.len(),
        query_labels.len(),
    )?;
    crate::check::len(
        "label_retrieval: gallery labels",
        gallery.len(),
        gallery_labels.len(),
    )?;
    if gallery.is_empty() || queries.is_empty() {
        return Err(MetricsError::Empty {
            what: "label_retrieval",
            detail: "no queries or an empty gallery",
        });
    }
    let plausible = |q: u32, g: u32, zeta: u32| (q ^ g).count_ones() <= zeta;
    // Per ζ: the sums of PMRP and AP@R, and the number of queries scored.
    let mut sums = vec![(0.0f64, 0.0f64, 0usize); zetas.len()];
    let mut q0 = 0;
    while q0 < queries.len() {
        let q1 = (q0 + QUERY_BLOCK).min(queries.len());
        let labels = &query_labels[q0..q1];
        let r: Vec<Vec<usize>> = labels
            .par_iter()
            .map(|&q| {
                zetas
                    .iter()
                    .map(|&z| {
                        gallery_labels
                            .iter()
                            .filter(|&&g| plausible(q, g, z))
                            .count()
                    })
                    .collect()
            })
            .collect();
        let r_max = r.iter().flatten().copied().max().unwrap_or(0);
        if r_max > 0 {
            let block = queries.slice(q0..q1);
            let mut acc = TopKAccumulator::new(distance, &block, r_max, *options)?;
            let mut g0 = 0;
            while g0 < gallery.len() {
                let g1 = (g0 + options.gallery_block).min(gallery.len());
                acc.add_block(g0, &gallery.slice(g0..g1))?;
                g0 = g1;
            }
            let top = acc.finish();
            for (i, &q) in labels.iter().enumerate() {
                let row = top.indices.row(i);
                for (z, &zeta) in zetas.iter().enumerate() {
                    let rq = r[i][z];
                    if rq == 0 {
                        continue;
                    }
                    let (mut hits, mut ap) = (0usize, 0.0);
                    for (rank, &j) in row.iter().take(rq).enumerate() {
                        if plausible(q, gallery_labels[j], zeta) {
                            hits += 1;
                            ap += hits as f64 / (rank + 1) as f64;
                        }
                    }
                    sums[z].0 += hits as f64 / rq as f64;
                    sums[z].1 += ap / rq as f64;
                    sums[z].2 += 1;
                }
            }
        }
        q0 = q1;
    }
    Ok(zetas
        .iter()
        .zip(sums)
        .map(|(&zeta, (pmrp, ap, n))| LabelRetrieval {
            zeta,
            pmrp: if n > 0 {
                100.0 * pmrp / n as f64
            } else {
                f64::NAN
            },
            map_at_r: if n > 0 {
                100.0 * ap / n as f64
            } else {
                f64::NAN
            },
            queries: n,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_pmrp_and_map() {
        // One query at 0; gallery items at distances 1, 2, 3, 4 (1-D means 1..4).
        let q = GaussianEmbeddings::from_vecs(1, 1, vec![0.0], vec![0.0]).unwrap();
        let g =
            GaussianEmbeddings::from_vecs(4, 1, vec![1.0, 2.0, 3.0, 4.0], vec![0.0; 4]).unwrap();
        // Query labels 0b011; gallery: 0b011 (same), 0b111 (1 off), 0b000 (2 off), 0b011.
        let r = label_retrieval(
            Distance::Csd,
            &q,
            &[0b011],
            &g,
            &[0b011, 0b111, 0b000, 0b011],
            &[0, 1, 2],
            &TopKOptions::default(),
        )
        .unwrap();
        // ζ = 0: R = 2 (items 0, 3); top-2 = {0, 1}: one plausible → PMRP 50;
        // AP@R = (1/1) / 2 = 0.5.
        assert_eq!(r[0].pmrp, 50.0);
        assert_eq!(r[0].map_at_r, 50.0);
        // ζ = 1: R = 3 (0, 1, 3); top-3 = {0, 1, 2}: two plausible → 66.67;
        // AP@R = (1/1 + 2/2) / 3.
        assert!((r[1].pmrp - 200.0 / 3.0).abs() < 1e-9);
        assert!((r[1].map_at_r - 200.0 / 3.0).abs() < 1e-9);
        // ζ = 2: everything is plausible → 100.
        assert_eq!((r[2].pmrp, r[2].map_at_r, r[2].queries), (100.0, 100.0, 1));
    }

    #[test]
    fn queries_without_plausible_matches_are_left_out() {
        let q = GaussianEmbeddings::from_vecs(2, 1, vec![0.0, 0.0], vec![0.0; 2]).unwrap();
        let g = GaussianEmbeddings::from_vecs(1, 1, vec![1.0], vec![0.0]).unwrap();
        let r = label_retrieval(
            Distance::Mls,
            &q,
            &[0b1, 0b1110],
            &g,
            &[0b1],
            &[0],
            &TopKOptions::default(),
        )
        .unwrap();
        assert_eq!((r[0].queries, r[0].pmrp), (1, 100.0));
        let e = label_retrieval(
            Distance::Mls,
            &q,
            &[1],
            &g,
            &[1],
            &[0],
            &TopKOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("query labels"), "{e}");
    }
}
