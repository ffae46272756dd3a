//! AUROC, ECE, Brier, NLL and AURC against values computed by scikit-learn and NumPy
//! (`scripts/golden_metrics.py`, output committed as `testdata/golden/metrics.json`).

use medprob_metrics::auroc::auroc;
use medprob_metrics::calibration::{brier, ece, nll, Binning};
use medprob_metrics::risk_coverage::RiskCoverage;
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    auroc: Vec<AurocCase>,
    calibration: Vec<CalibrationCase>,
    risk_coverage: Vec<RiskCase>,
}

#[derive(Deserialize)]
struct AurocCase {
    name: String,
    scores: Vec<f64>,
    labels: Vec<u8>,
    auroc: f64,
}

#[derive(Deserialize)]
struct CalibrationCase {
    name: String,
    confidence: Vec<f64>,
    correct: Vec<u8>,
    n_bins: usize,
    ece_equal_width: f64,
    ece_equal_mass: f64,
    brier: f64,
    nll: f64,
}

#[derive(Deserialize)]
struct RiskCase {
    name: String,
    confidence: Vec<f64>,
    loss: Vec<f64>,
    aurc: f64,
    eaurc: f64,
    coverages: Vec<f64>,
    selective_risk: Vec<f64>,
}

fn golden() -> Golden {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/golden/metrics.json"
    );
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_slice(&bytes).expect("golden metrics JSON")
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-10 * (1.0 + want.abs()),
        "{what}: got {got}, scikit-learn/NumPy {want}"
    );
}

#[test]
fn auroc_matches_scikit_learn() {
    let g = golden();
    assert!(g.auroc.len() >= 4);
    for c in &g.auroc {
        let labels: Vec<bool> = c.labels.iter().map(|&l| l == 1).collect();
        let got = auroc(&c.scores, &labels)
            .unwrap()
            .expect("both classes present");
        close(got, c.auroc, &c.name);
    }
}

#[test]
fn calibration_matches_numpy() {
    let g = golden();
    assert!(g.calibration.len() >= 4);
    for c in &g.calibration {
        let correct: Vec<bool> = c.correct.iter().map(|&l| l == 1).collect();
        let p = &c.confidence;
        close(
            ece(p, &correct, c.n_bins, Binning::EqualWidth).unwrap(),
            c.ece_equal_width,
            &format!("{} ECE", c.name),
        );
        close(
            ece(p, &correct, c.n_bins, Binning::EqualMass).unwrap(),
            c.ece_equal_mass,
            &format!("{} ECE (mass)", c.name),
        );
        close(
            brier(p, &correct).unwrap(),
            c.brier,
            &format!("{} Brier", c.name),
        );
        close(nll(p, &correct).unwrap(), c.nll, &format!("{} NLL", c.name));
    }
}

#[test]
fn aurc_matches_numpy() {
    let g = golden();
    assert!(g.risk_coverage.len() >= 4);
    for c in &g.risk_coverage {
        let rc = RiskCoverage::new(&c.confidence, &c.loss).unwrap();
        close(rc.aurc(), c.aurc, &format!("{} AURC", c.name));
        close(rc.eaurc(), c.eaurc, &format!("{} E-AURC", c.name));
        for (&cov, &risk) in c.coverages.iter().zip(&c.selective_risk) {
            close(rc.risk_at(cov), risk, &format!("{} risk at {cov}", c.name));
        }
    }
}
