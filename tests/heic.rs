//! HEIC decoding through libheif (feature `heic`), on files made at test time by `heif-enc`
//! (Debian package `libheif-examples`) from JPEGs the test writes.
//!
//! Without `heif-enc` the tests are skipped with a message, unless
//! `DINO_CURATE_REQUIRE_HEIF_ENC=1` is set (as CI does), which makes that a failure.
#![cfg(feature = "heic")]

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use dino_curate::photo::{self, DecodeOptions, PhotoError, PhotoFormat};
use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use tempfile::TempDir;

type Error = Box<dyn std::error::Error>;
type TestResult = Result<(), Error>;

/// A box in a HEIF file: its type, where it starts and its size.
type BoxSpan = ([u8; 4], usize, usize);

const REQUIRE_ENV: &str = "DINO_CURATE_REQUIRE_HEIF_ENC";

/// A smooth colour gradient: what lossy codecs keep well.
fn gradient(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let r = x * 255 / (width - 1);
        let g = y * 255 / (height - 1);
        let b = 255 - (x + y) * 255 / (width + height - 2);
        Rgb([r as u8, g as u8, b as u8])
    })
}

/// The same gradient with a dark block in the top-left corner, so that a rotation or a
/// mirroring shows.
fn marked_gradient(width: u32, height: u32) -> RgbImage {
    let mut image = gradient(width, height);
    for y in 0..height / 4 {
        for x in 0..width / 4 {
            image.put_pixel(x, y, Rgb([10, 10, 10]));
        }
    }
    image
}

fn jpeg_bytes(image: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 95).encode_image(image)?;
    Ok(bytes)
}

/// An EXIF block ("Exif\0\0" and a TIFF header) holding only `Orientation = orientation`.
fn exif_orientation(orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes()); // first IFD offset
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // count
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    payload
}

/// Inserts an EXIF APP1 segment holding only `Orientation = orientation` after the SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let payload = exif_orientation(orientation);
    let length = u16::try_from(payload.len() + 2).unwrap_or(u16::MAX);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Encodes `jpeg` (a file) to HEIC at `heic` with `heif-enc`. `Ok(false)` when `heif-enc` is
