//! Storage and search for photo embeddings: a sled database (the source of truth) and an
//! HNSW graph from hnsw_rs (a search cache rebuilt from it when missing or stale).
//!
//! No model, image decoding or UI here: callers hand in records and L2-normalised vectors.
#![deny(missing_docs)]

mod ann;
mod dist;
mod error;
mod links;
mod record;
mod store;
mod topk;

pub use ann::AnnParams;
pub use dist::{dot, DistUnitDot};
pub use error::IndexError;
pub use record::{ImageStats, KnnGraph, Meta, PhotoId, PhotoRecord};
pub use store::{AnnStatus, SearchOptions, Store};
