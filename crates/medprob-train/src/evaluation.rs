//! Evaluate a trained model on a test split with the full reliability suite: retrieval,
//! label-aware retrieval, zero-shot classification, calibration, risk–coverage,
//! selective retrieval with guarantees and robustness to image corruptions.

use candle_core::Device;
use medprob_core::TopKOptions;
use medprob_data::loader::StudyLoader;
use medprob_data::tokenize::ReportTokenizer;
use medprob_data::{Label, StudyRecord};
use medprob_encoders::MedProbModel;
use medprob_metrics::corruption::{Corruption, SEVERITIES};
use medprob_metrics::evaluate::{
    evaluate_retrieval, robustness_entry, EvaluationConfig, Scoring, Split,
};
use medprob_metrics::hubness::HubCorrection;
use medprob_metrics::oracle::{group_oracle_recall, OracleRecall};
use medprob_metrics::report::MethodReport;
use medprob_metrics::zero_shot::{
    corpus_prompts, zero_shot, CorpusPromptOptions, LabelledReport, PromptScoring, PromptSet,
    ZeroShotReport, FINDINGS,
};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::encode::{embed_images, embed_split, embed_texts, SplitEmbeddings};
use crate::error::{Result, TrainError};

/// The K of the retrievals written beside an evaluation (`test_top10.json`).
pub const TOP_RETRIEVALS: usize = 10;

/// What to evaluate beyond retrieval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalOptions {
    /// Metric settings (block sizes, risk levels).
    pub metrics: EvaluationConfig,
    /// Zero-shot classification of the 13 findings (needs labels).
    pub zero_shot: bool,
    /// Corruptions for the robustness report (all seven at severities 1–5 by default).
    pub corruptions: Vec<Corruption>,
    /// Retrieval-time hub correction (CSLS against the validation split's queries),
    /// applied to every method alike; the report keeps the uncorrected figures beside
    /// (`MethodReport::raw`, `<key>_raw` in summary.json). `None`: rank raw distances.
    pub hub_correction: Option<HubCorrection>,
    /// Zero-shot prompts mined from the training reports with these settings (the
    /// generic templates are reported beside them); `None`: the generic templates only.
    /// Training reports without labels give the generic templates too.
    pub corpus_prompts: Option<CorpusPromptOptions>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            metrics: EvaluationConfig::default(),
            zero_shot: true,
            corruptions: Corruption::ALL.to_vec(),
            hub_correction: Some(HubCorrection::default()),
            corpus_prompts: Some(CorpusPromptOptions::default()),
        }
    }
}

impl EvalOptions {
    /// The defaults, with or without the robustness sweep.
    pub fn with_robustness(robustness: bool) -> Self {
        let d = Self::default();
        Self {
            corruptions: if robustness {
                d.corruptions
            } else {
                Vec::new()
            },
            ..d
        }
    }
}

/// The 14 CheXpert labels of a study as a bit mask (bit `c` = label `c` positive).
pub fn label_mask(study: &StudyRecord) -> Option<u32> {
    study.labels.map(|l| {
        l.iter().enumerate().fold(0u32, |m, (c, v)| {
            m | (u32::from(*v == Label::Positive) << c)
        })
    })
}

/// Zero-shot ground truth for one finding: positive; negative when negated or not
/// mentioned; uncertain mentions are left out.
fn finding_label(study: &StudyRecord, finding: &str) -> Option<bool> {
    let c = medprob_data::CHEXPERT_LABELS
        .iter()
        .position(|&l| l == finding)?;
    match study.labels?[c] {
        Label::Positive => Some(true),
        Label::Negative | Label::Blank => Some(false),
        Label::Uncertain => None,
    }
}

/// The first [`TOP_RETRIEVALS`] gallery study ids of every test query, both ways (query
/// study id → gallery study ids, nearest first): enough to recompute every recall and
/// plausible-match figure from the study CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retrievals {
    pub i2t: std::collections::BTreeMap<String, Vec<String>>,
    pub t2i: std::collections::BTreeMap<String, Vec<String>>,
}

