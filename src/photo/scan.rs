//! Walking folders for image files.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use walkdir::{DirEntry, WalkDir};

use super::error::{ScanError, Skipped};

/// File name extensions (lower case, without the dot) of the files [`scan`] keeps; compared
/// case-insensitively. HEIF ones are kept even in a build without the `heic` feature, so that
/// decoding reports them rather than leaving them out silently.
pub const IMAGE_EXTENSIONS: [&str; 10] = [
    "jpg", "jpeg", "png", "webp", "gif", "tif", "tiff", "bmp", "heic", "heif",
];

/// One image file found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    /// Absolute path, below a canonicalised root (symbolic links inside the tree are kept as
    /// walked, not resolved).
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, when the platform reports one.
    pub modified: Option<SystemTime>,
}

/// What [`scan`] found: the image files, sorted by path, and what it had to leave out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Image files, sorted by path, each file once.
    pub files: Vec<FoundFile>,
    /// Folders and files that could not be walked or inspected (unreadable folders, symbolic
    /// link loops, broken links), sorted by path.
    pub skipped: Vec<Skipped>,
    /// Files left out for their extension (not a format read as a photo: videos, sidecars,
    /// documents...), sorted by path, each with the reason.
    pub ignored: Vec<Skipped>,
}

/// Whether `path` has one of the [`IMAGE_EXTENSIONS`] or a camera RAW extension
/// ([`super::RAW_EXTENSIONS`]), in any case.
pub fn has_image_extension(path: &Path) -> bool {
    has_extension(path, &IMAGE_EXTENSIONS) || super::has_raw_extension(path)
}

/// Whether `path`'s extension is one of `known` (lower case), in any case.
pub(super) fn has_extension(path: &Path, known: &[&str]) -> bool {
    path.extension()
        .is_some_and(|ext| known.iter().any(|k| ext.eq_ignore_ascii_case(k)))
}

/// Lists the image files under `roots`, recursively.
///
/// Symbolic links are followed (loops are reported as skipped, never followed twice); hidden
/// files and folders (name starting with `.`) are left out, except a root itself; a root may
/// be a single file, kept if it has an image extension. Roots are canonicalised, so paths in
/// the report are absolute; the same file reached twice (repeated or nested roots, links,
/// hard links) is listed once, under its first path in sorted order.
///
/// Fails only when a root does not exist or is neither a folder nor a file; anything wrong
/// below a root is recorded in [`ScanReport::skipped`] and the walk carries on. Files with
/// another extension are listed in [`ScanReport::ignored`].
pub fn scan<P: AsRef<Path>>(roots: &[P]) -> Result<ScanReport, ScanError> {
    let roots = resolve_roots(roots)?;
    let mut walked = Walked::default();
    for root in &roots {
        walk(root, &mut walked);
    }
    let Walked {
        found,
        mut skipped,
        mut ignored,
    } = walked;
    for list in [&mut skipped, &mut ignored] {
        list.sort_by(|a: &Skipped, b| a.path.cmp(&b.path));
        list.dedup();
    }
    Ok(ScanReport {
        files: distinct_files(found),
        skipped,
        ignored,
    })
}

/// Canonicalises the roots, checks them, and drops repeated roots and roots nested in others.
fn resolve_roots<P: AsRef<Path>>(roots: &[P]) -> Result<Vec<PathBuf>, ScanError> {
    let mut resolved = roots
        .iter()
        .map(|root| resolve_root(root.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    resolved.sort();
    let mut kept: Vec<PathBuf> = Vec::with_capacity(resolved.len());
    for root in resolved {
        // Sorted, so an ancestor always comes before the roots below it.
        if !kept.iter().any(|outer| root.starts_with(outer)) {
            kept.push(root);
        }
    }
    Ok(kept)
}

fn resolve_root(root: &Path) -> Result<PathBuf, ScanError> {
    let bad_root = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => ScanError::RootNotFound {
            path: root.to_path_buf(),
        },
        _ => ScanError::RootUnreadable {
            path: root.to_path_buf(),
            source,
        },
    };
    let canonical = fs::canonicalize(root).map_err(bad_root)?;
    let meta = fs::metadata(&canonical).map_err(bad_root)?;
    if meta.is_dir() || meta.is_file() {
        Ok(canonical)
    } else {
        Err(ScanError::RootNotAFolder {
            path: root.to_path_buf(),
        })
    }
}

/// A found file with its identity on disk, to drop the same file reached by two paths.
struct Candidate {
    file: FoundFile,
    id: Option<(u64, u64)>,
}

/// What a walk collects.
#[derive(Default)]
struct Walked {
    found: BTreeMap<PathBuf, Candidate>,
    skipped: Vec<Skipped>,
    ignored: Vec<Skipped>,
}

fn walk(root: &Path, walked: &mut Walked) {
    let entries = WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter_entry(|entry| !is_hidden(entry));
    for entry in entries {
        match entry {
            Ok(entry) => visit(entry, walked),
            Err(err) => walked.skipped.push(walk_error(root, &err)),
        }
    }
}

fn visit(entry: DirEntry, walked: &mut Walked) {
    if !entry.file_type().is_file() {
        return;
    }
    if !has_image_extension(entry.path()) {
        walked.ignored.push(ignored_file(entry.into_path()));
        return;
    }
    match entry.metadata() {
        Ok(meta) => {
            let candidate = Candidate {
                id: file_id(&meta),
                file: FoundFile {
                    size: meta.len(),
                    modified: meta.modified().ok(),
                    path: entry.into_path(),
                },
            };
            walked.found.insert(candidate.file.path.clone(), candidate);
        }
        Err(err) => walked.skipped.push(walk_error(entry.path(), &err)),
    }
}

/// A file whose extension is not a photo format's, with the reason.
fn ignored_file(path: PathBuf) -> Skipped {
    let kind = match path.extension() {
        Some(ext) => format!(".{} files", ext.to_string_lossy()),
        None => "files without an extension".to_owned(),
    };
    Skipped::new(
        path,
        format!("not read: {kind} are not a photo format dino-curate reads"),
    )
}

/// Hidden: a name starting with `.`, below the root (a root is scanned even if hidden).
fn is_hidden(entry: &DirEntry) -> bool {
    entry.depth() > 0 && entry.file_name().as_encoded_bytes().first() == Some(&b'.')
}

fn walk_error(fallback: &Path, err: &walkdir::Error) -> Skipped {
    let path = err.path().unwrap_or(fallback);
    let reason = match (err.loop_ancestor(), err.io_error()) {
        (Some(ancestor), _) => format!("symbolic link loop (leads back to {})", ancestor.display()),
        (None, Some(io)) if io.kind() == io::ErrorKind::NotFound => {
            "broken symbolic link or vanished".to_owned()
        }
        (None, Some(io)) => format!("cannot read: {io}"),
        (None, None) => err.to_string(),
    };
    Skipped::new(path, reason)
}

/// Keeps the first path (in sorted order) of each file on disk.
fn distinct_files(found: BTreeMap<PathBuf, Candidate>) -> Vec<FoundFile> {
    let mut seen = HashSet::new();
    found
        .into_values()
        .filter(|candidate| candidate.id.is_none_or(|id| seen.insert(id)))
        .map(|candidate| candidate.file)
        .collect()
}

#[cfg(unix)]
fn file_id(meta: &Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_meta: &Metadata) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests;
