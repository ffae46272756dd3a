//! The retrieval half of a [`MethodReport`], computed from embeddings: ranks on a
//! validation split (to fit the match probability post hoc and to calibrate selective
//! thresholds) and on a test split (everything reported). Zero-shot and robustness need
//! the encoders and are added by the caller.

use medprob_core::{Distance, GaussianEmbeddings, TopKOptions};
use serde::{Deserialize, Serialize};

use crate::calibration::CalibrationReport;
use crate::confidence::{confidences, ConfidenceKind};
use crate::corruption::Corruption;
use crate::error::{MetricsError, Result};
use crate::label_retrieval::{label_retrieval, ZETAS};
use crate::posthoc::Platt;
use crate::ranking::{rank_both_ways, rank_queries, top1_outcomes, QueryRank};
use crate::report::{
    AurcEntry, Direction, MethodReport, RobustnessEntry, SelectiveEntry, UncertaintyBin,
};
use crate::retrieval::{recall_by_bins, DirectionReport, RetrievalReport, RECALL_KS};
use crate::risk_coverage::RiskCoverage;
use crate::selective::{
    conformal_risk_control, selection_with_guaranteed_risk, Guarantee, Selector,
};

/// One split's embeddings: images and reports, each with its study key and (optionally)
/// its label bit mask (bit `c` = CheXpert label `c` positive).
pub struct Split<'a> {
    pub images: &'a GaussianEmbeddings,
    pub image_keys: &'a [u64],
    pub texts: &'a GaussianEmbeddings,
    pub text_keys: &'a [u64],
    pub image_labels: Option<&'a [u32]>,
    pub text_labels: Option<&'a [u32]>,
}

/// What to compute and at which risk levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationConfig {
    /// Block sizes of the streaming search.
    pub blocks: TopKOptions,
    /// K of the selective-retrieval loss `1{miss at R@K}`.
    pub selective_ks: Vec<usize>,
    /// α of conformal risk control (joint loss, in expectation).
    pub crc_alpha: f64,
    /// α of the selective-risk bound.
    pub sgr_alpha: f64,
    /// δ of the selective-risk bound.
    pub sgr_delta: f64,
    /// K and number of bins for recall by query uncertainty.
    pub uncertainty_k: usize,
    pub uncertainty_bins: usize,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        Self {
            blocks: TopKOptions::default(),
            selective_ks: vec![10],
            crc_alpha: 0.1,
            sgr_alpha: 0.2,
            sgr_delta: 0.1,
            uncertainty_k: 10,
            uncertainty_bins: 5,
        }
    }
}

/// How a method scores pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scoring {
    /// The distance ranking uses (CSD on unit-norm means with a constant variance ranks
    /// exactly as cosine similarity does).
    pub distance: Distance,
    /// Whether the embeddings carry a meaningful variance (enables the uncertainty
    /// confidence and uncertainty bins).
    pub probabilistic: bool,
}

/// Ranks of one split in both directions.
struct Ranked {
    i2t: Vec<QueryRank>,
    t2i: Vec<QueryRank>,
}

fn rank_split(scoring: Scoring, split: &Split<'_>, blocks: &TopKOptions) -> Result<Ranked> {
    let (i2t, t2i) = rank_both_ways(
        scoring.distance,
        split.images,
        split.image_keys,
        split.texts,
        split.text_keys,
        blocks,
    )?;
    Ok(Ranked { i2t, t2i })
}

/// Top-1 probabilities under `probability`, and whether each top-1 is right.
fn top1_probabilities(ranks: &[QueryRank], probability: Platt) -> (Vec<f64>, Vec<bool>) {
    let (s, correct) = top1_outcomes(ranks);
    (
        s.into_iter().map(|s| probability.probability(s)).collect(),
        correct,
    )
}

