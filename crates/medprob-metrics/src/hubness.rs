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

/// A retrieval-time hub correction: one offset per gallery item, added to every distance
/// in which it is the gallery ([`GaussianEmbeddings::with_gallery_offset`]), computed from a
/// reference *bank* of queries (the validation split's queries of the other modality, so
/// nothing about the test queries is used), on the method's own distance between the
/// Gaussians (MLS, CSD, …).
///
/// * [`HubCorrection::Csls`] (the default; Conneau et al. 2018, "Word translation without parallel
///   data"): CSLS scores a pair by `2·sim(q, g) − r(q) − r(g)`, `r(g)` the mean similarity
///   of `g` to its `k` nearest bank queries. In distances (`sim = −d`), and leaving out
///   `r(q)`, which is the same for every item a query ranks, the corrected distance is
///   `d(q, g) − ½·m(g)`, `m(g)` the mean distance from `g` to its `k` nearest bank queries.
/// * [`HubCorrection::Balanced`]: the offsets `o(g)` under which every gallery
///   item receives the same share of the bank's soft first choices,
///   `Σ_q softmax_g(−(d(q, g) + o(g)) / τ) = |bank| / |gallery|` for every `g` — the dual
///   potentials of an entropic optimal-transport problem between the bank and the gallery
///   (Sinkhorn's iteration), the transductive cure for hubs that Dinu et al. 2015 and
///   Smith et al. 2017 approximate with inverted softmax. Each bank query spreads its mass
///   over its [`BALANCED_CANDIDATES`] nearest items; `τ = temperature × the standard
///   deviation of those candidate distances`; the offsets are centred to mean 0, so
///   distances keep their level. A hub gets a positive offset, an item nobody chooses a
///   negative one. It assumes every gallery item is equally in demand; measured on the
///   quickstart it tames every hub but costs instance recall (docs/TRAINING.md), so it is
///   not the default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HubCorrection {
    /// CSLS with `k` bank neighbours averaged per gallery item.
    Csls { k: usize },
    /// Balanced first choices at a temperature relative to the bank's candidate distances.
    Balanced { temperature: f64 },
}

/// The nearest gallery items over which each bank query spreads its mass
/// ([`HubCorrection::Balanced`]).
pub const BALANCED_CANDIDATES: usize = 256;
/// The most Sinkhorn iterations [`HubCorrection::Balanced`] takes.
const BALANCED_ITERATIONS: usize = 1000;

impl Default for HubCorrection {
    /// CSLS with `k = 10` ([`HubCorrection::CSLS`]).
    fn default() -> Self {
        Self::CSLS
    }
}

impl HubCorrection {
    /// CSLS's usual neighbourhood, `k = 10`.
    pub const CSLS: Self = Self::Csls { k: 10 };

    /// What the correction is, in words ("balanced first choices, τ = 0.01 × sd").
    pub fn describe(&self) -> String {
        match *self {
            Self::Csls { k } => format!("CSLS, k = {k}"),
            Self::Balanced { temperature } => {
                format!("balanced first choices, τ = {temperature} × sd of the bank's candidate distances")
            }
        }
    }

    /// The gallery offsets of `gallery` against `bank` (see
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
        fn strip(e: &GaussianEmbeddings) -> std::borrow::Cow<'_, GaussianEmbeddings> {
            match e.gallery_offset() {
                Some(_) => std::borrow::Cow::Owned(e.clone().without_gallery_offset()),
                None => std::borrow::Cow::Borrowed(e),
            }
        }
        let (bank, gallery) = (strip(bank), strip(gallery));
        match *self {
            Self::Csls { k } => csls(distance, &bank, &gallery, k),
            Self::Balanced { temperature } => balanced(distance, &bank, &gallery, temperature),
        }
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

/// CSLS offsets `−½·m(g)` (see [`HubCorrection::Csls`]).
fn csls(
    distance: Distance,
    bank: &GaussianEmbeddings,
    gallery: &GaussianEmbeddings,
    k: usize,
) -> Result<Vec<f32>> {
    if k == 0 {
        return Err(MetricsError::InvalidParameter {
            name: "k",
            value: 0.0,
            reason: "the hub correction needs k ≥ 1",
        });
    }
    // The nearest bank items of each gallery item (distances are symmetric).
    let top = kernels::top_k(
        distance,
        gallery,
        bank,
        k.min(bank.len()),
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

/// Balanced offsets (see [`HubCorrection::Balanced`]): Sinkhorn's iteration on each bank
/// query's nearest candidates, in `f64`.
fn balanced(
    distance: Distance,
    bank: &GaussianEmbeddings,
    gallery: &GaussianEmbeddings,
    temperature: f64,
) -> Result<Vec<f32>> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(MetricsError::InvalidParameter {
            name: "temperature",
            value: temperature,
            reason: "the balanced hub correction needs a finite temperature > 0",
        });
    }
    let (nb, ng) = (bank.len(), gallery.len());
    let m = BALANCED_CANDIDATES.min(ng);
    let top = kernels::top_k(
        distance,
        bank,
        gallery,
        m,
        &medprob_core::TopKOptions::default(),
    )?;
    let d: Vec<f64> = top.distances.iter().map(|&x| x as f64).collect();
    let idx: Vec<usize> = top.indices.iter().copied().collect();
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / d.len() as f64).sqrt();
    if sd == 0.0 {
        // Every candidate at one distance: nothing to balance.
        return Ok(vec![0.0; ng]);
    }
    let tau = temperature * sd;
    let target = nb as f64 / ng as f64;
    let mut g = vec![0.0f64; ng];
    let mut col = vec![0.0f64; ng];
    let mut w = vec![0.0f64; m];
    for _ in 0..BALANCED_ITERATIONS {
        col.iter_mut().for_each(|c| *c = 0.0);
        for (dr, ir) in d.chunks_exact(m).zip(idx.chunks_exact(m)) {
            let mut best = f64::NEG_INFINITY;
            for ((wj, &dj), &j) in w.iter_mut().zip(dr).zip(ir) {
                *wj = -(dj + g[j]) / tau;
                best = best.max(*wj);
            }
            let mut total = 0.0;
            for wj in w.iter_mut() {
                *wj = (*wj - best).exp();
                total += *wj;
            }
            for (wj, &j) in w.iter().zip(ir) {
                col[j] += wj / total;
            }
        }
        let mut worst: f64 = 0.0;
        for (gj, &cj) in g.iter_mut().zip(&col) {
            // An item in no bank query's candidates cannot be balanced; it keeps its offset.
            if cj > 0.0 {
                let step = (cj / target).ln();
                *gj += tau * step;
                worst = worst.max(step.abs());
            }
        }
        if worst < 1e-4 {
            break;
        }
    }
    let centre = g.iter().sum::<f64>() / ng as f64;
    Ok(g.into_iter().map(|x| (x - centre) as f32).collect())
}

