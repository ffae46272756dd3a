//! Generate SynthCXR: PNG radiographs (frontal, and lateral for most studies) and the study
//! CSV with patients, splits and CheXpert labels. Prints what it wrote and its wall time.
//!
//! cargo run --release --example synth_generate -- --studies 5000 --out runs/synthcxr

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use medprob::data::synth::{write_dataset, SynthConfig};

#[derive(Parser)]
#[command(about = "Generate the SynthCXR dataset (images + study CSV)")]
struct Args {
    /// Number of studies.
    #[arg(long, default_value_t = 5000)]
    studies: usize,
    /// Seed (same seed, same files).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image side in pixels.
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Output folder.
    #[arg(long, default_value = "runs/synthcxr")]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let config = SynthConfig {
        studies: args.studies,
        seed: args.seed,
        image_size: args.size,
        ..Default::default()
    };
    println!("{}", serde_json::to_string(&config)?);
    let t = Instant::now();
    let summary = write_dataset(&config, &args.out)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    println!(
        "generated {} studies ({} images) in {:.1} s",
        summary.studies,
        summary.images,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
