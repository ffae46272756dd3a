//! The retrieval half of a [`MethodReport`], computed from embeddings: ranks on a
//! validation split (to fit the match probability post hoc and to calibrate selective
//! thresholds) and on a test split (everything reported). Zero-shot and robustness need
//! the encoders and are added by the caller.

use medprob_core::{Distance, GaussianEmbeddings, MatchProbability, TopK, TopKOptions};
use serde::{Deserialize, Serialize};

use crate::calibration::CalibrationReport;
use crate::confidence::{confidences, ConfidenceKind};
use crate::corruption::Corruption;
use crate::error::{MetricsError, Result};
use crate::hubness::{hubness, Hubness};
use crate::label_retrieval::{label_retrieval, ZETAS};
use crate::plausible::{
    candidate_outcomes, evaluate_direction, ranked_lists, Judged, PlausibleConfig,
    PlausibleDirection, PlausibleReport,
};
use crate::posthoc::fit_match_probability;
use crate::ranking::{rank_both_ways, rank_queries, top1_outcomes, QueryRank};
use crate::relevance::Relevance;
use crate::report::{
    AurcEntry, Direction, MethodReport, RobustnessEntry, SelectiveEntry, UncertaintyBin,
};
use crate::retrieval::{recall_by_bins, DirectionReport, RetrievalReport, RECALL_KS};
use crate::risk_coverage::RiskCoverage;
use crate::selective::{
    conformal_risk_control, selection_with_guaranteed_risk, Guarantee, Selector,
};

/// One split's embeddings: images and reports, each with its study key, optionally its
/// label bit mask (bit `c` = label `label_names[c]` positive) and optionally a hidden-state
/// key (studies with equal keys show the same findings on the same sides).
#[derive(Clone, Copy)]
pub struct Split<'a> {
    pub images: &'a GaussianEmbeddings,
    pub image_keys: &'a [u64],
    pub texts: &'a GaussianEmbeddings,
    pub text_keys: &'a [u64],
    pub image_labels: Option<&'a [u32]>,
    pub text_labels: Option<&'a [u32]>,
    /// The names of the label bits (per-finding calibration); may be empty.
    pub label_names: &'a [&'a str],
    /// Ground-truth state keys, row-aligned with the images and with the texts (evaluation
    /// only: nothing is fitted to them).
    pub image_states: Option<&'a [String]>,
    pub text_states: Option<&'a [String]>,
}

impl Split<'_> {
    /// Label relevance at ζ = 0 in both directions, when both sides have labels.
    fn label_relevance(&self) -> Result<Option<(Relevance, Relevance)>> {
        Ok(match (self.image_labels, self.text_labels) {
            (Some(il), Some(tl)) => {
                let i2t = Relevance::labels(il, tl, 0)?;
                Some((i2t.clone(), i2t.transpose()))
            }
            _ => None,
        })
    }

    /// State relevance in both directions, when both sides have state keys.
    fn state_relevance(&self) -> Option<(Relevance, Relevance)> {
        match (self.image_states, self.text_states) {
            (Some(is), Some(ts)) => {
                let i2t = Relevance::state(is, ts);
                Some((i2t.clone(), i2t.transpose()))
            }
            _ => None,
        }
    }

    fn instance_relevance(&self) -> (Relevance, Relevance) {
        (
            Relevance::instance(self.image_keys, self.text_keys),
            Relevance::instance(self.text_keys, self.image_keys),
        )
    }
}

/// What to compute and at which risk levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    /// Plausible-match figures: the match probability's fit and the selective rules.
    pub plausible: PlausibleConfig,
    /// The `k` of the hubness figure `N_k`.
    pub hubness_k: usize,
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
            plausible: PlausibleConfig::default(),
            hubness_k: 10,
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

/// Top-1 probabilities under `probability` (query `q`'s mean log-variance `u_query[q]`,
/// gallery item `g`'s `u_gallery[g]`), and whether each top-1 is right.
fn top1_probabilities(
    ranks: &[QueryRank],
    probability: MatchProbability,
    u_query: &[f64],
    u_gallery: &[f64],
) -> (Vec<f64>, Vec<bool>) {
    ranks
        .iter()
        .enumerate()
        .filter(|(_, r)| r.rank.is_some())
        .map(|(q, r)| {
            let p = probability.probability_of(r.top1.1 as f64, u_query[q], u_gallery[r.top1.0]);
            (p, r.hit(1))
        })
        .unzip()
}

/// The first results of one split's queries, both ways, and each item's mean log-variance.
struct Lists {
    i2t: TopK,
    t2i: TopK,
    u_images: Vec<f64>,
    u_texts: Vec<f64>,
}

impl Lists {
    /// Both directions judged by `relevance` (image→text, text→image).
    fn judged<'a>(&'a self, relevance: &'a (Relevance, Relevance)) -> [Judged<'a>; 2] {
        [
            Judged {
                top: &self.i2t,
                relevance: &relevance.0,
                u_query: &self.u_images,
                u_gallery: &self.u_texts,
            },
            Judged {
                top: &self.t2i,
                relevance: &relevance.1,
                u_query: &self.u_texts,
                u_gallery: &self.u_images,
            },
        ]
    }
}

