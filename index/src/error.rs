//! The one error type of the crate.

use std::path::PathBuf;

use crate::PhotoId;

/// Everything that can go wrong while storing or searching photo embeddings.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The embedded database (sled) failed: I/O error, corruption it detected, …
    #[error("index database: {0}")]
    Db(#[from] sled::Error),
    /// A file or directory of the index could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The index was written by a newer version of the program, with a data layout this
    /// build does not know.
    #[error(
        "the index was written with schema version {found}, but this build reads only up to \
         version {supported}: use a newer dino-curate, or move the index away to start afresh"
    )]
    NewerSchema {
        /// Schema version found on disk.
        found: u32,
        /// Newest schema version this build understands.
        supported: u32,
    },
    /// Another process (or a store not yet closed in this one) holds the database's lock.
    #[error("the index in {0} is in use by another dino-curate (an index or tui still running?)")]
    Locked(PathBuf),
    /// Stored bytes that cannot be decoded (truncated value, wrong length, …).
    #[error("corrupt index data: {0}")]
    Corrupt(String),
    /// An embedding was written or searched before [`crate::Store::set_model`] declared the
    /// model (and hence the dimension).
    #[error("no embedding model declared yet (Store::set_model)")]
    NoModel,
    /// A vector whose length differs from the declared dimension.
    #[error("vector has {got} dimensions, the index holds {expected}-dimensional vectors")]
    Dimension {
        /// Dimension declared with `set_model`.
        expected: usize,
        /// Length of the vector given.
        got: usize,
    },
    /// A vector holding NaN or an infinity.
    #[error("vector contains a non-finite value")]
    NonFinite,
    /// No photo record with this id.
    #[error("no photo with id {0}")]
    NotFound(PhotoId),
    /// An argument outside what the store accepts (e.g. a zero dimension).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The approximate-nearest-neighbour index (hnsw_rs) failed.
    #[error("ANN index: {0}")]
    Ann(String),
}

impl IndexError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IndexError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<sled::transaction::TransactionError<IndexError>> for IndexError {
    fn from(e: sled::transaction::TransactionError<IndexError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => IndexError::Db(e),
        }
    }
}
