//! Exact ranks of the first correct item for every query, streamed over the gallery.
//!
//! A query's *positives* are the gallery items with the same key (a study id): an image's
//! report, or every image of a report's study (multi-positive ground truth, SPEC §6). The
//! rank of a query is the number of gallery items ranked before its best positive, under
//! the total order "distance, then gallery index" that [`medprob_core::kernels::top_k`]
//! uses. Recall@K, mean and median rank, risk–coverage and calibration are all functions of
//! these ranks and of the two nearest distances, so one pass serves every metric.
//!
//! The pass never holds more than one `query_block × gallery_block` tile of distances: the
//! working memory is independent of the gallery's size. Distances in the tile come from
//! the fast `f32` kernels; a gallery item whose kernel distance lies within the kernels'
//! rounding error of the best positive is compared again in `f64`, so ranks are exact and do
//! not depend on block sizes or thread count.

use std::cmp::Ordering;

use medprob_core::{kernels, pair_distance, Distance, GaussianEmbeddings, TopKOptions};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};

/// Where one query's best positive landed, and its two nearest gallery items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QueryRank {
    /// Gallery items ranked before the best positive (0 = the best positive is first);
    /// `None` when the gallery holds no positive for this query.
    pub rank: Option<usize>,
    /// Distance to the best positive (`f64`, exact); NaN without a positive.
    pub positive_distance: f64,
    /// The nearest gallery item and its distance (kernel precision).
    pub top1: (usize, f32),
    /// The second nearest (equal to `top1` when the gallery has one item).
    pub top2: (usize, f32),
}

impl QueryRank {
    /// Whether the best positive is within the first `k` results.
    pub fn hit(&self, k: usize) -> bool {
        matches!(self.rank, Some(r) if r < k)
    }
}

/// Rank every query against the gallery. `query_keys[i]` and `gallery_keys[j]` name the
/// study each item belongs to; equal keys are matches.
///
/// ```
/// use medprob_core::{Distance, GaussianEmbeddings, TopKOptions};
/// use medprob_metrics::ranking::rank_queries;
/// let q = GaussianEmbeddings::from_vecs(1, 1, vec![0.0], vec![0.0])?;
/// let g = GaussianEmbeddings::from_vecs(3, 1, vec![0.1, 2.0, 0.5], vec![0.0; 3])?;
/// // The query's match is gallery item 2; item 0 is nearer, so the rank is 1.
/// let r = rank_queries(Distance::Csd, &q, &["b"], &g, &["a", "c", "b"], &TopKOptions::default())?;
/// assert_eq!(r[0].rank, Some(1));
/// assert_eq!(r[0].top1.0, 0);
/// # Ok::<(), medprob_metrics::MetricsError>(())
/// ```
pub fn rank_queries<K: Ord + Sync>(
    distance: Distance,
    queries: &GaussianEmbeddings,
    query_keys: &[K],
    gallery: &GaussianEmbeddings,
    gallery_keys: &[K],
    options: &TopKOptions,
) -> Result<Vec<QueryRank>> {
    crate::check::len("rank_queries: query keys", queries.len(), query_keys.len())?;
    crate::check::len(
        "rank_queries: gallery keys",
        gallery.len(),
        gallery_keys.len(),
    )?;
    if queries.dim() != gallery.dim() {
        return Err(MetricsError::Length {
            what: "rank_queries",
            detail: format!(
                "queries have D = {}, gallery has D = {}",
                queries.dim(),
                gallery.dim()
            ),
        });
    }
    if gallery.is_empty() {
        return Err(MetricsError::Empty {
            what: "rank_queries",
            detail: "the gallery is empty",
        });
    }
    if options.query_block == 0 || options.gallery_block == 0 {
        return Err(MetricsError::InvalidParameter {
            name: "TopKOptions block size",
            value: 0.0,
            reason: "block sizes must be ≥ 1",
        });
    }

    // Gallery indices sorted by key: finds each query's positives without a hash map whose
    // size would grow with the gallery.
    let mut by_key: Vec<usize> = (0..gallery.len()).collect();
    by_key.sort_by(|&a, &b| gallery_keys[a].cmp(&gallery_keys[b]).then(a.cmp(&b)));
    let scale = gallery_scale(gallery);

    let mut states: Vec<State> = (0..queries.len())
        .into_par_iter()
        .map(|i| {
            State::new(
                distance,
                queries,
                i,
                &query_keys[i],
                gallery,
                gallery_keys,
                &by_key,
                scale,
            )
        })
        .collect();

    let (n, m) = (queries.len(), gallery.len());
    let mut g0 = 0;
    while g0 < m {
        let g1 = (g0 + options.gallery_block).min(m);
        let block = gallery.slice(g0..g1);
        let keys = &gallery_keys[g0..g1];
        let mut q0 = 0;
        while q0 < n {
            let q1 = (q0 + options.query_block).min(n);
            let tile = kernels::pairwise(distance, &queries.slice(q0..q1), &block)?;
            let tile = tile.as_slice().expect("a fresh tile is in standard layout");
            states[q0..q1]
                .par_iter_mut()
                .zip(query_keys[q0..q1].par_iter())
                .zip(tile.par_chunks(g1 - g0))
                .for_each(|((state, key), row)| state.observe(row, keys, key, g0));
            q0 = q1;
        }
        g0 = g1;
    }

    states
        .into_par_iter()
        .enumerate()
        .map(|(i, s)| s.finish(distance, queries, i, gallery))
        .collect()
}

