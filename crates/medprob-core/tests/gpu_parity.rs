//! CUDA against the CPU: pairwise MLS (the fused CUDA kernels of `kernels/mls_pairwise.cu`)
//! and pairwise CSD (cuBLAS through candle), values and gradients.
//!
//! Built only with the `cuda` feature. Without a usable GPU (`Device::new_cuda(0)` fails)
//! each test prints that it was skipped and passes, so the file compiles and runs on
//! machines without one; `scripts/gpu_check.sh` builds it for a GPU machine, where it runs
//! with `--nocapture` and prints the error of every comparison.
//!
//! Errors are the largest absolute difference divided by the largest magnitude of the
//! reference (values and gradients separately). Shapes include tiles that do not divide
//! the sizes (both forward tilings: one side of ≤ 16 rows, and both larger), `N ≠ M` in
//! both orders and odd `D`. Log-variance scale 10 puts some `v` below `ln ε ≈ −13.8`, where
//! the variance clamp and its zero gradient apply.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor, Var};
use medprob_core::tensor::{pairwise, pairwise_formula, GaussianTensor};
use medprob_core::Distance;
use rand::{Rng, SeedableRng};

/// The first CUDA device, or `None` (with a note on stdout) when there is none.
fn cuda(test: &str) -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(device) => Some(device),
        Err(e) => {
            // candle's error carries a backtrace; its first line says what failed.
            let e = e.to_string();
            let e = e.lines().next().unwrap_or_default();
            println!("{test}: skipped, no CUDA device ({e})");
            None
        }
    }
}

/// Host inputs of one comparison: means and log-variances of both sides and the upstream
/// weights `w` of `Σ w ⊙ distance` (so every output carries its own gradient).
struct Inputs {
    n: usize,
    m: usize,
    d: usize,
    a: (Vec<f64>, Vec<f64>),
    b: (Vec<f64>, Vec<f64>),
    w: Vec<f64>,
}

impl Inputs {
    fn new(n: usize, m: usize, d: usize, log_var_scale: f64, seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut draw = |len: usize, scale: f64| -> Vec<f64> {
            (0..len)
                .map(|_| rng.random_range(-1.7..1.7) * scale)
                .collect()
        };
        Self {
            n,
            m,
            d,
            a: (draw(n * d, 1.0), draw(n * d, log_var_scale)),
            b: (draw(m * d, 1.0), draw(m * d, log_var_scale)),
            w: draw(n * m, 1.0),
        }
    }
}

type Pairwise = fn(Distance, &GaussianTensor, &GaussianTensor) -> medprob_core::Result<Tensor>;