/// not installed and not required: the caller skips the test.
fn heif_enc(jpeg: &Path, heic: &Path) -> Result<bool, Error> {
    let output = match Command::new("heif-enc")
        .args(["-q", "90", "-o"])
        .arg(heic)
        .arg(jpeg)
        .output()
    {
        Ok(output) => output,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                return Err(format!(
                    "heif-enc is not installed but {REQUIRE_ENV}=1 requires it \
                     (apt-get install libheif-examples)"
                )
                .into());
            }
            // Straight to stderr, past the test harness's capture, so that the skip shows.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: heif-enc not found (apt-get install libheif-examples); \
                 set {REQUIRE_ENV}=1 to make this a failure"
            );
            return Ok(false);
        }
        Err(err) => return Err(format!("cannot run heif-enc: {err}").into()),
    };
    if !output.status.success() {
        return Err(format!(
            "heif-enc failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(true)
}

/// Writes `image` as a JPEG (with `exif_orientation` when given) and encodes it to
/// `<name>.heic`; `None` when `heif-enc` is missing (test skipped).
fn make_heic(
    dir: &TempDir,
    name: &str,
    image: &RgbImage,
    exif_orientation: Option<u16>,
) -> Result<Option<(PathBuf, PathBuf)>, Error> {
    let mut bytes = jpeg_bytes(image)?;
    if let Some(orientation) = exif_orientation {
        bytes = with_exif_orientation(&bytes, orientation);
    }
    let jpeg = dir.path().join(format!("{name}.jpg"));
    fs::write(&jpeg, bytes)?;
    let heic = dir.path().join(format!("{name}.heic"));
    Ok(heif_enc(&jpeg, &heic)?.then_some((jpeg, heic)))
}

/// Big-endian unsigned integer of `len` bytes at `pos`.
fn read_be(bytes: &[u8], pos: usize, len: usize) -> Result<u64, Error> {
    let field = bytes.get(pos..pos + len).ok_or("box runs past the end")?;
    Ok(field.iter().fold(0, |acc, &b| acc << 8 | u64::from(b)))
}

fn write_be(bytes: &mut [u8], pos: usize, len: usize, value: u64) {
    for (i, byte) in bytes[pos..pos + len].iter_mut().enumerate() {
        *byte = (value >> (8 * (len - 1 - i))) as u8;
    }
}

/// The child boxes of the box whose content spans `start..end`: (type, start, size).
fn child_boxes(bytes: &[u8], start: usize, end: usize) -> Result<Vec<BoxSpan>, Error> {
    let mut children = Vec::new();
    let mut pos = start;
    while pos + 8 <= end {
        let size = read_be(bytes, pos, 4)? as usize;
        let kind: [u8; 4] = bytes[pos + 4..pos + 8].try_into()?;
        if size < 8 || pos + size > end {
            return Err(format!("bad box size {size} at {pos}").into());
        }
        children.push((kind, pos, size));
        pos += size;
    }
    Ok(children)
}

fn find_box(children: &[BoxSpan], kind: &[u8; 4]) -> Result<(usize, usize), Error> {
    children
        .iter()
        .find(|(k, _, _)| k == kind)
        .map(|&(_, start, size)| (start, size))
        .ok_or_else(|| format!("no {} box", String::from_utf8_lossy(kind)).into())
}

/// Adds an `irot` property (`angle` quarter turns anticlockwise) to the primary image of a
/// HEIF file as libheif writes them: the box goes at the end of `ipco`, its association into
/// `ipma`, the enclosing boxes grow, and the `iloc` offsets past the insertion move along.
fn add_irot(heic: &[u8], angle: u8) -> Result<Vec<u8>, Error> {
    let mut bytes = heic.to_vec();
    let top = child_boxes(&bytes, 0, bytes.len())?;
    let (meta, meta_size) = find_box(&top, b"meta")?;
    let in_meta = child_boxes(&bytes, meta + 12, meta + meta_size)?;
    let (pitm, _) = find_box(&in_meta, b"pitm")?;
    let primary = match bytes[pitm + 8] {
        0 => read_be(&bytes, pitm + 12, 2)?,
        _ => read_be(&bytes, pitm + 12, 4)?,
    };
    let (iloc, _) = find_box(&in_meta, b"iloc")?;
    let (iprp, iprp_size) = find_box(&in_meta, b"iprp")?;
    let in_iprp = child_boxes(&bytes, iprp + 8, iprp + iprp_size)?;
    let (ipco, ipco_size) = find_box(&in_iprp, b"ipco")?;
    let (ipma, ipma_size) = find_box(&in_iprp, b"ipma")?;
    let property = child_boxes(&bytes, ipco + 8, ipco + ipco_size)?.len() + 1;
    let irot_at = ipco + ipco_size;
    if ipma < irot_at || property > 127 {
        return Err("unexpected ipco/ipma layout".into());
    }

    // ipma: find the primary item's entry, count one more association.
    let (version, wide) = (bytes[ipma + 8], bytes[ipma + 11] & 1 == 1);
    let entries = read_be(&bytes, ipma + 12, 4)?;
    let id_len = if version < 1 { 2 } else { 4 };
    let mut pos = ipma + 16;
    let mut association_at = None;
    for _ in 0..entries {
        let id = read_be(&bytes, pos, id_len)?;
        let count = usize::from(bytes[pos + id_len]);
        let end = pos + id_len + 1 + count * if wide { 2 } else { 1 };
        if id == primary {
            bytes[pos + id_len] += 1;
            association_at = Some(end);
        }
        pos = end;
    }
    let association_at = association_at.ok_or("primary item has no ipma entry")?;
    let association: Vec<u8> = match wide {
        true => vec![0x80, property as u8],
        false => vec![0x80 | property as u8],
    };
    let irot = [0, 0, 0, 9, b'i', b'r', b'o', b't', angle & 3];
    let grown = (irot.len() + association.len()) as u64;

    // iloc: move the file offsets past the insertion point.
    let version = bytes[iloc + 8];
    let sizes = read_be(&bytes, iloc + 12, 2)? as usize;
    let (offset_len, length_len) = (sizes >> 12, (sizes >> 8) & 15);
    let (base_len, index_len) = ((sizes >> 4) & 15, sizes & 15);
    let (count_len, id_len) = if version < 2 { (2, 2) } else { (4, 4) };
    let items = read_be(&bytes, iloc + 14, count_len)?;
    let mut pos = iloc + 14 + count_len;
    for _ in 0..items {
        pos += id_len;
        let method = match version {
            1 | 2 => {
                pos += 2;
                read_be(&bytes, pos - 2, 2)? & 15
            }
            _ => 0,
        };
        pos += 2; // data reference index
        let base = read_be(&bytes, pos, base_len)?;
        let base_at = pos;
        pos += base_len;
        let extents = read_be(&bytes, pos, 2)?;
        pos += 2;
        for _ in 0..extents {
            if matches!(version, 1 | 2) {
                pos += index_len;
            }
            let offset = read_be(&bytes, pos, offset_len)?;
            if method == 0 && base_len == 0 && offset >= irot_at as u64 {
                write_be(&mut bytes, pos, offset_len, offset + grown);
            }
            pos += offset_len + length_len;
        }
        if method == 0 && base_len > 0 && base >= irot_at as u64 {
            write_be(&mut bytes, base_at, base_len, base + grown);
        }
    }

    // Grow the enclosing boxes, then insert (the later position first).
    for (at, by) in [
        (meta, grown),
        (iprp, grown),
        (ipco, irot.len() as u64),
        (ipma, association.len() as u64),
    ] {
        let size = read_be(&bytes, at, 4)?;
        write_be(&mut bytes, at, 4, size + by);
    }
    if ipma + ipma_size < association_at {
        return Err("ipma entries run past the box".into());
    }
    bytes.splice(association_at..association_at, association);
    bytes.splice(irot_at..irot_at, irot);
    Ok(bytes)
}

/// Mean absolute difference per channel between two images of the same size.
fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let total: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    total as f64 / a.as_raw().len() as f64
}

fn assert_names(err: &PhotoError, path: &Path) {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let message = err.to_string();
    assert!(
        name.is_some_and(|name| message.contains(&name)),
        "message does not name the file: {message}"
    );
    assert_eq!(err.path(), path);
}

#[test]
fn heic_decodes_close_to_its_jpeg() -> TestResult {
    let dir = tempfile::tempdir()?;
    let Some((jpeg, heic)) = make_heic(&dir, "gradient", &gradient(320, 240), None)? else {
        return Ok(());
    };
    let photo = photo::decode(&heic, &DecodeOptions::default())?;
    assert_eq!(photo.format, PhotoFormat::Heif);
    assert_eq!(photo.image.dimensions(), (320, 240));
    assert_eq!((photo.original_width, photo.original_height), (320, 240));
    let reference = photo::decode(&jpeg, &DecodeOptions::default())?;
    let diff = mean_abs_diff(&photo.image, &reference.image);
    assert!(diff < 4.0, "mean absolute difference {diff:.2}");
    Ok(())
}

#[test]
fn heic_is_recognised_by_content_and_extension_in_any_case() -> TestResult {
    let dir = tempfile::tempdir()?;
    let Some((_, heic)) = make_heic(&dir, "photo", &gradient(64, 48), None)? else {
        return Ok(());
    };
    let bytes = fs::read(&heic)?;
    let sub = dir.path().join("album");
    fs::create_dir(&sub)?;
    let names = [
        "IMG_0001.HEIC",
        "IMG_0002.heif",
        "misnamed.jpg",
        "no_extension",
    ];
    for name in names {
        fs::write(sub.join(name), &bytes)?;
    }
    let found: Vec<String> = photo::scan(&[&sub])?
        .files
        .iter()
        .filter_map(|f| f.path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(found, ["IMG_0001.HEIC", "IMG_0002.heif", "misnamed.jpg"]);
    for name in names {
        let photo = photo::decode(&sub.join(name), &DecodeOptions::default())?;
        assert_eq!(photo.format, PhotoFormat::Heif, "{name}");
        assert_eq!(photo.image.dimensions(), (64, 48), "{name}");
    }
    Ok(())
}

/// A photo as a phone writes it: pixels stored sideways, an `irot` turning them upright and an
/// EXIF orientation 6 saying the same. libheif applies the `irot`; the EXIF orientation must
/// not be applied on top (that would turn the photo twice), nor on its own.
#[test]
fn heic_orientation_comes_from_irot_not_exif() -> TestResult {
    let dir = tempfile::tempdir()?;
    let stored = marked_gradient(320, 240);
    // heif-enc copies the JPEG's EXIF, orientation 6 included, into the HEIC.
    let Some((jpeg, heic)) = make_heic(&dir, "turned", &stored, Some(6))? else {
        return Ok(());
    };
    let upright = photo::decode(&jpeg, &DecodeOptions::default())?.image;
    assert_eq!(upright.dimensions(), (240, 320));
    let bytes = fs::read(&heic)?;
    assert!(
        bytes.windows(6).any(|w| w == b"Exif\0\0") || bytes.windows(4).any(|w| w == b"II*\0"),
        "heif-enc dropped the EXIF block"
    );

    // heif-enc 1.15 writes no irot for the EXIF orientation (later versions may): then the
    // stored pixels are what libheif displays, and so must we.
    let has_irot = bytes.windows(4).any(|w| w == b"irot");
    let expected = if has_irot { &upright } else { &stored };
    let photo = photo::decode(&heic, &DecodeOptions::default())?;
    assert_eq!(
        photo.image.dimensions(),
        expected.dimensions(),
        "irot: {has_irot}"
    );
    let diff = mean_abs_diff(&photo.image, expected);
    assert!(
        diff < 4.0,
        "mean absolute difference {diff:.2} (irot: {has_irot})"
    );

    // With an irot of three quarter turns anticlockwise (= EXIF 6) the photo comes out
    // upright, turned once.
    if !has_irot {
        let turned = dir.path().join("turned_irot.heic");
        fs::write(&turned, add_irot(&bytes, 3)?)?;
        let photo = photo::decode(&turned, &DecodeOptions::default())?;
        assert_eq!(photo.image.dimensions(), (240, 320));
        assert_eq!((photo.original_width, photo.original_height), (240, 320));
        let diff = mean_abs_diff(&photo.image, &upright);
        assert!(diff < 4.0, "mean absolute difference {diff:.2}");
    }
    Ok(())
}

#[test]
fn heic_is_downscaled_to_target() -> TestResult {
    let dir = tempfile::tempdir()?;
    let Some((jpeg, heic)) = make_heic(&dir, "big", &gradient(320, 240), None)? else {
        return Ok(());
    };
    let opts = DecodeOptions {
        target_short_side: Some(120),
        ..DecodeOptions::default()
    };
    let photo = photo::decode(&heic, &opts)?;
    assert_eq!(photo.image.dimensions(), (160, 120));
    assert_eq!((photo.original_width, photo.original_height), (320, 240));
    let reference = photo::decode(&jpeg, &opts)?;
    let diff = mean_abs_diff(&photo.image, &reference.image);
    assert!(diff < 4.0, "mean absolute difference {diff:.2}");
    Ok(())
}

#[test]
fn heic_over_the_pixel_limit_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let Some((_, heic)) = make_heic(&dir, "bomb", &gradient(320, 240), None)? else {
        return Ok(());
    };
    let opts = DecodeOptions {
        max_pixels: 320 * 240 - 1,
        ..DecodeOptions::default()
    };
    let err = photo::decode(&heic, &opts).err();
    assert!(
        matches!(
            err,
            Some(PhotoError::TooLarge {
                width: 320,
                height: 240,
                ..
            })
        ),
        "{err:?}"
    );
    assert_names(&err.ok_or("no error")?, &heic);
    Ok(())
}

#[test]
fn truncated_heic_is_an_error_naming_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let Some((_, heic)) = make_heic(&dir, "whole", &gradient(320, 240), None)? else {
        return Ok(());
    };
    let bytes = fs::read(&heic)?;
    for keep in [bytes.len() / 2, bytes.len() - 100, 600, 100, 30, 12] {
        let path = dir.path().join(format!("cut_{keep}.heic"));
        fs::write(&path, &bytes[..keep])?;
        let err = photo::decode(&path, &DecodeOptions::default()).err();
        assert!(
            matches!(
                err,
                Some(PhotoError::Corrupt { .. } | PhotoError::NotAnImage { .. })
            ),
            "{keep} bytes: {err:?}"
        );
        assert_names(&err.ok_or("no error")?, &path);
    }
    Ok(())
}
