//! Multi-threaded `f32` kernels for retrieval: pairwise distance matrices, paired distances
//! and a chunked top-k search whose memory does not grow with the gallery.
//!
//! Two strategies, chosen per distance:
//!
//! * **GEMM** (`Csd`, `Wasserstein2`): both are a squared Euclidean distance between
//!   augmented vectors plus per-item terms, `‖x1‖² + ‖x2‖² − 2·x1·x2 + c1 + c2`, so a block of
//!   pairs costs one matrix product (the `gemm` crate, the one candle uses on CPU) and two
//!   rank-1 updates. CSD uses `x = mu`, `c = Σ σ²`; W2 uses `x = [mu, σ]`, `c = 0`.
//! * **Fused blocked loop** (`Mls`, `Bhattacharyya`, `Hellinger`, `SymmetricKl`): these do not
//!   decompose into a product, so each pair is summed over `D` directly, from per-item
//!   quantities prepared once (`exp(v)` is never evaluated per pair). Queries are processed
//!   in small groups against cache-sized gallery blocks, one pair at a time in 16 lanes,
//!   with the logarithms of 8 dimensions taken as one logarithm of their product, and the code is compiled for AVX-512 and AVX2 with run-time dispatch. No
//!   `N×M×D` intermediate is ever formed.
//!
//! Both parallelise over queries with rayon (set `RAYON_NUM_THREADS` to limit them).

use std::borrow::Cow;

use ndarray::{Array1, Array2, ArrayView2};
use rayon::prelude::*;

use crate::distance::{with_definition, Definition, Distance};
use crate::embedding::GaussianEmbeddings;
use crate::error::{CoreError, Result};

/// The full `[N, M]` distance matrix between `queries` and `gallery`.
///
/// Use [`top_k`] instead when only the nearest items are needed: it never holds more than
/// one block of this matrix.
///
/// ```
/// use medprob_core::{kernels, Distance, GaussianEmbeddings};
/// let q = GaussianEmbeddings::from_vecs(1, 2, vec![0.0, 0.0], vec![0.0, 0.0])?;
/// let g = GaussianEmbeddings::from_vecs(2, 2, vec![0.0, 0.0, 3.0, 4.0], vec![0.0; 4])?;
/// let d = kernels::pairwise(Distance::Csd, &q, &g)?;
/// assert_eq!(d[[0, 0]], 4.0);          // Σ(σ1² + σ2²) = 2·2
/// assert_eq!(d[[0, 1]], 25.0 + 4.0);   // ‖Δ‖² + 4
/// # Ok::<(), medprob_core::CoreError>(())
/// ```
pub fn pairwise(
    distance: Distance,
    queries: &GaussianEmbeddings,
    gallery: &GaussianEmbeddings,
) -> Result<Array2<f32>> {
    check_dims("kernels::pairwise", queries, gallery)?;
    let (n, m) = (queries.len(), gallery.len());
    let mut out = Array2::<f32>::zeros((n, m));
    if n == 0 || m == 0 {
        return Ok(out);
    }
    let q = Prepared::new(distance, queries);
    let g = Prepared::new(distance, gallery);
    let buf = out
        .as_slice_mut()
        .expect("a fresh Array2 is in standard layout");
    q.distances_into(&g, buf, m);
    add_gallery_offset(buf, m, gallery.gallery_offset());
    Ok(out)
}

/// Add a gallery's offsets (one per column) to every row of a distance tile.
fn add_gallery_offset(tile: &mut [f32], stride: usize, offset: Option<&[f32]>) {
    if let Some(c) = offset {
        tile.par_chunks_mut(stride).for_each(|row| {
            for (d, o) in row.iter_mut().zip(c) {
                *d += o;
            }
        });
    }
}

