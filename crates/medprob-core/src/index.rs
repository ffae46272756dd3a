//! A gallery of Gaussian embeddings on disk: encode once, memory-map on load, answer exact
//! top-k queries in bounded memory.
//!
//! An index is a folder:
//!
//! * `gallery.safetensors`: one `F32` tensor `gaussian` of shape `[N, 2, D]` (each row
//!   its mean, then its log-variance) and, in the header's `__metadata__`, the
//!   [`IndexInfo`] as JSON. Any safetensors reader opens it (`safetensors.safe_open` in
//!   Python).
//! * `ids.txt`: the `N` item ids, one per line, in row order.
//! * `index.json`: the [`IndexInfo`] again, for people.
//!
//! The [`IndexInfo`] may carry a calibrated match probability and an answer threshold;
//! [`GaussianIndex::answer`] then returns, per query, the top-k with probabilities, the
//! query's uncertainty and the answer/abstain decision.
//!
//! [`GaussianIndexWriter`] streams rows to disk (the gallery never has to be in memory at
//! once) into a temporary folder that is renamed into place only when complete, so a
//! reader never sees half an index and an existing folder is never overwritten.
//! [`GaussianIndex::open`] maps the file without reading it; [`GaussianIndex::search`]
//! copies one block of rows at a time out of the map, so its working memory is a few
//! blocks per thread whatever `N` is, and splits the gallery across threads, so even a
//! single query uses every core. The search is exact (every item is compared, nothing is
//! approximated) with the tie-breaking of [`kernels::top_k`] (lower index first). MLS
//! distances are bit-identical to an in-memory search; CSD's come from a GEMM whose
//! summation order depends on the block shape, so they may differ in the last bits.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use ndarray::Array2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::distance::Distance;
use crate::embedding::GaussianEmbeddings;
use crate::error::{CoreError, Result};
use crate::kernels::{self, TopK, TopKOptions};
use crate::match_prob::MatchProbability;

/// The safetensors file of an index folder.
pub const EMBEDDINGS_FILE: &str = "gallery.safetensors";
/// The ids file of an index folder.
pub const IDS_FILE: &str = "ids.txt";
/// The human-readable description of an index folder.
pub const INFO_FILE: &str = "index.json";
/// The `format` entry of the safetensors metadata.
pub const FORMAT: &str = "medprob-gaussian-index/1";
const TENSOR: &str = "gaussian";

/// What an index holds and how to search it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexInfo {
    /// The distance the gallery is ranked by (the one its model was trained with).
    pub distance: Distance,
    /// Embedding dimension `D`.
    pub dim: usize,
    /// Number of items `N`.
    pub len: usize,
    /// Free text: which model encoded what (for people and for provenance checks).
    pub description: String,
    /// `p(match | distance)`, calibrated on held-out data (e.g. Platt scaling on the
    /// validation split); without it answers carry distances only.
    #[serde(default)]
    pub match_probability: Option<MatchProbability>,
    /// Answer a query only when its top-1 match probability is at least this (selective
    /// retrieval); `None` answers every query.
    #[serde(default)]
    pub answer_threshold: Option<f64>,
    /// What the threshold guarantees, in words (e.g. the risk level it was chosen for).
    #[serde(default)]
    pub guarantee: Option<String>,
}

/// One retrieved item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexHit {
    /// Its id.
    pub id: String,
    /// Its row in the index.
    pub row: usize,
    /// Distance to the query.
    pub distance: f32,
    /// Calibrated match probability, when the index has a calibration.
    pub probability: Option<f64>,
}

/// The answer to one query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexAnswer {
    /// The nearest items, nearest first.
    pub hits: Vec<IndexHit>,
    /// The query's total variance `Σ σ²` (its uncertainty).
    pub uncertainty: f64,
    /// Whether the answer rule answers (`false`: abstain).
    pub answered: bool,
}

