//! Retrieval judged by a [`Relevance`]: Recall@K, R-precision and mAP@R, calibration of
//! the match probability (overall and per finding), risk–coverage (AURC, E-AURC, AUGRC)
//! and selective retrieval with a guarantee — the same figures as for instance retrieval,
//! with "right" meaning "a match the relevance accepts".
//!
//! Every figure here is a fraction in `[0, 1]`. All of them read the first `k` results of
//! each query under the total order "distance, then gallery index" of
//! [`medprob_core::kernels::top_k`]: items at equal distance are taken in gallery order, so
//! figures do not depend on threads or block sizes. Queries with no relevant gallery item
//! cannot be answered correctly by any ranking; they are left out and counted.

use medprob_core::{kernels, Distance, GaussianEmbeddings, MatchProbability, TopK, TopKOptions};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::calibration::{ece, Binning, CalibrationReport, DEFAULT_BINS};
use crate::confidence::ConfidenceKind;
use crate::error::{MetricsError, Result};
use crate::relevance::{Relevance, RelevanceKind};
use crate::report::{Direction, SelectiveEntry};
use crate::risk_coverage::RiskCoverage;
use crate::selective::{
    conformal_risk_control, selection_with_guaranteed_risk, Guarantee, Selector,
};

/// The K of plausible Recall@K and of the risk–coverage losses.
pub const PLAUSIBLE_KS: [usize; 3] = [1, 5, 10];

/// Queries per top-R search of [`r_precision`].
const QUERY_BLOCK: usize = 64;

/// The first `k` results of every query (fewer when the gallery is smaller).
pub fn ranked_lists(
    distance: Distance,
    queries: &GaussianEmbeddings,
    gallery: &GaussianEmbeddings,
    k: usize,
    options: &TopKOptions,
) -> Result<TopK> {
    if gallery.is_empty() || queries.is_empty() {
        return Err(MetricsError::Empty {
            what: "ranked_lists",
            detail: "no queries or an empty gallery",
        });
    }
    Ok(kernels::top_k(
        distance,
        queries,
        gallery,
        k.min(gallery.len()),
        options,
    )?)
}

fn check_lists(what: &'static str, top: &TopK, relevance: &Relevance, k: usize) -> Result<()> {
    if top.indices.nrows() != relevance.queries() {
        return Err(MetricsError::Length {
            what,
            detail: format!(
                "{} ranked queries for a relevance of {} queries",
                top.indices.nrows(),
                relevance.queries()
            ),
        });
    }
    if k == 0 || (k > top.indices.ncols() && top.indices.ncols() < relevance.gallery_len()) {
        return Err(MetricsError::InvalidParameter {
            name: "k",
            value: k as f64,
            reason: "needs 1 ≤ k ≤ the length of the ranked lists",
        });
    }
    Ok(())
}

/// Whether any of the first `k` results of query `q` is relevant.
fn hit(top: &TopK, relevance: &Relevance, q: usize, k: usize) -> bool {
    top.indices
        .row(q)
        .iter()
        .take(k)
        .any(|&g| relevance.is_relevant(q, g))
}

/// Share of the queries that have a relevant item whose first `k` results hold one;
/// `None` when no query has a relevant item.
///
/// ```
/// use medprob_core::{Distance, GaussianEmbeddings, TopKOptions};
/// use medprob_metrics::plausible::{ranked_lists, recall_at_k};
/// use medprob_metrics::relevance::Relevance;
/// let q = GaussianEmbeddings::from_vecs(1, 1, vec![0.0], vec![0.0])?;
/// let g = GaussianEmbeddings::from_vecs(3, 1, vec![1.0, 2.0, 3.0], vec![0.0; 3])?;
/// let top = ranked_lists(Distance::Csd, &q, &g, 3, &TopKOptions::default())?;
/// // Only the second-nearest item is relevant.
/// let r = Relevance::custom(3, vec![vec![1]])?;
/// assert_eq!(recall_at_k(&top, &r, 1)?, Some(0.0));
/// assert_eq!(recall_at_k(&top, &r, 2)?, Some(1.0));
/// # Ok::<(), medprob_metrics::MetricsError>(())
/// ```
pub fn recall_at_k(top: &TopK, relevance: &Relevance, k: usize) -> Result<Option<f64>> {
    check_lists("recall_at_k", top, relevance, k)?;
    let (mut hits, mut n) = (0usize, 0usize);
    for q in 0..relevance.queries() {
        if relevance.count(q) == 0 {
            continue;
        }
        n += 1;
        hits += usize::from(hit(top, relevance, q, k));
    }
    Ok((n > 0).then(|| hits as f64 / n as f64))
}

/// R-precision and mAP@R under a relevance (PMRP when the relevance is by labels).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RPrecision {
    /// Mean over queries of the share of relevant items among the first `R_q` results,
    /// `R_q` being the query's number of relevant items.
    #[serde(with = "crate::nan_null")]
    pub r_precision: f64,
    /// Mean average precision at `R` (Musgrave et al. 2020).
    #[serde(with = "crate::nan_null")]
    pub map_at_r: f64,
    /// Queries scored (those with at least one relevant item).
    pub queries: usize,
}

