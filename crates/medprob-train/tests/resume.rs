//! Training end to end on a tiny SynthCXR: a run killed mid-epoch (the process aborts, as
//! under `kill -9`) and continued with `--resume` ends with exactly the weights of an
//! uninterrupted run; bad configs fail before any work; evaluation fills the report.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use medprob_data::synth::{write_dataset, SynthConfig};
use medprob_encoders::{ImageBackbone, MedProbModel, VitConfig};
use medprob_train::checkpoint::ABORT_IN_CHECKPOINT_ENV;
use medprob_train::config::{DataConfig, ModelSpec};
use medprob_train::pretrain::PretrainConfig;
use medprob_train::trainer::{ABORT_AFTER_STEP_ENV, NAN_AT_ATTEMPTS_ENV};
use medprob_train::{train, Method, TextSpec, TrainConfig, Verbosity};

const QUIET: Verbosity = Verbosity {
    progress: false,
    print_config: false,
};

/// A dataset shared by the tests of this file (written once per process).
fn dataset() -> PathBuf {
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("medprob-train-test-{}", std::process::id()));
    let csv = dir.join("studies.csv");
    if !csv.exists() {
        let cfg = SynthConfig {
            studies: 80,
            image_size: 64,
            split_fractions: (0.7, 0.15),
            seed: 3,
            ..SynthConfig::default()
        };
        write_dataset(&cfg, &dir).unwrap();
    }
    csv
}

fn tiny(method: Method, studies: &Path, out: &Path) -> TrainConfig {
    TrainConfig {
        method,
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
                dropout: 0.1,
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
        epochs: 2,
        batch_size: 8,
        eval_batch_size: 16,
        checkpoint_every: 2,
        seed: 11,
        out: out.to_path_buf(),
        // These tests are about the training loop; tests/pretrain.rs covers the stage.
        pretrain: PretrainConfig {
            epochs: 0,
            ..PretrainConfig::default()
        },
        ..TrainConfig::default()
    }
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let m = MedProbModel::load(dir, &Device::Cpu).unwrap();
    m.all_vars()
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
        .collect()
}

/// Panics naming the first variable that differs, without printing the tensors.
fn assert_same_weights(a: &Path, b: &Path) {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.len(), wb.len());
    for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        let diff = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            va == vb,
            "{na} differs between {} and {} (max |Δ| = {diff})",
            a.display(),
            b.display()
        );
    }
}

fn latest(out: &Path) -> PathBuf {
    medprob_train::checkpoint::resolve(&out.join("checkpoints"), "LATEST")
        .unwrap()
        .unwrap()
}

/// Run only as the child process of the test below (hence ignored): train until the
/// abort hook fires.
#[test]
#[ignore = "helper: runs inside the child process of killed_mid_epoch_then_resumed_equals_uninterrupted"]
fn child_killed_run() {
    let Ok(out) = std::env::var("MEDPROB_TEST_CHILD_OUT") else {
        return; // only meaningful inside the child process
    };
    let cfg = tiny(Method::MedProbClip, &dataset_from_env(), Path::new(&out));
    let _ = train(&cfg, false, QUIET);
    unreachable!("the abort hook should have stopped the process");
}

/// Child process of the fault-injection test: train, exit 0 on success and 3 on an error
/// (printed to stderr).
#[test]
#[ignore = "helper: runs inside the child processes of faults_mid_training_leave_loadable_checkpoints"]
fn child_fault_run() {
    let Ok(out) = std::env::var("MEDPROB_TEST_CHILD_OUT") else {
        return;
    };
    let cfg = tiny(Method::MedProbClip, &dataset_from_env(), Path::new(&out));
    match train(&cfg, false, QUIET) {
        Ok(_) => std::process::exit(0),
        Err(e) => {
            eprintln!("TRAIN ERROR: {e}");
            std::process::exit(3)
        }
    }
}

fn run_child(out: &Path, csv: &Path, env: (&str, &str)) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_fault_run",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("MEDPROB_TEST_CHILD_OUT", out)
        .env("MEDPROB_TEST_CHILD_DATA", csv)
        .env(env.0, env.1)
        .output()
        .unwrap()
}

fn all_finite(dir: &Path) -> bool {
    weights(dir)
        .iter()
        .all(|(_, v)| v.iter().all(|x| x.is_finite()))
}

