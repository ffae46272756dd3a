//! # medprob-core: Gaussian embedding mathematics for MedProbCLIP
//!
//! Radiographs and reports are embedded as diagonal Gaussians `N(mu, diag(σ²))`. This crate
//! holds the mathematics that everything else in medprob stands on: the embedding types,
//! the distances between Gaussians, the closed-form match probability, and the retrieval
//! kernels. It depends on no other medprob crate.
//!
//! ## The one convention
//!
//! **An embedding is stored as its mean `mu` and its log-variance `v = log σ²`,
//! per dimension, everywhere in medprob.** (PCME++'s code calls `v` "std", PCME v1 stores a
//! log standard deviation; neither convention appears here.) Variances are `s = exp(v)`.
//! Heads clamp `v` to `[-6, 6]` through [`LogVarianceClamp`]; distances and losses never
//! clamp.
//!
//! ## Two paths, one definition each
//!
//! * [`tensor`]: differentiable candle operations on [`GaussianTensor`] (`f32`/`f64`, any
//!   device) for training losses.
//! * [`kernels`]: multi-threaded `f32` kernels on [`GaussianEmbeddings`] for retrieval:
//!   CSD by one GEMM, MLS by a fused blocked loop, and a chunked top-k search whose memory
//!   does not grow with the gallery.
//!
//! The distances themselves are defined once per pair in [`distance`] (see its table for
//! formulas and sources) and checked against the official PyTorch code's outputs.
//!
//! ```
//! use medprob_core::{kernels, Distance, GaussianEmbeddings, MatchProbability};
//!
//! // Two queries and three gallery items in D = 2.
//! let q = GaussianEmbeddings::from_vecs(2, 2, vec![0.0, 0.0, 1.0, 1.0], vec![-2.0; 4])?;
//! let g = GaussianEmbeddings::from_vecs(3, 2, vec![1.0, 1.0, 0.0, 0.1, 5.0, 5.0], vec![-2.0; 6])?;
//! let top = kernels::top_k(Distance::Mls, &q, &g, 1, &Default::default())?;
//! assert_eq!(top.indices[[0, 0]], 1); // query 0 is nearest to gallery item 1
//! assert_eq!(top.indices[[1, 0]], 0);
//! let p = MatchProbability::MEDPROBCLIP_INIT.probability(top.distances[[0, 0]] as f64);
//! assert!(p > 0.5);
//! # Ok::<(), medprob_core::CoreError>(())
//! ```

pub mod distance;
pub mod embedding;
pub mod error;
pub mod fs;
mod fused;
pub mod index;
pub mod kernels;
pub mod match_prob;
pub mod mc;
pub mod real;
pub mod tensor;

pub use distance::{pair_distance, Distance, MLS_EPS};
pub use embedding::{GaussianEmbeddings, LogVarianceClamp, Uncertainty, LOG_VARIANCE_LIMIT};
pub use error::{CoreError, Result};
pub use index::{AnswerRule, GaussianIndex, GaussianIndexWriter, IndexAnswer, IndexHit, IndexInfo};
pub use kernels::{TopK, TopKAccumulator, TopKOptions};
pub use match_prob::{sigmoid, MatchProbability, MIN_SCALE};
pub use mc::{MonteCarloMatch, Squash};
pub use real::Real;
pub use tensor::GaussianTensor;
