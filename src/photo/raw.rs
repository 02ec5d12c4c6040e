//! Camera RAW files, read through the JPEG preview the camera embeds in them: what the camera
//! showed, and a fraction of the cost of developing the sensor data.
//!
//! - TIFF-based files (DNG, CR2, NEF, NRW, ARW, ORF, RW2, PEF, SRW): every JPEG the IFD tree
//!   points at (`JPEGInterchangeFormat`, one-strip JPEG-compressed IFDs, SubIFDs, the EXIF
//!   IFD, Panasonic's `JpgFromRaw`), with the orientation of IFD0;
//! - RAF: the JPEG its header points at;
//! - anything else (CR3, an unknown layout): every complete JPEG stream found in the bytes.
//!
//! The preview chosen is the smallest whose shorter side reaches the decode target, else the
//! largest. A RAW file without a readable preview is refused, saying so.

use std::path::Path;

use image::metadata::Orientation;

use super::decode::{DecodeOptions, Decoded};
use super::error::PhotoError;
use super::jpeg_layout::JpegLayout;
use super::libjpeg;

/// Extensions of the RAW formats read (lower case).
pub const RAW_EXTENSIONS: [&str; 11] = [
    "dng", "cr2", "cr3", "nef", "nrw", "arw", "raf", "orf", "rw2", "pef", "srw",
];

/// Whether `path` has a RAW extension, in any case.
pub fn has_raw_extension(path: &Path) -> bool {
    super::scan::has_extension(path, &RAW_EXTENSIONS)
}

/// TIFF tags the walk reads.
const TAG_SUB_IFDS: u16 = 0x014A;
const TAG_EXIF_IFD: u16 = 0x8769;
const TAG_JPEG_OFFSET: u16 = 0x0201;
const TAG_JPEG_LENGTH: u16 = 0x0202;
const TAG_STRIP_OFFSETS: u16 = 0x0111;
const TAG_STRIP_BYTES: u16 = 0x0117;
const TAG_COMPRESSION: u16 = 0x0103;
const TAG_ORIENTATION: u16 = 0x0112;
/// Panasonic RW2: a whole JPEG as the tag's value.
const TAG_JPG_FROM_RAW: u16 = 0x002E;

/// IFDs visited at most (a loop or a hostile file stops there).
const MAX_IFDS: usize = 64;

/// Decodes the best embedded preview of the RAW file `bytes`.
pub(super) fn decode(
    path: &Path,
    bytes: &[u8],
    opts: &DecodeOptions,
) -> Result<Decoded, PhotoError> {
    let (mut previews, orientation) = match Tiff::new(bytes) {
        Some(tiff) => tiff.previews(),
        None => (raf_preview(bytes).into_iter().collect(), None),
    };
    if previews.is_empty() {
        previews = scan_for_jpegs(bytes);
    }
    let target = opts.target_short_side.unwrap_or(0);
    let mut sized: Vec<(u64, u32, &[u8])> = previews
        .into_iter()
        .filter_map(|range| {
            let data = bytes.get(range.0..range.0.checked_add(range.1)?)?;
            let layout = JpegLayout::read(data).filter(|l| l.complete && l.height > 0)?;
            let short = u32::from(layout.width.min(layout.height));
            let pixels = u64::from(layout.width) * u64::from(layout.height);
            Some((pixels, short, data))
        })
        .collect();
    // smallest that is large enough first, then the rest from the largest down
    sized.sort_by_key(|&(pixels, short, _)| {
        (
            short < target,
            if short >= target {
                pixels
            } else {
                u64::MAX - pixels
            },
        )
    });
    for (_, _, data) in sized {
        if let Ok((mut decoded, _)) = libjpeg::decode(path, data, opts) {
            if let Some(orientation) = orientation {
                decoded.orientation = orientation;
            }
            return Ok(decoded);
        }
    }
    Err(PhotoError::unsupported(
        path,
        "RAW file without a JPEG preview that can be read (only embedded previews are used)",
    ))
}

