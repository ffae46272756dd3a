//! The one error type of `medprob-metrics`.

use std::path::PathBuf;

/// Everything that can go wrong when computing, plotting or saving a metric.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Two inputs that must have one entry per query (or per gallery item) do not.
    #[error("{what}: length mismatch: {detail}")]
    Length { what: &'static str, detail: String },

    /// An input that must not be empty is.
    #[error("{what}: {detail}")]
    Empty {
        what: &'static str,
        detail: &'static str,
    },

    /// A parameter outside its domain (a risk level outside (0, 1), zero bins, …).
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },

    /// A score, probability or confidence that is NaN, infinite or out of range.
    #[error("{what}: bad value {value} at index {index}: {reason}")]
    BadValue {
        what: &'static str,
        index: usize,
        value: f64,
        reason: &'static str,
    },

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Drawing a plot failed.
    #[error("plot {path}: {message}")]
    Plot { path: PathBuf, message: String },

    /// An image codec failed (JPEG corruption).
    #[error("{what}: {message}")]
    Codec { what: &'static str, message: String },

    /// A report could not be (de)serialised.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },

    /// An error from the embedding kernels.
    #[error(transparent)]
    Core(#[from] medprob_core::CoreError),
}

impl MetricsError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `Result` with [`MetricsError`].
pub type Result<T> = std::result::Result<T, MetricsError>;