/// Distances between corresponding items, `d(a_i, b_i)`, `[N]`.
pub fn paired(
    distance: Distance,
    a: &GaussianEmbeddings,
    b: &GaussianEmbeddings,
) -> Result<Array1<f32>> {
    check_dims("kernels::paired", a, b)?;
    if a.len() != b.len() {
        return Err(CoreError::Shape {
            what: "kernels::paired",
            detail: format!("{} items against {}", a.len(), b.len()),
        });
    }
    let v: Vec<f32> = (0..a.len())
        .into_par_iter()
        .map(|i| {
            let (m1, v1) = a.row(i);
            let (m2, v2) = b.row(i);
            crate::distance::pair_distance(distance, m1, v1, m2, v2)
        })
        .collect();
    Ok(Array1::from(v))
}

/// Squared Euclidean distances between the rows of `x` `[N, D]` and `y` `[M, D]`, by one
/// GEMM. Used for sampled (Monte-Carlo) distances.
pub fn squared_euclidean(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
    if x.ncols() != y.ncols() {
        return Err(CoreError::Shape {
            what: "kernels::squared_euclidean",
            detail: format!("x has {} columns, y has {}", x.ncols(), y.ncols()),
        });
    }
    let prep = |a: ArrayView2<'_, f32>| {
        let x: Vec<f32> = a.as_standard_layout().iter().copied().collect();
        let norm = row_sums(&x, a.ncols(), |v| v * v);
        let n = a.nrows();
        GemmPrepared {
            n,
            cols: a.ncols(),
            x: Cow::Owned(x),
            norm: Cow::Owned(norm),
            extra: Cow::Owned(vec![0.0; n]),
        }
    };
    let (px, py) = (prep(x), prep(y));
    let mut out = Array2::<f32>::zeros((x.nrows(), y.nrows()));
    if px.n > 0 && py.n > 0 {
        let stride = py.n;
        gemm_into(
            &px,
            &py,
            out.as_slice_mut().expect("standard layout"),
            stride,
        );
    }
    Ok(out)
}

/// Block sizes for [`top_k`]. The working memory is about
/// `query_block × gallery_block × 4` bytes for the distance tile plus the prepared gallery
/// block (`gallery_block × D × 8` bytes), independent of the gallery's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopKOptions {
    /// Queries per tile.
    pub query_block: usize,
    /// Gallery items per tile.
    pub gallery_block: usize,
}

impl Default for TopKOptions {
    /// 1024 queries × 4096 gallery items: a 16 MiB tile.
    fn default() -> Self {
        Self {
            query_block: 1024,
            gallery_block: 4096,
        }
    }
}

/// The `k` nearest gallery items of each query, nearest first.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    /// Gallery indices, `[N, min(k, M)]`.
    pub indices: Array2<usize>,
    /// Their distances, `[N, min(k, M)]`, ascending along each row.
    pub distances: Array2<f32>,
}

/// The `k` nearest gallery items of every query under `distance`, in bounded memory.
///
/// Ties are broken by the lower gallery index, so results are deterministic whatever the
/// thread count. The gallery is processed block by block (see [`TopKOptions`]); for a
/// gallery that does not fit in memory, feed blocks to a [`TopKAccumulator`] yourself with
/// [`TopKAccumulator::add_block`].
pub fn top_k(
    distance: Distance,
    queries: &GaussianEmbeddings,
    gallery: &GaussianEmbeddings,
    k: usize,
    options: &TopKOptions,
) -> Result<TopK> {
    check_dims("kernels::top_k", queries, gallery)?;
    let mut acc = TopKAccumulator::new(distance, queries, k, *options)?;
    let gb = options.gallery_block;
    let mut start = 0;
    while start < gallery.len() {
        let end = (start + gb).min(gallery.len());
        acc.add_block(start, &gallery.slice(start..end))?;
        start = end;
    }
    Ok(acc.finish())
}

/// Streaming top-k search: the queries are fixed, gallery blocks arrive one at a time (for
/// instance read from disk), and only `k` candidates per query are kept between blocks.
pub struct TopKAccumulator<'a> {
    distance: Distance,
    queries: Prepared<'a>,
    dim: usize,
    k: usize,
    options: TopKOptions,
    heaps: Vec<std::collections::BinaryHeap<Candidate>>,
    tile: Vec<f32>,
}

