//! Shared by the parity tests of several crates (included with `#[path]`): loads the
//! reference fixtures in `testdata/reference/` (copied byte-identical from the official
//! MedProbCLIP and PCME++ PyTorch runs; see the README there) and compares tensors with the
//! scale-relative tolerance that README prescribes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

/// Float64 tolerance of the fixtures' README.
pub const TOL_F64: f64 = 1e-9;
/// Float32 tolerance of the fixtures' README.
pub const TOL_F32: f64 = 1e-4;
/// The four cases.
pub const CASES: [&str; 4] = ["small", "medium", "wide_variance", "gentle"];

pub struct Fixture {
    pub name: &'static str,
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/reference")
}

impl Fixture {
    pub fn load(name: &'static str) -> Fixture {
        let path = dir().join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()));
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .unwrap_or_else(|e| panic!("parsing fixture header {}: {e}", path.display()));
        let meta = header.metadata().clone().unwrap_or_default();
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .unwrap_or_else(|e| panic!("loading fixture tensors {}: {e}", path.display()));
        Fixture {
            name,
            tensors,
            meta,
        }
    }

    pub fn all() -> Vec<Fixture> {
        CASES.into_iter().map(Fixture::load).collect()
    }

    /// A stored tensor converted to `dtype`.
    pub fn get(&self, key: &str, dtype: DType) -> Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("fixture {} has no tensor {key}", self.name))
            .to_dtype(dtype)
            .unwrap()
    }

    /// A run-time parameter from the header metadata.
    pub fn param(&self, key: &str) -> f64 {
        self.meta
            .get(key)
            .unwrap_or_else(|| panic!("fixture {} has no parameter {key}", self.name))
            .parse()
            .unwrap_or_else(|e| panic!("fixture {} parameter {key}: {e}", self.name))
    }
}

/// `max|x − ref| ≤ tol · max(max|ref|, 1e-3)`; returns the relative error for reporting.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) -> f64 {
    let got = got.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let want = want.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let g = got.to_vec1::<f64>().unwrap();
    let w = want.to_vec1::<f64>().unwrap();
    let scale = w.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-3);
    let err = g
        .iter()
        .zip(&w)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        g.iter().all(|x| x.is_finite()) && err <= tol * scale,
        "{what}: max error {err:e} exceeds {tol:e} × scale {scale:e}"
    );
    err / scale
}

/// For tensors that are mathematically zero: `max|x| ≤ tol`.
pub fn assert_zero(what: &str, got: &Tensor, tol: f64) {
    let v = got
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let m = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(m <= tol, "{what}: |x| = {m:e} exceeds {tol:e}");
}
