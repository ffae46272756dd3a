//! # medprob-train: training and evaluation pipelines
//!
//! Composes data, encoders, losses and metrics: [`trainer::train`] trains one of the four
//! methods (CLIP, PCME++, CXR-CLIP, MedProbCLIP — same data, same encoders, different
//! heads and objectives) with AdamW, warm-up + cosine per step, global-norm clipping,
//! gradient accumulation, seeded randomness, per-epoch validation retrieval with
//! best-by-RSUM selection, crash-safe resumable checkpoints and a JSONL log;
//! [`evaluation::evaluate`] embeds the test split and fills the full reliability report.

pub mod allocator;
pub mod checkpoint;
pub mod config;
pub mod curves;
pub mod encode;
pub mod error;
pub mod evaluation;
pub mod evidence;
pub mod objective;
pub mod optim;
pub mod pipeline;
pub mod pretrain;
pub mod retrieve;
pub mod sections;
pub mod setup;
pub mod trainer;

pub use config::{DeviceKind, Method, Precision, TextSpec, TrainConfig};
pub use error::{Result, TrainError};
pub use trainer::{train, TrainOutcome, Verbosity};