fn index_error(path: &Path, reason: impl Into<String>) -> CoreError {
    CoreError::Index {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Streams a gallery into a new index folder.
pub struct GaussianIndexWriter {
    dir: PathBuf,
    tmp: PathBuf,
    data: BufWriter<File>,
    ids: BufWriter<File>,
    seen: HashSet<String>,
    info: IndexInfo,
    written: usize,
    finished: bool,
}

impl GaussianIndexWriter {
    /// Start an index of `info.len` items of dimension `info.dim` at `dir`, which must not
    /// exist yet.
    pub fn create(dir: &Path, info: IndexInfo) -> Result<Self> {
        if dir.exists() {
            return Err(index_error(
                dir,
                "already exists; an index is never overwritten (choose another folder or remove it)",
            ));
        }
        if info.dim == 0 {
            return Err(index_error(dir, "an index needs D ≥ 1"));
        }
        if info.answer_threshold.is_some_and(|t| !t.is_finite()) {
            return Err(index_error(
                dir,
                "answer_threshold must be finite (use f64::MAX to answer nothing)",
            ));
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| index_error(dir, "not a folder name"))?;
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let io = |p: &Path, e: std::io::Error| index_error(p, e.to_string());
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        let open = |file: &str| -> Result<BufWriter<File>> {
            let p = tmp.join(file);
            Ok(BufWriter::with_capacity(
                1 << 20,
                File::create(&p).map_err(|e| io(&p, e))?,
            ))
        };
        let mut data = open(EMBEDDINGS_FILE)?;
        let ids = open(IDS_FILE)?;
        let header = header_bytes(&info);
        data.write_all(&header)
            .map_err(|e| io(&tmp.join(EMBEDDINGS_FILE), e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tmp,
            data,
            ids,
            seen: HashSet::new(),
            info,
            written: 0,
            finished: false,
        })
    }

    /// Append `block` with its ids (unique, non-empty, without line breaks).
    pub fn push<S: AsRef<str>>(&mut self, block: &GaussianEmbeddings, ids: &[S]) -> Result<()> {
        let path = self.tmp.join(EMBEDDINGS_FILE);
        if block.dim() != self.info.dim {
            return Err(index_error(
                &self.dir,
                format!(
                    "block has D = {}, the index D = {}",
                    block.dim(),
                    self.info.dim
                ),
            ));
        }
        if ids.len() != block.len() {
            return Err(index_error(
                &self.dir,
                format!("{} ids for {} embeddings", ids.len(), block.len()),
            ));
        }
        if self.written + block.len() > self.info.len {
            return Err(index_error(
                &self.dir,
                format!(
                    "more than the {} items the index was created for",
                    self.info.len
                ),
            ));
        }
        for id in ids {
            let id = id.as_ref();
            if id.is_empty() || id.contains(['\n', '\r']) {
                return Err(index_error(
                    &self.dir,
                    format!(
                        "item {}: id {id:?} is empty or has a line break",
                        self.written
                    ),
                ));
            }
            if !self.seen.insert(id.to_string()) {
                return Err(index_error(&self.dir, format!("id {id:?} appears twice")));
            }
            writeln!(self.ids, "{id}")
                .map_err(|e| index_error(&self.tmp.join(IDS_FILE), e.to_string()))?;
        }
        let d = self.info.dim;
        let mut row = Vec::with_capacity(2 * d * 4);
        for i in 0..block.len() {
            let (m, v) = block.row(i);
            row.clear();
            for x in m.iter().chain(v) {
                row.extend_from_slice(&x.to_le_bytes());
            }
            self.data
                .write_all(&row)
                .map_err(|e| index_error(&path, e.to_string()))?;
        }
        self.written += block.len();
        Ok(())
    }

    /// Flush, sync and move the folder into place; every promised item must have been
    /// pushed.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.written != self.info.len {
            return Err(index_error(
                &self.dir,
                format!(
                    "{} of the {} items were written",
                    self.written, self.info.len
                ),
            ));
        }
        let sync = |w: &mut BufWriter<File>, p: PathBuf| -> Result<()> {
            w.flush()
                .and_then(|()| w.get_ref().sync_all())
                .map_err(|e| index_error(&p, e.to_string()))
        };
        sync(&mut self.data, self.tmp.join(EMBEDDINGS_FILE))?;
        sync(&mut self.ids, self.tmp.join(IDS_FILE))?;
        let info = serde_json::to_vec_pretty(&self.info).expect("IndexInfo serialises");
        crate::fs::write_atomic(&self.tmp.join(INFO_FILE), &info)
            .map_err(|e| index_error(&self.tmp.join(INFO_FILE), e.to_string()))?;
        if self.dir.exists() {
            return Err(index_error(
                &self.dir,
                "appeared while the index was being written; it was left untouched",
            ));
        }
        std::fs::rename(&self.tmp, &self.dir).map_err(|e| index_error(&self.dir, e.to_string()))?;
        self.finished = true;
        Ok(self.dir.clone())
    }
}

