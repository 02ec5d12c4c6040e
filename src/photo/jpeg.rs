//! JPEG decoding with jpeg-decoder, which can reduce a photo 2, 4 or 8 times while decoding
//! (DCT scaling): a 48-megapixel phone photo wanted at 256 pixels costs a fraction of a full
//! decode.

use std::io::Read;
use std::path::Path;

use exif::{In, Tag};
use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};
use jpeg_decoder::{Decoder, ImageInfo, PixelFormat};

use super::decode::{check_pixels, DecodeOptions, Decoded};
use super::error::PhotoError;

/// Decodes a JPEG, DCT-scaled as far as [`DecodeOptions::target_short_side`] allows.
///
/// Returns [`PhotoError::Unsupported`] for what jpeg-decoder cannot do (arithmetic coding,
/// 12-bit or lossless data...), so that the caller can try another decoder.
pub(super) fn decode<R: Read>(
    path: &Path,
    reader: R,
    opts: &DecodeOptions,
) -> Result<Decoded, PhotoError> {
    let mut decoder = Decoder::new(reader);
    decoder.read_info().map_err(|err| jpeg_error(path, err))?;
    let info = frame_info(path, &decoder)?;
    let stored_size = (u32::from(info.width), u32::from(info.height));
    check_pixels(path, stored_size, opts)?;
    let max_bytes = opts.max_pixels.saturating_mul(4);
    decoder.set_max_decoding_buffer_size(usize::try_from(max_bytes).unwrap_or(usize::MAX));
    if let Some(target) = opts.target_short_side.filter(|&target| target > 0) {
        apply_dct_scale(path, &mut decoder, &info, target)?;
    }
    let pixels = decoder.decode().map_err(|err| jpeg_error(path, err))?;
    let image = to_rgb(path, pixels, &frame_info(path, &decoder)?)?;
    Ok(Decoded {
        image,
        stored_size,
        orientation: exif_orientation(decoder.exif_data()),
    })
}

fn frame_info<R: Read>(path: &Path, decoder: &Decoder<R>) -> Result<ImageInfo, PhotoError> {
    decoder
        .info()
        .ok_or_else(|| PhotoError::corrupt(path, "no frame header"))
}

/// Side length after DCT scaling by `eighths` / 8, rounded up as jpeg-decoder does.
fn scaled_side(side: u16, eighths: u16) -> u16 {
    // At most 65535 * 8 / 8: fits back in a u16.
    let scaled = (u32::from(side) * u32::from(eighths)).div_ceil(8);
    u16::try_from(scaled).unwrap_or(side)
}

/// The strongest reduction (in eighths: 1, 2, 4 or 8) keeping the shorter side >= `target`.
pub(super) fn dct_eighths(width: u16, height: u16, target: u32) -> u16 {
    let short = width.min(height);
    [1, 2, 4]
        .into_iter()
        .find(|&eighths| u32::from(scaled_side(short, eighths)) >= target)
        .unwrap_or(8)
}

fn apply_dct_scale<R: Read>(
    path: &Path,
    decoder: &mut Decoder<R>,
    info: &ImageInfo,
    target: u32,
) -> Result<(), PhotoError> {
    let eighths = dct_eighths(info.width, info.height, target);
    if eighths == 8 {
        return Ok(());
    }
    let request = (
        scaled_side(info.width, eighths),
        scaled_side(info.height, eighths),
    );
    let (width, height) = decoder
        .scale(request.0, request.1)
        .map_err(|err| jpeg_error(path, err))?;
    if u32::from(width.min(height)) < target {
        // jpeg-decoder picked a stronger reduction than asked (tiny sides): decode in full.
        decoder
            .scale(info.width, info.height)
            .map_err(|err| jpeg_error(path, err))?;
    }
    Ok(())
}

