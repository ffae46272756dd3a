//! Each option does what it says, and nothing degenerates into NaN or inf.

use candle_core::{DType, Device, Tensor, Var};
use medprob_core::GaussianTensor;
use medprob_losses::{
    clip_loss, cxr_clip_loss, initial_logit_scale, targets, CxrClipConfig, LossError,
    MedProbClipConfig, MedProbClipLoss, MultiView, Objective, PcmeppConfig, PcmeppLoss,
    PseudoPositives, PseudoRule,
};

const N: usize = 6;
const D: usize = 8;

/// Deterministic pseudo-random values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

fn t(seed: u64, n: usize, scale: f64, shift: f64) -> Tensor {
    let v: Vec<f64> = values(seed, n * D)
        .into_iter()
        .map(|x| x * scale + shift)
        .collect();
    Tensor::from_vec(v, (n, D), &Device::Cpu).unwrap()
}

fn gaussian(seed: u64, n: usize) -> GaussianTensor {
    GaussianTensor::new(t(seed, n, 1.0, 0.0), t(seed + 100, n, 1.0, -1.0)).unwrap()
}

fn scalar(v: f64) -> Var {
    Var::new(&[v], &Device::Cpu).unwrap()
}

fn four(n: usize) -> [GaussianTensor; 4] {
    [
        gaussian(1, n),
        gaussian(2, n),
        gaussian(3, n),
        gaussian(4, n),
    ]
}

fn mpc(
    config: MedProbClipConfig,
    g: &[GaussianTensor; 4],
    targets: Option<&Tensor>,
    step: usize,
) -> medprob_losses::LossOutput {
    let (a, b) = (scalar(config.init_scale), scalar(config.init_shift));
    let views = MultiView {
        image1: &g[0],
        image2: &g[1],
        text1: &g[2],
        text2: &g[3],
    };
    MedProbClipLoss::new(config)
        .unwrap()
        .forward(&views, a.as_tensor(), b.as_tensor(), targets, step)
        .unwrap()
}

#[test]
fn lambda_text_zero_removes_exactly_the_text_term() {
    let g = four(N);
    let with = mpc(MedProbClipConfig::default(), &g, None, 0);
    let without = mpc(
        MedProbClipConfig {
            lambda_text: 0.0,
            ..Default::default()
        },
        &g,
        None,
        0,
    );
    let text = with.parts.intra_text.unwrap();
    assert!(text > 0.0);
    assert_eq!(with.parts.intra_text, without.parts.intra_text);
    let diff = with.parts.total - without.parts.total;
    assert!(
        (diff - 0.1 * text).abs() < 1e-12,
        "{diff} vs {}",
        0.1 * text
    );
    // And λ_I likewise.
    let no_img = mpc(
        MedProbClipConfig {
            lambda_image: 0.0,
            ..Default::default()
        },
        &g,
        None,
        0,
    );
    let diff = with.parts.total - no_img.parts.total;
    assert!((diff - with.parts.intra_image.unwrap()).abs() < 1e-12);
}

fn grad_of_shift(objective: Objective) -> f64 {
    let g = four(N);
    let (a, b) = (scalar(1.0), scalar(0.0));
    let views = MultiView {
        image1: &g[0],
        image2: &g[1],
        text1: &g[2],
        text2: &g[3],
    };
    let config = MedProbClipConfig {
        objective,
        ..Default::default()
    };
    let out = MedProbClipLoss::new(config)
        .unwrap()
        .forward(&views, a.as_tensor(), b.as_tensor(), None, 0)
        .unwrap();
    let grads = out.total.backward().unwrap();
    grads.get(b.as_tensor()).unwrap().to_vec1::<f64>().unwrap()[0]
}

#[test]
fn sigmoid_objective_trains_the_shift_and_softmax_does_not() {
    let softmax = grad_of_shift(Objective::Softmax);
    let sigmoid = grad_of_shift(Objective::Sigmoid);
    assert!(softmax.abs() < 1e-12, "softmax ∂L/∂b = {softmax}");
    assert!(sigmoid.abs() > 1e-3, "sigmoid ∂L/∂b = {sigmoid}");
}

#[test]
fn sigmoid_objective_is_the_mean_bce() {
    let g = four(1);
    // One study: every logit is a positive; BCE = softplus(−L).
    let out = mpc(
        MedProbClipConfig {
            objective: Objective::Sigmoid,
            lambda_image: 0.0,
            lambda_text: 0.0,
            beta_image: 0.0,
            beta_text: 0.0,
            ..Default::default()
        },
        &g,
        None,
        0,
    );
    let mut want = 0.0;
    for (x, y) in [
        (&g[0], &g[2]),
        (&g[0], &g[3]),
        (&g[1], &g[2]),
        (&g[1], &g[3]),
    ] {
        let d = medprob_core::tensor::pairwise(medprob_core::Distance::Mls, x, y)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap()[0][0];
        want += (1.0 + d.exp()).ln() / 4.0; // L = −d, softplus(−L) = ln(1 + e^d)
    }
    assert!(
        (out.parts.total - want).abs() < 1e-12,
        "{} vs {want}",
        out.parts.total
    );
}

