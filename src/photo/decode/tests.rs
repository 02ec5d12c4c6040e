use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::{
    Delay, DynamicImage, Frame, GrayImage, ImageBuffer, ImageFormat, Luma, Rgb, RgbImage, Rgba,
    RgbaImage,
};
use tempfile::TempDir;

use super::{decode, target_size, DecodeOptions};
use crate::photo::PhotoError;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const WHITE: [u8; 3] = [255, 255, 255];

/// Four flat quadrants: red top-left, green top-right, blue bottom-left, white bottom-right.
fn quadrants(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb(match (x < width / 2, y < height / 2) {
            (true, true) => RED,
            (false, true) => GREEN,
            (true, false) => BLUE,
            (false, false) => WHITE,
        })
    })
}

fn jpeg_bytes(image: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 95).encode_image(image)?;
    Ok(bytes)
}

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let path = dir.path().join(name);
    fs::write(&path, bytes)?;
    Ok(path)
}

fn save(dir: &TempDir, name: &str, image: &DynamicImage) -> Result<PathBuf, image::ImageError> {
    let path = dir.path().join(name);
    image.save(&path)?;
    Ok(path)
}

/// Inserts an EXIF APP1 segment holding only `Orientation = orientation` after the SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
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
    let length = u16::try_from(payload.len() + 2).unwrap_or(u16::MAX);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn assert_near(image: &RgbImage, (x, y): (u32, u32), expected: [u8; 3]) {
    let got = image.get_pixel(x, y).0;
    let close = got.iter().zip(expected).all(|(&g, e)| g.abs_diff(e) <= 40);
    assert!(
        close,
        "pixel ({x}, {y}) is {got:?}, expected about {expected:?}"
    );
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
fn empty_file_is_reported_as_empty() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = write(&dir, "empty.jpg", b"")?;
    let err = decode(&path, &DecodeOptions::default()).err();
    assert!(matches!(err, Some(PhotoError::Empty { .. })), "{err:?}");
    assert_names(&err.ok_or("no error")?, &path);
    Ok(())
}

#[test]
fn text_named_jpg_is_not_an_image() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = write(&dir, "notes.jpg", b"shopping list: eggs, milk\n")?;
    let err = decode(&path, &DecodeOptions::default()).err();
    assert!(
        matches!(err, Some(PhotoError::NotAnImage { .. })),
        "{err:?}"
    );
    assert_names(&err.ok_or("no error")?, &path);
    Ok(())
}

#[test]
fn truncated_jpeg_is_corrupt() -> TestResult {
    let dir = tempfile::tempdir()?;
    let bytes = jpeg_bytes(&quadrants(256, 128))?;
    let path = write(&dir, "cut.jpg", &bytes[..bytes.len() / 2])?;
    for target in [None, Some(32)] {
        let opts = DecodeOptions {
            target_short_side: target,
            ..DecodeOptions::default()
        };
        let err = decode(&path, &opts).err();
        assert!(matches!(err, Some(PhotoError::Corrupt { .. })), "{err:?}");
        assert_names(&err.ok_or("no error")?, &path);
    }
    Ok(())
}

#[test]
fn vanished_file() {
    let path = Path::new("/nonexistent-dino-curate-dir/gone.jpg");
    let err = decode(path, &DecodeOptions::default()).err();
    assert!(matches!(err, Some(PhotoError::Vanished { .. })), "{err:?}");
}

