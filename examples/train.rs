//! Train one method on any study CSV (with a `split` column), from a TOML/JSON config or
//! flags (flags override the file). Writes `--out`: config.json, log.jsonl, tokenizer and
//! checkpoints; `--resume` continues an interrupted run exactly.
//!
//! ```sh
//! cargo run --release --example train -- --studies runs/quickstart/synthcxr/studies.csv \
//!     --method medprobclip --epochs 4 --out runs/medprobclip
//! # MIMIC-CXR on a GPU with a pretrained text encoder (local folder or hub id):
//! cargo run --release --features cuda --example train -- --config mimic.toml --device cuda \
//!     --precision bf16 --text-model microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract
//! ```

use std::path::PathBuf;

use clap::Parser;
use medprob::train::{train, DeviceKind, Method, Precision, TextSpec, TrainConfig, Verbosity};

#[derive(Parser)]
#[command(about = "Train MedProbCLIP or a baseline on a study CSV")]
struct Args {
    /// TOML or JSON config (defaults: a CPU-sized run).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Study CSV with a split column.
    #[arg(long)]
    studies: Option<PathBuf>,
    /// Folder image paths are relative to (default: the CSV's folder).
    #[arg(long)]
    image_root: Option<PathBuf>,
    /// clip, pcmepp, cxr_clip or medprobclip.
    #[arg(long)]
    method: Option<String>,
    #[arg(long)]
    epochs: Option<usize>,
    /// Epochs of the shared label-pretraining stage (0: none).
    #[arg(long)]
    pretrain_epochs: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// cpu or cuda.
    #[arg(long)]
    device: Option<String>,
    /// f32, or bf16 mixed precision (for CUDA).
    #[arg(long)]
    precision: Option<String>,
    /// Pretrained BERT-family text encoder: a local folder or a Hugging Face hub id.
    #[arg(long)]
    text_model: Option<String>,
    /// Save a resumable checkpoint every N optimisation steps.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Output folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out.
    #[arg(long)]
    resume: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut c = match &args.config {
        Some(p) => TrainConfig::from_file(p)?,
        None => TrainConfig::default(),
    };
    if let Some(v) = args.studies {
        c.data.studies = v;
    }
    if let Some(v) = args.image_root {
        c.data.image_root = Some(v);
    }
    if let Some(v) = &args.method {
        c.method = v.parse::<Method>()?;
    }
    if let Some(v) = args.epochs {
        c.epochs = v;
    }
    if let Some(v) = args.pretrain_epochs {
        c.pretrain.epochs = v;
    }
    if let Some(v) = args.lr {
        c.optim.lr = v;
    }
    if let Some(v) = args.batch_size {
        c.batch_size = v;
    }
    if let Some(v) = args.seed {
        c.seed = v;
    }
    if let Some(v) = &args.device {
        c.device = v.parse::<DeviceKind>()?;
    }
    if let Some(v) = &args.precision {
        c.precision = v.parse::<Precision>()?;
    }
    if let Some(v) = args.text_model {
        c.model.text = TextSpec::Pretrained { source: v };
    }
    if let Some(v) = args.checkpoint_every {
        c.checkpoint_every = v;
    }
    if let Some(v) = args.out {
        c.out = v;
    }
    let outcome = train(
        &c,
        args.resume,
        Verbosity {
            progress: !args.quiet,
            print_config: true,
        },
    )?;
    println!(
        "best validation RSUM {:.2} at epoch {}: {} ({} steps, {:.1} s)",
        outcome.best_rsum,
        outcome.best_epoch,
        outcome.best_checkpoint.display(),
        outcome.steps,
        outcome.seconds
    );
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