/// R-precision and mAP@R, streamed: each block of queries keeps only its largest `R`
/// results.
pub fn r_precision(
    distance: Distance,
    queries: &GaussianEmbeddings,
    gallery: &GaussianEmbeddings,
    relevance: &Relevance,
    options: &TopKOptions,
) -> Result<RPrecision> {
    let (rp, ap, n) = r_precision_sums(
        distance,
        queries,
        gallery,
        std::slice::from_ref(relevance),
        options,
    )?[0];
    let mean = |s: f64| if n > 0 { s / n as f64 } else { f64::NAN };
    Ok(RPrecision {
        r_precision: mean(rp),
        map_at_r: mean(ap),
        queries: n,
    })
}

/// [`r_precision`] under several relevances of the same queries and gallery with one
/// search (each block of queries keeps its largest `R` over all of them): per relevance,
/// the sums of R-precision and AP@R over the scored queries, and their number. PMRP at
/// ζ = 0, 1, 2 ([`crate::label_retrieval`]) is this under label relevance.
pub fn r_precision_sums(
    distance: Distance,
    queries: &GaussianEmbeddings,
    gallery: &GaussianEmbeddings,
    relevances: &[Relevance],
    options: &TopKOptions,
) -> Result<Vec<(f64, f64, usize)>> {
    for relevance in relevances {
        relevance.check_shape("r_precision", queries.len(), gallery.len())?;
    }
    if gallery.is_empty() || queries.is_empty() {
        return Err(MetricsError::Empty {
            what: "r_precision",
            detail: "no queries or an empty gallery",
        });
    }
    // Per relevance: the sums of R-precision and AP@R, and the number of queries scored.
    let mut sums = vec![(0.0f64, 0.0f64, 0usize); relevances.len()];
    let mut q0 = 0;
    while q0 < queries.len() {
        let q1 = (q0 + QUERY_BLOCK).min(queries.len());
        let r_max = relevances
            .iter()
            .flat_map(|r| (q0..q1).map(|q| r.count(q)))
            .max()
            .unwrap_or(0);
        if r_max > 0 {
            let top = kernels::top_k(
                distance,
                &queries.slice(q0..q1),
                gallery,
                r_max.min(gallery.len()),
                options,
            )?;
            for (relevance, sum) in relevances.iter().zip(&mut sums) {
                let scored: Vec<(f64, f64)> = (q0..q1)
                    .into_par_iter()
                    .filter(|&q| relevance.count(q) > 0)
                    .map(|q| {
                        let r = relevance.count(q);
                        let (mut hits, mut ap) = (0usize, 0.0);
                        for (rank, &g) in top.indices.row(q - q0).iter().take(r).enumerate() {
                            if relevance.is_relevant(q, g) {
                                hits += 1;
                                ap += hits as f64 / (rank + 1) as f64;
                            }
                        }
                        (hits as f64 / r as f64, ap / r as f64)
                    })
                    .collect();
                for (p, a) in scored {
                    sum.0 += p;
                    sum.1 += a;
                    sum.2 += 1;
                }
            }
        }
        q0 = q1;
    }
    Ok(sums)
}

/// Each of the first `k` results of every query: its distance, what a match probability
/// reads of the pair (the query's and the hit's mean log-variance) and whether it is
/// relevant. This is what the match probability is fitted to, so that it answers "is this
/// hit a match?" for any hit a user sees, not only for top-1 hits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidates {
    /// Distance of each pair.
    pub distance: Vec<f64>,
    /// The query's mean log-variance.
    pub u_query: Vec<f64>,
    /// The hit's mean log-variance.
    pub u_hit: Vec<f64>,
    /// Whether the hit is relevant to the query.
    pub relevant: Vec<bool>,
}

impl Candidates {
    /// Append `other`'s pairs (both directions pooled).
    pub fn extend(&mut self, other: Candidates) {
        self.distance.extend(other.distance);
        self.u_query.extend(other.u_query);
        self.u_hit.extend(other.u_hit);
        self.relevant.extend(other.relevant);
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.distance.len()
    }

    /// No pairs.
    pub fn is_empty(&self) -> bool {
        self.distance.is_empty()
    }

    /// The maximum-likelihood match probability of these pairs
    /// ([`crate::posthoc::fit_match_probability_with_uncertainty`]).
    pub fn fit(&self) -> Result<MatchProbability> {
        crate::posthoc::fit_match_probability_with_uncertainty(
            &self.distance,
            &self.u_query,
            &self.u_hit,
            &self.relevant,
        )
    }

    /// Each pair's probability under `p`.
    pub fn probabilities(&self, p: MatchProbability) -> Vec<f64> {
        (0..self.len())
            .map(|i| p.probability_of(self.distance[i], self.u_query[i], self.u_hit[i]))
            .collect()
    }
}

