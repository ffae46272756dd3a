//! Evaluate a checkpoint (or a run folder: its best checkpoint) on a study CSV's test
//! split with the full reliability suite; writes `metrics.json`, `report.md` and plots.
//!
//! ```sh
//! cargo run --release --example evaluate -- --checkpoint runs/quickstart/medprobclip \
//!     --studies runs/quickstart/synthcxr/studies.csv --out runs/eval
//! ```

use std::path::PathBuf;

use clap::Parser;
use medprob::metrics::report::EvaluationReport;
use medprob::train::evaluation::EvalOptions;
use medprob::train::pipeline::{evaluate_checkpoint, write_report};
use medprob::train::TrainConfig;

#[derive(Parser)]
#[command(
    about = "Evaluate a trained checkpoint: retrieval, calibration, risk–coverage, selective retrieval, zero-shot, robustness"
)]
struct Args {
    /// A checkpoint folder, or a run folder (its checkpoints/BEST is used).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Study CSV with validate and test splits (default: the run's own).
    #[arg(long)]
    studies: Option<PathBuf>,
    /// The run's config (default: config.json of the run folder the checkpoint is in).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "runs/eval")]
    out: PathBuf,
    /// Skip the robustness sweep.
    #[arg(long)]
    no_robustness: bool,
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config_path = match &args.config {
        Some(p) => p.clone(),
        None => args
            .checkpoint
            .ancestors()
            .map(|a| a.join("config.json"))
            .find(|p| p.is_file() && p.parent().is_some_and(|d| d.join("log.jsonl").exists()))
            .ok_or("no run config.json found above --checkpoint; pass --config")?,
    };
    let mut config = TrainConfig::from_file(&config_path)?;
    if let Some(s) = args.studies {
        config.data.studies = s;
        config.data.image_root = None;
    }
    let options = EvalOptions {
        corruptions: if args.no_robustness {
            Vec::new()
        } else {
            EvalOptions::default().corruptions
        },
        ..EvalOptions::default()
    };
    let method = evaluate_checkpoint(&config, &args.checkpoint, &options, |what| {
        println!("{what}")
    })?;
    let report = EvaluationReport {
        title: format!("{} evaluation", method.method),
        dataset: format!("{} (test split)", config.data.studies.display()),
        notes: vec![format!("checkpoint: {}", args.checkpoint.display())],
        methods: vec![method],
    };
    write_report(&report, &args.out, None)?;
    println!("{}", report.retrieval_table());
    println!("wrote {}/metrics.json and report.md", args.out.display());
    Ok(())
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