/// Ranks in both directions of one split of paired images and reports:
/// `(image→text, text→image)`.
pub fn rank_both_ways<K: Ord + Sync>(
    distance: Distance,
    images: &GaussianEmbeddings,
    image_keys: &[K],
    texts: &GaussianEmbeddings,
    text_keys: &[K],
    options: &TopKOptions,
) -> Result<(Vec<QueryRank>, Vec<QueryRank>)> {
    Ok((
        rank_queries(distance, images, image_keys, texts, text_keys, options)?,
        rank_queries(distance, texts, text_keys, images, image_keys, options)?,
    ))
}

/// For the queries that have a positive: the top-1 score `−d` and whether the top-1 is the
/// query's match — what a top-1 match probability is fitted to and calibrated against.
pub fn top1_outcomes(ranks: &[QueryRank]) -> (Vec<f64>, Vec<bool>) {
    ranks
        .iter()
        .filter(|r| r.rank.is_some())
        .map(|r| (-(r.top1.1 as f64), r.hit(1)))
        .unzip()
}

/// Per-query state of the streaming pass.
struct State {
    /// The best positive `(exact distance, gallery index)`, known before the pass.
    best: Option<(f64, usize)>,
    /// Kernel distances below this are certainly before the best positive.
    lower: f32,
    /// Kernel distances above this are certainly after it.
    upper: f32,
    /// Negatives certainly before the best positive.
    before: usize,
    /// Negatives too close to the best positive to order by kernel distance.
    window: Vec<usize>,
    top: [(usize, f32); 2],
    seen: usize,
}

impl State {
    #[allow(clippy::too_many_arguments)]
    fn new<K: Ord>(
        distance: Distance,
        queries: &GaussianEmbeddings,
        i: usize,
        key: &K,
        gallery: &GaussianEmbeddings,
        gallery_keys: &[K],
        by_key: &[usize],
        scale: f64,
    ) -> Self {
        let start = by_key.partition_point(|&j| gallery_keys[j] < *key);
        let mut best: Option<(f64, usize)> = None;
        for &j in by_key[start..]
            .iter()
            .take_while(|&&j| gallery_keys[j] == *key)
        {
            let d = exact_distance(distance, queries, i, gallery, j);
            let better = match best {
                None => true,
                Some(b) => cmp_pair((d, j), b) == Ordering::Less,
            };
            if better {
                best = Some((d, j));
            }
        }
        // The kernels' error is a small multiple of f32 rounding on the magnitude of the
        // per-item terms; the window is far wider than that and every item inside it is
        // re-compared exactly, so its width only affects speed.
        let (lower, upper) = match best {
            Some((d, _)) => {
                let tol = 1e-4 * (1.0 + d.abs() + item_scale(queries, i) + scale);
                (next_down((d - tol) as f32), next_up((d + tol) as f32))
            }
            None => (f32::NEG_INFINITY, f32::NEG_INFINITY),
        };
        Self {
            best,
            lower,
            upper,
            before: 0,
            window: Vec::new(),
            top: [(usize::MAX, f32::INFINITY); 2],
            seen: 0,
        }
    }

