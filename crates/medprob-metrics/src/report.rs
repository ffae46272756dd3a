//! One serialisable evaluation report: every example writes it as `metrics.json`, renders
//! it as Markdown, and draws its plots from it. The metric definitions live in their own
//! modules; this one only aggregates and presents.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::calibration::CalibrationReport;
use crate::confidence::ConfidenceKind;
use crate::corruption::Corruption;
use crate::error::{MetricsError, Result};
use crate::label_retrieval::LabelRetrieval;
use crate::plot::{self, LineChart, ReliabilityChart, Series};
use crate::retrieval::RetrievalReport;
use crate::selective::{Guarantee, SelectiveOutcome};
use crate::zero_shot::ZeroShotReport;

/// Retrieval direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Image query, report gallery.
    ImageToText,
    /// Report query, image gallery.
    TextToImage,
}

impl Direction {
    /// Short label: `i2t` or `t2i`.
    pub fn short(&self) -> &'static str {
        match self {
            Self::ImageToText => "i2t",
            Self::TextToImage => "t2i",
        }
    }
}

/// AURC and E-AURC of one (direction, confidence, K).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AurcEntry {
    pub direction: Direction,
    pub confidence: ConfidenceKind,
    /// The loss is `1{best positive not within the first K}`.
    pub k: usize,
    #[serde(with = "crate::nan_null")]
    pub aurc: f64,
    #[serde(with = "crate::nan_null")]
    pub eaurc: f64,
    /// `(coverage, selective risk)` at 100 %, 90 %, …, 10 %.
    pub table: Vec<(f64, f64)>,
    /// `(coverage, selective risk)` for plotting.
    pub curve: Vec<(f64, f64)>,
}

/// One selective-retrieval threshold with its guarantee, fitted on calibration queries and
/// measured on test queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectiveEntry {
    pub direction: Direction,
    pub confidence: ConfidenceKind,
    pub k: usize,
    pub guarantee: Guarantee,
    /// The confidence threshold (`null` in JSON when nothing is answered).
    pub threshold: Option<f64>,
    pub calibration: SelectiveOutcome,
    pub test: SelectiveOutcome,
}

/// Retrieval and calibration under one corruption at one severity (image→text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustnessEntry {
    /// `None` for the clean images.
    pub corruption: Option<Corruption>,
    /// 0 = clean images.
    pub severity: u8,
    /// The corruption's parameter at this severity (NaN when clean).
    #[serde(with = "crate::nan_null")]
    pub parameter: f64,
    /// `(K, Recall@K)` image→text, percent.
    pub recall: Vec<(usize, f64)>,
    /// ECE of the top-1 probability.
    #[serde(with = "crate::nan_null")]
    pub ece: f64,
    /// Mean `Σ σ²` of the corrupted image embeddings (NaN for deterministic models).
    #[serde(with = "crate::nan_null")]
    pub mean_uncertainty: f64,
}

/// Recall within bins of query uncertainty.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UncertaintyBin {
    /// Mean `Σ σ²` of the queries in the bin.
    #[serde(with = "crate::nan_null")]
    pub uncertainty: f64,
    /// Recall@K of those queries, percent.
    #[serde(with = "crate::nan_null")]
    pub recall: f64,
    pub k: usize,
    pub queries: usize,
}

/// Everything measured for one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodReport {
    /// "MedProbCLIP", "PCME++", "CLIP", "CXR-CLIP", ….
    pub method: String,
    /// How pairs are scored ("MLS", "CSD", "cosine").
    pub score: String,
    /// Where the match probability comes from (e.g. "post-hoc Platt on validation").
    pub probability: String,
    /// The match probability every figure, answer and index uses:
    /// `σ(−a·d + q·u_query + h·u_hit + b)` (`q = h = 0` for deterministic models).
    pub match_probability: medprob_core::MatchProbability,
    /// When `match_probability` reads the uncertainties: the same fit on distance alone,
    /// what zero-shot classification scores prompts with (a prompt's variance says how many
    /// images it fits, not whether this image shows the finding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance_probability: Option<medprob_core::MatchProbability>,
    /// Σσ² against the label group size (probabilistic methods on labelled test splits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ambiguity: Option<crate::ambiguity::AmbiguityReport>,
    pub retrieval: RetrievalReport,
    pub label_retrieval: Vec<LabelRetrieval>,
    /// Zero-shot classification with the prompts of [`ZeroShotReport::prompts`]: sentences
    /// mined from the training reports where they have labels, else the generic templates.
    pub zero_shot: Option<ZeroShotReport>,
    /// The same with the generic templates, when `zero_shot` used mined prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_shot_generic: Option<ZeroShotReport>,
    /// Calibration of "the top-1 report is the image's own" (image→text).
    pub calibration: Option<CalibrationReport>,
    pub risk_coverage: Vec<AurcEntry>,
    pub selective: Vec<SelectiveEntry>,
    pub robustness: Vec<RobustnessEntry>,
    pub uncertainty_bins: Vec<UncertaintyBin>,
    /// The same retrieval judged by plausible matches: label agreement (ζ = 0) and, where
    /// the data has a ground truth, state agreement.
    #[serde(default)]
    pub plausible: Vec<crate::plausible::PlausibleReport>,
    /// Hubness of each direction's gallery (test split).
    #[serde(default)]
    pub hubness: Vec<crate::hubness::Hubness>,
    /// The hub correction the figures above were ranked with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_correction: Option<crate::hubness::HubCorrection>,
    /// The same evaluation without the hub correction (retrieval, plausible, calibration
    /// and hubness figures; no robustness sweep), when one was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Box<MethodReport>>,
}

