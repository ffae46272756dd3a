//! The model type: checkpoints reload bit for bit, frozen backbones stay put, and a
//! mismatched checkpoint names the tensor.

use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
use medprob_encoders::{
    BertConfig, Embedded, HeadKind, ImageBackbone, MedProbModel, ModelConfig, Pooling,
    ResNetConfig, VitConfig,
};

fn config(head: HeadKind) -> ModelConfig {
    ModelConfig {
        image: ImageBackbone::Vit(VitConfig {
            image_size: 16,
            patch_size: 8,
            dim: 12,
            heads: 2,
            depth: 1,
            ..VitConfig::default()
        }),
        text: BertConfig {
            hidden_size: 16,
            intermediate_size: 32,
            num_attention_heads: 2,
            num_hidden_layers: 1,
            max_position_embeddings: 16,
            ..BertConfig::tiny(40)
        },
        text_pooling: Pooling::Cls,
        embed_dim: 8,
        head,
        init_scale: 1.0,
        init_shift: 0.0,
        init_logit_scale: (1.0f64 / 0.07).ln(),
        freeze_image: false,
        freeze_text: false,
        seed: 11,
        method: "medprobclip".into(),
        tokenizer: None,
        normalize_mean: false,
        log_variance_offset: 0.0,
    }
}

#[test]
fn probabilistic_head_options_normalise_and_shift() {
    let dev = Device::Cpu;
    let (images, _, _) = inputs(&dev);
    let plain = MedProbModel::new(config(HeadKind::Probabilistic), &dev).unwrap();
    let shaped = MedProbModel::new(
        ModelConfig {
            normalize_mean: true,
            log_variance_offset: -2.0,
            ..config(HeadKind::Probabilistic)
        },
        &dev,
    )
    .unwrap();
    let (Embedded::Gaussian(a), Embedded::Gaussian(b)) = (
        plain.encode_images(&images, false).unwrap(),
        shaped.encode_images(&images, false).unwrap(),
    ) else {
        panic!("probabilistic heads give Gaussian embeddings");
    };
    let norms = b
        .mean
        .sqr()
        .unwrap()
        .sum(1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
    let (va, vb) = (
        a.log_var.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.log_var.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    for (x, y) in va.iter().zip(&vb) {
        assert!((x - 2.0 - y).abs() < 1e-5, "{x} {y}");
    }
}

fn inputs(dev: &Device) -> (Tensor, Tensor, Tensor) {
    let images = Tensor::from_vec(
        (0..2 * 3 * 16 * 16)
            .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
            .collect::<Vec<_>>(),
        (2, 3, 16, 16),
        dev,
    )
    .unwrap();
    let ids = Tensor::new(&[[2u32, 9, 14, 3], [2, 21, 3, 0]], dev).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1], [1, 1, 1, 0]], dev).unwrap();
    (images, ids, mask)
}

