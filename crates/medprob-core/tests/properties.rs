//! Property tests of the distance mathematics (proptest), the agreement of the three
//! implementations (per-pair definition, `f32` kernels, candle tensors), and bad input.

use candle_core::{DType, Device, Tensor};
use medprob_core::{
    kernels, pair_distance, tensor, CoreError, Distance, GaussianEmbeddings, GaussianTensor,
    MonteCarloMatch, Squash, TopKAccumulator, TopKOptions,
};
use ndarray::Array2;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// A Gaussian of dimension `d`: means in [-3, 3], log-variances in [-6, 6].
fn gaussian(d: usize) -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (
        prop::collection::vec(-3.0f64..3.0, d),
        prop::collection::vec(-6.0f64..6.0, d),
    )
}

/// `(mean, log-variance)` of one Gaussian.
type Item = (Vec<f64>, Vec<f64>);

fn pair() -> impl Strategy<Value = (Item, Item)> {
    (1usize..24).prop_flat_map(|d| (gaussian(d), gaussian(d)))
}

fn batch(n: usize, d: usize, seed: u64) -> GaussianEmbeddings {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mean = (0..n * d)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    let lv = (0..n * d).map(|_| rng.random_range(-4.0f32..2.0)).collect();
    GaussianEmbeddings::from_vecs(n, d, mean, lv).unwrap()
}