impl<'a> TopKAccumulator<'a> {
    /// Prepare the queries once; `k ≥ 1`, block sizes ≥ 1.
    pub fn new(
        distance: Distance,
        queries: &'a GaussianEmbeddings,
        k: usize,
        options: TopKOptions,
    ) -> Result<Self> {
        if k == 0 {
            return Err(CoreError::InvalidParameter {
                name: "k",
                value: 0.0,
                reason: "top-k needs k ≥ 1",
            });
        }
        if options.query_block == 0 || options.gallery_block == 0 {
            return Err(CoreError::InvalidParameter {
                name: "TopKOptions block size",
                value: 0.0,
                reason: "block sizes must be ≥ 1",
            });
        }
        Ok(Self {
            distance,
            queries: Prepared::new(distance, queries),
            dim: queries.dim(),
            k,
            options,
            heaps: (0..queries.len())
                .map(|_| std::collections::BinaryHeap::with_capacity(k + 1))
                .collect(),
            tile: Vec::new(),
        })
    }

    /// Add a block of gallery items whose first item has gallery index `offset`.
    pub fn add_block(&mut self, offset: usize, block: &GaussianEmbeddings) -> Result<()> {
        if block.dim() != self.dim {
            return Err(CoreError::Shape {
                what: "TopKAccumulator::add_block",
                detail: format!(
                    "gallery block has D = {}, queries have D = {}",
                    block.dim(),
                    self.dim
                ),
            });
        }
        let (n, m) = (self.queries.len(), block.len());
        if n == 0 || m == 0 {
            return Ok(());
        }
        let g = Prepared::new(self.distance, block);
        let qb = self.options.query_block.min(n);
        self.tile.resize(qb * m, 0.0);
        let k = self.k;
        let mut q0 = 0;
        while q0 < n {
            let q1 = (q0 + qb).min(n);
            let rows = q1 - q0;
            let tile = &mut self.tile[..rows * m];
            self.queries.range(q0..q1).distances_into(&g, tile, m);
            add_gallery_offset(tile, m, block.gallery_offset());
            self.heaps[q0..q1]
                .par_iter_mut()
                .zip(tile.par_chunks(m))
                .for_each(|(heap, row)| {
                    for (j, &d) in row.iter().enumerate() {
                        let c = Candidate {
                            dist: d,
                            index: offset + j,
                        };
                        push_candidate(heap, k, c);
                    }
                });
            q0 = q1;
        }
        Ok(())
    }

    /// The result so far, nearest first.
    pub fn finish(self) -> TopK {
        candidates_to_top_k(self.heaps.into_iter().map(sorted_candidates).collect())
    }
}

/// A gallery candidate, ordered by distance then index (a total order, NaN last).
#[derive(Debug, Clone, Copy)]
struct Candidate {
    dist: f32,
    index: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.index.cmp(&other.index))
    }
}

fn check_dims(what: &'static str, a: &GaussianEmbeddings, b: &GaussianEmbeddings) -> Result<()> {
    if a.dim() != b.dim() {
        return Err(CoreError::Shape {
            what,
            detail: format!("embedding dimensions differ: {} vs {}", a.dim(), b.dim()),
        });
    }
    Ok(())
}

/// Per-item quantities of a batch, prepared once for the chosen distance.
pub(crate) enum Prepared<'a> {
    Gemm(GemmPrepared<'a>),
    Fused(FusedPrepared<'a>),
}

/// Augmented vectors `x`, their squared norms, and the additive per-item term `c`
/// (borrowed where the caller's buffers serve as they are).
pub(crate) struct GemmPrepared<'a> {
    n: usize,
    cols: usize,
    x: Cow<'a, [f32]>,
    norm: Cow<'a, [f32]>,
    extra: Cow<'a, [f32]>,
}

/// The `(x, y)` quantities of [`Definition::prep`] and the per-item offsets.
pub(crate) struct FusedPrepared<'a> {
    distance: Distance,
    n: usize,
    dim: usize,
    x: Cow<'a, [f32]>,
    y: Cow<'a, [f32]>,
    off: Cow<'a, [f32]>,
    /// Smallest and largest `y`, to decide whether blocked products of `log_arg` stay
    /// inside the normal `f32` range.
    y_range: (f32, f32),
}

