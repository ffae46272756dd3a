//! Zero-shot classification of the 13 CheXpert findings by prompting (SPEC §8).
//!
//! Each image is scored against a positive prompt set and a negative one with the model's
//! own score — the match probability of a probabilistic model, the cosine similarity of a
//! deterministic one — averaged over the prompts of each set, and normalised over the two
//! sets into one probability of the finding. Two kinds of prompt set: the generic templates
//! of [`prompts`] ("{finding}", "no {finding}", …) and sentences of the training reports
//! that say a finding is present or absent, in the corpus's own words
//! ([`corpus_prompts`]).

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::auroc::auroc;
use crate::error::{MetricsError, Result};

/// The 13 findings of the paper's Table 2 (CheXpert's 14 labels without "No Finding").
pub const FINDINGS: [&str; 13] = [
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
];

/// The positive and negative prompt sets for one finding.
///
/// ```
/// let (pos, neg) = medprob_metrics::zero_shot::prompts("Pleural Effusion");
/// assert_eq!(pos[0], "pleural effusion");
/// assert_eq!(neg[0], "no pleural effusion");
/// ```
pub fn prompts(finding: &str) -> (Vec<String>, Vec<String>) {
    let f = finding.to_lowercase();
    (
        vec![
            f.clone(),
            format!("findings consistent with {f}"),
            format!("there is {f}"),
        ],
        vec![
            format!("no {f}"),
            format!("no evidence of {f}"),
            format!("there is no {f}"),
        ],
    )
}

/// Where one side of a [`PromptSet`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptSource {
    /// The generic templates of [`prompts`] ("pleural effusion", "no pleural effusion", …).
    Generic,
    /// Sentences of the training reports that are evidence of the side, mined by
    /// [`corpus_prompts`].
    Corpus,
    /// No sentence of the training reports is evidence of the side (their reports do not
    /// say it): the side's most frequent sentences that are no evidence of the other side,
    /// a baseline of what such reports say instead ([`corpus_prompts`]).
    Frequent,
}

/// The prompts one finding is scored with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSet {
    /// The finding.
    pub finding: String,
    /// Prompts for "present".
    pub positive: Vec<String>,
    /// Prompts for "absent".
    pub negative: Vec<String>,
    /// Where `positive` came from.
    pub positive_source: PromptSource,
    /// Where `negative` came from.
    pub negative_source: PromptSource,
}

impl PromptSet {
    /// The generic templates of [`prompts`] for `finding`.
    pub fn generic(finding: &str) -> Self {
        let (positive, negative) = prompts(finding);
        Self {
            finding: finding.to_string(),
            positive,
            negative,
            positive_source: PromptSource::Generic,
            negative_source: PromptSource::Generic,
        }
    }
}

/// How [`corpus_prompts`] picks sentences.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CorpusPromptOptions {
    /// At most this many prompts per side.
    pub per_side: usize,
    /// A sentence must occur in at least this many reports of its side.
    pub min_reports: usize,
    /// A sentence is a prompt for one side when it is at least this many times more
    /// frequent among that side's reports than among the other side's (a likelihood
    /// ratio, each frequency smoothed by half a report).
    pub min_ratio: f64,
}

impl Default for CorpusPromptOptions {
    fn default() -> Self {
        Self {
            per_side: 5,
            min_reports: 3,
            min_ratio: 10.0,
        }
    }
}

/// One labelled report for [`corpus_prompts`]: its sentences and, per finding, `Some(true)`
/// present, `Some(false)` absent, `None` uncertain (left out for that finding).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledReport {
    pub sentences: Vec<String>,
    pub labels: Vec<Option<bool>>,
}

