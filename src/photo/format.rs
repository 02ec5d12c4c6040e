//! Which format a photo is in, and recognising HEIF (HEIC) files, which the `image` crate
//! does not know.

use std::path::Path;

use image::ImageFormat;

/// The format of a decoded photo, found in the content (not taken from the extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PhotoFormat {
    /// A format decoded by the `image` crate: JPEG, PNG, WebP, GIF, TIFF or BMP.
    Image(ImageFormat),
    /// A HEIF container (HEIC photos from phones), decoded by libheif (feature `heic`).
    Heif,
    /// A camera RAW file, read through its embedded JPEG preview.
    Raw,
}

impl From<ImageFormat> for PhotoFormat {
    fn from(format: ImageFormat) -> Self {
        Self::Image(format)
    }
}

impl PartialEq<ImageFormat> for PhotoFormat {
    fn eq(&self, other: &ImageFormat) -> bool {
        matches!(self, Self::Image(format) if format == other)
    }
}

/// Extensions (lower case) of HEIF files; also found by [`super::scan`], with or without the
/// `heic` feature, so that a build without it reports them instead of ignoring them.
pub(super) const HEIF_EXTENSIONS: [&str; 2] = ["heic", "heif"];

/// Brands (in the `ftyp` box) of HEIF still images: HEVC-coded (`heic`, `heix`, `hevc`,
/// `hevx`, `heim`, `heis`) and the generic HEIF ones (`mif1`, `msf1`, `heif`).
const HEIF_BRANDS: [&[u8; 4]; 9] = [
    b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"heif",
];

/// Brands of AVIF, also a HEIF container but AV1-coded: left to the `image` crate's sniffing
/// (and refused there), even when `mif1` is among the compatible brands.
const AVIF_BRANDS: [&[u8; 4]; 2] = [b"avif", b"avis"];

/// Whether `header` (the first bytes of a file) starts with the `ftyp` box of a HEIF image:
/// a HEIF brand as the major brand, or among the compatible brands of a non-AVIF file.
pub(super) fn is_heif(header: &[u8]) -> bool {
    let Some(size) = header.get(0..4) else {
        return false;
    };
    if header.get(4..8) != Some(b"ftyp".as_slice()) {
        return false;
    }
    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
    let Some(major) = header.get(8..12) else {
        return false;
    };
    let is_in = |brands: &[&[u8; 4]], brand: &[u8]| brands.iter().any(|b| b.as_slice() == brand);
    if is_in(&HEIF_BRANDS, major) {
        return true;
    }
    if is_in(&AVIF_BRANDS, major) {
        return false;
    }
    // Compatible brands follow the minor version, up to the end of the box (or of what was
    // read of it).
    let end = size.clamp(16, 16 + 4 * 64).min(header.len());
    header
        .get(16..end)
        .unwrap_or_default()
        .chunks_exact(4)
        .any(|brand| is_in(&HEIF_BRANDS, brand))
}

/// Whether `path` has a HEIF extension (`.heic`, `.heif`), in any case.
pub(super) fn has_heif_extension(path: &Path) -> bool {
    path.extension().is_some_and(|ext| {
        HEIF_EXTENSIONS
            .iter()
            .any(|known| ext.eq_ignore_ascii_case(known))
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use image::ImageFormat;

    use super::{has_heif_extension, is_heif, PhotoFormat};

    fn ftyp(major: &[u8; 4], compatible: &[&[u8; 4]]) -> Vec<u8> {
        let size = 16 + 4 * compatible.len() as u32;
        let mut bytes = size.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"ftyp");
        bytes.extend_from_slice(major);
        bytes.extend_from_slice(&0u32.to_be_bytes());
        for brand in compatible {
            bytes.extend_from_slice(*brand);
        }
        bytes.extend_from_slice(b"\0\0\0\x08meta");
        bytes
    }

    #[test]
    fn recognises_heif_brands() {
        for major in [b"heic", b"heix", b"mif1", b"msf1", b"heif", b"hevc"] {
            assert!(is_heif(&ftyp(major, &[b"mif1"])), "{major:?}");
            assert!(is_heif(&ftyp(major, &[])), "{major:?}");
        }
        // A HEIF brand among the compatible ones only.
        assert!(is_heif(&ftyp(b"MiHE", &[b"miaf", b"heic"])));
    }

    #[test]
    fn refuses_others() {
        assert!(!is_heif(&ftyp(b"avif", &[b"mif1", b"miaf"])));
        assert!(!is_heif(&ftyp(b"isom", &[b"mp41", b"avc1"])));
        assert!(!is_heif(&ftyp(b"qt  ", &[])));
        assert!(!is_heif(b""));
        assert!(!is_heif(b"\0\0\0\x18ftyp"));
        assert!(!is_heif(b"\xff\xd8\xff\xe0\0\x10JFIF\0heic"));
        // Compatible brands are read only inside the box.
        let mut outside = ftyp(b"isom", &[]);
        outside.extend_from_slice(b"heic");
        assert!(!is_heif(&outside));
    }

    #[test]
    fn heif_extensions_any_case() {
        for yes in ["a.heic", "a.HEIC", "b/c.Heif", "d.HEIF"] {
            assert!(has_heif_extension(Path::new(yes)), "{yes}");
        }
        for no in ["a.jpg", "heic", "a.heic.jpg", "a.hei"] {
            assert!(!has_heif_extension(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn compares_with_image_format() {
        assert_eq!(PhotoFormat::from(ImageFormat::Png), ImageFormat::Png);
        assert_ne!(PhotoFormat::Heif, ImageFormat::Avif);
    }
}
