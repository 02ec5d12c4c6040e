use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use image::{ImageFormat, Rgb, RgbImage};

use super::{has_image_extension, scan, ScanReport};
use crate::photo::{decode, DecodeOptions, ScanError};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn touch(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, b"x")
}

/// Paths of the found files, relative to `root`.
fn relative(report: &ScanReport, root: &Path) -> Vec<PathBuf> {
    report
        .files
        .iter()
        .filter_map(|file| file.path.strip_prefix(root).ok())
        .map(Path::to_path_buf)
        .collect()
}

fn canonical_tempdir() -> std::io::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let root = fs::canonicalize(dir.path())?;
    Ok((dir, root))
}

#[test]
fn keeps_images_skips_hidden_and_sorts() -> TestResult {
    let (_dir, root) = canonical_tempdir()?;
    for name in [
        "b/z.png",
        "b/A.JPG",
        "a.jpeg",
        "c/d/e.TiFf",
        "c/x.webp",
        "notes.txt",
        "raw.cr2",
        "noext",
        ".hidden.jpg",
        ".cache/in-hidden-dir.jpg",
        "b/.thumbs/t.jpg",
    ] {
        touch(&root.join(name))?;
    }
    let report = scan(&[&root])?;
    let expected: Vec<PathBuf> = [
        "a.jpeg",
        "b/A.JPG",
        "b/z.png",
        "c/d/e.TiFf",
        "c/x.webp",
        "raw.cr2",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(relative(&report, &root), expected);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    // the other files are listed with why, hidden ones are not
    let ignored: Vec<&Path> = report.ignored.iter().map(|s| s.path.as_path()).collect();
    assert_eq!(ignored, [root.join("noext"), root.join("notes.txt")]);
    assert!(report.ignored[1]
        .reason
        .contains(".txt files are not a photo format"));
    assert!(report
        .files
        .iter()
        .all(|f| f.size == 1 && f.modified.is_some()));
    assert_eq!(scan(&[&root])?, report, "not deterministic");
    Ok(())
}

#[test]
fn extension_check_is_case_insensitive() {
    // HEIF files are listed in every build (decoding says when HEIC support is missing).
    for yes in [
        "a.jpg", "a.JPG", "a.Jpeg", "x/y.bmp", "a.GIF", "a.tif", "a.heic", "a.HEIF",
    ] {
        assert!(has_image_extension(Path::new(yes)), "{yes}");
    }
    for no in ["a.txt", "jpg", "a.jpg.bak", "a.heics", ".jpg", ".heic"] {
        assert!(!has_image_extension(Path::new(no)), "{no}");
    }
}

#[test]
fn symlink_loop_is_skipped_and_terminates() -> TestResult {
    let (_dir, root) = canonical_tempdir()?;
    touch(&root.join("sub/photo.jpg"))?;
    symlink(&root, root.join("sub/loop"))?;
    let report = scan(&[&root])?;
    assert_eq!(relative(&report, &root), [PathBuf::from("sub/photo.jpg")]);
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert_eq!(report.skipped[0].path, root.join("sub/loop"));
    assert!(report.skipped[0].reason.contains("loop"));
    Ok(())
}

#[test]
fn links_and_nested_or_repeated_roots_give_each_file_once() -> TestResult {
    let (_dir, root) = canonical_tempdir()?;
    touch(&root.join("a/one.jpg"))?;
    touch(&root.join("b/two.png"))?;
    symlink(root.join("a"), root.join("b/link-to-a"))?;
    symlink(root.join("a/one.jpg"), root.join("b/alias.jpg"))?;
    let roots = [
        root.clone(),
        root.join("a"),
        root.join("b/../a"),
        root.clone(),
    ];
    let report = scan(&roots)?;
    let expected: Vec<PathBuf> = ["a/one.jpg", "b/two.png"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(relative(&report, &root), expected);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    Ok(())
}

#[test]
fn non_utf8_file_name_is_found_and_decodable() -> TestResult {
    let (_dir, root) = canonical_tempdir()?;
    let path = root.join(OsStr::from_bytes(b"caf\xe9.jpg"));
    let image = RgbImage::from_pixel(20, 10, Rgb([200, 50, 50]));
    image.save_with_format(&path, ImageFormat::Jpeg)?;
    let report = scan(&[root])?;
    assert_eq!(report.files.len(), 1);
    assert_eq!(report.files[0].path, path);
    let photo = decode(&report.files[0].path, &DecodeOptions::default())?;
    assert_eq!(photo.image.dimensions(), (20, 10));
    Ok(())
}

#[test]
fn empty_folder_gives_empty_report() -> TestResult {
    let (_dir, root) = canonical_tempdir()?;
    assert_eq!(scan(&[root])?, ScanReport::default());
    Ok(())
}

#[test]
fn missing_root_is_an_error_naming_it() {
    let missing = PathBuf::from("/nonexistent-dino-curate-root/photos");
    let err = scan(&[missing]).err();
    assert!(
        matches!(err, Some(ScanError::RootNotFound { .. })),
        "{err:?}"
    );
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("/nonexistent-dino-curate-root/photos"),
        "{message}"
    );
}

#[test]
fn single_file_root_is_scanned_as_itself() -> TestResult {
    let (_dir, root) = canonical_tempdir()?;
    let photo = root.join("only.JPEG");
    let text = root.join("only.txt");
    touch(&photo)?;
    touch(&text)?;
    assert_eq!(scan(&[&photo])?.files[0].path, photo);
    assert!(scan(&[text])?.files.is_empty());
    Ok(())
}

#[test]
fn unreadable_folder_is_skipped_and_walk_continues() -> TestResult {
    let (_dir, root) = canonical_tempdir()?;
    touch(&root.join("locked/secret.jpg"))?;
    touch(&root.join("open/fine.jpg"))?;
    let locked = root.join("locked");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000))?;
    let can_still_read = fs::read_dir(&locked).is_ok(); // running as root
    let report = scan(&[&root]);
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755))?;
    let report = report?;
    assert!(relative(&report, &root).contains(&PathBuf::from("open/fine.jpg")));
    if !can_still_read {
        assert_eq!(relative(&report, &root), [PathBuf::from("open/fine.jpg")]);
        assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
        assert_eq!(report.skipped[0].path, locked);
        assert!(report.skipped[0].to_string().contains("locked"));
    }
    Ok(())
}