fn lists(distance: Distance, split: &Split<'_>, k: usize, blocks: &TopKOptions) -> Result<Lists> {
    Ok(Lists {
        i2t: ranked_lists(distance, split.images, split.texts, k, blocks)?,
        t2i: ranked_lists(distance, split.texts, split.images, k, blocks)?,
        u_images: split.images.mean_log_variances(),
        u_texts: split.texts.mean_log_variances(),
    })
}

/// The one match probability of a method: `σ(−a·d + q·u_query + h·u_hit + b)` fitted on
/// the validation split to "is this hit a plausible match?" over the first `calibration_k`
/// hits of every query, both directions pooled — the probability a user reads beside every
/// hit. `u` is an embedding's mean log-variance (a deterministic model's is constant and
/// gets no weight: `σ(−a·d + b)`). Plausible means the same positive label set (ζ = 0);
/// without labels, the query's own study. Returns the probability and a sentence saying
/// what it was fitted to.
pub fn fit_plausible_probability(
    distance: Distance,
    validation: &Split<'_>,
    k: usize,
    blocks: &TopKOptions,
) -> Result<(MatchProbability, String)> {
    let l = lists(distance, validation, k, blocks)?;
    let f = fit_on_lists(&l, validation.label_relevance()?.as_ref(), validation, k)?;
    Ok((f.probability, f.text))
}

/// A fitted match probability, the same fit on distance alone when it reads the
/// uncertainties, and a sentence saying what it was fitted to.
struct Fitted {
    probability: MatchProbability,
    distance_only: Option<MatchProbability>,
    text: String,
}

/// [`fit_plausible_probability`] on ranked lists already at hand (at least `k` long) and
/// the split's label relevance, when it has labels.
fn fit_on_lists(
    l: &Lists,
    labels: Option<&(Relevance, Relevance)>,
    validation: &Split<'_>,
    k: usize,
) -> Result<Fitted> {
    let instance;
    let (relevance, what) = match labels {
        Some(r) => (r, "the same positive label set (ζ = 0)"),
        None => {
            instance = validation.instance_relevance();
            (&instance, "the query's own study (no labels)")
        }
    };
    let [i2t, t2i] = l.judged(relevance);
    let mut c = candidate_outcomes(&i2t, k)?;
    c.extend(candidate_outcomes(&t2i, k)?);
    let p = c.fit()?;
    let floor = p.scale() <= medprob_core::MIN_SCALE;
    Ok(Fitted {
        probability: p,
        distance_only: p
            .reads_uncertainty()
            .then(|| fit_match_probability(&c.distance, &c.relevant))
            .transpose()?,
        text: format!(
            "{}: P(a hit is a plausible match), fitted on validation over the first {k} hits \
             of every query, both ways; plausible = {what}{}{}",
            describe_probability(&p),
            if p.reads_uncertainty() {
                "; u = an embedding's mean log-variance"
            } else {
                ""
            },
            if floor && !p.reads_uncertainty() {
                ". On validation, distance does not predict a plausible match (the free fit's slope \
                 is below the floor): every hit gets about the base rate"
            } else if floor {
                ". On validation, distance adds nothing to the uncertainties (its slope is held at \
                 the floor): the query's and the hit's variance carry the probability"
            } else {
                ""
            }
        ),
    })
}

/// The formula of `p` with its numbers, e.g. `σ(−0.0123·d + 0.45·u_hit − 0.2)`, where `u`
/// is a mean log-variance.
pub fn describe_probability(p: &MatchProbability) -> String {
    let term = |w: f64, what: &str| {
        if w == 0.0 {
            String::new()
        } else {
            format!(" {} {:.4}·{what}", if w < 0.0 { "−" } else { "+" }, w.abs())
        }
    };
    format!(
        "σ(−{:.4}·d{}{} {} {:.4})",
        p.scale(),
        term(p.query, "u_query"),
        term(p.hit, "u_hit"),
        if p.b < 0.0 { "−" } else { "+" },
        p.b.abs()
    )
}

