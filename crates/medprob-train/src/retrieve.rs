//! Answer one query (an image or a report) against a gallery of studies, with match
//! probabilities, the query's uncertainty and an answer/abstain decision whose risk is
//! controlled: the threshold comes from selection with guaranteed risk on the validation
//! split (SPEC §7), and the answer says which guarantee it carries.

use std::path::Path;

use candle_core::Device;
use medprob_core::{kernels, TopKOptions};
use medprob_data::image::{decode, eval_transform};
use medprob_data::tokenize::ReportTokenizer;
use medprob_encoders::MedProbModel;
use medprob_metrics::confidence::{confidences, ConfidenceKind};
use medprob_metrics::posthoc::Platt;
use medprob_metrics::ranking::{rank_both_ways, top1_outcomes};
use medprob_metrics::selective::{selection_with_guaranteed_risk, Guarantee, Selector};
use serde::Serialize;

use crate::config::TrainConfig;
use crate::encode::{embed_split, embed_texts, to_gaussian, SplitEmbeddings};
use crate::error::{Result, TrainError};
use crate::objective::image_tensor;
use crate::pipeline::load_checkpoint;
use crate::setup::{loader, loader_config, read_splits};

/// What is asked.
#[derive(Debug, Clone)]
pub enum Query {
    /// A radiograph file: find its reports.
    Image(std::path::PathBuf),
    /// A report text: find its images.
    Report(String),
}

/// One retrieved study.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub study_id: String,
    pub distance: f64,
    /// Calibrated probability that this is the query's match.
    pub probability: f64,
    /// The report (image queries) or the image path (report queries).
    pub item: String,
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
}

/// A model, a gallery and a calibrated abstention rule.
pub struct Retriever {
    model: MedProbModel,
    tokenizer: ReportTokenizer,
    config: TrainConfig,
    device: Device,
    gallery_images: SplitEmbeddings,
    gallery_items: Vec<(String, String, String)>,
    platt: Platt,
    image_rule: (Selector, Guarantee),
    report_rule: (Selector, Guarantee),
    k: usize,
}

impl Retriever {
    /// Load `checkpoint`, embed the `gallery_split` of `config.data.studies` as the
    /// gallery, and calibrate the answer rule on its validation split: answer when the
    /// top-1 probability clears the threshold that bounds `P(best match not in the top
    /// k | answered) ≤ alpha` with probability `≥ 1 − delta`.
    pub fn new(
        config: &TrainConfig,
        checkpoint: &Path,
        gallery_split: medprob_data::Split,
        k: usize,
        alpha: f64,
        delta: f64,
    ) -> Result<Self> {
        let device = config.device.device()?;
        let (model, tokenizer) = load_checkpoint(checkpoint, config.data.max_tokens, &device)?;
        let splits = read_splits(&config.data.studies, &config.data.limits)?;
        let gallery = match gallery_split {
            medprob_data::Split::Train => splits.train,
            medprob_data::Split::Validate => splits.validate.clone(),
            medprob_data::Split::Test => splits.test,
        };
        if gallery.is_empty() {
            return Err(TrainError::Input {
                path: config.data.studies.clone(),
                reason: format!("no study has split = {gallery_split:?}"),
            });
        }
        let size = config.data.image_size;
        let g_loader = loader(config, gallery, false)?;
        let gallery_images = embed_split(&model, &tokenizer, &g_loader, size, None, &device)?;
        let gallery_items = gallery_images
            .study_index
            .iter()
            .map(|&i| {
                let s = &g_loader.studies()[i];
                let report = medprob_data::sampling::evaluation_text(s)
                    .unwrap_or_default()
                    .to_string();
                let image = medprob_data::sampling::evaluation_view(s)
                    .map(|v| s.image_paths[v].display().to_string())
                    .unwrap_or_default();
                (s.study_id.clone(), report, image)
            })
            .collect();

        let v_loader = loader(config, splits.validate, false)?;
        let val = embed_split(&model, &tokenizer, &v_loader, size, None, &device)?;
        let ids = &val.study_ids;
        let (i2t, t2i) = rank_both_ways(
            config.distance(),
            &val.images,
            ids,
            &val.texts,
            ids,
            &TopKOptions::default(),
        )?;
        let (s, y) = top1_outcomes(&i2t);
        let platt = Platt::fit(&s, &y)?;
        let logit = |x: f64| platt.scale * -x + platt.shift;
        let rule =
            |ranks: &[medprob_metrics::ranking::QueryRank]| -> Result<(Selector, Guarantee)> {
                let conf = confidences(ConfidenceKind::Top1Probability, ranks, logit, None)
                    .expect("top-1 probability needs no variance");
                let wrong: Vec<bool> = ranks.iter().map(|r| !r.hit(k)).collect();
                let sel = selection_with_guaranteed_risk(&conf, &wrong, alpha, delta)?;
                Ok((
                    sel,
                    Guarantee::SelectiveRiskWithProbability { alpha, delta },
                ))
            };
        Ok(Self {
            image_rule: rule(&i2t)?,
            report_rule: rule(&t2i)?,
            model,
            tokenizer,
            config: config.clone(),
            device,
            gallery_images,
            gallery_items,
            platt,
            k,
        })
    }

    /// Answer one query.
    pub fn query(&self, query: &Query) -> Result<Answer> {
        let (q, gallery, rule) = match query {
            Query::Image(path) => {
                let img = decode(path)?;
                let t = &loader_config(&self.config, false).image;
                let x = image_tensor(
                    &[&eval_transform(&img, t)],
                    self.config.data.image_size,
                    &self.device,
                )?;
                (
                    to_gaussian(&self.model.encode_images(&x, false)?)?,
                    &self.gallery_images.texts,
                    &self.image_rule,
                )
            }
            Query::Report(text) => (
                embed_texts(
                    &self.model,
                    &self.tokenizer,
                    std::slice::from_ref(text),
                    &self.device,
                )?,
                &self.gallery_images.images,
                &self.report_rule,
            ),
        };
        let top = kernels::top_k(
            self.config.distance(),
            &q,
            gallery,
            self.k,
            &TopKOptions::default(),
        )?;
        let hits: Vec<Hit> = top
            .indices
            .row(0)
            .iter()
            .zip(top.distances.row(0))
            .map(|(&j, &d)| {
                let (id, report, image) = &self.gallery_items[j];
                Hit {
                    study_id: id.clone(),
                    distance: d as f64,
                    probability: self.platt.probability(-(d as f64)),
                    item: match query {
                        Query::Image(_) => report.clone(),
                        Query::Report(_) => image.clone(),
                    },
                }
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
            guarantee: format!(
                "{} (loss: best match not in the top {})",
                guarantee.describe(),
                self.k
            ),
            hits,
            uncertainty,
            confidence,
        })
    }

    /// Number of gallery studies.
    pub fn gallery_len(&self) -> usize {
        self.gallery_items.len()
    }
}