#[cfg(test)]
mod tests {

    #[test]
    fn balanced_offsets_give_every_item_its_share() {
        let e = |xs: &[f32]| {
            GaussianEmbeddings::from_vecs(xs.len(), 1, xs.to_vec(), vec![0.0; xs.len()]).unwrap()
        };
        // The hub of the CSLS test: the middle item is everyone's nearest.
        let queries = e(&[-3.2, -3.0, -0.2, 0.2, 3.0, 3.2]);
        let gallery = e(&[-7.0, 0.0, 7.0]);
        let h = HubCorrection::Balanced { temperature: 0.05 };
        let o = h.offsets(Distance::Csd, &queries, &gallery).unwrap();
        // Centred, the hub pushed away, the outer items (symmetric) pulled in alike.
        assert!(
            (o.iter().map(|&x| x as f64).sum::<f64>()).abs() < 1e-4,
            "{o:?}"
        );
        assert!(
            o[1] > 0.0 && o[0] < 0.0 && (o[0] - o[2]).abs() < 1e-3,
            "{o:?}"
        );
        // At convergence each item holds |bank| / |gallery| = 2 of the soft first choices.
        let d = kernels::pairwise(Distance::Csd, &queries, &gallery).unwrap();
        let all: Vec<f64> = d.iter().map(|&x| x as f64).collect();
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let tau =
            0.05 * (all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
        let mut col = [0.0f64; 3];
        for q in 0..6 {
            let z: Vec<f64> = (0..3)
                .map(|g| (-(d[[q, g]] as f64 + o[g] as f64) / tau).exp())
                .collect();
            let t: f64 = z.iter().sum();
            for g in 0..3 {
                col[g] += z[g] / t;
            }
        }
        for c in col {
            assert!((c - 2.0).abs() < 1e-2, "{col:?}");
        }
        // And hard first choices follow: two queries each.
        let fixed = h.apply(Distance::Csd, &queries, &gallery).unwrap();
        let counts = occurrences(Distance::Csd, &queries, &fixed, 1).unwrap().1;
        assert_eq!(counts, vec![2.0, 2.0, 2.0]);
        // Offsets the inputs carry are ignored.
        let carried = gallery
            .clone()
            .with_gallery_offset(vec![5.0, -5.0, 1.0])
            .unwrap();
        assert_eq!(h.offsets(Distance::Csd, &queries, &carried).unwrap(), o);
        for bad in [0.0, -1.0, f64::NAN] {
            let e = HubCorrection::Balanced { temperature: bad }
                .offsets(Distance::Csd, &queries, &gallery)
                .unwrap_err();
            assert!(e.to_string().contains("temperature"), "{e}");
        }
        assert_eq!(HubCorrection::default(), HubCorrection::Csls { k: 10 });
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            r#"{"kind":"balanced","temperature":0.05}"#
        );
        assert_eq!(
            serde_json::to_string(&HubCorrection::CSLS).unwrap(),
            r#"{"kind":"csls","k":10}"#
        );
    }

    #[test]
    fn csls_offsets_are_half_the_mean_bank_distance_and_tame_a_hub() {
        // 1-D, unit variances: CSD = (x − y)² + 2.
        let e = |xs: &[f32]| {
            GaussianEmbeddings::from_vecs(xs.len(), 1, xs.to_vec(), vec![0.0; xs.len()]).unwrap()
        };
        let bank = e(&[0.0, 1.0, 2.0, 10.0]);
        let gallery = e(&[0.0, 10.0]);
        let c = HubCorrection::Csls { k: 2 }
            .offsets(Distance::Csd, &bank, &gallery)
            .unwrap();
        // Item 0: nearest bank items 0 and 1 → (2 + 3) / 2 = 2.5; item 1: 10 and 2 →
        // (2 + 66) / 2 = 34.
        assert_eq!(c, vec![-1.25, -17.0]);
        // The offsets reach every kernel where the batch is the gallery, not the query side.
        let corrected = HubCorrection::Csls { k: 2 }
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
        let fixed = HubCorrection::Csls { k: 2 }
            .apply(Distance::Csd, &queries, &gallery)
            .unwrap();
        assert!(
            (share(&fixed) - 2.0 / 6.0).abs() < 1e-12,
            "{}",
            share(&fixed)
        );
        assert!(HubCorrection::Csls { k: 0 }
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
