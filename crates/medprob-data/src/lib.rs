//! # medprob-data: studies, views, report sections and batches
//!
//! Study CSVs, the MIMIC-CXR and IU X-ray converters, multi-view and multi-section sampling,
//! image augmentation without laterality flips, tokenising and batching. (Being written.)