/// A view of a prepared batch restricted to a range of items.
struct PreparedRange<'a> {
    inner: &'a Prepared<'a>,
    range: std::ops::Range<usize>,
}

impl<'a> Prepared<'a> {
    pub(crate) fn new(distance: Distance, e: &'a GaussianEmbeddings) -> Self {
        let (n, d) = (e.len(), e.dim());
        let (mu, v) = (e.mean_slice(), e.log_var_slice());
        match distance {
            Distance::Csd => Prepared::Gemm(GemmPrepared {
                n,
                cols: d,
                x: Cow::Borrowed(mu),
                norm: Cow::Owned(row_sums(mu, d, |x| x * x)),
                extra: Cow::Owned(row_sums(v, d, f32::exp)),
            }),
            Distance::Wasserstein2 => {
                let mut x = Vec::with_capacity(n * 2 * d);
                for i in 0..n {
                    x.extend_from_slice(&mu[i * d..(i + 1) * d]);
                    x.extend(v[i * d..(i + 1) * d].iter().map(|&v| (0.5 * v).exp()));
                }
                let norm = row_sums(&x, 2 * d, |x| x * x);
                Prepared::Gemm(GemmPrepared {
                    n,
                    cols: 2 * d,
                    x: Cow::Owned(x),
                    norm: Cow::Owned(norm),
                    extra: Cow::Owned(vec![0.0; n]),
                })
            }
            _ => with_definition!(distance, D => Prepared::Fused(fused_prepare::<D>(distance, e))),
        }
    }

    fn len(&self) -> usize {
        match self {
            Prepared::Gemm(p) => p.n,
            Prepared::Fused(p) => p.n,
        }
    }

    fn range(&'a self, range: std::ops::Range<usize>) -> PreparedRange<'a> {
        PreparedRange { inner: self, range }
    }

    /// Fill `out` (rows = self.len(), row stride `stride`) with distances to `gallery`.
    fn distances_into(&'a self, gallery: &Prepared<'_>, out: &mut [f32], stride: usize) {
        self.range(0..self.len())
            .distances_into(gallery, out, stride)
    }
}

impl PreparedRange<'_> {
    fn distances_into(&self, gallery: &Prepared<'_>, out: &mut [f32], stride: usize) {
        match (self.inner, gallery) {
            (Prepared::Gemm(q), Prepared::Gemm(g)) => {
                let q = q.sub(self.range.clone());
                gemm_into(&q, g, out, stride)
            }
            (Prepared::Fused(q), Prepared::Fused(g)) => {
                with_definition!(q.distance, D => fused_into::<D>(q, self.range.clone(), g, out, stride))
            }
            _ => unreachable!("query and gallery are prepared for the same distance"),
        }
    }
}

impl GemmPrepared<'_> {
    fn sub(&self, r: std::ops::Range<usize>) -> GemmPrepared<'_> {
        GemmPrepared {
            n: r.len(),
            cols: self.cols,
            x: Cow::Borrowed(&self.x[r.start * self.cols..r.end * self.cols]),
            norm: Cow::Borrowed(&self.norm[r.clone()]),
            extra: Cow::Borrowed(&self.extra[r]),
        }
    }
}

impl<'a> GemmPrepared<'a> {
    fn parts(&self) -> Vec<Cow<'a, [f32]>> {
        vec![self.norm.clone(), self.extra.clone()]
    }
}

impl<'a> FusedPrepared<'a> {
    fn sub(&self, r: std::ops::Range<usize>) -> FusedPrepared<'_> {
        let d = self.dim;
        FusedPrepared {
            distance: self.distance,
            n: r.len(),
            dim: d,
            x: Cow::Borrowed(&self.x[r.start * d..r.end * d]),
            y: Cow::Borrowed(&self.y[r.start * d..r.end * d]),
            off: Cow::Borrowed(&self.off[r]),
            // The whole batch's range covers any part of it (it only chooses a code path).
            y_range: self.y_range,
        }
    }
}

