//! Removing photos without ever losing one: files move into the workspace's `trash/`
//! (keeping their path relative to their collection folder), each operation is written to
//! a journal before anything moves, and [`undo`] moves the files of the last operation
//! back, byte for byte, and restores their index records and vectors.
//!
//! The journal entry is written (atomically) as `pending` before the first move and
//! rewritten as `done` after the last, so an operation interrupted by a crash can still be
//! undone: undo moves back whatever reached the trash.

use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use dino_curate_index::{PhotoRecord, Store};
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomically;
use crate::{Error, Result};

const TRASH_DIR: &str = "trash";
const JOURNAL_DIR: &str = "journal";

/// A path in the journal: text when it is valid UTF-8, raw bytes otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum JournalPath {
    Text(String),
    Bytes(Vec<u8>),
}

impl From<&Path> for JournalPath {
    fn from(p: &Path) -> Self {
        match p.to_str() {
            Some(s) => Self::Text(s.to_owned()),
            None => Self::Bytes(p.as_os_str().as_bytes().to_vec()),
        }
    }
}

impl JournalPath {
    fn to_path(&self) -> PathBuf {
        match self {
            Self::Text(s) => PathBuf::from(s),
            Self::Bytes(b) => PathBuf::from(std::ffi::OsString::from_vec(b.clone())),
        }
    }
}

/// One file moved by an operation, with what the index knew of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Move {
    from: JournalPath,
    to: JournalPath,
    /// The index record (its path left empty: it is `from`).
    record: Option<PhotoRecord>,
    vector: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum State {
    Pending,
    Done,
    Undone,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Operation {
    id: String,
    state: State,
    moves: Vec<Move>,
}

/// What a trash or undo operation moved: `(from, to)` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    /// The operation's id (its folder in the trash).
    pub operation: String,
    /// Files moved, from → to.
    pub files: Vec<(PathBuf, PathBuf)>,
}

/// The trash of a workspace.
#[derive(Debug, Clone)]
pub struct Trash {
    root: PathBuf,
}

/// `path` relative to the first of `roots` that holds it, else its absolute path without
/// the root component.
fn relative_to_roots(path: &Path, roots: &[PathBuf]) -> PathBuf {
    let rel = roots
        .iter()
        .find_map(|r| {
            path.strip_prefix(r).ok().map(|p| {
                r.file_name()
                    .map(|n| Path::new(n).join(p))
                    .unwrap_or_else(|| p.to_path_buf())
            })
        })
        .unwrap_or_else(|| path.to_path_buf());
    rel.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// Moves `from` to `to` (which must not exist): a rename, or on another file system a
/// copy checked byte for byte before the original is removed.
fn move_file(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        return Err(Error::Config(format!(
            "{}: already exists, not overwritten",
            to.display()
        )));
    }
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    if fs::rename(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map_err(|e| Error::io(from, e))?;
    let same = fs::read(from).map_err(|e| Error::io(from, e))?
        == fs::read(to).map_err(|e| Error::io(to, e))?;
    if !same {
        let _ = fs::remove_file(to);
        return Err(Error::Config(format!(
            "{}: copy differs, original kept",
            from.display()
        )));
    }
    fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(to, e))?;
    fs::remove_file(from).map_err(|e| Error::io(from, e))
}

impl Trash {
    /// The trash of the workspace at `workspace`.
    pub fn new(workspace: &Path) -> Self {
        Self {
            root: workspace.join(TRASH_DIR),
        }
    }

    fn journal_file(&self, id: &str) -> PathBuf {
        self.root.join(JOURNAL_DIR).join(format!("{id}.json"))
    }

    fn save(&self, op: &Operation) -> Result<()> {
        let path = self.journal_file(&op.id);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let text = serde_json::to_vec_pretty(op).map_err(|e| Error::Config(e.to_string()))?;
        write_atomically(&path, |tmp| {
            fs::write(tmp, &text).map_err(|e| Error::io(tmp, e))
        })
    }

    fn new_operation_id(&self) -> String {
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S%.3f").to_string();
        let mut id = stamp.clone();
        let mut n = 1;
        while self.journal_file(&id).exists() {
            n += 1;
            id = format!("{stamp}-{n}");
        }
        id
    }