/// Prompts in the corpus's own phrasing: for each finding, the sentences of labelled
/// (training) reports that say it is present or absent.
///
/// A sentence (compared case- and space-insensitively, counted once per report) is a
/// positive prompt when it is at least `min_ratio` times more frequent among reports
/// labelled positive than among reports labelled negative, and a negative prompt the other
/// way round; each side keeps its `per_side` most frequent sentences that occur in at least
/// `min_reports` of its reports, in the spelling seen first. A side with no such sentence
/// (SynthCXR never writes that a report has no support devices) takes its most frequent
/// sentences that are no evidence of the other side instead, a baseline of what its reports
/// say ([`PromptSource::Frequent`]); the generic templates of [`prompts`] only where even
/// that is empty (no report of the side, or none of the other side to judge by). Each side
/// says where it came from.
///
/// Generic templates ask a model for phrasings its corpus may never use (SynthCXR writes
/// "Heart size is normal.", never "no cardiomegaly"); mined prompts ask in the corpus's
/// words. They see report text and labels only, never an image.
///
/// ```
/// use medprob_metrics::zero_shot::{corpus_prompts, CorpusPromptOptions, LabelledReport, PromptSource};
/// let report = |s: &[&str], y: bool| LabelledReport {
///     sentences: s.iter().map(|s| s.to_string()).collect(),
///     labels: vec![Some(y)],
/// };
/// let mut reports = Vec::new();
/// for _ in 0..10 {
///     reports.push(report(&["Mild cardiomegaly.", "The lungs are clear."], true));
///     reports.push(report(&["Heart size is normal.", "The lungs are clear."], false));
/// }
/// let sets = corpus_prompts(&["Cardiomegaly"], &reports, CorpusPromptOptions::default());
/// assert_eq!(sets[0].positive, ["Mild cardiomegaly."]);
/// assert_eq!(sets[0].negative, ["Heart size is normal."]);
/// assert_eq!(sets[0].negative_source, PromptSource::Corpus);
/// ```
pub fn corpus_prompts(
    findings: &[&str],
    reports: &[LabelledReport],
    options: CorpusPromptOptions,
) -> Vec<PromptSet> {
    // Distinct sentences in first-seen order, by normalised key.
    let key = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    let mut spelling: Vec<String> = Vec::new();
    let per_report: Vec<Vec<usize>> = reports
        .iter()
        .map(|r| {
            let mut ids: Vec<usize> = r
                .sentences
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| {
                    *index.entry(key(s)).or_insert_with(|| {
                        spelling.push(s.trim().to_string());
                        spelling.len() - 1
                    })
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        })
        .collect();
    findings
        .iter()
        .enumerate()
        .map(|(c, finding)| {
            let generic = PromptSet::generic(finding);
            // Reports containing each sentence, per side.
            let mut count = vec![[0usize; 2]; spelling.len()];
            let mut totals = [0usize; 2];
            for (r, ids) in reports.iter().zip(&per_report) {
                let Some(Some(y)) = r.labels.get(c).copied() else {
                    continue;
                };
                let side = usize::from(!y); // 0 present, 1 absent
                totals[side] += 1;
                for &i in ids {
                    count[i][side] += 1;
                }
            }
            let freq = |n: usize, total: usize| (n as f64 + 0.5) / (total as f64 + 1.0);
            // Whether sentence counts `n` are evidence of `side`.
            let evidence = |n: &[usize; 2], side: usize| {
                let other = 1 - side;
                freq(n[side], totals[side]) >= options.min_ratio * freq(n[other], totals[other])
            };
            let pick = |side: usize, keep: &dyn Fn(&[usize; 2]) -> bool| -> Vec<String> {
                let mut chosen: Vec<(usize, usize)> = count
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n[side] >= options.min_reports.max(1) && keep(n))
                    .map(|(i, n)| (i, n[side]))
                    .collect();
                // Most frequent first; first seen first among equals.
                chosen.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                chosen
                    .into_iter()
                    .take(options.per_side)
                    .map(|(i, _)| spelling[i].clone())
                    .collect()
            };
            // Evidence first; else the side's frequent sentences that are no evidence of
            // the other side (only when the other side has reports to judge by); else the
            // templates.
            let side = |side: usize, fallback: Vec<String>| {
                let mined = pick(side, &|n| evidence(n, side));
                if !mined.is_empty() {
                    return (mined, PromptSource::Corpus);
                }
                let frequent = if totals[1 - side] > 0 {
                    pick(side, &|n| !evidence(n, 1 - side))
                } else {
                    Vec::new()
                };
                if frequent.is_empty() {
                    (fallback, PromptSource::Generic)
                } else {
                    (frequent, PromptSource::Frequent)
                }
            };
            let (positive, positive_source) = side(0, generic.positive);
            let (negative, negative_source) = side(1, generic.negative);
            PromptSet {
                finding: finding.to_string(),
                positive,
                negative,
                positive_source,
                negative_source,
            }
        })
        .collect()
}

