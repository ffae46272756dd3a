//! The batch loader on real radiographs (testdata/images): reproducibility across thread
//! counts, and bad studies as errors or as counted skips.

use std::path::PathBuf;
use std::sync::Arc;

use medprob_data::image::ImageTransform;
use medprob_data::loader::{LoaderConfig, OnBadStudy, StudyLoader};
use medprob_data::sampling::TextAugment;
use medprob_data::StudyRecord;

fn images_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/images")
}

fn studies(n: usize) -> Vec<StudyRecord> {
    (0..n)
        .map(|i| {
            let mut s = StudyRecord::new(format!("s{i}"));
            s.image_paths = vec!["00000001_000.png".into(), "00027426_000.png".into()];
            s.view_names = vec![
                "PA".into(),
                if i % 2 == 0 { "LATERAL" } else { "AP" }.into(),
            ];
            s.findings = format!("Finding number {i}. No pleural effusion.");
            s.impression = if i % 3 == 0 {
                String::new()
            } else {
                format!("Impression {i}.")
            };
            s
        })
        .collect()
}

fn config(workers: usize) -> LoaderConfig {
    LoaderConfig {
        image_root: images_dir(),
        batch_size: 4,
        image: ImageTransform {
            size: 64,
            ..Default::default()
        },
        text_augment: Some(TextAugment::default()),
        seed: 42,
        workers,
        ..Default::default()
    }
}

#[test]
fn same_seed_same_batches_whatever_the_thread_count() {
    let one = Arc::new(StudyLoader::new(studies(10), config(1)).unwrap());
    let two = Arc::new(StudyLoader::new(studies(10), config(2)).unwrap());
    assert_eq!(one.batches_per_epoch(), 3);
    let a: Vec<_> = one.train_epoch(0).map(Result::unwrap).collect();
    let b: Vec<_> = two.train_epoch(0).map(Result::unwrap).collect();
    assert_eq!(a.len(), 3);
    assert_eq!(a, b, "1 vs 2 workers");
    assert_eq!(a.iter().map(Vec::len).sum::<usize>(), 10);
    assert_eq!(a[0][0].images[0].len(), 3 * 64 * 64);
    // Another epoch: another order and other augmentations.
    let c: Vec<_> = one.train_epoch(1).map(Result::unwrap).collect();
    assert_ne!(a, c);
    // Evaluation is deterministic and unaugmented.
    assert_eq!(one.eval_batch(0).unwrap(), two.eval_batch(0).unwrap());
    let e = one.eval_batch(0).unwrap();
    assert_eq!(e[0].text, "Finding number 0. No pleural effusion.");
}

#[test]
fn two_views_differ_and_texts_follow_the_policy() {
    let loader = StudyLoader::new(
        studies(3),
        LoaderConfig {
            text_augment: None,
            shuffle: false,
            ..config(2)
        },
    )
    .unwrap();
    let batch = loader.train_batch(0, 0).unwrap();
    for item in &batch {
        assert_ne!(item.images[0], item.images[1], "{}", item.study_id);
    }
    // Study 0 has no impression: both texts are its findings; study 1 has both sections.
    assert_eq!(batch[0].texts[0], batch[0].texts[1]);
    assert_eq!(
        batch[1].texts,
        [
            "Finding number 1. No pleural effusion.".to_string(),
            "Impression 1.".to_string()
        ]
    );
}

#[test]
fn bad_studies_are_named_or_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("corrupt.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    std::fs::copy(
        images_dir().join("00000001_000.png"),
        dir.path().join("good.png"),
    )
    .unwrap();
    let mut good = StudyRecord::new("good");
    good.image_paths = vec!["good.png".into()];
    good.view_names = vec!["PA".into()];
    good.findings = "Clear.".into();
    let mut corrupt = good.clone();
    corrupt.study_id = "corrupt".into();
    corrupt.image_paths = vec!["corrupt.png".into()];
    let mut missing = good.clone();
    missing.study_id = "missing".into();
    missing.image_paths = vec!["nowhere.png".into()];
    let mut no_image = good.clone();
    no_image.study_id = "no-image".into();
    no_image.image_paths.clear();
    no_image.view_names.clear();
    let mut no_text = good.clone();
    no_text.study_id = "no-text".into();
    no_text.findings.clear();

    let cfg = |on_bad_study| LoaderConfig {
        image_root: dir.path().to_path_buf(),
        batch_size: 8,
        image: ImageTransform {
            size: 32,
            ..Default::default()
        },
        on_bad_study,
        shuffle: false,
        ..Default::default()
    };
    let e = StudyLoader::new(vec![good.clone(), no_image.clone()], cfg(OnBadStudy::Error))
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("study no-image: lists no image"), "{e}");
    let e = StudyLoader::new(vec![no_text.clone()], cfg(OnBadStudy::Error))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with("study no-text: both report sections are empty"),
        "{e}"
    );
    let l = StudyLoader::new(vec![good.clone(), corrupt.clone()], cfg(OnBadStudy::Error)).unwrap();
    let e = l.train_batch(0, 0).unwrap_err().to_string();
    assert!(
        e.starts_with("study corrupt: image ") && e.contains("corrupt.png: cannot decode image"),
        "{e}"
    );
    let l = StudyLoader::new(vec![missing.clone()], cfg(OnBadStudy::Error)).unwrap();
    let e = l.eval_batch(0).unwrap_err().to_string();
    assert!(
        e.starts_with("study missing: image ") && e.contains("nowhere.png"),
        "{e}"
    );

    let l = StudyLoader::new(
        vec![good, corrupt, missing, no_image, no_text],
        cfg(OnBadStudy::Skip),
    )
    .unwrap();
    assert_eq!(l.len(), 3);
    let batch = l.train_batch(0, 0).unwrap();
    assert_eq!(
        batch
            .iter()
            .map(|i| i.study_id.as_str())
            .collect::<Vec<_>>(),
        ["good"],
        "never a placeholder"
    );
    let skipped: Vec<String> = l.skipped().into_iter().map(|s| s.study_id).collect();
    assert_eq!(skipped, ["no-image", "no-text", "corrupt", "missing"]);
}

#[test]
fn bad_config_is_rejected() {
    let e = StudyLoader::new(
        studies(1),
        LoaderConfig {
            batch_size: 0,
            ..config(1)
        },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("batch_size"), "{e}");
    let e = StudyLoader::new(
        studies(1),
        LoaderConfig {
            image: ImageTransform {
                channels: 2,
                ..Default::default()
            },
            ..config(1)
        },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("channels"), "{e}");
}
