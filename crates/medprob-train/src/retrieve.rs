//! Answer one query (an image or a report) against a gallery of studies, with match
//! probabilities, the query's uncertainty and an answer/abstain decision whose risk is
//! controlled: the threshold comes from selection with guaranteed risk on the validation
//! split (SPEC §7), and the answer says which guarantee it carries.
//!
//! The probability beside every hit is the one the evaluation reports
//! ([`medprob_metrics::evaluate::fit_plausible_probability`]): the probability that the hit
//! is a *plausible* match — a study with the query's positive label set — fitted on the
//! gallery CSV's own validation split. The answer rule bounds the chance that no correct
//! item is among the `k` hits, correct meaning plausible (the default) or the query's own
//! study ([`AnswerRelevance`]).

use std::path::{Path, PathBuf};

use candle_core::Device;
use medprob_core::{
    kernels, AnswerRule, GaussianEmbeddings, GaussianIndex, GaussianIndexWriter, IndexInfo,
    MatchProbability, TopKOptions,
};
use medprob_data::image::{decode, eval_transform};
use medprob_data::tokenize::ReportTokenizer;
use medprob_data::{read_studies_limited, StudyRecord};
use medprob_encoders::MedProbModel;
use medprob_metrics::evaluate::{fit_plausible_probability, Split};
use medprob_metrics::hubness::HubCorrection;
use medprob_metrics::plausible::ranked_lists;
use medprob_metrics::relevance::Relevance;
use medprob_metrics::selective::{selection_with_guaranteed_risk, Guarantee, Selector};
use serde::Serialize;

use crate::config::TrainConfig;
use crate::encode::{embed_split, embed_texts, to_gaussian, SplitEmbeddings};
use crate::error::{Result, TrainError};
use crate::evaluation::label_mask;
use crate::objective::image_tensor;
use crate::pipeline::load_checkpoint;
use crate::setup::{loader, loader_config};

/// Hits per query the match probability is fitted to (as in the evaluation).
const CALIBRATION_K: usize = 10;

/// What is asked.
#[derive(Debug, Clone)]
pub enum Query {
    /// A radiograph file: find its reports.
    Image(std::path::PathBuf),
    /// A report text: find its images.
    Report(String),
}

/// What is known of a query's ground truth, so each hit can be marked right or wrong.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryTruth {
    /// The study the query comes from (its own study is the instance match).
    pub study_id: Option<String>,
    /// Its positive CheXpert labels as a bit mask (plausible matches share it exactly).
    pub labels: Option<u32>,
}

/// A query's positive labels given by name, separated by `;` (e.g. `"Pleural Effusion;
/// Cardiomegaly"`, case-insensitive), as the bit mask of [`medprob_data::CHEXPERT_LABELS`].
/// An empty list is "No Finding". A name that is not a label is an error listing the labels.
pub fn parse_label_set(text: &str) -> Result<u32> {
    let mut mask = 0u32;
    for name in text.split(';').map(str::trim).filter(|n| !n.is_empty()) {
        let c = medprob_data::CHEXPERT_LABELS
            .iter()
            .position(|l| l.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                TrainError::config(
                    "labels",
                    format!(
                        "unknown label {name:?}; the labels are {}",
                        medprob_data::CHEXPERT_LABELS.join(", ")
                    ),
                )
            })?;
        mask |= 1 << c;
    }
    if mask == 0 {
        let c = medprob_data::CHEXPERT_LABELS
            .iter()
            .position(|l| *l == "No Finding")
            .expect("No Finding is a CheXpert label");
        mask = 1 << c;
    }
    Ok(mask)
}

/// What counts as a correct answer for the answer rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerRelevance {
    /// A study with exactly the query's positive label set (falls back to the query's own
    /// study where the CSV has no labels).
    Plausible,
    /// The query's own study.
    Instance,
}

impl std::str::FromStr for AnswerRelevance {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "plausible" => Ok(Self::Plausible),
            "instance" => Ok(Self::Instance),
            other => Err(format!(
                "unknown relevance {other:?}: use plausible or instance"
            )),
        }
    }
}

