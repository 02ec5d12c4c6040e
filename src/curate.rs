//! Curation: pure functions over the embeddings (no I/O, no printing), used unchanged by
//! the command line and the terminal UI.

pub mod burst;
pub mod clusters;
pub mod collection;
pub mod dups;
pub mod keeper;
pub mod quality;
pub mod search;
pub mod select;
pub mod vectors;

pub use vectors::Vectors;

/// Neighbours per photo in the k-NN graph that `dups` and `outliers` read (CLI and TUI).
pub const GRAPH_K: usize = 10;

/// A photo's nearest neighbours with their similarity, best first.
pub type Neighbours = Vec<(dino_curate_index::PhotoId, f32)>;
