//! A gallery of Gaussian embeddings on disk: encode once, memory-map on load, answer exact
//! top-k queries in bounded memory.
//!
//! An index is a folder:
//!
//! * `gallery.safetensors`: `F32` tensors `mean` and `log_var`, each `[N, D]`, then the
//!   per-item quantities the index's distance is searched with, prepared once when the
//!   index is written (`search.*`: for CSD `‖μ‖²` and `Σ σ²` per item; for MLS and the
//!   other fused distances the per-dimension `y` (MLS: `max(σ², ε)`) and a per-item
//!   offset). The header's `__metadata__` holds the [`IndexInfo`] as JSON. Any safetensors
//!   reader opens it (`safetensors.safe_open` in Python).
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
//! [`GaussianIndex::open`] maps the file without reading it. [`GaussianIndex::search`]
//! reads the means and the prepared quantities straight from the map (no copy, no
//! per-query `exp`), splits the gallery into blocks searched on all threads, so even a
//! single query uses every core, and keeps only `k` candidates per query and block. The
//! search is exact (every item is compared, nothing is approximated) with the
//! tie-breaking of [`kernels::top_k`] (lower index first). MLS distances are bit-identical
//! to an in-memory search; CSD's come from a GEMM whose summation order depends on the
//! block shape, so they may differ in the last bits.
//!
//! A damaged file cannot give a silently wrong answer from the values a search reads: a
//! non-finite distance stops the search with an error naming the row.
//! [`GaussianIndex::verify`] reads every row and checks that the stored quantities are
//! the ones its means and log-variances give.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::distance::Distance;
use crate::embedding::GaussianEmbeddings;
use crate::error::{CoreError, Result};
use crate::kernels::{self, PartWidth, Prepared, TopK, TopKOptions};
use crate::match_prob::MatchProbability;

/// The safetensors file of an index folder.
pub const EMBEDDINGS_FILE: &str = "gallery.safetensors";
/// The ids file of an index folder.
pub const IDS_FILE: &str = "ids.txt";
/// The human-readable description of an index folder.
pub const INFO_FILE: &str = "index.json";
/// The `format` entry of the safetensors metadata.
pub const FORMAT: &str = "medprob-gaussian-index/5";
/// The metadata `format` of the fourth layout: the fifth's, whose match probability reads
/// no uncertainty (read as it is: zero weights are what it was fitted with). The fifth
/// exists so that an older medprob, which would ignore the uncertainty weights, refuses a
/// newer index instead of answering with the wrong probabilities.
const FORMAT_V4: &str = "medprob-gaussian-index/4";
/// The metadata `format` of the third layout: the fourth's, without gallery offsets (read
/// as an index whose `gallery_offset` is off).
const FORMAT_V3: &str = "medprob-gaussian-index/3";
/// The per-item gallery offsets (a hub correction), when the index has them.
const OFFSET: &str = "search.gallery_offset";
/// The metadata `format` of the first layout (one `[N, 2, D]` tensor, nothing prepared).
const FORMAT_V1: &str = "medprob-gaussian-index/1";
/// The metadata `format` of the second layout: the same tensors, but a match probability
/// fitted to "is this the query's own study" and an answer threshold with `f64::MAX` for
/// "never answer".
const FORMAT_V2: &str = "medprob-gaussian-index/2";
/// The range of the fused kernels' `y` values, `[min, max]`, written when the index is
/// finished.
const Y_RANGE: &str = "search.y_range";
/// Rows per block when [`GaussianIndex::verify`] reads the whole file.
const VERIFY_BLOCK: usize = 4096;

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
    /// When a query is answered rather than abstained on (selective retrieval).
    #[serde(default)]
    pub answer_rule: AnswerRule,
    /// What the match probability and the answer rule count as a match (e.g. "the same
    /// positive label set (ζ = 0)" or "the query's own study").
    #[serde(default)]
    pub relevance: Option<String>,
    /// What the threshold guarantees, in words (e.g. the risk level it was chosen for).
    #[serde(default)]
    pub guarantee: Option<String>,
    /// The items carry gallery offsets (a retrieval-time hub correction, see
    /// [`GaussianEmbeddings::with_gallery_offset`]), stored and added to every distance as
    /// the in-memory kernels add them. Every pushed block must then carry them.
    #[serde(default)]
    pub gallery_offset: bool,
}

