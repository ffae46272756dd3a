//! Evidence on real reports: train findings ↔ impression text towers on the 3,955 IU
//! X-ray reports (probabilistic and deterministic, from frozen all-MiniLM-L6-v2 and from a
//! tiny BERT trained from scratch, several seeds) and write `docs/EVIDENCE.md` with its
//! plots and raw results.
//!
//! The data and weights are fetched by `scripts/evidence.sh`, which runs this with the
//! paths it fetched; about 15 minutes on two cores.
//!
//! ```sh
//! scripts/evidence.sh
//! cargo run --release --example iu_evidence -- \
//!     --reports testdata/external/NLMCXR_reports.tgz \
//!     --minilm testdata/external/all-MiniLM-L6-v2
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use clap::Parser;
use medprob::data::iu::{self, IuOptions};
use medprob::train::evidence::{Evidence, EvidenceData, ImpressionSummary, ImpressionUncertainty};
use medprob::train::sections::{
    normalise_section, section_pairs, split_pairs, FrozenFeatures, SectionBackbone, SectionConfig,
    SectionTower,
};

#[derive(Parser)]
#[command(about = "Findings ↔ impression text towers on the IU reports → docs/EVIDENCE.md")]
struct Args {
    /// NLMCXR_reports.tgz (or a folder of the XML reports).
    #[arg(long, default_value = "testdata/external/NLMCXR_reports.tgz")]
    reports: PathBuf,
    /// The all-MiniLM-L6-v2 folder (or a Hugging Face hub id).
    #[arg(long, default_value = "testdata/external/all-MiniLM-L6-v2")]
    minilm: String,
    /// Training seeds, comma-separated (at least 3 for the ± columns to mean much).
    #[arg(long, default_value = "0,1,2", value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Seed of the train/validation/test split (the same for every run).
    #[arg(long, default_value_t = 2026)]
    split_seed: u64,
    /// Override every variant's epochs (for a quick look; the document records it).
    #[arg(long)]
    epochs: Option<usize>,
    /// Override every variant's peak learning rate (the document records it).
    #[arg(long)]
    lr: Option<f64>,
    /// Backbones to run: minilm, tiny or both (comma-separated).
    #[arg(long, default_value = "minilm,tiny", value_delimiter = ',')]
    backbones: Vec<String>,
    /// The document to write.
    #[arg(long, default_value = "docs/EVIDENCE.md")]
    out: PathBuf,
    /// Folder of its plots and results.json.
    #[arg(long, default_value = "docs/evidence")]
    plots: PathBuf,
    /// Train nothing: write the document and plots again from this results.json (after a
    /// change to the report's wording or plots).
    #[arg(long)]
    from_results: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(path) = &args.from_results {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let evidence: Evidence =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        evidence.write(&args.out, &args.plots)?;
        eprintln!("wrote {} from {}", args.out.display(), path.display());
        return Ok(());
    }
    let started = Instant::now();
    let device = Device::Cpu;

    let (studies, counts) = iu::convert(&args.reports, &IuOptions::default())
        .map_err(|e| format!("reading {}: {e}", args.reports.display()))?;
    eprintln!("{counts}");
    let pairs = section_pairs(&studies);
    let labelled: Vec<_> = pairs
        .iter()
        .filter(|p| p.labels.is_some())
        .cloned()
        .collect();
    // (From the XML, not a CSV: an unindexed report has no labels, not 14 blanks.)
    let splits = split_pairs(&labelled, args.split_seed, 0.1, 0.2)?;
    eprintln!(
        "{} pairs with both sections, {} with MeSH labels: {} train, {} validation, {} test",
        pairs.len(),
        labelled.len(),
        splits.train.len(),
        splits.validation.len(),
        splits.test.len()
    );

    // Distinct impressions and how many studies share each (first spelling kept).
    let mut shared: HashMap<String, (String, usize)> = HashMap::new();
    for p in &labelled {
        shared
            .entry(normalise_section(&p.impression))
            .or_insert_with(|| (p.impression.clone(), 0))
            .1 += 1;
    }
    let mut most_shared: Vec<(String, usize)> = shared.values().cloned().collect();
    most_shared.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    most_shared.truncate(5);

