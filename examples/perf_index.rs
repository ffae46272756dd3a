//! The on-disk gallery index at scale: write a random gallery of `--gallery` Gaussian
//! embeddings (D = `--dim`) block by block, open it (memory map), then time single-query
//! latency and batched-query throughput, with peak memory for each phase.
//!
//! Prints one JSON line per phase (`write`, `open`, `single`, `batch`). Peak memory is
//! Linux `VmHWM` after resetting it through `/proc/self/clear_refs` at the start of each
//! phase; it counts the pages of the mapped file that the phase touched (`rss_file_mib`,
//! which the kernel can drop at any time) separately from the process's own memory
//! (`rss_anon_mib`).
//!
//! ```sh
//! cargo run --release --example perf_index -- --gallery 1000000 --dim 512 --distance csd
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use medprob::core::{
    Distance, GaussianEmbeddings, GaussianIndex, GaussianIndexWriter, IndexInfo, TopKOptions,
};
use rand::{Rng, SeedableRng};

#[path = "common/proc_status.rs"]
mod proc_status;

#[derive(Parser)]
struct Args {
    /// Gallery size.
    #[arg(long, default_value_t = 100_000)]
    gallery: usize,
    /// Embedding dimension.
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// csd or mls.
    #[arg(long, default_value = "csd")]
    distance: String,
    /// Single queries timed one at a time (latency).
    #[arg(long, default_value_t = 10)]
    single: usize,
    /// Queries answered in one batch (throughput).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Where to write the index (default: a temporary folder, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// `n` random embeddings; log-variances in the heads' range.
fn random(n: usize, d: usize, seed: u64) -> GaussianEmbeddings {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mean: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let log_var: Vec<f32> = (0..n * d).map(|_| rng.random_range(-3.0..0.0)).collect();
    GaussianEmbeddings::from_vecs(n, d, mean, log_var).expect("finite values")
}

fn status_mib(field: &str) -> f64 {
    proc_status::status_mib(field).unwrap_or(f64::NAN)
}

/// Reset the peak-RSS counter (Linux); whether it worked.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn report(phase: &str, args: &Args, seconds: f64, extra: serde_json::Value) {
    let mut line = serde_json::json!({
        "phase": phase,
        "distance": args.distance,
        "gallery": args.gallery,
        "dim": args.dim,
        "threads": rayon::current_num_threads(),
        "seconds": (seconds * 1e4).round() / 1e4,
        "peak_rss_mib": status_mib("VmHWM:"),
        "rss_anon_mib": status_mib("RssAnon:"),
        "rss_file_mib": status_mib("RssFile:"),
    });
    if let (Some(l), serde_json::Value::Object(e)) = (line.as_object_mut(), extra) {
        l.extend(e);
    }
    println!("{line}");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let distance = match args.distance.as_str() {
        "csd" => Distance::Csd,
        "mls" => Distance::Mls,
        other => return Err(format!("--distance must be csd or mls, not {other:?}").into()),
    };
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().join("index"));

    // Write, 10,000 rows at a time: the gallery is never in memory as a whole.
    reset_peak();
    let t = Instant::now();
    let info = IndexInfo {
        distance,
        dim: args.dim,
        len: args.gallery,
        description: format!("perf_index: {} random embeddings", args.gallery),
        match_probability: None,
        answer_rule: medprob::core::AnswerRule::Always,
        relevance: None,
        guarantee: None,
        gallery_offset: false,
    };
    let mut writer = GaussianIndexWriter::create(&dir, info)?;
    let block = 10_000;
    let mut start = 0;
    while start < args.gallery {
        let n = block.min(args.gallery - start);
        let ids: Vec<String> = (start..start + n).map(|i| format!("item{i}")).collect();
        writer.push(&random(n, args.dim, 1000 + start as u64), &ids)?;
        start += n;
    }
    writer.finish()?;
    let bytes = std::fs::metadata(dir.join(medprob::core::index::EMBEDDINGS_FILE))?.len();
    report(
        "write",
        &args,
        t.elapsed().as_secs_f64(),
        serde_json::json!({ "file_mib": bytes as f64 / (1024.0 * 1024.0) }),
    );

    reset_peak();
    let t = Instant::now();
    let index = GaussianIndex::open(&dir)?;
    report(
        "open",
        &args,
        t.elapsed().as_secs_f64(),
        serde_json::json!({}),
    );

    let options = TopKOptions::default();
    let queries = random(args.single.max(args.batch), args.dim, 7);
    // Latency: one query at a time (the first one also warms the page cache).
    index.search(&queries.slice(0..1), args.k, &options)?;
    reset_peak();
    let mut times = Vec::new();
    for i in 0..args.single {
        let t = Instant::now();
        let top = index.search(&queries.slice(i..i + 1), args.k, &options)?;
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(top.indices.ncols(), args.k.min(args.gallery));
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    report(
        "single",
        &args,
        times.iter().sum(),
        serde_json::json!({
            "queries": args.single,
            "median_latency_ms": (median * 1e5).round() / 1e2,
            "queries_per_s": (1.0 / median * 100.0).round() / 100.0,
        }),
    );

    reset_peak();
    let t = Instant::now();
    let top = index.search(&queries.slice(0..args.batch), args.k, &options)?;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(top.indices.nrows(), args.batch);
    report(
        "batch",
        &args,
        secs,
        serde_json::json!({
            "queries": args.batch,
            "queries_per_s": ((args.batch as f64 / secs) * 100.0).round() / 100.0,
        }),
    );
    Ok(())
}