/// How the two prompt-set scores become one probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PromptScoring {
    /// Scores are match probabilities: `p = s⁺ / (s⁺ + s⁻)`.
    Probability,
    /// Scores are cosine similarities: a softmax over the two at the model's temperature,
    /// `p = σ((c⁺ − c⁻) / T)`.
    Cosine { temperature: f64 },
}

impl PromptScoring {
    /// The probability of the finding from the two set scores.
    pub fn probability(&self, positive: f64, negative: f64) -> f64 {
        match *self {
            Self::Probability => {
                let total = positive + negative;
                if total > 0.0 {
                    positive / total
                } else {
                    0.5
                }
            }
            Self::Cosine { temperature } => {
                medprob_core::sigmoid((positive - negative) / temperature)
            }
        }
    }
}

/// One finding's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassResult {
    /// The finding.
    pub finding: String,
    /// AUROC of the normalised probability; `None` when the test labels hold one class.
    pub auroc: Option<f64>,
    /// Accuracy of thresholding the probability at 0.5.
    #[serde(with = "crate::nan_null")]
    pub accuracy: f64,
    /// Images labelled positive.
    pub positives: usize,
    /// Images labelled negative (uncertain and unmentioned labels are left out).
    pub negatives: usize,
}

/// Zero-shot results over all findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZeroShotReport {
    /// How prompt scores were normalised.
    pub scoring: PromptScoring,
    /// The prompts each finding was scored with (empty in reports written before prompts
    /// were recorded, which used the generic templates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<PromptSet>,
    /// How the prompts were mined from the training reports, when they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mined_with: Option<CorpusPromptOptions>,
    /// Per finding.
    pub classes: Vec<ClassResult>,
    /// Mean AUROC over the findings that have both classes.
    #[serde(with = "crate::nan_null")]
    pub mean_auroc: f64,
    /// Mean accuracy at 0.5 over the findings with any labelled image.
    #[serde(with = "crate::nan_null")]
    pub mean_accuracy: f64,
}