/// A TIFF structure: byte order and the data.
struct Tiff<'a> {
    bytes: &'a [u8],
    little_endian: bool,
}

impl<'a> Tiff<'a> {
    /// TIFF (42), Olympus ORF (`RO`/`SR`) or Panasonic RW2 (0x55) headers.
    fn new(bytes: &'a [u8]) -> Option<Self> {
        let little_endian = match bytes.get(..2)? {
            b"II" => true,
            b"MM" => false,
            _ => return None,
        };
        let tiff = Self {
            bytes,
            little_endian,
        };
        matches!(tiff.u16_at(2)?, 42 | 0x4F52 | 0x5352 | 0x55).then_some(tiff)
    }

    fn u16_at(&self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.bytes.get(at..at + 2)?.try_into().ok()?;
        Some(match self.little_endian {
            true => u16::from_le_bytes(b),
            false => u16::from_be_bytes(b),
        })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.bytes.get(at..at + 4)?.try_into().ok()?;
        Some(match self.little_endian {
            true => u32::from_le_bytes(b),
            false => u32::from_be_bytes(b),
        })
    }

    /// The embedded JPEGs (offset, length) and IFD0's orientation.
    fn previews(&self) -> (Vec<(usize, usize)>, Option<Orientation>) {
        let mut found = Vec::new();
        let mut orientation = None;
        let mut pending: Vec<usize> = self.u32_at(4).map(to_usize).into_iter().collect();
        let mut visited = Vec::new();
        while let Some(ifd) = pending.pop() {
            if visited.contains(&ifd) || visited.len() >= MAX_IFDS {
                continue;
            }
            visited.push(ifd);
            let entries = self.entries(ifd);
            let value = |tag: u16| entries.iter().find(|e| e.tag == tag);
            if visited.len() == 1 {
                orientation = value(TAG_ORIENTATION)
                    .and_then(|e| u8::try_from(e.first).ok())
                    .and_then(Orientation::from_exif);
            }
            if let (Some(offset), Some(length)) = (value(TAG_JPEG_OFFSET), value(TAG_JPEG_LENGTH)) {
                found.push((to_usize(offset.first), to_usize(length.first)));
            }
            let jpeg_compressed = value(TAG_COMPRESSION).is_some_and(|e| matches!(e.first, 6 | 7));
            if let (true, Some(strip), Some(bytes)) = (
                jpeg_compressed,
                value(TAG_STRIP_OFFSETS),
                value(TAG_STRIP_BYTES),
            ) {
                if strip.count == 1 {
                    found.push((to_usize(strip.first), to_usize(bytes.first)));
                }
            }
            if let Some(jpeg) = value(TAG_JPG_FROM_RAW) {
                found.push((to_usize(jpeg.first), to_usize(jpeg.count)));
            }
            for link in [TAG_SUB_IFDS, TAG_EXIF_IFD] {
                if let Some(entry) = value(link) {
                    pending.extend(self.offsets(entry));
                }
            }
            if let Some(next) = self.next_ifd(ifd, entries.len()) {
                pending.push(next);
            }
        }
        (found, orientation)
    }

    /// The entries of the IFD at `at` (unreadable ones left out).
    fn entries(&self, at: usize) -> Vec<Entry> {
        let count = self.u16_at(at).unwrap_or(0);
        (0..usize::from(count))
            .filter_map(|i| self.entry(at + 2 + 12 * i))
            .collect()
    }

    fn entry(&self, at: usize) -> Option<Entry> {
        let tag = self.u16_at(at)?;
        let kind = self.u16_at(at + 2)?;
        let count = self.u32_at(at + 4)?;
        // A SHORT value sits in the first two bytes of the field; anything else read as a
        // LONG (an offset when the values do not fit in four bytes).
        let first = match (kind, count) {
            (3, 1 | 2) => u32::from(self.u16_at(at + 8)?),
            _ => self.u32_at(at + 8)?,
        };
        Some(Entry {
            tag,
            kind,
            count,
            first,
        })
    }

