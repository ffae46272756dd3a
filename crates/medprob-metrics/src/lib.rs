//! # medprob-metrics: reliability and retrieval measures
//!
//! Recall@K and RSUM, PMRP, zero-shot AUROC, calibration (ECE, Brier, NLL), risk–coverage
//! (AURC, E-AURC), selective retrieval with guarantees, robustness. (Being written.)
