//! The timm name mapping: a randomly initialised timm `VisionTransformer` (every parameter
//! perturbed so none is a trivial 0 or 1), saved with timm's tensor names by
//! scripts/golden_vit_timm.py, loads into ours and gives timm's outputs.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use medprob_encoders::{Pooling, VisionTransformer, VitConfig};

#[test]
fn timm_checkpoint_loads_and_matches_timm() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/golden");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("vit_timm_tiny.json")).unwrap())
            .unwrap();
    let dev = Device::Cpu;
    let n = 2 * 3 * 32 * 32;
    // torch.linspace(-1, 1, n) in float32.
    let x: Vec<f32> = (0..n)
        .map(|i| (-1.0 + 2.0 * i as f64 / (n - 1) as f64) as f32)
        .collect();
    let images = Tensor::from_vec(x, (2, 3, 32, 32), &dev).unwrap();
    for (pooling, key) in [(Pooling::Cls, "cls"), (Pooling::Mean, "mean_patch")] {
        let config = VitConfig {
            image_size: 32,
            patch_size: 8,
            channels: 3,
            dim: 48,
            depth: 2,
            heads: 3,
            mlp_ratio: 2.0,
            layer_norm_eps: 1e-6,
            dropout: 0.0,
            pooling,
        };
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(
                &[dir.join("vit_timm_tiny.safetensors")],
                DType::F32,
                &dev,
            )
            .unwrap()
        };
        let vit = VisionTransformer::new(&config, vb, 0).unwrap();
        let got = vit
            .forward(&images, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let want = golden[key].as_array().unwrap();
        for (g, w) in got.iter().zip(want) {
            for (a, b) in g.iter().zip(w.as_array().unwrap()) {
                let b = b.as_f64().unwrap();
                assert!((*a as f64 - b).abs() < 1e-4, "{key}: {a} vs {b}");
            }
        }
    }
}
