//! The one error type of `medprob-train`.

use std::path::{Path, PathBuf};

/// Everything that can stop a training or evaluation run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value that cannot work, named by its field (`optim.lr`, `method`).
    #[error("config field `{field}`: {reason}")]
    Config { field: String, reason: String },

    /// A file the run needs is missing or unreadable.
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint that cannot be written or resumed from.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    /// Training diverged (non-finite loss or gradients too many steps in a row).
    #[error("training stopped: {0}")]
    Diverged(String),

    #[error(transparent)]
    Data(#[from] medprob_data::DataError),
    #[error(transparent)]
    Encoder(#[from] medprob_encoders::EncoderError),
    #[error(transparent)]
    Loss(#[from] medprob_losses::LossError),
    #[error(transparent)]
    Metrics(#[from] medprob_metrics::MetricsError),
    #[error(transparent)]
    Core(#[from] medprob_core::CoreError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn config(field: &str, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// `Result` with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;
