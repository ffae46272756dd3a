//! Section pairs: a text tower trained on a report's two sections, findings ↔ impression,
//! as the two "views" of SPEC §4's intra-modal text term `ℓ(T1, T2)`, with a
//! probabilistic (MedProbCLIP-style: MLS, closed-form match logits, VIB) or a
//! deterministic (CLIP-style: unit-norm embeddings, InfoNCE) head.
//!
//! This is the real-text half of MedProbCLIP without images: it asks whether a
//! probabilistic text embedding gives ambiguous sections (the 302 IU studies whose
//! impression is exactly "No acute cardiopulmonary abnormality.") high uncertainty, and
//! whether that uncertainty predicts retrieval errors.
//!
//! * **Ground truth is duplicate-aware.** Two studies whose impressions are the same text
//!   (after [`normalise_section`]) are both correct answers for either's findings, in
//!   training targets and in evaluation alike.
//! * **Backbones.** A pretrained BERT (all-MiniLM-L6-v2) is used *frozen*: its
//!   mean-pooled features are computed once per distinct text and a two-layer adapter and
//!   the head are trained on them, so a run takes seconds rather than the hour full
//!   fine-tuning would take on two CPU cores. A tiny BERT is trained from scratch, whole,
//!   on WordPiece tokens learnt from the training split.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Module;
use indicatif::{ProgressBar, ProgressStyle};
use medprob_core::tensor::{self, GaussianTensor};
use medprob_core::{Distance, GaussianEmbeddings};
use medprob_data::tokenize::ReportTokenizer;
use medprob_data::StudyRecord;
use medprob_encoders::heads::{DeterministicHead, ProbabilisticHead};
use medprob_encoders::ops::{gelu_erf, Linear};
use medprob_encoders::{BertConfig, BertEncoder, Pooling, SeededVarMap};
use medprob_losses::clip::clip_loss;
use medprob_losses::ops::multi_positive_cross_entropy;
use medprob_losses::targets;
use medprob_losses::vib::{vib_kl, VibReduction};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optim::{clip_global_norm, collect_grads, AdamW, OptimConfig};

/// One study's two sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionPair {
    /// The study id.
    pub study_id: String,
    pub findings: String,
    pub impression: String,
    /// CheXpert label bit mask (bit `c` = label `c` positive), when the study has labels.
    pub labels: Option<u32>,
}

/// The studies with both sections non-empty, in input order.
pub fn section_pairs(studies: &[StudyRecord]) -> Vec<SectionPair> {
    studies
        .iter()
        .filter(|s| !s.findings.trim().is_empty() && !s.impression.trim().is_empty())
        .map(|s| SectionPair {
            study_id: s.study_id.clone(),
            findings: s.findings.clone(),
            impression: s.impression.clone(),
            labels: crate::evaluation::label_mask(s),
        })
        .collect()
}

