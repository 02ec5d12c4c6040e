//! What a key (or a click) asks for, and what applying it asks of the outside world.

use std::path::PathBuf;

use dino_curate_index::PhotoId;

use super::app::View;
use super::job::Request;

/// One user intention, independent of the key that expressed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Move the cursor by this many rows (negative: up).
    Move(isize),
    /// Cursor to the first row.
    Top,
    /// Cursor to the last row.
    Bottom,
    /// Cursor to this row of the visible window (a mouse click).
    Click(u16),
    /// Drill into the selected cluster.
    Enter,
    /// Leave a drill-down, an overlay or a prompt.
    Back,
    /// Next view.
    NextView,
    /// Previous view.
    PrevView,
    /// This view.
    Show(View),
    /// Mark or unmark the selected photo.
    ToggleMark,
    /// Mark every photo but the keeper in every duplicate group.
    MarkAllButKeepers,
    /// Unmark everything.
    ClearMarks,
    /// Choose the duplicate groups' keepers with the next rule (largest, newest, oldest).
    CycleKeep,
    /// Ask to move the marked photos to the trash.
    Trash,
    /// Put back the last photos moved to the trash.
    Undo,
    /// Open the selected photo in the system viewer.
    Open,
    /// Search the collection for photos like the selected one.
    SearchSelected,
    /// Show the selected photo's attention map, or go back to its thumbnail.
    ToggleAttention,
    /// Start typing a path to search by.
    SearchPathPrompt,
    /// Start typing a path filter.
    FilterPrompt,
    /// A character typed into a prompt.
    Input(char),
    /// Delete the last character of a prompt.
    Backspace,
    /// Accept a prompt or the confirmation dialog.
    Confirm,
    /// Show or hide the key help.
    Help,
    /// Leave the application.
    Quit,
}

/// What the event loop must do after an action.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Hand this to the background job thread.
    Job(Request),
    /// Open this file in the system viewer (not waited on).
    Open(PathBuf),
    /// Leave the application.
    Quit,
}

/// The photo a search was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// A photo of the collection.
    Photo(PhotoId),
    /// Any image file.
    Path(PathBuf),
}
