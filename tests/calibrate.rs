//! `index` calibrates `dups` on edited copies of the collection's own photos, and `dups
//! --precision` takes the calibrated rule (the sample photos: 30 real photographs).

mod common;

use std::path::Path;

use common::dino;
use serde_json::Value;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

#[test]
fn index_calibrates_dups_and_precision_chooses_the_rule() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (ws, photos) = (dir.path().join("ws"), dir.path().join("photos"));
    std::fs::create_dir_all(&photos)?;
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/photos");
    for entry in std::fs::read_dir(&samples)? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "jpg") {
            std::fs::copy(&path, photos.join(path.file_name().ok_or("name")?))?;
        }
    }
    let weights = common::tiny_weights(dir.path())?;
    let (ok, _, err) = common::index_at_32px(&ws, &photos, &weights)?;
    assert!(ok, "{err}");
    assert!(err.contains("dups calibrated on"), "{err}");
    let file = ws.join("dups-calibration.json");
    let calibration: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
    assert!(
        calibration["copies"].as_u64().is_some_and(|n| n >= 150),
        "{calibration}"
    );
    let points = calibration["points"].as_array().ok_or("points")?;
    assert!(points.iter().all(|p| p["precision"].as_f64() < Some(1.0)));

    let (ok, out, err) = dino(&ws, &["dups", "--json"])?;
    assert!(ok, "{err}");
    assert!(err.contains("calibrated for precision 0.99"), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out)?,
        Value::Array(vec![]),
        "no copies yet"
    );

    // a second index with nothing changed does not calibrate again
    let (ok, _, err) = common::index_at_32px(&ws, &photos, &weights)?;
    assert!(ok && !err.contains("calibrated"), "{err}");

    let (ok, _, err) = dino(&ws, &["dups", "--precision", "0.9999999"])?;
    assert!(ok, "{err}");
    assert!(err.contains("no rule reaches precision 0.9999999"), "{err}");
    let given = ["dups", "--hash-agreement", "0.7", "--min-inliers", "20"];
    let (ok, _, err) = dino(&ws, &given)?;
    assert!(ok && !err.contains("calibrated"), "{err}");
    let (ok, _, err) = dino(&ws, &["dups", "--precision", "1.5"])?;
    assert!(!ok && err.contains("--precision 1.5"), "{err}");

    // a damaged calibration is derived data: dups says so and keeps going, index remakes it
    std::fs::write(&file, "{")?;
    let (ok, _, err) = dino(&ws, &["dups"])?;
    assert!(ok && err.contains("ignoring the calibration"), "{err}");
    assert!(err.contains("not calibrated"), "{err}");
    let (ok, _, err) = common::index_at_32px(&ws, &photos, &weights)?;
    assert!(ok && err.contains("dups calibrated on"), "{err}");
    Ok(())
}
