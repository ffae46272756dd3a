//! Pairwise CSD and MLS at D = 512: the `f32` retrieval kernels at N = M ∈ {1024, 4096} and
//! the differentiable candle path at training batch sizes N = M ∈ {64, 256}. Throughput is
//! reported in pairs per second (criterion's "elements").
//!
//! cargo bench --bench core_distances     (RAYON_NUM_THREADS=2 to pin the thread count)

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use medprob::core::{kernels, tensor, Distance, GaussianEmbeddings, GaussianTensor};
use rand::{Rng, SeedableRng};

const D: usize = 512;

fn random(n: usize, seed: u64) -> GaussianEmbeddings {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mean = (0..n * D).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let log_var = (0..n * D).map(|_| rng.random_range(-3.0f32..1.0)).collect();
    GaussianEmbeddings::from_vecs(n, D, mean, log_var).expect("finite")
}

fn inference(c: &mut Criterion) {
    let mut group = c.benchmark_group("inference_f32");
    group.sample_size(10);
    for n in [1024, 4096] {
        let (q, g) = (random(n, 1), random(n, 2));
        group.throughput(Throughput::Elements((n * n) as u64));
        for dist in [Distance::Csd, Distance::Mls] {
            group.bench_with_input(BenchmarkId::new(dist.name(), n), &n, |b, _| {
                b.iter(|| kernels::pairwise(dist, &q, &g).expect("same D"))
            });
        }
    }
    group.finish();
}

fn training(c: &mut Criterion) {
    let mut group = c.benchmark_group("candle_f32");
    group.sample_size(10);
    for n in [64, 256] {
        let to_t = |e: &GaussianEmbeddings| {
            let (m, v) = e.to_tensors(&Device::Cpu).expect("cpu");
            GaussianTensor::new(m, v).expect("valid")
        };
        let (q, g) = (to_t(&random(n, 3)), to_t(&random(n, 4)));
        group.throughput(Throughput::Elements((n * n) as u64));
        for dist in [Distance::Csd, Distance::Mls] {
            group.bench_with_input(BenchmarkId::new(dist.name(), n), &n, |b, _| {
                b.iter(|| {
                    let d: Tensor = tensor::pairwise(dist, &q, &g).expect("same D");
                    d.sum_all()
                        .expect("sum")
                        .to_scalar::<f32>()
                        .expect("scalar")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, inference, training);
criterion_main!(benches);