/// Flattened values and flattened gradients (mean and log-variance of `a`, then of `b`),
/// both as `f64` on the host.
fn run(
    f: Pairwise,
    distance: Distance,
    x: &Inputs,
    dtype: DType,
    device: &Device,
) -> (Tensor, Tensor) {
    let var = |v: &[f64], rows: usize| {
        let t = Tensor::from_vec(v.to_vec(), (rows, x.d), &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .and_then(|t| t.to_device(device))
            .expect("input tensor");
        Var::from_tensor(&t).expect("variable")
    };
    let (ma, va) = (var(&x.a.0, x.n), var(&x.a.1, x.n));
    let (mb, vb) = (var(&x.b.0, x.m), var(&x.b.1, x.m));
    let w = Tensor::from_vec(x.w.clone(), (x.n, x.m), &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .and_then(|t| t.to_device(device))
        .expect("weights");
    let a = GaussianTensor::new(ma.as_tensor().clone(), va.as_tensor().clone()).expect("a");
    let b = GaussianTensor::new(mb.as_tensor().clone(), vb.as_tensor().clone()).expect("b");
    let y = f(distance, &a, &b).expect("pairwise distances");
    assert_eq!(y.dims(), [x.n, x.m]);
    let grads = (&y * &w)
        .and_then(|t| t.sum_all())
        .and_then(|t| t.backward())
        .expect("backward");
    let host = |t: &Tensor| {
        t.flatten_all()
            .and_then(|t| t.to_device(&Device::Cpu))
            .and_then(|t| t.to_dtype(DType::F64))
            .expect("copy to host")
    };
    let g: Vec<Tensor> = [&ma, &va, &mb, &vb]
        .iter()
        .map(|v| {
            host(
                grads
                    .get(v.as_tensor())
                    .expect("every input has a gradient"),
            )
        })
        .collect();
    (host(&y), Tensor::cat(&g, 0).expect("cat"))
}

/// Largest absolute difference over the largest magnitude of `reference` (at least 1).
fn max_rel(got: &Tensor, reference: &Tensor) -> f64 {
    let got = got.to_vec1::<f64>().expect("f64 vector");
    let reference = reference.to_vec1::<f64>().expect("f64 vector");
    assert_eq!(got.len(), reference.len());
    let scale = reference.iter().fold(1.0f64, |s, x| s.max(x.abs()));
    got.iter()
        .zip(&reference)
        .map(|(x, y)| {
            assert!(x.is_finite(), "non-finite result {x} (reference {y})");
            (x - y).abs() / scale
        })
        .fold(0.0, f64::max)
}

/// Checks one comparison and prints its errors.
fn check(label: &str, got: &(Tensor, Tensor), reference: &(Tensor, Tensor), tol: f64) {
    let (dv, dg) = (max_rel(&got.0, &reference.0), max_rel(&got.1, &reference.1));
    println!("{label}: values {dv:.2e}, gradients {dg:.2e} (tolerance {tol:.0e})");
    assert!(dv <= tol, "{label}: values differ by {dv:.3e} > {tol:.0e}");
    assert!(
        dg <= tol,
        "{label}: gradients differ by {dg:.3e} > {tol:.0e}"
    );
}

/// `(N, M, D)`: both tilings, ragged tiles, `N ≠ M` both ways, odd `D`, `D` above one
/// shared-memory slice.
const SHAPES: &[(usize, usize, usize)] = &[
    (5, 7, 6),
    (1, 300, 33),
    (300, 1, 33),
    (16, 257, 19),
    (17, 65, 513),
    (65, 130, 17),
    (130, 70, 1),
    (64, 64, 64),
];

#[test]
fn cuda_mls_matches_the_cpu_kernel_and_the_formula() {
    let Some(gpu) = cuda("cuda_mls_matches_the_cpu_kernel_and_the_formula") else {
        return;
    };
    for (k, &(n, m, d)) in SHAPES.iter().enumerate() {
        for scale in [1.0, 10.0] {
            let x = Inputs::new(n, m, d, scale, 17 + k as u64);
            let cpu = run(pairwise, Distance::Mls, &x, DType::F64, &Device::Cpu);
            let cpu_formula = run(
                pairwise_formula,
                Distance::Mls,
                &x,
                DType::F64,
                &Device::Cpu,
            );
            check(
                &format!("MLS cpu fused vs cpu formula f64 {n}x{m}x{d} scale {scale}"),
                &cpu,
                &cpu_formula,
                1e-10,
            );
            for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
                let label = format!("MLS {dtype:?} {n}x{m}x{d} log-variance scale {scale}");
                let fused = run(pairwise, Distance::Mls, &x, dtype, &gpu);
                check(&format!("{label}: cuda fused vs cpu"), &fused, &cpu, tol);
                if n * m * d <= 1 << 20 {
                    let formula = run(pairwise_formula, Distance::Mls, &x, dtype, &gpu);
                    check(
                        &format!("{label}: cuda fused vs cuda formula"),
                        &fused,
                        &formula,
                        tol,
                    );
                }
            }
        }
    }
}

#[test]
fn cuda_mls_half_precision_matches_f32_on_the_same_rounded_inputs() {
    let Some(gpu) = cuda("cuda_mls_half_precision_matches_f32_on_the_same_rounded_inputs") else {
        return;
    };
    for &(n, m, d) in &[(5, 7, 6), (3, 100, 33), (40, 33, 65)] {
        for dtype in [DType::BF16, DType::F16] {
            // Round the inputs to the half type first, so that only the arithmetic differs.
            let mut x = Inputs::new(n, m, d, 1.0, 5);
            let round = |v: &mut Vec<f64>| {
                *v = Tensor::new(v.as_slice(), &Device::Cpu)
                    .and_then(|t| t.to_dtype(dtype))
                    .and_then(|t| t.to_dtype(DType::F64))
                    .and_then(|t| t.to_vec1::<f64>())
                    .expect("rounding");
            };
            for v in [&mut x.a.0, &mut x.a.1, &mut x.b.0, &mut x.b.1, &mut x.w] {
                round(v);
            }
            let cpu = run(pairwise, Distance::Mls, &x, DType::F32, &Device::Cpu);
            let half = run(pairwise, Distance::Mls, &x, dtype, &gpu);
            check(
                &format!("MLS {dtype:?} {n}x{m}x{d}: cuda fused vs cpu f32"),
                &half,
                &cpu,
                2e-2,
            );
        }
    }
}

#[test]
fn cuda_mls_gallery_shape_matches_the_cpu_kernel() {
    let Some(gpu) = cuda("cuda_mls_gallery_shape_matches_the_cpu_kernel") else {
        return;
    };
    // A few queries against a gallery of many narrow tiles, in both argument orders.
    let (n, m, d) = (3, 20_001, 64);
    let x = Inputs::new(n, m, d, 1.0, 99);
    let to = |v: &[f64], rows: usize, device: &Device| {
        Tensor::from_vec(v.to_vec(), (rows, d), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_device(device))
            .expect("tensor")
    };
    let side = |s: &(Vec<f64>, Vec<f64>), rows: usize, device: &Device| {
        GaussianTensor::new(to(&s.0, rows, device), to(&s.1, rows, device)).expect("side")
    };
    let host = |t: Tensor| {
        t.flatten_all()
            .and_then(|t| t.to_device(&Device::Cpu))
            .and_then(|t| t.to_dtype(DType::F64))
            .expect("host")
    };
    for flip in [false, true] {
        let (p, q) = (side(&x.a, n, &Device::Cpu), side(&x.b, m, &Device::Cpu));
        let (gp, gq) = (side(&x.a, n, &gpu), side(&x.b, m, &gpu));
        let (cpu, cuda) = if flip {
            (
                pairwise(Distance::Mls, &q, &p).expect("cpu"),
                pairwise(Distance::Mls, &gq, &gp).expect("cuda"),
            )
        } else {
            (
                pairwise(Distance::Mls, &p, &q).expect("cpu"),
                pairwise(Distance::Mls, &gp, &gq).expect("cuda"),
            )
        };
        assert_eq!(cpu.dims(), cuda.dims());
        let err = max_rel(&host(cuda), &host(cpu));
        println!("MLS F32 gallery {n}x{m}x{d} (flipped {flip}): values {err:.2e}");
        assert!(
            err <= 1e-4,
            "gallery MLS (flipped {flip}) differs by {err:.3e}"
        );
    }
}

#[test]
fn cuda_csd_matches_the_cpu() {
    let Some(gpu) = cuda("cuda_csd_matches_the_cpu") else {
        return;
    };
    for (k, &(n, m, d)) in SHAPES.iter().enumerate() {
        let x = Inputs::new(n, m, d, 1.0, 41 + k as u64);
        let cpu = run(pairwise, Distance::Csd, &x, DType::F64, &Device::Cpu);
        for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
            let got = run(pairwise, Distance::Csd, &x, dtype, &gpu);
            check(
                &format!("CSD {dtype:?} {n}x{m}x{d}: cuda vs cpu"),
                &got,
                &cpu,
                tol,
            );
        }
    }
}