    let texts: Vec<&str> = labelled
        .iter()
        .flat_map(|p| [p.findings.as_str(), p.impression.as_str()])
        .collect();
    let minilm = SectionBackbone::Frozen {
        source: args.minilm.clone(),
    };
    let tiny = SectionBackbone::Tiny {
        vocab_size: 3000,
        hidden_size: 64,
        layers: 2,
        heads: 4,
    };
    let mut variants = Vec::new();
    for b in &args.backbones {
        let backbone = match b.as_str() {
            "minilm" => minilm.clone(),
            "tiny" => tiny.clone(),
            other => {
                return Err(
                    format!("--backbones: unknown backbone {other:?} (minilm, tiny)").into(),
                )
            }
        };
        variants.push((backbone.clone(), true));
        variants.push((backbone, false));
    }
    let config_of = |backbone: &SectionBackbone, probabilistic: bool, seed: u64| {
        let mut c = SectionConfig::new(backbone.clone(), probabilistic, seed);
        if let Some(e) = args.epochs {
            c.epochs = e;
        }
        if let Some(lr) = args.lr {
            c.optim.lr = lr;
        }
        c
    };
    eprintln!("computing frozen MiniLM features once for every text …");
    let max_tokens = config_of(
        &SectionBackbone::Frozen {
            source: args.minilm.clone(),
        },
        true,
        0,
    )
    .max_tokens;
    let frozen = FrozenFeatures::compute(&args.minilm, &texts, max_tokens, &device, true)?;

    let mut runs = Vec::new();
    let mut settings = Vec::new();
    let mut impressions = None;
    for (backbone, probabilistic) in &variants {
        for &seed in &args.seeds {
            let config = config_of(backbone, *probabilistic, seed);
            if seed == args.seeds[0] {
                settings.push((
                    config.name(),
                    format!(
                        "{} epochs, batch {}, peak learning rate {}, embedding dimension {}, \
                         {} tokens per section",
                        config.epochs,
                        config.batch_size,
                        config.optim.lr,
                        config.embed_dim,
                        config.max_tokens
                    ),
                ));
            }
            let mut tower = SectionTower::new(&config, &splits.train, Some(&frozen), &device)?;
            let t0 = Instant::now();
            let logs = tower.train(&splits.train, true)?;
            let eval = tower.evaluate(&splits.validation, &splits.test, logs)?;
            eprintln!(
                "{} seed {seed}: F→I R@1 {:.1} %, R@10 {:.1} % ({:.0} s)",
                config.name(),
                eval.report
                    .retrieval
                    .image_to_text
                    .recall_at(1)
                    .unwrap_or(f64::NAN),
                eval.report
                    .retrieval
                    .image_to_text
                    .recall_at(10)
                    .unwrap_or(f64::NAN),
                t0.elapsed().as_secs_f64()
            );
            if *probabilistic && impressions.is_none() {
                // The first probabilistic run ranks every distinct impression.
                let distinct: Vec<&(String, usize)> = shared.values().collect();
                let text: Vec<&str> = distinct.iter().map(|(t, _)| t.as_str()).collect();
                let u = tower.embed(&text, 256)?.uncertainty();
                let all = distinct
                    .iter()
                    .zip(u)
                    .map(|((t, n), u)| ImpressionUncertainty {
                        impression: t.clone(),
                        studies: *n,
                        total_variance: u.total_variance,
                    })
                    .collect();
                let from = format!("{}, seed {seed}", config.name());
                impressions = Some(ImpressionSummary::new(from, all, 20));
            }
            runs.push(eval);
        }
    }

    let mut command = "scripts/evidence.sh".to_string();
    if args.seeds != [0, 1, 2] {
        let s: Vec<String> = args.seeds.iter().map(u64::to_string).collect();
        command.push_str(&format!(" --seeds {}", s.join(",")));
    }
    if let Some(e) = args.epochs {
        command.push_str(&format!(" --epochs {e}"));
    }
    if let Some(lr) = args.lr {
        command.push_str(&format!(" --lr {lr}"));
    }
    if args.backbones != ["minilm", "tiny"] {
        command.push_str(&format!(" --backbones {}", args.backbones.join(",")));
    }
    let evidence = Evidence {
        command,
        data: EvidenceData {
            studies: counts.studies,
            with_both: pairs.len(),
            labelled: labelled.len(),
            split: (
                splits.train.len(),
                splits.validation.len(),
                splits.test.len(),
            ),
            split_seed: args.split_seed,
            distinct_impressions: shared.len(),
            most_shared,
        },
        runs,
        impressions,
        wall_minutes: started.elapsed().as_secs_f64() / 60.0,
        threads: rayon::current_num_threads(),
        settings,
    };
    evidence.write(&args.out, &args.plots)?;
    eprintln!(
        "wrote {} and {} in {:.1} min",
        args.out.display(),
        args.plots.display(),
        evidence.wall_minutes
    );
    Ok(())
}
