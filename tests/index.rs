//! `dino-curate index` driven as a user would: incremental runs, moved, changed and
//! deleted photos, bad files, and a `kill -9` at several moments of a run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use candle_core::Device;
use dino_curate::model::weights::save_safetensors;
use dino_curate::model::{ParamBuilder, Vit, VitArch, VitConfig};
use dino_curate_index::Store;
use image::{Rgb, RgbImage};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Distinct, deterministic pictures.
fn picture(i: u32, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let stripe = ((x + i * 3) / (2 + i % 5)).is_multiple_of(2);
        let r = (x * 255 / w + i * 17) as u8;
        let g = if stripe { 200 } else { (y * 255 / h) as u8 };
        let b = ((i * 53) % 256) as u8;
        Rgb([r, g, b])
    })
}

fn photo_folder(dir: &Path, n: u32) -> TestResult {
    std::fs::create_dir_all(dir)?;
    for i in 0..n {
        let ext = if i % 2 == 0 { "jpg" } else { "png" };
        picture(i, 60 + i % 13, 44 + i % 7).save(dir.join(format!("p{i:03}.{ext}")))?;
    }
    Ok(())
}

/// A small random backbone saved as a weights file (`--weights`).
fn weights_file(dir: &Path) -> TestResult<PathBuf> {
    let pb = ParamBuilder::frozen(&Device::Cpu, 3);
    let cfg = VitConfig {
        depth: 2,
        ..VitConfig::preset(VitArch::VitTiny, 16)
    };
    Vit::new(&pb, &cfg)?;
    let path = dir.join("weights.safetensors");
    save_safetensors(&pb.store().tensors()?, &path)?;
    Ok(path)
}

fn index_command(ws: &Path, weights: &Path, extra: &[&str]) -> Command {
    index_command_at(ws, weights, 32, extra)
}

fn index_command_at(ws: &Path, weights: &Path, size: u32, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dino-curate"));
    cmd.arg("--workspace")
        .arg(ws)
        .arg("index")
        .arg("--weights")
        .arg(weights)
        .args([
            "--size",
            &size.to_string(),
            "--batch-size",
            "4",
            "--device",
            "cpu",
        ])
        .args(extra);
    cmd
}

fn run_index(ws: &Path, weights: &Path, extra: &[&str]) -> TestResult<serde_json::Value> {
    let out: Output = index_command(ws, weights, extra).arg("--json").output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "index failed: {stderr}");
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn counts(v: &serde_json::Value) -> [u64; 6] {
    [
        "scanned",
        "embedded",
        "unchanged",
        "moved",
        "removed",
        "failed",
    ]
    .map(|k| v[k].as_u64().unwrap_or(u64::MAX))
}

/// Every record has one path, one vector, and finds itself first.
fn check_consistent(ws: &Path, photos: &Path, expected: usize) -> TestResult {
    let mut store = Store::open(ws)?;
    let mut paths = std::collections::HashSet::new();
    let mut ids = Vec::new();
    for entry in store.photos() {
        let (id, rec) = entry?;
        assert!(rec.path.starts_with(photos), "{}", rec.path.display());
        assert!(
            rec.path.is_file(),
            "record of a missing file {}",
            rec.path.display()
        );
        assert!(
            paths.insert(rec.path.clone()),
            "duplicate record {}",
            rec.path.display()
        );
        ids.push(id);
    }
    assert_eq!(ids.len(), expected, "records");
    assert_eq!(store.embeddings().count(), expected, "vectors");
    for &id in &ids {
        let v = store.embedding(id)?.ok_or("record without a vector")?;
        let hits = store.search(&v, 3)?;
        let top = hits.first().ok_or("no hit")?;
        assert!(
            top.0 == id || (top.1 - 1.0).abs() < 1e-5,
            "photo {id} does not find itself: {hits:?}"
        );
    }
    Ok(())
}