fn to_rgb(path: &Path, pixels: Vec<u8>, info: &ImageInfo) -> Result<RgbImage, PhotoError> {
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    let short_buffer = || PhotoError::corrupt(path, "decoded data shorter than the image");
    match info.pixel_format {
        PixelFormat::RGB24 => RgbImage::from_raw(width, height, pixels).ok_or_else(short_buffer),
        PixelFormat::L8 => GrayImage::from_raw(width, height, pixels)
            .map(|gray| DynamicImage::ImageLuma8(gray).into_rgb8())
            .ok_or_else(short_buffer),
        PixelFormat::CMYK32 => {
            RgbImage::from_raw(width, height, cmyk_to_rgb(&pixels)).ok_or_else(short_buffer)
        }
        PixelFormat::L16 => Err(PhotoError::unsupported(path, "16-bit JPEG")),
    }
}

/// CMYK as jpeg-decoder gives it (ink amounts, 0 = no ink) to RGB.
pub(super) fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let ink = |channel: u8, black: u8| {
        let light = u16::from(255 - channel) * u16::from(255 - black);
        // At most 255 * 255 / 255.
        u8::try_from((light + 127) / 255).unwrap_or(u8::MAX)
    };
    cmyk.chunks_exact(4)
        .flat_map(|px| [ink(px[0], px[3]), ink(px[1], px[3]), ink(px[2], px[3])])
        .collect()
}

/// Orientation from the raw EXIF block (TIFF data after `Exif\0\0`); anything missing or
/// unreadable means "as stored".
pub(super) fn exif_orientation(raw: Option<&[u8]>) -> Orientation {
    raw.and_then(|raw| exif::Reader::new().read_raw(raw.to_vec()).ok())
        .and_then(|exif| {
            exif.get_field(Tag::Orientation, In::PRIMARY)
                .and_then(|field| field.value.get_uint(0))
        })
        .and_then(|value| u8::try_from(value).ok())
        .and_then(Orientation::from_exif)
        .unwrap_or(Orientation::NoTransforms)
}

fn jpeg_error(path: &Path, err: jpeg_decoder::Error) -> PhotoError {
    match err {
        jpeg_decoder::Error::Io(io) => PhotoError::from_io(path, io),
        jpeg_decoder::Error::Unsupported(feature) => {
            PhotoError::unsupported(path, format!("JPEG feature {feature:?}"))
        }
        other => PhotoError::corrupt(path, other),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::path::Path;

    use image::codecs::jpeg::JpegEncoder;
    use image::{Rgb, RgbImage};

    use super::{cmyk_to_rgb, dct_eighths, decode};
    use crate::photo::DecodeOptions;

    #[test]
    fn dct_reduction_keeps_short_side_above_target() {
        // 4000x3000 to 256: 1/8 gives 375 >= 256.
        assert_eq!(dct_eighths(4000, 3000, 256), 1);
        // 1600x1200 to 300: 1/4 gives 300, 1/8 only 150.
        assert_eq!(dct_eighths(1600, 1200, 300), 2);
        assert_eq!(dct_eighths(1600, 1200, 301), 4);
        assert_eq!(dct_eighths(1600, 1200, 1200), 8);
    }

    #[test]
    fn jpeg_is_reduced_while_decoding() -> Result<(), Box<dyn std::error::Error>> {
        let mut bytes = Vec::new();
        let image = RgbImage::from_pixel(1600, 1200, Rgb([90, 120, 150]));
        JpegEncoder::new_with_quality(&mut bytes, 90).encode_image(&image)?;
        let opts = DecodeOptions {
            target_short_side: Some(300),
            ..DecodeOptions::default()
        };
        let decoded = decode(Path::new("x.jpg"), Cursor::new(&bytes), &opts)?;
        assert_eq!(decoded.image.dimensions(), (400, 300));
        assert_eq!(decoded.stored_size, (1600, 1200));
        Ok(())
    }

    #[test]
    fn cmyk_conversion() {
        let rgb = cmyk_to_rgb(&[0, 0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 255, 0, 128, 255, 0]);
        assert_eq!(rgb, [255, 255, 255, 0, 255, 255, 0, 0, 0, 255, 127, 0]);
    }
}
