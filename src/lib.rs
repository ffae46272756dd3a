//! # medprob
//!
//! Probabilistic vision–language learning for chest X-rays and radiology reports
//! (MedProbCLIP) in Rust. This facade re-exports the workspace's library crates under
//! short names and hosts the example programs and benchmarks; depend on the individual
//! crates (`medprob-core`, …) when you need only part of the pipeline.
//!
//! | module | crate | answers |
//! |---|---|---|
//! | [`data`] | `medprob-data` | which studies, images and report sections go into a batch |
//! | [`encoders`] | `medprob-encoders` | how an image or a report becomes a Gaussian embedding |
//! | [`core`] | `medprob-core` | distances, match probability and retrieval between Gaussians |
//! | [`losses`] | `medprob-losses` | the training objectives (MedProbCLIP, PCME++, CLIP, CXR-CLIP) |
//! | [`train`] | `medprob-train` | training and evaluation pipelines |
//! | [`metrics`] | `medprob-metrics` | retrieval, calibration and risk–coverage measures |

pub use medprob_core as core;
pub use medprob_data as data;
pub use medprob_encoders as encoders;
pub use medprob_losses as losses;
pub use medprob_metrics as metrics;
pub use medprob_train as train;
