//! `docs/EVIDENCE.md`: the section-pair study on real reports ([`crate::sections`]),
//! aggregated over seeds, with its plots.
//!
//! Every number in the document comes from the runs it is given; the prose that reads
//! them ("the probabilistic variant is ahead on …") is generated from the same numbers, so
//! a rerun that changes a conclusion changes the sentence too.

use std::fmt::Write as _;
use std::path::Path;

use medprob_metrics::plot::{self, LineChart, ReliabilityChart, Series};
use medprob_metrics::report::Direction;
use medprob_metrics::ConfidenceKind;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::sections::SectionEvaluation;

/// What the data held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceData {
    /// Reports read.
    pub studies: usize,
    /// With both findings and impression.
    pub with_both: usize,
    /// Of those, with MeSH indexing (the labels PMRP needs); the study uses these.
    pub labelled: usize,
    /// Train, validation and test pairs.
    pub split: (usize, usize, usize),
    /// The seed of the split (fixed across the runs: their spread is training randomness).
    pub split_seed: u64,
    /// Distinct impressions (normalised) among the pairs used.
    pub distinct_impressions: usize,
    /// The most shared impressions: text and number of studies.
    pub most_shared: Vec<(String, usize)>,
}

/// One distinct impression and the uncertainty a tower gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpressionUncertainty {
    pub impression: String,
    /// Studies (among those used) with this impression.
    pub studies: usize,
    /// `Σ σ²` of its embedding.
    pub total_variance: f64,
}

/// How a tower's uncertainty spreads over the distinct impressions: the extremes (the
/// only impression texts kept: the reports are CC BY-NC-ND and are not redistributed) and
/// summary statistics over all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpressionSummary {
    /// Which run ("variant, seed N").
    pub from: String,
    /// Distinct impressions ranked.
    pub distinct: usize,
    /// The most uncertain, most uncertain first.
    pub most: Vec<ImpressionUncertainty>,
    /// The least uncertain, least uncertain first.
    pub least: Vec<ImpressionUncertainty>,
    /// Spearman ρ between the number of studies sharing an impression and its `Σ σ²`.
    pub sharing_spearman: f64,
    /// Mean `Σ σ²` and count of impressions shared by 5 or more studies.
    pub shared: (f64, usize),
    /// Mean `Σ σ²` and count of impressions of a single study.
    pub single: (f64, usize),
}

impl ImpressionSummary {
    /// Summarise `all` (any order), keeping the `n` most and `n` least uncertain.
    pub fn new(from: String, mut all: Vec<ImpressionUncertainty>, n: usize) -> Self {
        all.sort_by(|a, b| {
            b.total_variance
                .total_cmp(&a.total_variance)
                .then(a.impression.cmp(&b.impression))
        });
        let x: Vec<f64> = all.iter().map(|i| i.studies as f64).collect();
        let y: Vec<f64> = all.iter().map(|i| i.total_variance).collect();
        let group = |keep: &dyn Fn(usize) -> bool| {
            let v: Vec<f64> = all
                .iter()
                .filter(|i| keep(i.studies))
                .map(|i| i.total_variance)
                .collect();
            (mean_sd(&v).0, v.len())
        };
        let n = n.min(all.len());
        let mut least = all[all.len() - n..].to_vec();
        least.reverse();
        Self {
            from,
            distinct: all.len(),
            sharing_spearman: crate::sections::spearman(&x, &y),
            shared: group(&|s| s >= 5),
            single: group(&|s| s == 1),
            most: all[..n].to_vec(),
            least,
        }
    }
}

/// The whole study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The command that regenerates the document.
    pub command: String,
    pub data: EvidenceData,
    /// Every run, variants in a fixed order, seeds within.
    pub runs: Vec<SectionEvaluation>,
    /// How the first probabilistic run's uncertainty spreads over the impressions.
    pub impressions: Option<ImpressionSummary>,
    /// Wall time of the whole study, minutes, and the threads it used.
    pub wall_minutes: f64,
    pub threads: usize,
    /// Epochs and batch size per variant (`variant: text`).
    pub settings: Vec<(String, String)>,
}

/// `mean ± sample standard deviation` of the finite values (NaN when there are none).
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, sd)
}

