//! The marker layout of a JPEG file, read without decoding: its frame, its scans and whether
//! it ends. It serves two things the decoder cannot do by itself:
//!
//! - a truncated file is told apart from a whole one (libjpeg pads a truncated file with grey
//!   and only warns);
//! - a progressive file wanted at 1/8 of its size is decoded without the AC scans of its
//!   full-resolution components (luma, in a 4:2:0 file). At 1/8 each 8x8 block of such a
//!   component becomes one pixel, its DC coefficient, so those scans (most of the file)
//!   cannot change the result and need not be entropy-decoded. The subsampled components
//!   keep their AC scans: libjpeg-turbo decodes them with a 2x2 IDCT at that scale, which
//!   reads their first AC coefficients.

use std::ops::Range;

/// Start of image, end of image and start of scan.
const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;

/// What the markers of a JPEG file say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct JpegLayout {
    /// Width from the frame header, in pixels.
    pub width: u16,
    /// Height from the frame header, in pixels (0: given later by a DNL marker).
    pub height: u16,
    /// Progressive (SOF2, SOF6 or SOF10).
    pub progressive: bool,
    /// Whether the file reaches its end-of-image marker.
    pub complete: bool,
    /// Every segment before the EOI in file order.
    segments: Vec<Segment>,
    /// The frame's components: id, horizontal and vertical sampling factors.
    components: Vec<(u8, u8, u8)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    bytes: Range<usize>,
    /// An AC scan of full-resolution components only: useless at 1/8.
    unneeded_at_eighth: bool,
}

impl JpegLayout {
    /// Reads the layout; `None` when the bytes do not follow the JPEG marker structure
    /// (left to a decoder to explain), or hold no frame header.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        if bytes.get(..2) != Some(&[0xFF, SOI][..]) {
            return None;
        }
        let mut layout = Self {
            width: 0,
            height: 0,
            progressive: false,
            complete: false,
            segments: Vec::new(),
            components: Vec::new(),
        };
        let mut frame_seen = false;
        let mut pos = 2;
        while let Some(marker_at) = next_marker(bytes, pos)? {
            let marker = bytes[marker_at + 1];
            if marker == EOI {
                layout.complete = true;
                break;
            }
            let length = usize::from(u16::from_be_bytes([
                *bytes.get(marker_at + 2)?,
                *bytes.get(marker_at + 3)?,
            ]));
            let body = bytes.get(marker_at + 4..marker_at + 2 + length.max(2))?;
            if is_frame_header(marker) {
                layout.read_frame(marker, body)?;
                frame_seen = true;
            }
            let mut end = marker_at + 2 + length;
            let mut unneeded_at_eighth = false;
            if marker == SOS {
                unneeded_at_eighth = layout.unneeded_at_eighth(body)?;
                match entropy_data_end(bytes, end) {
                    Some(data_end) => end = data_end,
                    None => {
                        // the scan runs to the end of the file: cut short
                        break;
                    }
                }
            }
            layout.segments.push(Segment {
                bytes: marker_at..end,
                unneeded_at_eighth,
            });
            pos = end;
        }
        frame_seen.then_some(layout)
    }

    fn read_frame(&mut self, marker: u8, body: &[u8]) -> Option<()> {
        self.height = u16::from_be_bytes([*body.get(1)?, *body.get(2)?]);
        self.width = u16::from_be_bytes([*body.get(3)?, *body.get(4)?]);
        self.progressive = matches!(marker, 0xC2 | 0xC6 | 0xCA);
        let count = usize::from(*body.get(5)?);
        self.components = (0..count)
            .map(|i| {
                let spec = body.get(6 + 3 * i..9 + 3 * i)?;
                Some((spec[0], spec[1] >> 4, spec[1] & 0x0F))
            })
            .collect::<Option<_>>()?;
        Some(())
    }

    /// Whether the scan with this SOS header holds AC coefficients of full-resolution
    /// components only.
    fn unneeded_at_eighth(&self, sos_body: &[u8]) -> Option<bool> {
        let count = usize::from(*sos_body.first()?);
        let spectral_start = *sos_body.get(1 + 2 * count)?;
        let max_h = self.components.iter().map(|c| c.1).max()?;
        let max_v = self.components.iter().map(|c| c.2).max()?;
        let full_resolution = |id: u8| {
            self.components
                .iter()
                .any(|&(c, h, v)| c == id && h == max_h && v == max_v)
        };
        let scan_ids = (0..count).map(|i| sos_body.get(1 + 2 * i).copied());
        let all_full = scan_ids
            .map(|id| id.map(full_resolution))
            .collect::<Option<Vec<bool>>>()?
            .into_iter()
            .all(|full| full);
        Some(spectral_start > 0 && all_full)
    }

    /// The file without the scans that cannot change its 1/8-scale decode: a valid JPEG
    /// whose 1/8-scale decode is that of the whole file. `None` for a baseline file (nothing
    /// to drop) or an incomplete one.
    pub fn dc_scans_only(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        if !self.progressive || !self.complete {
            return None;
        }
        let mut kept = Vec::with_capacity(bytes.len() / 4);
        kept.extend_from_slice(&[0xFF, SOI]);
        for segment in self.segments.iter().filter(|s| !s.unneeded_at_eighth) {
            kept.extend_from_slice(bytes.get(segment.bytes.clone())?);
        }
        kept.extend_from_slice(&[0xFF, EOI]);
        Some(kept)
    }
}

/// SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
fn is_frame_header(marker: u8) -> bool {
    (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// Position of the next marker at or after `pos` (fill bytes skipped): `Some(None)` at the
/// end of the data, `None` when something other than a marker stands there.
fn next_marker(bytes: &[u8], pos: usize) -> Option<Option<usize>> {
    let mut at = pos;
    loop {
        match (bytes.get(at), bytes.get(at + 1)) {
            (None, _) | (Some(0xFF), None) => return Some(None),
            (Some(0xFF), Some(0xFF)) => at += 1,
            (Some(0xFF), Some(_)) => return Some(Some(at)),
            (Some(_), _) => return None,
        }
    }
}

/// Where the entropy-coded data starting at `from` ends: at the first marker that is
/// neither a stuffed zero nor a restart marker. `None` when the data runs to the end.
fn entropy_data_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let ff = at + bytes.get(at..)?.iter().position(|&b| b == 0xFF)?;
        match *bytes.get(ff + 1)? {
            0x00 | 0xFF | 0xD0..=0xD7 => at = ff + 1,
            _ => return Some(ff),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::JpegLayout;

    /// A JPEG with mozjpeg's encoder (progressive with DC scans split per component when
    /// `progressive`, else baseline), of a pattern with detail.
    pub(crate) fn encode(width: usize, height: usize, progressive: bool) -> Vec<u8> {
        let pixels: Vec<u8> = (0..width * height)
            .flat_map(|i| {
                let (x, y) = (i % width, i / width);
                let v = ((x * 7) ^ (y * 13)) as u8;
                [v, v.wrapping_mul(3), (x + y) as u8]
            })
            .collect();
        let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        comp.set_size(width, height);
        comp.set_quality(90.0);
        if progressive {
            comp.set_progressive_mode();
        } else {
            comp.set_fastest_defaults();
        }
        let mut started = comp.start_compress(Vec::new()).expect("start");
        started.write_scanlines(&pixels).expect("write");
        started.finish().expect("finish")
    }

    #[test]
    fn reads_frame_and_kind() {
        let baseline = JpegLayout::read(&encode(120, 80, false)).expect("layout");
        assert_eq!((baseline.width, baseline.height), (120, 80));
        assert!(!baseline.progressive && baseline.complete);
        let progressive = JpegLayout::read(&encode(120, 80, true)).expect("layout");
        assert!(progressive.progressive && progressive.complete);
    }

    #[test]
    fn a_cut_file_is_incomplete() {
        let bytes = encode(256, 192, false);
        let layout = JpegLayout::read(&bytes[..bytes.len() * 2 / 3]).expect("layout");
        assert!(!layout.complete);
        assert!(layout.dc_scans_only(&bytes).is_none());
    }

    #[test]
    fn not_a_jpeg() {
        assert!(JpegLayout::read(b"GIF89a....").is_none());
        assert!(JpegLayout::read(&[0xFF, 0xD8, 0x12, 0x34]).is_none());
    }

    /// The pixels of a 1/8-scale decode, in `colour` (RGB or grey).
    fn at_eighth(data: &[u8], colour: mozjpeg::ColorSpace) -> (usize, usize, Vec<u8>) {
        let mut dec = mozjpeg::Decompress::new_mem(data).expect("header");
        dec.scale(1);
        dec.do_block_smoothing(false);
        let mut started = dec.to_colorspace(colour).expect("start");
        let pixels = started.read_scanlines::<u8>().expect("pixels");
        (started.width(), started.height(), pixels)
    }

    #[test]
    fn dc_scans_decode_like_the_whole_file_at_one_eighth() {
        let bytes = encode(640, 480, true);
        let layout = JpegLayout::read(&bytes).expect("layout");
        let dc = layout.dc_scans_only(&bytes).expect("dc stream");
        assert!(
            dc.len() < bytes.len() / 2,
            "{} of {}",
            dc.len(),
            bytes.len()
        );
        let rgb = mozjpeg::ColorSpace::JCS_RGB;
        let whole = at_eighth(&bytes, rgb);
        assert_eq!((whole.0, whole.1), (80, 60));
        assert_eq!(whole, at_eighth(&dc, rgb));
    }
}
