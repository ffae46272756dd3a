//! Parity with the official MedProbCLIP and PCME++ PyTorch code: every distance, logit and
//! KL tensor in `testdata/reference/`, in float64 (tol 1e-9) and float32 (tol 1e-4), through
//! both the differentiable path and the `f32` retrieval kernels.

#[path = "../../../testdata/fixture.rs"]
mod fixture;

use candle_core::{DType, Tensor};
use fixture::{assert_close, Fixture, TOL_F32, TOL_F64};
use medprob_core::{
    kernels, tensor, Distance, GaussianEmbeddings, GaussianTensor, MatchProbability,
};

fn gaussian(f: &Fixture, mu: &str, lv: &str, dtype: DType) -> GaussianTensor {
    GaussianTensor::new(f.get(mu, dtype), f.get(lv, dtype)).unwrap()
}

fn for_each_case_and_dtype(mut check: impl FnMut(&Fixture, DType, f64)) {
    for f in Fixture::all() {
        for (dtype, tol) in [(DType::F64, TOL_F64), (DType::F32, TOL_F32)] {
            check(&f, dtype, tol);
        }
    }
}

#[test]
fn mls_matches_medprobclip_csd() {
    for_each_case_and_dtype(|f, dtype, tol| {
        let i1 = gaussian(f, "mu_i1", "lv_i1", dtype);
        let t1 = gaussian(f, "mu_t1", "lv_t1", dtype);
        let d = tensor::pairwise(Distance::Mls, &i1, &t1).unwrap();
        assert_eq!(d.dtype(), dtype);
        let what = format!("{} {dtype:?} mpc_csd_i1_t1", f.name);
        assert_close(&what, &d, &f.get("mpc_csd_i1_t1", DType::F64), tol);
    });
}

#[test]
fn match_logits_match_medprobclip() {
    for_each_case_and_dtype(|f, dtype, tol| {
        let i1 = gaussian(f, "mu_i1", "lv_i1", dtype);
        let t1 = gaussian(f, "mu_t1", "lv_t1", dtype);
        let d = tensor::pairwise(Distance::Mls, &i1, &t1).unwrap();
        let dev = d.device().clone();
        let a = Tensor::new(&[f.param("a")], &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let b = Tensor::new(&[f.param("b")], &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let logits = tensor::match_logits(&d, &a, &b).unwrap();
        let what = format!("{} {dtype:?} mpc_logits_i1_t1", f.name);
        assert_close(&what, &logits, &f.get("mpc_logits_i1_t1", DType::F64), tol);
    });
}

#[test]
fn csd_matches_pcmepp() {
    for_each_case_and_dtype(|f, dtype, tol| {
        let i1 = gaussian(f, "mu_i1", "lv_i1", dtype);
        let t1 = gaussian(f, "mu_t1", "lv_t1", dtype);
        let d = tensor::pairwise(Distance::Csd, &i1, &t1).unwrap();
        let what = format!("{} {dtype:?} pcmepp_csd_i1_t1", f.name);
        assert_close(&what, &d, &f.get("pcmepp_csd_i1_t1", DType::F64), tol);

        let pi = gaussian(f, "pp_mu_i", "pp_lv_i", dtype);
        let pt = gaussian(f, "pp_mu_t", "pp_lv_t", dtype);
        let d = tensor::pairwise(Distance::Csd, &pi, &pt).unwrap();
        let what = format!("{} {dtype:?} pcmepp_csd", f.name);
        assert_close(&what, &d, &f.get("pcmepp_csd", DType::F64), tol);
    });
}

#[test]
fn pcmepp_match_probability_range() {
    for f in Fixture::all() {
        let pi = gaussian(&f, "pp_mu_i", "pp_lv_i", DType::F64);
        let pt = gaussian(&f, "pp_mu_t", "pp_lv_t", DType::F64);
        let d = tensor::pairwise(Distance::Csd, &pi, &pt).unwrap();
        let p = MatchProbability::PCMEPP_INIT;
        let probs: Vec<f64> = d
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .into_iter()
            .map(|x| p.probability(x))
            .collect();
        let lo = probs.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = probs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let got = Tensor::new(&[lo, hi], &candle_core::Device::Cpu).unwrap();
        let what = format!("{} pcmepp_match_prob_range", f.name);
        assert_close(
            &what,
            &got,
            &f.get("pcmepp_match_prob_range", DType::F64),
            TOL_F64,
        );
    }
}

#[test]
fn vib_kl_matches_medprobclip() {
    for_each_case_and_dtype(|f, dtype, tol| {
        let i1 = gaussian(f, "mu_i1", "lv_i1", dtype);
        // MedProbCLIP's reduction: sum over dimensions (ours), mean over the batch.
        let kl = i1.kl_to_standard_normal().unwrap().mean_all().unwrap();
        let what = format!("{} {dtype:?} vib_kl_i1", f.name);
        assert_close(&what, &kl, &f.get("vib_kl_i1", DType::F64), tol);
    });
}

/// The `f32` retrieval kernels on the same inputs (float32 tolerance).
#[test]
fn retrieval_kernels_match_the_reference() {
    for f in Fixture::all() {
        let emb = |mu: &str, lv: &str| {
            GaussianEmbeddings::from_tensors(&f.get(mu, DType::F64), &f.get(lv, DType::F64))
                .unwrap()
        };
        let (i1, t1) = (emb("mu_i1", "lv_i1"), emb("mu_t1", "lv_t1"));
        let (pi, pt) = (emb("pp_mu_i", "pp_lv_i"), emb("pp_mu_t", "pp_lv_t"));
        let to_t = |a: ndarray::Array2<f32>| {
            let (n, m) = a.dim();
            Tensor::from_vec(
                a.into_raw_vec_and_offset().0,
                (n, m),
                &candle_core::Device::Cpu,
            )
            .unwrap()
        };
        let mls = to_t(kernels::pairwise(Distance::Mls, &i1, &t1).unwrap());
        assert_close(
            &format!("{} kernel mls", f.name),
            &mls,
            &f.get("mpc_csd_i1_t1", DType::F64),
            TOL_F32,
        );
        let csd = to_t(kernels::pairwise(Distance::Csd, &i1, &t1).unwrap());
        assert_close(
            &format!("{} kernel csd", f.name),
            &csd,
            &f.get("pcmepp_csd_i1_t1", DType::F64),
            TOL_F32,
        );
        let csd = to_t(kernels::pairwise(Distance::Csd, &pi, &pt).unwrap());
        assert_close(
            &format!("{} kernel csd pp", f.name),
            &csd,
            &f.get("pcmepp_csd", DType::F64),
            TOL_F32,
        );
        let kl: f64 = i1.kl_to_standard_normal().mean().unwrap();
        let kl = Tensor::new(&[kl], &candle_core::Device::Cpu).unwrap();
        assert_close(
            &format!("{} embeddings kl", f.name),
            &kl,
            &f.get("vib_kl_i1", DType::F64),
            TOL_F32,
        );
    }
}

/// Every fixture file is present and byte-identical in size to what the README lists.
#[test]
fn fixtures_are_complete() {
    for f in Fixture::all() {
        let batch = f.param("batch") as usize;
        let dim = f.param("dim") as usize;
        assert_eq!(
            f.get("mu_i1", DType::F64).dims(),
            [batch, dim],
            "{}",
            f.name
        );
        assert_eq!(
            f.get("mpc_csd_i1_t1", DType::F64).dims(),
            [batch, batch],
            "{}",
            f.name
        );
    }
}