/// Two studies with the same report, embedded identically: the multi-positive loss does
/// not push them apart, so it is lower than with identity targets.
#[test]
fn duplicate_reports_lower_the_multi_positive_loss() {
    let base = four(N);
    let dup = |g: &GaussianTensor| {
        let copy_row = |x: &Tensor| {
            let rows: Vec<Tensor> = (0..N)
                .map(|i| x.get(if i == 1 { 0 } else { i }).unwrap())
                .collect();
            Tensor::stack(&rows, 0).unwrap()
        };
        GaussianTensor::new(copy_row(&g.mean), copy_row(&g.log_var)).unwrap()
    };
    let g = [dup(&base[0]), dup(&base[1]), dup(&base[2]), dup(&base[3])];
    let keys = ["normal", "normal", "a", "b", "c", "d"];
    let m = targets::from_keys(&keys, DType::F64, &Device::Cpu).unwrap();
    let identity = mpc(MedProbClipConfig::default(), &g, None, 0).parts.total;
    let multi = mpc(MedProbClipConfig::default(), &g, Some(&m), 0)
        .parts
        .total;
    assert!(
        multi < identity,
        "multi-positive {multi} ≥ identity {identity}"
    );

    // CLIP and CXR-CLIP take the same targets.
    let ls = scalar(initial_logit_scale());
    let c_id = clip_loss(&g[0].mean, &g[2].mean, ls.as_tensor(), None)
        .unwrap()
        .parts
        .total;
    let c_mp = clip_loss(&g[0].mean, &g[2].mean, ls.as_tensor(), Some(&m))
        .unwrap()
        .parts
        .total;
    assert!(c_mp < c_id, "{c_mp} ≥ {c_id}");
    let x_id = cxr_clip_loss(
        &CxrClipConfig::default(),
        &g[0].mean,
        &g[1].mean,
        &g[2].mean,
        &g[3].mean,
        ls.as_tensor(),
        None,
    )
    .unwrap()
    .parts
    .total;
    let x_mp = cxr_clip_loss(
        &CxrClipConfig::default(),
        &g[0].mean,
        &g[1].mean,
        &g[2].mean,
        &g[3].mean,
        ls.as_tensor(),
        Some(&m),
    )
    .unwrap()
    .parts
    .total;
    assert!(x_mp < x_id, "{x_mp} ≥ {x_id}");
}

#[test]
fn pseudo_positive_smoothing_and_its_warm_up() {
    let g = four(N);
    let off = mpc(MedProbClipConfig::default(), &g, None, 0);
    assert_eq!(off.parts.pseudo, None);
    let on = |step: usize| {
        let pp = PseudoPositives {
            enabled: true,
            rule: PseudoRule::TopK { k: 2 },
            alpha: 0.1,
            warmup_steps: 10,
        };
        mpc(
            MedProbClipConfig {
                pseudo_positives: pp,
                ..Default::default()
            },
            &g,
            None,
            step,
        )
    };
    let (s0, s5, s10, s20) = (on(0), on(5), on(10), on(20));
    assert!(
        (s0.parts.total - off.parts.total).abs() < 1e-12,
        "α = 0 at step 0"
    );
    let full = s10.parts.total - off.parts.total;
    assert!(full > 0.0);
    assert!(
        (s5.parts.total - off.parts.total - 0.5 * full).abs() < 1e-12,
        "linear warm-up"
    );
    assert!(
        (s20.parts.total - s10.parts.total).abs() < 1e-12,
        "α stays after warm-up"
    );
    assert!((s10.parts.pseudo.unwrap() - full).abs() < 1e-12);
    // Top-2 per row, both directions, six pair terms.
    assert_eq!(s10.parts.n_pseudo, Some(2 * N * 2 * 6));
}

