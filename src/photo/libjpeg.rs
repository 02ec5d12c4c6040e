//! JPEG through libjpeg-turbo's decoder, as the `mozjpeg` crate builds it (SIMD with NASM):
//! about twice jpeg-decoder's speed, with DCT scaling to any n/8 (n = 1..8) and, for a
//! progressive file wanted at 1/8, its luma AC scans skipped ([`JpegLayout::dc_scans_only`]).
//! What it refuses (CMYK, a broken marker structure) goes to the jpeg-decoder path.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use image::RgbImage;
use mozjpeg::{ColorSpace, Decompress, Marker};

use super::decode::{check_pixels, DecodeOptions, Decoded};
use super::error::PhotoError;
use super::jpeg::exif_orientation;
use super::jpeg_layout::JpegLayout;

/// What the libjpeg path read from a file besides the pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    /// The whole file was decoded.
    Whole,
    /// A progressive file was decoded without the scans a 1/8 decode does not read.
    DcScans,
}

/// Decodes a whole JPEG file held in memory, reduced in the DCT as far as
/// [`DecodeOptions::target_short_side`] allows.
pub(super) fn decode(
    path: &Path,
    bytes: &[u8],
    opts: &DecodeOptions,
) -> Result<(Decoded, Stream), PhotoError> {
    let Some(layout) = JpegLayout::read(bytes) else {
        return Err(PhotoError::unsupported(path, "JPEG marker structure"));
    };
    if !layout.complete {
        return Err(PhotoError::corrupt(
            path,
            "the file ends before the image does",
        ));
    }
    if layout.height == 0 {
        return Err(PhotoError::unsupported(path, "JPEG height in a DNL marker"));
    }
    let stored_size = (u32::from(layout.width), u32::from(layout.height));
    check_pixels(path, stored_size, opts)?;
    let eighths = opts
        .target_short_side
        .filter(|&target| target > 0)
        .map_or(8, |target| scale_eighths(stored_size, target));
    let dc_stream = (eighths == 1)
        .then(|| layout.dc_scans_only(bytes))
        .flatten();
    let stream = if dc_stream.is_some() {
        Stream::DcScans
    } else {
        Stream::Whole
    };
    let data = dc_stream.as_deref().unwrap_or(bytes);
    // libjpeg reports a fatal error by unwinding with its message (the crate's error
    // manager): caught here to keep that message.
    let decoded = panic::catch_unwind(AssertUnwindSafe(|| {
        decode_scaled(path, data, eighths, stored_size)
    }))
    .unwrap_or_else(|payload| Err(PhotoError::corrupt(path, panic_message(payload.as_ref()))))?;
    Ok((decoded, stream))
}

/// The smallest n with the shorter side at n/8 (rounded up, as libjpeg does) >= `target`.
pub(super) fn scale_eighths((width, height): (u32, u32), target: u32) -> u8 {
    let short = u64::from(width.min(height));
    (1..8u8)
        .find(|&n| (short * u64::from(n)).div_ceil(8) >= u64::from(target))
        .unwrap_or(8)
}

fn decode_scaled(
    path: &Path,
    data: &[u8],
    eighths: u8,
    stored_size: (u32, u32),
) -> Result<Decoded, PhotoError> {
    let io_error = |err: std::io::Error| PhotoError::corrupt(path, err);
    let mut decompress = Decompress::with_markers(&[Marker::APP(1)])
        .from_mem(data)
        .map_err(io_error)?;
    if matches!(
        decompress.color_space(),
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK
    ) {
        return Err(PhotoError::unsupported(path, "CMYK JPEG"));
    }
    let orientation = exif_orientation(exif_block(&decompress));
    decompress.scale(eighths);
    // Smoothing guesses missing AC coefficients; with the DC scans alone it has nothing
    // to add at 1/8 and only costs time.
    decompress.do_block_smoothing(false);
    let mut started = decompress.rgb().map_err(io_error)?;
    let (width, height) = (started.width(), started.height());
    let pixels = started.read_scanlines::<u8>().map_err(io_error)?;
    started.finish().map_err(io_error)?;
    let image = u32::try_from(width)
        .ok()
        .zip(u32::try_from(height).ok())
        .and_then(|(w, h)| RgbImage::from_raw(w, h, pixels))
        .ok_or_else(|| PhotoError::corrupt(path, "decoded data shorter than the image"))?;
    Ok(Decoded {
        image,
        stored_size,
        orientation,
    })
}

/// The TIFF data of the EXIF APP1 segment (after `Exif\0\0`), if any.
fn exif_block<R>(decompress: &Decompress<R>) -> Option<&[u8]> {
    decompress
        .markers()
        .filter(|marker| marker.marker == Marker::APP(1))
        .find_map(|marker| marker.data.strip_prefix(b"Exif\0\0"))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "the decoder crashed on this data".to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{decode, scale_eighths, Stream};
    use crate::photo::error::PhotoError;
    use crate::photo::jpeg_layout::tests::encode;
    use crate::photo::DecodeOptions;

    fn target(side: u32) -> DecodeOptions {
        DecodeOptions {
            target_short_side: Some(side),
            ..DecodeOptions::default()
        }
    }

    #[test]
    fn scale_keeps_the_short_side_at_or_above_target() {
        assert_eq!(scale_eighths((4000, 3000), 256), 1);
        assert_eq!(scale_eighths((1600, 1200), 300), 2);
        assert_eq!(scale_eighths((1600, 1200), 301), 3);
        assert_eq!(scale_eighths((1600, 1200), 1200), 8);
        assert_eq!(scale_eighths((100, 100), 256), 8);
    }

    #[test]
    fn baseline_is_scaled_in_the_dct() -> Result<(), PhotoError> {
        let bytes = encode(1600, 1200, false);
        let (decoded, stream) = decode(Path::new("x.jpg"), &bytes, &target(300))?;
        assert_eq!(decoded.image.dimensions(), (400, 300));
        assert_eq!(decoded.stored_size, (1600, 1200));
        assert_eq!(stream, Stream::Whole);
        Ok(())
    }

    #[test]
    fn progressive_at_one_eighth_reads_the_dc_scans() -> Result<(), PhotoError> {
        let bytes = encode(2048, 1536, true);
        let (decoded, stream) = decode(Path::new("x.jpg"), &bytes, &target(192))?;
        assert_eq!(decoded.image.dimensions(), (256, 192));
        assert_eq!(stream, Stream::DcScans);
        let (_, stream) = decode(Path::new("x.jpg"), &bytes, &target(193))?;
        assert_eq!(stream, Stream::Whole);
        Ok(())
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        let bytes = encode(640, 480, false);
        let cut = decode(Path::new("x.jpg"), &bytes[..bytes.len() / 2], &target(100));
        assert!(matches!(cut, Err(PhotoError::Corrupt { .. })), "{cut:?}");
        let mut garbage = bytes.clone();
        for byte in garbage.iter_mut().skip(600).step_by(7) {
            *byte = 0x5A;
        }
        // whatever libjpeg makes of it, it neither panics nor escapes as a panic
        let _ = decode(Path::new("x.jpg"), &garbage, &target(100));
    }
}
