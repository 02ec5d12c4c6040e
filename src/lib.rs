//! dino-curate: self-supervised DINO features learned on a user's own photos, used to curate them.
//!
//! The library holds everything the binary runs: the ViT and DINO head in candle
//! ([`model`]) and the DINO training maths ([`train`]). Storage and search live in the
//! separate `dino-curate-index` crate.

pub mod atomic;
pub mod attention;
pub mod bench;
pub mod calibrate;
pub mod curate;
pub mod device;
pub mod download;
pub mod embed;
pub mod error;
pub mod eval;
pub mod indexer;
pub mod model;
pub mod phash;
pub mod photo;
pub mod released;
pub mod train;
pub mod trash;
pub mod tui;
pub mod verify;
pub mod watchdog;
pub mod workspace;

pub use error::{Error, Result};