    fn observe<K: Eq>(&mut self, row: &[f32], keys: &[K], key: &K, offset: usize) {
        for (j, &d) in row.iter().enumerate() {
            let index = offset + j;
            let c = (index, d);
            if cmp_kernel(c, self.top[1]) == Ordering::Less {
                if cmp_kernel(c, self.top[0]) == Ordering::Less {
                    self.top[1] = self.top[0];
                    self.top[0] = c;
                } else {
                    self.top[1] = c;
                }
            }
            if self.best.is_none() || keys[j] == *key {
                continue;
            }
            if d < self.lower {
                self.before += 1;
            } else if d <= self.upper || d.is_nan() {
                self.window.push(index);
            }
        }
        self.seen += row.len();
    }

    fn finish(
        self,
        distance: Distance,
        queries: &GaussianEmbeddings,
        i: usize,
        gallery: &GaussianEmbeddings,
    ) -> Result<QueryRank> {
        let top1 = self.top[0];
        let top2 = if self.seen > 1 { self.top[1] } else { top1 };
        let Some(best) = self.best else {
            return Ok(QueryRank {
                rank: None,
                positive_distance: f64::NAN,
                top1,
                top2,
            });
        };
        if !best.0.is_finite() {
            return Err(MetricsError::BadValue {
                what: "rank_queries: distance to the best positive",
                index: i,
                value: best.0,
                reason: "not finite",
            });
        }
        let close_before = self
            .window
            .iter()
            .filter(|&&j| {
                let d = exact_distance(distance, queries, i, gallery, j);
                cmp_pair((d, j), best) == Ordering::Less
            })
            .count();
        Ok(QueryRank {
            rank: Some(self.before + close_before),
            positive_distance: best.0,
            top1,
            top2,
        })
    }
}

/// One pair's distance in `f64`, the reference every close call is settled by; `b` is the
/// gallery, so its offset (a hub correction) is added as the kernels add it.
fn exact_distance(
    distance: Distance,
    a: &GaussianEmbeddings,
    i: usize,
    b: &GaussianEmbeddings,
    j: usize,
) -> f64 {
    let up = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let (m1, v1) = a.row(i);
    let (m2, v2) = b.row(j);
    let offset = b.gallery_offset().map_or(0.0, |o| o[j] as f64);
    pair_distance(distance, &up(m1), &up(v1), &up(m2), &up(v2)) + offset
}

/// The magnitude of one item's contribution to a distance: `‖mu‖² + Σ(σ² + |v|)`. CSD and
/// W2 are computed as `‖x‖² + ‖y‖² − 2x·y`, MLS and the others sum `D` terms of which the
/// logarithms can be as large as `|v|`; this bounds the terms the kernels' rounding acts on.
fn item_scale(e: &GaussianEmbeddings, i: usize) -> f64 {
    let (m, v) = e.row(i);
    let offset = e.gallery_offset().map_or(0.0, |o| (o[i] as f64).abs());
    m.iter()
        .zip(v)
        .map(|(&m, &v)| {
            let (m, v) = (m as f64, v as f64);
            m * m + v.exp() + v.abs() + 1.0
        })
        .sum::<f64>()
        + offset
}

fn gallery_scale(gallery: &GaussianEmbeddings) -> f64 {
    (0..gallery.len())
        .into_par_iter()
        .map(|j| item_scale(gallery, j))
        .reduce(|| 0.0, f64::max)
}

fn cmp_pair(a: (f64, usize), b: (f64, usize)) -> Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

fn cmp_kernel(a: (usize, f32), b: (usize, f32)) -> Ordering {
    a.1.total_cmp(&b.1).then(a.0.cmp(&b.0))
}

fn next_down(x: f32) -> f32 {
    if x.is_finite() {
        x - x.abs().max(f32::MIN_POSITIVE) * f32::EPSILON
    } else {
        x
    }
}

