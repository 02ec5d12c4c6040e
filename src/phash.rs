//! The 256-bit perceptual hash: `image_hasher`'s gradient hash on a 16 × 16 grid, the hash
//! czkawka uses to find similar images. It survives re-encoding, resizing and colour edits
//! that move a briefly trained model's descriptor, and fails on crops, flips and rotations,
//! where the descriptor holds (docs/quality.md); `dups` uses both.

use std::sync::OnceLock;

use image::RgbImage;
use image_hasher::{HashAlg, Hasher, HasherConfig};

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

/// The perceptual hash of an image.
pub fn perceptual_hash(img: &RgbImage) -> PerceptualHash {
    let hash = hasher().hash_image(img);
    let mut out = [0u8; 32];
    out.iter_mut()
        .zip(hash.as_bytes())
        .for_each(|(o, b)| *o = *b);
    out
}

/// Fraction of the bits on which two hashes agree (1 = same hash).
pub fn agreement(a: &PerceptualHash, b: &PerceptualHash) -> f32 {
    let differing: u32 = a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum();
    1.0 - differing as f32 / BITS as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32, tint: u8) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = ((x * 255 / w) as u8).wrapping_add((y * 97 / h) as u8);
            image::Rgb([v, v / 2 + tint / 2, 255 - v])
        })
    }

    #[test]
    fn a_resized_copy_agrees_and_a_mirror_does_not() {
        let img = gradient(320, 240, 0);
        let hash = perceptual_hash(&img);
        assert_eq!(agreement(&hash, &hash), 1.0);
        let small = image::imageops::resize(&img, 160, 120, image::imageops::FilterType::Triangle);
        assert!(agreement(&hash, &perceptual_hash(&small)) > 0.95);
        let mirrored = image::imageops::flip_horizontal(&img);
        assert!(agreement(&hash, &perceptual_hash(&mirrored)) < 0.6);
    }

    #[test]
    fn agreement_counts_equal_bits() {
        let a = [0u8; 32];
        let mut b = [0u8; 32];
        b[0] = 0b1111;
        assert_eq!(agreement(&a, &b), 1.0 - 4.0 / 256.0);
        assert_eq!(agreement(&a, &[0xff; 32]), 0.0);
    }
}