#[test]
fn pcmepp_vib_guard_drops_an_exploding_kl() {
    let huge = GaussianTensor::new(t(5, N, 400.0, 0.0), t(6, N, 1.0, 0.0)).unwrap();
    let text = gaussian(7, N);
    let (a, b) = (scalar(5.0), scalar(5.0));
    let run = |beta: f64| {
        PcmeppLoss::new(PcmeppConfig {
            vib_beta: beta,
            ..Default::default()
        })
        .unwrap()
        .forward(&huge, &text, a.as_tensor(), b.as_tensor(), None)
        .unwrap()
    };
    let (with, without) = (run(1e-4), run(0.0));
    let (kl_i, kl_t) = (with.parts.kl_image.unwrap(), with.parts.kl_text.unwrap());
    assert!(kl_i > 1e4 && kl_t < 1e4, "{kl_i} {kl_t}");
    // Each modality is guarded on its own (the official code): the exploding image KL is
    // dropped, the text KL stays in the total.
    let vib = with.parts.vib.unwrap();
    assert!(
        (vib - 1e-4 * kl_t).abs() < 1e-9 * kl_t.max(1.0),
        "{vib} vs {kl_t}"
    );
    assert!(vib > 0.0);
    assert!((with.parts.total - (without.parts.total + vib)).abs() < 1e-5);
    // Both over the guard: no VIB at all.
    let huge_text = GaussianTensor::new(t(8, N, 400.0, 0.0), t(9, N, 1.0, 0.0)).unwrap();
    let both = PcmeppLoss::new(PcmeppConfig::default())
        .unwrap()
        .forward(&huge, &huge_text, a.as_tensor(), b.as_tensor(), None)
        .unwrap();
    assert_eq!(both.parts.vib, Some(0.0));
}

#[test]
fn clip_temperature_is_clamped() {
    let (x, y) = (t(1, N, 1.0, 0.0), t(2, N, 1.0, 0.0));
    let hot = clip_loss(&x, &y, scalar(1000f64.ln()).as_tensor(), None).unwrap();
    assert!((hot.parts.temperature.unwrap() - 100.0).abs() < 1e-9);
    let init = clip_loss(&x, &y, scalar(initial_logit_scale()).as_tensor(), None).unwrap();
    assert!((init.parts.temperature.unwrap() - 1.0 / 0.07).abs() < 1e-9);
}

#[test]
fn cxr_clip_without_extra_terms_is_the_mean_of_four_clip_losses() {
    let g = [
        t(1, N, 1.0, 0.0),
        t(2, N, 1.0, 0.0),
        t(3, N, 1.0, 0.0),
        t(4, N, 1.0, 0.0),
    ];
    let ls = scalar(initial_logit_scale());
    let cfg = CxrClipConfig {
        icl_weight: 0.0,
        tcl_weight: 0.0,
        ..Default::default()
    };
    let got = cxr_clip_loss(&cfg, &g[0], &g[1], &g[2], &g[3], ls.as_tensor(), None)
        .unwrap()
        .parts
        .total;
    let want: f64 = [(0, 2), (0, 3), (1, 2), (1, 3)]
        .iter()
        .map(|&(i, j)| {
            clip_loss(&g[i], &g[j], ls.as_tensor(), None)
                .unwrap()
                .parts
                .total
        })
        .sum::<f64>()
        / 4.0;
    assert!((got - want).abs() < 1e-12);
    let full = cxr_clip_loss(
        &CxrClipConfig::default(),
        &g[0],
        &g[1],
        &g[2],
        &g[3],
        ls.as_tensor(),
        None,
    )
    .unwrap();
    let icl = clip_loss(&g[0], &g[1], ls.as_tensor(), None)
        .unwrap()
        .parts
        .total;
    let tcl = clip_loss(&g[2], &g[3], ls.as_tensor(), None)
        .unwrap()
        .parts
        .total;
    assert!((full.parts.total - (want + icl + 0.5 * tcl)).abs() < 1e-12);
}

fn all_finite(what: &str, total: &Tensor, vars: &[&Var]) {
    let v = total
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec0::<f64>()
        .unwrap();
    assert!(v.is_finite(), "{what}: loss {v}");
    let grads = total.backward().unwrap();
    for (k, var) in vars.iter().enumerate() {
        if let Some(g) = grads.get(var.as_tensor()) {
            let g = g
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            assert!(
                g.iter().all(|x| x.is_finite()),
                "{what}: gradient {k} not finite"
            );
        }
    }
}

