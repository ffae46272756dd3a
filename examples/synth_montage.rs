//! The SynthCXR montage of docs/DATASET.md: frontal and lateral views of studies with
//! different findings, and their reports.
//!
//! cargo run --release --example synth_montage     (writes docs/synthcxr_montage.png and
//!                                                  docs/synthcxr_montage.md)

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Parser;
use medprob::data::synth::state::{Finding, Present, Severity, Side, StudyState, Zone};
use medprob::data::synth::{render_frontal, render_lateral, write_report, RenderOptions};
use rand::SeedableRng;

#[derive(Parser)]
#[command(about = "Render the SynthCXR montage and its captions")]
struct Args {
    /// Output folder.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
}

fn state(findings: &[(Finding, Option<Side>, Severity)]) -> StudyState {
    StudyState {
        findings: findings
            .iter()
            .map(|&(finding, side, severity)| Present {
                finding,
                side,
                severity,
                zone: Some(Zone::Lower),
                subtle: false,
            })
            .collect(),
        body_scale: 1.0,
        rotation: 1.5,
        exposure: 1.0,
        ap: false,
        has_lateral: true,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    use Finding::*;
    let cases: Vec<(&str, StudyState)> = vec![
        ("No finding", state(&[])),
        (
            "Cardiomegaly (severe)",
            state(&[(Cardiomegaly, None, Severity::Severe)]),
        ),
        (
            "Left pleural effusion (moderate)",
            state(&[(PleuralEffusion, Some(Side::Left), Severity::Moderate)]),
        ),
        (
            "Right pneumothorax (large)",
            state(&[(Pneumothorax, Some(Side::Right), Severity::Severe)]),
        ),
        (
            "Right lower lobe pneumonia",
            state(&[(Pneumonia, Some(Side::Right), Severity::Severe)]),
        ),
        (
            "Edema, cardiomegaly, bilateral effusions, devices",
            state(&[
                (Cardiomegaly, None, Severity::Moderate),
                (Edema, None, Severity::Severe),
                (PleuralEffusion, Some(Side::Bilateral), Severity::Mild),
                (SupportDevices, None, Severity::Mild),
            ]),
        ),
    ];
    let size = 256u32;
    let options = RenderOptions {
        size,
        noise: 0.02,
        vary_pose: true,
    };
    let (cols, rows) = (2 * 3, cases.len().div_ceil(3) as u32);
    let mut canvas = image::GrayImage::new(cols as u32 * (size + 4), rows * (size + 4));
    let mut md = String::from("| panel | label set | FINDINGS | IMPRESSION |\n|---|---|---|---|\n");
    for (k, (title, s)) in cases.iter().enumerate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(k as u64);
        let report = write_report(s, 0.0, 0.0, &mut rng);
        for (v, img) in [
            render_frontal(s, &options, &mut rng),
            render_lateral(s, &options, &mut rng),
        ]
        .iter()
        .enumerate()
        {
            let (x0, y0) = (
                ((k % 3) * 2 + v) as u32 * (size + 4),
                (k / 3) as u32 * (size + 4),
            );
            for y in 0..size {
                for x in 0..size {
                    let p = img.pixels[(y * size + x) as usize];
                    canvas.put_pixel(x0 + x, y0 + y, image::Luma([(p * 255.0).round() as u8]));
                }
            }
        }
        writeln!(
            md,
            "| row {}, pair {} | {title} | {} | {} |",
            k / 3 + 1,
            k % 3 + 1,
            report.findings,
            report.impression
        )?;
    }
    std::fs::create_dir_all(&args.out)?;
    canvas.save(args.out.join("synthcxr_montage.png"))?;
    std::fs::write(args.out.join("synthcxr_montage.md"), &md)?;
    print!("{md}");
    Ok(())
}