impl MethodReport {
    /// The plausible-match figures of one relevance kind and direction, when measured.
    pub fn plausible(
        &self,
        kind: crate::relevance::RelevanceKind,
        direction: Direction,
    ) -> Option<&crate::plausible::PlausibleDirection> {
        self.plausible
            .iter()
            .find(|p| p.kind == kind)
            .and_then(|p| p.direction(direction))
    }
}

/// A full evaluation: several methods on one dataset split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationReport {
    pub title: String,
    /// Dataset and split, e.g. "SynthCXR test (750 studies)".
    pub dataset: String,
    /// Free-form remarks shown under the title (seed, hardware, wall time).
    pub notes: Vec<String>,
    pub methods: Vec<MethodReport>,
    /// Oracle references of the test split (instance recall of a group oracle).
    #[serde(default)]
    pub oracles: Vec<crate::oracle::OracleRecall>,
}

impl EvaluationReport {
    /// Write as pretty JSON, atomically.
    pub fn save_json(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| MetricsError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        medprob_core::fs::write_atomic(path, &json).map_err(|e| MetricsError::io(path, e))
    }

    /// Read a report written by [`save_json`](Self::save_json).
    pub fn load_json(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| MetricsError::io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| MetricsError::Format {
            path: path.to_path_buf(),
            message: format!("not an evaluation report: {e}"),
        })
    }

    /// The method called `name`.
    pub fn method(&self, name: &str) -> Option<&MethodReport> {
        self.methods.iter().find(|m| m.method == name)
    }

    /// The main comparison table (retrieval), as Markdown.
    pub fn retrieval_table(&self) -> String {
        let mut s = String::from(
            "| method | i2t R@1 | R@5 | R@10 | R@100 | t2i R@1 | R@5 | R@10 | R@100 | RSUM | RSUM (6) |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for m in &self.methods {
            let r = &m.retrieval;
            s += &format!("| {} ", m.method);
            for d in [&r.image_to_text, &r.text_to_image] {
                for (_, v) in &d.recall {
                    s += &format!("| {v:.2} ");
                }
            }
            s += &format!("| {:.2} | {:.2} |\n", r.rsum, r.rsum6);
        }
        s
    }

    /// Where `reference` is beaten: one line per headline figure on which another method
    /// does better (higher recall/AUROC/PMRP, lower ECE/AURC). Empty when it wins every one.
    pub fn where_beaten(&self, reference: &str) -> Vec<String> {
        let Some(me) = self.method(reference) else {
            return vec![format!("{reference} is not in this report")];
        };
        let mut out = Vec::new();
        let mut check = |what: String,
                         mine: f64,
                         higher_better: bool,
                         get: &dyn Fn(&MethodReport) -> Option<f64>| {
            for other in self.methods.iter().filter(|o| o.method != reference) {
                if let Some(theirs) = get(other) {
                    let better = if higher_better {
                        theirs > mine
                    } else {
                        theirs < mine
                    };
                    if better && mine.is_finite() {
                        out.push(format!(
                            "{}: {} {:.4} vs {reference} {:.4}",
                            what, other.method, theirs, mine
                        ));
                    }
                }
            }
        };
        check("RSUM".into(), me.retrieval.rsum, true, &|o| {
            Some(o.retrieval.rsum)
        });
        for (dir, get_dir) in [
            (
                "i2t",
                (|r: &RetrievalReport| &r.image_to_text)
                    as fn(&RetrievalReport) -> &crate::retrieval::DirectionReport,
            ),
            ("t2i", |r: &RetrievalReport| &r.text_to_image),
        ] {
            for &(k, v) in &get_dir(&me.retrieval).recall {
                check(format!("{dir} R@{k}"), v, true, &|o| {
                    get_dir(&o.retrieval).recall_at(k)
                });
            }
        }
        if let Some(z) = &me.zero_shot {
            check("zero-shot mean AUROC".into(), z.mean_auroc, true, &|o| {
                o.zero_shot.as_ref().map(|z| z.mean_auroc)
            });
        }
        if let Some(c) = &me.calibration {
            check("ECE (top-1, i2t)".into(), c.ece, false, &|o| {
                o.calibration.as_ref().map(|c| c.ece)
            });
        }
        for l in &me.label_retrieval {
            let zeta = l.zeta;
            check(format!("PMRP ζ={zeta}"), l.pmrp, true, &|o| {
                o.label_retrieval
                    .iter()
                    .find(|x| x.zeta == zeta)
                    .map(|x| x.pmrp)
            });
        }
        // Plausible matches by label agreement: P@1 both ways and the top-1 ECE.
        let labels = |m: &MethodReport, d: Direction| {
            m.plausible(crate::relevance::RelevanceKind::Labels, d)
                .cloned()
        };
        for d in [Direction::ImageToText, Direction::TextToImage] {
            if let Some(mine) = labels(me, d) {
                if let Some(v) = mine.recall_at(1) {
                    check(format!("plausible {} P@1", d.short()), v, true, &|o| {
                        labels(o, d).and_then(|x| x.recall_at(1))
                    });
                }
                if d == Direction::ImageToText {
                    check(
                        "plausible ECE (top-1, i2t)".into(),
                        mine.calibration.ece,
                        false,
                        &|o| labels(o, d).map(|x| x.calibration.ece),
                    );
                }
            }
        }
        // AURC: each method at its best confidence function, per direction and K.
        let best_aurc = |m: &MethodReport, d: Direction, k: usize| {
            m.risk_coverage
                .iter()
                .filter(|e| e.direction == d && e.k == k)
                .map(|e| e.aurc)
                .min_by(f64::total_cmp)
        };
        for d in [Direction::ImageToText, Direction::TextToImage] {
            for k in crate::retrieval::RECALL_KS {
                if let Some(mine) = best_aurc(me, d, k) {
                    check(
                        format!("AURC {} R@{k} (best confidence)", d.short()),
                        mine,
                        false,
                        &|o| best_aurc(o, d, k),
                    );
                }
            }
        }
        out
    }

    /// The plausible-match sections: per relevance, the headline figures with the oracle
    /// beside them; hubness; per-finding calibration.
    pub fn plausible_markdown(&self) -> String {
        let mut s = String::new();
        let kinds: Vec<(crate::relevance::RelevanceKind, String)> = {
            let mut v: Vec<(crate::relevance::RelevanceKind, String)> = Vec::new();
            for m in &self.methods {
                for p in &m.plausible {
                    if !v.iter().any(|(k, _)| *k == p.kind) {
                        v.push((p.kind, p.relevance.clone()));
                    }
                }
            }
            v
        };
        if kinds.is_empty() {
            return s;
        }
        s += "\n## Plausible matches (fractions; a hit is right when a radiologist would accept it)\n\n";
        s += "A hit counts as right when its study has exactly the query's positive CheXpert label set \
              (labels, ζ = 0: ignores side) or, on SynthCXR, the same findings on the same sides as the \
              query's hidden state (state). P@1 = the top-1 hit is right; R@K = a right hit is among the \
              first K; ECE and risk–coverage use the top-1 match probability as confidence and \
              \"top-1 not right\" as loss; SGR coverage = share of test queries answered by selection \
              with guaranteed risk fitted on validation (no right hit in the top 5, risk ≤ 0.3 with \
              probability ≥ 0.9).\n\n";
        let at = |v: &[(usize, f64)], k: usize| {
            v.iter()
                .find(|(kk, _)| *kk == k)
                .map_or("–".to_string(), |(_, x)| format!("{x:.3}"))
        };
        for (kind, name) in kinds {
            s += &format!("### Relevance: {name}\n\n| method | i2t P@1 | R@5 | R@10 | R-prec | t2i P@1 | R@5 | R@10 | R-prec | ECE i2t | AURC i2t K=1 | E-AURC | AUGRC | SGR coverage i2t K=5 (risk) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for m in &self.methods {
                let (Some(i), Some(t)) = (
                    m.plausible(kind, Direction::ImageToText),
                    m.plausible(kind, Direction::TextToImage),
                ) else {
                    continue;
                };
                let k1 = i.risk_coverage.iter().find(|r| r.k == 1);
                let f = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.3}"));
                let sgr = i.selective.iter().find(|e| {
                    e.k == 5
                        && matches!(e.guarantee, Guarantee::SelectiveRiskWithProbability { .. })
                });
                s += &format!(
                    "| {} | {} | {} | {} | {:.3} | {} | {} | {} | {:.3} | {:.3} | {} | {} | {} | {} |\n",
                    m.method,
                    at(&i.recall, 1),
                    at(&i.recall, 5),
                    at(&i.recall, 10),
                    i.r_precision.r_precision,
                    at(&t.recall, 1),
                    at(&t.recall, 5),
                    at(&t.recall, 10),
                    t.r_precision.r_precision,
                    i.calibration.ece,
                    f(k1.map(|r| r.aurc)),
                    f(k1.map(|r| r.eaurc)),
                    f(k1.map(|r| r.augrc)),
                    sgr.map_or("–".into(), |e| format!(
                        "{:.3} ({})",
                        e.test.coverage,
                        e.test.selective_risk.map_or("–".into(), |r| format!("{r:.3}"))
                    )),
                );
            }
            s += "\n";
            s += &self.confidence_markdown(kind);
        }
        if !self.oracles.is_empty() {
            s += "### Oracle references (instance recall, fractions)\n\nAn oracle that knows each study's group and nothing else ranks the query's group first in random order: its expected Recall@K is the mean of min(1, K/|group|). A reference, not a ceiling (a model that sees side or severity can beat the label oracle). Chance P@1 is the plausible P@1 of a random ranking.\n\n| oracle | groups | largest group | chance P@1 | R@1 | R@5 | R@10 |\n|---|---:|---:|---:|---:|---:|---:|\n";
            for o in &self.oracles {
                s += &format!(
                    "| {} | {} | {} | {:.3} | {} | {} | {} |\n",
                    o.name,
                    o.groups,
                    o.largest_group,
                    o.chance_p1,
                    at(&o.recall, 1),
                    at(&o.recall, 5),
                    at(&o.recall, 10)
                );
            }
            s += "\n| method | i2t R@1 | R@10 | t2i R@1 | R@10 |\n|---|---:|---:|---:|---:|\n";
            for m in &self.methods {
                let r = &m.retrieval;
                let pc = |d: &crate::retrieval::DirectionReport, k| {
                    d.recall_at(k)
                        .map_or("–".into(), |v| format!("{:.3}", v / 100.0))
                };
                s += &format!(
                    "| {} | {} | {} | {} | {} |\n",
                    m.method,
                    pc(&r.image_to_text, 1),
                    pc(&r.image_to_text, 10),
                    pc(&r.text_to_image, 1),
                    pc(&r.text_to_image, 10)
                );
            }
            s += "\n";
        }
        if self.methods.iter().any(|m| !m.hubness.is_empty()) {
            s += "### Hubness (test split)\n\nN₁₀ skewness over the gallery (0 = no hubs), the largest share of queries whose first hit is one and the same item, the largest N₁₀ as a share of the queries, and that hub's Σσ² over the gallery's mean (below 1: the hub is more confident than average). Exact ties are shared.\n\n| method | direction | skewness N₁₀ | top-1 hub share | N₁₀ hub share | hub Σσ² / mean |\n|---|---|---:|---:|---:|---:|\n";
            for m in &self.methods {
                for h in &m.hubness {
                    s += &format!(
                        "| {} | {} | {:.2} | {:.3} | {:.3} | {} |\n",
                        m.method,
                        h.direction.short(),
                        h.skewness,
                        h.max_top1_share,
                        h.max_k_share,
                        if h.hub_variance_ratio.is_nan() {
                            "–".to_string()
                        } else {
                            format!("{:.3}", h.hub_variance_ratio)
                        }
                    );
                }
            }
            s += "\n";
        }
        // Per-finding calibration, labels relevance, image→text.
        let with: Vec<&MethodReport> = self
            .methods
            .iter()
            .filter(|m| {
                m.plausible(
                    crate::relevance::RelevanceKind::Labels,
                    Direction::ImageToText,
                )
                .is_some_and(|p| !p.per_finding.is_empty())
            })
            .collect();
        if let Some(first) = with.first() {
            s += "### Calibration per finding (labels, image→text: ECE of the top-1 probability within the queries positive for each finding)\n\n";
            s += &format!(
                "| finding (queries) | {} |\n|---|{}\n",
                with.iter()
                    .map(|m| m.method.as_str())
                    .collect::<Vec<_>>()
                    .join(" | "),
                "---:|".repeat(with.len())
            );
            let rows = &first
                .plausible(
                    crate::relevance::RelevanceKind::Labels,
                    Direction::ImageToText,
                )
                .expect("filtered")
                .per_finding;
            for row in rows {
                s += &format!("| {} ({}) ", row.finding, row.queries);
                for m in &with {
                    let v = m
                        .plausible(
                            crate::relevance::RelevanceKind::Labels,
                            Direction::ImageToText,
                        )
                        .and_then(|p| p.per_finding.iter().find(|f| f.finding == row.finding));
                    s += &v.map_or("| – ".into(), |f| {
                        format!(
                            "| {:.3} (p {:.2}, acc {:.2}) ",
                            f.ece, f.mean_confidence, f.accuracy
                        )
                    });
                }
                s += "|\n";
            }
            s += "\n";
        }
        s
    }

    /// E-AURC at K = 1 under relevance `kind` for each confidence a method has, both
    /// directions (empty when no method has the rows).
    fn confidence_markdown(&self, kind: crate::relevance::RelevanceKind) -> String {
        use crate::confidence::ConfidenceKind;
        let mut s = String::from(
            "E-AURC at K = 1 by confidence (↓; the excess risk over the best possible order when \
             the surest queries are answered first; \"no variance\": a deterministic model):\n\n\
             | method | direction | top-1 probability | top-1/top-2 margin | uncertainty (−Σσ²) |\n\
             |---|---|---:|---:|---:|\n",
        );
        let mut rows = 0;
        for m in &self.methods {
            for d in [Direction::ImageToText, Direction::TextToImage] {
                let Some(p) = m.plausible(kind, d) else {
                    continue;
                };
                if p.by_confidence.is_empty() {
                    continue;
                }
                let f = |c: ConfidenceKind| p.eaurc(c, 1).map(|v| format!("{v:.3}"));
                s += &format!(
                    "| {} | {} | {} | {} | {} |\n",
                    m.method,
                    d.short(),
                    f(ConfidenceKind::Top1Probability).unwrap_or_else(|| "–".into()),
                    f(ConfidenceKind::Margin).unwrap_or_else(|| "–".into()),
                    f(ConfidenceKind::Uncertainty).unwrap_or_else(|| "no variance".into()),
                );
                rows += 1;
            }
        }
        if rows == 0 {
            return String::new();
        }
        s += "\n";
        let amb: Vec<_> = self
            .methods
            .iter()
            .filter_map(|m| m.ambiguity.as_ref().map(|a| (m, a)))
            .collect();
        if !amb.is_empty() && kind == crate::relevance::RelevanceKind::Labels {
            s += "Does the variance track ambiguity? Spearman ρ of Σσ², and of the mean log-variance the match probability reads, against the group size (test studies with the same positive label set; positive: bigger groups, more variance):\n\n| method | studies | ρ images Σσ² | ρ reports Σσ² | ρ images mean log σ² | ρ reports mean log σ² |\n|---|---:|---:|---:|---:|---:|\n";
            for (m, a) in amb {
                s += &format!(
                    "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                    m.method,
                    a.studies,
                    a.rho_image_group,
                    a.rho_text_group,
                    a.rho_image_group_log_var,
                    a.rho_text_group_log_var
                );
            }
            s += "\n";
        }
        s
    }

    /// With and without the hub correction, per method (empty when no method has one).
    pub fn hub_correction_markdown(&self) -> String {
        let with_raw: Vec<(&MethodReport, &MethodReport)> = self
            .methods
            .iter()
            .filter_map(|m| m.raw.as_deref().map(|r| (m, r)))
            .collect();
        let Some(h) = with_raw.first().and_then(|(m, _)| m.hub_correction) else {
            return String::new();
        };
        let how = match h {
            crate::hubness::HubCorrection::Csls { k } => format!(
                "a CSLS hub correction (each gallery item's distances lowered by half its mean \
                 distance to its {k} nearest validation queries of the other modality)"
            ),
            crate::hubness::HubCorrection::Balanced { temperature } => format!(
                "a balanced hub correction (each gallery item's distances shifted so that the \
                 validation queries of the other modality choose every item equally often, \
                 softly at τ = {temperature} × the spread of their candidate distances)"
            ),
        };
        let mut s = format!(
            "\n## Hub correction: with / without\n\nEvery figure of this report is ranked with \
             {how}, the same for every method. Each cell is *with / without* it (without: `raw` in metrics.json, `_raw` keys in summary.json):\n\n\
             | method | i2t P@1 | t2i P@1 | i2t R@10 (%) | t2i R@10 (%) | top-1 hub share i2t |\n\
             |---|---:|---:|---:|---:|---:|\n"
        );
        let p1 = |m: &MethodReport, d: Direction| {
            m.plausible(crate::relevance::RelevanceKind::Labels, d)
                .and_then(|p| p.recall_at(1))
        };
        let hub = |m: &MethodReport| {
            m.hubness
                .iter()
                .find(|x| x.direction == Direction::ImageToText)
                .map(|x| x.max_top1_share)
        };
        let pair = |a: Option<f64>, b: Option<f64>, digits: usize| match (a, b) {
            (Some(a), Some(b)) => format!("{a:.digits$} / {b:.digits$}"),
            _ => "–".into(),
        };
        for (m, r) in with_raw {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                m.method,
                pair(
                    p1(m, Direction::ImageToText),
                    p1(r, Direction::ImageToText),
                    3
                ),
                pair(
                    p1(m, Direction::TextToImage),
                    p1(r, Direction::TextToImage),
                    3
                ),
                pair(
                    m.retrieval.image_to_text.recall_at(10),
                    r.retrieval.image_to_text.recall_at(10),
                    1
                ),
                pair(
                    m.retrieval.text_to_image.recall_at(10),
                    r.retrieval.text_to_image.recall_at(10),
                    1
                ),
                pair(hub(m), hub(r), 3),
            );
        }
        s
    }

    /// The whole report as Markdown; `plots` are image paths relative to the Markdown file.
    pub fn to_markdown(&self, reference: Option<&str>, plots: &[(String, String)]) -> String {
        let mut s = format!("# {}\n\n{}\n\n", self.title, self.dataset);
        for n in &self.notes {
            s += &format!("- {n}\n");
        }
        s += &self.plausible_markdown();
        s += &self.hub_correction_markdown();
        s += "\n## Instance retrieval: the query's own study (Recall@K, %)\n\n";
        s += &self.retrieval_table();
        s += "\nMean / median rank (1 = first): ";
        s += &self
            .methods
            .iter()
            .map(|m| {
                format!(
                    "{} i2t {:.1}/{:.0}, t2i {:.1}/{:.0}",
                    m.method,
                    m.retrieval.image_to_text.mean_rank,
                    m.retrieval.image_to_text.median_rank,
                    m.retrieval.text_to_image.mean_rank,
                    m.retrieval.text_to_image.median_rank
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        s += ".\n";

        if self.methods.iter().any(|m| !m.label_retrieval.is_empty()) {
            s += "\n## Label-aware retrieval (image→text, %)\n\n| method | PMRP ζ=0 | ζ=1 | ζ=2 | mAP@R ζ=0 | ζ=1 | ζ=2 |\n|---|---:|---:|---:|---:|---:|---:|\n";
            for m in &self.methods {
                let pm: Vec<String> = m
                    .label_retrieval
                    .iter()
                    .map(|l| format!("{:.2}", l.pmrp))
                    .collect();
                let ma: Vec<String> = m
                    .label_retrieval
                    .iter()
                    .map(|l| format!("{:.2}", l.map_at_r))
                    .collect();
                s += &format!(
                    "| {} | {} | {} |\n",
                    m.method,
                    pm.join(" | "),
                    ma.join(" | ")
                );
            }
        }

        if self.methods.iter().any(|m| m.zero_shot.is_some()) {
            s += "\n## Zero-shot classification (AUROC)\n\n";
            let names: Vec<&str> = self
                .methods
                .iter()
                .filter_map(|m| m.zero_shot.as_ref().map(|_| m.method.as_str()))
                .collect();
            s += &format!(
                "| finding | {} |\n|---|{}\n",
                names.join(" | "),
                "---:|".repeat(names.len())
            );
            let first = self
                .methods
                .iter()
                .find_map(|m| m.zero_shot.as_ref())
                .expect("checked");
            for (c, class) in first.classes.iter().enumerate() {
                s += &format!(
                    "| {} (+{}/−{}) ",
                    class.finding, class.positives, class.negatives
                );
                for m in self.methods.iter().filter_map(|m| m.zero_shot.as_ref()) {
                    s += &match m.classes.get(c).and_then(|x| x.auroc) {
                        Some(a) => format!("| {a:.3} "),
                        None => "| – ".into(),
                    };
                }
                s += "|\n";
            }
            s += "| **mean AUROC** ";
            for m in self.methods.iter().filter_map(|m| m.zero_shot.as_ref()) {
                s += &format!("| **{:.3}** ", m.mean_auroc);
            }
            s += "|\n| mean accuracy at 0.5 ";
            for m in self.methods.iter().filter_map(|m| m.zero_shot.as_ref()) {
                s += &format!("| {:.3} ", m.mean_accuracy);
            }
            s += "|\n";
            if self.methods.iter().any(|m| m.zero_shot_generic.is_some()) {
                s += "| mean AUROC, generic prompts ";
                for m in self.methods.iter().filter(|m| m.zero_shot.is_some()) {
                    s += &match &m.zero_shot_generic {
                        Some(g) => format!("| {:.3} ", g.mean_auroc),
                        None => "| – ".into(),
                    };
                }
                s += "|\n";
            }
            if let (false, Some(o)) = (first.prompts.is_empty(), first.mined_with) {
                s += &format!("\nPrompts, the same for every method: sentences of the training reports that are at least {} times more frequent among reports labelled positive (negative) than among the others and occur in at least {} of them, the {} most frequent per side; *frequent* marks a side no sentence is evidence of (the reports never say it), scored with its most frequent sentences that are no evidence of the other side, a baseline of what such reports say instead; *generic* marks a side where even those were missing and the templates (\"{{finding}}\", \"no {{finding}}\", …) were used. The generic row above uses the templates for every finding.\n\n| finding | present | absent |\n|---|---|---|\n", o.min_ratio, o.min_reports, o.per_side);
                let side = |p: &[String], src: crate::zero_shot::PromptSource| {
                    let list = p
                        .iter()
                        .map(|p| format!("“{p}”"))
                        .collect::<Vec<_>>()
                        .join(" · ");
                    match src {
                        crate::zero_shot::PromptSource::Generic => format!("*generic* {list}"),
                        crate::zero_shot::PromptSource::Frequent => format!("*frequent* {list}"),
                        crate::zero_shot::PromptSource::Corpus => list,
                    }
                };
                for p in &first.prompts {
                    s += &format!(
                        "| {} | {} | {} |\n",
                        p.finding,
                        side(&p.positive, p.positive_source),
                        side(&p.negative, p.negative_source)
                    );
                }
            }
        }

        s += "\n## Calibration of the top-1 match probability against \"the top-1 is the query's own study\" (image→text)\n\nThe probability is the plausible-match one above, so it overstates the chance that a hit is the query's *own* study: these rows show by how much.\n\n| method | probability | ECE | ECE (equal mass) | Brier | NLL | mean p | top-1 accuracy |\n|---|---|---:|---:|---:|---:|---:|---:|\n";
        for m in &self.methods {
            if let Some(c) = &m.calibration {
                s += &format!(
                    "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
                    m.method,
                    m.probability,
                    c.ece,
                    c.ece_equal_mass,
                    c.brier,
                    c.nll,
                    c.mean_confidence,
                    c.accuracy
                );
            }
        }

        s += "\n## Risk–coverage (AURC ↓ / E-AURC ↓, loss = miss at R@K)\n\n| method | direction | confidence | R@1 | R@5 | R@10 | R@100 |\n|---|---|---|---:|---:|---:|---:|\n";
        for m in &self.methods {
            for d in [Direction::ImageToText, Direction::TextToImage] {
                for c in ConfidenceKind::ALL {
                    let cells: Vec<String> = crate::retrieval::RECALL_KS
                        .iter()
                        .filter_map(|&k| {
                            m.risk_coverage
                                .iter()
                                .find(|e| e.direction == d && e.confidence == c && e.k == k)
                                .map(|e| format!("{:.3} / {:.3}", e.aurc, e.eaurc))
                        })
                        .collect();
                    if !cells.is_empty() {
                        s += &format!(
                            "| {} | {} | {} | {} |\n",
                            m.method,
                            d.short(),
                            c.name(),
                            cells.join(" | ")
                        );
                    }
                }
            }
        }

        if self.methods.iter().any(|m| !m.selective.is_empty()) {
            s += "\n## Selective retrieval with guarantees (thresholds fitted on the calibration split, measured on test)\n\n| method | direction | K | confidence | guarantee | test coverage | test selective risk | test joint risk |\n|---|---|---:|---|---|---:|---:|---:|\n";
            for m in &self.methods {
                for e in &m.selective {
                    s += &format!(
                        "| {} | {} | {} | {} | {} | {:.3} | {} | {:.3} |\n",
                        m.method,
                        e.direction.short(),
                        e.k,
                        e.confidence.name(),
                        e.guarantee.describe(),
                        e.test.coverage,
                        e.test
                            .selective_risk
                            .map_or("–".into(), |r| format!("{r:.3}")),
                        e.test.joint_risk
                    );
                }
            }
        }

        if self.methods.iter().any(|m| !m.robustness.is_empty()) {
            s += "\n## Robustness to image corruptions (image→text R@10 %, ECE, mean Σσ²)\n\n| method | corruption | severity | parameter | R@1 | R@10 | ECE | mean Σσ² |\n|---|---|---:|---:|---:|---:|---:|---:|\n";
            for m in &self.methods {
                for e in &m.robustness {
                    let r = |k: usize| {
                        e.recall
                            .iter()
                            .find(|(kk, _)| *kk == k)
                            .map_or(f64::NAN, |x| x.1)
                    };
                    s += &format!(
                        "| {} | {} | {} | {} | {:.2} | {:.2} | {:.4} | {:.3} |\n",
                        m.method,
                        e.corruption.map_or("none", |c| c.name()),
                        e.severity,
                        if e.parameter.is_nan() {
                            "–".into()
                        } else {
                            format!("{}", e.parameter)
                        },
                        r(1),
                        r(10),
                        e.ece,
                        e.mean_uncertainty
                    );
                }
            }
        }

        if let Some(reference) = reference {
            let beaten = self.where_beaten(reference);
            s += &format!("\n## Where {reference} does not come first\n\n");
            if beaten.is_empty() {
                s += &format!("{reference} is best on every headline figure above.\n");
            } else {
                for b in beaten {
                    s += &format!("- {b}\n");
                }
            }
        }

        if !plots.is_empty() {
            s += "\n## Plots\n\n";
            for (caption, file) in plots {
                s += &format!("![{caption}]({file})\n\n");
            }
        }
        s
    }

    /// Draw the report's plots into `dir` as `<name>.<ext>` (ext = "png" or "svg");
    /// returns `(caption, file name)` for each plot written.
    pub fn write_plots(&self, dir: &Path, ext: &str) -> Result<Vec<(String, String)>> {
        let mut written = Vec::new();
        let mut emit = |caption: &str, stem: &str| -> PathBuf {
            let file = format!("{stem}.{ext}");
            written.push((caption.to_string(), file.clone()));
            dir.join(file)
        };

        // Plausible-match reliability diagrams (labels, image→text), one panel per method.
        let charts: Vec<ReliabilityChart> = self
            .methods
            .iter()
            .filter_map(|m| {
                m.plausible(
                    crate::relevance::RelevanceKind::Labels,
                    Direction::ImageToText,
                )
                .map(|d| ReliabilityChart::from_calibration(&m.method, &d.calibration))
            })
            .collect();
        if !charts.is_empty() {
            let path = emit(
                "Reliability of the top-1 match probability, plausible matches (same positive labels)",
                "reliability_plausible",
            );
            plot::reliability_diagram(
                &path,
                "Top-1 probability vs \"top-1 has the query's labels\" (image→text)",
                &charts,
            )?;
        }
        // Plausible risk–coverage, image→text, K = 1.
        let series: Vec<Series> = self
            .methods
            .iter()
            .filter_map(|m| {
                let d = m.plausible(
                    crate::relevance::RelevanceKind::Labels,
                    Direction::ImageToText,
                )?;
                let r = d.risk_coverage.iter().find(|r| r.k == 1)?;
                Some(Series {
                    name: format!("{} (AURC {:.3}, AUGRC {:.3})", m.method, r.aurc, r.augrc),
                    points: r.curve.clone(),
                })
            })
            .collect();
        if !series.is_empty() {
            let path = emit(
                "Risk–coverage, plausible matches, image→text top-1",
                "risk_coverage_plausible",
            );
            plot::line_chart(
                &path,
                &risk_coverage_chart(
                    "Risk–coverage, image→text (loss = top-1 not plausible)".into(),
                    series,
                ),
            )?;
        }

        // Reliability diagrams (instance), one panel per method.
        let charts: Vec<ReliabilityChart> = self
            .methods
            .iter()
            .filter_map(|m| {
                m.calibration
                    .as_ref()
                    .map(|c| ReliabilityChart::from_calibration(&m.method, c))
            })
            .collect();
        if !charts.is_empty() {
            let path = emit(
                "Reliability of the top-1 match probability against the query's own study",
                "reliability",
            );
            plot::reliability_diagram(
                &path,
                "Top-1 probability vs \"top-1 is the query's own study\" (image→text)",
                &charts,
            )?;
        }

        // Risk–coverage at R@1 and R@10, each method at its best confidence function.
        for k in [1usize, 10] {
            let series: Vec<Series> = self
                .methods
                .iter()
                .filter_map(|m| {
                    m.risk_coverage
                        .iter()
                        .filter(|e| e.direction == Direction::ImageToText && e.k == k)
                        .min_by(|a, b| a.aurc.total_cmp(&b.aurc))
                        .map(|e| Series {
                            name: format!(
                                "{} ({}, AURC {:.3})",
                                m.method,
                                e.confidence.name(),
                                e.aurc
                            ),
                            points: e.curve.clone(),
                        })
                })
                .collect();
            if !series.is_empty() {
                let path = emit(
                    &format!("Risk–coverage, image→text R@{k}"),
                    &format!("risk_coverage_r{k}"),
                );
                plot::line_chart(
                    &path,
                    &risk_coverage_chart(
                        format!("Risk–coverage, image→text (loss = miss at R@{k})"),
                        series,
                    ),
                )?;
            }
        }

        // Recall against query uncertainty.
        let series: Vec<Series> = self
            .methods
            .iter()
            .filter(|m| !m.uncertainty_bins.is_empty())
            .map(|m| Series {
                name: format!("{} (R@{})", m.method, m.uncertainty_bins[0].k),
                points: m
                    .uncertainty_bins
                    .iter()
                    .enumerate()
                    .map(|(i, b)| ((i + 1) as f64, b.recall))
                    .collect(),
            })
            .collect();
        let bins = series.iter().map(|s| s.points.len()).max().unwrap_or(1);
        if !series.is_empty() {
            let path = emit("Recall by query-uncertainty bin", "uncertainty_recall");
            plot::line_chart(
                &path,
                &LineChart {
                    title: "Image→text recall by image uncertainty (bins of equal size, 1 = most certain)".into(),
                    x_label: "uncertainty bin (Σσ², ascending)".into(),
                    y_label: "Recall@K (%)".into(),
                    x_range: Some((0.5, bins as f64 + 0.5)),
                    y_range: Some((0.0, 100.0)),
                    series,
                    diagonal: false,
                },
            )?;
        }

        // Robustness: one panel per corruption, R@10 against severity, methods overlaid.
        let mut panels = Vec::new();
        for c in Corruption::ALL {
            let series: Vec<Series> = self
                .methods
                .iter()
                .filter(|m| m.robustness.iter().any(|e| e.corruption == Some(c)))
                .map(|m| Series {
                    name: m.method.clone(),
                    points: m
                        .robustness
                        .iter()
                        .filter(|e| e.corruption == Some(c) || e.corruption.is_none())
                        .filter_map(|e| {
                            e.recall
                                .iter()
                                .find(|(k, _)| *k == 10)
                                .map(|&(_, r)| (e.severity as f64, r))
                        })
                        .collect(),
                })
                .collect();
            if !series.is_empty() {
                panels.push(LineChart {
                    title: c.name().into(),
                    x_label: "severity (0 = clean)".into(),
                    y_label: "i2t R@10 (%)".into(),
                    x_range: Some((0.0, 5.0)),
                    y_range: None,
                    series,
                    diagonal: false,
                });
            }
        }
        if !panels.is_empty() {
            let path = emit("Robustness to image corruptions", "robustness");
            plot::line_chart_grid(&path, "Image→text R@10 under image corruptions", &panels, 4)?;
        }
        Ok(written)
    }
}

/// A risk–coverage chart: selective risk against coverage, both on [0, 1].
fn risk_coverage_chart(title: String, series: Vec<Series>) -> LineChart {
    LineChart {
        title,
        x_label: "coverage (share of queries answered)".into(),
        y_label: "selective risk".into(),
        x_range: Some((0.0, 1.0)),
        y_range: Some((0.0, 1.0)),
        series,
        diagonal: false,
    }
}
