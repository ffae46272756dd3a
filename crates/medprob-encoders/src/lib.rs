//! # medprob-encoders: image and text encoders with probabilistic heads
//!
//! Vision Transformer and BERT-family encoders built from differentiable candle operations,
//! heads that output `(mu, log-variance)`, weight loading and checkpoints. (Being written.)