/// One retrieved study.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub study_id: String,
    pub distance: f64,
    /// Calibrated probability that this hit is a plausible match for the query.
    pub probability: f64,
    /// The report (image queries) or the image path (report queries); empty for answers
    /// from an index written without [`INDEX_ITEMS`].
    pub item: String,
    /// Whether the hit has exactly the query's positive labels (`None`: unknown).
    pub plausible: Option<bool>,
    /// Whether the hit is the query's own study (`None`: unknown).
    pub own_study: Option<bool>,
}

impl Hit {
    /// A hit on gallery study `study_id`, described by its `item` where known, and judged
    /// against the query's `truth`.
    fn new(
        study_id: String,
        distance: f64,
        probability: f64,
        item: Option<&IndexItem>,
        query: &Query,
        truth: &QueryTruth,
    ) -> Self {
        Self {
            item: item.map_or_else(String::new, |it| match query {
                Query::Image(_) => it.report.clone(),
                Query::Report(_) => it.image.clone(),
            }),
            plausible: truth
                .labels
                .zip(item.and_then(|it| it.labels))
                .map(|(a, b)| a == b),
            own_study: truth.study_id.as_ref().map(|s| *s == study_id),
            study_id,
            distance,
            probability,
        }
    }
}

/// The answer to one query.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub hits: Vec<Hit>,
    /// `Σ σ²` of the query embedding (probabilistic models).
    pub uncertainty: Option<f64>,
    /// The top-1 match probability, the confidence the decision thresholds.
    pub confidence: f64,
    /// Whether the top-`k` list is returned as an answer.
    pub answered: bool,
    /// The threshold and the guarantee behind the decision.
    pub threshold: Option<f64>,
    pub guarantee: String,
    /// What the probability and the rule count as a match, and where they were fitted.
    pub calibration: String,
}

/// A model, a gallery and a calibrated abstention rule.
pub struct Retriever {
    model: MedProbModel,
    tokenizer: ReportTokenizer,
    config: TrainConfig,
    device: Device,
    gallery_images: SplitEmbeddings,
    /// The gallery studies, row-aligned with `gallery_images` (what [`INDEX_ITEMS`] stores).
    gallery_items: Vec<IndexItem>,
    /// Every study of the gallery CSV (any split), to recognise a query that is one of them.
    studies: Vec<StudyRecord>,
    /// The plausible-match probability (the evaluation's), as stored in the indexes.
    calibration: MatchProbability,
    calibration_text: String,
    image_rule: (Selector, Guarantee),
    report_rule: (Selector, Guarantee),
    relevance: AnswerRelevance,
    k: usize,
    warnings: Vec<String>,
}

/// How a [`Retriever`] decides.
#[derive(Debug, Clone)]
pub struct RetrieveOptions {
    /// Hits returned; the rule's loss is "no correct item among them".
    pub k: usize,
    /// Bound on `P(no correct item in the top k | answered)`.
    pub alpha: f64,
    /// The bound holds with probability `≥ 1 − delta` over the calibration split.
    pub delta: f64,
    /// What the rule counts as correct.
    pub relevance: AnswerRelevance,
    /// A study CSV whose validation split calibrates the probability and the rule when
    /// the gallery CSV has none (e.g. the run's own); without it such a gallery is an
    /// error.
    pub fallback_calibration: Option<PathBuf>,
    /// Retrieval-time hub correction (CSLS against the calibration split's queries), as
    /// the evaluation applies it; `None` ranks raw distances. Indexes written by
    /// [`Retriever::write_indexes`] store the offsets, so they rank as the retriever does.
    pub hub_correction: Option<HubCorrection>,
}

impl RetrieveOptions {
    /// Top-`k`, risk `alpha` with confidence `1 − delta`, plausible relevance.
    pub fn new(k: usize, alpha: f64, delta: f64) -> Self {
        Self {
            k,
            alpha,
            delta,
            relevance: AnswerRelevance::Plausible,
            fallback_calibration: None,
            hub_correction: Some(HubCorrection::default()),
        }
    }
}