const NON_NEGATIVE: [Distance; 4] = [
    Distance::Wasserstein2,
    Distance::Hellinger,
    Distance::Bhattacharyya,
    Distance::SymmetricKl,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn every_distance_is_symmetric(((m1, v1), (m2, v2)) in pair()) {
        for dist in Distance::ALL {
            let ab = pair_distance(dist, &m1, &v1, &m2, &v2);
            let ba = pair_distance(dist, &m2, &v2, &m1, &v1);
            prop_assert!((ab - ba).abs() <= 1e-12 * ab.abs().max(1.0), "{dist}: {ab} vs {ba}");
        }
    }

    #[test]
    fn divergences_are_non_negative_and_zero_on_identical_inputs(((m1, v1), (m2, v2)) in pair()) {
        for dist in NON_NEGATIVE {
            let d = pair_distance(dist, &m1, &v1, &m2, &v2);
            prop_assert!(d >= -1e-12, "{dist} = {d}");
            let same = pair_distance(dist, &m1, &v1, &m1, &v1);
            prop_assert!(same.abs() <= 1e-12, "{dist}(x, x) = {same}");
        }
    }

    #[test]
    fn divergences_are_zero_on_identical_inputs_in_the_tensor_path((m, v) in (1usize..24).prop_flat_map(gaussian)) {
        let d = m.len();
        let t = |x: &[f64]| Tensor::from_slice(x, (1, d), &Device::Cpu).unwrap();
        let g = GaussianTensor::new(t(&m), t(&v)).unwrap();
        for dist in NON_NEGATIVE {
            let same = tensor::paired(dist, &g, &g).unwrap().to_vec1::<f64>().unwrap()[0];
            prop_assert!(same.abs() <= 1e-12, "{dist}(x, x) = {same}");
            let pw = tensor::pairwise(dist, &g, &g).unwrap().to_vec2::<f64>().unwrap()[0][0];
            prop_assert!(pw.abs() <= 1e-12, "pairwise {dist}(x, x) = {pw}");
        }
    }

    #[test]
    fn csd_and_mls_are_minimised_at_equal_means(
        ((m1, v1), (_, v2)) in pair(),
        delta in prop::collection::vec(-1.0f64..1.0, 24),
    ) {
        for dist in [Distance::Csd, Distance::Mls] {
            let at_mu1 = pair_distance(dist, &m1, &v1, &m1, &v2);
            let shifted: Vec<f64> = m1.iter().zip(&delta).map(|(a, b)| a + b).collect();
            let away = pair_distance(dist, &m1, &v1, &shifted, &v2);
            prop_assert!(away >= at_mu1 - 1e-12, "{dist}: {away} < {at_mu1}");
        }
    }

    #[test]
    fn csd_grows_with_either_variance(((m1, v1), (m2, v2)) in pair(), k in 0usize..24, up in 0.01f64..3.0) {
        let k = k % m1.len();
        let base = pair_distance(Distance::Csd, &m1, &v1, &m2, &v2);
        let mut v1b = v1.clone();
        v1b[k] += up;
        let mut v2b = v2.clone();
        v2b[k] += up;
        prop_assert!(pair_distance(Distance::Csd, &m1, &v1b, &m2, &v2) > base);
        prop_assert!(pair_distance(Distance::Csd, &m1, &v1, &m2, &v2b) > base);
    }

    /// CSD is E‖z1 − z2‖² for independent samples: a seeded Monte-Carlo estimate agrees
    /// within five standard errors.
    #[test]
    fn csd_equals_the_expected_squared_distance_of_samples(((m1, v1), (m2, v2)) in pair(), seed in any::<u64>()) {
        let csd = pair_distance(Distance::Csd, &m1, &v1, &m2, &v2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = 4000;
        let draws: Vec<f64> = (0..n)
            .map(|_| {
                (0..m1.len())
                    .map(|k| {
                        let e1: f64 = rng.sample(StandardNormal);
                        let e2: f64 = rng.sample(StandardNormal);
                        let z1 = m1[k] + (0.5 * v1[k]).exp() * e1;
                        let z2 = m2[k] + (0.5 * v2[k]).exp() * e2;
                        (z1 - z2).powi(2)
                    })
                    .sum()
            })
            .collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let se = (var / n as f64).sqrt();
        prop_assert!((mean - csd).abs() <= 5.0 * se, "csd {csd}, estimate {mean} ± {se}");
    }

    /// The GEMM path (CSD, W2) and the fused path (the rest) equal the naive per-pair
    /// definition evaluated in f64 on the same f32 inputs.
    #[test]
    fn kernels_equal_the_naive_definition(n in 1usize..9, m in 1usize..9, d in 1usize..40, seed in any::<u64>()) {
        let q = batch(n, d, seed);
        let g = batch(m, d, seed ^ 0x9e37);
        for dist in Distance::ALL {
            let fast = kernels::pairwise(dist, &q, &g).unwrap();
            for i in 0..n {
                for j in 0..m {
                    let (m1, v1) = q.row(i);
                    let (m2, v2) = g.row(j);
                    let up = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<_>>();
                    let exact = pair_distance(dist, &up(m1), &up(v1), &up(m2), &up(v2));
                    let got = fast[[i, j]] as f64;
                    prop_assert!(
                        (got - exact).abs() <= 2e-5 * exact.abs().max(1.0),
                        "{dist} [{i},{j}] kernel {got} vs naive {exact}"
                    );
                }
            }
        }
    }
}

/// The candle path and the f32 kernels are separate implementations of one table: they
/// agree on every distance.
#[test]
fn tensor_path_equals_the_kernels() {
    let (q, g) = (batch(13, 37, 1), batch(11, 37, 2));
    let to_t = |e: &GaussianEmbeddings| {
        let (m, v) = e.to_tensors(&Device::Cpu).unwrap();
        GaussianTensor::new(
            m.to_dtype(DType::F64).unwrap(),
            v.to_dtype(DType::F64).unwrap(),
        )
        .unwrap()
    };
    let (tq, tg) = (to_t(&q), to_t(&g));
    for dist in Distance::ALL {
        let a = kernels::pairwise(dist, &q, &g).unwrap();
        let b = tensor::pairwise(dist, &tq, &tg)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        for i in 0..13 {
            for j in 0..11 {
                let (x, y) = (a[[i, j]] as f64, b[i][j]);
                assert!(
                    (x - y).abs() <= 2e-5 * y.abs().max(1.0),
                    "{dist} [{i},{j}]: {x} vs {y}"
                );
            }
        }
        // Paired equals the diagonal of pairwise, in both paths.
        let qq = q.slice(0..11);
        let pk = kernels::paired(dist, &qq, &g).unwrap();
        let full = kernels::pairwise(dist, &qq, &g).unwrap();
        let pt = tensor::paired(dist, &to_t(&qq), &tg)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for i in 0..11 {
            assert!(
                (pk[i] - full[[i, i]]).abs() <= 1e-5 * full[[i, i]].abs().max(1.0),
                "{dist}"
            );
            assert!(
                (pt[i] - full[[i, i]] as f64).abs() <= 2e-5 * pt[i].abs().max(1.0),
                "{dist}"
            );
        }
    }
}

/// Top-k equals a full sort of the distance matrix, whatever the block sizes, with ties
/// broken by the lower index.
#[test]
fn top_k_equals_sorting_the_full_matrix() {
    let q = batch(37, 19, 3);
    // Duplicate gallery items make ties.
    let g0 = batch(150, 19, 4);
    let mut mean = g0.mean().to_owned();
    let mut lv = g0.log_var().to_owned();
    for j in 0..10 {
        mean.row_mut(100 + j).assign(&g0.mean().row(j));
        lv.row_mut(100 + j).assign(&g0.log_var().row(j));
    }
    let g = GaussianEmbeddings::new(mean, lv).unwrap();
    for dist in [Distance::Csd, Distance::Mls, Distance::Wasserstein2] {
        let full = kernels::pairwise(dist, &q, &g).unwrap();
        let expected: Vec<Vec<usize>> = full
            .rows()
            .into_iter()
            .map(|r| {
                let mut idx: Vec<usize> = (0..r.len()).collect();
                idx.sort_by(|&a, &b| r[a].total_cmp(&r[b]).then(a.cmp(&b)));
                idx.truncate(7);
                idx
            })
            .collect();
        for opts in [
            TopKOptions::default(),
            TopKOptions {
                query_block: 5,
                gallery_block: 13,
            },
            TopKOptions {
                query_block: 1,
                gallery_block: 1,
            },
        ] {
            let top = kernels::top_k(dist, &q, &g, 7, &opts).unwrap();
            for (i, exp) in expected.iter().enumerate() {
                let got: Vec<usize> = top.indices.row(i).to_vec();
                if dist == Distance::Mls {
                    // The fused kernel sums each pair in a fixed order: bit-identical tiles.
                    assert_eq!(&got, exp, "{dist} query {i} {opts:?}");
                }
                // GEMM tiles of other shapes round differently: the same k smallest
                // distances, to f32 rounding.
                for (r, (&j, &e)) in got.iter().zip(exp).enumerate() {
                    let (want, have) = (full[[i, e]], full[[i, j]]);
                    assert!(
                        (want - have).abs() <= 1e-5 * want.abs().max(1.0),
                        "{dist} q{i} r{r}"
                    );
                    let reported = top.distances[[i, r]];
                    assert!(
                        (reported - have).abs() <= 1e-5 * have.abs().max(1.0),
                        "{dist} q{i} r{r}"
                    );
                }
            }
        }
    }
    // k larger than the gallery returns the whole gallery, sorted.
    let top = kernels::top_k(
        Distance::Csd,
        &q,
        &g.slice(0..4),
        10,
        &TopKOptions::default(),
    )
    .unwrap();
    assert_eq!(top.indices.dim(), (37, 4));
}

#[test]
fn streaming_blocks_equal_one_call() {
    let (q, g) = (batch(9, 16, 5), batch(40, 16, 6));
    let one = kernels::top_k(Distance::Mls, &q, &g, 5, &TopKOptions::default()).unwrap();
    let mut acc = TopKAccumulator::new(Distance::Mls, &q, 5, TopKOptions::default()).unwrap();
    for start in (0..40).step_by(7) {
        let end = (start + 7).min(40);
        acc.add_block(start, &g.slice(start..end)).unwrap();
    }
    assert_eq!(acc.finish(), one);
}

#[test]
fn squared_euclidean_matches_direct_sums() {
    let x = Array2::from_shape_fn((3, 5), |(i, j)| (i * 5 + j) as f32 * 0.1);
    let y = Array2::from_shape_fn((2, 5), |(i, j)| (i as f32) - (j as f32) * 0.3);
    let d = kernels::squared_euclidean(x.view(), y.view()).unwrap();
    for i in 0..3 {
        for j in 0..2 {
            let e: f32 = (0..5).map(|k| (x[[i, k]] - y[[j, k]]).powi(2)).sum();
            assert!((d[[i, j]] - e).abs() < 1e-5, "{} vs {e}", d[[i, j]]);
        }
    }
}

#[test]
fn monte_carlo_match_probability() {
    let q = batch(3, 8, 7);
    let g = batch(4, 8, 8);
    let mc = MonteCarloMatch {
        samples: 7,
        a: 0.5,
        b: 1.0,
        squash: Squash::Pcme,
    };
    let p1 = mc
        .probabilities(&q, &g, &mut rand::rngs::StdRng::seed_from_u64(1))
        .unwrap();
    let p2 = mc
        .probabilities(&q, &g, &mut rand::rngs::StdRng::seed_from_u64(1))
        .unwrap();
    assert_eq!(p1, p2, "seeded");
    assert!(p1.iter().all(|&p| (0.0..=1.0).contains(&p)));
    // With (almost) no variance the estimate is the squashed point distance.
    let sharp = |e: &GaussianEmbeddings| {
        GaussianEmbeddings::new(
            e.mean().to_owned(),
            Array2::from_elem(e.mean().dim(), -60.0),
        )
        .unwrap()
    };
    let (qs, gs) = (sharp(&q), sharp(&g));
    for squash in [Squash::Pcme, Squash::Sigmoid] {
        let mc = MonteCarloMatch { squash, ..mc };
        let p = mc
            .probabilities(&qs, &gs, &mut rand::rngs::StdRng::seed_from_u64(2))
            .unwrap();
        for i in 0..3 {
            for j in 0..4 {
                let (m1, _) = q.row(i);
                let (m2, _) = g.row(j);
                let dist = (m1
                    .iter()
                    .zip(m2)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum::<f64>()
                    + 1e-6)
                    .sqrt();
                let x = -0.5 * dist + 1.0;
                let want = match squash {
                    Squash::Pcme => medprob_core::sigmoid(2.0 * x),
                    Squash::Sigmoid => medprob_core::sigmoid(x),
                };
                assert!(
                    (p[[i, j]] as f64 - want).abs() < 1e-4,
                    "{squash:?} {} vs {want}",
                    p[[i, j]]
                );
            }
        }
    }
    let bad = MonteCarloMatch { samples: 0, ..mc };
    assert!(matches!(
        bad.probabilities(&q, &g, &mut rand::rngs::StdRng::seed_from_u64(1)),
        Err(CoreError::InvalidParameter {
            name: "samples",
            ..
        })
    ));
}

#[test]
fn bad_input_is_a_typed_error() {
    let (q, g) = (batch(2, 4, 1), batch(2, 5, 2));
    for dist in Distance::ALL {
        assert!(matches!(
            kernels::pairwise(dist, &q, &g),
            Err(CoreError::Shape { .. })
        ));
        assert!(matches!(
            kernels::paired(dist, &q, &g),
            Err(CoreError::Shape { .. })
        ));
    }
    assert!(matches!(
        kernels::paired(Distance::Csd, &q, &batch(3, 4, 3)),
        Err(CoreError::Shape { .. })
    ));
    assert!(matches!(
        kernels::top_k(Distance::Csd, &q, &q, 0, &TopKOptions::default()),
        Err(CoreError::InvalidParameter { name: "k", .. })
    ));
    assert!(TopKAccumulator::new(
        Distance::Csd,
        &q,
        1,
        TopKOptions {
            query_block: 0,
            gallery_block: 1
        }
    )
    .is_err());
    let mut acc = TopKAccumulator::new(Distance::Csd, &q, 1, TopKOptions::default()).unwrap();
    assert!(matches!(acc.add_block(0, &g), Err(CoreError::Shape { .. })));
    assert!(kernels::squared_euclidean(q.mean(), g.mean()).is_err());

    let dev = Device::Cpu;
    let t = |shape: &[usize], dtype| Tensor::zeros(shape, dtype, &dev).unwrap();
    assert!(matches!(
        GaussianTensor::new(t(&[3], DType::F32), t(&[3], DType::F32)),
        Err(CoreError::Tensor { .. })
    ));
    assert!(matches!(
        GaussianTensor::new(t(&[3, 4], DType::F32), t(&[3, 5], DType::F32)),
        Err(CoreError::Shape { .. })
    ));
    assert!(matches!(
        GaussianTensor::new(t(&[3, 0], DType::F32), t(&[3, 0], DType::F32)),
        Err(CoreError::Empty { .. })
    ));
    assert!(matches!(
        GaussianTensor::new(t(&[3, 4], DType::F32), t(&[3, 4], DType::F64)),
        Err(CoreError::Tensor { .. })
    ));
    assert!(matches!(
        GaussianTensor::new(t(&[3, 4], DType::U32), t(&[3, 4], DType::U32)),
        Err(CoreError::Tensor { .. })
    ));
    let a = GaussianTensor::new(t(&[3, 4], DType::F32), t(&[3, 4], DType::F32)).unwrap();
    let b = GaussianTensor::new(t(&[2, 4], DType::F32), t(&[2, 4], DType::F32)).unwrap();
    assert!(matches!(
        tensor::paired(Distance::Mls, &a, &b),
        Err(CoreError::Shape { .. })
    ));
    let c = GaussianTensor::new(t(&[2, 4], DType::F64), t(&[2, 4], DType::F64)).unwrap();
    assert!(matches!(
        tensor::pairwise(Distance::Mls, &a, &c),
        Err(CoreError::Tensor { .. })
    ));
    let d = Tensor::zeros((2, 2), DType::F32, &dev).unwrap();
    assert!(tensor::match_logits(&d, &t(&[2], DType::F32), &t(&[1], DType::F32)).is_err());
    let e: Result<Distance, _> = "cosine".parse();
    assert!(e.unwrap_err().contains("unknown distance \"cosine\""));
    assert_eq!(
        "symmetric_kl".parse::<Distance>().unwrap(),
        Distance::SymmetricKl
    );
}

/// Gradients flow through every distance of the differentiable path to both means and
/// both log-variances, and through the match logits to a and b.
#[test]
fn every_distance_is_differentiable() {
    let dev = Device::Cpu;
    let e = batch(4, 6, 9);
    let (m, v) = e.to_tensors(&dev).unwrap();
    let vars: Vec<candle_core::Var> = [&m, &v, &m, &v]
        .iter()
        .map(|t| candle_core::Var::from_tensor(&t.to_dtype(DType::F64).unwrap()).unwrap())
        .collect();
    let a = GaussianTensor::new(vars[0].as_tensor().clone(), vars[1].as_tensor().clone()).unwrap();
    let b = GaussianTensor::new(vars[2].as_tensor().clone(), vars[3].as_tensor().clone()).unwrap();
    let sa = candle_core::Var::new(&[2.0f64], &dev).unwrap();
    let sb = candle_core::Var::new(&[0.5f64], &dev).unwrap();
    for dist in Distance::ALL {
        let d = tensor::pairwise(dist, &a, &b).unwrap();
        let loss = tensor::match_logits(&d, sa.as_tensor(), sb.as_tensor())
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        for (k, var) in vars.iter().chain([&sa, &sb]).enumerate() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{dist}: variable {k} got no gradient"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(
                norm.is_finite() && norm > 0.0,
                "{dist}: variable {k} gradient norm {norm}"
            );
        }
    }
}

