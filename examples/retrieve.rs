//! Retrieve with a trained model: an image finds its reports, a report finds its images,
//! each hit with its match probability, plus the query's uncertainty and an answer/abstain
//! decision whose selective risk is bounded (calibrated on the validation split).
//!
//! ```sh
//! cargo run --release --example retrieve -- --checkpoint runs/quickstart/medprobclip \
//!     --image runs/quickstart/synthcxr/images/synth000007_frontal.png --k 5 --risk 0.3
//! cargo run --release --example retrieve -- --checkpoint runs/quickstart/medprobclip \
//!     --report "Left pleural effusion."
//! # Embed and calibrate the gallery once, then answer from the memory-mapped index:
//! cargo run --release --example retrieve -- --checkpoint runs/quickstart/medprobclip \
//!     --report "Left pleural effusion." --write-index runs/quickstart/index
//! cargo run --release --example retrieve -- --checkpoint runs/quickstart/medprobclip \
//!     --report "Cardiomegaly." --index runs/quickstart/index
//! ```

use std::path::PathBuf;

use clap::Parser;
use medprob::data::Split;
use medprob::train::pipeline::run_config;
use medprob::train::retrieve::{query_index, Query, Retriever};

#[derive(Parser)]
#[command(
    about = "Top-k retrieval with match probabilities and a risk-controlled answer/abstain decision"
)]
struct Args {
    /// A checkpoint folder, or a run folder (its best checkpoint).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Query image (PNG or JPEG).
    #[arg(long, conflicts_with = "report")]
    image: Option<PathBuf>,
    /// Query report text.
    #[arg(long)]
    report: Option<String>,
    /// Gallery: the test split of this study CSV (default: the run's own).
    #[arg(long)]
    studies: Option<PathBuf>,
    /// Results to return; a query counts as answered correctly when its match is among them.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Bound on P(match not in the top k | answered).
    #[arg(long, default_value_t = 0.3)]
    risk: f64,
    /// The bound holds with probability ≥ 1 − delta over the calibration split.
    #[arg(long, default_value_t = 0.1)]
    delta: f64,
    /// Also write the gallery, its calibration and answer rules as on-disk indexes into
    /// this (new) folder, for later `--index` queries.
    #[arg(long)]
    write_index: Option<PathBuf>,
    /// Answer from indexes written by `--write-index` (only the query is embedded; the
    /// gallery and the rules come from the index).
    #[arg(long, conflicts_with_all = ["write_index", "studies"])]
    index: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let query = match (&args.image, &args.report) {
        (Some(p), None) => Query::Image(p.clone()),
        (None, Some(t)) => Query::Report(t.clone()),
        _ => return Err("give --image or --report".into()),
    };
    let mut config = run_config(&args.checkpoint)?;
    if let Some(s) = args.studies {
        config.data.studies = s;
        config.data.image_root = None;
    }
    let (a, gallery_len) = match &args.index {
        Some(dir) => {
            let a = query_index(&config, &args.checkpoint, dir, &query, args.k)?;
            (a, None)
        }
        None => {
            let r = Retriever::new(
                &config,
                &args.checkpoint,
                Split::Test,
                args.k,
                args.risk,
                args.delta,
            )?;
            if let Some(dir) = &args.write_index {
                r.write_indexes(dir)?;
                eprintln!("wrote the gallery indexes to {}", dir.display());
            }
            (r.query(&query)?, Some(r.gallery_len()))
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&a)?);
        return Ok(());
    }
    println!(
        "gallery: {} studies; query uncertainty Σσ² = {}",
        gallery_len.map_or("indexed".into(), |n| n.to_string()),
        a.uncertainty
            .map_or("n/a (deterministic model)".into(), |u| format!("{u:.3}"))
    );
    for (i, h) in a.hits.iter().enumerate() {
        println!(
            "{:>2}. {}  p = {:.3}  d = {:.3}  {}",
            i + 1,
            h.study_id,
            h.probability,
            h.distance,
            h.item
        );
    }
    println!(
        "{}: top-1 probability {:.3} {} threshold {}; {}",
        if a.answered { "ANSWER" } else { "ABSTAIN" },
        a.confidence,
        if a.answered { "≥" } else { "<" },
        a.threshold.map_or(
            "none (no threshold certifies this risk: always abstain)".into(),
            |t| format!("{t:.3}")
        ),
        a.guarantee
    );
    Ok(())
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