impl Retriever {
    /// Load `checkpoint`, embed the `gallery_split` of `config.data.studies` as the
    /// gallery, and calibrate on that CSV's validation split: the plausible-match
    /// probability, and the rule that answers when the top-1 probability clears the
    /// threshold bounding `P(no correct item in the top k | answered) ≤ alpha` with
    /// probability `≥ 1 − delta`.
    pub fn new(
        config: &TrainConfig,
        checkpoint: &Path,
        gallery_split: medprob_data::Split,
        options: &RetrieveOptions,
    ) -> Result<Self> {
        let device = config.device.device()?;
        let (model, tokenizer) = load_checkpoint(checkpoint, config.data.max_tokens, &device)?;
        let csv = &config.data.studies;
        let studies = read_studies_limited(csv, &config.data.limits)?;
        let of = |studies: &[StudyRecord], split| -> Vec<StudyRecord> {
            studies
                .iter()
                .filter(|s| s.split == Some(split))
                .cloned()
                .collect()
        };
        let gallery = of(&studies, gallery_split);
        if gallery.is_empty() {
            return Err(TrainError::Input {
                path: csv.clone(),
                reason: format!("no study has split = {gallery_split:?}"),
            });
        }
        let mut warnings = Vec::new();
        let mut validation = of(&studies, medprob_data::Split::Validate);
        let mut calibrated_on = csv.clone();
        if validation.is_empty() {
            let Some(fallback) = &options.fallback_calibration else {
                return Err(TrainError::Input {
                    path: csv.clone(),
                    reason: "no study has split = validate, so the match probability and the \
                             answer rule cannot be calibrated for this gallery"
                        .into(),
                });
            };
            let other = read_studies_limited(fallback, &config.data.limits)?;
            validation = of(&other, medprob_data::Split::Validate);
            if validation.is_empty() {
                return Err(TrainError::Input {
                    path: fallback.clone(),
                    reason: "no study has split = validate".into(),
                });
            }
            warnings.push(format!(
                "warning: {} has no validation split; the match probability and the answer rule \
                 were calibrated on {}'s instead, a different gallery: its probabilities and \
                 guarantee may not hold here",
                csv.display(),
                fallback.display()
            ));
            calibrated_on = fallback.clone();
        }
        let size = config.data.image_size;
        let g_loader = loader(config, gallery, false)?;
        let mut gallery_images = embed_split(&model, &tokenizer, &g_loader, size, None, &device)?;
        let gallery_items = gallery_images
            .study_index
            .iter()
            .map(|&i| {
                let s = &g_loader.studies()[i];
                IndexItem {
                    study_id: s.study_id.clone(),
                    report: medprob_data::sampling::evaluation_text(s)
                        .unwrap_or_default()
                        .to_string(),
                    image: medprob_data::sampling::evaluation_view(s)
                        .map(|v| s.image_paths[v].display().to_string())
                        .unwrap_or_default(),
                    labels: label_mask(s),
                }
            })
            .collect();

        let v_loader = loader(config, validation, false)?;
        let mut val = embed_split(&model, &tokenizer, &v_loader, size, None, &device)?;
        if let Some(h) = options.hub_correction {
            // Both galleries (and the calibration split's, so that the probability and the
            // rule are fitted to the distances queries will see) get their CSLS offsets
            // against the calibration split's queries of the other modality.
            gallery_images = gallery_images.hub_corrected(&h, config.distance(), &val)?;
            val = val.hub_corrected(&h, config.distance(), &val)?;
        }
        let keys: Vec<u64> = (0..val.study_ids.len() as u64).collect();
        let labels: Option<Vec<u32>> = val
            .study_index
            .iter()
            .map(|&i| label_mask(&v_loader.studies()[i]))
            .collect();
        let split = Split {
            images: &val.images,
            image_keys: &keys,
            texts: &val.texts,
            text_keys: &keys,
            image_labels: labels.as_deref(),
            text_labels: labels.as_deref(),
            label_names: &[],
            image_states: None,
            text_states: None,
        };
        let blocks = TopKOptions::default();
        let (calibration, what) =
            fit_plausible_probability(config.distance(), &split, CALIBRATION_K, &blocks)?;
        let corrected = options.hub_correction.map_or(String::new(), |h| {
            format!(", distances hub-corrected ({})", h.describe())
        });
        let calibration_text = format!(
            "{what}; calibrated on {}{corrected}",
            calibrated_on.display()
        );
        let k = options.k;
        let (alpha, delta) = (options.alpha, options.delta);
        let i2t = match (options.relevance, &labels) {
            (AnswerRelevance::Plausible, Some(l)) => Relevance::labels(l, l, 0)?,
            _ => Relevance::instance(&keys, &keys),
        };
        let rule = |queries: &GaussianEmbeddings,
                    gallery: &GaussianEmbeddings,
                    relevance: &Relevance|
         -> Result<(Selector, Guarantee)> {
            let top = ranked_lists(config.distance(), queries, gallery, k, &blocks)?;
            let (u_q, u_g) = (queries.mean_log_variances(), gallery.mean_log_variances());
            let (mut conf, mut wrong) = (Vec::new(), Vec::new());
            for q in 0..queries.len() {
                if relevance.count(q) == 0 {
                    continue;
                }
                conf.push(calibration.probability_of(
                    top.distances[[q, 0]] as f64,
                    u_q[q],
                    u_g[top.indices[[q, 0]]],
                ));
                wrong.push(
                    !top.indices
                        .row(q)
                        .iter()
                        .any(|&g| relevance.is_relevant(q, g)),
                );
            }
            let sel = selection_with_guaranteed_risk(&conf, &wrong, alpha, delta)?;
            Ok((
                sel,
                Guarantee::SelectiveRiskWithProbability { alpha, delta },
            ))
        };
        Ok(Self {
            image_rule: rule(&val.images, &val.texts, &i2t)?,
            report_rule: rule(&val.texts, &val.images, &i2t.transpose())?,
            model,
            tokenizer,
            config: config.clone(),
            device,
            gallery_images,
            gallery_items,
            studies,
            calibration,
            calibration_text,
            relevance: if labels.is_some() {
                options.relevance
            } else {
                AnswerRelevance::Instance
            },
            k,
            warnings,
        })
    }