/// The key two sections share when they are "the same text": lower-case, letters and
/// digits only, single spaces ("No acute cardiopulmonary abnormality." and "no acute
/// cardiopulmonary abnormality" are one key).
pub fn normalise_section(text: &str) -> String {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Train, validation and test sets, split by study with a seeded shuffle.
#[derive(Debug, Clone)]
pub struct SectionSplits {
    pub train: Vec<SectionPair>,
    pub validation: Vec<SectionPair>,
    pub test: Vec<SectionPair>,
}

/// Shuffle `pairs` with `seed` and cut off `validation` and `test` shares (each in
/// `(0, 0.5)`); the rest trains. A study id that appears twice is an error.
pub fn split_pairs(
    pairs: &[SectionPair],
    seed: u64,
    validation: f64,
    test: f64,
) -> Result<SectionSplits> {
    for (name, share) in [("validation", validation), ("test", test)] {
        if !(share > 0.0 && share < 0.5) {
            return Err(TrainError::config(
                "sections split",
                format!("the {name} share must be in (0, 0.5), got {share}"),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = pairs.iter().find(|p| !seen.insert(p.study_id.as_str())) {
        return Err(TrainError::config(
            "sections split",
            format!("study {:?} appears twice", dup.study_id),
        ));
    }
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let n_val = (pairs.len() as f64 * validation).round() as usize;
    let n_test = (pairs.len() as f64 * test).round() as usize;
    let take = |r: std::ops::Range<usize>| -> Vec<SectionPair> {
        order[r].iter().map(|&i| pairs[i].clone()).collect()
    };
    Ok(SectionSplits {
        test: take(0..n_test),
        validation: take(n_test..n_test + n_val),
        train: take(n_test + n_val..pairs.len()),
    })
}

/// Where a section tower's features come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SectionBackbone {
    /// A pretrained BERT folder (or Hugging Face hub id), frozen, mean-pooled; an adapter
    /// `hidden → hidden → hidden` (GELU) is trained on its features.
    Frozen { source: String },
    /// A BERT of this size trained from scratch, with a WordPiece vocabulary learnt from
    /// the training sections.
    Tiny {
        vocab_size: usize,
        hidden_size: usize,
        layers: usize,
        heads: usize,
    },
}

/// Everything that defines one section-pair run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionConfig {
    pub backbone: SectionBackbone,
    /// MLS + match logits + VIB (true) or unit-norm + InfoNCE (false).
    pub probabilistic: bool,
    /// Embedding dimension.
    pub embed_dim: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub optim: OptimConfig,
    /// VIB weight β (MedProbCLIP reduction: sum over dimensions, mean over the batch).
    pub vib_beta: f64,
    /// Tokens per section.
    pub max_tokens: usize,
    /// Added to the head's log-variance (`v = offset + proj(x)`): where variances start.
    pub log_variance_offset: f64,
    /// Seeds the initialisation, the batch order and dropout.
    pub seed: u64,
}

impl SectionConfig {
    /// Defaults for a backbone and head kind.
    pub fn new(backbone: SectionBackbone, probabilistic: bool, seed: u64) -> Self {
        // A tiny BERT reads 64 tokens (most IU findings are shorter) so that three seeds
        // of both heads fit the study's budget on two cores.
        let (lr, epochs, max_tokens) = match backbone {
            SectionBackbone::Frozen { .. } => (3e-3, 20, 128),
            SectionBackbone::Tiny { .. } => (1e-3, 6, 64),
        };
        Self {
            backbone,
            probabilistic,
            embed_dim: 64,
            epochs,
            batch_size: 64,
            optim: OptimConfig {
                lr,
                weight_decay: 1e-4,
                warmup_fraction: 0.05,
                ..OptimConfig::default()
            },
            vib_beta: 1e-4,
            max_tokens,
            log_variance_offset: 0.0,
            seed,
        }
    }

    /// A short name: "MiniLM (frozen) · probabilistic".
    pub fn name(&self) -> String {
        let b = match &self.backbone {
            SectionBackbone::Frozen { .. } => "MiniLM-L6 (frozen) + adapter",
            SectionBackbone::Tiny { .. } => "tiny BERT (from scratch)",
        };
        let h = if self.probabilistic {
            "probabilistic"
        } else {
            "deterministic"
        };
        format!("{b} · {h}")
    }

    fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(TrainError::config(field, why.to_string()));
        if self.embed_dim == 0 {
            return bad("embed_dim", "must be ≥ 1");
        }
        if self.epochs == 0 {
            return bad("epochs", "must be ≥ 1");
        }
        if self.batch_size < 2 {
            return bad("batch_size", "a contrastive batch needs at least 2 pairs");
        }
        if !(self.vib_beta >= 0.0 && self.vib_beta.is_finite()) {
            return bad("vib_beta", "must be finite and ≥ 0");
        }
        self.optim.validate()
    }
}

/// Mean-pooled features of a frozen pretrained BERT: computed once for the texts a study
/// names and shared by every tower (and seed) built on that backbone; any other text is
/// encoded when it is asked for.
#[derive(Clone)]
pub struct FrozenFeatures {
    /// The backbone they came from ([`SectionBackbone::Frozen`]'s `source`).
    pub source: String,
    encoder: std::sync::Arc<BertEncoder>,
    tokenizer: std::sync::Arc<ReportTokenizer>,
    index: HashMap<String, usize>,
    table: Tensor,
}

impl FrozenFeatures {
    /// Load the BERT at `source` (a folder, else a Hugging Face hub id) and compute the
    /// features of every distinct text in `texts`, `max_tokens` tokens each.
    pub fn compute(
        source: &str,
        texts: &[&str],
        max_tokens: usize,
        device: &Device,
        progress: bool,
    ) -> Result<Self> {
        let folder = crate::setup::pretrained_folder(source)?;
        let tokenizer = crate::setup::folder_tokenizer(&folder, max_tokens)?;
        let encoder = folder.load_bert(DType::F32, device, 0)?;
        let mut distinct: Vec<&str> = texts.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        // Similar lengths together: less padding per batch.
        distinct.sort_by_key(|t| t.len());
        let bar = if progress {
            let b = ProgressBar::new(distinct.len() as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "frozen features [{bar:30}] {pos}/{len} texts, eta {eta}",
                )
                .expect("valid template"),
            );
            b
        } else {
            ProgressBar::hidden()
        };
        let mut rows = Vec::with_capacity(distinct.len().div_ceil(64));
        for chunk in distinct.chunks(64) {
            rows.push(encode_frozen(&encoder, &tokenizer, chunk, device)?);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        let table = if rows.is_empty() {
            Tensor::zeros((0, encoder.config().hidden_size), DType::F32, device)?
        } else {
            Tensor::cat(&rows, 0)?
        };
        let index = distinct
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i))
            .collect();
        Ok(Self {
            source: source.to_string(),
            encoder: std::sync::Arc::new(encoder),
            tokenizer: std::sync::Arc::new(tokenizer),
            index,
            table,
        })
    }

    /// Feature width (the BERT's hidden size).
    pub fn width(&self) -> usize {
        self.table.dims()[1]
    }

    /// Number of distinct texts computed up front.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no text was computed up front.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Features `[B, width]` of `texts`: looked up, or encoded now when any is new.
    pub fn features(&self, texts: &[&str]) -> Result<Tensor> {
        let device = self.table.device();
        let rows: Option<Vec<u32>> = texts
            .iter()
            .map(|t| self.index.get(*t).map(|&i| i as u32))
            .collect();
        match rows {
            Some(rows) => {
                let ids = Tensor::from_vec(rows, texts.len(), device)?;
                Ok(self.table.index_select(&ids, 0)?)
            }
            None => encode_frozen(&self.encoder, &self.tokenizer, texts, device),
        }
    }
}

