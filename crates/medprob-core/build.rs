//! Compiles `kernels/*.cu` to PTX when the `cuda` feature is on. The default (CPU) build
//! runs nothing here and needs no CUDA toolkit.
//!
//! nvcc is `$NVCC`, else `$CUDA_HOME/bin/nvcc`, else `nvcc` on `PATH`. The PTX targets
//! `compute_$CUDA_COMPUTE_CAP` (the variable candle-kernels reads too; default 70), and the
//! driver compiles it for the GPU it runs on when the module is first loaded. A driver
//! refuses PTX whose ISA version is newer than itself, so the toolkit that builds must not
//! be newer than the CUDA version of the driver that runs (`scripts/gpu_check.sh` pins
//! both); the ISA written is `.version` at the top of `$OUT_DIR/mls_pairwise.ptx`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const KERNELS: &[&str] = &["mls_pairwise"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    for var in ["NVCC", "CUDA_HOME", "CUDA_COMPUTE_CAP"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = nvcc();
    let cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "70".into());
    if cap.is_empty() || !cap.chars().all(|c| c.is_ascii_alphanumeric()) {
        panic!("CUDA_COMPUTE_CAP={cap:?} is not a compute capability such as 80 or 90a");
    }
    for name in KERNELS {
        let src = format!("kernels/{name}.cu");
        println!("cargo::rerun-if-changed={src}");
        let ptx = out_dir.join(format!("{name}.ptx"));
        let output = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17"])
            .arg(format!("-arch=compute_{cap}"))
            .arg(&src)
            .arg("-o")
            .arg(&ptx)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "medprob-core's `cuda` feature compiles {src} with nvcc, but `{}` could not \
                     be run ({e}). Install a CUDA toolkit and put nvcc on PATH, or set NVCC or \
                     CUDA_HOME (scripts/gpu_check.sh sets one up from PyPI's wheels).",
                    nvcc.display()
                )
            });
        if !output.status.success() {
            panic!(
                "`{} --ptx -arch=compute_{cap} {src}` failed ({}):\n{}{}",
                nvcc.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

fn nvcc() -> PathBuf {
    if let Some(path) = env::var_os("NVCC") {
        return path.into();
    }
    if let Some(home) = env::var_os("CUDA_HOME") {
        let path = PathBuf::from(home).join("bin").join("nvcc");
        if path.exists() {
            return path;
        }
    }
    "nvcc".into()
}
