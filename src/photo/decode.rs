//! Decoding one photo into an upright, optionally downscaled, 8-bit RGB image.

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Read, Seek};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};

use super::error::PhotoError;
use super::format::{self, PhotoFormat};
#[cfg(feature = "heic")]
use super::heic;
use super::jpeg;
use super::libjpeg;
use super::raw;

/// Default [`DecodeOptions::max_pixels`]: 100 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Memory allowed to the decoders beyond the pixels themselves (tables, metadata).
const ALLOC_SLACK: u64 = 64 << 20;

/// How [`decode`] treats a photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Largest width x height accepted, read from the header before any pixel is decoded.
    pub max_pixels: u64,
    /// When set, a photo whose shorter side is longer is downscaled so that its shorter side
    /// is exactly this many pixels, keeping the aspect ratio. `Some(0)` means no downscaling.
    pub target_short_side: Option<u32>,
    /// The JPEG decoder to use.
    pub jpeg: JpegDecoder,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            target_short_side: None,
            jpeg: JpegDecoder::Libjpeg,
        }
    }
}

/// Which decoder reads JPEG files first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JpegDecoder {
    /// libjpeg-turbo (built into the `mozjpeg` crate): the fastest; jpeg-decoder, then
    /// `image`, take what it refuses.
    #[default]
    Libjpeg,
    /// jpeg-decoder (pure Rust), then `image`: the decoder before libjpeg-turbo, kept to
    /// compare with (`bench read --jpeg jpeg-decoder`).
    JpegDecoder,
}

/// A decoded photo.
#[derive(Debug, Clone)]
pub struct Photo {
    /// The pixels: upright, 8-bit RGB, possibly downscaled.
    pub image: RgbImage,
    /// Width of the full-size photo once upright, in pixels.
    pub original_width: u32,
    /// Height of the full-size photo once upright, in pixels.
    pub original_height: u32,
    /// The format found in the content (from the extension only for a `.heic`/`.heif` file
    /// whose content is not recognised).
    pub format: PhotoFormat,
}

/// What a format-specific decoder hands back before the common finishing steps.
#[derive(Debug)]
pub(super) struct Decoded {
    /// RGB pixels, not yet oriented, possibly already reduced (JPEG DCT scaling).
    pub image: RgbImage,
    /// Full size as stored in the file, before orientation.
    pub stored_size: (u32, u32),
    /// Orientation to apply.
    pub orientation: Orientation,
}

/// Formats [`decode`] accepts; others are refused as unsupported even if the `image` crate
/// knows them, to keep the attack surface to what photo collections hold.
const SUPPORTED_FORMATS: [ImageFormat; 6] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Tiff,
    ImageFormat::Bmp,
];

/// Decodes the photo at `path` into an upright 8-bit RGB image.
///
/// The format is sniffed from the content; HEIF (HEIC) photos, recognised by their `ftyp` box
/// or else by a `.heic`/`.heif` extension, need the `heic` feature (libheif), and fail with a
/// [`PhotoError::Unsupported`] saying so without it. The size in the header is checked
/// against [`DecodeOptions::max_pixels`] before decoding. The EXIF orientation is applied
/// (once; for HEIF, libheif applies the file's rotation and mirroring and EXIF is ignored).
/// Grey, alpha, 16-bit and palette images all become 8-bit RGB (alpha is dropped); a GIF
/// gives its first frame. With [`DecodeOptions::target_short_side`], large photos are
/// downscaled, JPEGs first in the DCT domain, then once with a Lanczos3 filter.
///
/// Safe to call from many threads at once; never panics on bad input (a decoder panic is
/// caught and reported as a corrupt image).
pub fn decode(path: &Path, opts: &DecodeOptions) -> Result<Photo, PhotoError> {
    if raw::has_raw_extension(path) {
        return decode_raw(path, opts);
    }
    let mut file = BufReader::new(open(path)?);
    let header = file
        .fill_buf()
        .map_err(|err| PhotoError::from_io(path, err))?;
    if format::is_heif(header) {
        return decode_heif(path, file, opts);
    }
    let reader = ImageReader::new(file)
        .with_guessed_format()
        .map_err(|err| PhotoError::from_io(path, err))?;
    let Some(format) = reader.format() else {
        if format::has_heif_extension(path) {
            return decode_heif(path, reader.into_inner(), opts);
        }
        return Err(PhotoError::NotAnImage {
            path: path.to_path_buf(),
        });
    };
    if !SUPPORTED_FORMATS.contains(&format) {
        return Err(PhotoError::unsupported(
            path,
            format!("{format:?} is not a supported photo format"),
        ));
    }
    let decoded = catch_panics(path, || match format {
        ImageFormat::Jpeg => decode_jpeg(path, reader.into_inner(), opts),
        _ => decode_generic(path, reader, opts),
    })?;
    finish(path, decoded, opts, format.into())
}