fn pm(values: &[f64], digits: usize) -> String {
    let (m, s) = mean_sd(values);
    if m.is_nan() {
        "–".into()
    } else {
        format!("{m:.digits$} ± {s:.digits$}")
    }
}

/// Readers for one run's numbers.
fn recall(e: &SectionEvaluation, direction: Direction, k: usize) -> f64 {
    let d = match direction {
        Direction::ImageToText => &e.report.retrieval.image_to_text,
        Direction::TextToImage => &e.report.retrieval.text_to_image,
    };
    d.recall_at(k).unwrap_or(f64::NAN)
}

fn pmrp(e: &SectionEvaluation, zeta: u32) -> f64 {
    e.report
        .label_retrieval
        .iter()
        .find(|l| l.zeta == zeta)
        .map_or(f64::NAN, |l| l.pmrp)
}

fn ece(e: &SectionEvaluation) -> f64 {
    e.report.calibration.as_ref().map_or(f64::NAN, |c| c.ece)
}

/// The confidence a variant is judged by: its own uncertainty when it has one, else the
/// top-1 match probability.
fn own_confidence(e: &SectionEvaluation) -> ConfidenceKind {
    let probabilistic = e
        .report
        .risk_coverage
        .iter()
        .any(|a| a.confidence == ConfidenceKind::Uncertainty);
    if probabilistic {
        ConfidenceKind::Uncertainty
    } else {
        ConfidenceKind::Top1Probability
    }
}

fn aurc(e: &SectionEvaluation, confidence: ConfidenceKind, k: usize) -> f64 {
    e.report
        .risk_coverage
        .iter()
        .find(|a| a.direction == Direction::ImageToText && a.confidence == confidence && a.k == k)
        .map_or(f64::NAN, |a| a.aurc)
}

fn rho(e: &SectionEvaluation, direction: &str, measure: &str) -> (f64, usize) {
    e.error_correlation
        .iter()
        .find(|c| c.direction == direction && c.measure == measure)
        .map_or((f64::NAN, 0), |c| (c.spearman, c.queries))
}

fn crc(e: &SectionEvaluation) -> Option<(f64, f64, f64)> {
    e.report
        .selective
        .iter()
        .find(|s| {
            s.direction == Direction::ImageToText
                && s.confidence == own_confidence(e)
                && matches!(
                    s.guarantee,
                    medprob_metrics::selective::Guarantee::JointRiskInExpectation { .. }
                )
        })
        .map(|s| {
            let alpha = match s.guarantee {
                medprob_metrics::selective::Guarantee::JointRiskInExpectation { alpha } => alpha,
                _ => f64::NAN,
            };
            (alpha, s.test.coverage, s.test.joint_risk)
        })
}

/// Words for a correlation with errors.
fn strength(r: f64) -> &'static str {
    if r > 0.3 {
        "uncertainty predicts errors"
    } else if r > 0.1 {
        "a weak link"
    } else {
        "uncertainty does not predict errors"
    }
}

const F2I: &str = "findings→impression";
const I2F: &str = "impression→findings";
use crate::sections::{NEAREST_MEASURE as NEAREST, VARIANCE_MEASURE as VARIANCE};

impl Evidence {
    /// The variants in order of first appearance.
    fn variants(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for r in &self.runs {
            if !v.contains(&r.variant.as_str()) {
                v.push(&r.variant);
            }
        }
        v
    }

    fn runs_of(&self, variant: &str) -> Vec<&SectionEvaluation> {
        self.runs.iter().filter(|r| r.variant == variant).collect()
    }

    /// Mean over seeds of `f` for `variant`.
    fn mean_of(&self, variant: &str, f: impl Fn(&SectionEvaluation) -> f64) -> f64 {
        let v: Vec<f64> = self.runs_of(variant).into_iter().map(f).collect();
        mean_sd(&v).0
    }