/// Mean-pooled, detached features of `texts` under a frozen encoder.
fn encode_frozen(
    encoder: &BertEncoder,
    tokenizer: &ReportTokenizer,
    texts: &[&str],
    device: &Device,
) -> Result<Tensor> {
    let (ids, mask) = crate::objective::text_tensors(tokenizer, texts, device)?;
    let hidden = encoder.forward(&ids, &mask, false)?;
    Ok(BertEncoder::pool(&hidden, &mask, Pooling::Mean)?.detach())
}

/// Text → features, the part of the tower before the head.
enum Features {
    /// Frozen pretrained features and the trainable adapter.
    Frozen {
        frozen: FrozenFeatures,
        adapter: (Linear, Linear),
    },
    /// A trainable BERT with its tokenizer.
    Tiny {
        encoder: Box<BertEncoder>,
        tokenizer: Box<ReportTokenizer>,
    },
}

/// The learnable scalars of the pair scores.
enum Scores {
    /// `a` and `b` of the match logits `−a·d + b`.
    MatchLogits { scale: Tensor, shift: Tensor },
    /// CLIP's log-temperature.
    Temperature(Tensor),
}

enum Head {
    Probabilistic(ProbabilisticHead),
    Deterministic(DeterministicHead),
}

/// A trained (or training) section tower.
pub struct SectionTower {
    config: SectionConfig,
    vars: SeededVarMap,
    features: Features,
    head: Head,
    /// MLS match logits `−a·d + b` (probabilistic) or the CLIP temperature.
    scores: Scores,
    device: Device,
}

