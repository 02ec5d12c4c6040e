//! Perceptual hashes: what finds the copies a briefly trained model misses.
//!
//! [`perceptual_hash`] is the one the index stores: 256 signs of low-frequency DCT
//! coefficients (as PDQ, but thresholded at 0 instead of the median) of the luma after
//! trimming uniform borders and letterbox bars. A sign threshold makes every flip and
//! quarter-turn of the photo a fixed bit permutation and mask of its hash, so
//! [`DihedralHash::agreement`] compares two photos under all eight without decoding them
//! again. [`gradient_hash`] is czkawka's gradient hash, kept as the baseline of
//! `eval neardup --phash` (docs/quality.md has both measured).

use std::sync::OnceLock;

use image::RgbImage;
use image_hasher::{HashAlg, Hasher, HasherConfig};

mod dct;

pub use dct::trim_uniform_borders;

/// Bits per hash.
pub const BITS: u32 = 256;

/// A hash's bytes.
pub type PerceptualHash = [u8; 32];

fn hasher() -> &'static Hasher<PerceptualHash> {
    static HASHER: OnceLock<Hasher<PerceptualHash>> = OnceLock::new();
    HASHER.get_or_init(|| {
        HasherConfig::with_bytes_type::<PerceptualHash>()
            .hash_size(16, 16)
            .hash_alg(HashAlg::Gradient)
            .to_hasher()
    })
}

/// `image_hasher`'s gradient hash on a 16 × 16 grid (the hash czkawka uses).
pub fn gradient_hash(img: &RgbImage) -> PerceptualHash {
    let hash = hasher().hash_image(img);
    let mut out = [0u8; 32];
    out.iter_mut()
        .zip(hash.as_bytes())
        .for_each(|(o, b)| *o = *b);
    out
}

/// The index's perceptual hash: signs of the 16 × 16 lowest non-constant DCT frequencies of
/// the border-trimmed luma at 64 × 64.
pub fn perceptual_hash(img: &RgbImage) -> PerceptualHash {
    dct::sign_hash(img)
}

/// [`perceptual_hash`] and the fraction of the photo's area in flat padding around the
/// picture (letterbox bars, a frame; not a band of sky shaded row to row), from one luma and
/// one trimming of its borders.
pub fn perceptual_hash_and_padding(img: &RgbImage) -> (PerceptualHash, f32) {
    dct::sign_hash_and_padding(img)
}

/// Fraction of the bits on which two hashes agree (1 = same hash).
pub fn agreement(a: &PerceptualHash, b: &PerceptualHash) -> f32 {
    let differing: u32 = a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum();
    1.0 - differing as f32 / BITS as f32
}

/// A [`perceptual_hash`] with its seven flipped and rotated forms, for comparing photos
/// whatever their orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DihedralHash {
    forms: [[u64; 4]; 8],
}

impl DihedralHash {
    /// The eight forms of `hash` (the first is `hash` itself).
    pub fn new(hash: &PerceptualHash) -> Self {
        Self {
            forms: dct::dihedral_forms(hash),
        }
    }

    /// The hash of the photo as stored.
    pub fn upright(&self) -> PerceptualHash {
        dct::to_bytes(&self.forms[0])
    }

    /// The hash of the photo flipped or rotated: form `k` of 8 (0 = as stored).
    pub fn form(&self, k: usize) -> PerceptualHash {
        dct::to_bytes(&self.forms[k % 8])
    }