/// The [`Candidates`] of the first `k` results of every query of `j`.
pub fn candidate_outcomes(j: &Judged<'_>, k: usize) -> Result<Candidates> {
    check_lists("candidate_outcomes", j.top, j.relevance, k)?;
    j.check_uncertainties()?;
    let mut c = Candidates::default();
    for q in 0..j.relevance.queries() {
        for (&g, &dist) in j
            .top
            .indices
            .row(q)
            .iter()
            .zip(j.top.distances.row(q))
            .take(k)
        {
            c.distance.push(dist as f64);
            c.u_query.push(j.u_query[q]);
            c.u_hit.push(j.u_gallery[g]);
            c.relevant.push(j.relevance.is_relevant(q, g));
        }
    }
    Ok(c)
}

/// ECE of the top-1 probability within the queries positive for one finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingCalibration {
    /// The finding (label name).
    pub finding: String,
    /// Queries positive for it.
    pub queries: usize,
    /// ECE, 15 equal-width bins.
    #[serde(with = "crate::nan_null")]
    pub ece: f64,
    /// Mean top-1 probability.
    #[serde(with = "crate::nan_null")]
    pub mean_confidence: f64,
    /// Share of top-1 hits that are relevant.
    #[serde(with = "crate::nan_null")]
    pub accuracy: f64,
}

/// AURC, E-AURC and AUGRC of one K with the top-1 probability as confidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlausibleAurc {
    /// The loss is `1{no relevant item within the first K}`.
    pub k: usize,
    #[serde(with = "crate::nan_null")]
    pub aurc: f64,
    #[serde(with = "crate::nan_null")]
    pub eaurc: f64,
    #[serde(with = "crate::nan_null")]
    pub augrc: f64,
    /// `(coverage, selective risk)` for plotting.
    pub curve: Vec<(f64, f64)>,
}

/// Every relevance figure of one direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlausibleDirection {
    pub direction: Direction,
    /// Queries with at least one relevant gallery item (the ones scored).
    pub queries: usize,
    /// Queries left out because no gallery item is relevant for them.
    pub without_relevant: usize,
    /// `(K, Recall@K)`, fractions.
    pub recall: Vec<(usize, f64)>,
    pub r_precision: RPrecision,
    /// Calibration of "the top-1 hit is relevant" against its match probability.
    pub calibration: CalibrationReport,
    /// ECE over every one of the first `calibration_k` hits of each query (what the
    /// probability is fitted to).
    #[serde(with = "crate::nan_null")]
    pub candidate_ece: f64,
    /// The K of `candidate_ece`.
    pub calibration_k: usize,
    /// Top-1 calibration within the queries positive for each finding.
    pub per_finding: Vec<FindingCalibration>,
    /// Risk–coverage at each of [`PLAUSIBLE_KS`], confidence = top-1 probability.
    pub risk_coverage: Vec<PlausibleAurc>,
    /// Thresholds on the top-1 probability, fitted on validation, measured on test.
    pub selective: Vec<SelectiveEntry>,
    /// Risk–coverage at K = 1 for each confidence the method has (the uncertainty only
    /// where the query embeddings' variance varies).
    #[serde(default)]
    pub by_confidence: Vec<ConfidenceAurc>,
}

/// Risk–coverage of one confidence at one K (loss: no relevant item in the first K).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceAurc {
    pub confidence: ConfidenceKind,
    pub k: usize,
    #[serde(with = "crate::nan_null")]
    pub aurc: f64,
    #[serde(with = "crate::nan_null")]
    pub eaurc: f64,
}

/// The figures of one relevance, both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlausibleReport {
    pub kind: RelevanceKind,
    /// "labels (ζ = 0)", "state", ….
    pub relevance: String,
    pub directions: Vec<PlausibleDirection>,
}

impl PlausibleDirection {
    /// The E-AURC of `confidence` at K = `k`, when measured.
    pub fn eaurc(&self, confidence: ConfidenceKind, k: usize) -> Option<f64> {
        self.by_confidence
            .iter()
            .find(|c| c.confidence == confidence && c.k == k)
            .map(|c| c.eaurc)
    }

    /// Recall@`k` (P@1 for `k = 1`), when measured.
    pub fn recall_at(&self, k: usize) -> Option<f64> {
        self.recall.iter().find(|(kk, _)| *kk == k).map(|(_, v)| *v)
    }
}

impl PlausibleReport {
    /// The figures of one direction.
    pub fn direction(&self, d: Direction) -> Option<&PlausibleDirection> {
        self.directions.iter().find(|x| x.direction == d)
    }
}

/// Settings of [`evaluate_direction`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlausibleConfig {
    /// Hits per query the match probability is fitted to and `candidate_ece` reads.
    pub calibration_k: usize,
    /// K of the selective-retrieval loss `1{no relevant item in the first K}`.
    pub selective_ks: Vec<usize>,
    /// α of selection with guaranteed risk (selective risk).
    pub sgr_alpha: f64,
    /// δ of selection with guaranteed risk.
    pub sgr_delta: f64,
    /// α of conformal risk control (joint risk, in expectation).
    pub crc_alpha: f64,
}