/// When an index answers a query.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum AnswerRule {
    /// Every query.
    #[default]
    Always,
    /// No query: no threshold certified the requested risk.
    Never,
    /// Queries whose top-1 match probability is at least `threshold`.
    AtLeast { threshold: f64 },
}

impl AnswerRule {
    /// Whether a query whose top-1 probability is `top1` (`None`: the index has no
    /// probability) is answered.
    pub fn answers(&self, top1: Option<f64>) -> bool {
        match (self, top1) {
            (Self::Always, _) => true,
            (Self::Never, _) => false,
            (Self::AtLeast { threshold }, Some(p)) => p >= *threshold,
            (Self::AtLeast { .. }, None) => false,
        }
    }

    /// The threshold, when there is one.
    pub fn threshold(&self) -> Option<f64> {
        match self {
            Self::AtLeast { threshold } => Some(*threshold),
            _ => None,
        }
    }
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

/// One tensor of the file: its name, shape, and byte range inside the data section.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    shape: Vec<usize>,
    /// Byte offset from the start of the data section.
    start: usize,
    /// `f32` values per item (the whole tensor for [`Y_RANGE`]).
    width: usize,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * 4
    }
}

/// The tensors of an index with `info`, in file order: `mean`, `log_var`, the distance's
/// prepared parts (`search.*`) and, for the fused distances, [`Y_RANGE`].
fn file_layout(info: &IndexInfo) -> Vec<Entry> {
    let (n, d) = (info.len, info.dim);
    let mut entries: Vec<Entry> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, width: usize| {
        let start = entries.last().map_or(0, |e| e.start + e.bytes());
        entries.push(Entry {
            name,
            shape,
            start,
            width,
        });
    };
    add("mean".into(), vec![n, d], d);
    add("log_var".into(), vec![n, d], d);
    let parts = kernels::part_layout(info.distance);
    for &(name, width) in parts {
        let (shape, width) = match width {
            PartWidth::One => (vec![n], 1),
            PartWidth::Dim => (vec![n, d], d),
            PartWidth::TwoDim => (vec![n, 2 * d], 2 * d),
        };
        add(format!("search.{name}"), shape, width);
    }
    if parts.iter().any(|&(name, _)| name == "y") {
        add(Y_RANGE.into(), vec![2], 2);
    }
    if info.gallery_offset {
        add(OFFSET.into(), vec![n], 1);
    }
    entries
}