#[test]
fn incremental_runs_follow_changes_and_report_bad_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (ws, photos) = (dir.path().join("ws"), dir.path().join("photos"));
    photo_folder(&photos, 12)?;
    std::fs::write(photos.join("empty.jpg"), b"")?;
    std::fs::write(photos.join("notes.png"), b"this is not a png")?;
    let jpeg = std::fs::read(photos.join("p000.jpg"))?;
    std::fs::write(photos.join("truncated.jpg"), &jpeg[..jpeg.len() / 3])?;
    let weights = weights_file(dir.path())?;
    let photos_arg = photos.to_str().ok_or("path")?;

    let first = run_index(&ws, &weights, &[photos_arg])?;
    assert_eq!(counts(&first), [15, 12, 0, 0, 0, 3], "{first}");

    let again = run_index(&ws, &weights, &[])?;
    assert_eq!(
        counts(&again),
        [15, 0, 12, 0, 0, 3],
        "bad files are retried: {again}"
    );

    std::fs::rename(photos.join("p001.png"), photos.join("renamed.png"))?;
    std::fs::create_dir(photos.join("sub"))?;
    std::fs::rename(photos.join("p002.jpg"), photos.join("sub/moved.jpg"))?;
    std::fs::remove_file(photos.join("p003.png"))?;
    picture(99, 70, 50).save(photos.join("p004.jpg"))?;
    std::fs::remove_file(photos.join("empty.jpg"))?;
    let changed = run_index(&ws, &weights, &[])?;
    // 11 photos + 2 bad files; 2 moved, 1 removed, 1 re-embedded, 8 untouched
    assert_eq!(counts(&changed), [13, 1, 8, 2, 1, 2], "{changed}");
    check_consistent(&ws, &photos, 11)?;

    let out = index_command(&ws, &weights, &["--failures", "--json"]).output()?;
    let failures: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let list = failures.as_array().ok_or("not a list")?;
    assert_eq!(list.len(), 2, "{failures}");
    for f in list {
        let path = f["path"].as_str().ok_or("path")?;
        let reason = f["reason"].as_str().ok_or("reason")?;
        assert!(path.ends_with("notes.png") || path.ends_with("truncated.jpg"));
        assert!(!reason.is_empty());
    }
    Ok(())
}

/// RAW files made by packages (tests/fixtures/raw/make.py): one with a JPEG preview is
/// indexed through it, upright; one without is a failure saying why; a video is left out,
/// counted and listed.
#[test]
fn raw_previews_are_indexed_and_other_files_listed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (ws, photos) = (dir.path().join("ws"), dir.path().join("photos"));
    photo_folder(&photos, 3)?;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/raw");
    for name in ["tifffile-preview.dng", "pidng-no-preview.dng"] {
        std::fs::copy(fixtures.join(name), photos.join(name))?;
    }
    std::fs::write(photos.join("clip.mp4"), b"\0\0\0\x18ftypmp42")?;
    let weights = weights_file(dir.path())?;
    let first = run_index(
        &ws,
        &weights,
        &[photos.to_str().ok_or("path")?, "--profile"],
    )?;
    assert_eq!(counts(&first), [5, 4, 0, 0, 0, 1], "{first}");
    assert_eq!(first["ignored"], 1, "{first}");
    assert!(
        first["profile"]["photos_per_s"].as_f64() > Some(0.0),
        "{first}"
    );

    let store = Store::open(&ws)?;
    let dng = store
        .photos()
        .filter_map(Result::ok)
        .find(|(_, r)| r.path.ends_with("tifffile-preview.dng"))
        .ok_or("the DNG is not indexed")?;
    // the 481x320 preview, turned upright by IFD0's orientation 6
    assert_eq!((dng.1.width, dng.1.height), (320, 481));
    drop(store);

    let out = index_command(&ws, &weights, &["--failures", "--json"]).output()?;
    let failures: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let reason_of = |name: &str| {
        failures.as_array().and_then(|list| {
            list.iter()
                .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with(name)))
                .and_then(|f| f["reason"].as_str().map(str::to_owned))
        })
    };
    let no_preview = reason_of("pidng-no-preview.dng").ok_or("DNG failure not listed")?;
    assert!(no_preview.contains("preview"), "{no_preview}");
    let video = reason_of("clip.mp4").ok_or("video not listed")?;
    assert!(
        video.contains(".mp4 files are not a photo format"),
        "{video}"
    );
    Ok(())
}

#[test]
fn a_new_model_embeds_everything_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (ws, photos) = (dir.path().join("ws"), dir.path().join("photos"));
    photo_folder(&photos, 6)?;
    let weights = weights_file(dir.path())?;
    let photos_arg = photos.to_str().ok_or("path")?;
    run_index(&ws, &weights, &[photos_arg])?;
    let other = index_command_at(&ws, &weights, 48, &["--json"]).output()?;
    assert!(other.status.success());
    let v: serde_json::Value = serde_json::from_slice(&other.stdout)?;
    assert_eq!(counts(&v), [6, 6, 0, 0, 0, 0], "{v}");
    assert!(String::from_utf8_lossy(&other.stderr).contains("embedded again"));
    check_consistent(&ws, &photos, 6)
}

/// Photos of `ws` with region queries stored, of all records.
fn with_regions(ws: &Path) -> TestResult<(usize, usize)> {
    let store = Store::open(ws)?;
    let mut have = 0;
    let mut all = 0;
    for entry in store.photos() {
        let (id, _) = entry?;
        all += 1;
        have += usize::from(store.has_region_queries(id)?);
    }
    Ok((have, all))
}

