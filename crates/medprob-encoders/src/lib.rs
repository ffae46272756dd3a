//! # medprob-encoders: image and text encoders with probabilistic heads
//!
//! Trainable encoders built from operations candle can differentiate (its fused layer norm
//! and softmax cut the graph silently), with Hugging Face tensor names so pretrained weights
//! load, seeded initialisation and seeded dropout.
//!
//! * [`bert`]: the BERT family (BERT, BiomedBERT, MiniLM), CLS or mean pooling, local folders;
//! * [`ops`]: differentiable layer norm and softmax, seeded dropout;
//! * [`init`]: a seeded `VarBuilder` backend;
//! * [`testing`]: the gradient checker every trainable module is tested with.
//!
//! Still to come (see the issue tracker): vision encoders (ViT, ResNet), probabilistic
//! heads, hub loading, freezing, the model type and checkpoints.

pub mod bert;
pub mod error;
pub mod init;
pub mod ops;
pub mod testing;

pub use bert::{BertConfig, BertEncoder, ModelFolder, Pooling};
pub use error::{EncoderError, Result};
pub use init::SeededVarMap;