/// What a run printed per epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub mean_loss: f64,
}

impl SectionTower {
    /// A fresh tower for `config`. `train` is the training split (the tiny BERT's
    /// vocabulary is learnt from it). A frozen backbone needs `frozen`, the features of
    /// every text the tower will embed, computed by [`FrozenFeatures::compute`] from the
    /// same source.
    pub fn new(
        config: &SectionConfig,
        train: &[SectionPair],
        frozen: Option<&FrozenFeatures>,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let vars = SeededVarMap::new(config.seed);
        let vb = vars.builder(DType::F32, device);
        let (features, width) = match &config.backbone {
            SectionBackbone::Frozen { source } => {
                let frozen = match frozen {
                    Some(f) if f.source == *source => f.clone(),
                    _ => {
                        return Err(TrainError::config(
                            "backbone.source",
                            format!(
                                "a frozen backbone needs FrozenFeatures computed from {source:?}"
                            ),
                        ))
                    }
                };
                let width = frozen.width();
                let adapter = (
                    Linear::new(width, width, vb.pp("adapter.0"))?,
                    Linear::new(width, width, vb.pp("adapter.1"))?,
                );
                (Features::Frozen { frozen, adapter }, width)
            }
            SectionBackbone::Tiny {
                vocab_size,
                hidden_size,
                layers,
                heads,
            } => {
                let corpus = train
                    .iter()
                    .flat_map(|p| [p.findings.as_str(), p.impression.as_str()]);
                let tokenizer =
                    ReportTokenizer::train_wordpiece(corpus, *vocab_size, 2, config.max_tokens)?;
                let mut bert = BertConfig::tiny(tokenizer.vocab_size());
                bert.hidden_size = *hidden_size;
                bert.num_hidden_layers = *layers;
                bert.num_attention_heads = *heads;
                bert.intermediate_size = 2 * hidden_size;
                bert.max_position_embeddings = bert.max_position_embeddings.max(config.max_tokens);
                let encoder = BertEncoder::new(&bert, vb.pp("text"), config.seed ^ 0x2)?;
                (
                    Features::Tiny {
                        encoder: Box::new(encoder),
                        tokenizer: Box::new(tokenizer),
                    },
                    *hidden_size,
                )
            }
        };
        let head = if config.probabilistic {
            Head::Probabilistic(
                ProbabilisticHead::new(
                    width,
                    config.embed_dim,
                    medprob_core::LogVarianceClamp::default(),
                    vb.pp("head"),
                )?
                .with_options(false, config.log_variance_offset),
            )
        } else {
            Head::Deterministic(DeterministicHead::new(
                width,
                config.embed_dim,
                vb.pp("head"),
            )?)
        };
        let scalar = |name: &str, v: f64| vb.get_with_hints(1, name, candle_nn::Init::Const(v));
        let scores = if config.probabilistic {
            Scores::MatchLogits {
                scale: scalar("match.scale", 1.0)?,
                shift: scalar("match.shift", 0.0)?,
            }
        } else {
            let init = medprob_losses::clip::initial_logit_scale();
            Scores::Temperature(scalar("logit_scale", init)?)
        };
        Ok(Self {
            config: config.clone(),
            vars,
            features,
            head,
            scores,
            device: device.clone(),
        })
    }

    /// The config the tower was built with.
    pub fn config(&self) -> &SectionConfig {
        &self.config
    }