#[test]
fn faults_mid_training_leave_loadable_checkpoints() {
    let csv = dataset();
    let tmp = tempfile::tempdir().unwrap();

    // One NaN loss: the step is skipped, logged with its batch's study ids, and training
    // goes on to the end with finite weights (13 of the 14 steps taken).
    let a = tmp.path().join("one-nan");
    let o = run_child(&a, &csv, (NAN_AT_ATTEMPTS_ENV, "3"));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let log = std::fs::read_to_string(a.join("log.jsonl")).unwrap();
    let skipped: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "skipped_step")
        .collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["reason"], "non-finite loss");
    assert_eq!(skipped[0]["study_ids"].as_array().unwrap().len(), 8);
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("\"event\":\"step\""))
            .count(),
        13
    );
    assert!(all_finite(&latest(&a)));

    // Five NaN losses in a row (max_bad_steps = 5): attempts 4–7 skip the rest of epoch 1
    // (its end is checkpointed after step 3), attempt 8 opens epoch 2 and stops the run with
    // an error naming the last good checkpoint, which loads, is finite and resumes.
    let b = tmp.path().join("diverged");
    let o = run_child(&b, &csv, (NAN_AT_ATTEMPTS_ENV, "4,5,6,7,8"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("5 consecutive steps") && err.contains("last good checkpoint"),
        "{err}"
    );
    let state = medprob_train::checkpoint::load_state(&latest(&b)).unwrap();
    assert_eq!((state.epoch, state.step), (1, 3));
    assert!(all_finite(&latest(&b)));
    train(&tiny(Method::MedProbClip, &csv, &b), true, QUIET).unwrap();

    // Killed inside the second checkpoint write (files written, pointer not yet moved):
    // LATEST still names the first, complete checkpoint, which loads and resumes.
    let c = tmp.path().join("killed-in-write");
    let o = run_child(&c, &csv, (ABORT_IN_CHECKPOINT_ENV, "2"));
    assert!(!o.status.success());
    assert_eq!(
        o.status.code(),
        None,
        "abort() ends the process by a signal"
    );
    let state = medprob_train::checkpoint::load_state(&latest(&c)).unwrap();
    assert_eq!(state.step, 2);
    assert!(all_finite(&latest(&c)));
    let resumed = train(&tiny(Method::MedProbClip, &csv, &c), true, QUIET).unwrap();
    assert_eq!(resumed.steps, 14);
}

fn dataset_from_env() -> PathBuf {
    PathBuf::from(std::env::var("MEDPROB_TEST_CHILD_DATA").unwrap())
}

#[test]
fn killed_mid_epoch_then_resumed_equals_uninterrupted() {
    let csv = dataset();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("straight"), tmp.path().join("killed"));

    let done = train(&tiny(Method::MedProbClip, &csv, &a), false, QUIET).unwrap();
    assert_eq!(done.steps, 2 * (56 / 8));
    // Training itself is deterministic.
    let again = tmp.path().join("again");
    train(&tiny(Method::MedProbClip, &csv, &again), false, QUIET).unwrap();
    assert_same_weights(&latest(&a), &latest(&again));

    // Kill after step 5 of 7 in epoch 1: the last checkpoint is at step 4, mid-epoch.
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_killed_run",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("MEDPROB_TEST_CHILD_OUT", &b)
        .env("MEDPROB_TEST_CHILD_DATA", &csv)
        .env(ABORT_AFTER_STEP_ENV, "5")
        .status()
        .unwrap();
    assert!(!status.success(), "the child should have been aborted");
    let state = medprob_train::checkpoint::load_state(&latest(&b)).unwrap();
    assert_eq!((state.epoch, state.step, state.batch), (0, 4, 4));

    // Resuming without --resume is refused; with it, the run completes.
    let e = train(&tiny(Method::MedProbClip, &csv, &b), false, QUIET).unwrap_err();
    assert!(e.to_string().contains("--resume"), "{e}");
    let resumed = train(&tiny(Method::MedProbClip, &csv, &b), true, QUIET).unwrap();
    assert_eq!(resumed.steps, done.steps);
    assert_same_weights(&latest(&a), &latest(&b));
    assert_same_weights(&done.best_checkpoint, &resumed.best_checkpoint);
    assert_eq!(done.best_rsum, resumed.best_rsum);

    // The log has every step of both parts, and validation once per epoch.
    let log = std::fs::read_to_string(b.join("log.jsonl")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains("\"validation\"")).count(),
        2
    );
}