/// A camera RAW file, through its embedded JPEG preview.
fn decode_raw(path: &Path, opts: &DecodeOptions) -> Result<Photo, PhotoError> {
    let mut bytes = Vec::new();
    open(path)?
        .read_to_end(&mut bytes)
        .map_err(|err| PhotoError::from_io(path, err))?;
    let decoded = catch_panics(path, || raw::decode(path, &bytes, opts))?;
    finish(path, decoded, opts, PhotoFormat::Raw)
}

/// A HEIF photo, through libheif, which applies the rotation and mirroring in the file itself.
#[cfg(feature = "heic")]
fn decode_heif(
    path: &Path,
    reader: BufReader<File>,
    opts: &DecodeOptions,
) -> Result<Photo, PhotoError> {
    let decoded = catch_panics(path, || heic::decode(path, reader, opts))?;
    finish(path, decoded, opts, PhotoFormat::Heif)
}

/// Without the `heic` feature a HEIF photo is refused, saying why.
#[cfg(not(feature = "heic"))]
fn decode_heif(
    path: &Path,
    _reader: BufReader<File>,
    _opts: &DecodeOptions,
) -> Result<Photo, PhotoError> {
    Err(PhotoError::unsupported(path, NO_HEIC_SUPPORT))
}

/// Why a HEIF photo is refused by a build without the `heic` feature.
#[cfg(not(feature = "heic"))]
const NO_HEIC_SUPPORT: &str =
    "HEIC/HEIF photo: this build has no HEIC support (build with --features heic)";

