//! # medprob-losses: the training objectives
//!
//! The four methods the paper compares, on the same embeddings (SPEC §3–4):
//!
//! | method | entry point | embeddings |
//! |---|---|---|
//! | MedProbCLIP | [`MedProbClipLoss`] | Gaussian, two views × two sections |
//! | PCME++ | [`PcmeppLoss`] | Gaussian, one image × one text |
//! | CLIP | [`clip_loss`] | deterministic (L2-normalised) |
//! | CXR-CLIP | [`cxr_clip_loss`] | deterministic, two views × two sections |
//!
//! Each returns a [`LossOutput`]: the differentiable total and a [`LossParts`] record of
//! named host values for logging. Hyper-parameters live in one serde config per loss whose
//! defaults are the reference training runs'. The values and gradients of MedProbCLIP and
//! PCME++ are checked against the official PyTorch code (`tests/parity.rs`).
//!
//! Everything is built from operations candle can differentiate; the numerically fragile
//! pieces (BCE with logits, log-sum-exp, multi-positive cross-entropy) are in [`ops`].

pub mod clip;
pub mod error;
pub mod medprobclip;
pub mod ops;
pub mod parts;
pub mod pcmepp;
pub mod pseudo;
pub mod targets;
pub mod vib;

pub use clip::{clip_loss, cxr_clip_loss, initial_logit_scale, ClipConfig, CxrClipConfig};
pub use error::{LossError, Result};
pub use medprobclip::{MedProbClipConfig, MedProbClipLoss, MultiView, Objective, PseudoPositives};
pub use parts::{LossOutput, LossParts};
pub use pcmepp::{PcmeppConfig, PcmeppLoss};
pub use pseudo::PseudoRule;
pub use vib::{vib_kl, VibReduction};
