//! Zero-shot classification of the 13 CheXpert findings by prompting (SPEC §8).
//!
//! Each image is scored against a positive prompt set ("{finding}") and a negative one
//! ("No {finding}") with the model's own score — the match probability of a probabilistic
//! model, the cosine similarity of a deterministic one — averaged over the prompts of each
//! set, and normalised over the two sets into one probability of the finding.

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

    #[test]
    fn prompt_sets_cover_every_finding() {
        for f in FINDINGS {
            let (p, n) = prompts(f);
            assert_eq!(p.len(), n.len());
            assert!(n.iter().all(|s| s.contains(&f.to_lowercase())));
        }
    }
}
