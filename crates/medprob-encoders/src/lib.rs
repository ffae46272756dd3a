//! # medprob-encoders: image and text encoders with probabilistic heads
//!
//! Trainable encoders built from operations candle can differentiate (its fused layer norm
//! and softmax cut the graph silently), with Hugging Face tensor names so pretrained weights
//! load, seeded initialisation and seeded dropout.
//!
//! * [`bert`]: the BERT family (BERT, BiomedBERT, MiniLM), CLS or mean pooling, local folders;
//! * [`vit`]: a Vision Transformer with timm's tensor names (tiny, or ViT-B/16);
//! * [`resnet`]: a bottleneck ResNet (tiny, or ResNet-50 as in CXR-CLIP) with differentiable
//!   batch norm and max-pool;
//! * [`heads`]: probabilistic `(mu, log-variance)` and deterministic unit-norm heads;
//! * [`model`]: both encoders, heads and match parameters; freezing; atomic checkpoints;
//! * [`ops`]: differentiable layer norm and softmax, seeded dropout;
//! * [`attention`]: multi-head attention, one fused kernel forward and backward on the CPU;
//! * [`init`]: a seeded `VarBuilder` backend;
//! * [`testing`]: the gradient checker every trainable module is tested with.
//!
//! * [`hub`]: model folders from the Hugging Face hub (cache and offline mode honoured).

pub mod attention;
pub mod bert;
pub mod error;
mod fused;
pub mod heads;
pub mod hub;
pub mod init;
pub mod model;
pub mod ops;
pub mod resnet;
pub mod testing;
pub mod vit;

pub use bert::{BertConfig, BertEncoder, ModelFolder, Pooling};
pub use error::{EncoderError, Result};
pub use heads::{DeterministicHead, ProbabilisticHead};
pub use init::SeededVarMap;
pub use model::{Embedded, HeadKind, ImageBackbone, MedProbModel, ModelConfig};
pub use resnet::{ResNet, ResNetConfig};
pub use vit::{VisionTransformer, VitConfig};