#[test]
fn region_queries_are_stored_and_an_index_from_before_them_embeds_once_more() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (ws, photos) = (dir.path().join("ws"), dir.path().join("photos"));
    photo_folder(&photos, 6)?;
    let weights = weights_file(dir.path())?;
    let photos_arg = photos.to_str().ok_or("path")?;
    let run_at = |size: u32| -> TestResult<[u64; 6]> {
        let out = index_command_at(&ws, &weights, size, &[photos_arg, "--json"]).output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(counts(&serde_json::from_slice(&out.stdout)?))
    };
    // 32 px: 2 × 2 patches, no room for windows: none stored, and no photo is read again
    run_at(32)?;
    assert_eq!(with_regions(&ws)?, (0, 6));
    assert_eq!(run_at(32)?, [6, 0, 6, 0, 0, 0]);
    // 64 px: 4 × 4 patches, five windows a photo
    run_at(64)?;
    assert_eq!(with_regions(&ws)?, (6, 6));
    {
        let store = Store::open(&ws)?;
        let ids: Vec<_> = store
            .photos()
            .map(|e| e.map(|(id, _)| id))
            .collect::<Result<_, _>>()?;
        let regions = store.region_queries(ids[0])?.ok_or("stored")?;
        assert_eq!(regions.len(), 5);
        // an index from before region queries: records and vectors without them
        for id in ids.iter().skip(2) {
            let record = store.get(*id)?.ok_or("record")?;
            let vector = store.embedding(*id)?.ok_or("vector")?;
            store.put(&record, &vector)?;
        }
        store.flush()?;
    }
    assert_eq!(with_regions(&ws)?, (2, 6));
    assert_eq!(
        run_at(64)?,
        [6, 4, 2, 0, 0, 0],
        "the four without are embedded again"
    );
    assert_eq!(with_regions(&ws)?, (6, 6));
    assert_eq!(run_at(64)?, [6, 0, 6, 0, 0, 0]);
    check_consistent(&ws, &photos, 6)
}

#[test]
fn errors_without_a_model_or_a_folder_are_one_clear_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ws = dir.path().join("ws");
    let out = Command::new(env!("CARGO_BIN_EXE_dino-curate"))
        .arg("--workspace")
        .arg(&ws)
        .arg("index")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no photo folder known"), "{err}");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty)?;
    let out = Command::new(env!("CARGO_BIN_EXE_dino-curate"))
        .arg("--workspace")
        .arg(&ws)
        .arg("index")
        .arg(&empty)
        .args(["--model", "trained"])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no trained model"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    Ok(())
}

#[test]
fn a_reader_that_stops_early_ends_the_output_without_a_panic() -> TestResult {
    // `dino-curate … | true`: the reader is gone before the output is written.
    let dir = tempfile::tempdir()?;
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" --workspace "$1" index --failures --json | true"#)
        .arg(env!("CARGO_BIN_EXE_dino-curate"))
        .arg(dir.path().join("ws"))
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    Ok(())
}

#[test]
fn kill_dash_nine_at_any_moment_then_a_rerun_finishes_the_job() -> TestResult {
    let dir = tempfile::tempdir()?;
    let photos = dir.path().join("photos");
    let n = 120;
    photo_folder(&photos, n)?;
    let weights = weights_file(dir.path())?;
    let photos_arg = photos.to_str().ok_or("path")?;

    // How long a whole run takes here, to kill the others at fractions of it.
    let started = Instant::now();
    run_index(&dir.path().join("ws-timing"), &weights, &[photos_arg])?;
    let full = started.elapsed();

    let ws = dir.path().join("ws");
    for fraction in [0.15, 0.4, 0.6, 0.85] {
        let mut child = index_command(&ws, &weights, &[photos_arg])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(full.mul_f64(fraction));
        child.kill()?; // SIGKILL
        child.wait()?;
        // the store must open and be consistent for whatever it holds
        let store = Store::open(&ws)?;
        let records = store.photos().count();
        let vectors = store.embeddings().count();
        assert_eq!(
            records, vectors,
            "after a kill at {fraction}: records vs vectors"
        );
        drop(store);
    }
    let rerun = run_index(&ws, &weights, &[])?;
    let c = counts(&rerun);
    assert_eq!(c[0], n as u64);
    assert_eq!(c[1] + c[2], n as u64, "every photo embedded once: {rerun}");
    check_consistent(&ws, &photos, n as usize)?;
    let last = run_index(&ws, &weights, &[])?;
    assert_eq!(counts(&last), [n as u64, 0, n as u64, 0, 0, 0]);
    Ok(())
}