fn next_up(x: f32) -> f32 {
    if x.is_finite() {
        x + x.abs().max(f32::MIN_POSITIVE) * f32::EPSILON
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, d: usize, seed: u64) -> GaussianEmbeddings {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mean = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let var = (0..n * d).map(|_| rng.random_range(-2.0..1.0)).collect();
        GaussianEmbeddings::from_vecs(n, d, mean, var).unwrap()
    }

    /// Ranks by sorting every exact distance: the definition, without streaming.
    fn brute(
        distance: Distance,
        q: &GaussianEmbeddings,
        qk: &[u32],
        g: &GaussianEmbeddings,
        gk: &[u32],
    ) -> Vec<Option<usize>> {
        (0..q.len())
            .map(|i| {
                let mut all: Vec<(f64, usize)> = (0..g.len())
                    .map(|j| (exact_distance(distance, q, i, g, j), j))
                    .collect();
                all.sort_by(|a, b| cmp_pair(*a, *b));
                all.iter().position(|&(_, j)| gk[j] == qk[i])
            })
            .collect()
    }

    #[test]
    fn ranks_with_a_gallery_offset_equal_sorting_the_offset_distances() {
        let (q, g) = (random(23, 16, 5), random(150, 16, 6));
        let qk: Vec<u32> = (0..23).collect();
        let gk: Vec<u32> = (0..150).map(|j| (j % 40) as u32).collect();
        let offsets: Vec<f32> = (0..150)
            .map(|j| ((j * 37 % 11) as f32 - 5.0) * 0.7)
            .collect();
        let g = g.with_gallery_offset(offsets).unwrap();
        for distance in [Distance::Csd, Distance::Mls] {
            let ranks = rank_queries(
                distance,
                &q,
                &qk,
                &g,
                &gk,
                &TopKOptions {
                    query_block: 7,
                    gallery_block: 33,
                },
            )
            .unwrap();
            let got: Vec<Option<usize>> = ranks.iter().map(|r| r.rank).collect();
            assert_eq!(got, brute(distance, &q, &qk, &g, &gk), "{distance:?}");
            // And the offsets matter here: without them the ranks differ.
            let plain = g.clone().without_gallery_offset();
            assert_ne!(got, brute(distance, &q, &qk, &plain, &gk), "{distance:?}");
        }
    }

    #[test]
    fn streaming_ranks_equal_sorting_every_distance() {
        let (q, g) = (random(37, 24, 1), random(301, 24, 2));
        let qk: Vec<u32> = (0..37).map(|i| i % 29).collect();
        // Several positives per query (multi-view), and some queries without any.
        let gk: Vec<u32> = (0..301).map(|j| (j * 7 % 33) as u32).collect();
        for distance in Distance::ALL {
            let want = brute(distance, &q, &qk, &g, &gk);
            for opts in [
                TopKOptions {
                    query_block: 5,
                    gallery_block: 17,
                },
                TopKOptions::default(),
            ] {
                let got = rank_queries(distance, &q, &qk, &g, &gk, &opts).unwrap();
                let ranks: Vec<_> = got.iter().map(|r| r.rank).collect();
                assert_eq!(ranks, want, "{distance:?} {opts:?}");
            }
        }
    }

    #[test]
    fn exact_duplicates_tie_by_gallery_index() {
        // Gallery items 0..3 are the same Gaussian; the query's match is item 2.
        let mut mean = [0.3f32, -0.2].repeat(4);
        mean.extend([5.0, 5.0]);
        let g = GaussianEmbeddings::from_vecs(5, 2, mean, vec![0.1; 10]).unwrap();
        let q = GaussianEmbeddings::from_vecs(1, 2, vec![0.0, 0.0], vec![0.0; 2]).unwrap();
        for distance in Distance::ALL {
            let r = rank_queries(
                distance,
                &q,
                &[7],
                &g,
                &[1, 1, 7, 1, 1],
                &TopKOptions::default(),
            )
            .unwrap();
            // Items 0 and 1 tie with it and come first; 3 ties but has a larger index.
            assert_eq!(r[0].rank, Some(2), "{distance:?}");
        }
    }

    #[test]
    fn top_two_and_missing_positive() {
        let g = GaussianEmbeddings::from_vecs(3, 1, vec![3.0, 1.0, 2.0], vec![0.0; 3]).unwrap();
        let q = GaussianEmbeddings::from_vecs(1, 1, vec![0.0], vec![0.0]).unwrap();
        let r = rank_queries(
            Distance::Csd,
            &q,
            &[9],
            &g,
            &[1, 2, 3],
            &TopKOptions::default(),
        )
        .unwrap();
        assert_eq!(r[0].rank, None);
        assert!(r[0].positive_distance.is_nan());
        assert_eq!(r[0].top1, (1, 3.0)); // 1² + 1 + 1
        assert_eq!(r[0].top2, (2, 6.0));
        assert!(!r[0].hit(3));
    }

    #[test]
    fn bad_input_is_named() {
        let g = random(4, 3, 3);
        let q = random(2, 3, 4);
        let e = rank_queries(
            Distance::Csd,
            &q,
            &[1],
            &g,
            &[1, 2, 3, 4],
            &TopKOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("query keys"), "{e}");
        let q2 = random(2, 4, 4);
        let e = rank_queries(
            Distance::Mls,
            &q2,
            &[1, 2],
            &g,
            &[1, 2, 3, 4],
            &TopKOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("D = 4"), "{e}");
    }
}
