//! Do the guarantees hold? 500 random calibration/test splits of synthetic retrieval
//! scores, whose errors grow as the confidence falls:
//!
//! * conformal risk control: the mean realised joint loss on the test queries is at most
//!   α plus three Monte-Carlo standard errors;
//! * selection with guaranteed risk: the share of splits whose realised selective risk
//!   exceeds α is at most δ plus three binomial standard errors.

use medprob_metrics::selective::{conformal_risk_control, selection_with_guaranteed_risk};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const SPLITS: usize = 500;

/// 4,000 queries: confidence u ~ U(0, 1), wrong with probability 0.6·(1 − u)².
fn population(seed: u64) -> (Vec<f64>, Vec<bool>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..4000)
        .map(|_| {
            let u: f64 = rng.random();
            (u, rng.random::<f64>() < 0.6 * (1.0 - u).powi(2))
        })
        .unzip()
}

fn split(rng: &mut rand::rngs::StdRng, n: usize, n_cal: usize) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(rng);
    let test = idx.split_off(n_cal);
    (idx, test)
}

#[test]
fn conformal_risk_control_holds_in_expectation() {
    let (conf, wrong) = population(1);
    let loss: Vec<f64> = wrong.iter().map(|&w| f64::from(u8::from(w))).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    for alpha in [0.02, 0.05, 0.1] {
        let mut realised = Vec::with_capacity(SPLITS);
        let mut coverage = 0.0;
        for _ in 0..SPLITS {
            let (cal, test) = split(&mut rng, conf.len(), 1000);
            let pick = |ix: &[usize], v: &[f64]| ix.iter().map(|&i| v[i]).collect::<Vec<f64>>();
            let s = conformal_risk_control(&pick(&cal, &conf), &pick(&cal, &loss), alpha).unwrap();
            let o = s
                .evaluate(&pick(&test, &conf), &pick(&test, &loss))
                .unwrap();
            realised.push(o.joint_risk);
            coverage += o.coverage / SPLITS as f64;
        }
        let n = SPLITS as f64;
        let mean = realised.iter().sum::<f64>() / n;
        let sd = (realised.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let bound = alpha + 3.0 * sd / n.sqrt();
        assert!(
            mean <= bound,
            "α = {alpha}: mean joint loss {mean} > {bound}"
        );
        // Not vacuous: it answers a real share of queries and spends most of its budget.
        assert!(coverage > 0.3, "α = {alpha}: coverage {coverage}");
        assert!(
            mean > 0.5 * alpha,
            "α = {alpha}: mean joint loss {mean} is needlessly small"
        );
    }
}

#[test]
fn guaranteed_selective_risk_holds_with_probability() {
    let (conf, wrong) = population(3);
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    for (alpha, delta) in [(0.05, 0.1), (0.1, 0.05)] {
        let mut exceed = 0usize;
        let mut coverage = 0.0;
        for _ in 0..SPLITS {
            let (cal, test) = split(&mut rng, conf.len(), 1500);
            let c: Vec<f64> = cal.iter().map(|&i| conf[i]).collect();
            let w: Vec<bool> = cal.iter().map(|&i| wrong[i]).collect();
            let s = selection_with_guaranteed_risk(&c, &w, alpha, delta).unwrap();
            let tc: Vec<f64> = test.iter().map(|&i| conf[i]).collect();
            let tl: Vec<f64> = test
                .iter()
                .map(|&i| f64::from(u8::from(wrong[i])))
                .collect();
            let o = s.evaluate(&tc, &tl).unwrap();
            if o.selective_risk.is_some_and(|r| r > alpha) {
                exceed += 1;
            }
            coverage += o.coverage / SPLITS as f64;
        }
        let n = SPLITS as f64;
        let share = exceed as f64 / n;
        let bound = delta + 3.0 * (delta * (1.0 - delta) / n).sqrt();
        assert!(
            share <= bound,
            "α = {alpha}, δ = {delta}: {share} of splits exceed α (> {bound})"
        );
        assert!(coverage > 0.2, "α = {alpha}: coverage {coverage}");
    }
}