/// What [`evaluate`] measured: the report, the test retrievals and the oracle references
/// of the test split.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub report: MethodReport,
    pub retrievals: Retrievals,
    pub oracles: Vec<OracleRecall>,
}

/// The SynthCXR ground truth beside a study CSV (`state.jsonl`), aligned with `studies`;
/// `None` when there is no such file. A file that does not describe every study is an
/// error naming it and the study.
pub fn ground_truth(
    csv: &std::path::Path,
    studies: &[StudyRecord],
) -> Result<Option<Vec<medprob_data::synth::truth::StudyTruth>>> {
    let path = csv
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(medprob_data::synth::truth::TRUTH_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    Ok(Some(medprob_data::synth::truth::read_truth(
        &path, studies,
    )?))
}

/// The group oracles of a test split (module [`medprob_metrics::oracle`]): by positive
/// label set, and by hidden state where known.
fn oracles(labels: Option<&[u32]>, states: Option<&[String]>) -> Result<Vec<OracleRecall>> {
    let ks = [1, 5, 10];
    let mut out = Vec::new();
    if let Some(l) = labels {
        out.push(group_oracle_recall("labels", l, &ks)?);
    }
    if let Some(s) = states {
        out.push(group_oracle_recall("state", s, &ks)?);
    }
    Ok(out)
}

fn top_retrievals(
    config: &TrainConfig,
    tst: &SplitEmbeddings,
    blocks: &TopKOptions,
) -> Result<Retrievals> {
    let ids = &tst.study_ids;
    let one_way = |q: &medprob_core::GaussianEmbeddings, g: &medprob_core::GaussianEmbeddings| {
        let top = medprob_core::kernels::top_k(
            config.distance(),
            q,
            g,
            TOP_RETRIEVALS.min(g.len()),
            blocks,
        )?;
        Ok::<_, TrainError>(
            ids.iter()
                .zip(top.indices.rows())
                .map(|(id, row)| (id.clone(), row.iter().map(|&j| ids[j].clone()).collect()))
                .collect(),
        )
    };
    Ok(Retrievals {
        i2t: one_way(&tst.images, &tst.texts)?,
        t2i: one_way(&tst.texts, &tst.images)?,
    })
}

/// Evaluate `model` on `test`, with `validation` used to fit the match probability and
/// the selective-retrieval thresholds. Where the study CSV has a SynthCXR ground truth
/// beside it (`state.jsonl`), plausible figures are also reported by state agreement; the
/// ground truth is read for evaluation only.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &MedProbModel,
    tokenizer: &ReportTokenizer,
    config: &TrainConfig,
    validation: &StudyLoader,
    test: &StudyLoader,
    train: &[StudyRecord],
    options: &EvalOptions,
    device: &Device,
    mut progress: impl FnMut(&str),
) -> Result<Evaluated> {
    let size = config.data.image_size;
    progress("embedding validation and test splits");
    let val_raw = embed_split(model, tokenizer, validation, size, None, device)?;
    let tst_raw = embed_split(model, tokenizer, test, size, None, device)?;
    // The hub correction: each split's galleries get CSLS offsets against the validation
    // queries of the other modality (images are the bank of report galleries, reports of
    // image galleries). Offsets only act where a batch is the gallery.
    let (val, tst) = match &options.hub_correction {
        Some(h) => (
            val_raw.hub_corrected(h, config.distance(), &val_raw)?,
            tst_raw.hub_corrected(h, config.distance(), &val_raw)?,
        ),
        None => (val_raw.clone(), tst_raw.clone()),
    };
    let keys = |e: &SplitEmbeddings| -> Vec<u64> { (0..e.study_ids.len() as u64).collect() };
    let labels = |e: &SplitEmbeddings, loader: &StudyLoader| -> Option<Vec<u32>> {
        e.study_index
            .iter()
            .map(|&i| label_mask(&loader.studies()[i]))
            .collect()
    };
    // The ground truth of both splits' evaluated studies, from one read of the file.
    let studies: Vec<StudyRecord> = [(&val, validation), (&tst, test)]
        .iter()
        .flat_map(|(e, loader)| e.study_index.iter().map(|&i| loader.studies()[i].clone()))
        .collect();
    let (vs, ts) = match ground_truth(&config.data.studies, &studies)? {
        Some(truth) => {
            let mut keys: Vec<String> = truth.iter().map(|t| t.state_key()).collect();
            let test_keys = keys.split_off(val.study_index.len());
            (Some(keys), Some(test_keys))
        }
        None => (None, None),
    };
    let (vk, tk) = (keys(&val), keys(&tst));
    let (vl, tl) = (labels(&val, validation), labels(&tst, test));
    let label_names: Vec<&str> = medprob_data::CHEXPERT_LABELS.to_vec();
    let scoring = Scoring {
        distance: config.distance(),
        probabilistic: config.method.probabilistic(),
    };
    let v = Split {
        images: &val.images,
        image_keys: &vk,
        texts: &val.texts,
        text_keys: &vk,
        image_labels: vl.as_deref(),
        text_labels: vl.as_deref(),
        label_names: &label_names,
        image_states: vs.as_deref(),
        text_states: vs.as_deref(),
    };
    let t = Split {
        images: &tst.images,
        image_keys: &tk,
        texts: &tst.texts,
        text_keys: &tk,
        image_labels: tl.as_deref(),
        text_labels: tl.as_deref(),
        label_names: &label_names,
        image_states: ts.as_deref(),
        text_states: ts.as_deref(),
    };
    progress("retrieval, calibration, risk–coverage and selective retrieval");
    let score_name = if scoring.probabilistic {
        format!("{:?}", scoring.distance).to_uppercase()
    } else {
        "cosine".into()
    };
    let mut report = evaluate_retrieval(
        config.method.display_name(),
        &score_name,
        scoring,
        &v,
        &t,
        &options.metrics,
    )?;
    if let Some(h) = options.hub_correction {
        let vr = Split {
            images: &val_raw.images,
            texts: &val_raw.texts,
            ..v
        };
        let tr = Split {
            images: &tst_raw.images,
            texts: &tst_raw.texts,
            ..t
        };
        let raw = evaluate_retrieval(
            config.method.display_name(),
            &score_name,
            scoring,
            &vr,
            &tr,
            &options.metrics,
        )?;
        report.hub_correction = Some(h);
        report.raw = Some(Box::new(raw));
    }

    if options.zero_shot && tl.is_some() {
        progress("zero-shot classification");
        let generic: Vec<PromptSet> = FINDINGS.iter().map(|f| PromptSet::generic(f)).collect();
        // Prompts are scored by distance alone: a prompt's variance says how many images
        // it fits, not whether this image shows the finding.
        let probability = report
            .distance_probability
            .unwrap_or(report.match_probability);
        let scored = |sets: &[PromptSet]| {
            zero_shot_report(
                model,
                tokenizer,
                config,
                test,
                &tst,
                probability,
                sets,
                device,
            )
        };
        let mined = options
            .corpus_prompts
            .and_then(|o| mine_prompts(train, o).map(|sets| (o, sets)));
        match mined {
            Some((o, sets)) => {
                let mut z = scored(&sets)?;
                z.mined_with = Some(o);
                report.zero_shot = Some(z);
                report.zero_shot_generic = Some(scored(&generic)?);
            }
            None => report.zero_shot = Some(scored(&generic)?),
        }
        // Zero-shot scores images against prompts, which no hub correction touches.
        if let Some(raw) = report.raw.as_mut() {
            raw.zero_shot = report.zero_shot.clone();
            raw.zero_shot_generic = report.zero_shot_generic.clone();
        }
    }

    let blocks = TopKOptions::default();
    let retrievals = top_retrievals(config, &tst, &blocks)?;
    let oracles = oracles(tl.as_deref(), ts.as_deref())?;
    report.robustness.push(robustness_entry(
        None,
        scoring,
        report.match_probability,
        &tst.images,
        &tk,
        &tst.texts,
        &tk,
        &blocks,
    )?);
    for &c in &options.corruptions {
        progress(&format!("robustness: {}", c.name()));
        for s in SEVERITIES {
            let e = embed_images(model, test, size, Some((c, s)), device)?;
            report.robustness.push(robustness_entry(
                Some((c, s)),
                scoring,
                report.match_probability,
                &e.images,
                &tk,
                &tst.texts,
                &tk,
                &blocks,
            )?);
        }
    }
    Ok(Evaluated {
        report,
        retrievals,
        oracles,
    })
}

