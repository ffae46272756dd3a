//! Label-aware retrieval: plausible-match R-precision (PMRP, Chun et al. 2021, PCME) and
//! mAP@R (Musgrave et al. 2020), SPEC §6.
//!
//! Near-identical normal reports make one-to-one recall pessimistic: a retrieved report
//! that is not the query's own but says the same thing counts as a miss. Here a gallery item
//! is a *plausible match* for a query when their binary label vectors (CheXpert's 14
//! labels, positive or not) differ in at most ζ places. With `R` plausible matches,
//! PMRP is the share of plausible items among the first `R` results, and mAP@R is
//! `(1/R)·Σ_{i ≤ R} precision@i · 1{item i plausible}`.

use medprob_core::{Distance, GaussianEmbeddings, TopKOptions};
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::plausible::r_precision_sums;
use crate::relevance::Relevance;

/// The ζ values of PCME's tables.
pub const ZETAS: [u32; 3] = [0, 1, 2];

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
    // PMRP is R-precision under label relevance: one search serves every ζ.
    let relevances = zetas
        .iter()
        .map(|&z| Relevance::labels(query_labels, gallery_labels, z))
        .collect::<Result<Vec<_>>>()?;
    let sums = r_precision_sums(distance, queries, gallery, &relevances, options)?;
    let percent = |s: f64, n: usize| {
        if n > 0 {
            100.0 * s / n as f64
        } else {
            f64::NAN
        }
    };
    Ok(zetas
        .iter()
        .zip(sums)
        .map(|(&zeta, (pmrp, ap, n))| LabelRetrieval {
            zeta,
            pmrp: percent(pmrp, n),
            map_at_r: percent(ap, n),
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
