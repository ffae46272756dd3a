//! The one error type of `medprob-losses`.

/// What can go wrong when computing a loss.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// A hyper-parameter outside its domain; `field` is its name in the config.
    #[error("invalid loss config: {field} = {value}: {reason}")]
    Config {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// Inputs whose shapes do not fit together.
    #[error("{what}: {detail}")]
    Shape { what: &'static str, detail: String },
    /// An error from the Gaussian-embedding mathematics.
    #[error(transparent)]
    Core(#[from] medprob_core::CoreError),
    /// An error raised by candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`LossError`].
pub type Result<T> = std::result::Result<T, LossError>;

/// `Ok` when `value` is finite and ≥ 0; otherwise a config error naming `field`.
pub(crate) fn non_negative(field: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(LossError::Config {
            field,
            value: value.to_string(),
            reason: "must be finite and ≥ 0",
        })
    }
}

/// `Ok` when `value` is finite; otherwise a config error naming `field`.
pub(crate) fn finite(field: &'static str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(LossError::Config {
            field,
            value: value.to_string(),
            reason: "must be finite",
        })
    }
}