/// Score `[images, findings]` arrays of positive- and negative-set scores against labels
/// (`Some(true)` positive, `Some(false)` negative, `None` uncertain or not mentioned).
pub fn zero_shot(
    findings: &[&str],
    positive: ArrayView2<'_, f64>,
    negative: ArrayView2<'_, f64>,
    labels: ArrayView2<'_, Option<bool>>,
    scoring: PromptScoring,
) -> Result<ZeroShotReport> {
    let shape = positive.dim();
    if negative.dim() != shape || labels.dim() != shape || shape.1 != findings.len() {
        return Err(MetricsError::Length {
            what: "zero_shot",
            detail: format!(
                "positive {:?}, negative {:?}, labels {:?}, {} findings",
                positive.dim(),
                negative.dim(),
                labels.dim(),
                findings.len()
            ),
        });
    }
    if let Some(((i, c), &v)) = positive
        .indexed_iter()
        .chain(negative.indexed_iter())
        .find(|(_, v)| !v.is_finite())
    {
        return Err(MetricsError::BadValue {
            what: "zero_shot: prompt score",
            index: i * shape.1 + c,
            value: v,
            reason: "not finite",
        });
    }
    let mut classes = Vec::with_capacity(findings.len());
    for (c, name) in findings.iter().enumerate() {
        let (mut p, mut y) = (Vec::new(), Vec::new());
        for i in 0..shape.0 {
            if let Some(label) = labels[[i, c]] {
                p.push(scoring.probability(positive[[i, c]], negative[[i, c]]));
                y.push(label);
            }
        }
        let positives = y.iter().filter(|&&l| l).count();
        let correct = p.iter().zip(&y).filter(|(&p, &l)| (p >= 0.5) == l).count();
        classes.push(ClassResult {
            finding: name.to_string(),
            auroc: auroc(&p, &y)?,
            accuracy: if y.is_empty() {
                f64::NAN
            } else {
                correct as f64 / y.len() as f64
            },
            positives,
            negatives: y.len() - positives,
        });
    }
    let mean_of = |v: Vec<f64>| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let mean_auroc = mean_of(classes.iter().filter_map(|c| c.auroc).collect());
    let mean_accuracy = mean_of(
        classes
            .iter()
            .map(|c| c.accuracy)
            .filter(|a| !a.is_nan())
            .collect(),
    );
    Ok(ZeroShotReport {
        scoring,
        prompts: Vec::new(),
        mined_with: None,
        classes,
        mean_auroc,
        mean_accuracy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn hand_computed_two_findings() {
        // Finding A separates perfectly; finding B is inverted on its two labelled images.
        let pos = array![[0.9, 0.2], [0.1, 0.6], [0.8, 0.3]];
        let neg = array![[0.1, 0.2], [0.9, 0.4], [0.2, 0.7]];
        let labels = array![
            [Some(true), Some(true)],
            [Some(false), Some(false)],
            [Some(true), None]
        ];
        let r = zero_shot(
            &["A", "B"],
            pos.view(),
            neg.view(),
            labels.view(),
            PromptScoring::Probability,
        )
        .unwrap();
        assert_eq!(r.classes[0].auroc, Some(1.0));
        assert_eq!(r.classes[0].accuracy, 1.0);
        // B: image 0 has p = 0.5 (positive at ≥ 0.5, correct), image 1 has p = 0.6 (wrong).
        assert_eq!(r.classes[1].auroc, Some(0.0));
        assert_eq!(r.classes[1].accuracy, 0.5);
        assert_eq!((r.classes[1].positives, r.classes[1].negatives), (1, 1));
        assert_eq!(r.mean_auroc, 0.5);
        assert_eq!(r.mean_accuracy, 0.75);
    }

    #[test]
    fn cosine_scoring_is_a_two_way_softmax() {
        let s = PromptScoring::Cosine { temperature: 0.1 };
        let p = s.probability(0.3, 0.1);
        let want = (0.3f64 / 0.1).exp() / ((0.3f64 / 0.1).exp() + (0.1f64 / 0.1).exp());
        assert!((p - want).abs() < 1e-12);
        assert_eq!(PromptScoring::Probability.probability(0.0, 0.0), 0.5);
    }

    #[test]
    fn shape_mismatch_is_named() {
        let a = array![[0.5, 0.5]];
        let labels = array![[Some(true)]];
        let e = zero_shot(
            &["A", "B"],
            a.view(),
            a.view(),
            labels.view(),
            PromptScoring::Probability,
        )
        .unwrap_err();
        assert!(e.to_string().contains("labels (1, 1)"), "{e}");
    }

    fn report(sentences: &[&str], labels: &[Option<bool>]) -> LabelledReport {
        LabelledReport {
            sentences: sentences.iter().map(|s| s.to_string()).collect(),
            labels: labels.to_vec(),
        }
    }

    #[test]
    fn corpus_prompts_keep_discriminative_frequent_sentences() {
        let opts = CorpusPromptOptions {
            per_side: 2,
            min_reports: 2,
            min_ratio: 5.0,
        };
        let mut r = Vec::new();
        // Finding A present in 6 reports and absent in 7; finding B never present.
        for i in 0..6 {
            let pos = match i % 3 {
                0 => "Small left effusion.",
                1 => "small  LEFT effusion.", // the same sentence, spelled otherwise
                _ => "Large right effusion.",
            };
            r.push(report(
                &[pos, "Lungs are clear.", "Rare one."],
                &[Some(true), Some(false)],
            ));
            r.push(report(
                &["No effusion.", "Lungs are clear."],
                &[Some(false), Some(false)],
            ));
        }
        r.push(report(&["Rare one."], &[Some(false), Some(false)]));
        // Uncertain for A: left out, or "Large right effusion." would count as absent.
        r.push(report(&["Large right effusion."], &[None, Some(false)]));
        let sets = corpus_prompts(&["A", "B"], &r, opts);
        // Frequencies are (n + 0.5) / (reports + 1), 6 present and 7 absent reports:
        // "Small left effusion." (4.5/7) / (0.5/8) = 10.3; "Large right effusion."
        // (2.5/7) / (0.5/8) = 5.7; "Rare one." (6.5/7) / (1.5/8) = 4.95 < 5;
        // "Lungs are clear." 1.14; "No effusion." the other way (6.5/8) / (0.5/7) = 11.4.
        assert_eq!(
            sets[0].positive,
            ["Small left effusion.", "Large right effusion."]
        );
        assert_eq!(sets[0].negative, ["No effusion."]);
        assert_eq!(
            (sets[0].positive_source, sets[0].negative_source),
            (PromptSource::Corpus, PromptSource::Corpus)
        );
        // With no present report nothing is evidence of either side: generic templates.
        assert_eq!(sets[1], PromptSet::generic("B"));
        // per_side caps a side.
        let one = corpus_prompts(
            &["A"],
            &r,
            CorpusPromptOptions {
                per_side: 1,
                ..opts
            },
        );
        assert_eq!(one[0].positive, ["Small left effusion."]);
    }

    #[test]
    fn a_side_no_sentence_is_evidence_of_gets_its_frequent_sentences() {
        // Reports say when a tube is present, never that there is none.
        let mut r = Vec::new();
        for _ in 0..4 {
            r.push(report(
                &["Tube in place.", "Lungs are clear."],
                &[Some(true)],
            ));
            r.push(report(&["Lungs are clear."], &[Some(false)]));
        }
        for _ in 0..2 {
            r.push(report(
                &["Heart size is normal.", "Lungs are clear."],
                &[Some(false)],
            ));
        }
        let opts = CorpusPromptOptions {
            min_reports: 2,
            ..CorpusPromptOptions::default()
        };
        let sets = corpus_prompts(&["Support Devices"], &r, opts);
        // "Tube in place.": (4.5/5) / (0.5/7) = 12.6 ≥ 10, evidence of present. Nothing is
        // evidence of absent ("Heart size is normal." (2.5/7) / (0.5/5) = 3.6): the absent
        // reports' most frequent sentences that are no evidence of present, most frequent
        // first ("Lungs are clear." in 6, ratio to present 0.97).
        assert_eq!(sets[0].positive, ["Tube in place."]);
        assert_eq!(sets[0].positive_source, PromptSource::Corpus);
        assert_eq!(
            sets[0].negative,
            ["Lungs are clear.", "Heart size is normal."]
        );
        assert_eq!(sets[0].negative_source, PromptSource::Frequent);
    }

    #[test]
    fn corpus_prompts_fall_back_when_nothing_qualifies() {
        // Two reports only: every sentence is below min_reports = 3.
        let r = vec![
            report(&["Mild cardiomegaly."], &[Some(true)]),
            report(&["Heart size is normal."], &[Some(false)]),
        ];
        let sets = corpus_prompts(&["Cardiomegaly"], &r, CorpusPromptOptions::default());
        assert_eq!(sets[0], PromptSet::generic("Cardiomegaly"));
    }

    #[test]
    fn prompt_sets_cover_every_finding() {
        for f in FINDINGS {
            let (p, n) = prompts(f);
            assert_eq!(p.len(), n.len());
            assert!(n.iter().all(|s| s.contains(&f.to_lowercase())));
        }
    }
}
