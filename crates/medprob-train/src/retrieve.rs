//! Answer one query (an image or a report) against a gallery of studies, with match
//! probabilities, the query's uncertainty and an answer/abstain decision whose risk is
//! controlled: the threshold comes from selection with guaranteed risk on the validation
//! split (SPEC §7), and the answer says which guarantee it carries.

use std::path::Path;

use candle_core::Device;
use medprob_core::{
    kernels, GaussianEmbeddings, GaussianIndex, GaussianIndexWriter, IndexInfo, MatchProbability,
    TopKOptions,
};
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
    /// The report (image queries) or the image path (report queries); empty for answers
    /// from an index, which stores ids only.
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
    /// Platt scaling of the validation split's top-1 outcomes, as a match probability
    /// (slope floored at 1e-3 like every match probability, so a fit in which distance
    /// does not predict a match still gives probabilities that fall with distance). The
    /// indexes [`Retriever::write_indexes`] writes store exactly this.
    calibration: MatchProbability,
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
        let calibration = MatchProbability::new(platt.scale, platt.shift)?;
        let logit = |x: f64| calibration.logit(x);
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
            calibration,
            k,
        })
    }

    /// Answer one query.
    pub fn query(&self, query: &Query) -> Result<Answer> {
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
                    probability: self.calibration.probability(d as f64),
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
            .map(|(id, _, _)| id.as_str())
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
                answer_threshold: Some(inclusive_threshold(selector)),
                guarantee: Some(format!(
                    "{} (loss: best match not in the top {})",
                    guarantee.describe(),
                    self.k
                )),
            };
            let mut w = GaussianIndexWriter::create(&dir.join(name), info)?;
            w.push(gallery, &ids)?;
            w.finish()?;
        }
        Ok(())
    }
}

/// Sub-folder of [`Retriever::write_indexes`] holding the reports (for image queries).
pub const REPORTS_INDEX: &str = "reports";
/// Sub-folder of [`Retriever::write_indexes`] holding the images (for report queries).
pub const IMAGES_INDEX: &str = "images";

/// The threshold `t` such that `p ≥ t` answers exactly what `selector` answers (an index
/// stores one inclusive threshold; "answer nothing" becomes one no probability reaches).
fn inclusive_threshold(selector: &Selector) -> f64 {
    let t = selector.threshold;
    if t == f64::INFINITY {
        f64::MAX
    } else if t == f64::NEG_INFINITY {
        -f64::MAX
    } else if selector.inclusive {
        t
    } else {
        t.next_up()
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
    Ok(Answer {
        confidence: a.hits.first().and_then(|h| h.probability).unwrap_or(0.0),
        hits: a
            .hits
            .into_iter()
            .map(|h| Hit {
                study_id: h.id,
                distance: h.distance as f64,
                probability: h.probability.unwrap_or(f64::NAN),
                item: String::new(),
            })
            .collect(),
        uncertainty: config.method.probabilistic().then_some(a.uncertainty),
        answered: a.answered,
        threshold: info.answer_threshold.filter(|t| *t <= 1.0),
        guarantee: info.guarantee.clone().unwrap_or_default(),
    })
}