/// Zero-shot prompts in the training reports' own words ([`corpus_prompts`]), from every
/// sentence of FINDINGS and IMPRESSION; `None` when no training report has labels.
pub fn mine_prompts(train: &[StudyRecord], options: CorpusPromptOptions) -> Option<Vec<PromptSet>> {
    let reports: Vec<LabelledReport> = train
        .iter()
        .filter(|s| s.labels.is_some())
        .map(|s| LabelledReport {
            sentences: [&s.findings, &s.impression]
                .iter()
                .flat_map(|t| medprob_data::sampling::split_sentences(t))
                .map(str::to_string)
                .collect(),
            labels: FINDINGS.iter().map(|f| finding_label(s, f)).collect(),
        })
        .collect();
    (!reports.is_empty()).then(|| corpus_prompts(&FINDINGS, &reports, options))
}

#[allow(clippy::too_many_arguments)]
fn zero_shot_report(
    model: &MedProbModel,
    tokenizer: &ReportTokenizer,
    config: &TrainConfig,
    test: &StudyLoader,
    tst: &SplitEmbeddings,
    probability: medprob_core::MatchProbability,
    sets: &[PromptSet],
    device: &Device,
) -> Result<ZeroShotReport> {
    let (n, f) = (tst.images.len(), sets.len());
    let mut pos = Array2::<f64>::zeros((n, f));
    let mut neg = Array2::<f64>::zeros((n, f));
    let mut labels = Array2::<Option<bool>>::from_elem((n, f), None);
    let probabilistic = config.method.probabilistic();
    let temperature = (-model.logit_scale()?.flatten_all()?.to_vec1::<f32>()?[0] as f64).exp();
    for (c, set) in sets.iter().enumerate() {
        for (prompts, out) in [(&set.positive, &mut pos), (&set.negative, &mut neg)] {
            let e = embed_texts(model, tokenizer, prompts, device)?;
            let scores: Array2<f64> = if probabilistic {
                let d = medprob_core::kernels::pairwise(config.distance(), &tst.images, &e)?;
                d.mapv(|d| probability.probability(d as f64))
            } else {
                tst.images.mean().dot(&e.mean().t()).mapv(f64::from)
            };
            for i in 0..n {
                out[[i, c]] = scores.row(i).mean().unwrap_or(0.0);
            }
        }
        for (i, &s) in tst.study_index.iter().enumerate() {
            labels[[i, c]] = finding_label(&test.studies()[s], &set.finding);
        }
    }
    let scoring = if probabilistic {
        PromptScoring::Probability
    } else {
        PromptScoring::Cosine { temperature }
    };
    let findings: Vec<&str> = sets.iter().map(|s| s.finding.as_str()).collect();
    let mut z = zero_shot(&findings, pos.view(), neg.view(), labels.view(), scoring)?;
    z.prompts = sets.to_vec();
    Ok(z)
}
