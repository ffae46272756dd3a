//! MIMIC-CXR-JPG → `train.csv`, `validate.csv`, `test.csv`.
//!
//! cargo run --release --example convert_mimic -- --root /data/mimic-cxr-jpg/2.1.0 \
//!     --reports /data/mimic-cxr-reports --out data/mimic
//!
//! Expects the PhysioNet file names under `--root` (`.csv` or `.csv.gz`); prints counts.

use std::path::{Path, PathBuf};

use clap::Parser;
use medprob::data::mimic::{convert, write_split_csvs, MimicInputs};

#[derive(Parser)]
#[command(about = "Convert MIMIC-CXR-JPG metadata and reports to medprob study CSVs")]
struct Args {
    /// Folder with mimic-cxr-2.0.0-{metadata,split,chexpert}.csv(.gz).
    #[arg(long)]
    root: PathBuf,
    /// Folder holding the reports' `files/` tree.
    #[arg(long)]
    reports: PathBuf,
    /// Output folder for the split CSVs.
    #[arg(long, default_value = "mimic_studies")]
    out: PathBuf,
}

fn find(root: &Path, stem: &str) -> Option<PathBuf> {
    [".csv.gz", ".csv"]
        .iter()
        .map(|ext| root.join(format!("{stem}{ext}")))
        .find(|p| p.exists())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let need = |stem: &str| {
        find(&args.root, stem)
            .ok_or_else(|| format!("{}: no {stem}.csv or .csv.gz", args.root.display()))
    };
    let inputs = MimicInputs {
        metadata: need("mimic-cxr-2.0.0-metadata")?,
        split: need("mimic-cxr-2.0.0-split")?,
        chexpert: find(&args.root, "mimic-cxr-2.0.0-chexpert"),
        reports_root: args.reports,
    };
    let (studies, counts) = convert(&inputs)?;
    for path in write_split_csvs(&args.out, &studies)? {
        println!("wrote {}", path.display());
    }
    println!("{}", serde_json::to_string_pretty(&counts)?);
    Ok(())
}