    /// The IFD offsets an entry lists (LONG or IFD values, inline when one).
    fn offsets(&self, entry: &Entry) -> Vec<usize> {
        if entry.count == 1 || !matches!(entry.kind, 4 | 13) {
            return vec![to_usize(entry.first)];
        }
        let start = to_usize(entry.first);
        (0..to_usize(entry.count).min(MAX_IFDS))
            .filter_map(|i| self.u32_at(start + 4 * i).map(to_usize))
            .collect()
    }

    fn next_ifd(&self, ifd: usize, entries: usize) -> Option<usize> {
        let next = self.u32_at(ifd + 2 + 12 * entries)?;
        (next != 0).then(|| to_usize(next))
    }
}

/// One IFD entry: its first value (or the offset of its values).
#[derive(Debug, Clone, Copy)]
struct Entry {
    tag: u16,
    kind: u16,
    count: u32,
    first: u32,
}

fn to_usize(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Fujifilm RAF: the header gives the JPEG's offset and length (big-endian, at 84 and 88).
fn raf_preview(bytes: &[u8]) -> Option<(usize, usize)> {
    if !bytes.starts_with(b"FUJIFILMCCD-RAW") {
        return None;
    }
    let word = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(to_usize(u32::from_be_bytes(b)))
    };
    Some((word(84)?, word(88)?))
}

