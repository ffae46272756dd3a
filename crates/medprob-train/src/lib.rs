//! # medprob-train: training and evaluation pipelines
//!
//! Composes data, encoders, losses and metrics into the trainer for MedProbCLIP and its
//! three baselines, and the evaluation that writes `metrics.json` and `report.md`.
//! (Being written.)