    /// Features `[B, width]` of `texts`.
    fn features(&self, texts: &[&str], train: bool) -> Result<Tensor> {
        match &self.features {
            Features::Frozen { frozen, adapter } => {
                let x = frozen.features(texts)?;
                let h = gelu_erf(&adapter.0.forward(&x)?)?;
                Ok((adapter.1.forward(&h)? + x)?)
            }
            Features::Tiny { encoder, tokenizer } => {
                let (ids, mask) = crate::objective::text_tensors(tokenizer, texts, &self.device)?;
                let hidden = encoder.forward(&ids, &mask, train)?;
                Ok(BertEncoder::pool(&hidden, &mask, Pooling::Mean)?)
            }
        }
    }

    /// Embeddings of `texts` as tensors (with the graph, for training).
    fn embed_tensors(&self, texts: &[&str], train: bool) -> Result<GaussianTensor> {
        let f = self.features(texts, train)?;
        Ok(match &self.head {
            Head::Probabilistic(h) => h.forward(&f)?,
            Head::Deterministic(h) => {
                let mean = h.forward(&f)?;
                GaussianTensor::new(mean.clone(), mean.zeros_like()?)?
            }
        })
    }

    /// Embeddings of `texts` (deterministic heads: unit-norm means, log-variance 0), in
    /// batches of `batch`.
    pub fn embed(&self, texts: &[&str], batch: usize) -> Result<GaussianEmbeddings> {
        let (mut mean, mut log_var) = (Vec::new(), Vec::new());
        for chunk in texts.chunks(batch.max(1)) {
            let g = self.embed_tensors(chunk, false)?;
            let e = GaussianEmbeddings::from_tensors(&g.mean, &g.log_var)?;
            mean.extend_from_slice(e.mean_slice());
            log_var.extend_from_slice(e.log_var_slice());
        }
        let d = self.config.embed_dim;
        Ok(GaussianEmbeddings::from_vecs(
            mean.len() / d,
            d,
            mean,
            log_var,
        )?)
    }

    /// The distance the tower ranks by: MLS (probabilistic) or CSD on unit-norm means with
    /// a constant variance, which ranks as cosine similarity does (deterministic).
    pub fn distance(&self) -> Distance {
        if self.config.probabilistic {
            Distance::Mls
        } else {
            Distance::Csd
        }
    }

    /// The loss on one batch of pairs: `ℓ(F, I)` with multi-positive targets over
    /// identical impressions, plus (probabilistic) `β·½(KL(F) + KL(I))`.
    fn loss(&self, batch: &[&SectionPair]) -> Result<Tensor> {
        let f: Vec<&str> = batch.iter().map(|p| p.findings.as_str()).collect();
        let i: Vec<&str> = batch.iter().map(|p| p.impression.as_str()).collect();
        let keys: Vec<String> = batch
            .iter()
            .map(|p| normalise_section(&p.impression))
            .collect();
        let t = targets::from_keys(&keys, DType::F32, &self.device)?;
        let (ef, ei) = (self.embed_tensors(&f, true)?, self.embed_tensors(&i, true)?);
        match &self.scores {
            Scores::MatchLogits { scale, shift } => {
                let d = tensor::pairwise(Distance::Mls, &ef, &ei)?;
                let l = tensor::match_logits(&d, scale, shift)?;
                let pair = (multi_positive_cross_entropy(&l, Some(&t))?
                    + multi_positive_cross_entropy(&l.t()?, Some(&t.t()?))?)?
                .affine(0.5, 0.0)?;
                let kl = (vib_kl(&ef, VibReduction::SumDimsMeanBatch)?
                    + vib_kl(&ei, VibReduction::SumDimsMeanBatch)?)?
                .affine(0.5 * self.config.vib_beta, 0.0)?;
                Ok((pair + kl)?)
            }
            Scores::Temperature(logit_scale) => {
                Ok(clip_loss(&ef.mean, &ei.mean, logit_scale, Some(&t))?.total)
            }
        }
    }

