//! Retrieve with a trained model: an image finds its reports, a report finds its images,
//! each hit with the probability that it is a plausible match (a study with the query's
//! positive labels) and, where the query's truth is known, whether it is one; plus the
//! query's uncertainty and an answer/abstain decision whose selective risk is bounded
//! (calibrated on the gallery CSV's validation split).
//!
//! ```sh
//! cargo run --release --example retrieve -- --checkpoint runs/quickstart/medprobclip \
//!     --image runs/quickstart/synthcxr/images/synth000007_frontal.png --k 5 --risk 0.3
//! cargo run --release --example retrieve -- --checkpoint runs/quickstart/medprobclip \
//!     --report "Left pleural effusion." --labels "Pleural Effusion"
//! cargo run --release --example retrieve -- --checkpoint runs/quickstart/medprobclip \
//!     --study synth004197 --side report
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
use medprob::train::retrieve::{
    parse_label_set, query_index, AnswerRelevance, Query, QueryTruth, RetrieveOptions, Retriever,
};

#[derive(Parser)]
#[command(
    about = "Top-k retrieval with plausible-match probabilities and a risk-controlled answer/abstain decision"
)]
struct Args {
    /// A checkpoint folder, or a run folder (its best checkpoint).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Query image (PNG or JPEG).
    #[arg(long, conflicts_with_all = ["report", "study"])]
    image: Option<PathBuf>,
    /// Query report text.
    #[arg(long, conflicts_with = "study")]
    report: Option<String>,
    /// Query with a study of the CSV (any split): its image (`--side image`) or its report
    /// (`--side report`). Each hit is then marked plausible or not, and own study or not.
    #[arg(long)]
    study: Option<String>,
    /// Which side of `--study` is the query.
    #[arg(long, default_value = "image", value_parser = ["image", "report"])]
    side: String,
    /// The query's positive CheXpert labels, separated by `;` (e.g. "Pleural Effusion"), or
    /// "No Finding": each hit is then marked plausible (exactly these labels) or not.
    #[arg(long)]
    labels: Option<String>,
    /// Gallery: the test split of this study CSV (default: the run's own). The probability
    /// and the answer rule are calibrated on its validation split; without one, on the
    /// run's own, with a warning.
    #[arg(long)]
    studies: Option<PathBuf>,
    /// Results to return; the answer rule counts a query as answered correctly when a
    /// correct item is among them.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// What the answer rule counts as correct: `plausible` (a study with exactly the
    /// query's positive labels) or `instance` (the query's own study).
    #[arg(long, default_value = "plausible")]
    relevance: AnswerRelevance,
    /// Bound on P(no correct item in the top k | answered).
    #[arg(long, default_value_t = 0.3)]
    risk: f64,
    /// The bound holds with probability ≥ 1 − delta over the calibration split.
    #[arg(long, default_value_t = 0.1)]
    delta: f64,
    /// Also write the gallery, its calibration and answer rules as on-disk indexes into
    /// this (new) folder, for later `--index` queries.
    #[arg(long)]
    write_index: Option<PathBuf>,
    /// Rank raw distances: no CSLS hub correction (on by default, as in the evaluation;
    /// `--write-index` stores whichever was used).
    #[arg(long)]
    no_hub_correction: bool,
    /// Answer from indexes written by `--write-index` (only the query is embedded; the
    /// gallery and the rules come from the index).
    #[arg(long, conflicts_with_all = ["write_index", "studies", "study"])]
    index: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn mark(value: Option<bool>, yes: &str, no: &str) -> String {
    match value {
        Some(true) => yes.to_string(),
        Some(false) => no.to_string(),
        None => "unknown".to_string(),
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = run_config(&args.checkpoint)?;
    let own_csv = config.data.studies.clone();
    if let Some(s) = &args.studies {
        config.data.studies = s.clone();
        config.data.image_root = None;
    }
    let given_labels = args.labels.as_deref().map(parse_label_set).transpose()?;
    let mut options = RetrieveOptions::new(args.k, args.risk, args.delta);
    options.relevance = args.relevance;
    if args.no_hub_correction {
        options.hub_correction = None;
    }
    options.fallback_calibration = args.studies.is_some().then_some(own_csv);
    let retriever = match &args.index {
        Some(_) => None,
        None => Some(Retriever::new(
            &config,
            &args.checkpoint,
            Split::Test,
            &options,
        )?),
    };
    let (query, mut truth) = match (&args.image, &args.report, &args.study) {
        (Some(p), None, None) => {
            let q = Query::Image(p.clone());
            let t = retriever
                .as_ref()
                .map(|r| r.truth_of(&q))
                .unwrap_or_default();
            (q, t)
        }
        (None, Some(t), None) => (Query::Report(t.clone()), QueryTruth::default()),
        (None, None, Some(id)) => {
            let r = retriever
                .as_ref()
                .ok_or("--study needs the gallery CSV (not --index)")?;
            let s = r
                .study(id)
                .ok_or_else(|| format!("{}: no study {id:?}", config.data.studies.display()))?;
            let q = if args.side == "image" {
                let v = medprob::data::sampling::evaluation_view(s)
                    .ok_or_else(|| format!("study {id} has no image"))?;
                Query::Image(config.image_root().join(&s.image_paths[v]))
            } else {
                let text = medprob::data::sampling::evaluation_text(s)
                    .ok_or_else(|| format!("study {id} has no report text"))?;
                Query::Report(text.to_string())
            };
            let t = QueryTruth {
                study_id: Some(id.clone()),
                labels: medprob::train::evaluation::label_mask(s),
            };
            (q, t)
        }
        _ => return Err("give one of --image, --report or --study".into()),
    };
    if given_labels.is_some() {
        truth.labels = given_labels;
    }
    let (a, gallery_len) = match (&args.index, &retriever) {
        (Some(dir), _) => (
            query_index(&config, &args.checkpoint, dir, &query, &truth, args.k)?,
            None,
        ),
        (None, Some(r)) => {
            for w in r.warnings() {
                eprintln!("{w}");
            }
            if let Some(dir) = &args.write_index {
                r.write_indexes(dir)?;
                eprintln!("wrote the gallery indexes to {}", dir.display());
            }
            (r.query_with(&query, &truth)?, Some(r.gallery_len()))
        }
        (None, None) => unreachable!("a retriever is built whenever there is no index"),
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
    if let Some(id) = &truth.study_id {
        println!("query: study {id} ({})", args.side);
    }
    println!(
        "p = probability that the hit is a plausible match ({})",
        a.calibration
    );
    for (i, h) in a.hits.iter().enumerate() {
        let own = if h.own_study == Some(true) {
            ", own study"
        } else {
            ""
        };
        println!(
            "{:>2}. {}  p = {:.3}  d = {:.3}  [{}{own}]  {}",
            i + 1,
            h.study_id,
            h.probability,
            h.distance,
            mark(h.plausible, "plausible", "not plausible"),
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