/// How many `f32` values per item each stored part of a prepared gallery holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartWidth {
    /// One per item.
    One,
    /// `D` per item.
    Dim,
    /// `2D` per item.
    TwoDim,
}

/// The per-item quantities a gallery is searched with, beside its means, for `distance`:
/// their names and widths, in the order [`stored_parts`] returns them.
pub(crate) fn part_layout(distance: Distance) -> &'static [(&'static str, PartWidth)] {
    match distance {
        Distance::Csd => &[("sq_norm", PartWidth::One), ("var_sum", PartWidth::One)],
        Distance::Wasserstein2 => &[
            ("mean_std", PartWidth::TwoDim),
            ("sq_norm", PartWidth::One),
            ("offset", PartWidth::One),
        ],
        _ => &[("y", PartWidth::Dim), ("offset", PartWidth::One)],
    }
}

/// The prepared per-item quantities of `e` for `distance` (see [`part_layout`]), and the
/// range of the fused kernels' `y` values (`None` for GEMM distances). Storing these with
/// a gallery means a search never re-derives them (`exp(v)` and row sums of every item).
pub(crate) fn stored_parts(
    distance: Distance,
    e: &GaussianEmbeddings,
) -> (Vec<Vec<f32>>, Option<(f32, f32)>) {
    let owned = |parts: Vec<Cow<'_, [f32]>>| parts.into_iter().map(Cow::into_owned).collect();
    match Prepared::new(distance, e) {
        Prepared::Gemm(p) if distance == Distance::Csd => (owned(p.parts()), None),
        Prepared::Gemm(p) => {
            let mut parts = vec![p.x.clone()];
            parts.extend(p.parts());
            (owned(parts), None)
        }
        Prepared::Fused(p) => (owned(vec![p.y, p.off]), Some(p.y_range)),
    }
}

impl<'a> Prepared<'a> {
    /// A prepared gallery of `n` items from its means `[n, D]` and the parts of
    /// [`stored_parts`] (borrowed ones are not copied); `y_range` must cover the `y` part.
    pub(crate) fn from_parts(
        distance: Distance,
        n: usize,
        dim: usize,
        mean: Cow<'a, [f32]>,
        parts: Vec<Cow<'a, [f32]>>,
        y_range: Option<(f32, f32)>,
    ) -> Self {
        let mut parts = parts.into_iter();
        let mut take = || parts.next().expect("one stored part per part_layout entry");
        match distance {
            Distance::Csd => Prepared::Gemm(GemmPrepared {
                n,
                cols: dim,
                x: mean,
                norm: take(),
                extra: take(),
            }),
            Distance::Wasserstein2 => Prepared::Gemm(GemmPrepared {
                n,
                cols: 2 * dim,
                x: take(),
                norm: take(),
                extra: take(),
            }),
            _ => Prepared::Fused(FusedPrepared {
                distance,
                n,
                dim,
                x: mean,
                y: take(),
                off: take(),
                y_range: y_range.unwrap_or((f32::NEG_INFINITY, f32::INFINITY)),
            }),
        }
    }

    /// Items `r` (borrowed).
    fn sub(&self, r: std::ops::Range<usize>) -> Prepared<'_> {
        match self {
            Prepared::Gemm(p) => Prepared::Gemm(p.sub(r)),
            Prepared::Fused(p) => Prepared::Fused(p.sub(r)),
        }
    }
}

/// Per query, up to `k` `(distance, gallery index)` candidates, nearest first.
pub(crate) type Candidates = Vec<Vec<(f32, usize)>>;

