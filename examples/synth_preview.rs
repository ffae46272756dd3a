//! Render a few SynthCXR studies (frontal view) with their reports, to look at.
//!
//! cargo run --release --example synth_preview -- --studies 6 --out runs/synth_preview

use std::path::PathBuf;

use clap::Parser;
use medprob::data::synth::{generate_reports, render_frontal, RenderOptions, SynthConfig};
use rand::SeedableRng;

#[derive(Parser)]
#[command(about = "Render SynthCXR studies to PNG files with their reports")]
struct Args {
    /// Studies to render.
    #[arg(long, default_value_t = 6)]
    studies: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long, default_value = "runs/synth_preview")]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let config = SynthConfig {
        studies: args.studies,
        seed: args.seed,
        ..Default::default()
    };
    for (i, study) in generate_reports(&config).into_iter().enumerate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ i as u64);
        let img = render_frontal(&study.state, &RenderOptions::default(), &mut rng);
        let bytes: Vec<u8> = img
            .pixels
            .iter()
            .map(|p| (p * 255.0).round() as u8)
            .collect();
        let path = args.out.join(format!("{}.png", study.record.study_id));
        image::GrayImage::from_raw(img.width, img.height, bytes)
            .ok_or("image size")?
            .save(&path)?;
        println!(
            "{}\n  FINDINGS: {}\n  IMPRESSION: {}",
            path.display(),
            study.record.findings,
            study.record.impression
        );
    }
    Ok(())
}