/// Every JPEG stream start (`FF D8 FF`) in the bytes, each running to the end of the data
/// (the layout reader stops at its EOI).
fn scan_for_jpegs(bytes: &[u8]) -> Vec<(usize, usize)> {
    bytes
        .windows(3)
        .enumerate()
        .filter(|(_, w)| *w == [0xFF, 0xD8, 0xFF])
        .map(|(at, _)| (at, bytes.len() - at))
        .take(16)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use image::metadata::Orientation;

    use super::{decode, has_raw_extension};
    use crate::photo::error::PhotoError;
    use crate::photo::jpeg_layout::tests::encode;
    use crate::photo::DecodeOptions;

    /// A TIFF in the given byte order: IFD0 with `entries0` (tag, type, count, value), its
    /// next-IFD link to IFD1 with `entries1` when given, then `blob` at offset 512.
    fn tiff(
        little: bool,
        entries0: &[(u16, u16, u32, u32)],
        entries1: &[(u16, u16, u32, u32)],
        blob: &[u8],
    ) -> Vec<u8> {
        let u16b = |v: u16| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let u32b = |v: u32| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend_from_slice(if little { b"II" } else { b"MM" });
        out.extend_from_slice(&u16b(42));
        out.extend_from_slice(&u32b(8));
        let ifd1_at = 8 + 2 + 12 * entries0.len() as u32 + 4;
        for (entries, next) in [
            (entries0, if entries1.is_empty() { 0 } else { ifd1_at }),
            (entries1, 0),
        ] {
            if entries.is_empty() {
                continue;
            }
            out.extend_from_slice(&u16b(entries.len() as u16));
            for &(tag, kind, count, value) in entries {
                out.extend_from_slice(&u16b(tag));
                out.extend_from_slice(&u16b(kind));
                out.extend_from_slice(&u32b(count));
                if kind == 3 {
                    out.extend_from_slice(&u16b(value as u16));
                    out.extend_from_slice(&[0, 0]);
                } else {
                    out.extend_from_slice(&u32b(value));
                }
            }
            out.extend_from_slice(&u32b(next));
        }
        out.resize(512, 0);
        out.extend_from_slice(blob);
        out
    }

    fn at_most(side: u32) -> DecodeOptions {
        DecodeOptions {
            target_short_side: Some(side),
            ..DecodeOptions::default()
        }
    }

    #[test]
    fn dng_preview_strip_with_orientation_of_ifd0() -> Result<(), PhotoError> {
        let jpeg = encode(640, 480, false);
        let len = jpeg.len() as u32;
        // IFD0: orientation 6, a SubIFD at 0x100 is not needed: the preview is IFD1 here,
        // a one-strip JPEG-compressed IFD (compression 7, as DNG previews are).
        let bytes = tiff(
            true,
            &[(0x0112, 3, 1, 6)],
            &[(0x0103, 3, 1, 7), (0x0111, 4, 1, 512), (0x0117, 4, 1, len)],
            &jpeg,
        );
        let decoded = decode(Path::new("x.dng"), &bytes, &at_most(240))?;
        assert_eq!(decoded.image.dimensions(), (320, 240));
        assert_eq!(decoded.stored_size, (640, 480));
        assert_eq!(decoded.orientation, Orientation::Rotate90);
        Ok(())
    }

    #[test]
    fn big_endian_thumbnail_pointer() -> Result<(), PhotoError> {
        let jpeg = encode(320, 200, true);
        let len = jpeg.len() as u32;
        let bytes = tiff(
            false,
            &[(0x0201, 4, 1, 512), (0x0202, 4, 1, len)],
            &[],
            &jpeg,
        );
        let decoded = decode(Path::new("x.NEF"), &bytes, &DecodeOptions::default())?;
        assert_eq!(decoded.image.dimensions(), (320, 200));
        assert_eq!(decoded.orientation, Orientation::NoTransforms);
        Ok(())
    }

    #[test]
    fn the_smallest_large_enough_preview_is_chosen() -> Result<(), PhotoError> {
        let (small, large) = (encode(160, 120, false), encode(1024, 768, false));
        let mut blob = small.clone();
        blob.extend_from_slice(&large);
        let entries = [(0x0201, 4, 1, 512), (0x0202, 4, 1, small.len() as u32)];
        let strip = [
            (0x0103, 3, 1, 6),
            (0x0111, 4, 1, 512 + small.len() as u32),
            (0x0117, 4, 1, large.len() as u32),
        ];
        let bytes = tiff(true, &entries, &strip, &blob);
        let decoded = decode(Path::new("x.cr2"), &bytes, &at_most(100))?;
        assert_eq!(decoded.stored_size, (160, 120));
        let decoded = decode(Path::new("x.cr2"), &bytes, &at_most(300))?;
        assert_eq!(decoded.stored_size, (1024, 768));
        Ok(())
    }

    #[test]
    fn raf_header_and_scanned_container() -> Result<(), PhotoError> {
        let jpeg = encode(300, 200, false);
        let mut raf = b"FUJIFILMCCD-RAW 0201FF383501".to_vec();
        raf.resize(84, 0);
        raf.extend_from_slice(&100u32.to_be_bytes());
        raf.extend_from_slice(&(jpeg.len() as u32).to_be_bytes());
        raf.resize(100, 0);
        raf.extend_from_slice(&jpeg);
        let decoded = decode(Path::new("x.raf"), &raf, &DecodeOptions::default())?;
        assert_eq!(decoded.stored_size, (300, 200));
        // an ISO-BMFF container (as CR3): found by scanning for the JPEG stream
        let mut cr3 = b"\0\0\0\x18ftypcrx \0\0\0\x01crx isom".to_vec();
        cr3.extend_from_slice(&[0xFF; 40]);
        cr3.extend_from_slice(&jpeg);
        cr3.extend_from_slice(b"trailing sensor data");
        let decoded = decode(Path::new("x.CR3"), &cr3, &DecodeOptions::default())?;
        assert_eq!(decoded.stored_size, (300, 200));
        Ok(())
    }

    #[test]
    fn no_preview_is_a_clear_refusal() {
        // a DNG whose only JPEG-compressed strip is not a JPEG the decoder reads
        let bytes = tiff(
            true,
            &[(0x0103, 3, 1, 7), (0x0111, 4, 1, 512), (0x0117, 4, 1, 64)],
            &[],
            &[0x11; 64],
        );
        let err = decode(Path::new("x.dng"), &bytes, &DecodeOptions::default());
        assert!(
            matches!(&err, Err(PhotoError::Unsupported { detail, .. }) if detail.contains("preview")),
            "{err:?}"
        );
        assert!(has_raw_extension(Path::new("a/IMG_1.CR2")));
        assert!(!has_raw_extension(Path::new("a/IMG_1.jpg")));
    }
}