impl Drop for GaussianIndexWriter {
    /// An index that was not finished leaves nothing behind.
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// The safetensors header for `info`, padded so the data starts 8-byte aligned.
fn header_bytes(info: &IndexInfo) -> Vec<u8> {
    let bytes = info.len * 2 * info.dim * 4;
    let header = serde_json::json!({
        "__metadata__": {
            "format": FORMAT,
            "info": serde_json::to_string(info).expect("IndexInfo serialises"),
        },
        TENSOR: {
            "dtype": "F32",
            "shape": [info.len, 2, info.dim],
            "data_offsets": [0, bytes],
        },
    });
    let mut json = serde_json::to_vec(&header).expect("header serialises");
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

/// A memory-mapped index.
pub struct GaussianIndex {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Byte offset of row 0 in the map.
    start: usize,
    info: IndexInfo,
    ids: Vec<String>,
}

impl GaussianIndex {
    /// Map the index in `dir` and check that its header, size and ids agree.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(EMBEDDINGS_FILE);
        let file = File::open(&path).map_err(|e| index_error(&path, e.to_string()))?;
        // SAFETY: a read-only map; the index format is write-once (a new index is a new
        // folder), so the file does not change while it is mapped.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| index_error(&path, e.to_string()))?;
        let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| index_error(&path, format!("not a safetensors file: {e}")))?;
        let extra = meta.metadata().as_ref();
        let format = extra.and_then(|m| m.get("format"));
        if format.map(String::as_str) != Some(FORMAT) {
            return Err(index_error(
                &path,
                format!("metadata format is {format:?}, expected {FORMAT:?} (not a medprob index)"),
            ));
        }
        let info: IndexInfo = extra
            .and_then(|m| m.get("info"))
            .ok_or_else(|| index_error(&path, "metadata has no info"))
            .and_then(|s| {
                serde_json::from_str(s)
                    .map_err(|e| index_error(&path, format!("metadata info: {e}")))
            })?;
        let tensor = meta
            .info(TENSOR)
            .ok_or_else(|| index_error(&path, format!("no tensor {TENSOR:?}")))?;
        if tensor.dtype != safetensors::Dtype::F32 || tensor.shape != [info.len, 2, info.dim] {
            return Err(index_error(
                &path,
                format!(
                    "tensor {TENSOR} is {:?} {:?}, expected F32 [{}, 2, {}]",
                    tensor.dtype, tensor.shape, info.len, info.dim
                ),
            ));
        }
        let start = 8 + header_len + tensor.data_offsets.0;
        let ids_path = dir.join(IDS_FILE);
        let ids_file = File::open(&ids_path).map_err(|e| index_error(&ids_path, e.to_string()))?;
        let ids: Vec<String> = BufReader::new(ids_file)
            .lines()
            .collect::<std::io::Result<_>>()
            .map_err(|e| index_error(&ids_path, e.to_string()))?;
        if ids.len() != info.len {
            return Err(index_error(
                &ids_path,
                format!("{} ids for {} embeddings", ids.len(), info.len),
            ));
        }
        Ok(Self {
            path,
            map,
            start,
            info,
            ids,
        })
    }

    /// What the index holds.
    pub fn info(&self) -> &IndexInfo {
        &self.info
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.info.len
    }

    /// Whether the index has no items.
    pub fn is_empty(&self) -> bool {
        self.info.len == 0
    }

