//! Cheap photo-quality statistics computed while indexing, as cleanvision and fastdup
//! compute them: sharpness (variance of the Laplacian), exposure (mean brightness in [0, 1] and the
//! (in [0, 1]) and the fractions of nearly black and nearly white pixels) and information (entropy of the
//! brightness histogram). They are measured on the photo downscaled so that its shorter
//! side is [`STATS_SHORT_SIDE`] pixels, so that they compare across resolutions.

use dino_curate_index::ImageStats;
use image::RgbImage;

/// Shorter side, in pixels, of the image the statistics are measured on.
pub const STATS_SHORT_SIDE: u32 = 256;
/// Luma below which a pixel counts as dark (of 255).
pub const DARK_LUMA: f32 = 32.0;
/// Luma above which a pixel counts as blown out (of 255).
pub const BRIGHT_LUMA: f32 = 235.0;

/// Rec. 601 luma of every pixel, row-major.
fn luma(img: &RgbImage) -> Vec<f32> {
    img.pixels()
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect()
}

/// Variance of the 4-neighbour Laplacian over the interior pixels (0 for images smaller
/// than 3×3).
fn laplacian_variance(y: &[f32], width: usize, height: usize) -> f32 {
    if width < 3 || height < 3 {
        return 0.0;
    }
    let (mut sum, mut sum_sq) = (0f64, 0f64);
    for r in 1..height - 1 {
        for c in 1..width - 1 {
            let i = r * width + c;
            let lap = y[i - width] + y[i + width] + y[i - 1] + y[i + 1] - 4.0 * y[i];
            sum += f64::from(lap);
            sum_sq += f64::from(lap) * f64::from(lap);
        }
    }
    let n = ((width - 2) * (height - 2)) as f64;
    let mean = sum / n;
    (sum_sq / n - mean * mean).max(0.0) as f32
}

/// Shannon entropy (bits) of the 256-bin luma histogram: 0 for a flat image, 8 at most.
fn entropy(y: &[f32]) -> f32 {
    let mut hist = [0u32; 256];
    for &v in y {
        hist[v.round().clamp(0.0, 255.0) as usize] += 1;
    }
    let n = y.len().max(1) as f64;
    let bits: f64 = hist
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    bits as f32
}

/// The statistics of `img` (already at the measuring size; see [`STATS_SHORT_SIDE`]).
pub fn image_stats(img: &RgbImage) -> ImageStats {
    let y = luma(img);
    let n = y.len().max(1) as f32;
    let count = |f: &dyn Fn(f32) -> bool| y.iter().filter(|&&v| f(v)).count() as f32 / n;
    ImageStats {
        laplacian_var: laplacian_variance(&y, img.width() as usize, img.height() as usize),
        mean_luma: y.iter().sum::<f32>() / n / 255.0,
        dark_fraction: count(&|v| v < DARK_LUMA),
        bright_fraction: count(&|v| v > BRIGHT_LUMA),
        entropy: entropy(&y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn checkerboard(size: u32, cell: u32) -> RgbImage {
        RgbImage::from_fn(size, size, |x, y| {
            if (x / cell + y / cell).is_multiple_of(2) {
                Rgb([255, 255, 255])
            } else {
                Rgb([0, 0, 0])
            }
        })
    }

    #[test]
    fn flat_images_have_no_edges_and_no_information() {
        let grey = RgbImage::from_pixel(64, 48, Rgb([128, 128, 128]));
        let s = image_stats(&grey);
        assert_eq!(s.laplacian_var, 0.0);
        assert_eq!(s.entropy, 0.0);
        assert!((s.mean_luma - 128.0 / 255.0).abs() < 1e-4);
        assert_eq!((s.dark_fraction, s.bright_fraction), (0.0, 0.0));
    }

    #[test]
    fn blurring_lowers_the_laplacian_variance() {
        let sharp = checkerboard(64, 4);
        let blurred = image::imageops::blur(&sharp, 2.0);
        let (s, b) = (image_stats(&sharp), image_stats(&blurred));
        assert!(s.laplacian_var > 10.0 * b.laplacian_var, "{s:?} vs {b:?}");
    }

    #[test]
    fn exposure_fractions_count_black_and_white_pixels() {
        let s = image_stats(&checkerboard(64, 8));
        assert!((s.dark_fraction - 0.5).abs() < 1e-6);
        assert!((s.bright_fraction - 0.5).abs() < 1e-6);
        assert!(
            (s.entropy - 1.0).abs() < 1e-6,
            "two equal bins give one bit"
        );
        let black = image_stats(&RgbImage::new(10, 10));
        assert_eq!(black.dark_fraction, 1.0);
        assert_eq!(black.mean_luma, 0.0);
    }

    #[test]
    fn uniform_histograms_reach_eight_bits() {
        let ramp = RgbImage::from_fn(256, 4, |x, _| Rgb([x as u8; 3]));
        assert!((image_stats(&ramp).entropy - 8.0).abs() < 1e-3);
    }
}
