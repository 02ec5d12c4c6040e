//! Photo-quality flags from the statistics computed while indexing (cleanvision's and
//! fastdup's checks). Thresholds are measured on the photo downscaled to a 256-pixel
//! shorter side (see `indexer::STATS_SHORT_SIDE`).

use dino_curate_index::PhotoRecord;
use serde::Serialize;

/// Below this variance of the Laplacian a photo is flagged blurry.
pub const BLURRY_LAPLACIAN_VAR: f32 = 100.0;
/// Mean brightness (0–1) below which a photo is too dark …
pub const DARK_MEAN: f32 = 0.15;
/// … or with more than this fraction of nearly black pixels.
pub const DARK_FRACTION: f32 = 0.6;
/// More than this fraction of nearly white pixels: overexposed.
pub const BRIGHT_FRACTION: f32 = 0.4;
/// Fewer pixels than this (width × height of the original) is tiny.
pub const TINY_PIXELS: u64 = 320 * 240;
/// Brightness-histogram entropy (bits) below this: little information (blank, flat).
pub const LOW_ENTROPY_BITS: f32 = 3.0;

/// A quality problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flag {
    /// Out of focus or motion-blurred.
    Blurry,
    /// Too dark.
    Dark,
    /// Blown-out highlights.
    Overexposed,
    /// Very low resolution.
    Tiny,
    /// Almost no information (blank, flat).
    LowInformation,
}

/// The flags of one photo (empty when fine or never measured).
pub fn flags(record: &PhotoRecord) -> Vec<Flag> {
    let mut out = Vec::new();
    if u64::from(record.width) * u64::from(record.height) < TINY_PIXELS {
        out.push(Flag::Tiny);
    }
    let Some(s) = record.stats else {
        return out;
    };
    if s.entropy < LOW_ENTROPY_BITS {
        out.push(Flag::LowInformation);
    } else if s.laplacian_var < BLURRY_LAPLACIAN_VAR {
        // flat images have no edges either: only call blurry what has some content
        out.push(Flag::Blurry);
    }
    if s.mean_luma < DARK_MEAN || s.dark_fraction > DARK_FRACTION {
        out.push(Flag::Dark);
    }
    if s.bright_fraction > BRIGHT_FRACTION {
        out.push(Flag::Overexposed);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indexer::image_stats;
    use image::{Rgb, RgbImage};

    fn record_of(img: &RgbImage) -> PhotoRecord {
        PhotoRecord {
            path: "/x.jpg".into(),
            size: 1,
            mtime_ns: 0,
            blake3: [0; 32],
            width: 1024,
            height: 768,
            taken_at: None,
            stats: Some(image_stats(img)),
            perceptual_hash: None,
            padding: None,
        }
    }

    /// A detailed, well-exposed picture.
    fn scene() -> RgbImage {
        RgbImage::from_fn(256, 256, |x, y| {
            let v = ((x * 7 + y * 13) % 97) as u8 + ((x ^ y) % 61) as u8 + 40;
            Rgb([v, v.wrapping_add(20), v / 2 + 60])
        })
    }

    #[test]
    fn known_problems_get_their_flag_and_a_good_photo_none() {
        let good = scene();
        assert_eq!(flags(&record_of(&good)), vec![]);
        let blurred = image::imageops::blur(&good, 6.0);
        assert!(flags(&record_of(&blurred)).contains(&Flag::Blurry));
        let dark = RgbImage::from_fn(256, 256, |x, y| Rgb([((x + y) % 20) as u8; 3]));
        assert!(flags(&record_of(&dark)).contains(&Flag::Dark));
        let white = RgbImage::from_fn(256, 256, |x, _| Rgb([240 + (x % 15) as u8; 3]));
        assert!(flags(&record_of(&white)).contains(&Flag::Overexposed));
        let blank = RgbImage::from_pixel(256, 256, Rgb([128, 128, 128]));
        assert_eq!(flags(&record_of(&blank)), vec![Flag::LowInformation]);
        let mut tiny = record_of(&good);
        tiny.width = 100;
        tiny.height = 80;
        assert_eq!(flags(&tiny), vec![Flag::Tiny]);
    }
}