    /// Warnings about the calibration (e.g. it comes from another CSV).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The study of the gallery CSV (any split) with this id.
    pub fn study(&self, id: &str) -> Option<&StudyRecord> {
        self.studies.iter().find(|s| s.study_id == id)
    }

    /// What is known of a query: an image file that is one of the CSV's images belongs to
    /// that study.
    pub fn truth_of(&self, query: &Query) -> QueryTruth {
        let study = match query {
            Query::Image(path) => self.studies.iter().find(|s| {
                s.image_paths
                    .iter()
                    .any(|p| !p.as_os_str().is_empty() && path.ends_with(p))
            }),
            Query::Report(_) => None,
        };
        study.map_or_else(QueryTruth::default, |s| QueryTruth {
            study_id: Some(s.study_id.clone()),
            labels: label_mask(s),
        })
    }

    /// The rule's guarantee in words.
    fn describe(&self, guarantee: &Guarantee) -> String {
        format!(
            "{} (loss: no {} in the top {})",
            guarantee.describe(),
            match self.relevance {
                AnswerRelevance::Plausible => "plausible match (same positive labels)",
                AnswerRelevance::Instance => "hit of the query's own study",
            },
            self.k
        )
    }

    /// Answer one query; `truth` marks each hit right or wrong where it is known.
    pub fn query_with(&self, query: &Query, truth: &QueryTruth) -> Result<Answer> {
        let q = embed_query(
            &self.model,
            &self.tokenizer,
            &self.config,
            &self.device,
            query,
        )?;
        let (gallery, rule) = match query {
            Query::Image(_) => (&self.gallery_images.texts, &self.image_rule),
            Query::Report(_) => (&self.gallery_images.images, &self.report_rule),
        };
        let top = kernels::top_k(
            self.config.distance(),
            &q,
            gallery,
            self.k.min(gallery.len()),
            &TopKOptions::default(),
        )?;
        let u_query = q.mean_log_variance(0);
        let hits: Vec<Hit> = top
            .indices
            .row(0)
            .iter()
            .zip(top.distances.row(0))
            .map(|(&j, &d)| {
                let item = &self.gallery_items[j];
                Hit::new(
                    item.study_id.clone(),
                    d as f64,
                    self.calibration.probability_of(
                        d as f64,
                        u_query,
                        gallery.mean_log_variance(j),
                    ),
                    Some(item),
                    query,
                    truth,
                )
            })
            .collect();
        let confidence = hits.first().map_or(0.0, |h| h.probability);
        let uncertainty = self
            .config
            .method
            .probabilistic()
            .then(|| q.uncertainty()[0].total_variance);
        let (selector, guarantee) = rule;
        Ok(Answer {
            answered: selector.answers(confidence),
            threshold: (*selector != Selector::ABSTAIN).then_some(selector.threshold),
            guarantee: self.describe(guarantee),
            calibration: self.calibration_text.clone(),
            hits,
            uncertainty,
            confidence,
        })
    }

