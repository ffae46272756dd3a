//! The one error type of `medprob-core`.

/// Everything that can go wrong when building or comparing Gaussian embeddings.
///
/// Variants carry the name of the argument at fault (`what`) and, for bad values, the row
/// and column, so a caller can point the user at the offending study or embedding.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// Two arrays that must agree in shape do not.
    #[error("{what}: shape mismatch: {detail}")]
    Shape { what: &'static str, detail: String },

    /// An embedding with zero dimensions, or a batch that must not be empty is.
    #[error("{what}: {detail}")]
    Empty {
        what: &'static str,
        detail: &'static str,
    },

    /// A NaN or infinite value in a mean or log-variance.
    #[error("{what}: non-finite value {value} at row {row}, column {col}")]
    NonFinite {
        what: &'static str,
        row: usize,
        col: usize,
        value: f64,
    },

    /// A log-variance whose variance `exp(v)` over- or underflows `f32`.
    #[error(
        "{what}: log-variance {value} at row {row}, column {col} is outside [-{limit}, {limit}] \
         (exp(v) is not representable in f32; heads clamp to [-6, 6])"
    )]
    LogVarianceRange {
        what: &'static str,
        row: usize,
        col: usize,
        value: f64,
        limit: f64,
    },

    /// A scalar parameter outside its domain (e.g. `k = 0`, a NaN scale).
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },

    /// A tensor of the wrong rank or dtype for the differentiable path.
    #[error("{what}: {detail}")]
    Tensor { what: &'static str, detail: String },

    /// A gallery index that cannot be written or read (names the file).
    #[error("{}: {reason}", path.display())]
    Index {
        path: std::path::PathBuf,
        reason: String,
    },

    /// An error raised by candle itself.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`CoreError`].
pub type Result<T> = std::result::Result<T, CoreError>;
