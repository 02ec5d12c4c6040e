//! Comparing what is on disk with what the store holds, before any file is read.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use dino_curate_index::{PhotoId, PhotoRecord, Store};

use super::identify::mtime_ns;
use crate::photo::FoundFile;
use crate::Result;

/// A file that needs reading, with what the store knew at its path.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The file as scanned.
    pub file: FoundFile,
    /// The record at the same path, if any (changed size or mtime, or no vector yet).
    pub known: Option<(PhotoId, PhotoRecord)>,
    /// Whether the known record lacks a vector (the model changed), or the region queries
    /// the model makes (embedded before they were stored): the content must be embedded
    /// even if it did not change.
    pub needs_vector: bool,
    /// Whether verification keypoints are stored for the known record's content.
    pub has_keypoints: bool,
}

/// What the comparison found.
#[derive(Debug, Default)]
pub struct Plan {
    /// Files whose size and mtime match a record that has a vector and a perceptual hash:
    /// nothing to do.
    pub unchanged: usize,
    /// Files to hash (and decode when the content is new).
    pub candidates: Vec<Candidate>,
    /// Records under the roots whose file is gone, by content hash (a new path with the
    /// same hash is the same photo moved).
    pub missing_by_hash: HashMap<[u8; 32], Vec<PhotoId>>,
    /// Records whose file is gone and that have no vector to carry over.
    pub vanished_without_vector: Vec<PhotoId>,
    /// How many records are missing.
    pub missing: usize,
}

/// Whether `path` lies under one of `roots` (component-wise, not as a string prefix).
pub(super) fn under_any(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|root| path.starts_with(root))
}

/// Sorts the scanned files into unchanged ones and candidates, and finds the records
/// under `roots` whose file was not seen. With `regions`, the model makes region queries
/// and a record without them is embedded again.
pub fn make_plan(
    store: &Store,
    files: Vec<FoundFile>,
    roots: &[PathBuf],
    regions: bool,
) -> Result<Plan> {
    let without_vector: HashSet<PhotoId> = store.ids_without_embedding()?.into_iter().collect();
    let mut plan = Plan::default();
    let mut seen = HashSet::with_capacity(files.len());
    for file in files {
        seen.insert(file.path.clone());
        let known = store.get_by_path(&file.path)?;
        let needs_vector = match &known {
            Some((id, _)) => {
                without_vector.contains(id) || (regions && !store.has_region_queries(*id)?)
            }
            None => false,
        };
        let has_keypoints = match &known {
            Some((_, rec)) => store.has_keypoints(&rec.blake3)?,
            None => false,
        };
        // a record from before perceptual hashes or keypoints is read once more to get them
        let same = known.as_ref().is_some_and(|(_, rec)| {
            rec.size == file.size
                && rec.mtime_ns == mtime_ns(file.modified)
                && rec.perceptual_hash.is_some()
                && has_keypoints
        });
        if same && !needs_vector {
            plan.unchanged += 1;
        } else {
            plan.candidates.push(Candidate {
                file,
                known,
                needs_vector,
                has_keypoints,
            });
        }
    }
    for entry in store.photos() {
        let (id, rec) = entry?;
        if under_any(&rec.path, roots) && !seen.contains(&rec.path) {
            if without_vector.contains(&id) {
                // No vector to carry over (the model changed): a move of it is embedded
                // afresh at its new path, and the old record goes.
                plan.vanished_without_vector.push(id);
            } else {
                plan.missing_by_hash.entry(rec.blake3).or_default().push(id);
            }
            plan.missing += 1;
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_match_whole_components_only() {
        let roots = [PathBuf::from("/photos/2024")];
        assert!(under_any(Path::new("/photos/2024/a.jpg"), &roots));
        assert!(!under_any(Path::new("/photos/2024-old/a.jpg"), &roots));
        assert!(!under_any(Path::new("/elsewhere/a.jpg"), &roots));
    }
}