    /// Write the plots into `dir` (created) and return `(caption, file name)` pairs.
    pub fn write_plots(&self, dir: &Path) -> Result<Vec<(String, String)>> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let mut out = Vec::new();
        let first: Vec<&SectionEvaluation> = self
            .variants()
            .into_iter()
            .filter_map(|v| self.runs_of(v).into_iter().next())
            .collect();
        for k in [1usize, 10] {
            let series: Vec<Series> = first
                .iter()
                .filter_map(|e| {
                    let c = own_confidence(e);
                    e.report
                        .risk_coverage
                        .iter()
                        .find(|a| {
                            a.direction == Direction::ImageToText && a.confidence == c && a.k == k
                        })
                        .map(|a| Series {
                            name: format!("{} ({}, AURC {:.3})", e.variant, c.name(), a.aurc),
                            points: a.curve.clone(),
                        })
                })
                .collect();
            let file = format!("risk_coverage_r{k}.png");
            plot::line_chart(
                &dir.join(&file),
                &LineChart {
                    title: format!(
                        "IU reports, findings→impression: risk–coverage (miss at R@{k})"
                    ),
                    x_label: "coverage (share of queries answered, most confident first)".into(),
                    y_label: "selective risk".into(),
                    x_range: Some((0.0, 1.0)),
                    y_range: Some((0.0, 1.0)),
                    series,
                    diagonal: false,
                },
            )?;
            out.push((
                format!(
                    "Risk–coverage, findings→impression, R@{k} (seed {})",
                    self.runs[0].seed
                ),
                file,
            ));
        }
        let charts: Vec<ReliabilityChart> = first
            .iter()
            .filter_map(|e| {
                e.report
                    .calibration
                    .as_ref()
                    .map(|c| ReliabilityChart::from_calibration(&e.variant, c))
            })
            .collect();
        let file = "reliability.png".to_string();
        plot::reliability_diagram(
            &dir.join(&file),
            "Top-1 match probability, findings→impression",
            &charts,
        )?;
        out.push((
            format!(
                "Reliability of the top-1 match probability (seed {})",
                self.runs[0].seed
            ),
            file,
        ));
        let bins: Vec<Series> = first
            .iter()
            .filter(|e| !e.report.uncertainty_bins.is_empty())
            .map(|e| Series {
                name: format!("{} (R@{})", e.variant, e.report.uncertainty_bins[0].k),
                points: e
                    .report
                    .uncertainty_bins
                    .iter()
                    .enumerate()
                    .map(|(i, b)| ((i + 1) as f64, b.recall))
                    .collect(),
            })
            .collect();
        if !bins.is_empty() {
            let file = "recall_by_uncertainty.png".to_string();
            plot::line_chart(
                &dir.join(&file),
                &LineChart {
                    title: "Findings→impression recall by the query's uncertainty".into(),
                    x_label: "uncertainty bin (1 = most certain findings)".into(),
                    y_label: "recall (%)".into(),
                    x_range: None,
                    y_range: None,
                    series: bins,
                    diagonal: false,
                },
            )?;
            out.push((
                "Recall by query-uncertainty bin (equal-count bins)".into(),
                file,
            ));
        }
        Ok(out)
    }

    /// The document. `plots` are `(caption, path relative to the document)`.
    pub fn to_markdown(&self, plots: &[(String, String)]) -> String {
        let mut s = String::new();
        let d = &self.data;
        let seeds: Vec<String> = {
            let mut v: Vec<u64> = self.runs.iter().map(|r| r.seed).collect();
            v.sort_unstable();
            v.dedup();
            v.iter().map(u64::to_string).collect()
        };
        let _ = writeln!(
            s,
            "# Evidence on real reports: probabilistic text embeddings on the IU X-ray reports\n"
        );
        let _ = writeln!(
            s,
            "Generated by `{}` in {:.1} minutes on {} threads (CPU). Do not edit by hand: \
             every number and every sentence that compares numbers below is rewritten by \
             that command.\n",
            self.command, self.wall_minutes, self.threads
        );
        let _ = writeln!(s, "## The question\n");
        let _ = writeln!(
            s,
            "Many reports share one impression while their findings differ. A probabilistic \
             text tower trained to match findings with impressions should give such \
             ambiguous texts high uncertainty, and its uncertainty should predict its \
             retrieval errors. Both are tested here on real clinical text, without images: \
             the findings and the impression of a report are the two \"views\" of SPEC §4's \
             intra-modal text term.\n"
        );
        let _ = writeln!(s, "## Data\n");
        let _ = writeln!(
            s,
            "- {} Indiana University (Open-i) reports (CC BY-NC-ND 4.0, fetched from the \
             `torchxrayvision==1.5.7` wheel, never committed); {} have both findings and \
             impression, and {} of those have MeSH indexing, from which the CheXpert labels \
             used for PMRP are taken (`medprob_data::iu::mesh_labels`). The study uses these {}.",
            d.studies, d.with_both, d.labelled, d.labelled
        );
        let _ = writeln!(
            s,
            "- Split by study with seed {}: {} train, {} validation, {} test pairs. The split \
             is the same for every run; seeds {} change initialisation, batch order and \
             dropout, so the ± below is training randomness, not split randomness.",
            d.split_seed,
            d.split.0,
            d.split.1,
            d.split.2,
            seeds.join(", ")
        );
        let _ = writeln!(
            s,
            "- {} distinct impressions (lower-cased, punctuation removed). The most shared:",
            d.distinct_impressions
        );
        for (text, n) in &d.most_shared {
            let _ = writeln!(s, "  - {n} studies: \"{text}\"");
        }
        let _ = writeln!(
            s,
            "- **Ground truth is duplicate-aware**: for a findings query, every impression \
             with the same text as its own report's is correct; for an impression query, \
             every findings whose report has that impression. Training targets use the same \
             rule.\n"
        );
        let _ = writeln!(s, "## Variants\n");
        for (v, setting) in &self.settings {
            let _ = writeln!(s, "- **{v}**: {setting}");
        }
        let _ = writeln!(
            s,
            "\nProbabilistic: MLS, closed-form match logits `−a·d + b`, multi-positive \
             cross-entropy both ways, VIB β = 1e-4. Deterministic: unit-norm embeddings, \
             CLIP InfoNCE with a learnt temperature, ranked by cosine. MiniLM is frozen \
             (features computed once, a residual two-layer adapter trained on them): full \
             fine-tuning of a 22M-parameter BERT is not possible inside this study's \
             30-minute budget on two cores. The tiny BERT is trained whole.\n"
        );

        let _ = writeln!(
            s,
            "## Results (test split, mean ± standard deviation over seeds {})\n",
            seeds.join(", ")
        );
        let _ = writeln!(
            s,
            "| variant | F→I R@1 | F→I R@5 | F→I R@10 | I→F R@1 | I→F R@5 | I→F R@10 | PMRP ζ=0 | ECE | AURC R@1, own confidence | ρ(Σσ², error) F→I | ρ(nearest distance, error) F→I |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for v in self.variants() {
            let runs = self.runs_of(v);
            let col = |f: &dyn Fn(&SectionEvaluation) -> f64, digits| {
                pm(&runs.iter().map(|e| f(e)).collect::<Vec<_>>(), digits)
            };
            let rho_cell = |measure: &str| {
                let vals: Vec<(f64, usize)> = runs.iter().map(|e| rho(e, F2I, measure)).collect();
                if vals.iter().all(|(r, _)| r.is_nan()) {
                    "–".to_string()
                } else {
                    let n = vals.iter().map(|v| v.1).max().unwrap_or(0);
                    format!(
                        "{} (n = {n})",
                        pm(&vals.iter().map(|v| v.0).collect::<Vec<_>>(), 3)
                    )
                }
            };
            let _ = writeln!(
                s,
                "| {v} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                col(&|e| recall(e, Direction::ImageToText, 1), 1),
                col(&|e| recall(e, Direction::ImageToText, 5), 1),
                col(&|e| recall(e, Direction::ImageToText, 10), 1),
                col(&|e| recall(e, Direction::TextToImage, 1), 1),
                col(&|e| recall(e, Direction::TextToImage, 5), 1),
                col(&|e| recall(e, Direction::TextToImage, 10), 1),
                col(&|e| pmrp(e, 0), 1),
                col(&ece, 3),
                col(&|e| aurc(e, own_confidence(e), 1), 3),
                rho_cell(VARIANCE),
                rho_cell(NEAREST),
            );
        }
        let _ = writeln!(
            s,
            "\nRecalls and PMRP in percent. F→I: findings query, impression gallery. ECE: 15 \
             equal-width bins, of the post-hoc (validation-fitted) top-1 match probability. \
             AURC: area under the risk–coverage curve for a miss at R@1, lower is better, \
             with the variant's own confidence (probabilistic: the query's −Σσ²; \
             deterministic: the top-1 probability). ρ: Spearman correlation between the \
             measure and the rank of the first correct impression, over the test queries \
             that have one (n); positive means more doubt goes with worse retrieval.\n"
        );

        let _ = writeln!(s, "### Both directions, both doubt measures\n");
        let _ = writeln!(
            s,
            "| variant | direction | ρ(Σσ², error) | ρ(nearest distance, error) | queries |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|");
        for v in self.variants() {
            let runs = self.runs_of(v);
            for dir in [F2I, I2F] {
                let vals =
                    |m: &str| -> Vec<f64> { runs.iter().map(|e| rho(e, dir, m).0).collect() };
                let n = runs
                    .iter()
                    .map(|e| rho(e, dir, NEAREST).1)
                    .max()
                    .unwrap_or(0);
                let _ = writeln!(
                    s,
                    "| {v} | {dir} | {} | {} | {n} |",
                    pm(&vals(VARIANCE), 3),
                    pm(&vals(NEAREST), 3)
                );
            }
        }

        let _ = writeln!(s, "\n### Selective retrieval with a guarantee\n");
        let _ = writeln!(
            s,
            "Conformal risk control on the validation split for the loss \"answered and the \
             correct impression is not in the top 10\", at the level α below, each variant \
             with its own confidence; measured on the test split (an in-expectation \
             guarantee on the joint risk):\n"
        );
        let _ = writeln!(s, "| variant | α | test coverage | test joint risk |");
        let _ = writeln!(s, "|---|---|---|---|");
        for v in self.variants() {
            let runs = self.runs_of(v);
            let vals: Vec<(f64, f64, f64)> = runs.iter().filter_map(|e| crc(e)).collect();
            if vals.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "| {v} | {} | {} | {} |",
                vals[0].0,
                pm(&vals.iter().map(|x| x.1).collect::<Vec<_>>(), 3),
                pm(&vals.iter().map(|x| x.2).collect::<Vec<_>>(), 3)
            );
        }

        if !plots.is_empty() {
            let _ = writeln!(s, "\n## Plots\n");
            for (caption, file) in plots {
                let _ = writeln!(s, "**{caption}**\n\n![{caption}]({file})\n");
            }
        }

        if let Some(imp) = &self.impressions {
            let _ = writeln!(s, "## Which impressions are uncertain ({})\n", imp.from);
            let show = |s: &mut String, items: &[ImpressionUncertainty]| {
                let _ = writeln!(s, "| # | Σσ² | studies sharing it | impression |");
                let _ = writeln!(s, "|---|---|---|---|");
                for (i, it) in items.iter().enumerate() {
                    let text: String = it.impression.chars().take(140).collect();
                    let more = if it.impression.chars().count() > 140 {
                        "…"
                    } else {
                        ""
                    };
                    let _ = writeln!(
                        s,
                        "| {} | {:.3} | {} | {}{} |",
                        i + 1,
                        it.total_variance,
                        it.studies,
                        text.replace('|', "/"),
                        more
                    );
                }
            };
            let _ = writeln!(
                s,
                "The {} most uncertain of the {} distinct impressions:\n",
                imp.most.len(),
                imp.distinct
            );
            show(&mut s, &imp.most);
            let _ = writeln!(s, "\nThe {} least uncertain:\n", imp.least.len());
            show(&mut s, &imp.least);
            let _ = writeln!(
                s,
                "\nImpressions shared by 5 or more studies: mean Σσ² {:.3} ({} texts); \
                 impressions of a single study: {:.3} ({} texts). Spearman ρ between how many \
                 studies share an impression and its Σσ²: {:.3} over {} distinct impressions.\n",
                imp.shared.0,
                imp.shared.1,
                imp.single.0,
                imp.single.1,
                imp.sharing_spearman,
                imp.distinct
            );
        }

        let _ = writeln!(s, "## Reading\n");
        for line in self.reading() {
            let _ = writeln!(s, "- {line}");
        }
        s
    }

    /// Sentences that compare the numbers (generated, so they follow the data).
    fn reading(&self) -> Vec<String> {
        let mut out = Vec::new();
        let variants = self.variants();
        let pairs: Vec<(&str, &str)> = variants
            .iter()
            .filter(|v| v.ends_with("probabilistic"))
            .filter_map(|p| {
                let stem = p.trim_end_matches("probabilistic");
                variants
                    .iter()
                    .find(|d| **d == format!("{stem}deterministic"))
                    .map(|d| (*p, *d))
            })
            .collect();
        for (p, d) in pairs {
            let backbone = p.split(" · ").next().unwrap_or(p);
            let r1 = |v: &str| self.mean_of(v, |e| recall(e, Direction::ImageToText, 1));
            let r10 = |v: &str| self.mean_of(v, |e| recall(e, Direction::ImageToText, 10));
            let sd_r1 = |v: &str| {
                mean_sd(
                    &self
                        .runs_of(v)
                        .iter()
                        .map(|e| recall(e, Direction::ImageToText, 1))
                        .collect::<Vec<_>>(),
                )
                .1
            };
            let (pr, dr) = (r1(p), r1(d));
            let noise = sd_r1(p).max(sd_r1(d));
            let verdict = if (pr - dr).abs() <= noise {
                "within the seed spread of"
            } else if pr > dr {
                "ahead of"
            } else {
                "behind"
            };
            out.push(format!(
                "{backbone}: the probabilistic tower's findings→impression R@1 ({pr:.1} %) is \
                 {verdict} the deterministic one's ({dr:.1} %); R@10 {:.1} % against {:.1} %.",
                r10(p),
                r10(d)
            ));
            let (pa, da) = (
                self.mean_of(p, |e| aurc(e, ConfidenceKind::Uncertainty, 1)),
                self.mean_of(d, |e| aurc(e, ConfidenceKind::Top1Probability, 1)),
            );
            let pt = self.mean_of(p, |e| aurc(e, ConfidenceKind::Top1Probability, 1));
            out.push(format!(
                "{backbone}: as a confidence for selective retrieval (AURC at R@1, lower is \
                 better), the probabilistic tower's own uncertainty scores {pa:.3}, its top-1 \
                 probability {pt:.3}, and the deterministic tower's top-1 probability {da:.3}. \
                 {}",
                if pa < pt {
                    "Here the learnt variance orders queries better than the probability does."
                } else {
                    "Here the learnt variance does **not** order queries better than the top-1 probability does."
                }
            ));
            let (rv, _) = mean_sd(
                &self
                    .runs_of(p)
                    .iter()
                    .map(|e| rho(e, F2I, VARIANCE).0)
                    .collect::<Vec<_>>(),
            );
            let (rn, _) = mean_sd(
                &self
                    .runs_of(p)
                    .iter()
                    .map(|e| rho(e, F2I, NEAREST).0)
                    .collect::<Vec<_>>(),
            );
            let (ri, _) = mean_sd(
                &self
                    .runs_of(p)
                    .iter()
                    .map(|e| rho(e, I2F, VARIANCE).0)
                    .collect::<Vec<_>>(),
            );
            out.push(format!(
                "{backbone}: Spearman ρ between a findings query's Σσ² and its error is \
                 {rv:.3} ({}), against {rn:.3} for the distance to its nearest impression; \
                 for impression queries {ri:.3}.",
                strength(rv)
            ));
        }
        if let Some(imp) = &self.impressions {
            let r = imp.sharing_spearman;
            let words = |items: &[ImpressionUncertainty]| {
                mean_sd(
                    &items
                        .iter()
                        .map(|i| i.impression.split_whitespace().count() as f64)
                        .collect::<Vec<_>>(),
                )
                .0
            };
            let studies = |items: &[ImpressionUncertainty]| {
                mean_sd(&items.iter().map(|i| i.studies as f64).collect::<Vec<_>>()).0
            };
            out.push(format!(
                "The motivating hypothesis, that impressions shared by many different findings \
                 get high uncertainty, {} in {} (ρ = {r:.3} between the number of studies \
                 sharing an impression and its Σσ²). The {} most uncertain impressions \
                 average {:.0} words and are shared by {:.1} studies each; the {} least \
                 uncertain average {:.0} words and {:.1} studies.",
                if r > 0.1 {
                    "holds"
                } else {
                    "is **not** borne out"
                },
                imp.from,
                imp.most.len(),
                words(&imp.most),
                studies(&imp.most),
                imp.least.len(),
                words(&imp.least),
                studies(&imp.least),
            ));
        }
        let over: Vec<String> = self
            .variants()
            .into_iter()
            .filter_map(|v| {
                let vals: Vec<(f64, f64, f64)> =
                    self.runs_of(v).iter().filter_map(|e| crc(e)).collect();
                let risk = mean_sd(&vals.iter().map(|x| x.2).collect::<Vec<_>>()).0;
                let alpha = vals.first()?.0;
                (risk > alpha).then(|| format!("{v} ({risk:.3} > {alpha})"))
            })
            .collect();
        if !over.is_empty() {
            out.push(format!(
                "Conformal risk control exceeded its level on the test split, on average over \
                 seeds, for {}. Its guarantee needs calibration and test queries to be \
                 exchangeable, and here they are not quite: the validation gallery holds {} \
                 impressions and the test gallery {}, and a miss at R@10 is more likely in the \
                 larger one. Calibrate on a gallery the size of the one you will search.",
                over.join(", "),
                self.data.split.1,
                self.data.split.2
            ));
        }
        out.push(
            "What this does not show: images. The towers here see text only; whether \
             image uncertainty means as much is a question for MIMIC-CXR, which this machine \
             cannot reach. IU has about 3,300 usable reports, so a few test queries move R@1 \
             by a point; read differences against the ± columns."
                .into(),
        );
        out
    }

    /// Write `path` (the markdown), the plots into `plot_dir` (linked relative to the
    /// document) and the raw results as JSON beside the plots, each atomically.
    pub fn write(&self, path: &Path, plot_dir: &Path) -> Result<()> {
        let plots = self.write_plots(plot_dir)?;
        let rel = pathdiff(plot_dir, path.parent().unwrap_or(Path::new(".")));
        let linked: Vec<(String, String)> = plots
            .into_iter()
            .map(|(c, f)| (c, format!("{rel}/{f}")))
            .collect();
        // Curves are plotted from each variant's first run only; the others keep their
        // tables and AURCs, which is what the document aggregates.
        let mut slim = self.clone();
        let mut seen = Vec::new();
        for run in &mut slim.runs {
            if seen.contains(&run.variant) {
                for a in &mut run.report.risk_coverage {
                    a.curve.clear();
                }
            } else {
                seen.push(run.variant.clone());
            }
        }
        let json = serde_json::to_vec_pretty(&slim).expect("Evidence serialises");
        let results = plot_dir.join("results.json");
        medprob_core::fs::write_atomic(&results, &json).map_err(|e| TrainError::io(&results, e))?;
        medprob_core::fs::write_atomic(path, self.to_markdown(&linked).as_bytes())
            .map_err(|e| TrainError::io(path, e))
    }
}

