//! The training loop: seeded, resumable, logged, guarded against divergence.
//!
//! Output folder layout:
//!
//! ```text
//! <out>/config.json            the full config of the run
//! <out>/tokenizer.json         the tokenizer (trained or copied)
//! <out>/log.jsonl              one JSON object per step, skipped step and validation
//! <out>/curves.png             loss parts per step, validation RSUM and plausible P@1 per epoch
//! <out>/checkpoints/LATEST     → step-NNNNNNN/  (model, optimiser, state: resumable)
//! <out>/checkpoints/BEST       → best-epoch-NNN/ (model with the best validation RSUM)
//! ```

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use indicatif::{ProgressBar, ProgressStyle};
use medprob_data::loader::StudyLoader;
use medprob_data::tokenize::ReportTokenizer;
use medprob_encoders::MedProbModel;
use medprob_metrics::ranking::rank_both_ways;
use medprob_metrics::retrieval::{DirectionReport, RetrievalReport};
use serde_json::json;

use crate::checkpoint::{self, TrainState};
use crate::config::{Precision, TrainConfig};
use crate::encode::embed_split;
use crate::error::{Result, TrainError};
use crate::objective::Objective;
use crate::optim::{accumulate, clip_global_norm, collect_grads, scale_grads, AdamW};
use crate::setup::{build_model, build_tokenizer, loader, read_splits};

/// Environment variable for fault-injection tests: abort the process (as `kill -9` would
/// stop it, without unwinding) right after this optimisation step.
pub const ABORT_AFTER_STEP_ENV: &str = "MEDPROB_ABORT_AFTER_STEP";

/// Fault injection for tests: a comma-separated list of step attempts (counted from 1 in
/// this process, skipped ones included) whose loss is replaced by NaN, as a corrupted batch
/// or an overflow would make it.
pub const NAN_AT_ATTEMPTS_ENV: &str = "MEDPROB_NAN_AT_ATTEMPTS";

/// What a finished run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// The best checkpoint (by validation RSUM).
    pub best_checkpoint: PathBuf,
    /// Its epoch (1-based).
    pub best_epoch: usize,
    /// Its validation RSUM.
    pub best_rsum: f64,
    /// Optimisation steps taken in total.
    pub steps: usize,
    /// Wall time of this invocation, seconds.
    pub seconds: f64,
}

/// How chatty a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verbosity {
    /// Show a progress bar with ETA.
    pub progress: bool,
    /// Print the config at the start.
    pub print_config: bool,
}

/// Train `config.method` from scratch, or continue the run in `config.out` when `resume`.
///
/// The run executes on a thread of rayon's global pool (the caller waits): the CPU kernels
/// split their work with rayon, and a call from inside the pool hands work to the other
/// threads directly, where a call from outside it would queue the whole job and put the
/// calling thread to sleep until it is done, hundreds of times per step (about 7 % of a
/// two-thread step of the quickstart model, `examples/bench_train.rs`).
pub fn train(config: &TrainConfig, resume: bool, verbosity: Verbosity) -> Result<TrainOutcome> {
    rayon::scope(|_| train_here(config, resume, verbosity))
}

