//! # medprob-metrics: how well, and how reliably, a model retrieves
//!
//! One metric per module, each a small function of plain numbers, tested on its own:
//!
//! | module | measures |
//! |---|---|
//! | [`ranking`] | exact rank of each query's match, streamed over any gallery size |
//! | [`retrieval`] | Recall@K both ways, the 8- and 6-value RSUM, mean/median rank |
//! | [`label_retrieval`] | PMRP (ζ = 0, 1, 2) and mAP@R from label vectors |
//! | [`relevance`] | which gallery items count as correct: instance, labels, state, custom |
//! | [`plausible`] | recall, R-precision, calibration, risk–coverage, selective retrieval under a relevance |
//! | [`oracle`] | the expected recall of an oracle that knows each study's group |
//! | [`hubness`] | `N_k` skewness and the largest hub's share |
//! | [`zero_shot`] | prompt-based classification of 13 findings: AUROC, accuracy |
//! | [`ambiguity`] | Spearman ρ of Σσ² against the label group size (does the variance track ambiguity?) |
//! | [`auroc`] | area under the ROC curve |
//! | [`calibration`] | ECE (equal width, equal mass), Brier, NLL, reliability diagram |
//! | [`confidence`] | the three confidence functions of a retrieval answer |
//! | [`risk_coverage`] | risk–coverage curves, AURC, E-AURC, AUGRC, selective tables |
//! | [`selective`] | thresholds with a guarantee: conformal risk control, SGR |
//! | [`posthoc`] | Platt and temperature scaling on validation data |
//! | [`corruption`] | seven image corruptions at five severities |
//! | [`evaluate`] | all retrieval-side metrics of one method from its embeddings |
//!
//! [`report`] gathers them into one serialisable [`EvaluationReport`] (JSON and Markdown)
//! and [`plot`] draws its figures (PNG or SVG). Formulas and data rules: SPEC §6–8.

pub mod ambiguity;
pub mod auroc;
pub mod calibration;
mod check;
pub mod confidence;
pub mod corruption;
pub mod error;
pub mod evaluate;
pub mod hubness;
pub mod label_retrieval;
mod nan_null;
pub mod oracle;
pub mod plausible;
pub mod plot;
pub mod posthoc;
pub mod ranking;
pub mod relevance;
pub mod report;
pub mod retrieval;
pub mod risk_coverage;
pub mod selective;
pub mod summary;
pub mod zero_shot;

pub use confidence::ConfidenceKind;
pub use error::{MetricsError, Result};
pub use report::{EvaluationReport, MethodReport};