/// `dir` relative to `base` when it lies inside it, else `dir` as given.
fn pathdiff(dir: &Path, base: &Path) -> String {
    dir.strip_prefix(base)
        .unwrap_or(dir)
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_spread_skip_missing_values() {
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0, f64::NAN]);
        assert_eq!(m, 2.0);
        assert!((s - 1.0).abs() < 1e-12);
        assert_eq!(mean_sd(&[4.0]), (4.0, 0.0));
        assert!(mean_sd(&[]).0.is_nan());
        assert_eq!(pm(&[1.0, 3.0], 1), "2.0 ± 1.4");
    }

    #[test]
    fn impression_summary_keeps_only_the_extremes_and_the_statistics() {
        let item = |t: &str, studies, v| ImpressionUncertainty {
            impression: t.into(),
            studies,
            total_variance: v,
        };
        let all = vec![
            item("a", 1, 5.0),
            item("b", 9, 1.0),
            item("c", 1, 4.0),
            item("d", 6, 2.0),
            item("e", 1, 3.0),
        ];
        let s = ImpressionSummary::new("run".into(), all, 2);
        let names = |v: &[ImpressionUncertainty]| -> Vec<String> {
            v.iter().map(|i| i.impression.clone()).collect()
        };
        assert_eq!(names(&s.most), ["a", "c"]);
        assert_eq!(names(&s.least), ["b", "d"]);
        assert_eq!(s.distinct, 5);
        assert_eq!(s.shared, (1.5, 2));
        assert_eq!(s.single, (4.0, 3));
        // More sharing, less variance: study-count ranks (2, 5, 2, 4, 2), variance ranks
        // (5, 1, 4, 2, 3): ρ = −8/√80.
        assert!(
            (s.sharing_spearman + 8.0 / 80f64.sqrt()).abs() < 1e-12,
            "{}",
            s.sharing_spearman
        );
    }
}