    /// What [`Trash::remove`] would move, without moving anything.
    pub fn plan(&self, files: &[PathBuf], roots: &[PathBuf]) -> Result<Moved> {
        let operation = self.new_operation_id();
        let dir = self.root.join(&operation);
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for file in files {
            if !file.is_file() {
                return Err(Error::Config(format!("{}: not a file", file.display())));
            }
            let to = dir.join(relative_to_roots(file, roots));
            if seen.insert(file.clone()) {
                out.push((file.clone(), to));
            }
        }
        Ok(Moved {
            operation,
            files: out,
        })
    }

    /// Moves the planned files into the trash, journaled, and drops them from the index.
    pub fn remove(&self, plan: &Moved, store: &Store) -> Result<Moved> {
        let mut moves = Vec::with_capacity(plan.files.len());
        for (from, to) in &plan.files {
            let known = store.get_by_path(from)?;
            let vector = match &known {
                Some((id, _)) => store.embedding(*id)?,
                None => None,
            };
            moves.push(Move {
                from: from.as_path().into(),
                to: to.as_path().into(),
                record: known.map(|(_, r)| PhotoRecord {
                    path: PathBuf::new(),
                    ..r
                }),
                vector,
            });
        }
        let mut op = Operation {
            id: plan.operation.clone(),
            state: State::Pending,
            moves,
        };
        self.save(&op)?;
        for (from, to) in &plan.files {
            move_file(from, to)?;
            if let Some((id, _)) = store.get_by_path(from)? {
                store.remove(id)?;
            }
        }
        store.flush()?;
        op.state = State::Done;
        self.save(&op)?;
        Ok(plan.clone())
    }

    /// The newest operation not undone yet.
    fn last_operation(&self) -> Result<Option<Operation>> {
        let dir = self.root.join(JOURNAL_DIR);
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(None);
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        for path in names.iter().rev() {
            let text = fs::read(path).map_err(|e| Error::io(path, e))?;
            let op: Operation = serde_json::from_slice(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            if op.state != State::Undone {
                return Ok(Some(op));
            }
        }
        Ok(None)
    }

    /// Moves the files of the last operation back where they were and restores their
    /// index records; `None` when there is nothing to undo.
    pub fn undo(&self, store: &Store) -> Result<Option<Moved>> {
        let Some(mut op) = self.last_operation()? else {
            return Ok(None);
        };
        let mut back = Vec::new();
        for mv in op.moves.iter().rev() {
            let (from, to) = (mv.from.to_path(), mv.to.to_path());
            if !to.exists() {
                continue; // never reached the trash (interrupted operation)
            }
            move_file(&to, &from)?;
            if let (Some(record), Some(vector)) = (&mv.record, &mv.vector) {
                let record = PhotoRecord {
                    path: from.clone(),
                    ..record.clone()
                };
                store.put(&record, vector)?;
            }
            back.push((to, from));
        }
        store.flush()?;
        op.state = State::Undone;
        self.save(&op)?;
        let _ = remove_empty_dirs(&self.root.join(&op.id));
        Ok(Some(Moved {
            operation: op.id,
            files: back,
        }))
    }
}

/// Removes `dir` and its empty sub-folders (best effort).
fn remove_empty_dirs(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            let _ = remove_empty_dirs(&path);
        }
    }
    fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_keep_the_collection_folder_name() {
        let roots = [PathBuf::from("/home/u/Photos")];
        assert_eq!(
            relative_to_roots(Path::new("/home/u/Photos/2024/a.jpg"), &roots),
            PathBuf::from("Photos/2024/a.jpg")
        );
        assert_eq!(
            relative_to_roots(Path::new("/elsewhere/b.jpg"), &roots),
            PathBuf::from("elsewhere/b.jpg")
        );
    }

    #[test]
    fn non_utf8_paths_round_trip_through_the_journal() -> Result<()> {
        let raw = PathBuf::from(std::ffi::OsString::from_vec(b"/p/caf\xe9.jpg".to_vec()));
        let jp = JournalPath::from(raw.as_path());
        let text = serde_json::to_string(&jp).map_err(|e| Error::Config(e.to_string()))?;
        let back: JournalPath =
            serde_json::from_str(&text).map_err(|e| Error::Config(e.to_string()))?;
        assert_eq!(back.to_path(), raw);
        Ok(())
    }

    #[test]
    fn existing_destinations_are_never_overwritten() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"a").map_err(|e| Error::io(&a, e))?;
        fs::write(&b, b"b").map_err(|e| Error::io(&b, e))?;
        assert!(move_file(&a, &b).is_err());
        assert_eq!(fs::read(&b).map_err(|e| Error::io(&b, e))?, b"b");
        Ok(())
    }
}