/// Retrieval, label-aware retrieval, calibration, risk–coverage, selective retrieval and
/// uncertainty bins for one method. The match probability is `σ(a·(−d) + b)` with `(a, b)`
/// fitted on the validation split's top-1 outcomes (image→text), for every method alike.
pub fn evaluate_retrieval(
    method: &str,
    score_name: &str,
    scoring: Scoring,
    validation: &Split<'_>,
    test: &Split<'_>,
    config: &EvaluationConfig,
) -> Result<MethodReport> {
    let val = rank_split(scoring, validation, &config.blocks)?;
    let tst = rank_split(scoring, test, &config.blocks)?;

    // Post-hoc probability from the validation split.
    let (s, y) = top1_outcomes(&val.i2t);
    if s.is_empty() {
        return Err(MetricsError::Empty {
            what: "evaluate_retrieval",
            detail: "no validation image has its report in the validation gallery",
        });
    }
    let platt = Platt::fit(&s, &y)?;
    let logit = |d: f64| platt.scale * -d + platt.shift;

    let retrieval = RetrievalReport::new(
        DirectionReport::from_ranks(&tst.i2t)?,
        DirectionReport::from_ranks(&tst.t2i)?,
    );

    let label_retrieval = match (test.image_labels, test.text_labels) {
        (Some(il), Some(tl)) => label_retrieval(
            scoring.distance,
            test.images,
            il,
            test.texts,
            tl,
            &ZETAS,
            &config.blocks,
        )?,
        _ => Vec::new(),
    };

    let (p, correct) = top1_probabilities(&tst.i2t, platt);
    let calibration = Some(CalibrationReport::new(&p, &correct)?);

    let variance = |e: &GaussianEmbeddings| -> Vec<f64> {
        e.uncertainty().iter().map(|u| u.total_variance).collect()
    };
    let kinds: Vec<ConfidenceKind> = ConfidenceKind::ALL
        .into_iter()
        .filter(|k| scoring.probabilistic || *k != ConfidenceKind::Uncertainty)
        .collect();

    let mut risk_coverage = Vec::new();
    let mut selective = Vec::new();
    for (direction, test_ranks, val_ranks, test_q, val_q) in [
        (
            Direction::ImageToText,
            &tst.i2t,
            &val.i2t,
            test.images,
            validation.images,
        ),
        (
            Direction::TextToImage,
            &tst.t2i,
            &val.t2i,
            test.texts,
            validation.texts,
        ),
    ] {
        let (test_var, val_var) = if scoring.probabilistic {
            (Some(variance(test_q)), Some(variance(val_q)))
        } else {
            (None, None)
        };
        for &kind in &kinds {
            let conf_t = with_positive(
                test_ranks,
                &confidences(kind, test_ranks, logit, test_var.as_deref()).expect("variance given"),
            );
            let conf_v = with_positive(
                val_ranks,
                &confidences(kind, val_ranks, logit, val_var.as_deref()).expect("variance given"),
            );
            let ranked_t: Vec<&QueryRank> =
                test_ranks.iter().filter(|r| r.rank.is_some()).collect();
            let ranked_v: Vec<&QueryRank> = val_ranks.iter().filter(|r| r.rank.is_some()).collect();
            for k in RECALL_KS {
                let loss: Vec<f64> = ranked_t
                    .iter()
                    .map(|r| f64::from(u8::from(!r.hit(k))))
                    .collect();
                let rc = RiskCoverage::new(&conf_t, &loss)?;
                risk_coverage.push(AurcEntry {
                    direction,
                    confidence: kind,
                    k,
                    aurc: rc.aurc(),
                    eaurc: rc.eaurc(),
                    table: rc.table(),
                    curve: rc.curve(101),
                });
                if !config.selective_ks.contains(&k) {
                    continue;
                }
                let loss_v: Vec<f64> = ranked_v
                    .iter()
                    .map(|r| f64::from(u8::from(!r.hit(k))))
                    .collect();
                let wrong_v: Vec<bool> = loss_v.iter().map(|&l| l > 0.5).collect();
                let crc = conformal_risk_control(&conf_v, &loss_v, config.crc_alpha)?;
                let sgr = selection_with_guaranteed_risk(
                    &conf_v,
                    &wrong_v,
                    config.sgr_alpha,
                    config.sgr_delta,
                )?;
                for (guarantee, selector) in [
                    (
                        Guarantee::JointRiskInExpectation {
                            alpha: config.crc_alpha,
                        },
                        crc,
                    ),
                    (
                        Guarantee::SelectiveRiskWithProbability {
                            alpha: config.sgr_alpha,
                            delta: config.sgr_delta,
                        },
                        sgr,
                    ),
                ] {
                    selective.push(SelectiveEntry {
                        direction,
                        confidence: kind,
                        k,
                        guarantee,
                        threshold: (selector != Selector::ABSTAIN).then_some(selector.threshold),
                        calibration: selector.evaluate(&conf_v, &loss_v)?,
                        test: selector.evaluate(&conf_t, &loss)?,
                    });
                }
            }
        }
    }

    let uncertainty_bins = if scoring.probabilistic {
        recall_by_bins(
            &variance(test.images),
            &tst.i2t,
            config.uncertainty_k,
            config.uncertainty_bins,
        )?
        .into_iter()
        .map(|(u, recall, queries)| UncertaintyBin {
            uncertainty: u,
            recall,
            k: config.uncertainty_k,
            queries,
        })
        .collect()
    } else {
        Vec::new()
    };

    Ok(MethodReport {
        method: method.to_string(),
        score: score_name.to_string(),
        probability: format!(
            "σ({:.4}·(−d) + {:.4}), fitted on validation top-1 outcomes",
            platt.scale, platt.shift
        ),
        match_probability: platt,
        retrieval,
        label_retrieval,
        zero_shot: None,
        calibration,
        risk_coverage,
        selective,
        robustness: Vec::new(),
        uncertainty_bins,
    })
}