#[test]
fn garbage_never_panics() -> TestResult {
    let dir = tempfile::tempdir()?;
    let valid_jpeg = jpeg_bytes(&quadrants(64, 48))?;
    let mut valid_png = Vec::new();
    DynamicImage::ImageRgb8(quadrants(64, 48))
        .write_to(&mut Cursor::new(&mut valid_png), ImageFormat::Png)?;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let prefixes: [&[u8]; 5] = [
        b"",
        b"\xFF\xD8\xFF",
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        b"II*\0",
    ];
    for round in 0..200 {
        let mut bytes = match round % 3 {
            0 => prefixes[round % prefixes.len()].to_vec(),
            1 => valid_jpeg.clone(),
            _ => valid_png.clone(),
        };
        if round % 3 == 0 {
            let extra = (next() % 2000) as usize;
            bytes.extend((0..extra).map(|_| next() as u8));
        } else {
            for _ in 0..1 + next() % 8 {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
        }
        let path = write(&dir, "fuzz.jpg", &bytes)?;
        let opts = DecodeOptions {
            target_short_side: [None, Some(16)][round % 2],
            ..DecodeOptions::default()
        };
        if let Err(err) = decode(&path, &opts) {
            assert_names(&err, &path);
        }
    }
    Ok(())
}

#[test]
fn bomb_is_refused_before_decoding() -> TestResult {
    let dir = tempfile::tempdir()?;
    let opts = DecodeOptions {
        max_pixels: 5000,
        ..DecodeOptions::default()
    };
    let png = save(
        &dir,
        "big.png",
        &DynamicImage::ImageRgb8(quadrants(100, 100)),
    )?;
    let jpeg = write(&dir, "big.jpg", &jpeg_bytes(&quadrants(100, 100))?)?;
    for path in [png, jpeg] {
        let err = decode(&path, &opts).err();
        assert!(
            matches!(
                err,
                Some(PhotoError::TooLarge {
                    width: 100,
                    height: 100,
                    max_pixels: 5000,
                    ..
                })
            ),
            "{err:?}"
        );
        assert_names(&err.ok_or("no error")?, &path);
    }
    Ok(())
}

#[test]
fn every_format_and_pixel_type_becomes_rgb() -> TestResult {
    let dir = tempfile::tempdir()?;
    let rgba = RgbaImage::from_pixel(8, 6, Rgba([10, 200, 30, 7]));
    let wide: ImageBuffer<Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_pixel(8, 6, Rgb([65535, 32896, 0]));
    let grey = GrayImage::from_pixel(8, 6, Luma([77]));
    let cases = [
        (
            "rgba.png",
            DynamicImage::ImageRgba8(rgba.clone()),
            [10, 200, 30],
        ),
        ("deep.png", DynamicImage::ImageRgb16(wide), [255, 128, 0]),
        ("grey.png", DynamicImage::ImageLuma8(grey.clone()), [77; 3]),
        ("grey.jpg", DynamicImage::ImageLuma8(grey), [77; 3]),
        (
            "rgba.webp",
            DynamicImage::ImageRgba8(rgba.clone()),
            [10, 200, 30],
        ),
        (
            "rgba.tiff",
            DynamicImage::ImageRgba8(rgba.clone()),
            [10, 200, 30],
        ),
        ("rgba.bmp", DynamicImage::ImageRgba8(rgba), [10, 200, 30]),
    ];
    for (name, image, expected) in cases {
        let path = save(&dir, name, &image)?;
        let photo = decode(&path, &DecodeOptions::default())?;
        assert_eq!(photo.image.dimensions(), (8, 6), "{name}");
        assert_near(&photo.image, (3, 3), expected);
        if !name.ends_with(".jpg") {
            assert_eq!(photo.image.get_pixel(3, 3).0, expected, "{name}");
        }
    }
    Ok(())
}

#[test]
fn gif_gives_first_frame() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut bytes);
        let frames = [[255, 0, 0, 255], [0, 0, 255, 255]].map(|colour| {
            Frame::from_parts(
                RgbaImage::from_pixel(10, 7, Rgba(colour)),
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            )
        });
        encoder.encode_frames(frames)?;
    }
    let path = write(&dir, "anim.gif", &bytes)?;
    let photo = decode(&path, &DecodeOptions::default())?;
    assert_eq!(photo.format, ImageFormat::Gif);
    assert_eq!(photo.image.dimensions(), (10, 7));
    assert_near(&photo.image, (5, 3), RED);
    Ok(())
}

#[test]
fn exif_orientation_6_rotates_clockwise() -> TestResult {
    let dir = tempfile::tempdir()?;
    let bytes = with_exif_orientation(&jpeg_bytes(&quadrants(64, 32))?, 6);
    let path = write(&dir, "rotated.jpg", &bytes)?;
    let photo = decode(&path, &DecodeOptions::default())?;
    assert_eq!(photo.image.dimensions(), (32, 64));
    assert_eq!((photo.original_width, photo.original_height), (32, 64));
    // Turned a quarter clockwise: the bottom-left corner comes to the top left.
    assert_near(&photo.image, (8, 16), BLUE);
    assert_near(&photo.image, (24, 16), RED);
    assert_near(&photo.image, (24, 48), GREEN);
    assert_near(&photo.image, (8, 48), WHITE);
    Ok(())
}

#[test]
fn exif_orientation_with_downscaling_is_applied_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let bytes = with_exif_orientation(&jpeg_bytes(&quadrants(1600, 800))?, 6);
    let path = write(&dir, "rotated-big.jpg", &bytes)?;
    let opts = DecodeOptions {
        target_short_side: Some(100),
        ..DecodeOptions::default()
    };
    let photo = decode(&path, &opts)?;
    assert_eq!(photo.image.dimensions(), (100, 200));
    assert_eq!((photo.original_width, photo.original_height), (800, 1600));
    assert_near(&photo.image, (25, 50), BLUE);
    assert_near(&photo.image, (75, 50), RED);
    assert_near(&photo.image, (75, 150), GREEN);
    Ok(())
}