    /// The item ids in row order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Rows `range` as embeddings (copied out of the map and checked: a damaged file is an
    /// error naming the file and row, not a wrong answer).
    pub fn rows(&self, range: std::ops::Range<usize>) -> Result<GaussianEmbeddings> {
        let d = self.info.dim;
        if range.end > self.info.len || range.start > range.end {
            return Err(index_error(
                &self.path,
                format!("rows {range:?} of {}", self.info.len),
            ));
        }
        let n = range.len();
        let bytes = &self.map[self.start + range.start * 8 * d..self.start + range.end * 8 * d];
        let mut mean = Array2::<f32>::zeros((n, d));
        let mut log_var = Array2::<f32>::zeros((n, d));
        let (ms, vs) = (
            mean.as_slice_mut().expect("standard layout"),
            log_var.as_slice_mut().expect("standard layout"),
        );
        for (i, row) in bytes.chunks_exact(8 * d).enumerate() {
            let (m, v) = row.split_at(4 * d);
            let decode = |src: &[u8], dst: &mut [f32]| {
                for (x, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                    *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            };
            decode(m, &mut ms[i * d..(i + 1) * d]);
            decode(v, &mut vs[i * d..(i + 1) * d]);
        }
        GaussianEmbeddings::new(mean, log_var)
            .map_err(|e| index_error(&self.path, format!("rows from {}: {e}", range.start)))
    }

    /// The `k` nearest items of every query under the index's distance, nearest first.
    ///
    /// The gallery is read in blocks of `options.gallery_block` rows, blocks are searched
    /// on all threads, and each thread keeps only `k` candidates per query, so memory is
    /// about `threads × (block + queries × k)` whatever the gallery size.
    pub fn search(
        &self,
        queries: &GaussianEmbeddings,
        k: usize,
        options: &TopKOptions,
    ) -> Result<TopK> {
        if queries.dim() != self.info.dim {
            return Err(index_error(
                &self.path,
                format!(
                    "queries have D = {}, the index D = {}",
                    queries.dim(),
                    self.info.dim
                ),
            ));
        }
        if k == 0 || options.gallery_block == 0 {
            return Err(CoreError::InvalidParameter {
                name: "k / gallery_block",
                value: 0.0,
                reason: "must be ≥ 1",
            });
        }
        let n = queries.len();
        let block = options.gallery_block;
        let blocks = self.info.len.div_ceil(block);
        let empty = || vec![Vec::new(); n];
        let best: Vec<Vec<(f32, usize)>> = (0..blocks)
            .into_par_iter()
            .map(|b| -> Result<Vec<Vec<(f32, usize)>>> {
                let start = b * block;
                let rows = self.rows(start..(start + block).min(self.info.len))?;
                let top = kernels::top_k(self.info.distance, queries, &rows, k, options)?;
                Ok(top
                    .indices
                    .outer_iter()
                    .zip(top.distances.outer_iter())
                    .map(|(ix, ds)| ds.iter().zip(ix).map(|(&d, &j)| (d, start + j)).collect())
                    .collect())
            })
            .try_reduce(empty, |a, b| Ok(merge(a, b, k)))?;
        let kk = best.iter().map(Vec::len).min().unwrap_or(0);
        let mut indices = Array2::<usize>::zeros((n, kk));
        let mut distances = Array2::<f32>::zeros((n, kk));
        for (i, row) in best.into_iter().enumerate() {
            for (r, (d, j)) in row.into_iter().take(kk).enumerate() {
                indices[[i, r]] = j;
                distances[[i, r]] = d;
            }
        }
        Ok(TopK { indices, distances })
    }
}

impl GaussianIndex {
    /// Answer each query: its `k` nearest items with their match probabilities, its
    /// uncertainty, and whether the index's answer rule answers (top-1 probability at
    /// least [`IndexInfo::answer_threshold`]; always, without a threshold).
    pub fn answer(
        &self,
        queries: &GaussianEmbeddings,
        k: usize,
        options: &TopKOptions,
    ) -> Result<Vec<IndexAnswer>> {
        let top = self.search(queries, k, options)?;
        let uncertainty = queries.uncertainty();
        let calibration = self.info.match_probability;
        Ok((0..queries.len())
            .map(|i| {
                let hits: Vec<IndexHit> = top
                    .indices
                    .row(i)
                    .iter()
                    .zip(top.distances.row(i))
                    .map(|(&row, &distance)| IndexHit {
                        id: self.ids[row].clone(),
                        row,
                        distance,
                        probability: calibration.map(|c| c.probability(distance as f64)),
                    })
                    .collect();
                let top1 = hits.first().and_then(|h| h.probability);
                let answered = match (self.info.answer_threshold, top1) {
                    (None, _) => true,
                    (Some(t), Some(p)) => p >= t,
                    (Some(_), None) => false,
                };
                IndexAnswer {
                    hits,
                    uncertainty: uncertainty[i].total_variance,
                    answered,
                }
            })
            .collect())
    }
}

/// Per query, the `k` best of two sorted candidate lists, ordered by distance then index.
fn merge(a: Vec<Vec<(f32, usize)>>, b: Vec<Vec<(f32, usize)>>, k: usize) -> Vec<Vec<(f32, usize)>> {
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