/// Exact top-k of prepared queries against a prepared gallery, parallel over gallery
/// blocks (so a single query uses every core). A non-finite distance stops the search
/// with `Err(gallery index)`: for stored galleries it means a damaged file.
pub(crate) fn top_k_prepared(
    queries: &Prepared<'_>,
    gallery: &Prepared<'_>,
    gallery_offset: Option<&[f32]>,
    k: usize,
    options: &TopKOptions,
) -> std::result::Result<Candidates, usize> {
    let (n, m) = (queries.len(), gallery.len());
    let block = options.gallery_block.max(1);
    let qb = options.query_block.max(1).min(n.max(1));
    let empty = || vec![Vec::new(); n];
    (0..m.div_ceil(block))
        .into_par_iter()
        .map(|b| {
            let (g0, g1) = (b * block, ((b + 1) * block).min(m));
            let g = gallery.sub(g0..g1);
            let width = g1 - g0;
            let mut heaps: Vec<std::collections::BinaryHeap<Candidate>> = (0..n)
                .map(|_| std::collections::BinaryHeap::with_capacity(k + 1))
                .collect();
            let mut tile = vec![0.0f32; qb * width];
            let mut q0 = 0;
            while q0 < n {
                let q1 = (q0 + qb).min(n);
                let tile = &mut tile[..(q1 - q0) * width];
                queries.range(q0..q1).distances_into(&g, tile, width);
                add_gallery_offset(tile, width, gallery_offset.map(|o| &o[g0..g1]));
                for (heap, row) in heaps[q0..q1].iter_mut().zip(tile.chunks(width)) {
                    for (j, &dist) in row.iter().enumerate() {
                        if !dist.is_finite() {
                            return Err(g0 + j);
                        }
                        push_candidate(
                            heap,
                            k,
                            Candidate {
                                dist,
                                index: g0 + j,
                            },
                        );
                    }
                }
                q0 = q1;
            }
            Ok(heaps.into_iter().map(sorted_candidates).collect())
        })
        .try_reduce(empty, |a, b| Ok(merge_candidates(a, b, k)))
}

/// A heap's candidates as `(distance, index)`, nearest first.
fn sorted_candidates(heap: std::collections::BinaryHeap<Candidate>) -> Vec<(f32, usize)> {
    heap.into_sorted_vec()
        .into_iter()
        .map(|c| (c.dist, c.index))
        .collect()
}

/// Keep `c` if it is among the `k` best seen.
fn push_candidate(heap: &mut std::collections::BinaryHeap<Candidate>, k: usize, c: Candidate) {
    if heap.len() < k {
        heap.push(c);
    } else if c < *heap.peek().expect("heap holds k ≥ 1 items") {
        heap.pop();
        heap.push(c);
    }
}

/// Per query, the `k` best of two sorted candidate lists, by distance then index.
pub(crate) fn merge_candidates(a: Candidates, b: Candidates, k: usize) -> Candidates {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| {
            let mut all = x;
            all.extend(y);
            all.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)));
            all.truncate(k);
            all
        })
        .collect()
}

/// Candidates as a [`TopK`] (rows cut to the shortest list).
pub(crate) fn candidates_to_top_k(best: Candidates) -> TopK {
    let n = best.len();
    let kk = best.iter().map(Vec::len).min().unwrap_or(0);
    let mut indices = Array2::<usize>::zeros((n, kk));
    let mut distances = Array2::<f32>::zeros((n, kk));
    for (i, row) in best.into_iter().enumerate() {
        for (r, (d, j)) in row.into_iter().take(kk).enumerate() {
            indices[[i, r]] = j;
            distances[[i, r]] = d;
        }
    }
    TopK { indices, distances }
}

/// `Σ_k f(row_k)` for each row of a row-major buffer, rows in parallel.
fn row_sums(values: &[f32], cols: usize, f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    if cols == 0 {
        return vec![0.0; 0];
    }
    values
        .par_chunks(cols)
        .map(|r| r.iter().map(|&x| f(x)).sum())
        .collect()
}