/// Retrieval, label-aware retrieval, calibration, risk–coverage, selective retrieval,
/// plausible-match figures, hubness and uncertainty bins for one method. The match
/// probability is [`fit_plausible_probability`]'s, for every method alike; instance
/// figures (calibration of "the top-1 is the query's own study", AURC, …) use the same
/// probability.
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

    if top1_outcomes(&val.i2t).0.is_empty() {
        return Err(MetricsError::Empty {
            what: "evaluate_retrieval",
            detail: "no validation image has its report in the validation gallery",
        });
    }
    // One search per split and direction serves the probability's fit and every
    // plausible figure; one label relevance per split serves both too.
    let k = config.plausible.list_len();
    let (lv, lt) = (
        lists(scoring.distance, validation, k, &config.blocks)?,
        lists(scoring.distance, test, k, &config.blocks)?,
    );
    let v_labels = validation.label_relevance()?;
    let Fitted {
        probability,
        distance_only,
        text: probability_text,
    } = fit_on_lists(
        &lv,
        v_labels.as_ref(),
        validation,
        config.plausible.calibration_k,
    )?;

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

    let (p, correct) = top1_probabilities(&tst.i2t, probability, &lt.u_images, &lt.u_texts);
    let calibration = Some(CalibrationReport::new(&p, &correct)?);

    let mut plausible = Vec::new();
    for (kind, v_rel, t_rel) in [
        (
            crate::relevance::RelevanceKind::Labels,
            v_labels,
            test.label_relevance()?,
        ),
        (
            crate::relevance::RelevanceKind::State,
            validation.state_relevance(),
            test.state_relevance(),
        ),
    ] {
        let (Some(v_rel), Some(t_rel)) = (v_rel, t_rel) else {
            continue;
        };
        let mut directions: Vec<PlausibleDirection> = Vec::new();
        let (v_judged, t_judged) = (lv.judged(&v_rel), lt.judged(&t_rel));
        for (direction, v, t, q, g, masks) in [
            (
                Direction::ImageToText,
                &v_judged[0],
                &t_judged[0],
                test.images,
                test.texts,
                test.image_labels,
            ),
            (
                Direction::TextToImage,
                &v_judged[1],
                &t_judged[1],
                test.texts,
                test.images,
                test.text_labels,
            ),
        ] {
            directions.push(evaluate_direction(
                direction,
                scoring.distance,
                probability,
                v,
                t,
                q,
                g,
                masks.map(|m| (m, test.label_names)),
                &config.plausible,
                &config.blocks,
            )?);
        }
        plausible.push(PlausibleReport {
            kind,
            relevance: t_rel.0.describe(),
            directions,
        });
    }
    let hubness: Vec<Hubness> = vec![
        hubness(
            Direction::ImageToText,
            scoring.distance,
            test.images,
            test.texts,
            config.hubness_k,
        )?,
        hubness(
            Direction::TextToImage,
            scoring.distance,
            test.texts,
            test.images,
            config.hubness_k,
        )?,
    ];

    let variance = |e: &GaussianEmbeddings| -> Vec<f64> {
        e.uncertainty().iter().map(|u| u.total_variance).collect()
    };
    let kinds: Vec<ConfidenceKind> = ConfidenceKind::ALL
        .into_iter()
        .filter(|k| scoring.probabilistic || *k != ConfidenceKind::Uncertainty)
        .collect();

    let mut risk_coverage = Vec::new();
    let mut selective = Vec::new();
    for (direction, test_ranks, val_ranks, test_q, val_q, (tu_q, tu_g), (vu_q, vu_g)) in [
        (
            Direction::ImageToText,
            &tst.i2t,
            &val.i2t,
            test.images,
            validation.images,
            (&lt.u_images, &lt.u_texts),
            (&lv.u_images, &lv.u_texts),
        ),
        (
            Direction::TextToImage,
            &tst.t2i,
            &val.t2i,
            test.texts,
            validation.texts,
            (&lt.u_texts, &lt.u_images),
            (&lv.u_texts, &lv.u_images),
        ),
    ] {
        let logit_t = |q: usize, g: usize, d: f64| probability.logit_of(d, tu_q[q], tu_g[g]);
        let logit_v = |q: usize, g: usize, d: f64| probability.logit_of(d, vu_q[q], vu_g[g]);
        let (test_var, val_var) = if scoring.probabilistic {
            (Some(variance(test_q)), Some(variance(val_q)))
        } else {
            (None, None)
        };
        for &kind in &kinds {
            let conf_t = with_positive(
                test_ranks,
                &confidences(kind, test_ranks, logit_t, test_var.as_deref())
                    .expect("variance given"),
            );
            let conf_v = with_positive(
                val_ranks,
                &confidences(kind, val_ranks, logit_v, val_var.as_deref()).expect("variance given"),
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

    let ambiguity = match (scoring.probabilistic, test.image_labels, test.text_labels) {
        (true, Some(il), Some(tl)) => Some(crate::ambiguity::AmbiguityReport::new(
            crate::ambiguity::Side {
                labels: il,
                embeddings: test.images,
            },
            crate::ambiguity::Side {
                labels: tl,
                embeddings: test.texts,
            },
        )?),
        _ => None,
    };
    Ok(MethodReport {
        method: method.to_string(),
        score: score_name.to_string(),
        probability: probability_text,
        match_probability: probability,
        distance_probability: distance_only,
        ambiguity,
        plausible,
        hubness,
        retrieval,
        label_retrieval,
        zero_shot: None,
        zero_shot_generic: None,
        calibration,
        risk_coverage,
        selective,
        robustness: Vec::new(),
        uncertainty_bins,
        hub_correction: None,
        raw: None,
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
    probability: MatchProbability,
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
    let (p, correct) = top1_probabilities(
        &ranks,
        probability,
        &images.mean_log_variances(),
        &texts.mean_log_variances(),
    );
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
