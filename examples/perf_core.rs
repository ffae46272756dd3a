//! Times medprob-core's pairwise CSD and MLS kernels and a plain `f32` GEMM of the same
//! shape, printing one JSON object per line. `scripts/perf_core.py` runs this next to the
//! PyTorch formulation and writes the comparison table of docs/PERFORMANCE.md.
//!
//! cargo run --release --example perf_core -- --threads 2 --sizes 1024,2048 --dim 512

use std::time::Instant;

use clap::Parser;
use medprob::core::{kernels, Distance, GaussianEmbeddings};
use rand::{Rng, SeedableRng};

#[derive(Parser)]
#[command(about = "Time pairwise CSD, MLS and a plain GEMM (JSON lines on stdout)")]
struct Args {
    /// Worker threads (rayon).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Comma-separated N = M sizes.
    #[arg(long, value_delimiter = ',', default_value = "1024,2048")]
    sizes: Vec<usize>,
    /// Embedding dimension.
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Timed repeats (the minimum is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

fn random(n: usize, d: usize, seed: u64) -> GaussianEmbeddings {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mean = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let log_var = (0..n * d).map(|_| rng.random_range(-3.0f32..1.0)).collect();
    GaussianEmbeddings::from_vecs(n, d, mean, log_var).expect("finite random embeddings")
}

fn best_of(repeats: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn report(op: &str, n: usize, d: usize, seconds: f64) {
    let line = serde_json::json!({
        "impl": "medprob", "op": op, "n": n, "m": n, "d": d,
        "seconds": seconds, "pairs_per_s": (n * n) as f64 / seconds,
    });
    println!("{line}");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()?;
    let d = args.dim;
    for &n in &args.sizes {
        let q = random(n, d, 1);
        let g = random(n, d, 2);
        for (op, dist) in [("csd", Distance::Csd), ("mls", Distance::Mls)] {
            let s = best_of(args.repeats, || {
                std::hint::black_box(kernels::pairwise(dist, &q, &g).expect("same D"));
            });
            report(op, n, d, s);
        }
        // The same product the CSD kernel performs, with nothing around it.
        let (a, b) = (q.mean_slice(), g.mean_slice());
        let mut out = vec![0.0f32; n * n];
        let s = best_of(args.repeats, || plain_gemm(n, d, a, b, &mut out));
        report("gemm", n, d, s);
    }
    Ok(())
}

/// `out = a · bᵀ` for row-major `a`, `b` of `n × d`, with the `gemm` crate.
fn plain_gemm(n: usize, d: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() == n * d && b.len() == n * d && out.len() == n * n);
    // SAFETY: the three buffers have the extents asserted above.
    unsafe {
        gemm::gemm(
            n,
            n,
            d,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            d as isize,
            b.as_ptr(),
            d as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}