/// `values` as little-endian bytes.
fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Streams a gallery into a new index folder.
pub struct GaussianIndexWriter {
    dir: PathBuf,
    tmp: PathBuf,
    data: File,
    /// Byte offset of the data section in the file.
    data_start: u64,
    layout: Vec<Entry>,
    ids: BufWriter<File>,
    seen: HashSet<String>,
    info: IndexInfo,
    written: usize,
    /// Smallest and largest `y` so far (fused distances).
    y_range: (f32, f32),
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
        if info.answer_rule.threshold().is_some_and(|t| !t.is_finite()) {
            return Err(index_error(
                dir,
                "the answer threshold must be finite (AnswerRule::Never answers nothing)",
            ));
        }
        if info.answer_rule.threshold().is_some() && info.match_probability.is_none() {
            return Err(index_error(
                dir,
                "an answer threshold needs a match probability to compare with",
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
        let data_path = tmp.join(EMBEDDINGS_FILE);
        let mut data = File::create(&data_path).map_err(|e| io(&data_path, e))?;
        let layout = file_layout(&info);
        let header = header_bytes(&info, &layout);
        let total = layout.last().map_or(0, |e| e.start + e.bytes());
        data.write_all(&header)
            .and_then(|()| data.set_len((header.len() + total) as u64))
            .map_err(|e| io(&data_path, e))?;
        let ids_path = tmp.join(IDS_FILE);
        let ids = BufWriter::with_capacity(
            1 << 20,
            File::create(&ids_path).map_err(|e| io(&ids_path, e))?,
        );
        Ok(Self {
            dir: dir.to_path_buf(),
            tmp,
            data,
            data_start: header.len() as u64,
            layout,
            ids,
            seen: HashSet::new(),
            info,
            written: 0,
            y_range: (f32::INFINITY, f32::NEG_INFINITY),
            finished: false,
        })
    }

    /// Write `values` at byte `offset` of tensor `entry`.
    fn write_at(&mut self, entry: usize, offset: usize, values: &[f32]) -> Result<()> {
        let pos = self.data_start + (self.layout[entry].start + offset) as u64;
        self.data
            .seek(SeekFrom::Start(pos))
            .and_then(|_| self.data.write_all(&le_bytes(values)))
            .map_err(|e| index_error(&self.tmp.join(EMBEDDINGS_FILE), e.to_string()))
    }

    /// Append `block` with its ids (unique, non-empty, without line breaks).
    pub fn push<S: AsRef<str>>(&mut self, block: &GaussianEmbeddings, ids: &[S]) -> Result<()> {
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
        if block.gallery_offset().is_some() != self.info.gallery_offset {
            return Err(index_error(
                &self.dir,
                if self.info.gallery_offset {
                    "the index stores gallery offsets (a hub correction) but the block has none"
                        .to_string()
                } else {
                    "the block carries gallery offsets (a hub correction) but the index was                      created without them (IndexInfo::gallery_offset)"
                        .to_string()
                },
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
        let (parts, y_range) = kernels::stored_parts(self.info.distance, block);
        let row = self.written;
        self.write_at(0, row * self.layout[0].width * 4, block.mean_slice())?;
        self.write_at(1, row * self.layout[1].width * 4, block.log_var_slice())?;
        for (i, part) in parts.iter().enumerate() {
            self.write_at(2 + i, row * self.layout[2 + i].width * 4, part)?;
        }
        if let Some((lo, hi)) = y_range {
            self.y_range = (self.y_range.0.min(lo), self.y_range.1.max(hi));
        }
        if let Some(offsets) = block.gallery_offset() {
            let entry = self
                .layout
                .iter()
                .position(|e| e.name == OFFSET)
                .expect("the layout has the offsets when the info says so");
            self.write_at(entry, row * 4, offsets)?;
        }
        self.written += block.len();
        Ok(())
    }

    /// Write the `y` range, sync and move the folder into place; every promised item must
    /// have been pushed.
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
        if let Some(last) = self.layout.iter().position(|e| e.name == Y_RANGE) {
            let (lo, hi) = self.y_range;
            self.write_at(last, 0, &[lo, hi])?;
        }
        let data_path = self.tmp.join(EMBEDDINGS_FILE);
        self.data
            .sync_all()
            .map_err(|e| index_error(&data_path, e.to_string()))?;
        let ids_path = self.tmp.join(IDS_FILE);
        self.ids
            .flush()
            .and_then(|()| self.ids.get_ref().sync_all())
            .map_err(|e| index_error(&ids_path, e.to_string()))?;
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

/// The safetensors header for `info` and its `layout`, padded so the data starts 8-byte
/// aligned.
fn header_bytes(info: &IndexInfo, layout: &[Entry]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({
            "format": FORMAT,
            "info": serde_json::to_string(info).expect("IndexInfo serialises"),
        }),
    );
    for e in layout {
        header.insert(
            e.name.clone(),
            serde_json::json!({
                "dtype": "F32",
                "shape": e.shape,
                "data_offsets": [e.start, e.start + e.bytes()],
            }),
        );
    }
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
    /// Byte offset of the data section in the map.
    data_start: usize,
    layout: Vec<Entry>,
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
        match format.map(String::as_str) {
            Some(FORMAT) | Some(FORMAT_V4) | Some(FORMAT_V3) => {}
            Some(FORMAT_V2) => {
                return Err(index_error(
                    &path,
                    format!(
                        "written by an older medprob in the layout {FORMAT_V2:?}, whose match \
                         probability and answer rule were fitted to \"is this the query's own \
                         study\"; rebuild the index (retrieve --write-index)"
                    ),
                ))
            }
            Some(FORMAT_V1) => {
                return Err(index_error(
                    &path,
                    format!(
                        "written in the older layout {FORMAT_V1:?}, which stores nothing \
                         prepared for search; write the index again (retrieve --write-index)"
                    ),
                ))
            }
            _ => {
                return Err(index_error(
                    &path,
                    format!(
                        "metadata format is {format:?}, expected {FORMAT:?} (not a medprob index)"
                    ),
                ))
            }
        }
        let info: IndexInfo = extra
            .and_then(|m| m.get("info"))
            .ok_or_else(|| index_error(&path, "metadata has no info"))
            .and_then(|s| {
                serde_json::from_str(s)
                    .map_err(|e| index_error(&path, format!("metadata info: {e}")))
            })?;
        let layout = file_layout(&info);
        for e in &layout {
            let t = meta
                .info(&e.name)
                .ok_or_else(|| index_error(&path, format!("no tensor {:?}", e.name)))?;
            if t.dtype != safetensors::Dtype::F32
                || t.shape != e.shape
                || t.data_offsets != (e.start, e.start + e.bytes())
            {
                return Err(index_error(
                    &path,
                    format!(
                        "tensor {} is {:?} {:?} at {:?}, expected F32 {:?} at {:?}",
                        e.name,
                        t.dtype,
                        t.shape,
                        t.data_offsets,
                        e.shape,
                        (e.start, e.start + e.bytes())
                    ),
                ));
            }
        }
        let data_start = 8 + header_len;
        let total = layout.last().map_or(0, |e| e.start + e.bytes());
        if map.len() != data_start + total {
            return Err(index_error(
                &path,
                format!(
                    "file has {} bytes, its header describes {} (truncated or damaged)",
                    map.len(),
                    data_start + total
                ),
            ));
        }
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
            data_start,
            layout,
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

    /// Items `rows` of tensor `entry` as `f32`: borrowed from the map (little-endian CPUs;
    /// the data section is 8-byte aligned in a page-aligned map), else decoded.
    fn floats(&self, entry: usize, rows: std::ops::Range<usize>) -> Cow<'_, [f32]> {
        let e = &self.layout[entry];
        let at = self.data_start + e.start;
        let bytes = &self.map[at + rows.start * e.width * 4..at + rows.end * e.width * 4];
        if cfg!(target_endian = "little") {
            // SAFETY: every bit pattern is a valid f32; `align_to` only yields the aligned
            // middle, which is all of `bytes` when it starts on a 4-byte boundary (checked).
            let (head, floats, tail) = unsafe { bytes.align_to::<f32>() };
            if head.is_empty() && tail.is_empty() {
                return Cow::Borrowed(floats);
            }
        }
        Cow::Owned(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }

    /// Item `row`'s mean log-variance (what a [`MatchProbability`] may read of the hit).
    pub fn mean_log_variance(&self, row: usize) -> f64 {
        let v = self.floats(1, row..row + 1);
        v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
    }

    /// Rows `range` as embeddings (copied out of the map and checked: a damaged file is an
    /// error naming the file and row, not a wrong answer).
    pub fn rows(&self, range: std::ops::Range<usize>) -> Result<GaussianEmbeddings> {
        if range.end > self.info.len || range.start > range.end {
            return Err(index_error(
                &self.path,
                format!("rows {range:?} of {}", self.info.len),
            ));
        }
        let (n, d) = (range.len(), self.info.dim);
        let mean = self.floats(0, range.clone()).into_owned();
        let log_var = self.floats(1, range.clone()).into_owned();
        let rows = GaussianEmbeddings::from_vecs(n, d, mean, log_var).and_then(|e| {
            match self.offsets(range.clone()) {
                Some(o) => e.with_gallery_offset(o.into_owned()),
                None => Ok(e),
            }
        });
        rows.map_err(|e| match e {
            CoreError::NonFinite {
                what,
                row,
                col,
                value,
            } => {
                let row = range.start + row;
                index_error(
                    &self.path,
                    format!(
                        "row {row} (id {:?}), column {col}: {what} is {value} (the file is damaged)",
                        self.ids[row]
                    ),
                )
            }
            e => index_error(&self.path, format!("rows from {}: {e}", range.start)),
        })
    }

    /// The gallery offsets of `rows`, when the index stores them.
    fn offsets(&self, rows: std::ops::Range<usize>) -> Option<Cow<'_, [f32]>> {
        let entry = self.layout.iter().position(|e| e.name == OFFSET)?;
        Some(self.floats(entry, rows))
    }

    /// The whole gallery, prepared for search, borrowed from the map.
    fn prepared(&self) -> Prepared<'_> {
        let all = 0..self.info.len;
        let mean = self.floats(0, all.clone());
        let parts: Vec<Cow<'_, [f32]>> = (2..2 + kernels::part_layout(self.info.distance).len())
            .map(|i| self.floats(i, all.clone()))
            .collect();
        let y_range = self.layout.iter().position(|e| e.name == Y_RANGE).map(|i| {
            let r = self.floats(i, 0..1);
            (r[0], r[1])
        });
        Prepared::from_parts(
            self.info.distance,
            self.info.len,
            self.info.dim,
            mean,
            parts,
            y_range,
        )
    }

    /// The `k` nearest items of every query under the index's distance, nearest first.
    ///
    /// The gallery is searched in blocks of `options.gallery_block` rows on all threads;
    /// each block keeps only `k` candidates per query, so working memory is about
    /// `threads × (query_block × gallery_block + queries × k)` values whatever the gallery
    /// size, besides the pages of the map that the kernel caches.
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
        if k == 0 || options.gallery_block == 0 || options.query_block == 0 {
            return Err(CoreError::InvalidParameter {
                name: "k / query_block / gallery_block",
                value: 0.0,
                reason: "must be ≥ 1",
            });
        }
        let q = Prepared::new(self.info.distance, queries);
        let offsets = self.offsets(0..self.info.len);
        let best = kernels::top_k_prepared(&q, &self.prepared(), offsets.as_deref(), k, options)
            .map_err(|row| {
                index_error(
                    &self.path,
                    format!(
                        "row {row} (id {:?}) gives a non-finite distance: the file is damaged \
                     (GaussianIndex::verify checks every row)",
                        self.ids[row]
                    ),
                )
            })?;
        Ok(kernels::candidates_to_top_k(best))
    }

    /// Read every row and check the file: means and log-variances finite, and the stored
    /// search quantities exactly those they give. Takes one pass over the file; an error
    /// names the first damaged row.
    pub fn verify(&self) -> Result<()> {
        let n = self.info.len;
        let mut y_range = (f32::INFINITY, f32::NEG_INFINITY);
        for start in (0..n).step_by(VERIFY_BLOCK) {
            let end = (start + VERIFY_BLOCK).min(n);
            let rows = self.rows(start..end)?;
            let (expected, yr) = kernels::stored_parts(self.info.distance, &rows);
            for (i, want) in expected.iter().enumerate() {
                let e = &self.layout[2 + i];
                let got = self.floats(2 + i, start..end);
                if let Some(j) = (0..got.len()).find(|&j| got[j].to_bits() != want[j].to_bits()) {
                    let row = start + j / e.width;
                    return Err(index_error(
                        &self.path,
                        format!(
                            "row {row} (id {:?}): stored {} disagrees with its embedding \
                             (the file is damaged)",
                            self.ids[row], e.name
                        ),
                    ));
                }
            }
            if let Some((lo, hi)) = yr {
                y_range = (y_range.0.min(lo), y_range.1.max(hi));
            }
        }
        if let Some(i) = self.layout.iter().position(|e| e.name == Y_RANGE) {
            let r = self.floats(i, 0..1);
            if n > 0
                && (r[0].to_bits(), r[1].to_bits()) != (y_range.0.to_bits(), y_range.1.to_bits())
            {
                return Err(index_error(
                    &self.path,
                    format!(
                        "stored {Y_RANGE} {:?} is not the range of the rows, {y_range:?} (the file is damaged)",
                        (r[0], r[1])
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl GaussianIndex {
    /// Answer each query: its `k` nearest items with their match probabilities, its
    /// uncertainty, and whether the index's answer rule answers (top-1 probability at
    /// least the threshold of [`IndexInfo::answer_rule`]).
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
                        probability: calibration.map(|c| {
                            c.probability_of(
                                distance as f64,
                                uncertainty[i].mean_log_variance,
                                self.mean_log_variance(row),
                            )
                        }),
                    })
                    .collect();
                let top1 = hits.first().and_then(|h| h.probability);
                let answered = self.info.answer_rule.answers(top1);
                IndexAnswer {
                    hits,
                    uncertainty: uncertainty[i].total_variance,
                    answered,
                }
            })
            .collect())
    }
}