#[test]
fn large_jpeg_is_downscaled_to_target() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = write(&dir, "big.jpg", &jpeg_bytes(&quadrants(1600, 1200))?)?;
    let opts = DecodeOptions {
        target_short_side: Some(300),
        ..DecodeOptions::default()
    };
    let photo = decode(&path, &opts)?;
    let (width, height) = photo.image.dimensions();
    assert!((300..600).contains(&width.min(height)), "{width}x{height}");
    let aspect = f64::from(width) / f64::from(height);
    assert!(
        (aspect / (1600.0 / 1200.0) - 1.0).abs() < 0.01,
        "{width}x{height}"
    );
    assert_eq!((photo.original_width, photo.original_height), (1600, 1200));
    assert_near(&photo.image, (width / 4, height / 4), RED);
    assert_near(&photo.image, (3 * width / 4, 3 * height / 4), WHITE);
    Ok(())
}

#[test]
fn large_png_is_downscaled_to_target() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = save(
        &dir,
        "big.png",
        &DynamicImage::ImageRgb8(quadrants(400, 300)),
    )?;
    let opts = DecodeOptions {
        target_short_side: Some(100),
        ..DecodeOptions::default()
    };
    let photo = decode(&path, &opts)?;
    assert_eq!(photo.image.dimensions(), (133, 100));
    assert_near(&photo.image, (100, 25), GREEN);
    Ok(())
}

#[test]
fn photo_smaller_than_target_is_untouched() -> TestResult {
    let dir = tempfile::tempdir()?;
    let image = quadrants(200, 100);
    let path = save(&dir, "small.png", &DynamicImage::ImageRgb8(image.clone()))?;
    let jpeg = write(&dir, "small.jpg", &jpeg_bytes(&image)?)?;
    let opts = DecodeOptions {
        target_short_side: Some(300),
        ..DecodeOptions::default()
    };
    assert_eq!(decode(&path, &opts)?.image, image);
    assert_eq!(decode(&jpeg, &opts)?.image.dimensions(), (200, 100));
    Ok(())
}

#[test]
fn target_size_keeps_aspect() {
    assert_eq!(target_size((1600, 1200), 300), Some((400, 300)));
    assert_eq!(target_size((1200, 1600), 300), Some((300, 400)));
    assert_eq!(target_size((300, 900), 300), None);
    assert_eq!(target_size((1000, 900), 0), None);
}

#[test]
fn unreadable_file() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let path = write(&dir, "locked.jpg", &jpeg_bytes(&quadrants(16, 16))?)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000))?;
    let can_still_read = fs::read(&path).is_ok(); // running as root
    let result = decode(&path, &DecodeOptions::default());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
    if !can_still_read {
        let err = result.err();
        assert!(
            matches!(err, Some(PhotoError::Unreadable { .. })),
            "{err:?}"
        );
        assert_names(&err.ok_or("no error")?, &path);
    }
    Ok(())
}

/// The start of a HEIC file: its `ftyp` box and the header of a `meta` box, no image.
fn heic_header() -> Vec<u8> {
    let mut bytes = 24u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(b"ftypheic\0\0\0\0mif1heic");
    bytes.extend_from_slice(&40u32.to_be_bytes());
    bytes.extend_from_slice(b"meta\0\0\0\0");
    bytes
}

#[cfg(not(feature = "heic"))]
#[test]
fn heic_without_the_feature_is_refused_saying_why() -> TestResult {
    let dir = tempfile::tempdir()?;
    let paths = [
        // Recognised by content, whatever the extension...
        write(&dir, "IMG_0001.heic", &heic_header())?,
        write(&dir, "IMG_0002.jpg", &heic_header())?,
        // ...or by extension when the content is not recognised.
        write(&dir, "IMG_0003.HEIF", b"not really a HEIF file")?,
    ];
    for path in paths {
        let err = decode(&path, &DecodeOptions::default()).err();
        assert!(
            matches!(err, Some(PhotoError::Unsupported { .. })),
            "{err:?}"
        );
        let err = err.ok_or("no error")?;
        assert_names(&err, &path);
        let reason = err.reason();
        assert!(
            reason.contains("no HEIC support") && reason.contains("--features heic"),
            "{reason}"
        );
    }
    Ok(())
}

#[test]
fn broken_heic_is_an_error_naming_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let header = heic_header();
    let paths = [
        write(&dir, "header_only.heic", &header)?,
        write(&dir, "cut.heic", &header[..12])?,
        write(&dir, "garbage.heic", b"\x00\x01\x02 not a photo at all")?,
        write(&dir, "ftyp_only.jpg", &header[..24])?,
    ];
    for path in paths {
        let err = decode(&path, &DecodeOptions::default()).err();
        assert_names(&err.ok_or("decoded a broken HEIC")?, &path);
    }
    Ok(())
}
