//! From embeddings to a report: `evaluate_retrieval` on two methods with known behaviour,
//! the JSON round trip, the Markdown, the honesty section and the plots.

use medprob_core::{Distance, GaussianEmbeddings, TopKOptions};
use medprob_metrics::corruption::Corruption;
use medprob_metrics::evaluate::{
    evaluate_retrieval, robustness_entry, EvaluationConfig, Scoring, Split,
};
use medprob_metrics::report::EvaluationReport;
use rand::{Rng, SeedableRng};

const N: usize = 200;
const D: usize = 16;

fn latent(seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..N * D).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Image and report embeddings of the same studies, the report perturbed by `noise`.
fn pair(z: &[f32], noise: f32, seed: u64) -> (GaussianEmbeddings, GaussianEmbeddings) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t: Vec<f32> = z
        .iter()
        .map(|&x| x + noise * rng.random_range(-1.0f32..1.0))
        .collect();
    let v = vec![-2.0f32; N * D];
    (
        GaussianEmbeddings::from_vecs(N, D, z.to_vec(), v.clone()).unwrap(),
        GaussianEmbeddings::from_vecs(N, D, t, v).unwrap(),
    )
}

fn report() -> EvaluationReport {
    let keys: Vec<u64> = (0..N as u64).collect();
    let labels: Vec<u32> = (0..N as u32).map(|i| i % 4).collect();
    let scoring = Scoring {
        distance: Distance::Csd,
        probabilistic: true,
    };
    let config = EvaluationConfig::default();
    let mut methods = Vec::new();
    for (name, noise) in [("near-perfect", 0.05f32), ("noisy", 1.5)] {
        let (vi, vt) = pair(&latent(1), noise, 2);
        let (ti, tt) = pair(&latent(3), noise, 4);
        let val = Split {
            images: &vi,
            image_keys: &keys,
            texts: &vt,
            text_keys: &keys,
            image_labels: None,
            text_labels: None,
            label_names: &[],
            image_states: None,
            text_states: None,
        };
        let test = Split {
            images: &ti,
            image_keys: &keys,
            texts: &tt,
            text_keys: &keys,
            image_labels: Some(&labels),
            text_labels: Some(&labels),
            label_names: &[],
            image_states: None,
            text_states: None,
        };
        let mut m = evaluate_retrieval(name, "CSD", scoring, &val, &test, &config).unwrap();
        m.robustness.push(
            robustness_entry(
                None,
                scoring,
                m.match_probability,
                &ti,
                &keys,
                &tt,
                &keys,
                &TopKOptions::default(),
            )
            .unwrap(),
        );
        m.robustness.push(
            robustness_entry(
                Some((Corruption::Rotation, 2)),
                scoring,
                m.match_probability,
                &ti,
                &keys,
                &tt,
                &keys,
                &TopKOptions::default(),
            )
            .unwrap(),
        );
        methods.push(m);
    }
    EvaluationReport {
        title: "test".into(),
        dataset: "random".into(),
        notes: vec![],
        methods,
        oracles: Vec::new(),
    }
}

#[test]
fn evaluation_figures_are_consistent() {
    let r = report();
    let good = r.method("near-perfect").unwrap();
    let bad = r.method("noisy").unwrap();
    assert_eq!(good.retrieval.image_to_text.recall_at(1), Some(100.0));
    assert_eq!(good.retrieval.rsum, 800.0);
    assert!(bad.retrieval.rsum < 600.0, "{}", bad.retrieval.rsum);
    // Eight R@K × 3 confidences × 2 directions... per K: 4 Ks × 3 kinds × 2 directions.
    assert_eq!(bad.risk_coverage.len(), 4 * 3 * 2);
    // Selective entries: K = 10 only, 2 guarantees × 3 kinds × 2 directions.
    assert_eq!(bad.selective.len(), 2 * 3 * 2);
    for e in &bad.selective {
        assert!(e.test.coverage >= 0.0 && e.test.coverage <= 1.0);
    }
    // Top-1 accuracy in the calibration report equals R@1.
    let c = bad.calibration.as_ref().unwrap();
    assert!((c.accuracy * 100.0 - bad.retrieval.image_to_text.recall_at(1).unwrap()).abs() < 1e-9);
    // Label-aware figures exist for ζ = 0, 1, 2.
    assert_eq!(bad.label_retrieval.len(), 3);
    // The clean robustness row reproduces the test recall.
    assert_eq!(bad.robustness[0].recall, bad.retrieval.image_to_text.recall);
    assert_eq!(bad.robustness[1].parameter, 5.0);
    assert_eq!(
        bad.uncertainty_bins
            .iter()
            .map(|b| b.queries)
            .sum::<usize>(),
        N
    );
}

#[test]
fn honesty_section_names_what_the_reference_loses() {
    let r = report();
    let beaten = r.where_beaten("noisy");
    assert!(
        beaten.iter().any(|b| b.starts_with("RSUM: near-perfect")),
        "{beaten:?}"
    );
    assert!(r
        .where_beaten("near-perfect")
        .iter()
        .all(|b| !b.starts_with("RSUM")));
    let md = r.to_markdown(Some("noisy"), &[]);
    assert!(md.contains("## Where noisy does not come first"));
    assert!(md.contains("| near-perfect | 100.00 |"), "{md}");
    assert!(md.contains("in expectation"));
    assert!(md.contains("with probability ≥ 0.9"));
}

#[test]
fn json_round_trip_and_plots() {
    let r = report();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.json");
    r.save_json(&path).unwrap();
    let back = EvaluationReport::load_json(&path).unwrap();
    // NaN ≠ NaN, so compare the serialised forms.
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        serde_json::to_string(&r).unwrap()
    );
    let plots = r.write_plots(dir.path(), "png").unwrap();
    let names: Vec<&str> = plots.iter().map(|(_, f)| f.as_str()).collect();
    assert_eq!(
        names,
        [
            "reliability.png",
            "risk_coverage_r1.png",
            "risk_coverage_r10.png",
            "uncertainty_recall.png",
            "robustness.png"
        ]
    );
    for (_, f) in &plots {
        let img = image::open(dir.path().join(f)).unwrap();
        assert!(img.width() >= 400 && img.height() >= 300, "{f}");
    }
    let e = EvaluationReport::load_json(&dir.path().join("reliability.png")).unwrap_err();
    assert!(e.to_string().contains("not an evaluation report"), "{e}");
}
