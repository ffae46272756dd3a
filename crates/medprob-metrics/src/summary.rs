//! `summary.json`: the headline figures of an [`EvaluationReport`] as one flat object per
//! method, for people and scripts.
//!
//! ```json
//! {"methods": {"clip": {"i2t_r1": 0.014, …}, …}, "reference": {"oracle_labels": {…}}}
//! ```
//!
//! Every rate is a fraction in `[0, 1]` (the report's recall tables are in percent); every
//! figure is on the test split; a figure that cannot be computed (no labels, no state file)
//! is `null`. Keys per method:
//!
//! | key | meaning |
//! |---|---|
//! | `i2t_r1` … `t2i_r10` | instance Recall@1/5/10: the query's own study is within the first K |
//! | `rsum` | the sum of those six, in `[0, 6]` |
//! | `oracle_i2t_r1` … | the label oracle's expected instance recall (the same for every method) |
//! | `oracle_state_i2t_r1` … | the same for the state oracle |
//! | `plausible_i2t_p1`, `plausible_t2i_p1` | share of queries whose top-1 hit has exactly the query's positive label set |
//! | `plausible_state_i2t_p1`, … | the same with state agreement (same findings, same sides) |
//! | `plausible_ece_i2t` | ECE (15 equal-width bins) of the top-1 match probability against "top-1 is plausible" |
//! | `plausible_aurc_i2t_k1`, `plausible_augrc_i2t_k1` | risk–coverage with confidence = top-1 probability, loss = top-1 not plausible |
//! | `plausible_eaurc_i2t_k1` | the same AURC minus that of the best possible order (the excess risk of the confidence) |
//! | `unc_rho_image_group`, `unc_rho_text_group` | Spearman ρ of Σσ² against the label group size on test (`null` without variance) |
//! | `unc_rho_image_group_log_var`, `unc_rho_text_group_log_var` | the same with the mean log-variance (what the match probability reads) |
//! | `unc_eaurc_i2t_k1` | the same E-AURC with the query's −Σσ² as the confidence (`null` without variance) |
//! | `best_confidence_eaurc_i2t_k1` | the lowest E-AURC at K = 1 among top-1 probability, top-1/top-2 margin and −Σσ² |
//! | `sgr_coverage_i2t_k5` | test coverage of selection with guaranteed risk fitted on validation (loss: no plausible hit in the top 5) |
//! | `zero_shot_mean_auroc` | mean AUROC over the findings with at least 10 positive test studies, with the prompts of `zero_shot.prompts` in `metrics.json` (mined from the training reports by default) |
//! | `zero_shot_auroc_pleural_effusion`, `zero_shot_auroc_cardiomegaly` | per finding |
//! | `zero_shot_generic_mean_auroc`, … | the same three with the generic prompts ("no cardiomegaly"), where the zero-shot above used prompts mined from the training reports |
//! | `hub_max_share_i2t`, `hub_skew_i2t` | the largest share of image queries with one and the same top-1 report; skewness of `N₁₀` over the reports |
//! | `hub_correction` | the retrieval-time hub correction the figures were ranked with (`{"kind": "csls", "k": 10}` by default, or `{"kind": "balanced", "temperature": …}`), or `null` |
//! | `<key>_raw` | with a hub correction: the same figure ranked without it (every key but the oracles') |
//!
//! Variants and oracles go under `reference`: `oracle_labels` and `oracle_state`, each with
//! its expected instance recall (`i2t_r1` …), the number of groups, the largest group and
//! `chance_p1`, the plausible P@1 of a random ranking.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::confidence::ConfidenceKind;
use crate::oracle::OracleRecall;
use crate::relevance::RelevanceKind;
use crate::report::{Direction, EvaluationReport, MethodReport};
use crate::selective::Guarantee;

/// Findings with fewer positive test studies are left out of `zero_shot_mean_auroc`.
pub const ZERO_SHOT_MIN_POSITIVES: usize = 10;

