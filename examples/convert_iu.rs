//! Indiana University (Open-i) reports → study CSV.
//!
//! cargo run --release --example convert_iu -- NLMCXR_reports.tgz --images images/ --out iu.csv
//!
//! Every report becomes a study (empty sections and missing images included; the training
//! loader decides what to skip). Prints what it found.

use std::path::PathBuf;

use clap::Parser;
use medprob::data::iu::{apply_projections, convert, IuOptions};

#[derive(Parser)]
#[command(about = "Convert IU X-ray (Open-i) report XML to a medprob study CSV")]
struct Args {
    /// `ecgen-radiology/` directory or `NLMCXR_reports.tgz`.
    reports: PathBuf,
    /// Image folder prefixed to every image file name.
    #[arg(long, default_value = "")]
    images: PathBuf,
    /// Image file extension.
    #[arg(long, default_value = "png")]
    extension: String,
    /// Optional projections CSV (filename, projection) for view names.
    #[arg(long)]
    projections: Option<PathBuf>,
    /// Output study CSV (written atomically).
    #[arg(long, default_value = "iu_studies.csv")]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let options = IuOptions {
        image_extension: args.extension,
        image_prefix: args.images,
    };
    let (mut studies, counts) = convert(&args.reports, &options)?;
    if let Some(p) = &args.projections {
        let n = apply_projections(&mut studies, p)?;
        println!("views from {}: {n} images", p.display());
    }
    medprob::data::write_studies(&args.out, &studies)?;
    println!("{counts}");
    println!("wrote {}", args.out.display());
    Ok(())
}
