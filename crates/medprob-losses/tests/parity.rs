//! Parity of MedProbCLIP's and PCME++'s losses with the official PyTorch code: every
//! `mpc_*` and `pcmepp_*` value and every `grad_*` gradient of `testdata/reference/`,
//! through candle's autograd, in float64 (tol 1e-9) and float32 (tol 1e-4).

#[path = "../../../testdata/fixture.rs"]
mod fixture;

use candle_core::{DType, Device, Tensor, Var};
use fixture::{assert_close, assert_zero, Fixture, TOL_F32, TOL_F64};
use medprob_core::GaussianTensor;
use medprob_losses::{MedProbClipConfig, MedProbClipLoss, MultiView, PcmeppConfig, PcmeppLoss};

const F32_ZERO: f64 = 1e-5;
const F64_ZERO: f64 = 1e-9;

struct Leaf {
    mu: Var,
    lv: Var,
}

impl Leaf {
    fn new(f: &Fixture, mu: &str, lv: &str, dtype: DType) -> Leaf {
        Leaf {
            mu: Var::from_tensor(&f.get(mu, dtype)).unwrap(),
            lv: Var::from_tensor(&f.get(lv, dtype)).unwrap(),
        }
    }
    fn gaussian(&self) -> GaussianTensor {
        GaussianTensor::new(self.mu.as_tensor().clone(), self.lv.as_tensor().clone()).unwrap()
    }
}

