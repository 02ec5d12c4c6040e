//! Crash-safe file replacement: write a temporary file beside the target, flush it to
//! disk, then rename it over the target, so a reader (or a restart after `kill -9`)
//! sees either the old file or the new one, never half of one.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Writes `path` atomically: `write` receives a temporary path in the same folder and
/// must create the file there; it is then synced and renamed over `path`.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path_for(path);
    let result = write(&tmp).and_then(|()| {
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        sync_parent(path);
        Ok(())
    });
    if result.is_err() {
        // Best effort: the temporary file is garbage whatever happened.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Makes the rename itself durable where the platform allows it.
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let target = dir.path().join("out.bin");
        std::fs::write(&target, b"old").map_err(|e| Error::io(&target, e))?;
        write_atomically(&target, |tmp| {
            std::fs::write(tmp, b"new").map_err(|e| Error::io(tmp, e))
        })?;
        assert_eq!(
            std::fs::read(&target).map_err(|e| Error::io(&target, e))?,
            b"new"
        );
        let entries = std::fs::read_dir(dir.path()).map_err(|e| Error::io(dir.path(), e))?;
        assert_eq!(entries.count(), 1);
        Ok(())
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let target = dir.path().join("out.bin");
        std::fs::write(&target, b"old").map_err(|e| Error::io(&target, e))?;
        let failed = write_atomically(&target, |tmp| {
            std::fs::write(tmp, b"partial").map_err(|e| Error::io(tmp, e))?;
            Err(Error::Config("simulated failure".into()))
        });
        assert!(failed.is_err());
        assert_eq!(
            std::fs::read(&target).map_err(|e| Error::io(&target, e))?,
            b"old"
        );
        assert_eq!(
            std::fs::read_dir(dir.path())
                .map_err(|e| Error::io(dir.path(), e))?
                .count(),
            1
        );
        Ok(())
    }
}
