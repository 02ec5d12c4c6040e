//! The curation commands on an indexed folder with known answers: exact copies grouped
//! with the right keeper, trash and undo round trip byte for byte, and the JSON shapes
//! of `clusters`, `outliers`, `select` and `quality`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{dino, picture};
use image::{Rgb, RgbImage};
use serde_json::Value;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

struct Fixture {
    _dir: tempfile::TempDir,
    ws: PathBuf,
    photos: PathBuf,
}

fn json_of(ws: &Path, args: &[&str]) -> TestResult<Value> {
    let (ok, stdout, stderr) = dino(ws, args)?;
    assert!(ok, "{args:?} failed: {stderr}");
    Ok(serde_json::from_str(&stdout)?)
}

/// 8 distinct photos, an exact copy of p0 in a sub-folder, a blank photo; indexed.
fn indexed_folder() -> TestResult<Fixture> {
    let dir = tempfile::tempdir()?;
    let (ws, photos) = (dir.path().join("ws"), dir.path().join("photos"));
    std::fs::create_dir_all(photos.join("copies"))?;
    for i in 0..8 {
        picture(i).save(photos.join(format!("p{i}.png")))?;
    }
    std::fs::copy(photos.join("p0.png"), photos.join("copies/p0-copy.png"))?;
    RgbImage::from_pixel(400, 300, Rgb([128, 128, 128])).save(photos.join("blank.png"))?;
    common::tiny_weights(dir.path())?;
    let fixture = Fixture {
        _dir: dir,
        ws,
        photos,
    };
    reindex(&fixture)?;
    Ok(fixture)
}

#[test]
fn the_fixture_pictures_are_not_copies_to_a_perceptual_hash() {
    use dino_curate::curate::dups::DEFAULT_HASH_AGREEMENT;
    use dino_curate::phash::{perceptual_hash, DihedralHash};
    let hashes: Vec<_> = (0..8)
        .map(|i| DihedralHash::new(&perceptual_hash(&picture(i))))
        .collect();
    for (i, a) in hashes.iter().enumerate() {
        for (j, b) in hashes.iter().enumerate().skip(i + 1) {
            let agreement = a.agreement(b);
            assert!(
                agreement < DEFAULT_HASH_AGREEMENT,
                "p{i} and p{j} agree on {agreement}"
            );
        }
    }
}

#[test]
fn exact_copies_group_with_the_keeper_first_and_trash_undo_round_trips() -> TestResult {
    let f = indexed_folder()?;
    let exact = ["dups", "--json", "--threshold", "0.99999"];
    let groups = json_of(&f.ws, &exact)?;
    let groups = groups.as_array().ok_or("not a list")?;
    let copy_group = groups
        .iter()
        .find(|g| g["keep"].as_str().is_some_and(is_named_p0))
        .ok_or("no group for the exact copy")?;
    let members = copy_group["members"].as_array().ok_or("members")?;
    assert_eq!(members.len(), 1, "{copy_group}");
    let sim = members[0]["similarity"].as_f64().ok_or("similarity")?;
    assert!((sim - 1.0).abs() < 1e-5, "{sim}");
    assert_eq!(members[0]["evidence"], "exact", "{copy_group}");
    assert_eq!(copy_group["kind"], "copy");
    // same pixels and size: the oldest, then the path, decides; either way one is kept
    let keep = copy_group["keep"].as_str().ok_or("keep")?.to_owned();
    let member = members[0]["path"].as_str().ok_or("path")?.to_owned();
    assert_ne!(keep, member);

    let original = std::fs::read(&member)?;
    let (ok, _, _) = dino(
        &f.ws,
        &[
            "dups",
            "--trash",
            "--dry-run",
            "--threshold",
            "0.99999",
            "--no-hash",
        ],
    )?;
    assert!(ok);
    assert!(Path::new(&member).exists(), "dry run moved a file");

    let moved = json_of(&f.ws, &["trash", &member, "--yes", "--json"])?;
    let to = moved["moved"][0]["to"].as_str().ok_or("to")?.to_owned();
    assert!(!Path::new(&member).exists());
    assert!(
        to.starts_with(f.ws.join("trash").to_str().ok_or("ws")?),
        "{to}"
    );
    assert_eq!(std::fs::read(&to)?, original);
    let after = json_of(&f.ws, &exact)?;
    assert!(
        !after.to_string().contains(&member),
        "trashed photo still indexed"
    );

    let undone = json_of(&f.ws, &["undo", "--json"])?;
    assert_eq!(undone["moved"].as_array().map(Vec::len), Some(1));
    assert_eq!(std::fs::read(&member)?, original, "restored byte for byte");
    let again = json_of(&f.ws, &exact)?;
    assert!(again.to_string().contains(&member), "record restored");
    let nothing = json_of(&f.ws, &["undo", "--json"])?;
    assert!(nothing["operation"].is_null());
    Ok(())
}

