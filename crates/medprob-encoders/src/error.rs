//! The one error type of `medprob-encoders`.

use std::path::PathBuf;

/// What can go wrong building, loading or running an encoder.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// A file the model folder must have is missing.
    #[error("{}: missing (a model folder needs {needed})", path.display())]
    MissingFile { path: PathBuf, needed: &'static str },
    /// A weight whose shape is not what the config implies.
    #[error("tensor {name}: expected shape {expected:?}, found {found:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A bad or unreadable config.
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    /// Wrong inputs to a forward pass.
    #[error("{what}: {detail}")]
    Input { what: &'static str, detail: String },
    /// From the Gaussian-embedding mathematics.
    #[error(transparent)]
    Core(#[from] medprob_core::CoreError),
    /// From candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`EncoderError`].
pub type Result<T> = std::result::Result<T, EncoderError>;