    /// Train on `train` for the configured epochs; returns the mean loss of each epoch.
    pub fn train(&mut self, train: &[SectionPair], progress: bool) -> Result<Vec<EpochLog>> {
        let c = self.config.clone();
        let vars: Vec<(String, Var)> = self.vars.named_vars();
        let mut opt = AdamW::new(vars.clone(), c.optim.clone())?;
        let per_epoch = train.len() / c.batch_size;
        if per_epoch == 0 {
            return Err(TrainError::config(
                "batch_size",
                format!(
                    "{} training pairs do not fill one batch of {}",
                    train.len(),
                    c.batch_size
                ),
            ));
        }
        let total = per_epoch * c.epochs;
        let bar = if progress {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, eta {eta}")
                    .expect("valid template"),
            );
            b.set_message(c.name());
            b
        } else {
            ProgressBar::hidden()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(c.seed ^ 0x5EC7);
        let mut logs = Vec::with_capacity(c.epochs);
        let mut step = 0;
        for epoch in 0..c.epochs {
            let mut order: Vec<usize> = (0..train.len()).collect();
            order.shuffle(&mut rng);
            let mut sum = 0.0;
            for b in 0..per_epoch {
                if let Features::Tiny { encoder, .. } = &self.features {
                    encoder.set_step(step as u64);
                }
                let batch: Vec<&SectionPair> = order[b * c.batch_size..(b + 1) * c.batch_size]
                    .iter()
                    .map(|&i| &train[i])
                    .collect();
                let loss = self.loss(&batch)?;
                let value = loss.to_scalar::<f32>()? as f64;
                if !value.is_finite() {
                    return Err(TrainError::config(
                        "sections",
                        format!("loss became {value} at epoch {epoch}, step {step}"),
                    ));
                }
                let mut grads = collect_grads(&vars, &loss.backward()?);
                if c.optim.grad_clip > 0.0 {
                    clip_global_norm(&mut grads, c.optim.grad_clip)?;
                }
                opt.step(&grads, c.optim.lr_at(step, total))?;
                sum += value;
                step += 1;
                bar.inc(1);
            }
            logs.push(EpochLog {
                epoch,
                mean_loss: sum / per_epoch as f64,
            });
        }
        bar.finish_and_clear();
        Ok(logs)
    }
}

/// The measures of doubt [`ErrorCorrelation`] reports.
pub const VARIANCE_MEASURE: &str = "Σσ² of the query";
pub const NEAREST_MEASURE: &str = "distance to the nearest item";

/// How well one measure of a query's doubt tracks its retrieval error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorCorrelation {
    /// "findings→impression" or "impression→findings".
    pub direction: String,
    /// "Σσ² of the query" or "distance to the nearest item".
    pub measure: String,
    /// Spearman's ρ between the measure and the rank of the first correct item (0 = top-1;
    /// higher = worse), over the queries that have a correct item.
    pub spearman: f64,
    /// Queries counted.
    pub queries: usize,
}

/// One tower's results on the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionEvaluation {
    /// The variant ([`SectionConfig::name`]) and seed.
    pub variant: String,
    pub seed: u64,
    /// Mean training loss per epoch.
    pub training: Vec<EpochLog>,
    /// Retrieval, PMRP, calibration, risk–coverage and selective retrieval. "Image" means
    /// findings and "text" means impression: `i2t` is findings→impression.
    pub report: medprob_metrics::MethodReport,
    pub error_correlation: Vec<ErrorCorrelation>,
}

/// The key of a section pair: the hash of its normalised impression, so studies with the
/// same impression text are each other's matches.
fn impression_keys(pairs: &[SectionPair]) -> Vec<u64> {
    use std::hash::{Hash, Hasher};
    pairs
        .iter()
        .map(|p| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            normalise_section(&p.impression).hash(&mut h);
            h.finish()
        })
        .collect()
}