impl Default for PlausibleConfig {
    fn default() -> Self {
        Self {
            calibration_k: 10,
            selective_ks: vec![5],
            sgr_alpha: 0.3,
            sgr_delta: 0.1,
            crc_alpha: 0.1,
        }
    }
}

impl PlausibleConfig {
    /// The list length every figure needs.
    pub fn list_len(&self) -> usize {
        let ks = PLAUSIBLE_KS.iter().chain(&self.selective_ks);
        ks.copied().max().unwrap_or(1).max(self.calibration_k)
    }
}

/// One direction's ranked lists and relevance, with each query's and gallery item's mean
/// log-variance (what a [`MatchProbability`] may read; all 0 for deterministic embeddings).
pub struct Judged<'a> {
    /// The first [`PlausibleConfig::list_len`] results of every query.
    pub top: &'a TopK,
    pub relevance: &'a Relevance,
    /// Mean log-variance of each query.
    pub u_query: &'a [f64],
    /// Mean log-variance of each gallery item.
    pub u_gallery: &'a [f64],
}

impl Judged<'_> {
    fn check_uncertainties(&self) -> Result<()> {
        crate::check::len(
            "Judged: query uncertainties",
            self.top.indices.nrows(),
            self.u_query.len(),
        )?;
        if let Some(&g) = self
            .top
            .indices
            .iter()
            .find(|&&g| g >= self.u_gallery.len())
        {
            return Err(MetricsError::Length {
                what: "Judged: gallery uncertainties",
                detail: format!("hit {g} but {} gallery uncertainties", self.u_gallery.len()),
            });
        }
        Ok(())
    }

    /// `p`'s logit of query `q`'s hit at `rank`.
    pub fn logit(&self, p: MatchProbability, q: usize, rank: usize) -> f64 {
        p.logit_of(
            self.top.distances[[q, rank]] as f64,
            self.u_query[q],
            self.u_gallery[self.top.indices[[q, rank]]],
        )
    }

    /// `p`'s probability of query `q`'s hit at `rank`.
    pub fn probability(&self, p: MatchProbability, q: usize, rank: usize) -> f64 {
        medprob_core::sigmoid(self.logit(p, q, rank))
    }
}

/// Top-1 probabilities and top-1 relevance of the queries that have a relevant item.
fn top1(
    j: &Judged<'_>,
    probability: MatchProbability,
) -> Result<(Vec<usize>, Vec<f64>, Vec<bool>)> {
    j.check_uncertainties()?;
    let mut idx = Vec::new();
    let mut p = Vec::new();
    let mut y = Vec::new();
    for q in 0..j.relevance.queries() {
        if j.relevance.count(q) == 0 {
            continue;
        }
        idx.push(q);
        p.push(j.probability(probability, q, 0));
        y.push(j.relevance.is_relevant(q, j.top.indices[[q, 0]]));
    }
    Ok((idx, p, y))
}

fn losses(j: &Judged<'_>, queries: &[usize], k: usize) -> Vec<f64> {
    queries
        .iter()
        .map(|&q| f64::from(u8::from(!hit(j.top, j.relevance, q, k))))
        .collect()
}