#[test]
fn every_method_trains_and_bad_configs_fail_first() {
    let csv = dataset();
    let tmp = tempfile::tempdir().unwrap();
    for method in Method::ALL {
        let mut cfg = tiny(method, &csv, &tmp.path().join(method.key()));
        cfg.epochs = 1;
        let r = train(&cfg, false, QUIET).unwrap();
        assert!(r.best_rsum > 0.0, "{method:?}");
        let log = std::fs::read_to_string(cfg.out.join("log.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        assert!(first["lr"].as_f64().unwrap() > 0.0);
        assert!(first["parts"]["total"].as_f64().unwrap().is_finite());
    }
    // Bad values fail before anything is written.
    let out = tmp.path().join("bad");
    let mut cfg = tiny(Method::Clip, &csv, &out);
    cfg.optim.lr = -1.0;
    let e = train(&cfg, false, QUIET).unwrap_err();
    assert!(e.to_string().contains("optim.lr"), "{e}");
    let mut cfg = tiny(Method::Clip, &csv, &out);
    cfg.data.studies = tmp.path().join("missing.csv");
    let e = train(&cfg, false, QUIET).unwrap_err();
    assert!(e.to_string().contains("data.studies"), "{e}");
    assert!(!out.exists());
}

#[test]
fn evaluation_is_deterministic_and_retrieval_answers() {
    use medprob_metrics::corruption::Corruption;
    use medprob_train::evaluation::EvalOptions;
    use medprob_train::pipeline::evaluate_checkpoint;
    use medprob_train::retrieve::{Query, Retriever};

    let csv = dataset();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tiny(Method::MedProbClip, &csv, &tmp.path().join("run"));
    cfg.epochs = 1;
    let trained = train(&cfg, false, QUIET).unwrap();
    let options = EvalOptions {
        corruptions: vec![Corruption::Rotation, Corruption::GaussianNoise],
        ..EvalOptions::default()
    };
    let evaluated = evaluate_checkpoint(&cfg, &cfg.out, &options, |_| {}).unwrap();
    let a = evaluated.report.clone();
    let b = evaluate_checkpoint(&cfg, &trained.best_checkpoint, &options, |_| {})
        .unwrap()
        .report;
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    assert_eq!(a.robustness.len(), 1 + 2 * 5);
    assert!(a.robustness[0].corruption.is_none());
    let z = a.zero_shot.as_ref().expect("SynthCXR has labels");
    assert_eq!(z.classes.len(), 13);
    // Prompts mined from the training reports, in SynthCXR's words, with the generic
    // templates scored beside them.
    use medprob_metrics::zero_shot::{PromptSet, PromptSource};
    assert_eq!(z.prompts.len(), 13);
    let cardio = &z.prompts[1];
    assert_eq!(cardio.finding, "Cardiomegaly");
    assert_eq!(cardio.negative_source, PromptSource::Corpus);
    assert!(
        cardio.negative.iter().any(|s| s == "Heart size is normal."),
        "{cardio:?}"
    );
    assert!(
        cardio.positive.iter().all(|s| !s.contains("normal")),
        "{cardio:?}"
    );
    let generic = a.zero_shot_generic.as_ref().expect("generic beside mined");
    assert_eq!(generic.prompts[1], PromptSet::generic("Cardiomegaly"));
    assert!(generic.mined_with.is_none() && z.mined_with.is_some());
    assert!(!a.selective.is_empty() && !a.risk_coverage.is_empty());
    assert_eq!(a.label_retrieval.len(), 3);

    // Plausible matches by labels and, from the generator's state.jsonl, by state; both
    // ways, with the label oracle and the state oracle, hubness, and the top-10 lists.
    use medprob_metrics::relevance::RelevanceKind;
    let kinds: Vec<RelevanceKind> = a.plausible.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, vec![RelevanceKind::Labels, RelevanceKind::State]);
    let test_studies = a.retrieval.image_to_text.queries;
    for p in &a.plausible {
        assert_eq!(p.directions.len(), 2);
        for d in &p.directions {
            assert_eq!(d.queries + d.without_relevant, test_studies);
            // Every query's own report has its labels and state: all are answerable, and
            // plausible recall is at least instance recall.
            assert_eq!(d.without_relevant, 0);
            assert!(d.recall.windows(2).all(|w| w[0].1 <= w[1].1));
            assert!((0.0..=1.0).contains(&d.calibration.ece));
        }
    }
    let labels_i2t = &a.plausible[0].directions[0];
    assert!(labels_i2t.recall[2].1 * 100.0 >= a.retrieval.image_to_text.recall_at(10).unwrap());
    assert_eq!(a.hubness.len(), 2);
    let names: Vec<&str> = evaluated.oracles.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, vec!["labels", "state"]);
    assert_eq!(evaluated.retrievals.i2t.len(), test_studies);
    assert!(evaluated
        .retrievals
        .t2i
        .values()
        .all(|v| v.len() == 10.min(test_studies)));
    let report = medprob_metrics::report::EvaluationReport {
        title: "t".into(),
        dataset: "d".into(),
        notes: vec![],
        methods: vec![a.clone()],
        oracles: evaluated.oracles.clone(),
    };
    let summary = medprob_metrics::summary::summary(&report);
    let m = &summary["methods"]["medprobclip"];
    for key in [
        "i2t_r1",
        "rsum",
        "oracle_i2t_r10",
        "oracle_state_t2i_r1",
        "plausible_i2t_p1",
        "plausible_state_t2i_p1",
        "plausible_ece_i2t",
        "plausible_aurc_i2t_k1",
        "plausible_augrc_i2t_k1",
        "plausible_eaurc_i2t_k1",
        "best_confidence_eaurc_i2t_k1",
        "sgr_coverage_i2t_k5",
        "hub_max_share_i2t",
    ] {
        let v = m[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {}", m[key]));
        assert!(v.is_finite(), "{key}");
    }
    // N₁₀ is the same for every report when the gallery has at most 10: no skewness.
    assert_eq!(
        m["hub_skew_i2t"].is_null(),
        test_studies <= 10,
        "{}",
        m["hub_skew_i2t"]
    );
    assert_eq!(
        m["i2t_r10"].as_f64().unwrap(),
        a.retrieval.image_to_text.recall_at(10).unwrap() / 100.0
    );

    let r = Retriever::new(
        &cfg,
        &cfg.out,
        medprob_data::Split::Test,
        &medprob_train::retrieve::RetrieveOptions::new(3, 0.5, 0.1),
    )
    .unwrap();
    let studies = medprob_data::read_studies(&csv).unwrap();
    let study = studies
        .iter()
        .find(|s| s.split == Some(medprob_data::Split::Test))
        .unwrap();
    let image = csv.parent().unwrap().join(&study.image_paths[0]);
    let ans = r.query(&Query::Image(image.clone())).unwrap();
    assert_eq!(ans.hits.len(), 3);
    // The image is one of the CSV's: every hit is marked, its own study by id and the
    // others by label agreement.
    let own = medprob_train::evaluation::label_mask(study);
    for h in &ans.hits {
        assert_eq!(h.own_study, Some(h.study_id == study.study_id));
        let other = studies.iter().find(|s| s.study_id == h.study_id).unwrap();
        assert_eq!(
            h.plausible,
            Some(medprob_train::evaluation::label_mask(other) == own)
        );
    }
    assert!(ans.calibration.contains("label set"), "{}", ans.calibration);
    assert!(
        ans.calibration.contains("hub-corrected"),
        "{}",
        ans.calibration
    );
    assert!(ans.guarantee.contains("plausible"), "{}", ans.guarantee);
    assert!(ans.hits.windows(2).all(|w| w[0].distance <= w[1].distance));
    assert!(ans
        .hits
        .iter()
        .all(|h| (0.0..=1.0).contains(&h.probability)));
    assert!(ans.uncertainty.is_some_and(|u| u > 0.0));
    assert!(ans.guarantee.contains("with probability"));
    let ans = r.query(&Query::Report(study.impression.clone())).unwrap();
    assert!(ans.hits.iter().all(|h| h.item.ends_with(".png")));
    assert!(
        ans.hits
            .iter()
            .all(|h| h.plausible.is_none() && h.own_study.is_none()),
        "a free-text report's truth is unknown"
    );

    // The same answers from the on-disk indexes: ids, distances, probabilities, decision
    // (the indexes store the hub correction's offsets).
    let dir = tmp.path().join("index");
    r.write_indexes(&dir).unwrap();
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reports").join("index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(info["gallery_offset"], true);
    assert!(
        r.write_indexes(&dir).is_err(),
        "an existing index is never overwritten"
    );
    // With the query's truth, both show the items found and which are plausible.
    let truth = medprob_train::retrieve::QueryTruth {
        study_id: Some(study.study_id.clone()),
        labels: medprob_train::evaluation::label_mask(study),
    };
    for q in [
        Query::Image(image.clone()),
        Query::Report(study.impression.clone()),
    ] {
        let direct = r.query_with(&q, &truth).unwrap();
        let indexed =
            medprob_train::retrieve::query_index(&cfg, &cfg.out, &dir, &q, &truth, 3).unwrap();
        let key = |a: &medprob_train::retrieve::Answer| {
            a.hits
                .iter()
                .map(|h| {
                    (
                        h.study_id.clone(),
                        h.distance,
                        h.probability,
                        h.item.clone(),
                        h.plausible,
                        h.own_study,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert!(direct
            .hits
            .iter()
            .all(|h| !h.item.is_empty() && h.plausible.is_some()));
        assert_eq!(key(&indexed), key(&direct));
        assert_eq!(indexed.answered, direct.answered);
        assert_eq!(indexed.uncertainty, direct.uncertainty);
        assert_eq!(indexed.guarantee, direct.guarantee);
    }
    // A damaged items file is an error naming it and the line.
    let items = dir.join(medprob_train::retrieve::INDEX_ITEMS);
    let good = std::fs::read_to_string(&items).unwrap();
    std::fs::write(
        &items,
        format!(
            "{}{{\"study_id\": 3}}\n",
            good.lines().next().unwrap().to_owned() + "\n"
        ),
    )
    .unwrap();
    let e = medprob_train::retrieve::query_index(
        &cfg,
        &cfg.out,
        &dir,
        &Query::Image(image.clone()),
        &truth,
        3,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("items.jsonl") && e.contains("line 2"), "{e}");
    let e = r
        .query(&Query::Image(tmp.path().join("missing.png")))
        .unwrap_err();
    assert!(e.to_string().contains("missing.png"), "{e}");

    // A gallery CSV without a validation split is calibrated on the fallback CSV's, with a
    // warning naming both; without a fallback it is an error naming the gallery CSV.
    let other = tmp.path().join("no-validation");
    std::fs::create_dir_all(&other).unwrap();
    let other_csv = other.join("studies.csv");
    let without: Vec<_> = studies
        .iter()
        .cloned()
        .map(|mut s| {
            if s.split == Some(medprob_data::Split::Validate) {
                s.split = Some(medprob_data::Split::Train);
            }
            s
        })
        .collect();
    medprob_data::record::write_studies(&other_csv, &without).unwrap();
    let mut other_cfg = cfg.clone();
    other_cfg.data.studies = other_csv.clone();
    other_cfg.data.image_root = Some(csv.parent().unwrap().to_path_buf());
    let mut retrieve_options = medprob_train::retrieve::RetrieveOptions::new(3, 0.5, 0.1);
    let e = Retriever::new(
        &other_cfg,
        &cfg.out,
        medprob_data::Split::Test,
        &retrieve_options,
    )
    .err()
    .expect("no validation split and no fallback")
    .to_string();
    assert!(e.contains("no-validation") && e.contains("validate"), "{e}");
    retrieve_options.fallback_calibration = Some(csv.clone());
    let r2 = Retriever::new(
        &other_cfg,
        &cfg.out,
        medprob_data::Split::Test,
        &retrieve_options,
    )
    .unwrap();
    assert_eq!(r2.warnings().len(), 1);
    assert!(
        r2.warnings()[0].contains("no-validation") && r2.warnings()[0].contains("calibrated on"),
        "{}",
        r2.warnings()[0]
    );
    let a2 = r2.query(&Query::Image(image.clone())).unwrap();
    assert!(
        a2.calibration.contains(&csv.display().to_string()),
        "{}",
        a2.calibration
    );

    // A state file that does not describe the CSV's studies is refused, naming the file and
    // the study, before anything is written.
    let bad = tmp.path().join("bad-state");
    std::fs::create_dir_all(&bad).unwrap();
    let bad_csv = bad.join("studies.csv");
    std::fs::copy(&csv, &bad_csv).unwrap();
    let state = std::fs::read_to_string(csv.parent().unwrap().join("state.jsonl")).unwrap();
    let first_test = studies
        .iter()
        .find(|s| s.split == Some(medprob_data::Split::Test))
        .unwrap();
    let kept: Vec<&str> = state
        .lines()
        .filter(|l| !l.contains(&format!("\"{}\"", first_test.study_id)))
        .collect();
    std::fs::write(bad.join("state.jsonl"), kept.join("\n")).unwrap();
    let mut bad_cfg = cfg.clone();
    bad_cfg.data.studies = bad_csv;
    bad_cfg.data.image_root = Some(csv.parent().unwrap().to_path_buf());
    let e = evaluate_checkpoint(&bad_cfg, &cfg.out, &options, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("state.jsonl") && e.contains(&first_test.study_id),
        "{e}"
    );
}

/// PCME++'s first step with and without its default log-variance offset: without it the
/// CSD is dominated by `Σ(s1+s2) ≈ 2D`, every logit starts near `−5·2D` and the matching
/// BCE is enormous (the regime in which the means collapse); with it, the logits start
/// in the range the sigmoid can learn from.
#[test]
fn pcmepp_starts_from_small_variances() {
    let csv = dataset();
    let tmp = tempfile::tempdir().unwrap();
    let first_matching = |offset: Option<f64>, name: &str| {
        let mut cfg = tiny(Method::Pcmepp, &csv, &tmp.path().join(name));
        cfg.epochs = 1;
        cfg.model.log_variance_offset = offset;
        train(&cfg, false, QUIET).unwrap();
        let log = std::fs::read_to_string(cfg.out.join("log.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        first["parts"]["inter"].as_f64().unwrap()
    };
    let cfg = tiny(Method::Pcmepp, &csv, tmp.path());
    assert_eq!(cfg.log_variance_offset(), -4.0);
    assert_eq!(
        tiny(Method::MedProbClip, &csv, tmp.path()).log_variance_offset(),
        0.0
    );
    let default = first_matching(None, "default");
    let zero = first_matching(Some(0.0), "zero");
    assert!(
        default < 10.0,
        "2·BCE at step 1 with the default offset: {default}"
    );
    assert!(zero > 30.0, "2·BCE at step 1 with v ≈ 0: {zero}");
}

/// bf16 mixed precision (runs on the CPU too): the working copy's first loss is the f32
/// loss to bf16 accuracy, training finishes with finite f32 master weights that moved,
/// and the checkpoint stays f32.
#[test]
fn bf16_mixed_precision_trains_f32_master_weights() {
    use medprob_train::Precision;
    let csv = dataset();
    let tmp = tempfile::tempdir().unwrap();
    let run = |precision: Precision, name: &str| {
        let mut cfg = tiny(Method::MedProbClip, &csv, &tmp.path().join(name));
        cfg.epochs = 1;
        cfg.precision = precision;
        let outcome = train(&cfg, false, QUIET).unwrap();
        let log = std::fs::read_to_string(cfg.out.join("log.jsonl")).unwrap();
        let losses: Vec<f64> = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["event"] == "step")
            .map(|v| v["loss"].as_f64().unwrap())
            .collect();
        (outcome, losses, cfg.out)
    };
    let (_, f32_losses, f32_out) = run(Precision::F32, "f32");
    let (outcome, bf16_losses, bf16_out) = run(Precision::Bf16, "bf16");
    assert_eq!(bf16_losses.len(), f32_losses.len());
    let (a, b) = (f32_losses[0], bf16_losses[0]);
    assert!(
        (a - b).abs() < 0.02 * a.abs(),
        "first loss f32 {a} vs bf16 {b}"
    );
    assert_ne!(a, b, "the bf16 working copy computed exactly the f32 loss");
    assert!(bf16_losses.iter().all(|l| l.is_finite()));
    assert!(outcome.best_rsum > 0.0);

    // SAFETY: a read-only map of a file nothing else writes.
    let file = unsafe {
        candle_core::safetensors::MmapedSafetensors::new(
            latest(&bf16_out).join("model.safetensors"),
        )
        .unwrap()
    };
    let names: Vec<String> = file.tensors().into_iter().map(|(n, _)| n).collect();
    assert!(names.len() > 10);
    for name in &names {
        let t = file.load(name, &Device::Cpu).unwrap();
        assert_eq!(
            t.dtype(),
            candle_core::DType::F32,
            "{name} is saved as {:?}",
            t.dtype()
        );
    }
    let (w0, w1) = (weights(&latest(&f32_out)), weights(&latest(&bf16_out)));
    let differ = w0.iter().zip(&w1).filter(|(x, y)| x.1 != y.1).count();
    assert!(
        differ > w0.len() / 2,
        "bf16 training changed only {differ} of {} tensors relative to f32",
        w0.len()
    );
    assert!(w1.iter().all(|(_, v)| v.iter().all(|x| x.is_finite())));
}
