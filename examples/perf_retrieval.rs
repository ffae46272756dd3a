//! Recall@K over a large random gallery in bounded memory: 1,000 queries against 100,000
//! or 1,000,000 random Gaussian embeddings (D = 128), reporting the time and the peak
//! working memory beyond the embeddings themselves (Linux: `VmHWM` after resetting it
//! through `/proc/self/clear_refs`).
//!
//! ```sh
//! cargo run --release --example perf_retrieval -- --gallery 1000000 --distance mls
//! ```

use std::time::Instant;

use clap::Parser;
use medprob::core::{Distance, GaussianEmbeddings, TopKOptions};
use medprob::metrics::ranking::rank_queries;
use medprob::metrics::retrieval::DirectionReport;
use rand::{Rng, SeedableRng};

#[path = "common/proc_status.rs"]
mod proc_status;

#[derive(Parser)]
struct Args {
    /// Gallery size.
    #[arg(long, default_value_t = 100_000)]
    gallery: usize,
    /// Number of queries.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Embedding dimension.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// csd or mls.
    #[arg(long, default_value = "csd")]
    distance: String,
}

/// Embeddings written straight into their final buffers, so nothing temporary inflates
/// the baseline.
fn random(n: usize, d: usize, seed: u64) -> GaussianEmbeddings {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mean: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let log_var: Vec<f32> = (0..n * d).map(|_| rng.random_range(-3.0..0.0)).collect();
    GaussianEmbeddings::from_vecs(n, d, mean, log_var).expect("finite values")
}

fn status_kib(field: &str) -> Option<u64> {
    proc_status::status_mib(field).map(|mib| (mib * 1024.0).round() as u64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let distance = match args.distance.as_str() {
        "csd" => Distance::Csd,
        "mls" => Distance::Mls,
        other => return Err(format!("--distance must be csd or mls, not {other:?}").into()),
    };
    let gallery = random(args.gallery, args.dim, 1);
    // Each query's match is a gallery item (every 97th), perturbed.
    let mut queries = random(args.queries, args.dim, 2);
    let query_keys: Vec<u64> = (0..args.queries as u64)
        .map(|i| i * 97 % args.gallery as u64)
        .collect();
    {
        let mut q_mean = queries.mean().to_owned();
        for (i, &k) in query_keys.iter().enumerate() {
            let (m, _) = gallery.row(k as usize);
            for (x, &g) in q_mean.row_mut(i).iter_mut().zip(m) {
                *x = g + 1.5 * (*x);
            }
        }
        queries = GaussianEmbeddings::new(q_mean, queries.log_var().to_owned())?;
    }
    let gallery_keys: Vec<u64> = (0..args.gallery as u64).collect();
    let embeddings_mib =
        ((args.gallery + args.queries) * args.dim * 2 * 4) as f64 / (1024.0 * 1024.0);

    let before = status_kib("VmRSS:").unwrap_or(0);
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let t = Instant::now();
    let ranks = rank_queries(
        distance,
        &queries,
        &query_keys,
        &gallery,
        &gallery_keys,
        &TopKOptions::default(),
    )?;
    let report = DirectionReport::from_ranks(&ranks)?;
    let secs = t.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:").unwrap_or(0);
    let working_mib = peak.saturating_sub(before) as f64 / 1024.0;
    println!(
        "{{\"distance\": \"{}\", \"queries\": {}, \"gallery\": {}, \"dim\": {}, \"seconds\": {:.2}, \
         \"embeddings_mib\": {:.1}, \"rss_before_mib\": {:.1}, \"peak_rss_mib\": {:.1}, \
         \"working_mib\": {:.1}, \"peak_reset\": {}, \"r_at_1\": {:.2}, \"r_at_10\": {:.2}, \"threads\": {}}}",
        args.distance,
        args.queries,
        args.gallery,
        args.dim,
        secs,
        embeddings_mib,
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        working_mib,
        reset,
        report.recall_at(1).unwrap_or(f64::NAN),
        report.recall_at(10).unwrap_or(f64::NAN),
        rayon::current_num_threads()
    );
    Ok(())
}