    /// The best agreement of any flip or rotation of this photo with `other` as stored.
    pub fn agreement(&self, other: &DihedralHash) -> f32 {
        let target = &other.forms[0];
        let fewest = self
            .forms
            .iter()
            .map(|f| {
                f.iter()
                    .zip(target)
                    .map(|(a, b)| (a ^ b).count_ones())
                    .sum()
            })
            .min()
            .unwrap_or(BITS);
        1.0 - fewest as f32 / BITS as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops;

    /// A photo-like test card: smooth shading, a bright disc off centre, a dark bar.
    pub(crate) fn card(w: u32, h: u32, seed: u32) -> RgbImage {
        let (cx, cy) = ((w * (3 + seed % 4)) / 10, (h * (2 + seed % 3)) / 7);
        RgbImage::from_fn(w, h, |x, y| {
            let shade = (x * 160 / w + y * 60 / h) as u8;
            let (dx, dy) = (x as i64 - cx as i64, y as i64 - cy as i64);
            let disc = dx * dx + dy * dy < i64::from(w * h / 30);
            let bar = (y * 9 / h) == 6 && x < w * (5 + seed % 3) / 9;
            let v = if disc {
                240
            } else if bar {
                20
            } else {
                shade.wrapping_add((seed * 37) as u8)
            };
            image::Rgb([v, v.wrapping_mul(3) / 4, 255 - v / 2])
        })
    }

    #[test]
    fn gradient_hash_survives_resizing_but_not_mirroring() {
        let img = card(320, 240, 0);
        let hash = gradient_hash(&img);
        let small = imageops::resize(&img, 160, 120, imageops::FilterType::Triangle);
        assert!(agreement(&hash, &gradient_hash(&small)) > 0.95);
        let mirrored = imageops::flip_horizontal(&img);
        assert!(agreement(&hash, &gradient_hash(&mirrored)) < 0.8);
    }

    #[test]
    fn agreement_counts_equal_bits() {
        let a = [0u8; 32];
        let mut b = [0u8; 32];
        b[0] = 0b1111;
        assert_eq!(agreement(&a, &b), 1.0 - 4.0 / 256.0);
        assert_eq!(agreement(&a, &[0xff; 32]), 0.0);
    }

    #[test]
    fn every_flip_and_quarter_turn_matches_and_other_photos_do_not() {
        let img = card(320, 240, 1);
        let hash = DihedralHash::new(&perceptual_hash(&img));
        let turned = [
            imageops::flip_horizontal(&img),
            imageops::flip_vertical(&img),
            imageops::rotate90(&img),
            imageops::rotate180(&img),
            imageops::rotate270(&img),
        ];
        for (k, t) in turned.iter().enumerate() {
            let other = DihedralHash::new(&perceptual_hash(t));
            assert!(other.agreement(&hash) > 0.97, "form {k}");
            assert!(hash.agreement(&other) > 0.97, "form {k}, other way");
            let upright = agreement(&other.upright(), &hash.upright());
            assert!(upright < 0.9, "form {k} matches without turning: {upright}");
        }
        let different = DihedralHash::new(&perceptual_hash(&card(320, 240, 6)));
        assert!(hash.agreement(&different) < 0.8);
    }

    #[test]
    fn a_letterboxed_or_framed_copy_matches_after_trimming() {
        let img = card(300, 200, 2);
        let hash = perceptual_hash(&img);
        let mut boxed = RgbImage::from_pixel(300, 300, image::Rgb([0, 0, 0]));
        imageops::replace(&mut boxed, &img, 0, 50);
        assert!(agreement(&hash, &perceptual_hash(&boxed)) > 0.95);
        let mut framed = RgbImage::from_pixel(340, 240, image::Rgb([250, 250, 250]));
        imageops::replace(&mut framed, &img, 20, 20);
        assert!(agreement(&hash, &perceptual_hash(&framed)) > 0.95);
    }

    #[test]
    fn a_recoloured_or_grey_copy_matches() {
        let img = card(320, 240, 3);
        let hash = perceptual_hash(&img);
        let grey = image::DynamicImage::ImageRgb8(img.clone())
            .grayscale()
            .to_rgb8();
        assert!(agreement(&hash, &perceptual_hash(&grey)) > 0.9);
        let brighter = imageops::colorops::brighten(&img, 30);
        assert!(agreement(&hash, &perceptual_hash(&brighter)) > 0.9);
    }

    #[test]
    fn blank_and_tiny_images_hash_without_panicking() {
        for (w, h) in [(1, 1), (1, 300), (64, 64), (2, 2)] {
            let flat = RgbImage::from_pixel(w, h, image::Rgb([9, 9, 9]));
            let _ = DihedralHash::new(&perceptual_hash(&flat));
        }
    }
}
