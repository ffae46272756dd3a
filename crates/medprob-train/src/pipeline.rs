//! The whole comparison: train each method on the same data, evaluate each with the full
//! suite on the same test split, and write `metrics.json`, `report.md` and the plots.

use std::path::{Path, PathBuf};

use candle_core::Device;
use medprob_data::tokenize::ReportTokenizer;
use medprob_encoders::MedProbModel;
use medprob_metrics::report::EvaluationReport;

use crate::checkpoint;
use crate::config::{Method, TrainConfig};
use crate::error::{Result, TrainError};
use crate::evaluation::{evaluate, EvalOptions, Evaluated};
use crate::setup::{loader, read_splits};
use crate::trainer::{train, Verbosity};

/// The checkpoint folder behind `path`: a checkpoint itself (holds `model.safetensors`),
/// or a run folder whose best checkpoint is taken.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join("model.safetensors").is_file() {
        return Ok(path.to_path_buf());
    }
    for root in [path.join("checkpoints"), path.to_path_buf()] {
        if let Some(best) = checkpoint::resolve(&root, "BEST")? {
            return Ok(best);
        }
    }
    Err(TrainError::Input {
        path: path.to_path_buf(),
        reason: "neither a checkpoint (model.safetensors, config.json) nor a run folder with checkpoints/BEST".into(),
    })
}

/// The config of the run a checkpoint belongs to: `config.json` of the nearest folder at or
/// above it that also holds the run's `log.jsonl`.
pub fn run_config(checkpoint: &Path) -> Result<TrainConfig> {
    let path = checkpoint
        .ancestors()
        .map(|a| a.join("config.json"))
        .find(|p| p.is_file() && p.parent().is_some_and(|d| d.join("log.jsonl").exists()))
        .ok_or_else(|| TrainError::Input {
            path: checkpoint.to_path_buf(),
            reason: "no run config.json (beside a log.jsonl) at or above this checkpoint; pass the config explicitly".into(),
        })?;
    TrainConfig::from_file(&path)
}

/// Load a checkpoint's model and its tokenizer.
pub fn load_checkpoint(
    dir: &Path,
    max_tokens: usize,
    device: &Device,
) -> Result<(MedProbModel, ReportTokenizer)> {
    let dir = resolve_checkpoint(dir)?;
    let model = MedProbModel::load(&dir, device)?;
    let tok = dir.join("tokenizer.json");
    if !tok.is_file() {
        return Err(TrainError::Input {
            path: tok,
            reason: "the checkpoint has no tokenizer.json beside its weights".into(),
        });
    }
    Ok((model, ReportTokenizer::from_file(&tok, max_tokens)?))
}

/// Evaluate a checkpoint on the validation and test splits of `config.data.studies`.
pub fn evaluate_checkpoint(
    config: &TrainConfig,
    checkpoint: &Path,
    options: &EvalOptions,
    progress: impl FnMut(&str),
) -> Result<Evaluated> {
    let device = config.device.device()?;
    let (model, tokenizer) = load_checkpoint(checkpoint, config.data.max_tokens, &device)?;
    let splits = read_splits(&config.data.studies, &config.data.limits)?;
    if splits.test.is_empty() {
        return Err(TrainError::Input {
            path: config.data.studies.clone(),
            reason: "no study has split = test".into(),
        });
    }
    let val = loader(config, splits.validate, false)?;
    let test = loader(config, splits.test, false)?;
    evaluate(
        &model,
        &tokenizer,
        config,
        &val,
        &test,
        &splits.train,
        options,
        &device,
        progress,
    )
}

/// Write the test retrievals of an evaluation as `dir/test_top10.json`, atomically.
pub fn write_retrievals(evaluated: &Evaluated, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let path = dir.join("test_top10.json");
    let json = serde_json::to_vec(&evaluated.retrievals).expect("retrievals serialise");
    medprob_core::fs::write_atomic(&path, &json).map_err(|e| TrainError::io(&path, e))?;
    Ok(path)
}

/// Train (or finish training) every method in `methods` from `base` into
/// `out/<method>/`, then evaluate each on the test split and write its test retrievals
/// into `out/<method>/test_top10.json`.
pub fn compare(
    base: &TrainConfig,
    methods: &[Method],
    options: &EvalOptions,
    out: &Path,
    verbosity: Verbosity,
) -> Result<Vec<Evaluated>> {
    let mut reports = Vec::with_capacity(methods.len());
    for &method in methods {
        let mut config = TrainConfig {
            method,
            out: out.join(method.key()),
            ..base.clone()
        };
        // One pretraining stage for all methods: the same starting backbones.
        if config.pretrain.dir.is_none() {
            config.pretrain.dir = Some(out.join("pretrain"));
        }
        let resume = checkpoint::resolve(&config.out.join("checkpoints"), "LATEST")?.is_some();
        let trained = train(&config, resume, verbosity)?;
        if verbosity.progress {
            println!(
                "{}: best validation RSUM {:.2} at epoch {} ({} steps, {:.0} s)",
                method.display_name(),
                trained.best_rsum,
                trained.best_epoch,
                trained.steps,
                trained.seconds
            );
        }
        let report = evaluate_checkpoint(&config, &trained.best_checkpoint, options, |what| {
            if verbosity.progress {
                println!("{}: {what}", method.display_name());
            }
        })?;
        write_retrievals(&report, &config.out)?;
        reports.push(report);
    }
    Ok(reports)
}

/// Write `metrics.json`, `summary.json` (module [`medprob_metrics::summary`]), the plots
/// (PNG) and `report.md` into `out`; `reference` is the method whose losses the report
/// lists.
pub fn write_report(report: &EvaluationReport, out: &Path, reference: Option<&str>) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    report.save_json(&out.join("metrics.json"))?;
    let summary = serde_json::to_vec_pretty(&medprob_metrics::summary::summary(report))
        .expect("summary serialises");
    let path = out.join("summary.json");
    medprob_core::fs::write_atomic(&path, &summary).map_err(|e| TrainError::io(&path, e))?;
    let mut plots = report.write_plots(out, "png")?;
    // Each run's training curves, where the run's folder is beside the report.
    for m in &report.methods {
        let file = format!(
            "{}/curves.png",
            medprob_metrics::summary::method_key(&m.method)
        );
        if out.join(&file).is_file() {
            plots.push((format!("Training curves: {}", m.method), file));
        }
    }
    let md = report.to_markdown(reference, &plots);
    let path = out.join("report.md");
    medprob_core::fs::write_atomic(&path, md.as_bytes()).map_err(|e| TrainError::io(&path, e))
}
