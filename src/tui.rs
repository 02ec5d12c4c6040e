//! The terminal UI (`dino-curate tui`): browse clusters, review duplicates, search by
//! example, read indexing failures and follow training, with photo previews.
//!
//! Shaped like gitui: an [`App`] holds all state; keys become [`Action`]s
//! ([`keys::action_for`]); [`App::apply`] changes the state and hands back [`Effect`]s
//! (requests to the background [`job`] thread, files to open, quit); [`render::draw`]
//! only draws. Everything slow (loading the index, clustering, duplicate groups, search,
//! trash and undo, decoding thumbnails) runs on worker threads that report through
//! channels, so a frame never waits for compute.

pub mod action;
pub mod app;
pub mod bench;
pub mod fixture;
pub mod job;
pub mod keys;
pub mod list;
pub mod render;
pub mod term;
pub mod thumbs;

pub use action::{Action, Effect};
pub use app::{App, Mode, View};