impl SectionTower {
    /// Evaluate on `test`, with `validation` fitting the post-hoc match probability and
    /// the selective-retrieval thresholds. Labels (for PMRP) are used when every pair of
    /// both splits has them.
    pub fn evaluate(
        &self,
        validation: &[SectionPair],
        test: &[SectionPair],
        training: Vec<EpochLog>,
    ) -> Result<SectionEvaluation> {
        use medprob_metrics::evaluate::{evaluate_retrieval, EvaluationConfig, Scoring, Split};
        let embed = |pairs: &[SectionPair]| -> Result<(GaussianEmbeddings, GaussianEmbeddings)> {
            let f: Vec<&str> = pairs.iter().map(|p| p.findings.as_str()).collect();
            let i: Vec<&str> = pairs.iter().map(|p| p.impression.as_str()).collect();
            Ok((self.embed(&f, 128)?, self.embed(&i, 128)?))
        };
        let labels = |pairs: &[SectionPair]| -> Option<Vec<u32>> {
            pairs.iter().map(|p| p.labels).collect()
        };
        let (vf, vi) = embed(validation)?;
        let (tf, ti) = embed(test)?;
        let (vk, tk) = (impression_keys(validation), impression_keys(test));
        let (vl, tl) = (labels(validation), labels(test));
        let v = Split {
            images: &vf,
            image_keys: &vk,
            texts: &vi,
            text_keys: &vk,
            image_labels: vl.as_deref(),
            text_labels: vl.as_deref(),
            label_names: &[],
            image_states: None,
            text_states: None,
        };
        let t = Split {
            images: &tf,
            image_keys: &tk,
            texts: &ti,
            text_keys: &tk,
            image_labels: tl.as_deref(),
            text_labels: tl.as_deref(),
            label_names: &[],
            image_states: None,
            text_states: None,
        };
        let distance = self.distance();
        let scoring = Scoring {
            distance,
            probabilistic: self.config.probabilistic,
        };
        let score = if self.config.probabilistic {
            "MLS"
        } else {
            "cosine"
        };
        let report = evaluate_retrieval(
            &self.config.name(),
            score,
            scoring,
            &v,
            &t,
            &EvaluationConfig::default(),
        )?;
        let (f2i, i2f) = medprob_metrics::ranking::rank_both_ways(
            distance,
            &tf,
            &tk,
            &ti,
            &tk,
            &medprob_core::TopKOptions::default(),
        )?;
        let mut error_correlation = Vec::new();
        for (direction, ranks, queries) in [
            ("findings→impression", &f2i, &tf),
            ("impression→findings", &i2f, &ti),
        ] {
            let variance: Vec<f64> = queries
                .uncertainty()
                .iter()
                .map(|u| u.total_variance)
                .collect();
            let nearest: Vec<f64> = ranks.iter().map(|r| r.top1.1 as f64).collect();
            let mut measures: Vec<(&str, &[f64])> = vec![(NEAREST_MEASURE, &nearest)];
            if self.config.probabilistic {
                measures.insert(0, (VARIANCE_MEASURE, &variance));
            }
            for (measure, value) in measures {
                let (x, y): (Vec<f64>, Vec<f64>) = ranks
                    .iter()
                    .enumerate()
                    .filter_map(|(q, r)| r.rank.map(|rank| (value[q], rank as f64)))
                    .unzip();
                error_correlation.push(ErrorCorrelation {
                    direction: direction.into(),
                    measure: measure.into(),
                    spearman: spearman(&x, &y),
                    queries: x.len(),
                });
            }
        }
        Ok(SectionEvaluation {
            variant: self.config.name(),
            seed: self.config.seed,
            training,
            report,
            error_correlation,
        })
    }
}