/// The JSON key of a method's display name: "PCME++" → `pcmepp`, "CXR-CLIP" → `cxr_clip`.
pub fn method_key(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '+' => "p".to_string(),
            '-' | ' ' => "_".to_string(),
            c => c.to_lowercase().to_string(),
        })
        .collect()
}

fn num(x: Option<f64>) -> Value {
    match x {
        Some(v) if v.is_finite() => json!(v),
        _ => Value::Null,
    }
}

fn at(recall: &[(usize, f64)], k: usize) -> Option<f64> {
    recall.iter().find(|(kk, _)| *kk == k).map(|(_, v)| *v)
}

fn oracle<'a>(report: &'a EvaluationReport, name: &str) -> Option<&'a OracleRecall> {
    report.oracles.iter().find(|o| o.name == name)
}

/// The flat figures of one method.
pub fn method_summary(report: &EvaluationReport, m: &MethodReport) -> Map<String, Value> {
    let mut out = Map::new();
    let mut rsum = 0.0;
    let mut complete = true;
    for (name, d) in [
        ("i2t", &m.retrieval.image_to_text),
        ("t2i", &m.retrieval.text_to_image),
    ] {
        for k in [1, 5, 10] {
            let r = at(&d.recall, k).map(|v| v / 100.0);
            match r {
                Some(v) => rsum += v,
                None => complete = false,
            }
            out.insert(format!("{name}_r{k}"), num(r));
        }
    }
    out.insert("rsum".into(), num(complete.then_some(rsum)));
    for (prefix, name) in [("oracle", "labels"), ("oracle_state", "state")] {
        let o = oracle(report, name);
        for d in ["i2t", "t2i"] {
            for k in [1, 10] {
                out.insert(
                    format!("{prefix}_{d}_r{k}"),
                    num(o.and_then(|o| at(&o.recall, k))),
                );
            }
        }
    }
    for (prefix, kind) in [
        ("plausible", RelevanceKind::Labels),
        ("plausible_state", RelevanceKind::State),
    ] {
        for (d, dir) in [
            ("i2t", Direction::ImageToText),
            ("t2i", Direction::TextToImage),
        ] {
            out.insert(
                format!("{prefix}_{d}_p1"),
                num(m.plausible(kind, dir).and_then(|p| p.recall_at(1))),
            );
        }
    }
    let p = m.plausible(RelevanceKind::Labels, Direction::ImageToText);
    out.insert(
        "plausible_ece_i2t".into(),
        num(p.map(|p| p.calibration.ece)),
    );
    let k1 = p.and_then(|p| p.risk_coverage.iter().find(|r| r.k == 1));
    out.insert("plausible_aurc_i2t_k1".into(), num(k1.map(|r| r.aurc)));
    out.insert("plausible_augrc_i2t_k1".into(), num(k1.map(|r| r.augrc)));
    out.insert("plausible_eaurc_i2t_k1".into(), num(k1.map(|r| r.eaurc)));
    let a = m.ambiguity.as_ref();
    for (key, rho) in [
        ("unc_rho_image_group", a.map(|a| a.rho_image_group)),
        ("unc_rho_text_group", a.map(|a| a.rho_text_group)),
        (
            "unc_rho_image_group_log_var",
            a.map(|a| a.rho_image_group_log_var),
        ),
        (
            "unc_rho_text_group_log_var",
            a.map(|a| a.rho_text_group_log_var),
        ),
    ] {
        out.insert(key.into(), num(rho));
    }
    out.insert(
        "unc_eaurc_i2t_k1".into(),
        num(p.and_then(|p| p.eaurc(ConfidenceKind::Uncertainty, 1))),
    );
    out.insert(
        "best_confidence_eaurc_i2t_k1".into(),
        num(p.and_then(|p| {
            p.by_confidence
                .iter()
                .filter(|c| c.k == 1 && c.eaurc.is_finite())
                .map(|c| c.eaurc)
                .reduce(f64::min)
        })),
    );
    let sgr = p.and_then(|p| {
        p.selective.iter().find(|s| {
            s.k == 5 && matches!(s.guarantee, Guarantee::SelectiveRiskWithProbability { .. })
        })
    });
    out.insert(
        "sgr_coverage_i2t_k5".into(),
        num(sgr.map(|s| s.test.coverage)),
    );
    // The generic keys only where the generic prompts were scored beside mined ones.
    let generic = m.zero_shot_generic.as_ref().map(Some);
    for (prefix, zs) in std::iter::once(("zero_shot", m.zero_shot.as_ref()))
        .chain(generic.map(|g| ("zero_shot_generic", g)))
    {
        let counted: Vec<f64> = zs
            .map(|z| {
                z.classes
                    .iter()
                    .filter(|c| c.positives >= ZERO_SHOT_MIN_POSITIVES)
                    .filter_map(|c| c.auroc)
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            format!("{prefix}_mean_auroc"),
            num((!counted.is_empty()).then(|| counted.iter().sum::<f64>() / counted.len() as f64)),
        );
        for (key, finding) in [
            ("auroc_pleural_effusion", "Pleural Effusion"),
            ("auroc_cardiomegaly", "Cardiomegaly"),
        ] {
            let v = zs.and_then(|z| z.classes.iter().find(|c| c.finding == finding)?.auroc);
            out.insert(format!("{prefix}_{key}"), num(v));
        }
    }
    let hub = m
        .hubness
        .iter()
        .find(|h| h.direction == Direction::ImageToText);
    out.insert(
        "hub_max_share_i2t".into(),
        num(hub.map(|h| h.max_top1_share)),
    );
    out.insert("hub_skew_i2t".into(), num(hub.map(|h| h.skewness)));
    out.insert(
        "hub_correction".into(),
        m.hub_correction.map_or(Value::Null, |h| {
            serde_json::to_value(h).unwrap_or(Value::Null)
        }),
    );
    // With a hub correction the unsuffixed keys are the corrected retrieval and
    // `<key>_raw` the uncorrected one (the oracles are the same for both).
    if let Some(raw) = &m.raw {
        for (k, v) in method_summary(report, raw) {
            if !k.starts_with("oracle") && k != "hub_correction" {
                out.insert(format!("{k}_raw"), v);
            }
        }
    }
    out
}

/// The whole `summary.json` object.
pub fn summary(report: &EvaluationReport) -> Value {
    let methods: BTreeMap<String, Value> = report
        .methods
        .iter()
        .map(|m| {
            (
                method_key(&m.method),
                Value::Object(method_summary(report, m)),
            )
        })
        .collect();
    let mut reference = Map::new();
    for o in &report.oracles {
        let mut r = Map::new();
        for d in ["i2t", "t2i"] {
            for (k, v) in &o.recall {
                r.insert(format!("{d}_r{k}"), num(Some(*v)));
            }
        }
        r.insert("chance_p1".into(), num(Some(o.chance_p1)));
        r.insert("groups".into(), json!(o.groups));
        r.insert("largest_group".into(), json!(o.largest_group));
        reference.insert(format!("oracle_{}", o.name), Value::Object(r));
    }
    json!({ "methods": methods, "reference": reference })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_keys() {
        assert_eq!(method_key("PCME++"), "pcmepp");
        assert_eq!(method_key("CXR-CLIP"), "cxr_clip");
        assert_eq!(method_key("MedProbCLIP"), "medprobclip");
        assert_eq!(method_key("CLIP"), "clip");
    }

    #[test]
    fn non_finite_figures_are_null() {
        assert_eq!(num(Some(f64::NAN)), Value::Null);
        assert_eq!(num(None), Value::Null);
        assert_eq!(num(Some(0.25)), json!(0.25));
    }
}