/// Runs `index` on the fixture's folder with the tiny weights.
fn reindex(f: &Fixture) -> TestResult {
    let weights = f._dir.path().join("w.safetensors");
    let (ok, _, err) = common::index_at_32px(&f.ws, &f.photos, &weights)?;
    assert!(ok, "{err}");
    Ok(())
}

#[test]
fn edited_copies_group_by_their_perceptual_hash_unless_hashes_are_off() -> TestResult {
    let f = indexed_folder()?;
    let original = image::open(f.photos.join("p5.png"))?.to_rgb8();
    let mut dark = original.clone();
    dark.pixels_mut().for_each(|p| {
        p.0.iter_mut()
            .for_each(|c| *c = (u16::from(*c) * 3 / 5) as u8)
    });
    dark.save(f.photos.join("copies/p5-dark.png"))?;
    // mirrored and letterboxed: the hash is compared under every flip, after trimming bars
    let mirrored = image::imageops::flip_horizontal(&original);
    let (w, h) = mirrored.dimensions();
    let mut boxed = RgbImage::from_pixel(w, h + 40, Rgb([0, 0, 0]));
    image::imageops::replace(&mut boxed, &mirrored, 0, 20);
    boxed.save(f.photos.join("copies/p5-mirrored-boxed.png"))?;
    reindex(&f)?;
    let strict = ["dups", "--json", "--threshold", "0.99999"];
    let grouped = |groups: &Value| {
        groups.as_array().is_some_and(|list| {
            list.iter().any(|g| {
                let text = g.to_string();
                ["p5.png", "p5-dark", "p5-mirrored-boxed"]
                    .iter()
                    .all(|name| text.contains(name))
            })
        })
    };
    let by_model = json_of(&f.ws, &[&strict[..], &["--no-hash"]].concat())?;
    assert!(
        !grouped(&by_model),
        "the model alone should not reach 0.99999: {by_model}"
    );
    let with_hash = json_of(&f.ws, &strict)?;
    assert!(grouped(&with_hash), "{with_hash}");
    let evidence: Vec<&Value> = with_hash
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g.to_string().contains("p5-dark"))
        .flat_map(|g| g["members"].as_array().into_iter().flatten())
        .map(|m| &m["evidence"])
        .collect();
    assert!(
        !evidence.is_empty() && evidence.iter().all(|e| *e == "hash"),
        "{with_hash}"
    );
    Ok(())
}

#[test]
fn a_cropped_copy_is_verified_by_its_keypoints_when_hash_and_model_miss_it() -> TestResult {
    let f = indexed_folder()?;
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/photos/garden.jpg");
    let original = image::open(&sample)?.to_rgb8();
    let (w, h) = original.dimensions();
    let crop = image::imageops::crop_imm(&original, w / 5, h / 6, w * 7 / 10, h * 3 / 4);
    original.save(f.photos.join("garden.png"))?;
    crop.to_image()
        .save(f.photos.join("copies/garden-crop.png"))?;
    reindex(&f)?;
    let member_of_crop = |groups: &Value| -> Option<Value> {
        groups.as_array()?.iter().find_map(|g| {
            let text = g.to_string();
            if !text.contains("garden.png") {
                return None;
            }
            g["members"]
                .as_array()?
                .iter()
                .find(|m| m["path"].to_string().contains("garden-crop"))
                .cloned()
        })
    };
    let verified = json_of(&f.ws, &["dups", "--json", "--no-hash"])?;
    let member = member_of_crop(&verified).ok_or(format!("crop not grouped: {verified}"))?;
    assert_eq!(member["evidence"], "verified", "{member}");
    assert!(
        member["inliers"].as_u64().is_some_and(|n| n >= 16),
        "{member}"
    );
    let unverified = [
        "dups",
        "--json",
        "--no-hash",
        "--no-verify",
        "--threshold",
        "0.99999",
    ];
    let plain = json_of(&f.ws, &unverified)?;
    assert!(member_of_crop(&plain).is_none(), "{plain}");
    Ok(())
}