pub use medprob_metrics::ambiguity::spearman;

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(id: &str, f: &str, i: &str) -> SectionPair {
        SectionPair {
            study_id: id.into(),
            findings: f.into(),
            impression: i.into(),
            labels: None,
        }
    }

    #[test]
    fn normalised_sections_ignore_case_and_punctuation() {
        assert_eq!(
            normalise_section("No acute cardiopulmonary abnormality."),
            normalise_section("  no ACUTE cardiopulmonary, abnormality ")
        );
        assert_ne!(
            normalise_section("No acute disease."),
            normalise_section("No acute abnormality.")
        );
    }

    #[test]
    fn splits_are_disjoint_seeded_and_sized() {
        let pairs: Vec<SectionPair> = (0..100).map(|i| pair(&format!("s{i}"), "f", "i")).collect();
        let a = split_pairs(&pairs, 7, 0.1, 0.2).unwrap();
        let b = split_pairs(&pairs, 7, 0.1, 0.2).unwrap();
        let c = split_pairs(&pairs, 8, 0.1, 0.2).unwrap();
        assert_eq!(
            (a.train.len(), a.validation.len(), a.test.len()),
            (70, 10, 20)
        );
        assert_eq!(a.test, b.test);
        assert_ne!(a.test, c.test);
        let mut all: Vec<&str> = [&a.train, &a.validation, &a.test]
            .iter()
            .flat_map(|s| s.iter().map(|p| p.study_id.as_str()))
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 100);
        let mut dup = pairs.clone();
        dup.push(pair("s3", "x", "y"));
        let e = split_pairs(&dup, 7, 0.1, 0.2).unwrap_err().to_string();
        assert!(e.contains("\"s3\" appears twice"), "{e}");
        assert!(split_pairs(&pairs, 7, 0.6, 0.2).is_err());
    }

    #[test]
    fn a_tiny_probabilistic_tower_learns_and_every_variable_gets_a_gradient() {
        // Four impressions, each shared by several findings that name its finding.
        let kinds = [
            ("effusion", "Small left pleural effusion."),
            ("cardiomegaly", "Enlarged heart."),
            ("pneumothorax", "Right pneumothorax."),
            ("normal", "No acute cardiopulmonary abnormality."),
        ];
        let pairs: Vec<SectionPair> = (0..64)
            .map(|i| {
                let (word, imp) = kinds[i % 4];
                pair(
                    &format!("s{i}"),
                    &format!("the chest shows {word} case {}", i / 4),
                    imp,
                )
            })
            .collect();
        let backbone = SectionBackbone::Tiny {
            vocab_size: 200,
            hidden_size: 32,
            layers: 1,
            heads: 2,
        };
        let mut config = SectionConfig::new(backbone, true, 3);
        config.epochs = 12;
        config.batch_size = 16;
        config.embed_dim = 8;
        config.optim.lr = 3e-3;
        let device = Device::Cpu;
        let mut tower = SectionTower::new(&config, &pairs, None, &device).unwrap();
        let refs: Vec<&SectionPair> = pairs.iter().take(16).collect();
        let grads = tower.loss(&refs).unwrap().backward().unwrap();
        for (name, var) in tower.vars.named_vars() {
            let g = grads.get(var.as_tensor());
            assert!(g.is_some(), "{name} gets no gradient");
        }
        let logs = tower.train(&pairs, false).unwrap();
        let (first, last) = (logs[0].mean_loss, logs.last().unwrap().mean_loss);
        assert!(last < 0.7 * first, "loss {first} → {last}");
        // Findings retrieve their own kind's impression.
        let f: Vec<&str> = pairs.iter().map(|p| p.findings.as_str()).collect();
        let imps: Vec<&str> = kinds.iter().map(|k| k.1).collect();
        let ef = tower.embed(&f, 32).unwrap();
        let ei = tower.embed(&imps, 32).unwrap();
        let d = medprob_core::kernels::pairwise(tower.distance(), &ef, &ei).unwrap();
        let correct = (0..pairs.len())
            .filter(|&q| {
                let row = d.row(q);
                let best = (0..4).min_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
                best == q % 4
            })
            .count();
        assert!(correct >= 56, "{correct}/64 correct");
    }
}