/// Opens the file, telling apart a vanished, an unreadable and an empty one.
fn open(path: &Path) -> Result<File, PhotoError> {
    let file = File::open(path).map_err(|err| PhotoError::from_io(path, err))?;
    let meta = file
        .metadata()
        .map_err(|err| PhotoError::from_io(path, err))?;
    if meta.len() == 0 {
        return Err(PhotoError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(file)
}

/// JPEG through libjpeg-turbo (the fast path), then jpeg-decoder, then `image`: each one
/// takes over what the one before calls unsupported (CMYK, arithmetic coding, 12-bit...).
fn decode_jpeg(
    path: &Path,
    mut reader: BufReader<File>,
    opts: &DecodeOptions,
) -> Result<Decoded, PhotoError> {
    let mut bytes = Vec::new();
    reader
        .rewind()
        .and_then(|()| reader.read_to_end(&mut bytes))
        .map_err(|err| PhotoError::from_io(path, err))?;
    if opts.jpeg == JpegDecoder::Libjpeg {
        match libjpeg::decode(path, &bytes, opts) {
            Err(PhotoError::Unsupported { .. }) => {}
            result => return result.map(|(decoded, _)| decoded),
        }
    }
    match jpeg::decode(path, Cursor::new(&bytes), opts) {
        Err(PhotoError::Unsupported { .. }) => decode_generic(
            path,
            ImageReader::with_format(Cursor::new(bytes), ImageFormat::Jpeg),
            opts,
        ),
        result => result,
    }
}

/// Any format through the `image` crate's decoders, with allocation limits.
fn decode_generic<R: BufRead + Seek>(
    path: &Path,
    mut reader: ImageReader<R>,
    opts: &DecodeOptions,
) -> Result<Decoded, PhotoError> {
    reader.limits(limits(opts));
    let mut decoder = reader
        .into_decoder()
        .map_err(|err| image_error(path, err, None, opts))?;
    let stored_size = decoder.dimensions();
    check_pixels(path, stored_size, opts)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let image = DynamicImage::from_decoder(decoder)
        .map_err(|err| image_error(path, err, Some(stored_size), opts))?
        .into_rgb8();
    Ok(Decoded {
        image,
        stored_size,
        orientation,
    })
}

fn limits(opts: &DecodeOptions) -> Limits {
    let mut limits = Limits::default();
    // Up to 8 bytes a pixel (16-bit RGBA) for the largest image allowed.
    limits.max_alloc = Some(
        opts.max_pixels
            .saturating_mul(8)
            .saturating_add(ALLOC_SLACK),
    );
    limits
}

/// Refuses a stored size above [`DecodeOptions::max_pixels`].
pub(super) fn check_pixels(
    path: &Path,
    (width, height): (u32, u32),
    opts: &DecodeOptions,
) -> Result<(), PhotoError> {
    if u64::from(width) * u64::from(height) > opts.max_pixels {
        return Err(too_large(path, (width, height), opts));
    }
    Ok(())
}

pub(super) fn too_large(
    path: &Path,
    (width, height): (u32, u32),
    opts: &DecodeOptions,
) -> PhotoError {
    PhotoError::TooLarge {
        path: path.to_path_buf(),
        width,
        height,
        max_pixels: opts.max_pixels,
    }
}

fn image_error(
    path: &Path,
    err: ImageError,
    stored_size: Option<(u32, u32)>,
    opts: &DecodeOptions,
) -> PhotoError {
    match err {
        ImageError::IoError(io) => PhotoError::from_io(path, io),
        ImageError::Unsupported(detail) => PhotoError::unsupported(path, detail),
        ImageError::Limits(detail) => match stored_size {
            Some(size) => too_large(path, size, opts),
            None => PhotoError::corrupt(path, detail),
        },
        other => PhotoError::corrupt(path, other),
    }
}

/// Runs a third-party decoder, turning a panic on hostile data into an error.
fn catch_panics<T>(
    path: &Path,
    decode: impl FnOnce() -> Result<T, PhotoError>,
) -> Result<T, PhotoError> {
    panic::catch_unwind(AssertUnwindSafe(decode)).unwrap_or_else(|_| {
        Err(PhotoError::corrupt(
            path,
            "the decoder crashed on this data",
        ))
    })
}

/// Downscales to the target, then orients.
fn finish(
    path: &Path,
    decoded: Decoded,
    opts: &DecodeOptions,
    format: PhotoFormat,
) -> Result<Photo, PhotoError> {
    let Decoded {
        mut image,
        stored_size: (width, height),
        orientation,
    } = decoded;
    if let Some(size) = opts
        .target_short_side
        .and_then(|target| target_size((width, height), target))
    {
        if image.dimensions() != size {
            image = resize(path, &image, size)?;
        }
    }
    let mut oriented = DynamicImage::ImageRgb8(image);
    oriented.apply_orientation(orientation);
    let (original_width, original_height) = match swaps_sides(orientation) {
        true => (height, width),
        false => (width, height),
    };
    Ok(Photo {
        image: oriented.into_rgb8(),
        original_width,
        original_height,
        format,
    })
}

/// Size whose shorter side is `target`, same aspect as `(width, height)`; `None` when the
/// image is not larger than that (or the target is 0).
pub(super) fn target_size((width, height): (u32, u32), target: u32) -> Option<(u32, u32)> {
    let short = width.min(height);
    if target == 0 || short <= target {
        return None;
    }
    let scale = |side: u32| {
        let scaled =
            (u64::from(side) * u64::from(target) + u64::from(short) / 2) / u64::from(short);
        u32::try_from(scaled).unwrap_or(u32::MAX).max(target)
    };
    Some((scale(width), scale(height)))
}

fn resize(
    path: &Path,
    image: &RgbImage,
    (width, height): (u32, u32),
) -> Result<RgbImage, PhotoError> {
    let mut resized = RgbImage::new(width, height);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    Resizer::new()
        .resize(image, &mut resized, &options)
        .map_err(|err| PhotoError::corrupt(path, format!("resizing failed: {err}")))?;
    Ok(resized)
}

fn swaps_sides(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

#[cfg(test)]
mod tests;