/// The keeper of the group holding `name` under `--keep rule`, and the group's size.
fn keeper_of(ws: &Path, name: &str, rule: &str) -> TestResult<(String, usize)> {
    let groups = json_of(ws, &["dups", "--json", "--keep", rule])?;
    let group = groups
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g.to_string().contains(name)))
        .ok_or(format!("{name} in no group: {groups}"))?;
    let keep = group["keep"].as_str().ok_or("keep")?;
    let name_of = |p: &str| {
        Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    };
    let members = group["members"].as_array().ok_or("members")?.len();
    Ok((name_of(keep).ok_or("keep path")?, members + 1))
}

/// `img` with a caption of blocky letters (black strokes on white boxes) near its bottom.
fn captioned(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    let (w, h) = img.dimensions();
    let (size, top) = (h / 14, h * 4 / 5);
    for letter in 0..(w * 3 / 4 / (size + size / 3)) {
        let left = w / 8 + letter * (size + size / 3);
        for (x, y) in
            (top..top + size).flat_map(|y| (left..left + size * 3 / 4).map(move |x| (x, y)))
        {
            let stroke = x - left < size / 6 || y - top < size / 6;
            let v = if stroke { 0 } else { 255 };
            out.put_pixel(x, y, Rgb([v, v, v]));
        }
    }
    out
}

#[test]
fn keep_auto_keeps_the_original_over_letterboxed_framed_cropped_and_captioned_copies() -> TestResult
{
    let f = indexed_folder()?;
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/photos/garden.jpg");
    let original = image::open(&sample)?.to_rgb8();
    let (w, h) = original.dimensions();
    original.save(f.photos.join("garden.png"))?;
    let mut letterboxed = RgbImage::from_pixel(w, h * 3 / 2, Rgb([0, 0, 0]));
    image::imageops::overlay(&mut letterboxed, &original, 0, i64::from(h / 4));
    letterboxed.save(f.photos.join("copies/letterboxed.png"))?;
    let mut framed = RgbImage::from_pixel(w + w / 8, h + w / 8, Rgb([255, 255, 255]));
    image::imageops::overlay(&mut framed, &original, i64::from(w / 16), i64::from(w / 16));
    framed.save(f.photos.join("copies/framed.png"))?;
    let crop = image::imageops::crop_imm(&original, w / 6, h / 6, w * 3 / 4, h * 3 / 4);
    let resize = image::imageops::FilterType::Triangle;
    image::imageops::resize(&crop.to_image(), w * 5 / 4, h * 5 / 4, resize)
        .save(f.photos.join("copies/crop-enlarged.png"))?;
    let caption = f.photos.join("copies/captioned.png");
    captioned(&original).save(&caption)?;
    let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(&caption)?
        .set_modified(long_ago)?;
    reindex(&f)?;
    assert_eq!(
        keeper_of(&f.ws, "garden.png", "auto")?,
        ("garden.png".into(), 5),
        "three copies are larger than the original, the captioned one is older"
    );
    let (largest, _) = keeper_of(&f.ws, "garden.png", "largest")?;
    assert_ne!(largest, "garden.png", "largest is literal");
    Ok(())
}

/// The label of each result of `search QUERY`, by file name, in order.
fn search_labels(ws: &Path, query: &Path, k: &str) -> TestResult<Vec<(String, String)>> {
    let query = query.to_str().ok_or("path")?;
    let hits = json_of(ws, &["search", query, "-k", k, "--json"])?;
    let hits = hits.as_array().ok_or("a list")?;
    Ok(hits
        .iter()
        .map(|h| {
            let path = h["path"].as_str().unwrap_or_default();
            let name = Path::new(path).file_name().unwrap_or_default();
            let label = h["label"].as_str().unwrap_or_default().to_string();
            (name.to_string_lossy().into_owned(), label)
        })
        .collect())
}