/// The confidences of the queries that have a positive (the others have no loss).
fn with_positive(ranks: &[QueryRank], conf: &[f64]) -> Vec<f64> {
    ranks
        .iter()
        .zip(conf)
        .filter(|(r, _)| r.rank.is_some())
        .map(|(_, &c)| c)
        .collect()
}

/// One robustness row: image→text retrieval with (corrupted) image embeddings against the
/// clean report gallery, the ECE of the method's match probability, and the mean total
/// variance of the image embeddings. `corruption = None` is the clean reference.
#[allow(clippy::too_many_arguments)]
pub fn robustness_entry(
    corruption: Option<(Corruption, u8)>,
    scoring: Scoring,
    probability: Platt,
    images: &GaussianEmbeddings,
    image_keys: &[u64],
    texts: &GaussianEmbeddings,
    text_keys: &[u64],
    blocks: &TopKOptions,
) -> Result<RobustnessEntry> {
    let ranks = rank_queries(
        scoring.distance,
        images,
        image_keys,
        texts,
        text_keys,
        blocks,
    )?;
    let direction = DirectionReport::from_ranks(&ranks)?;
    let (p, correct) = top1_probabilities(&ranks, probability);
    let ece = crate::calibration::ece(
        &p,
        &correct,
        crate::calibration::DEFAULT_BINS,
        crate::calibration::Binning::EqualWidth,
    )?;
    let mean_uncertainty = if scoring.probabilistic && !images.is_empty() {
        images
            .uncertainty()
            .iter()
            .map(|u| u.total_variance)
            .sum::<f64>()
            / images.len() as f64
    } else {
        f64::NAN
    };
    let (parameter, severity) = match corruption {
        Some((c, s)) => (c.parameter(s)?, s),
        None => (f64::NAN, 0),
    };
    Ok(RobustnessEntry {
        corruption: corruption.map(|(c, _)| c),
        severity,
        parameter,
        recall: direction.recall,
        ece,
        mean_uncertainty,
    })
}