fn scalar_var(v: f64, dtype: DType) -> Var {
    Var::from_tensor(
        &Tensor::new(&[v], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
    )
    .unwrap()
}

fn one(v: f64) -> Tensor {
    Tensor::new(&[v], &Device::Cpu).unwrap()
}

fn medprobclip_config(f: &Fixture) -> MedProbClipConfig {
    MedProbClipConfig {
        lambda_image: f.param("lambda_I"),
        lambda_text: f.param("lambda_T"),
        beta_image: f.param("beta_vib_I"),
        beta_text: f.param("beta_vib_T"),
        ..MedProbClipConfig::default()
    }
}

#[test]
fn medprobclip_values_and_gradients() {
    for f in Fixture::all() {
        for (dtype, tol, zero) in [
            (DType::F64, TOL_F64, F64_ZERO),
            (DType::F32, TOL_F32, F32_ZERO),
        ] {
            let ctx = format!("{} {dtype:?}", f.name);
            let leaves: Vec<(&str, Leaf)> = ["i1", "t1", "i2", "t2"]
                .into_iter()
                .map(|k| {
                    (
                        k,
                        Leaf::new(&f, &format!("mu_{k}"), &format!("lv_{k}"), dtype),
                    )
                })
                .collect();
            let g: Vec<GaussianTensor> = leaves.iter().map(|(_, l)| l.gaussian()).collect();
            let a = scalar_var(f.param("a"), dtype);
            let b = scalar_var(f.param("b"), dtype);
            let loss = MedProbClipLoss::new(medprobclip_config(&f)).unwrap();
            let views = MultiView {
                image1: &g[0],
                text1: &g[1],
                image2: &g[2],
                text2: &g[3],
            };
            let out = loss
                .forward(&views, a.as_tensor(), b.as_tensor(), None, 0)
                .unwrap();
            let p = &out.parts;
            for (name, v) in [
                ("mpc_loss", p.total),
                ("mpc_loss_inter", p.inter.unwrap()),
                ("mpc_loss_intra_I", p.intra_image.unwrap()),
                ("mpc_loss_intra_T", p.intra_text.unwrap()),
                ("mpc_loss_vib", p.vib.unwrap()),
                ("mpc_kl_img", p.kl_image.unwrap()),
                ("mpc_kl_txt", p.kl_text.unwrap()),
            ] {
                assert_close(
                    &format!("{ctx} {name}"),
                    &one(v),
                    &f.get(name, DType::F64),
                    tol,
                );
            }
            assert_close(
                &format!("{ctx} total tensor"),
                &out.total,
                &f.get("mpc_loss", DType::F64),
                tol,
            );

            let grads = out.total.backward().unwrap();
            for (k, leaf) in &leaves {
                for (which, var) in [("mu", &leaf.mu), ("lv", &leaf.lv)] {
                    let name = format!("grad_mpc_{which}_{k}");
                    let got = grads
                        .get(var.as_tensor())
                        .unwrap_or_else(|| panic!("{ctx} {name}: no gradient"));
                    assert_close(
                        &format!("{ctx} {name}"),
                        got,
                        &f.get(&name, DType::F64),
                        tol,
                    );
                }
            }
            let ga = grads.get(a.as_tensor()).expect("a gets a gradient");
            assert_close(
                &format!("{ctx} grad_mpc_a"),
                ga,
                &f.get("grad_mpc_a", DType::F64),
                tol,
            );
            // b cancels in the softmax: zero up to rounding, in ours as in the reference.
            let gb = grads.get(b.as_tensor()).expect("b is in the graph");
            assert_zero(&format!("{ctx} grad_mpc_b"), gb, zero);
            assert_zero(
                &format!("{ctx} reference grad_mpc_b"),
                &f.get("grad_mpc_b", DType::F64),
                zero,
            );
        }
    }
}

fn pcmepp(
    f: &Fixture,
    dtype: DType,
    beta: f64,
    alpha: f64,
) -> (Leaf, Leaf, Var, Var, medprob_losses::LossOutput) {
    let i = Leaf::new(f, "pp_mu_i", "pp_lv_i", dtype);
    let t = Leaf::new(f, "pp_mu_t", "pp_lv_t", dtype);
    let a = scalar_var(f.param("pcmepp_init_negative_scale"), dtype);
    let b = scalar_var(f.param("pcmepp_init_shift"), dtype);
    let loss = PcmeppLoss::new(PcmeppConfig {
        vib_beta: beta,
        smoothness_alpha: alpha,
        ..PcmeppConfig::default()
    })
    .unwrap();
    let out = loss
        .forward(
            &i.gaussian(),
            &t.gaussian(),
            a.as_tensor(),
            b.as_tensor(),
            None,
        )
        .unwrap();
    (i, t, a, b, out)
}

#[test]
fn pcmepp_values_and_gradients() {
    for f in Fixture::all() {
        for (dtype, tol) in [(DType::F64, TOL_F64), (DType::F32, TOL_F32)] {
            let ctx = format!("{} {dtype:?}", f.name);
            let beta = f.param("pcmepp_vib_beta");
            let alpha = f.param("pcmepp_smoothness_alpha");
            let (_, _, _, _, plain) = pcmepp(&f, dtype, 0.0, 0.0);
            assert_close(
                &format!("{ctx} pcmepp_loss_plain"),
                &plain.total,
                &f.get("pcmepp_loss_plain", DType::F64),
                tol,
            );

            let (i, t, a, b, out) = pcmepp(&f, dtype, beta, alpha);
            assert_close(
                &format!("{ctx} pcmepp_loss"),
                &out.total,
                &f.get("pcmepp_loss", DType::F64),
                tol,
            );
            let kl = out.parts.kl_image.unwrap() + out.parts.kl_text.unwrap();
            assert_close(
                &format!("{ctx} pcmepp_vib"),
                &one(kl),
                &f.get("pcmepp_vib", DType::F64),
                tol,
            );
            assert_eq!(
                out.parts.n_pseudo.unwrap() as f64,
                f.get("pcmepp_n_pseudo", DType::F64)
                    .to_vec1::<f64>()
                    .unwrap()[0],
                "{ctx}"
            );

            let grads = out.total.backward().unwrap();
            for (k, leaf) in [("i", &i), ("t", &t)] {
                for (which, var) in [("mu", &leaf.mu), ("lv", &leaf.lv)] {
                    let name = format!("grad_pcmepp_{which}_{k}");
                    let got = grads
                        .get(var.as_tensor())
                        .unwrap_or_else(|| panic!("{ctx} {name}: no gradient"));
                    assert_close(
                        &format!("{ctx} {name}"),
                        got,
                        &f.get(&name, DType::F64),
                        tol,
                    );
                }
            }
            let ga = grads.get(a.as_tensor()).unwrap();
            assert_close(
                &format!("{ctx} grad a"),
                ga,
                &f.get("grad_pcmepp_negative_scale", DType::F64),
                tol,
            );
            let gb = grads.get(b.as_tensor()).unwrap();
            assert_close(
                &format!("{ctx} grad b"),
                gb,
                &f.get("grad_pcmepp_shift", DType::F64),
                tol,
            );
        }
    }
}

/// Turning PCME++'s pseudo-positives on adds exactly α × (BCE with the i2t pseudo-positive
/// targets + BCE with the t2i ones): checked as the reference's
/// `pcmepp_loss − pcmepp_loss_plain − 1e-4·pcmepp_vib`.
#[test]
fn pcmepp_pseudo_positive_term_is_exactly_the_smoothing() {
    for f in Fixture::all() {
        let beta = f.param("pcmepp_vib_beta");
        let alpha = f.param("pcmepp_smoothness_alpha");
        let reference = |k: &str| f.get(k, DType::F64).to_vec1::<f64>().unwrap()[0];
        let expected = reference("pcmepp_loss")
            - reference("pcmepp_loss_plain")
            - beta * reference("pcmepp_vib");
        let (_, _, _, _, with) = pcmepp(&f, DType::F64, beta, alpha);
        let (_, _, _, _, without) = pcmepp(&f, DType::F64, beta, 0.0);
        let added = with.parts.total - without.parts.total;
        assert!(
            (added - expected).abs() <= 1e-9 * expected.abs().max(1e-3),
            "{}: {added} vs {expected}",
            f.name
        );
        assert!((with.parts.pseudo.unwrap() - expected).abs() <= 1e-9 * expected.abs().max(1e-3));
        assert!(expected > 0.0, "{}: the smoothing term is active", f.name);
    }
}