/// `out[i, j] = max(‖x_i‖² + ‖y_j‖² − 2 x_i·y_j, 0) + c_i + c_j`.
fn gemm_into(q: &GemmPrepared<'_>, g: &GemmPrepared<'_>, out: &mut [f32], stride: usize) {
    let (n, m, k) = (q.n, g.n, q.cols);
    assert!(out.len() >= (n - 1) * stride + m, "output tile too small");
    // SAFETY: `out` holds n rows of `stride ≥ m` floats (checked above); `q.x` is n×k and
    // `g.x` is m×k, both row-major and alive for the call; gemm reads and writes only
    // inside these extents.
    unsafe {
        gemm::gemm(
            n,
            m,
            k,
            out.as_mut_ptr(),
            1,
            stride as isize,
            false,
            q.x.as_ptr(),
            1,
            k as isize,
            g.x.as_ptr(),
            k as isize,
            1,
            0.0f32,
            -2.0f32,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
    out.par_chunks_mut(stride)
        .take(n)
        .enumerate()
        .for_each(|(i, row)| {
            let (nq, cq) = (q.norm[i], q.extra[i]);
            for ((o, &ng), &cg) in row[..m].iter_mut().zip(g.norm.iter()).zip(g.extra.iter()) {
                *o = (*o + nq + ng).max(0.0) + cq + cg;
            }
        });
}

fn fused_prepare<D: Definition>(distance: Distance, e: &GaussianEmbeddings) -> FusedPrepared<'_> {
    let (n, dim) = (e.len(), e.dim());
    let (mu, v) = (e.mean_slice(), e.log_var_slice());
    let mut y = vec![0.0f32; n * dim];
    y.par_chunks_mut(dim).enumerate().for_each(|(i, yr)| {
        for k in 0..dim {
            let (x, y) = D::prep(mu[i * dim + k], v[i * dim + k]);
            debug_assert!(x == mu[i * dim + k], "Definition::prep keeps the mean as x");
            yr[k] = y;
        }
    });
    let off = (0..n)
        .map(|i| D::item_offset(&mu[i * dim..(i + 1) * dim], &v[i * dim..(i + 1) * dim]))
        .collect();
    FusedPrepared {
        distance,
        n,
        dim,
        x: Cow::Borrowed(mu),
        y_range: value_range(&y),
        y: Cow::Owned(y),
        off: Cow::Owned(off),
    }
}

/// Smallest and largest value (`(∞, −∞)` when empty).
fn value_range(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

const LANES: usize = 16;
/// Query rows per parallel task.
const ROWS_PER_TASK: usize = 8;
/// Gallery items per cache block (256 items × D = 512 × 8 bytes = 1 MiB).
const GALLERY_BLOCK: usize = 256;

fn fused_into<D: Definition>(
    q: &FusedPrepared<'_>,
    rows: std::ops::Range<usize>,
    g: &FusedPrepared<'_>,
    out: &mut [f32],
    stride: usize,
) {
    let start = rows.start;
    out.par_chunks_mut(stride * ROWS_PER_TASK)
        .take(rows.len().div_ceil(ROWS_PER_TASK))
        .enumerate()
        .for_each(|(t, chunk)| {
            let r0 = start + t * ROWS_PER_TASK;
            let r1 = (r0 + ROWS_PER_TASK).min(rows.end);
            fused_task::<D>(q, r0..r1, g, chunk, stride);
        });
}

/// Picks the widest instruction set this CPU has, once per task.
fn fused_task<D: Definition>(
    q: &FusedPrepared<'_>,
    rows: std::ops::Range<usize>,
    g: &FusedPrepared<'_>,
    out: &mut [f32],
    stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { fused_task_avx512::<D>(q, rows, g, out, stride) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { fused_task_avx2::<D>(q, rows, g, out, stride) };
        }
    }
    fused_task_body::<D>(q, rows, g, out, stride)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl")]
unsafe fn fused_task_avx512<D: Definition>(
    q: &FusedPrepared<'_>,
    rows: std::ops::Range<usize>,
    g: &FusedPrepared<'_>,
    out: &mut [f32],
    stride: usize,
) {
    fused_task_body::<D>(q, rows, g, out, stride)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fused_task_avx2<D: Definition>(
    q: &FusedPrepared<'_>,
    rows: std::ops::Range<usize>,
    g: &FusedPrepared<'_>,
    out: &mut [f32],
    stride: usize,
) {
    fused_task_body::<D>(q, rows, g, out, stride)
}

/// Dimensions per lane whose `log_arg` values are multiplied before one `ln`.
const PRODUCT_RUN: usize = 8;
/// `y` values inside `[e^-9, e^9]` keep a product of `PRODUCT_RUN` sums `y1 + y2 (+ε)`
/// inside `[1e-29, 5e33]`, well within the normal `f32` range. Heads clamp `v` to ±6.
const PRODUCT_SAFE: (f32, f32) = (1.234_098e-4, 8_103.084);

/// The blocked loop. `#[inline(always)]` so that each `target_feature` wrapper above gets
/// its own copy compiled for its instruction set.
#[inline(always)]
fn fused_task_body<D: Definition>(
    q: &FusedPrepared<'_>,
    rows: std::ops::Range<usize>,
    g: &FusedPrepared<'_>,
    out: &mut [f32],
    stride: usize,
) {
    let safe =
        |p: &FusedPrepared<'_>| p.y_range.0 >= PRODUCT_SAFE.0 && p.y_range.1 <= PRODUCT_SAFE.1;
    let split = D::LOG_SPLIT && safe(q) && safe(g);
    let d = q.dim;
    let full = d - d % LANES;
    let m = g.n;
    let mut j0 = 0;
    while j0 < m {
        let j1 = (j0 + GALLERY_BLOCK).min(m);
        for (r, i) in rows.clone().enumerate() {
            let qx = &q.x[i * d..(i + 1) * d];
            let qy = &q.y[i * d..(i + 1) * d];
            let block = &mut out[r * stride + j0..r * stride + j1];
            for (o, j) in block.iter_mut().zip(j0..j1) {
                let gx = &g.x[j * d..(j + 1) * d];
                let gy = &g.y[j * d..(j + 1) * d];
                let mut s = if split {
                    split_sum::<D>(qx, qy, gx, gy, full)
                } else {
                    term_sum::<D>(qx, qy, gx, gy, full)
                };
                for c in full..d {
                    s += D::term(qx[c], qy[c], gx[c], gy[c]);
                }
                *o = D::finish(s, q.off[i], g.off[j], d);
            }
        }
        j0 = j1;
    }
}

/// `Σ term` over the first `full` dimensions (a multiple of `LANES`), in `LANES` partial
/// sums. (Blocking several gallery items together made the compiler spill; one pair at a
/// time vectorises cleanly, and the query row stays in L1.)
#[inline(always)]
fn term_sum<D: Definition>(qx: &[f32], qy: &[f32], gx: &[f32], gy: &[f32], full: usize) -> f32 {
    let mut acc = [0.0f32; LANES];
    for c in (0..full).step_by(LANES) {
        let (a, b, x, y) = (chunk(qx, c), chunk(qy, c), chunk(gx, c), chunk(gy, c));
        for l in 0..LANES {
            acc[l] += D::term(a[l], b[l], x[l], y[l]);
        }
    }
    acc.iter().sum()
}

/// As [`term_sum`] for `term = quad + ln(log_arg)`: the logarithms of `PRODUCT_RUN`
/// consecutive dimensions of a lane are taken once, of their product.
#[inline(always)]
fn split_sum<D: Definition>(qx: &[f32], qy: &[f32], gx: &[f32], gy: &[f32], full: usize) -> f32 {
    use crate::real::Real;
    let mut acc = [0.0f32; LANES];
    let mut prod = [1.0f32; LANES];
    let mut run = 0;
    for c in (0..full).step_by(LANES) {
        let (a, b, x, y) = (chunk(qx, c), chunk(qy, c), chunk(gx, c), chunk(gy, c));
        for l in 0..LANES {
            acc[l] += D::quad(a[l], b[l], x[l], y[l]);
            prod[l] *= D::log_arg(b[l], y[l]);
        }
        run += 1;
        if run == PRODUCT_RUN {
            for l in 0..LANES {
                acc[l] += prod[l].ln_pos();
                prod[l] = 1.0;
            }
            run = 0;
        }
    }
    if run > 0 {
        for l in 0..LANES {
            acc[l] += prod[l].ln_pos();
        }
    }
    acc.iter().sum()
}

#[inline(always)]
fn chunk(v: &[f32], c: usize) -> &[f32; LANES] {
    v[c..c + LANES].try_into().expect("LANES-wide chunk")
}