fn flat(e: &Embedded) -> Vec<f32> {
    match e {
        Embedded::Gaussian(g) => {
            let mut v = g.mean.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.extend(g.log_var.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            v
        }
        Embedded::Unit(t) => t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    }
}

#[test]
fn save_load_encode_is_bit_identical() {
    let dev = Device::Cpu;
    let (images, ids, mask) = inputs(&dev);
    for head in [HeadKind::Probabilistic, HeadKind::Deterministic] {
        let model = MedProbModel::new(config(head), &dev).unwrap();
        // Move the weights away from their initial values so a fresh model would differ.
        for (_, v) in model.all_vars() {
            let t = (v.as_tensor() * 1.01).unwrap();
            v.set(&t).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let back = MedProbModel::load(dir.path(), &dev).unwrap();
        assert_eq!(back.config(), model.config());
        assert_eq!(
            flat(&back.encode_images(&images, false).unwrap()),
            flat(&model.encode_images(&images, false).unwrap())
        );
        assert_eq!(
            flat(&back.encode_texts(&ids, &mask, false).unwrap()),
            flat(&model.encode_texts(&ids, &mask, false).unwrap())
        );
        let fresh = MedProbModel::new(config(head), &dev).unwrap();
        assert_ne!(
            flat(&fresh.encode_images(&images, false).unwrap()),
            flat(&model.encode_images(&images, false).unwrap())
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
    }
}

/// The ResNet backbone round-trips too, running statistics included.
#[test]
fn resnet_model_round_trips_with_its_running_statistics() {
    let dev = Device::Cpu;
    let (images, _, _) = inputs(&dev);
    let cfg = ModelConfig {
        image: ImageBackbone::ResNet(ResNetConfig {
            base_width: 2,
            ..Default::default()
        }),
        ..config(HeadKind::Deterministic)
    };
    let model = MedProbModel::new(cfg, &dev).unwrap();
    model.encode_images(&images, true).unwrap(); // updates running statistics
    assert!(model
        .trainable_vars()
        .iter()
        .all(|(n, _)| !n.contains("running_")));
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let back = MedProbModel::load(dir.path(), &dev).unwrap();
    assert_eq!(
        flat(&back.encode_images(&images, false).unwrap()),
        flat(&model.encode_images(&images, false).unwrap())
    );
}

#[test]
fn the_same_seed_builds_the_same_model() {
    let dev = Device::Cpu;
    let (images, _, _) = inputs(&dev);
    let a = MedProbModel::new(config(HeadKind::Probabilistic), &dev).unwrap();
    let b = MedProbModel::new(config(HeadKind::Probabilistic), &dev).unwrap();
    assert_eq!(
        flat(&a.encode_images(&images, false).unwrap()),
        flat(&b.encode_images(&images, false).unwrap())
    );
}

#[test]
fn frozen_backbone_is_unchanged_after_an_optimiser_step() {
    let dev = Device::Cpu;
    let (images, ids, mask) = inputs(&dev);
    let model = MedProbModel::new(
        ModelConfig {
            freeze_image: true,
            ..config(HeadKind::Probabilistic)
        },
        &dev,
    )
    .unwrap();
    let trainable = model.trainable_vars();
    assert!(trainable.iter().all(|(n, _)| !n.starts_with("image.")));
    assert!(trainable.iter().any(|(n, _)| n.starts_with("text.")));
    let before: Vec<(String, Vec<f32>)> = model
        .all_vars()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
        })
        .collect();
    let mut opt = candle_nn::AdamW::new(
        trainable.iter().map(|(_, v)| v.clone()).collect(),
        candle_nn::ParamsAdamW {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    let (Embedded::Gaussian(i), Embedded::Gaussian(t)) = (
        model.encode_images(&images, true).unwrap(),
        model.encode_texts(&ids, &mask, true).unwrap(),
    ) else {
        panic!("probabilistic heads")
    };
    let loss = ((i.mean - t.mean).unwrap().sqr().unwrap().sum_all().unwrap()
        + (i.log_var + t.log_var).unwrap().sum_all().unwrap())
    .unwrap();
    opt.backward_step(&loss).unwrap();
    for ((name, old), (_, var)) in before.iter().zip(model.all_vars()) {
        let new = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        if name.starts_with("image.") {
            assert_eq!(&new, old, "{name} is frozen");
        } else if name.starts_with("image_head.") || name.starts_with("text.encoder") {
            assert_ne!(&new, old, "{name} trains");
        }
    }
}

#[test]
fn a_mismatched_checkpoint_names_the_tensor() {
    let dev = Device::Cpu;
    let model = MedProbModel::new(config(HeadKind::Probabilistic), &dev).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let mut other = config(HeadKind::Probabilistic);
    other.embed_dim = 6;
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(&other).unwrap(),
    )
    .unwrap();
    let e = MedProbModel::load(dir.path(), &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("tensor image_head.proj.bias: expected shape [12], found [16]"),
        "{e}"
    );
    let e = MedProbModel::load(&dir.path().join("nothing"), &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("config.json: missing"), "{e}");
}

/// `a` and `b` agree to `tol` and have the same length.
fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{what}: {x} vs {y}");
    }
}

#[test]
fn joint_views_and_sections_embed_as_separate_calls() {
    let dev = Device::Cpu;
    let (images, ids, mask) = inputs(&dev);
    let other_images = (images.clone() * -0.5).unwrap();
    // A second section longer than the first: the first is padded inside the joint call.
    let ids2 = Tensor::new(&[[2u32, 5, 6, 7, 8, 3], [2, 30, 3, 0, 0, 0]], &dev).unwrap();
    let mask2 = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], &dev).unwrap();
    for pooling in [Pooling::Cls, Pooling::Mean] {
        let model = MedProbModel::new(
            ModelConfig {
                text_pooling: pooling,
                ..config(HeadKind::Probabilistic)
            },
            &dev,
        )
        .unwrap();
        let joint = model
            .encode_image_views(&[&images, &other_images], false)
            .unwrap();
        assert_eq!(joint.len(), 2);
        for (j, x) in joint.iter().zip([&images, &other_images]) {
            let alone = model.encode_images(x, false).unwrap();
            close(&flat(j), &flat(&alone), 1e-5, "image view");
        }
        let joint = model
            .encode_text_sections(&[(&ids, &mask), (&ids2, &mask2)], false)
            .unwrap();
        assert_eq!(joint.len(), 2);
        for (j, (i, m)) in joint.iter().zip([(&ids, &mask), (&ids2, &mask2)]) {
            let alone = model.encode_texts(i, m, false).unwrap();
            close(&flat(j), &flat(&alone), 1e-5, "report section");
        }
    }

    // Training through the joint calls reaches both backbones.
    let model = MedProbModel::new(config(HeadKind::Probabilistic), &dev).unwrap();
    let e = model
        .encode_image_views(&[&images, &other_images], true)
        .unwrap();
    let t = model
        .encode_text_sections(&[(&ids, &mask), (&ids2, &mask2)], true)
        .unwrap();
    let loss = e
        .iter()
        .chain(&t)
        .map(|x| x.mean().sqr().unwrap().sum_all().unwrap())
        .reduce(|a, b| (a + b).unwrap())
        .unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in model.trainable_vars() {
        if name.starts_with("image.") || name.starts_with("text.encoder") {
            let g = grads.get(var.as_tensor());
            let norm = g.map(|g| {
                g.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            });
            assert!(norm.is_some_and(|n| n > 0.0), "{name} gets no gradient");
        }
    }
}
