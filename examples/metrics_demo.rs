//! The evaluation suite on *simulated* embeddings, so its report and plots can be seen
//! without training anything: `docs/metrics_demo/` is this program's output.
//!
//! Each simulated study has a latent vector `z`; its image and report embed as `z` plus
//! noise whose size varies per study (some studies are hard). Three simulated methods see
//! the same data: one whose variance tracks the noise (as MedProbCLIP's should), one whose
//! variance is only loosely related to it, and a deterministic one. Robustness rows add
//! image-side noise that grows with severity, in a different amount per corruption type.
//! None of these numbers describe a trained model; `quickstart` produces those.
//!
//! ```sh
//! cargo run --release --example metrics_demo -- --out docs/metrics_demo
//! ```

use std::path::PathBuf;

use clap::Parser;
use medprob::core::{Distance, GaussianEmbeddings, TopKOptions};
use medprob::metrics::corruption::{Corruption, SEVERITIES};
use medprob::metrics::evaluate::{
    evaluate_retrieval, robustness_entry, EvaluationConfig, Scoring, Split,
};
use medprob::metrics::report::EvaluationReport;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

#[derive(Parser)]
struct Args {
    /// Output directory (metrics.json, report.md, plots).
    #[arg(long, default_value = "docs/metrics_demo")]
    out: PathBuf,
    /// Studies per split.
    #[arg(long, default_value_t = 1000)]
    studies: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

const DIM: usize = 64;

/// Latent study vectors, per-study difficulty and label bit masks.
struct Studies {
    z: Vec<Vec<f32>>,
    tau: Vec<f32>,
    labels: Vec<u32>,
}

fn studies(n: usize, rng: &mut rand::rngs::StdRng) -> Studies {
    let z: Vec<Vec<f32>> = (0..n)
        .map(|_| (0..DIM).map(|_| StandardNormal.sample(rng)).collect())
        .collect();
    let tau = (0..n).map(|_| rng.random_range(0.4f32..1.6)).collect();
    // Labels follow the first 14 latent coordinates, so similar studies share labels.
    let labels = z
        .iter()
        .map(|v| (0..14).fold(0u32, |m, c| m | (u32::from(v[c] > 1.2) << c)))
        .collect();
    Studies { z, tau, labels }
}

/// How a simulated method embeds one side of a study.
#[derive(Clone, Copy)]
enum Method {
    Informative,
    Loose,
    Deterministic,
}

fn embed(s: &Studies, m: Method, extra: f32, rng: &mut rand::rngs::StdRng) -> GaussianEmbeddings {
    let n = s.z.len();
    let (mut mean, mut log_var) = (Vec::with_capacity(n * DIM), Vec::with_capacity(n * DIM));
    for (z, &tau) in s.z.iter().zip(&s.tau) {
        let sd = (tau * tau + extra * extra).sqrt();
        let row: Vec<f32> = z
            .iter()
            .map(|&x| {
                let e: f32 = StandardNormal.sample(rng);
                x + sd * e * 0.9
            })
            .collect();
        let v = match m {
            Method::Informative => (sd * sd).ln(),
            Method::Loose => (sd * sd).ln() * 0.3 + rng.random_range(-0.8f32..0.8),
            Method::Deterministic => 0.0,
        };
        if let Method::Deterministic = m {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            mean.extend(row.iter().map(|x| x / norm));
        } else {
            mean.extend(row);
        }
        log_var.extend(std::iter::repeat_n(v.clamp(-6.0, 6.0), DIM));
    }
    GaussianEmbeddings::from_vecs(n, DIM, mean, log_var).expect("finite")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let val = studies(args.studies, &mut rng);
    let test = studies(args.studies, &mut rng);
    let keys: Vec<u64> = (0..args.studies as u64).collect();
    let config = EvaluationConfig::default();
    let mut report = EvaluationReport {
        title: "Evaluation suite demo (simulated embeddings)".into(),
        dataset: format!(
            "Simulated: {} validation and {} test studies, D = {DIM}, seed {}. Not a trained model.",
            args.studies, args.studies, args.seed
        ),
        notes: vec!["Regenerate: `cargo run --release --example metrics_demo`".into()],
        methods: Vec::new(),
        oracles: Vec::new(),
    };
    for (name, method, scoring, score) in [
        (
            "variance tracks noise",
            Method::Informative,
            Scoring {
                distance: Distance::Mls,
                probabilistic: true,
            },
            "MLS",
        ),
        (
            "variance loosely related",
            Method::Loose,
            Scoring {
                distance: Distance::Csd,
                probabilistic: true,
            },
            "CSD",
        ),
        (
            "deterministic",
            Method::Deterministic,
            Scoring {
                distance: Distance::Csd,
                probabilistic: false,
            },
            "cosine",
        ),
    ] {
        let (vi, vt) = (
            embed(&val, method, 0.0, &mut rng),
            embed(&val, method, 0.0, &mut rng),
        );
        let (ti, tt) = (
            embed(&test, method, 0.0, &mut rng),
            embed(&test, method, 0.0, &mut rng),
        );
        let v = Split {
            images: &vi,
            image_keys: &keys,
            texts: &vt,
            text_keys: &keys,
            image_labels: Some(&val.labels),
            text_labels: Some(&val.labels),
            label_names: &[],
            image_states: None,
            text_states: None,
        };
        let t = Split {
            images: &ti,
            image_keys: &keys,
            texts: &tt,
            text_keys: &keys,
            image_labels: Some(&test.labels),
            text_labels: Some(&test.labels),
            label_names: &[],
            image_states: None,
            text_states: None,
        };
        let mut m = evaluate_retrieval(name, score, scoring, &v, &t, &config)?;
        let blocks = TopKOptions::default();
        m.robustness.push(robustness_entry(
            None,
            scoring,
            m.match_probability,
            &ti,
            &keys,
            &tt,
            &keys,
            &blocks,
        )?);
        for (i, c) in Corruption::ALL.into_iter().enumerate() {
            for s in SEVERITIES {
                let extra = 0.15 * s as f32 * (1.0 + i as f32 * 0.25);
                let corrupted = embed(&test, method, extra, &mut rng);
                m.robustness.push(robustness_entry(
                    Some((c, s)),
                    scoring,
                    m.match_probability,
                    &corrupted,
                    &keys,
                    &tt,
                    &keys,
                    &blocks,
                )?);
            }
        }
        println!(
            "{name}: RSUM {:.1}, ECE {:.4}",
            m.retrieval.rsum,
            m.calibration.as_ref().map_or(f64::NAN, |c| c.ece)
        );
        report.methods.push(m);
    }
    std::fs::create_dir_all(&args.out)?;
    report.save_json(&args.out.join("metrics.json"))?;
    let plots = report.write_plots(&args.out, "png")?;
    report.write_plots(&args.out, "svg")?;
    let md = report.to_markdown(Some("variance tracks noise"), &plots);
    medprob::core::fs::write_atomic(&args.out.join("report.md"), md.as_bytes())?;
    println!("{}", report.retrieval_table());
    println!("wrote {}", args.out.display());
    Ok(())
}
