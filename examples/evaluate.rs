//! Evaluate a checkpoint (or a run folder: its best checkpoint) on a study CSV's test
//! split with the full reliability suite; writes `metrics.json`, `report.md` and plots.
//!
//! ```sh
//! cargo run --release --example evaluate -- --checkpoint runs/quickstart/medprobclip \
//!     --studies runs/quickstart/synthcxr/studies.csv --out runs/eval
//! ```

use std::path::PathBuf;

use clap::Parser;
use medprob::metrics::hubness::HubCorrection;
use medprob::metrics::report::EvaluationReport;
use medprob::train::evaluation::EvalOptions;
use medprob::train::pipeline::{evaluate_checkpoint, run_config, write_report, write_retrievals};
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
    /// Neighbours of the CSLS hub correction (validation queries averaged per gallery item;
    /// default 10).
    #[arg(long, conflicts_with = "hub_temperature")]
    hub_k: Option<usize>,
    /// Use the balanced hub correction instead of CSLS, at this temperature (relative to the
    /// spread of the bank's candidate distances; measured: 0.01, 0.03, 0.1).
    #[arg(long)]
    hub_temperature: Option<f64>,
    /// Rank raw distances: no hub correction (the report then has no `raw` copy).
    #[arg(long, conflicts_with_all = ["hub_k", "hub_temperature"])]
    no_hub_correction: bool,
    /// Score zero-shot with the generic prompt templates only (no prompts mined from the
    /// training reports).
    #[arg(long)]
    generic_prompts: bool,
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = match &args.config {
        Some(p) => TrainConfig::from_file(p)?,
        None => run_config(&args.checkpoint)?,
    };
    if let Some(s) = args.studies {
        config.data.studies = s;
        config.data.image_root = None;
    }
    let mut options = EvalOptions::with_robustness(!args.no_robustness);
    options.hub_correction = (!args.no_hub_correction).then_some(match args.hub_k {
        Some(k) => HubCorrection::Csls { k },
        None => match args.hub_temperature {
            Some(temperature) => HubCorrection::Balanced { temperature },
            None => HubCorrection::default(),
        },
    });
    if args.generic_prompts {
        options.corpus_prompts = None;
    }
    let evaluated = evaluate_checkpoint(&config, &args.checkpoint, &options, |what| {
        println!("{what}")
    })?;
    write_retrievals(&evaluated, &args.out)?;
    let method = evaluated.report;
    let report = EvaluationReport {
        title: format!("{} evaluation", method.method),
        dataset: format!("{} (test split)", config.data.studies.display()),
        notes: vec![format!("checkpoint: {}", args.checkpoint.display())],
        methods: vec![method],
        oracles: evaluated.oracles,
    };
    write_report(&report, &args.out, None)?;
    println!("{}", report.retrieval_table());
    println!("wrote {}/metrics.json and report.md", args.out.display());
    Ok(())
}

fn main() {
    // Reuse freed tensor memory between steps (see medprob::train::allocator).
    medprob::train::allocator::keep_freed_memory();
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