#[test]
fn search_lists_the_copies_first_with_their_evidence_then_similar_photos() -> TestResult {
    let f = indexed_folder()?;
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/photos/garden.jpg");
    let original = image::open(&sample)?.to_rgb8();
    let (w, h) = original.dimensions();
    original.save(f.photos.join("garden.png"))?;
    std::fs::copy(
        f.photos.join("garden.png"),
        f.photos.join("copies/same.png"),
    )?;
    let crop = image::imageops::crop_imm(&original, w / 5, h / 6, w * 7 / 10, h * 3 / 4);
    crop.to_image().save(f.photos.join("copies/crop.png"))?;
    image::imageops::flip_horizontal(&original).save(f.photos.join("copies/mirror.png"))?;
    reindex(&f)?;
    let listed = search_labels(&f.ws, &f.photos.join("garden.png"), "6")?;
    let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        !names.contains(&"garden.png"),
        "the query itself: {listed:?}"
    );
    assert_eq!(listed.len(), 6, "{listed:?}");
    assert_eq!(listed[0], ("same.png".into(), "copy: exact".into()));
    let copies: Vec<&str> = names[..3].to_vec();
    for copy in ["crop.png", "mirror.png"] {
        assert!(
            copies.contains(&copy),
            "{copy} not among the first: {listed:?}"
        );
    }
    let (_, crop_label) = listed.iter().find(|(n, _)| n == "crop.png").ok_or("crop")?;
    assert!(crop_label.starts_with("copy: verified "), "{listed:?}");
    for (name, label) in &listed[3..] {
        assert!(label.starts_with("similar "), "{name}: {listed:?}");
    }
    // a file outside the index finds the indexed photo it is a copy of
    let outside = f._dir.path().join("outside.png");
    image::imageops::flip_horizontal(&crop.to_image()).save(&outside)?;
    let listed = search_labels(&f.ws, &outside, "5")?;
    let garden = listed.iter().find(|(n, _)| n == "garden.png");
    assert!(
        garden.is_some_and(|(_, label)| label.starts_with("copy: ")),
        "{listed:?}"
    );
    Ok(())
}

#[test]
fn trash_without_confirmation_moves_nothing() -> TestResult {
    let f = indexed_folder()?;
    let target = f.photos.join("p3.png");
    let out = Command::new(env!("CARGO_BIN_EXE_dino-curate"))
        .arg("--workspace")
        .arg(&f.ws)
        .arg("trash")
        .arg(&target)
        .stdin(std::process::Stdio::null())
        .output()?;
    assert!(!out.status.success());
    assert!(target.exists());
    Ok(())
}

#[test]
fn clusters_outliers_select_and_quality_have_their_shapes() -> TestResult {
    let f = indexed_folder()?;
    let clusters = json_of(&f.ws, &["clusters", "-k", "3", "--json"])?;
    let list = clusters.as_array().ok_or("clusters")?;
    assert_eq!(list.len(), 3);
    let total: u64 = list.iter().filter_map(|c| c["size"].as_u64()).sum();
    assert_eq!(total, 10);
    for c in list {
        let members = c["members"].as_array().ok_or("members")?;
        assert_eq!(Some(members.len() as u64), c["size"].as_u64());
        assert!(members.contains(&c["representative"]));
    }

    let outliers = json_of(&f.ws, &["outliers", "-n", "3", "--json"])?;
    assert_eq!(outliers.as_array().map(Vec::len), Some(3));
    assert!(outliers[0]["score"].is_number() && outliers[0]["path"].is_string());

    let links = f.ws.join("subset");
    let picked = json_of(
        &f.ws,
        &[
            "select",
            "4",
            "--link-to",
            links.to_str().ok_or("path")?,
            "--json",
        ],
    )?;
    assert_eq!(picked.as_array().map(Vec::len), Some(4));
    assert_eq!(std::fs::read_dir(&links)?.count(), 4);
    let names: Vec<&str> = picked
        .as_array()
        .ok_or("list")?
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    let copies = names.iter().filter(|n| is_named_p0(n)).count();
    assert!(
        copies <= 1,
        "a diverse subset holds one of two identical photos: {names:?}"
    );

    let quality = json_of(&f.ws, &["quality", "--json"])?;
    let blank = quality
        .as_array()
        .ok_or("quality")?
        .iter()
        .find(|q| q["path"].as_str().is_some_and(|p| p.ends_with("blank.png")))
        .ok_or("blank photo not flagged")?;
    assert!(
        blank["flags"].to_string().contains("low-information"),
        "{blank}"
    );
    Ok(())
}

/// Whether `path` is photo p0 or its copy, by file name: the temporary folder's random name may
/// itself contain "p0".
fn is_named_p0(path: &str) -> bool {
    std::path::Path::new(path)
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with("p0"))
}
