//! HEIF (HEIC) photos through libheif (feature `heic`).
//!
//! libheif carries out the transformations stored in the file (`irot` rotation, `imir`
//! mirroring, `clap` cropping) while decoding, so the image it hands back is already upright:
//! the orientation passed on is always [`Orientation::NoTransforms`], and any EXIF orientation
//! in the file is ignored, as the HEIF specification asks (applying it too would turn the
//! photo twice).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::OnceLock;

use image::metadata::Orientation;
use image::RgbImage;
use libheif_rs::{
    ColorSpace, HeifContext, HeifError, HeifErrorCode, HeifErrorSubCode, LibHeif, RgbChroma,
};

use super::decode::{check_pixels, too_large, DecodeOptions, Decoded};
use super::error::PhotoError;

/// Bytes a HEIF file may hold beyond 3 a pixel (metadata, thumbnails, auxiliary images).
const MAX_BYTES_SLACK: u64 = 64 << 20;

/// libheif, initialised once for the whole process (and its plugins loaded once).
fn libheif() -> &'static LibHeif {
    static LIBHEIF: OnceLock<LibHeif> = OnceLock::new();
    LIBHEIF.get_or_init(LibHeif::new)
}

/// Decodes the primary image of the HEIF file read by `reader` into upright 8-bit RGB, at
/// full size (the caller downscales). The size is checked against
/// [`DecodeOptions::max_pixels`] before any pixel is decoded.
pub(super) fn decode(
    path: &Path,
    mut reader: BufReader<File>,
    opts: &DecodeOptions,
) -> Result<Decoded, PhotoError> {
    let lib = libheif(); // initialised before any context is made
                         // libheif reads from memory. A real photo is far smaller than its raw pixels: refuse to
                         // load more than that (a bomb made of a huge file rather than huge dimensions).
    let cap = opts
        .max_pixels
        .saturating_mul(3)
        .saturating_add(MAX_BYTES_SLACK);
    let mut bytes = Vec::new();
    reader
        .by_ref()
        .take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|err| PhotoError::from_io(path, err))?;
    if bytes.len() as u64 > cap {
        return Err(PhotoError::unsupported(
            path,
            format!(
                "HEIF file over {cap} bytes, more than {} pixels need",
                opts.max_pixels
            ),
        ));
    }
    let context = HeifContext::read_from_bytes(&bytes).map_err(|err| heif_error(path, err))?;
    let handle = context
        .primary_image_handle()
        .map_err(|err| heif_error(path, err))?;

    // Size once upright (after rotation and cropping), and the coded size ("ispe"), which is
    // what the decoder allocates; both must fit the limit.
    let size = (handle.width(), handle.height());
    let coded = (
        u32::try_from(handle.ispe_width()).unwrap_or(0),
        u32::try_from(handle.ispe_height()).unwrap_or(0),
    );
    if size.0 == 0 || size.1 == 0 {
        return Err(PhotoError::corrupt(path, "HEIF image of zero size"));
    }
    check_pixels(path, size, opts)?;
    check_pixels(path, coded, opts)?;

    let image = lib
        .decode(&handle, ColorSpace::Rgb(RgbChroma::Rgb), None)
        .map_err(|err| match is_limit(&err) {
            true => too_large(path, size, opts),
            false => heif_error(path, err),
        })?;
    let image = to_rgb(path, &image)?;
    let stored_size = image.dimensions();
    Ok(Decoded {
        image,
        stored_size,
        orientation: Orientation::NoTransforms,
    })
}

/// Copies libheif's interleaved 8-bit RGB plane (rows may be padded) into an [`RgbImage`].
fn to_rgb(path: &Path, image: &libheif_rs::Image) -> Result<RgbImage, PhotoError> {
    let planes = image.planes();
    let plane = planes
        .interleaved
        .ok_or_else(|| PhotoError::corrupt(path, "libheif returned no RGB plane"))?;
    if plane.storage_bits_per_pixel != 24 {
        return Err(PhotoError::unsupported(
            path,
            format!(
                "libheif returned {} bits per RGB pixel, expected 24",
                plane.storage_bits_per_pixel
            ),
        ));
    }
    let (width, height) = (plane.width, plane.height);
    let row = width as usize * 3;
    if width == 0 || height == 0 || plane.stride < row {
        return Err(PhotoError::corrupt(
            path,
            format!(
                "libheif returned a bad RGB plane ({width}x{height}, {} bytes a row)",
                plane.stride
            ),
        ));
    }
    let mut pixels = Vec::with_capacity(row * height as usize);
    for y in 0..height as usize {
        let start = y * plane.stride;
        let line = plane
            .data
            .get(start..start + row)
            .ok_or_else(|| PhotoError::corrupt(path, "libheif returned a short RGB plane"))?;
        pixels.extend_from_slice(line);
    }
    RgbImage::from_raw(width, height, pixels)
        .ok_or_else(|| PhotoError::corrupt(path, "libheif returned a short RGB plane"))
}

/// Whether libheif refused to allocate or hit one of its own security limits.
fn is_limit(err: &HeifError) -> bool {
    matches!(err.code, HeifErrorCode::MemoryAllocationError)
        || matches!(err.sub_code, HeifErrorSubCode::SecurityLimitExceeded)
}

/// Maps a libheif error to a [`PhotoError`] naming the file and what libheif said.
fn heif_error(path: &Path, err: HeifError) -> PhotoError {
    let detail = describe(&err);
    match err.code {
        HeifErrorCode::UnsupportedFileType => PhotoError::NotAnImage {
            path: path.to_path_buf(),
        },
        HeifErrorCode::UnsupportedFeature | HeifErrorCode::PluginLoadingError => {
            PhotoError::unsupported(path, detail)
        }
        HeifErrorCode::DecoderPluginError
            if matches!(
                err.sub_code,
                HeifErrorSubCode::UnsupportedCodec | HeifErrorSubCode::PluginIsNotLoaded
            ) =>
        {
            PhotoError::unsupported(path, detail)
        }
        _ => PhotoError::corrupt(path, detail),
    }
}

/// libheif's message, with its codes when it gives none.
fn describe(err: &HeifError) -> String {
    let message = err.message.trim();
    match message.is_empty() {
        true => format!("HEIF: libheif error {:?} ({:?})", err.code, err.sub_code),
        false => format!("HEIF: {message}"),
    }
}