/// Every figure of one direction. `validation` fits the selective thresholds; `test` is
/// measured. `finding_masks` (label bit masks of the test queries, with `finding_names`
/// naming the bits) gives the per-finding calibration; without it that list is empty.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_direction(
    direction: Direction,
    distance: Distance,
    probability: MatchProbability,
    validation: &Judged<'_>,
    test: &Judged<'_>,
    test_queries: &GaussianEmbeddings,
    test_gallery: &GaussianEmbeddings,
    finding_masks: Option<(&[u32], &[&str])>,
    config: &PlausibleConfig,
    blocks: &TopKOptions,
) -> Result<PlausibleDirection> {
    let (q_t, p_t, y_t) = top1(test, probability)?;
    if q_t.is_empty() {
        return Err(MetricsError::Empty {
            what: "plausible evaluation (test)",
            detail: "no query has a relevant item in the gallery",
        });
    }
    let (q_v, p_v, _) = top1(validation, probability)?;
    if q_v.is_empty() {
        return Err(MetricsError::Empty {
            what: "plausible evaluation (validation)",
            detail: "no query has a relevant item in the gallery",
        });
    }
    let mut recall = Vec::new();
    for k in PLAUSIBLE_KS {
        let r = recall_at_k(test.top, test.relevance, k)?.expect("answerable queries exist");
        recall.push((k, r));
    }
    let r_precision = r_precision(distance, test_queries, test_gallery, test.relevance, blocks)?;
    let calibration = CalibrationReport::new(&p_t, &y_t)?;
    let c = candidate_outcomes(test, config.calibration_k)?;
    let candidate_ece = ece(
        &c.probabilities(probability),
        &c.relevant,
        DEFAULT_BINS,
        Binning::EqualWidth,
    )?;

    let mut per_finding = Vec::new();
    if let Some((masks, names)) = finding_masks {
        crate::check::len(
            "per-finding calibration: masks",
            test.relevance.queries(),
            masks.len(),
        )?;
        for (bit, name) in names.iter().enumerate() {
            let members: Vec<usize> = q_t
                .iter()
                .enumerate()
                .filter(|(_, &q)| masks[q] >> bit & 1 == 1)
                .map(|(i, _)| i)
                .collect();
            if members.is_empty() {
                continue;
            }
            let p: Vec<f64> = members.iter().map(|&i| p_t[i]).collect();
            let y: Vec<bool> = members.iter().map(|&i| y_t[i]).collect();
            let n = p.len() as f64;
            per_finding.push(FindingCalibration {
                finding: name.to_string(),
                queries: p.len(),
                ece: ece(&p, &y, DEFAULT_BINS, Binning::EqualWidth)?,
                mean_confidence: p.iter().sum::<f64>() / n,
                accuracy: y.iter().filter(|&&v| v).count() as f64 / n,
            });
        }
    }

    let mut risk_coverage = Vec::new();
    for k in PLAUSIBLE_KS {
        let rc = RiskCoverage::new(&p_t, &losses(test, &q_t, k))?;
        risk_coverage.push(PlausibleAurc {
            k,
            aurc: rc.aurc(),
            eaurc: rc.eaurc(),
            augrc: rc.augrc(),
            curve: rc.curve(101),
        });
    }

    // Each confidence at K = 1: the top-1 probability, the logit margin between the first
    // two hits, and the query's −Σσ² where its variance says anything.
    let loss_1 = losses(test, &q_t, 1);
    let logit = |q: usize, rank: usize| test.logit(probability, q, rank);
    let mut kinds: Vec<(ConfidenceKind, Vec<f64>)> =
        vec![(ConfidenceKind::Top1Probability, p_t.clone())];
    if test.top.indices.ncols() >= 2 {
        kinds.push((
            ConfidenceKind::Margin,
            q_t.iter().map(|&q| logit(q, 0) - logit(q, 1)).collect(),
        ));
    }
    let total_variance: Vec<f64> = test_queries
        .uncertainty()
        .iter()
        .map(|u| u.total_variance)
        .collect();
    if total_variance.iter().any(|&v| v != total_variance[0]) {
        kinds.push((
            ConfidenceKind::Uncertainty,
            q_t.iter().map(|&q| -total_variance[q]).collect(),
        ));
    }
    let mut by_confidence = Vec::new();
    for (confidence, conf) in kinds {
        let rc = RiskCoverage::new(&conf, &loss_1)?;
        by_confidence.push(ConfidenceAurc {
            confidence,
            k: 1,
            aurc: rc.aurc(),
            eaurc: rc.eaurc(),
        });
    }

    let mut selective = Vec::new();
    for &k in &config.selective_ks {
        let loss_v = losses(validation, &q_v, k);
        let loss_t = losses(test, &q_t, k);
        let wrong_v: Vec<bool> = loss_v.iter().map(|&l| l > 0.5).collect();
        let rules = [
            (
                Guarantee::SelectiveRiskWithProbability {
                    alpha: config.sgr_alpha,
                    delta: config.sgr_delta,
                },
                selection_with_guaranteed_risk(&p_v, &wrong_v, config.sgr_alpha, config.sgr_delta)?,
            ),
            (
                Guarantee::JointRiskInExpectation {
                    alpha: config.crc_alpha,
                },
                conformal_risk_control(&p_v, &loss_v, config.crc_alpha)?,
            ),
        ];
        for (guarantee, selector) in rules {
            selective.push(SelectiveEntry {
                direction,
                confidence: ConfidenceKind::Top1Probability,
                k,
                guarantee,
                threshold: (selector != Selector::ABSTAIN).then_some(selector.threshold),
                calibration: selector.evaluate(&p_v, &loss_v)?,
                test: selector.evaluate(&p_t, &loss_t)?,
            });
        }
    }

    Ok(PlausibleDirection {
        direction,
        queries: q_t.len(),
        without_relevant: test.relevance.queries() - q_t.len(),
        recall,
        r_precision,
        calibration,
        candidate_ece,
        calibration_k: config.calibration_k,
        per_finding,
        risk_coverage,
        selective,
        by_confidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label_retrieval::label_retrieval;

    /// One query at 0, gallery items at 1, 2, 3, 4 (1-D, equal variances).
    fn line() -> (GaussianEmbeddings, GaussianEmbeddings) {
        (
            GaussianEmbeddings::from_vecs(1, 1, vec![0.0], vec![0.0]).unwrap(),
            GaussianEmbeddings::from_vecs(4, 1, vec![1.0, 2.0, 3.0, 4.0], vec![0.0; 4]).unwrap(),
        )
    }

    #[test]
    fn recall_and_r_precision_by_hand() {
        let (q, g) = line();
        let top = ranked_lists(Distance::Csd, &q, &g, 4, &TopKOptions::default()).unwrap();
        // Relevant: the 2nd and 4th nearest.
        let r = Relevance::custom(4, vec![vec![1, 3]]).unwrap();
        assert_eq!(recall_at_k(&top, &r, 1).unwrap(), Some(0.0));
        assert_eq!(recall_at_k(&top, &r, 2).unwrap(), Some(1.0));
        // R = 2: the first two hold one relevant item → 1/2; AP@R = (1/2)/2.
        let rp = r_precision(Distance::Csd, &q, &g, &r, &TopKOptions::default()).unwrap();
        assert_eq!((rp.r_precision, rp.map_at_r, rp.queries), (0.5, 0.25, 1));
        // Each hit carries its own mean log-variance (here the gallery's are 0, 1, 2, 3).
        let g =
            GaussianEmbeddings::from_vecs(4, 1, vec![1.0, 2.0, 3.0, 4.0], vec![0.0, 1.0, 2.0, 3.0])
                .unwrap();
        let top = ranked_lists(Distance::Csd, &q, &g, 4, &TopKOptions::default()).unwrap();
        let (uq, ug) = (vec![-0.5], g.mean_log_variances());
        let j = Judged {
            top: &top,
            relevance: &r,
            u_query: &uq,
            u_gallery: &ug,
        };
        let c = candidate_outcomes(&j, 3).unwrap();
        let order: Vec<usize> = top.indices.row(0).iter().take(3).copied().collect();
        assert_eq!(
            c.relevant,
            order.iter().map(|&i| i == 1 || i == 3).collect::<Vec<_>>()
        );
        assert_eq!(c.u_hit, order.iter().map(|&i| i as f64).collect::<Vec<_>>());
        assert_eq!(c.u_query, vec![-0.5; 3]);
        assert!(c.distance[0] <= c.distance[1] && c.distance[1] <= c.distance[2]);
        let p = MatchProbability::new(1.0, 0.0)
            .unwrap()
            .with_uncertainty(2.0, 0.5)
            .unwrap();
        assert_eq!(
            c.probabilities(p)[1],
            p.probability_of(c.distance[1], -0.5, order[1] as f64)
        );
        assert_eq!(j.probability(p, 0, 1), c.probabilities(p)[1]);
        // Too few gallery uncertainties for the hits: an error, not a panic.
        let short = Judged {
            top: &top,
            relevance: &r,
            u_query: &uq,
            u_gallery: &ug[..2],
        };
        assert!(candidate_outcomes(&short, 3)
            .unwrap_err()
            .to_string()
            .contains("gallery uncertainties"));
    }

    #[test]
    fn queries_without_a_relevant_item_are_left_out() {
        let q = GaussianEmbeddings::from_vecs(2, 1, vec![0.0, 0.0], vec![0.0; 2]).unwrap();
        let (_, g) = line();
        let top = ranked_lists(Distance::Csd, &q, &g, 4, &TopKOptions::default()).unwrap();
        let r = Relevance::custom(4, vec![vec![0], vec![]]).unwrap();
        assert_eq!(recall_at_k(&top, &r, 1).unwrap(), Some(1.0));
        let rp = r_precision(Distance::Csd, &q, &g, &r, &TopKOptions::default()).unwrap();
        assert_eq!(rp.queries, 1);
        let none = Relevance::custom(4, vec![vec![], vec![]]).unwrap();
        assert_eq!(recall_at_k(&top, &none, 1).unwrap(), None);
        assert!(
            r_precision(Distance::Csd, &q, &g, &none, &TopKOptions::default())
                .unwrap()
                .r_precision
                .is_nan()
        );
    }

    #[test]
    fn ties_are_taken_in_gallery_order() {
        // Items 0 and 1 are byte-identical, at the same distance: item 0 comes first.
        let q = GaussianEmbeddings::from_vecs(1, 1, vec![0.0], vec![0.0]).unwrap();
        let g = GaussianEmbeddings::from_vecs(3, 1, vec![1.0, 1.0, 2.0], vec![0.0; 3]).unwrap();
        let top = ranked_lists(Distance::Csd, &q, &g, 3, &TopKOptions::default()).unwrap();
        let second = Relevance::custom(3, vec![vec![1]]).unwrap();
        assert_eq!(recall_at_k(&top, &second, 1).unwrap(), Some(0.0));
        assert_eq!(recall_at_k(&top, &second, 2).unwrap(), Some(1.0));
    }

    #[test]
    fn label_relevance_agrees_with_pmrp() {
        // 40 random 2-D queries and gallery items with random 3-bit labels.
        let mut x = 12345u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let n = 40;
        let mut mean = Vec::new();
        for _ in 0..2 * n * 2 {
            mean.push((next() % 1000) as f32 / 100.0);
        }
        let q =
            GaussianEmbeddings::from_vecs(n, 2, mean[..2 * n].to_vec(), vec![0.0; 2 * n]).unwrap();
        let g =
            GaussianEmbeddings::from_vecs(n, 2, mean[2 * n..].to_vec(), vec![0.0; 2 * n]).unwrap();
        let ql: Vec<u32> = (0..n).map(|_| (next() % 8) as u32).collect();
        let gl: Vec<u32> = (0..n).map(|_| (next() % 8) as u32).collect();
        let opts = TopKOptions::default();
        let pmrp = label_retrieval(Distance::Csd, &q, &ql, &g, &gl, &[0, 1], &opts).unwrap();
        for (z, old) in pmrp.iter().enumerate() {
            let r = Relevance::labels(&ql, &gl, z as u32).unwrap();
            let new = r_precision(Distance::Csd, &q, &g, &r, &opts).unwrap();
            assert_eq!(new.queries, old.queries);
            assert!((100.0 * new.r_precision - old.pmrp).abs() < 1e-9);
            assert!((100.0 * new.map_at_r - old.map_at_r).abs() < 1e-9);
        }
    }

    #[test]
    fn a_direction_by_hand() {
        // Two queries at 0 and 10; gallery at 1, 2 and 11, 12. Query 0's relevant item is
        // its second hit, query 1's its first.
        let q = GaussianEmbeddings::from_vecs(2, 1, vec![0.0, 10.0], vec![0.0; 2]).unwrap();
        let g =
            GaussianEmbeddings::from_vecs(4, 1, vec![1.0, 2.0, 11.0, 12.0], vec![0.0; 4]).unwrap();
        let opts = TopKOptions::default();
        let top = ranked_lists(Distance::Csd, &q, &g, 4, &opts).unwrap();
        let r = Relevance::custom(4, vec![vec![1], vec![2]]).unwrap();
        let (uq, ug) = (q.mean_log_variances(), g.mean_log_variances());
        let j = Judged {
            top: &top,
            relevance: &r,
            u_query: &uq,
            u_gallery: &ug,
        };
        let p = MatchProbability::new(1.0, 0.0).unwrap();
        let config = PlausibleConfig {
            calibration_k: 2,
            selective_ks: vec![1],
            ..Default::default()
        };
        let out = evaluate_direction(
            Direction::ImageToText,
            Distance::Csd,
            p,
            &j,
            &j,
            &q,
            &g,
            Some((&[0b01, 0b11], &["A", "B"])),
            &config,
            &opts,
        )
        .unwrap();
        assert_eq!(out.recall, vec![(1, 0.5), (5, 1.0), (10, 1.0)]);
        assert_eq!((out.queries, out.without_relevant), (2, 0));
        assert_eq!(out.r_precision.r_precision, 0.5);
        // Both top-1 hits are at the same distance (same probability): the top-1 loss
        // cannot be ordered, so AURC = the overall risk 1/2, and E-AURC = 1/2 − 1/4.
        let k1 = &out.risk_coverage[0];
        assert_eq!(k1.k, 1);
        assert!((k1.aurc - 0.5).abs() < 1e-12 && (k1.eaurc - 0.25).abs() < 1e-12);
        // By confidence: the margin (3 for both) ties too; equal variances give no
        // uncertainty row.
        let kinds: Vec<(ConfidenceKind, f64)> = out
            .by_confidence
            .iter()
            .map(|c| (c.confidence, c.eaurc))
            .collect();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        assert_eq!(kinds[0].0, ConfidenceKind::Top1Probability);
        assert_eq!(kinds[1].0, ConfidenceKind::Margin);
        assert!((kinds[1].1 - 0.25).abs() < 1e-12);
        assert_eq!(out.eaurc(ConfidenceKind::Uncertainty, 1), None);
        // Query 0 (the wrong one) made broad: σ² = e. CSD to its hits 1 + e + 1 and
        // 4 + e + 1; the −Σσ² order answers query 1 first (E-AURC 0), as does the top-1
        // probability (its top-1 is now farther); the margin (3 for both) still ties.
        let broad = GaussianEmbeddings::from_vecs(2, 1, vec![0.0, 10.0], vec![1.0, 0.0]).unwrap();
        let top_b = ranked_lists(Distance::Csd, &broad, &g, 4, &opts).unwrap();
        let (uq_b, ug_b) = (broad.mean_log_variances(), g.mean_log_variances());
        let jb = Judged {
            top: &top_b,
            relevance: &r,
            u_query: &uq_b,
            u_gallery: &ug_b,
        };
        let out_b = evaluate_direction(
            Direction::ImageToText,
            Distance::Csd,
            p,
            &jb,
            &jb,
            &broad,
            &g,
            None,
            &config,
            &opts,
        )
        .unwrap();
        assert_eq!(out_b.eaurc(ConfidenceKind::Uncertainty, 1), Some(0.0));
        assert_eq!(out_b.eaurc(ConfidenceKind::Top1Probability, 1), Some(0.0));
        assert!((out_b.eaurc(ConfidenceKind::Margin, 1).unwrap() - 0.25).abs() < 1e-6);
        // Per finding: A holds both queries, B only the second (whose top-1 is right).
        assert_eq!(out.per_finding.len(), 2);
        assert_eq!(
            (out.per_finding[1].queries, out.per_finding[1].accuracy),
            (1, 1.0)
        );
        let pt = p.probability(top.distances[[0, 0]] as f64);
        assert!((out.per_finding[1].ece - (1.0 - pt)).abs() < 1e-9);
        assert!((out.calibration.ece - (pt - 0.5).abs()).abs() < 1e-9);
        // Selective rules at K = 1 on two validation queries, one of them wrong: conformal
        // risk control at α = 0.1 cannot afford one error in (n + 1) = 3, and the
        // Clopper–Pearson bound on 1 error in 2 is far above α = 0.3: both abstain.
        assert_eq!(out.selective.len(), 2);
        for e in &out.selective {
            assert_eq!((e.k, e.threshold, e.test.answered), (1, None, 0));
            assert_eq!((e.calibration.queries, e.test.queries), (2, 2));
        }
    }

    #[test]
    fn selective_rules_by_hand() {
        // 40 queries, each on its own axis with one gallery item δ_i = 0.02·(i + 1) further
        // out on the same axis: the top-1 distance δ_i² grows with i, so the top-1
        // probability falls. The 30 nearest hits are relevant, the 10 farthest are not.
        let n = 40;
        let mut q = vec![0.0f32; n * n];
        let mut g = vec![0.0f32; n * n];
        for i in 0..n {
            q[i * n + i] = 1.0;
            g[i * n + i] = 1.0 + 0.02 * (i + 1) as f32;
        }
        let q = GaussianEmbeddings::from_vecs(n, n, q, vec![0.0; n * n]).unwrap();
        let g = GaussianEmbeddings::from_vecs(n, n, g, vec![0.0; n * n]).unwrap();
        let opts = TopKOptions::default();
        let top = ranked_lists(Distance::Csd, &q, &g, 10, &opts).unwrap();
        // The 10 far queries' relevant item is their neighbour's, never their first hit.
        let r = Relevance::custom(
            n,
            (0..n)
                .map(|i| if i < 30 { vec![i] } else { vec![(i + 1) % n] })
                .collect(),
        )
        .unwrap();
        let (uq, ug) = (q.mean_log_variances(), g.mean_log_variances());
        let j = Judged {
            top: &top,
            relevance: &r,
            u_query: &uq,
            u_gallery: &ug,
        };
        let config = PlausibleConfig {
            calibration_k: 1,
            selective_ks: vec![1],
            crc_alpha: 0.1,
            ..Default::default()
        };
        let out = evaluate_direction(
            Direction::ImageToText,
            Distance::Csd,
            MatchProbability::new(1.0, 0.0).unwrap(),
            &j,
            &j,
            &q,
            &g,
            None,
            &config,
            &opts,
        )
        .unwrap();
        // Conformal risk control: (errors + 1) / 41 ≤ 0.1 affords three errors, so the 30
        // right answers and the first three wrong ones are answered.
        let crc = out
            .selective
            .iter()
            .find(|e| matches!(e.guarantee, Guarantee::JointRiskInExpectation { .. }))
            .unwrap();
        assert_eq!(crc.test.answered, 33);
        assert!((crc.test.joint_risk - 3.0 / 40.0).abs() < 1e-12);
        // Selection with guaranteed risk answers a prefix of the confidence order whose
        // selective risk it certifies at ≤ 0.3.
        let sgr = out
            .selective
            .iter()
            .find(|e| matches!(e.guarantee, Guarantee::SelectiveRiskWithProbability { .. }))
            .unwrap();
        assert!(sgr.test.answered >= 30, "{:?}", sgr.test);
        assert!(sgr.test.selective_risk.unwrap() <= 0.3);
        assert_eq!(out.recall[0], (1, 0.75));
        // The oracle order puts the 30 right answers first: E-AURC = AURC − oracle AURC.
        let k1 = &out.risk_coverage[0];
        assert!(k1.eaurc.abs() < 1e-12, "already in the oracle's order");
    }

    #[test]
    fn no_relevant_item_anywhere_is_an_error() {
        let (q, g) = line();
        let top = ranked_lists(Distance::Csd, &q, &g, 4, &TopKOptions::default()).unwrap();
        let r = Relevance::custom(4, vec![vec![]]).unwrap();
        let (uq, ug) = (q.mean_log_variances(), g.mean_log_variances());
        let j = Judged {
            top: &top,
            relevance: &r,
            u_query: &uq,
            u_gallery: &ug,
        };
        let e = evaluate_direction(
            Direction::TextToImage,
            Distance::Csd,
            MatchProbability::MEDPROBCLIP_INIT,
            &j,
            &j,
            &q,
            &g,
            None,
            &PlausibleConfig::default(),
            &TopKOptions::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("no query has a relevant item"),
            "{e}"
        );
    }
}
