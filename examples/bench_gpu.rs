//! Times medprob's differentiable pairwise distances on a GPU (or the CPU), printing one JSON
//! line per measurement; `scripts/gpu_bench.py` measures the same operations and sizes with
//! PyTorch's reference formulation and prints the same fields. `scripts/gpu_check.sh`
//! bundles both for a GPU machine (docs/PERFORMANCE.md, "GPU").
//!
//! Operations (`op`), all through `medprob_core::tensor`, `f32`, random inputs (means
//! N(0, 1), log-variances U(−3, 1)) made on the device:
//!
//! * `csd`: pairwise CSD by its GEMM decomposition (cuBLAS on CUDA);
//! * `mls`: pairwise MLS by the fused kernel (`kernels/mls_pairwise.cu` on CUDA);
//! * `mls_formula`: pairwise MLS by the broadcast tensor formula (`N×M×D` temporaries), at
//!   the `--small` size only, to show what the fused kernel replaces;
//! * `mls_fwd_bwd`: fused MLS forward, then backward of its sum to both sides' means and
//!   log-variances (what a training step does), at the `--train` sizes.
//!
//! Each is run once untimed (module loading), then `--repeats` times; `ms` is the fastest,
//! measured from before the call to after `Device::synchronize`, and `pairs_per_s` is
//! `n·m / ms`.
//!
//! ```sh
//! cargo run --release --features cuda --example bench_gpu -- --device cuda
//! cargo run --release --example bench_gpu -- --device cpu --square 256 --gallery 1x20000 --small 128 --train 128
//! ```

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use clap::Parser;
use medprob::core::tensor::{pairwise, pairwise_formula, GaussianTensor};
use medprob::core::Distance;

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Parser)]
#[command(about = "Time pairwise CSD and MLS on a GPU (JSON lines on stdout)")]
struct Args {
    /// `cuda` (device 0; needs `--features cuda`) or `cpu`.
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Embedding dimension D.
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Comma-separated N = M sizes for `csd` and `mls`.
    #[arg(long, value_delimiter = ',', default_value = "4096")]
    square: Vec<usize>,
    /// Comma-separated gallery shapes NxM for `csd` and `mls`.
    #[arg(long, value_delimiter = ',', default_value = "1x1000000,1024x100000")]
    gallery: Vec<String>,
    /// N = M for `mls_formula` (and `csd`/`mls` beside it).
    #[arg(long, default_value_t = 512)]
    small: usize,
    /// Comma-separated N = M sizes for `mls_fwd_bwd`.
    #[arg(long, value_delimiter = ',', default_value = "1024,4096")]
    train: Vec<usize>,
    /// Timed repeats (the fastest is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

fn device(name: &str) -> AnyResult<(Device, String)> {
    match name {
        "cpu" => Ok((Device::Cpu, "cpu".into())),
        "cuda" => {
            let device = Device::new_cuda(0).map_err(|e| {
                // candle's error carries a backtrace; its first line says what failed.
                let e = e.to_string();
                let e = e.lines().next().unwrap_or_default();
                format!(
                    "--device cuda: no CUDA device 0 ({e}); was this built with --features cuda?"
                )
            })?;
            let label = device_name(&device);
            Ok((device, label))
        }
        other => Err(format!("--device must be cpu or cuda, got {other:?}").into()),
    }
}

#[cfg(feature = "cuda")]
fn device_name(device: &Device) -> String {
    device
        .as_cuda_device()
        .and_then(|d| {
            d.cuda_stream()
                .context()
                .name()
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        })
        .unwrap_or_else(|e| format!("cuda:0 (name unavailable: {e})"))
}

#[cfg(not(feature = "cuda"))]
fn device_name(_: &Device) -> String {
    "cuda:0".into()
}

/// `n` random Gaussian embeddings of dimension `d` made on `device`.
fn gaussians(n: usize, d: usize, device: &Device) -> AnyResult<GaussianTensor> {
    let mean = Tensor::randn(0f32, 1f32, (n, d), device)?;
    let log_var = Tensor::rand(-3f32, 1f32, (n, d), device)?;
    Ok(GaussianTensor::new(mean, log_var)?)
}

/// Fastest of `repeats` timed calls after one untimed one, in milliseconds.
fn best_ms(
    device: &Device,
    repeats: usize,
    mut f: impl FnMut() -> AnyResult<()>,
) -> AnyResult<f64> {
    f()?;
    device.synchronize()?;
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        f()?;
        device.synchronize()?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

struct Report<'a> {
    label: &'a str,
    d: usize,
}

impl Report<'_> {
    fn line(&self, op: &str, n: usize, m: usize, ms: f64) {
        let line = serde_json::json!({
            "impl": "medprob",
            "device": self.label,
            "op": op,
            "n": n,
            "m": m,
            "d": self.d,
            "dtype": "f32",
            "ms": (ms * 1e3).round() / 1e3,
            "pairs_per_s": ((n * m) as f64 / (ms / 1e3)).round() as u64,
        });
        println!("{line}");
    }
}

fn parse_shape(s: &str) -> AnyResult<(usize, usize)> {
    let (n, m) = s
        .split_once('x')
        .ok_or_else(|| format!("gallery shape {s:?} is not NxM"))?;
    Ok((n.trim().parse()?, m.trim().parse()?))
}

fn main() -> AnyResult<()> {
    let args = Args::parse();
    let (device, label) = device(&args.device)?;
    let d = args.dim;
    let report = Report { label: &label, d };

    let mut shapes: Vec<(usize, usize)> = args.square.iter().map(|&s| (s, s)).collect();
    for g in &args.gallery {
        shapes.push(parse_shape(g)?);
    }
    shapes.push((args.small, args.small));
    for &(n, m) in &shapes {
        let (a, b) = (gaussians(n, d, &device)?, gaussians(m, d, &device)?);
        for (op, distance) in [("csd", Distance::Csd), ("mls", Distance::Mls)] {
            let ms = best_ms(&device, args.repeats, || {
                pairwise(distance, &a, &b)?;
                Ok(())
            })?;
            report.line(op, n, m, ms);
        }
    }

    let (a, b) = (
        gaussians(args.small, d, &device)?,
        gaussians(args.small, d, &device)?,
    );
    let ms = best_ms(&device, args.repeats, || {
        pairwise_formula(Distance::Mls, &a, &b)?;
        Ok(())
    })?;
    report.line("mls_formula", args.small, args.small, ms);

    for &n in &args.train {
        let vars = (0..2)
            .map(|_| -> AnyResult<(Var, Var)> {
                let g = gaussians(n, d, &device)?;
                Ok((Var::from_tensor(&g.mean)?, Var::from_tensor(&g.log_var)?))
            })
            .collect::<AnyResult<Vec<_>>>()?;
        let side =
            |(m, v): &(Var, Var)| GaussianTensor::new(m.as_tensor().clone(), v.as_tensor().clone());
        let (a, b) = (side(&vars[0])?, side(&vars[1])?);
        let ms = best_ms(&device, args.repeats, || {
            let y = pairwise(Distance::Mls, &a, &b)?;
            let grads = y.sum_all()?.backward()?;
            if grads.get(vars[1].1.as_tensor()).map(|g| g.dtype()) != Some(DType::F32) {
                return Err("backward gave no f32 gradient for the second log-variance".into());
            }
            Ok(())
        })?;
        report.line("mls_fwd_bwd", n, n, ms);
    }
    Ok(())
}