/// [`train`] on the calling thread.
fn train_here(config: &TrainConfig, resume: bool, verbosity: Verbosity) -> Result<TrainOutcome> {
    let started = Instant::now();
    config.validate()?;
    let device = config.device.device()?;
    let out = config.out.clone();
    let ckpt_root = out.join("checkpoints");
    std::fs::create_dir_all(&ckpt_root).map_err(|e| TrainError::io(&ckpt_root, e))?;
    let config_json = serde_json::to_string_pretty(config).expect("config serialises");
    let config_path = out.join("config.json");
    let latest = checkpoint::resolve(&ckpt_root, "LATEST")?;
    if resume {
        let saved = std::fs::read_to_string(&config_path).map_err(|e| TrainError::Input {
            path: config_path.clone(),
            reason: format!("--resume needs the run's config.json: {e}"),
        })?;
        let saved: TrainConfig = serde_json::from_str(&saved).map_err(|e| TrainError::Input {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        if &saved != config {
            return Err(TrainError::config(
                "(resume)",
                format!(
                    "the config differs from the one saved in {}; resume with the same settings",
                    config_path.display()
                ),
            ));
        }
    } else if latest.is_some() {
        return Err(TrainError::config(
            "out",
            format!(
                "{} already holds a run: pass --resume to continue it, or choose another --out",
                out.display()
            ),
        ));
    }
    medprob_core::fs::write_atomic(&config_path, config_json.as_bytes())
        .map_err(|e| TrainError::io(&config_path, e))?;
    if verbosity.print_config {
        println!("config ({}):\n{config_json}", config_path.display());
    }

    let splits = read_splits(&config.data.studies, &config.data.limits)?;
    let tok_path = out.join("tokenizer.json");
    let resuming = resume && tok_path.exists();
    // The shared pretraining stage (reused when it is already done): the tokenizer and both
    // backbones of a fresh run start from it.
    let stage = if resuming {
        None
    } else {
        crate::pretrain::pretrain(config, verbosity)?
    };
    let tokenizer = if resuming {
        ReportTokenizer::from_file(&tok_path, config.data.max_tokens)?
    } else {
        let t = match &stage {
            Some(s) => crate::pretrain::stage_tokenizer(s, config.data.max_tokens)?,
            None => build_tokenizer(config, &splits.train)?,
        };
        t.save(&tok_path)?;
        t
    };
    let (model, mut state, latest_dir) = match (resume, &latest) {
        (true, Some(dir)) => (
            MedProbModel::load(dir, &device)?,
            checkpoint::load_state(dir)?,
            Some(dir.clone()),
        ),
        _ => {
            let model = build_model(config, tokenizer.vocab_size(), &device)?;
            if let Some(s) = &stage {
                crate::pretrain::load_into(&model, s)?;
            }
            (model, TrainState::default(), None)
        }
    };
    let vars = model.trainable_vars();
    let mut optimizer = AdamW::new(vars.clone(), config.optim.clone())?;
    // Mixed precision: a bf16 working copy runs forward and backward; the optimiser and
    // checkpoints keep the f32 master weights above.
    let working = match config.precision {
        Precision::F32 => None,
        Precision::Bf16 => Some(MedProbModel::with_dtype(
            model.config().clone(),
            &device,
            DType::BF16,
        )?),
    };
    let forward_model = working.as_ref().unwrap_or(&model);
    let forward_vars = forward_model.trainable_vars();
    if let Some(dir) = &latest_dir {
        optimizer.load(&dir.join("optimizer.safetensors"))?;
    }
    let objective = Objective::new(config)?;
    let train_loader = loader(config, splits.train, true)?;
    let val_loader = loader(config, splits.validate, false)?;
    let acc = config.optim.accumulation;
    let batches = batches_per_epoch(config, &train_loader)?;
    let steps_per_epoch = batches.div_ceil(acc);
    let total_steps = steps_per_epoch * config.epochs;
    let abort_after: Option<usize> = std::env::var(ABORT_AFTER_STEP_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let nan_at: Vec<usize> = std::env::var(NAN_AT_ATTEMPTS_ENV)
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default();
    let mut attempts = 0usize;
    // Smoothed loss, for reporting spikes (a learning rate too high for the data shows
    // as a loss many times its recent level long before it turns into NaN).
    let mut loss_ema: Option<f64> = None;

    let log_path = out.join("log.jsonl");
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| TrainError::io(&log_path, e))?;
    let mut write_log = |v: serde_json::Value| -> Result<()> {
        writeln!(log, "{v}").map_err(|e| TrainError::io(&log_path, e))
    };

    let bar = step_bar(verbosity, total_steps, config.method.display_name());
    bar.set_position(state.step as u64);

    while state.epoch < config.epochs {
        let epoch = state.epoch;
        while state.batch < batches {
            let t0 = Instant::now();
            let first = state.batch;
            let last = (first + acc).min(batches);
            forward_model.set_step(state.step as u64);
            if let Some(w) = &working {
                w.copy_vars_from(&model, |_| true)?;
            }
            let mut grads: BTreeMap<String, candle_core::Tensor> = BTreeMap::new();
            let mut parts = Vec::new();
            let mut ids = Vec::new();
            let mut images = 0usize;
            let mut skip: Option<&str> = None;
            attempts += 1;
            for b in first..last {
                let items = train_loader.train_batch(epoch as u64, b)?;
                images += 2 * items.len();
                ids.extend(items.iter().map(|i| i.study_id.clone()));
                let mut out =
                    objective.loss(forward_model, &tokenizer, &items, state.step, &device)?;
                if nan_at.contains(&attempts) {
                    out.parts.total = f64::NAN;
                    out.total = (out.total * f64::NAN)?;
                }
                if !out.parts.total.is_finite() {
                    skip = Some("non-finite loss");
                    parts.push(out.parts);
                    break;
                }
                let g = out.total.backward()?;
                let mut step_grads = collect_grads(&forward_vars, &g);
                if working.is_some() {
                    for t in step_grads.values_mut() {
                        *t = t.to_dtype(DType::F32)?;
                    }
                }
                accumulate(&mut grads, step_grads)?;
                parts.push(out.parts);
            }
            state.batch = last;
            let mut norm = f64::NAN;
            if skip.is_none() {
                scale_grads(&mut grads, 1.0 / (last - first) as f64)?;
                norm = clip_global_norm(&mut grads, config.optim.grad_clip)?;
                if !norm.is_finite() {
                    skip = Some("non-finite gradient");
                }
            }
            if let Some(reason) = skip {
                state.bad_steps += 1;
                write_log(json!({
                    "event": "skipped_step", "epoch": epoch + 1, "step": state.step,
                    "reason": reason, "study_ids": ids,
                }))?;
                if state.bad_steps >= config.max_bad_steps {
                    bar.abandon();
                    return Err(TrainError::Diverged(format!(
                        "{} consecutive steps with a non-finite loss or gradient (last at epoch {}, study ids {:?}); the last good checkpoint is in {}",
                        state.bad_steps,
                        epoch + 1,
                        ids,
                        ckpt_root.display()
                    )));
                }
                continue;
            }
            state.bad_steps = 0;
            let lr = config.optim.lr_at(state.step, total_steps);
            optimizer.step(&grads, lr)?;
            if let Some(w) = &working {
                // Running statistics (ResNet batch norms) are updated by the working copy.
                model.copy_vars_from(w, medprob_encoders::resnet::is_buffer)?;
            }
            state.step += 1;
            let p = &parts[parts.len() - 1];
            let secs = t0.elapsed().as_secs_f64();
            write_log(json!({
                "event": "step", "epoch": epoch + 1, "step": state.step, "lr": lr,
                "loss": parts.iter().map(|p| p.total).sum::<f64>() / parts.len() as f64,
                "parts": p, "grad_norm": norm, "images_per_s": images as f64 / secs,
            }))?;
            if let Some(ema) = loss_ema {
                if state.step > 20 && p.total > 4.0 * ema.abs().max(1e-3) {
                    write_log(json!({
                        "event": "loss_spike", "epoch": epoch + 1, "step": state.step,
                        "loss": p.total, "recent_loss": ema, "lr": lr, "study_ids": ids,
                    }))?;
                    bar.println(format!(
                        "warning: step {}: loss {:.4} is {:.1}× its recent level {:.4} at lr {lr:.2e}; if this repeats, lower optim.lr",
                        state.step,
                        p.total,
                        p.total / ema,
                        ema
                    ));
                }
            }
            loss_ema = Some(loss_ema.map_or(p.total, |e| 0.95 * e + 0.05 * p.total));
            bar.set_message(format!("loss {:.4} lr {lr:.2e}", p.total));
            bar.inc(1);
            if config.checkpoint_every > 0
                && state.step % config.checkpoint_every == 0
                && state.batch < batches
            {
                save_latest(&ckpt_root, &model, &optimizer, &state, &tokenizer)?;
            }
            if abort_after == Some(state.step) {
                std::process::abort();
            }
        }
        // End of epoch: validate, keep the best, checkpoint.
        let t0 = Instant::now();
        let validation = validate(&model, &tokenizer, &val_loader, config, &device)?;
        let val = &validation.retrieval;
        state.epoch += 1;
        state.batch = 0;
        write_log(json!({
            "event": "validation", "epoch": state.epoch, "step": state.step,
            "rsum": val.rsum, "rsum6": val.rsum6,
            "image_to_text": val.image_to_text.recall, "text_to_image": val.text_to_image.recall,
            "plausible_i2t_p1": validation.plausible_i2t_p1,
            "plausible_t2i_p1": validation.plausible_t2i_p1,
            "seconds": t0.elapsed().as_secs_f64(),
        }))?;
        let plausible = match (validation.plausible_i2t_p1, validation.plausible_t2i_p1) {
            (Some(a), Some(b)) => format!(", plausible P@1 {a:.3} / {b:.3}"),
            _ => String::new(),
        };
        let line = format!(
            "{} epoch {}/{}: validation RSUM {:.2} (i2t R@1 {:.2}, t2i R@1 {:.2}{plausible})",
            config.method.display_name(),
            state.epoch,
            config.epochs,
            val.rsum,
            val.image_to_text.recall_at(1).unwrap_or(f64::NAN),
            val.text_to_image.recall_at(1).unwrap_or(f64::NAN)
        );
        print_line(&bar, verbosity, &line);
        if val.rsum > state.best_rsum {
            state.best_rsum = val.rsum;
            state.best_epoch = state.epoch;
            checkpoint::publish(
                &ckpt_root,
                "BEST",
                "best-epoch-",
                &format!("best-epoch-{:03}", state.epoch),
                |dir| {
                    model.save(dir)?;
                    Ok(tokenizer.save(&dir.join("tokenizer.json"))?)
                },
            )?;
        }
        save_latest(&ckpt_root, &model, &optimizer, &state, &tokenizer)?;
    }
    bar.finish_and_clear();
    crate::curves::write_curves(&out, config.method.display_name())?;
    let best = checkpoint::resolve(&ckpt_root, "BEST")?.ok_or_else(|| TrainError::Checkpoint {
        path: ckpt_root.clone(),
        reason: "no best checkpoint was written".into(),
    })?;
    Ok(TrainOutcome {
        best_checkpoint: best,
        best_epoch: state.best_epoch,
        best_rsum: state.best_rsum,
        steps: state.step,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A progress bar of `total` optimisation steps named `prefix` (hidden without progress).
pub(crate) fn step_bar(verbosity: Verbosity, total: usize, prefix: &str) -> ProgressBar {
    if !verbosity.progress {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(total as u64);
    b.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}<{eta_precise}] {bar:30} {pos}/{len} steps {msg}",
        )
        .expect("valid template"),
    );
    b.set_prefix(prefix.to_string());
    b
}

/// Print `line` above the bar, or on its own when the bar is hidden (nothing when quiet).
pub(crate) fn print_line(bar: &ProgressBar, verbosity: Verbosity, line: &str) {
    if !bar.is_hidden() {
        bar.println(line);
    } else if verbosity.progress {
        println!("{line}");
    }
}

/// Batches per epoch of `loader`, or an error when the batch size exceeds the split.
pub(crate) fn batches_per_epoch(config: &TrainConfig, loader: &StudyLoader) -> Result<usize> {
    match loader.batches_per_epoch() {
        0 => Err(TrainError::config(
            "batch_size",
            format!(
                "{} exceeds the {} training studies",
                config.batch_size,
                loader.len()
            ),
        )),
        n => Ok(n),
    }
}

fn save_latest(
    root: &Path,
    model: &MedProbModel,
    optimizer: &AdamW,
    state: &TrainState,
    tokenizer: &ReportTokenizer,
) -> Result<()> {
    checkpoint::publish(
        root,
        "LATEST",
        "step-",
        &format!("step-{:07}", state.step),
        |dir| {
            model.save(dir)?;
            optimizer.save(&dir.join("optimizer.safetensors"))?;
            tokenizer.save(&dir.join("tokenizer.json"))?;
            checkpoint::save_state(dir, state)
        },
    )?;
    Ok(())
}

/// One epoch's validation figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    /// Instance retrieval, both directions (model selection uses its RSUM).
    pub retrieval: RetrievalReport,
    /// Share of image queries whose first report has exactly the image's positive label
    /// set (validation CSV labels); `None` without labels.
    pub plausible_i2t_p1: Option<f64>,
    /// The same for report queries.
    pub plausible_t2i_p1: Option<f64>,
}

/// Validation retrieval (both directions) of the current model, and its plausible P@1
/// under the validation split's own labels.
pub fn validate(
    model: &MedProbModel,
    tokenizer: &ReportTokenizer,
    loader: &Arc<StudyLoader>,
    config: &TrainConfig,
    device: &Device,
) -> Result<Validation> {
    let e = embed_split(
        model,
        tokenizer,
        loader,
        config.data.image_size,
        None,
        device,
    )?;
    let options = medprob_core::TopKOptions::default();
    let (i2t, t2i) = rank_both_ways(
        config.distance(),
        &e.images,
        &e.study_ids,
        &e.texts,
        &e.study_ids,
        &options,
    )?;
    let masks: Option<Vec<u32>> = e
        .study_index
        .iter()
        .map(|&i| crate::evaluation::label_mask(&loader.studies()[i]))
        .collect();
    let (mut p_i2t, mut p_t2i) = (None, None);
    if let Some(masks) = masks {
        let relevance = medprob_metrics::relevance::Relevance::labels(&masks, &masks, 0)?;
        for (queries, gallery, out) in [
            (&e.images, &e.texts, &mut p_i2t),
            (&e.texts, &e.images, &mut p_t2i),
        ] {
            let top = medprob_metrics::plausible::ranked_lists(
                config.distance(),
                queries,
                gallery,
                1,
                &options,
            )?;
            *out = medprob_metrics::plausible::recall_at_k(&top, &relevance, 1)?;
        }
    }
    Ok(Validation {
        retrieval: RetrievalReport::new(
            DirectionReport::from_ranks(&i2t)?,
            DirectionReport::from_ranks(&t2i)?,
        ),
        plausible_i2t_p1: p_i2t,
        plausible_t2i_p1: p_t2i,
    })
}