fn assert_kernel_matches_naive(q: &GaussianEmbeddings, g: &GaussianEmbeddings, tol: f64) {
    let up = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<_>>();
    for dist in Distance::ALL {
        let fast = kernels::pairwise(dist, q, g).unwrap();
        for i in 0..q.len() {
            for j in 0..g.len() {
                let (m1, v1) = q.row(i);
                let (m2, v2) = g.row(j);
                let exact = pair_distance(dist, &up(m1), &up(v1), &up(m2), &up(v2));
                let got = fast[[i, j]] as f64;
                assert!(
                    (got - exact).abs() <= tol * exact.abs().max(1.0),
                    "{dist} [{i},{j}] kernel {got} vs naive {exact}"
                );
            }
        }
    }
}

/// Log-variances far outside the heads' range take the kernels' per-dimension logarithm
/// path instead of blocked products; results still equal the definition.
#[test]
fn kernels_handle_extreme_log_variances() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mk = |n: usize, rng: &mut rand::rngs::StdRng| {
        let d = 45;
        let mean = (0..n * d)
            .map(|_| rng.random_range(-50.0f32..50.0))
            .collect();
        let lv = (0..n * d)
            .map(|_| rng.random_range(-40.0f32..40.0))
            .collect();
        GaussianEmbeddings::from_vecs(n, d, mean, lv).unwrap()
    };
    let (q, g) = (mk(5, &mut rng), mk(7, &mut rng));
    assert_kernel_matches_naive(&q, &g, 1e-4);
}

/// Batches larger than the kernels' row tasks and gallery cache blocks.
#[test]
fn kernels_cross_block_boundaries() {
    let (q, g) = (batch(21, 64, 12), batch(600, 64, 13));
    assert_kernel_matches_naive(&q, &g, 2e-5);
}
