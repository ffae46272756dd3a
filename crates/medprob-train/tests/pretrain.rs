//! The shared label-pretraining stage: it learns the training labels, writes its backbones
//! and tokenizer, every method starts from exactly them, a finished stage is reused, and a
//! folder holding another stage or a CSV without labels is a clear error.

use std::path::{Path, PathBuf};

use candle_core::Device;
use medprob_data::synth::{write_dataset, SynthConfig};
use medprob_encoders::{ImageBackbone, MedProbModel, VitConfig};
use medprob_train::config::{DataConfig, ModelSpec};
use medprob_train::pretrain::{load_into, pretrain, stage_tokenizer, PretrainConfig};
use medprob_train::setup::build_model;
use medprob_train::{train, Method, TextSpec, TrainConfig, Verbosity};

const QUIET: Verbosity = Verbosity {
    progress: false,
    print_config: false,
};

fn dataset(dir: &Path) -> PathBuf {
    let cfg = SynthConfig {
        studies: 120,
        image_size: 64,
        split_fractions: (0.7, 0.15),
        seed: 5,
        ..SynthConfig::default()
    };
    write_dataset(&cfg, dir).unwrap();
    dir.join("studies.csv")
}

fn tiny(studies: &Path, out: &Path, stage: &Path) -> TrainConfig {
    TrainConfig {
        method: Method::MedProbClip,
        data: DataConfig {
            studies: studies.to_path_buf(),
            image_size: 32,
            max_tokens: 32,
            ..DataConfig::default()
        },
        model: ModelSpec {
            image: ImageBackbone::Vit(VitConfig {
                image_size: 32,
                patch_size: 8,
                dim: 32,
                depth: 1,
                heads: 2,
                ..VitConfig::default()
            }),
            text: TextSpec::Tiny {
                hidden_size: 32,
                layers: 1,
                heads: 2,
                vocab_size: 300,
            },
            embed_dim: 16,
            ..ModelSpec::default()
        },
        epochs: 1,
        batch_size: 8,
        eval_batch_size: 32,
        seed: 2,
        out: out.to_path_buf(),
        pretrain: PretrainConfig {
            epochs: 6,
            lr: 3e-3,
            dir: Some(stage.to_path_buf()),
        },
        ..TrainConfig::default()
    }
}

fn steps(log: &Path) -> Vec<(f64, f64)> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "step")
        .map(|v| {
            (
                v["image_loss"].as_f64().unwrap(),
                v["text_loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn tensors(model: &MedProbModel, prefix: &str) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = model
        .backbone_tensors(prefix)
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn the_stage_learns_the_labels_and_every_method_starts_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = dataset(&tmp.path().join("data"));
    let stage = tmp.path().join("pretrain");
    let cfg = tiny(&csv, &tmp.path().join("run"), &stage);
    let done = pretrain(&cfg, QUIET)
        .unwrap()
        .expect("epochs > 0 runs the stage");
    for f in [
        "image.safetensors",
        "text.safetensors",
        "tokenizer.json",
        "pretrain.json",
    ] {
        assert!(stage.join(f).is_file(), "{f}");
    }
    // It learns: the text loss (labels are read from the text) of the last epoch is well
    // below that of the first steps, and both classifiers beat chance on validation.
    let s = steps(&stage.join("log.jsonl"));
    let per_epoch = s.len() / 6;
    let mean = |r: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        r.iter().map(pick).sum::<f64>() / r.len() as f64
    };
    let (first, last) = (&s[..per_epoch], &s[s.len() - per_epoch..]);
    assert!(
        mean(last, |p| p.1) < 0.7 * mean(first, |p| p.1),
        "text loss {} → {}",
        mean(first, |p| p.1),
        mean(last, |p| p.1)
    );
    assert!(mean(last, |p| p.0) < mean(first, |p| p.0));
    let text_auroc = done.text_auroc.expect("validation has both classes");
    assert!(text_auroc > 0.6, "text AUROC {text_auroc}");
    assert!(done.image_auroc.is_some());

    // A fresh model loaded from the stage has exactly the stage's backbones.
    let vocab = stage_tokenizer(&done, 32).unwrap().vocab_size();
    let model = build_model(&cfg, vocab, &Device::Cpu).unwrap();
    let before = tensors(&model, "image");
    load_into(&model, &done).unwrap();
    let after = tensors(&model, "image");
    assert_ne!(before, after, "loading changed nothing");
    let file = candle_core::safetensors::load(done.image_weights(), &Device::Cpu).unwrap();
    for (name, values) in &after {
        assert_eq!(
            &file[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            values,
            "{name}"
        );
    }

    // Training reuses the finished stage (the log is not rewritten) and starts from it:
    // the run's tokenizer is the stage's.
    let log_before = std::fs::read_to_string(stage.join("log.jsonl")).unwrap();
    train(&cfg, false, QUIET).unwrap();
    assert_eq!(
        std::fs::read_to_string(stage.join("log.jsonl")).unwrap(),
        log_before
    );
    assert_eq!(
        std::fs::read(cfg.out.join("tokenizer.json")).unwrap(),
        std::fs::read(stage.join("tokenizer.json")).unwrap()
    );
    assert!(cfg.out.join("curves.png").is_file());
    let val = std::fs::read_to_string(cfg.out.join("log.jsonl")).unwrap();
    let v: serde_json::Value = val
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["event"] == "validation")
        .unwrap();
    let p = v["plausible_i2t_p1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p), "{p}");

    // Another setting against the same folder: an error naming the field, nothing lost.
    let mut other = cfg.clone();
    other.pretrain.lr = 1e-3;
    let e = pretrain(&other, QUIET).unwrap_err().to_string();
    assert!(
        e.contains("pretrain.dir") && e.contains("other settings"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(stage.join("log.jsonl")).unwrap(),
        log_before
    );
    // Off: nothing runs.
    let mut off = cfg.clone();
    off.pretrain.epochs = 0;
    assert!(pretrain(&off, QUIET).unwrap().is_none());
}

#[test]
fn a_csv_without_labels_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = dataset(&tmp.path().join("data"));
    // Keep the first seven columns (ids, paths, views, text, patient, split): no labels.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let mut w = csv::Writer::from_writer(Vec::new());
    let headers = rdr.headers().unwrap().clone();
    w.write_record(headers.iter().take(7)).unwrap();
    for r in rdr.records() {
        w.write_record(r.unwrap().iter().take(7)).unwrap();
    }
    let bare = tmp.path().join("data").join("bare.csv");
    std::fs::write(&bare, w.into_inner().unwrap()).unwrap();
    let stage = tmp.path().join("pretrain");
    let cfg = tiny(&bare, &tmp.path().join("run"), &stage);
    let e = pretrain(&cfg, QUIET).unwrap_err().to_string();
    assert!(e.contains("bare.csv") && e.contains("label"), "{e}");
    assert!(!stage.join("pretrain.json").exists());
}