    /// Answer one query, recognising it when it is an image of the gallery CSV.
    pub fn query(&self, query: &Query) -> Result<Answer> {
        self.query_with(query, &self.truth_of(query))
    }

    /// Number of gallery studies.
    pub fn gallery_len(&self) -> usize {
        self.gallery_items.len()
    }

    /// Write the gallery as two on-disk indexes with this retriever's calibration and answer
    /// rules: `dir/reports` (answers image queries) and `dir/images` (answers report
    /// queries). `dir` must not exist. [`query_index`] then answers queries without
    /// embedding the gallery or calibrating again.
    pub fn write_indexes(&self, dir: &Path) -> Result<()> {
        if dir.exists() {
            return Err(TrainError::config(
                "index",
                format!("{} already exists; choose another folder", dir.display()),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let ids: Vec<&str> = self
            .gallery_items
            .iter()
            .map(|it| it.study_id.as_str())
            .collect();
        let calibration = self.calibration;
        for (name, gallery, rule, kind) in [
            (
                REPORTS_INDEX,
                &self.gallery_images.texts,
                &self.image_rule,
                "reports",
            ),
            (
                IMAGES_INDEX,
                &self.gallery_images.images,
                &self.report_rule,
                "images",
            ),
        ] {
            let (selector, guarantee) = rule;
            let info = IndexInfo {
                distance: self.config.distance(),
                dim: gallery.dim(),
                len: gallery.len(),
                description: format!(
                    "{} {kind} of the studies in {} ({} model)",
                    gallery.len(),
                    self.config.data.studies.display(),
                    self.config.method.display_name()
                ),
                match_probability: Some(calibration),
                answer_rule: answer_rule(selector),
                relevance: Some(self.calibration_text.clone()),
                guarantee: Some(self.describe(guarantee)),
                gallery_offset: gallery.gallery_offset().is_some(),
            };
            let mut w = GaussianIndexWriter::create(&dir.join(name), info)?;
            w.push(gallery, &ids)?;
            w.finish()?;
        }
        // What an answer shows beside each id: the report, the image, the labels.
        let mut items = String::new();
        for item in &self.gallery_items {
            items += &serde_json::to_string(item).expect("items serialise");
            items.push('\n');
        }
        let path = dir.join(INDEX_ITEMS);
        medprob_core::fs::write_atomic(&path, items.as_bytes())
            .map_err(|e| TrainError::io(&path, e))?;
        Ok(())
    }
}

/// Sub-folder of [`Retriever::write_indexes`] holding the reports (for image queries).
pub const REPORTS_INDEX: &str = "reports";
/// Sub-folder of [`Retriever::write_indexes`] holding the images (for report queries).
pub const IMAGES_INDEX: &str = "images";
/// File of [`Retriever::write_indexes`] with each gallery study's report, image and labels,
/// one JSON object per line ([`IndexItem`]), for answers that show what they found.
pub const INDEX_ITEMS: &str = "items.jsonl";

/// One line of [`INDEX_ITEMS`].
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexItem {
    pub study_id: String,
    /// The report the index embedded.
    pub report: String,
    /// The image the index embedded.
    pub image: String,
    /// Positive CheXpert labels as a bit mask of [`medprob_data::CHEXPERT_LABELS`], when
    /// the gallery CSV had labels.
    pub labels: Option<u32>,
}

/// The items beside an index, by study id; empty for indexes written without them.
fn read_index_items(dir: &Path) -> Result<std::collections::HashMap<String, IndexItem>> {
    let path = dir.join(INDEX_ITEMS);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(TrainError::io(&path, e)),
    };
    let mut items = std::collections::HashMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let item: IndexItem = serde_json::from_str(line).map_err(|e| TrainError::Input {
            path: path.clone(),
            reason: format!("line {}: {e}", n + 1),
        })?;
        items.insert(item.study_id.clone(), item);
    }
    Ok(items)
}

/// The index rule that answers exactly what `selector` answers (an index stores one
/// inclusive threshold, or "never", or "always").
fn answer_rule(selector: &Selector) -> AnswerRule {
    let t = selector.threshold;
    if t == f64::INFINITY {
        AnswerRule::Never
    } else if t == f64::NEG_INFINITY {
        AnswerRule::Always
    } else if selector.inclusive {
        AnswerRule::AtLeast { threshold: t }
    } else {
        AnswerRule::AtLeast {
            threshold: t.next_up(),
        }
    }
}

/// Embed one query with the model of a checkpoint.
pub fn embed_query(
    model: &MedProbModel,
    tokenizer: &ReportTokenizer,
    config: &TrainConfig,
    device: &Device,
    query: &Query,
) -> Result<GaussianEmbeddings> {
    match query {
        Query::Image(path) => {
            let img = decode(path)?;
            let t = &loader_config(config, false).image;
            let x = image_tensor(&[&eval_transform(&img, t)], config.data.image_size, device)?;
            to_gaussian(&model.encode_images(&x, false)?)
        }
        Query::Report(text) => embed_texts(model, tokenizer, std::slice::from_ref(text), device),
    }
}

/// Answer one query from indexes written by [`Retriever::write_indexes`]: only the query is
/// embedded (with `checkpoint`'s model), the gallery is memory-mapped.
pub fn query_index(
    config: &TrainConfig,
    checkpoint: &Path,
    index_dir: &Path,
    query: &Query,
    truth: &QueryTruth,
    k: usize,
) -> Result<Answer> {
    let device = config.device.device()?;
    let (model, tokenizer) = load_checkpoint(checkpoint, config.data.max_tokens, &device)?;
    let q = embed_query(&model, &tokenizer, config, &device, query)?;
    let sub = match query {
        Query::Image(_) => REPORTS_INDEX,
        Query::Report(_) => IMAGES_INDEX,
    };
    let index = GaussianIndex::open(&index_dir.join(sub))?;
    if index.info().distance != config.distance() {
        return Err(TrainError::config(
            "index",
            format!(
                "{} ranks by {:?}, the checkpoint's method by {:?}",
                index_dir.join(sub).display(),
                index.info().distance,
                config.distance()
            ),
        ));
    }
    let a = index
        .answer(&q, k, &TopKOptions::default())?
        .pop()
        .expect("one query, one answer");
    let info = index.info();
    let items = read_index_items(index_dir)?;
    Ok(Answer {
        confidence: a.hits.first().and_then(|h| h.probability).unwrap_or(0.0),
        hits: a
            .hits
            .into_iter()
            .map(|h| {
                let item = items.get(&h.id);
                Hit::new(
                    h.id.clone(),
                    h.distance as f64,
                    h.probability.unwrap_or(f64::NAN),
                    item,
                    query,
                    truth,
                )
            })
            .collect(),
        uncertainty: config.method.probabilistic().then_some(a.uncertainty),
        answered: a.answered,
        threshold: info.answer_rule.threshold(),
        guarantee: info.guarantee.clone().unwrap_or_default(),
        calibration: info.relevance.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_by_name() {
        let labels = medprob_data::CHEXPERT_LABELS;
        let bit = |name: &str| 1u32 << labels.iter().position(|l| *l == name).unwrap();
        assert_eq!(
            parse_label_set("pleural effusion; Cardiomegaly").unwrap(),
            bit("Pleural Effusion") | bit("Cardiomegaly")
        );
        assert_eq!(parse_label_set("").unwrap(), bit("No Finding"));
        let e = parse_label_set("Pleural Effusion;Effusion")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"Effusion\"") && e.contains("Cardiomegaly"),
            "{e}"
        );
    }

    #[test]
    fn index_rules_answer_what_the_selector_answers() {
        assert_eq!(answer_rule(&Selector::ABSTAIN), AnswerRule::Never);
        let all = Selector {
            threshold: f64::NEG_INFINITY,
            inclusive: false,
        };
        assert_eq!(answer_rule(&all), AnswerRule::Always);
        let strict = Selector {
            threshold: 0.25,
            inclusive: false,
        };
        let rule = answer_rule(&strict);
        assert!(!rule.answers(Some(0.25)) && rule.answers(Some(0.25f64.next_up())));
        let inclusive = Selector {
            threshold: 0.25,
            inclusive: true,
        };
        assert!(answer_rule(&inclusive).answers(Some(0.25)));
    }
}
