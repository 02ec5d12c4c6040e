//! What identifies a file without decoding it: size, modification time, content hash,
//! and the EXIF date it was taken.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::photo::{PhotoError, Skipped};

/// Modification time in nanoseconds since the Unix epoch (negative before it; 0 when the
/// platform gives none).
pub fn mtime_ns(modified: Option<SystemTime>) -> i128 {
    match modified {
        None => 0,
        Some(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_nanos() as i128,
            Err(before) => -(before.duration().as_nanos() as i128),
        },
    }
}

/// The blake3 hash of the file's content, read in one streaming pass.
pub fn content_hash(path: &Path) -> Result<[u8; 32], Skipped> {
    let mut file = File::open(path).map_err(|e| Skipped::from(PhotoError::from_io(path, e)))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Skipped::from(PhotoError::from_io(path, e)))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(*hasher.finalize().as_bytes())
}

/// EXIF `DateTimeOriginal` (else `DateTime`) as `YYYY-MM-DDTHH:MM:SS`, when the file has
/// one that parses. Any problem simply gives `None`: the date is a nicety, not a reason to
/// reject a photo.
pub fn taken_at(path: &Path) -> Option<String> {
    let file = File::open(path).ok()?;
    let exif = exif::Reader::new()
        .read_from_container(&mut BufReader::new(file))
        .ok()?;
    [exif::Tag::DateTimeOriginal, exif::Tag::DateTime]
        .into_iter()
        .find_map(|tag| {
            let field = exif.get_field(tag, exif::In::PRIMARY)?;
            let exif::Value::Ascii(ref parts) = field.value else {
                return None;
            };
            let dt = exif::DateTime::from_ascii(parts.first()?).ok()?;
            Some(format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn mtimes_count_nanoseconds_both_sides_of_the_epoch() {
        let after = UNIX_EPOCH + Duration::from_nanos(1_500);
        let before = UNIX_EPOCH - Duration::from_nanos(2_000);
        assert_eq!(mtime_ns(Some(after)), 1_500);
        assert_eq!(mtime_ns(Some(before)), -2_000);
        assert_eq!(mtime_ns(None), 0);
    }

    #[test]
    fn hashes_follow_content_and_missing_files_are_reported(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        std::fs::write(&a, b"same bytes")?;
        std::fs::write(&b, b"same bytes")?;
        std::fs::write(&c, b"other bytes")?;
        assert_eq!(content_hash(&a)?, content_hash(&b)?);
        assert_ne!(content_hash(&a)?, content_hash(&c)?);
        assert_eq!(content_hash(&a)?, *blake3::hash(b"same bytes").as_bytes());
        let missing = content_hash(&dir.path().join("gone"))
            .err()
            .ok_or("no error")?;
        assert!(missing.reason.contains("vanished"), "{missing}");
        Ok(())
    }

    #[test]
    fn files_without_exif_have_no_date() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("plain.png");
        image::RgbImage::new(4, 4).save(&path)?;
        assert_eq!(taken_at(&path), None);
        Ok(())
    }
}
