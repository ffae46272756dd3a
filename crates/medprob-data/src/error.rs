//! The one error type of `medprob-data`: every variant names the file, line or study at
//! fault, so a user can go straight to it.

use std::path::PathBuf;

/// What can go wrong reading, converting or loading studies.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A malformed row or field of a CSV file.
    #[error("{}:{line}: column {column:?}: {reason}", path.display())]
    Csv {
        path: PathBuf,
        /// 1-based line number in the file (the header is line 1).
        line: u64,
        column: String,
        reason: String,
    },

    /// A required column is missing from a CSV header.
    #[error("{}: missing column {column:?} (header has: {found})", path.display())]
    MissingColumn {
        path: PathBuf,
        column: String,
        found: String,
    },

    /// A malformed report (XML or text) file.
    #[error("{}: {reason}", path.display())]
    Report { path: PathBuf, reason: String },

    /// A malformed or repeated line of a SynthCXR state file (`state.jsonl`).
    #[error("{}:{line}: {}{reason}", path.display(), study_prefix(study_id))]
    State {
        path: PathBuf,
        /// 1-based line number in the file.
        line: u64,
        /// The study the line is about, when it can be read.
        study_id: Option<String>,
        reason: String,
    },

    /// A state file without a line for a study of the CSV it is read against.
    #[error("state file {} does not match the CSV: study {study_id} has no state", path.display())]
    StateMismatch { path: PathBuf, study_id: String },

    /// A study that cannot be used for training or evaluation.
    #[error("study {study_id}: {reason}")]
    BadStudy { study_id: String, reason: String },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

fn study_prefix(study_id: &Option<String>) -> String {
    study_id
        .as_ref()
        .map_or_else(String::new, |id| format!("study {id}: "))
}

/// `Result` with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;