/// Log-variances at ±6, a batch of one, identical embeddings: finite losses and gradients
/// for all four objectives, in f32 and f64.
#[test]
fn no_nan_or_inf_in_degenerate_batches() {
    for dtype in [DType::F32, DType::F64] {
        for (case, n, lv, identical) in [
            ("lv=+6", 4, 6.0, false),
            ("lv=-6", 4, -6.0, false),
            ("batch of one", 1, 0.0, false),
            ("identical", 4, -2.0, true),
        ] {
            let what = format!("{case} {dtype:?}");
            let mk = |seed: u64| {
                let seed = if identical { 1 } else { seed };
                let mu = Var::from_tensor(&t(seed, n, 1.0, 0.0).to_dtype(dtype).unwrap()).unwrap();
                let v = Var::from_tensor(
                    &Tensor::full(lv, (n, D), &Device::Cpu)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap(),
                )
                .unwrap();
                (mu, v)
            };
            let leaves = [mk(1), mk(2), mk(3), mk(4)];
            let g: Vec<GaussianTensor> = leaves
                .iter()
                .map(|(m, v)| {
                    GaussianTensor::new(m.as_tensor().clone(), v.as_tensor().clone()).unwrap()
                })
                .collect();
            let vars: Vec<&Var> = leaves.iter().flat_map(|(m, v)| [m, v]).collect();
            let s = |v: f64| {
                Var::from_tensor(
                    &Tensor::new(&[v], &Device::Cpu)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap(),
                )
                .unwrap()
            };
            for objective in [Objective::Softmax, Objective::Sigmoid] {
                let (a, b) = (s(1.0), s(0.0));
                let views = MultiView {
                    image1: &g[0],
                    image2: &g[1],
                    text1: &g[2],
                    text2: &g[3],
                };
                let pp = PseudoPositives {
                    enabled: true,
                    ..Default::default()
                };
                let cfg = MedProbClipConfig {
                    objective,
                    pseudo_positives: pp,
                    ..Default::default()
                };
                let out = MedProbClipLoss::new(cfg)
                    .unwrap()
                    .forward(&views, a.as_tensor(), b.as_tensor(), None, 0)
                    .unwrap();
                all_finite(
                    &format!("medprobclip {objective:?} {what}"),
                    &out.total,
                    &vars,
                );
            }
            let (a, b) = (s(5.0), s(5.0));
            let out = PcmeppLoss::new(PcmeppConfig::default())
                .unwrap()
                .forward(&g[0], &g[2], a.as_tensor(), b.as_tensor(), None)
                .unwrap();
            all_finite(&format!("pcme++ {what}"), &out.total, &vars);
            let ls = s(initial_logit_scale());
            let out = clip_loss(&g[0].mean, &g[2].mean, ls.as_tensor(), None).unwrap();
            all_finite(&format!("clip {what}"), &out.total, &vars);
            let out = cxr_clip_loss(
                &CxrClipConfig::default(),
                &g[0].mean,
                &g[1].mean,
                &g[2].mean,
                &g[3].mean,
                ls.as_tensor(),
                None,
            )
            .unwrap();
            all_finite(&format!("cxr-clip {what}"), &out.total, &vars);
        }
    }
}

#[test]
fn bad_configs_and_inputs_name_the_field() {
    let e = MedProbClipLoss::new(MedProbClipConfig {
        lambda_text: -1.0,
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            LossError::Config {
                field: "lambda_text",
                ..
            }
        ),
        "{e}"
    );
    let e = MedProbClipLoss::new(MedProbClipConfig {
        pseudo_positives: PseudoPositives {
            rule: PseudoRule::TopK { k: 0 },
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("pseudo_positives.rule.k"), "{e}");
    let e = PcmeppLoss::new(PcmeppConfig {
        vib_beta: f64::NAN,
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("vib_beta"), "{e}");
    let e = serde_json::from_str::<MedProbClipConfig>(r#"{"lambda_txt": 1.0}"#).unwrap_err();
    assert!(e.to_string().contains("lambda_txt"), "{e}");
    let cfg: MedProbClipConfig =
        serde_json::from_str(r#"{"objective": "sigmoid", "distance": "csd"}"#).unwrap();
    assert_eq!(cfg.objective, Objective::Sigmoid);
    assert_eq!(
        cfg.lambda_text, 0.1,
        "unspecified fields keep the reference defaults"
    );

    // Misaligned views and bad targets.
    let g = four(N);
    let short = gaussian(9, N - 1);
    let (a, b) = (scalar(1.0), scalar(0.0));
    let loss = MedProbClipLoss::new(MedProbClipConfig::default()).unwrap();
    let views = MultiView {
        image1: &g[0],
        image2: &short,
        text1: &g[2],
        text2: &g[3],
    };
    let e = loss
        .forward(&views, a.as_tensor(), b.as_tensor(), None, 0)
        .unwrap_err();
    assert!(e.to_string().contains("image2"), "{e}");
    let views = MultiView {
        image1: &g[0],
        image2: &g[1],
        text1: &g[2],
        text2: &g[3],
    };
    let zeros = Tensor::zeros((N, N), DType::F64, &Device::Cpu).unwrap();
    let e = loss
        .forward(&views, a.as_tensor(), b.as_tensor(), Some(&zeros), 0)
        .unwrap_err();
    assert!(e.to_string().contains("row 0"), "{e}");
    let wrong = Tensor::eye(N + 1, DType::F64, &Device::Cpu).unwrap();
    assert!(loss
        .forward(&views, a.as_tensor(), b.as_tensor(), Some(&wrong), 0)
        .is_err());
}
