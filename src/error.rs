//! The library's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A weights file could not be used for the requested model.
    #[error("{}: {reason}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// Tensors do not fit the model (missing, unexpected or mis-shaped parameters).
    #[error("parameters do not fit the model: {0}")]
    ParamMismatch(String),
    /// Training produced a NaN or infinite loss.
    #[error("training diverged: {0}")]
    Diverged(String),
    /// The index store failed.
    #[error(transparent)]
    Index(#[from] dino_curate_index::IndexError),
    /// A configuration value is outside what the model supports.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
