//! `RandomResizedCrop` parameters (torchvision's `get_params`) and the crop-then-resize step.

use fast_image_resize::images::{CroppedImage, Image};
use fast_image_resize::{FilterType, IntoImageView, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use rand::Rng;

use super::ViewsError;

/// torchvision's default aspect-ratio range for `RandomResizedCrop`.
pub const CROP_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// How many random boxes `get_params` tries before falling back to a centre crop.
const ATTEMPTS: usize = 10;

/// A crop box in source pixels, always inside the image and never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropRect {
    /// First column.
    pub left: u32,
    /// First row.
    pub top: u32,
    /// Width in pixels (at least 1).
    pub width: u32,
    /// Height in pixels (at least 1).
    pub height: u32,
    /// Whether the ten random attempts failed and this is the centre-crop fallback.
    pub fallback: bool,
}

/// Uniform draw in `[lo, hi)`, tolerating `lo == hi` (returns `lo`).
fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// torchvision `RandomResizedCrop.get_params` for a `width`×`height` image (both at least 1).
///
/// Python's `round` rounds half to even, hence `round_ties_even`.
pub fn random_resized_crop(
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut impl Rng,
) -> CropRect {
    let area = f64::from(width) * f64::from(height);
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..ATTEMPTS {
        let target_area = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        let w = (target_area * aspect).sqrt().round_ties_even();
        let h = (target_area / aspect).sqrt().round_ties_even();
        if w > 0.0 && w <= f64::from(width) && h > 0.0 && h <= f64::from(height) {
            let (w, h) = (w as u32, h as u32);
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return CropRect {
                left,
                top,
                width: w,
                height: h,
                fallback: false,
            };
        }
    }
    centre_fallback(width, height, ratio)
}

/// The fallback of `get_params`: the largest centred box with the ratio clamped into range.
fn centre_fallback(width: u32, height: u32, ratio: (f64, f64)) -> CropRect {
    let in_ratio = f64::from(width) / f64::from(height);
    let (w, h) = if in_ratio < ratio.0 {
        let h = (f64::from(width) / ratio.0).round_ties_even() as u32;
        (width, h.clamp(1, height))
    } else if in_ratio > ratio.1 {
        let w = (f64::from(height) * ratio.1).round_ties_even() as u32;
        (w.clamp(1, width), height)
    } else {
        (width, height)
    };
    CropRect {
        left: (width - w) / 2,
        top: (height - h) / 2,
        width: w,
        height: h,
        fallback: true,
    }
}

/// A sub-pixel source region, for crops that come from a scaled geometry (the eval transform).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceRegion {
    /// Left edge in source pixels.
    pub left: f64,
    /// Top edge in source pixels.
    pub top: f64,
    /// Width in source pixels.
    pub width: f64,
    /// Height in source pixels.
    pub height: f64,
}

/// Cuts `crop` out of `img` and resizes only that cut to `size`×`size` with bicubic
/// (Catmull-Rom, PIL's `BICUBIC`) into `rgb` (interleaved, reused between calls).
///
/// Like torchvision's `resized_crop`, pixels outside the crop never reach the output.
pub fn resize_crop(
    resizer: &mut Resizer,
    img: &RgbImage,
    crop: CropRect,
    size: u32,
    rgb: &mut Vec<u8>,
) -> Result<(), ViewsError> {
    let cut = CroppedImage::new(img, crop.left, crop.top, crop.width, crop.height)?;
    resize_into(resizer, &cut, &bicubic(), size, rgb)
}

/// Resizes the sub-pixel `region` of `img` to `size`×`size` with bicubic into `rgb`, as if the
/// whole image had been resized and then cropped (the filter sees pixels around the region).
pub fn resize_region(
    resizer: &mut Resizer,
    img: &RgbImage,
    region: SourceRegion,
    size: u32,
    rgb: &mut Vec<u8>,
) -> Result<(), ViewsError> {
    let left = clear_of_zero_edges(region.left, region.width, img.width(), size);
    let top = clear_of_zero_edges(region.top, region.height, img.height(), size);
    let options = bicubic().crop(left, top, region.width, region.height);
    resize_into(resizer, img, &options, size, rgb)
}

/// Support (radius) of `fast_image_resize`'s Catmull-Rom filter, in output-scaled pixels.
const CATMULL_ROM_SUPPORT: f64 = 2.0;

/// `start`, or `start` moved by a few millionths of a pixel, so that along this axis the
/// first output pixel's filter window does not begin, and the last one's does not end, on
/// a weight of exactly zero.
///
/// `fast_image_resize` (5.5 and 6.1) trims zero weights off each output pixel's window and
/// then sizes its intermediate image from the first window's start and the last window's
/// end; when only the first (or last) window is trimmed, a later window starts before the
/// first, the offset underflows and the convolution reads outside the image (a crash,
/// e.g. a 66 × 66 photo at a 96-pixel eval view: region 4.2 + 57.6, scale 0.6).
fn clear_of_zero_edges(start: f64, length: f64, in_size: u32, out_size: u32) -> f64 {
    const NUDGE: f64 = 1.0 / 65536.0;
    let mut at = start;
    for attempt in 1..=8 {
        if !edge_weight_is_zero(at, length, in_size, out_size) {
            return at;
        }
        // step away from the image edge the region touches, if it touches one
        let room_right = f64::from(in_size) - (start + length);
        let step = NUDGE * f64::from(attempt);
        at = if room_right >= step {
            start + step
        } else {
            start - step
        };
    }
    at
}

/// Whether the first output pixel's window starts, or the last one's ends, on a zero
/// weight of the Catmull-Rom filter (as `fast_image_resize` computes the windows).
fn edge_weight_is_zero(start: f64, length: f64, in_size: u32, out_size: u32) -> bool {
    if out_size == 0 || length <= 0.0 {
        return false;
    }
    let scale = length / f64::from(out_size);
    let filter_scale = scale.max(1.0);
    let radius = CATMULL_ROM_SUPPORT * filter_scale;
    let zero_at = |x: f64, centre: f64| {
        let u = ((x - centre) / filter_scale).abs();
        u >= CATMULL_ROM_SUPPORT - 1e-9 || (u - 1.0).abs() < 1e-9
    };
    let first = start + 0.5 * scale;
    let last = start + (f64::from(out_size) - 0.5) * scale;
    let first_x = (first - radius).floor().max(0.0);
    let last_x = (last + radius).ceil().min(f64::from(in_size)) - 1.0;
    zero_at(first_x, first - 0.5) || zero_at(last_x, last - 0.5)
}

/// Catmull-Rom convolution (antialiased when shrinking, as PIL does).
fn bicubic() -> ResizeOptions {
    ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom))
}

/// Resizes `src` into a `size`×`size` RGB buffer.
fn resize_into(
    resizer: &mut Resizer,
    src: &impl IntoImageView,
    options: &ResizeOptions,
    size: u32,
    rgb: &mut Vec<u8>,
) -> Result<(), ViewsError> {
    rgb.resize(size as usize * size as usize * 3, 0);
    let mut dst = Image::from_slice_u8(size, size, rgb, PixelType::U8x3)?;
    resizer.resize(src, &mut dst, options)?;
    Ok(())
}

/// Writes interleaved 8-bit RGB of a `size`×`size` image as three f32 planes in `[0, 1]`,
/// mirrored left-right when `flip`.
pub fn to_planes(rgb: &[u8], size: usize, flip: bool, out: &mut [f32]) {
    let n = size * size;
    let (r, rest) = out.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for (y, src_row) in rgb.chunks_exact(size * 3).take(size).enumerate() {
        let row = y * size..(y + 1) * size;
        let (rr, gr, br) = (&mut r[row.clone()], &mut g[row.clone()], &mut b[row]);
        for (x, px) in src_row.chunks_exact(3).enumerate() {
            let dx = if flip { size - 1 - x } else { x };
            rr[dx] = f32::from(px[0]) / 255.0;
            gr[dx] = f32::from(px[1]) / 255.0;
            br[dx] = f32::from(px[2]) / 255.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    fn assert_inside(c: &CropRect, w: u32, h: u32) {
        assert!(c.width >= 1 && c.height >= 1, "{c:?}");
        assert!(
            c.left + c.width <= w && c.top + c.height <= h,
            "{c:?} in {w}x{h}"
        );
    }

    #[test]
    fn crop_statistics_respect_scale_and_ratio() {
        let mut rng = rng();
        let (w, h) = (500, 375);
        for scale in [(0.4, 1.0), (0.05, 0.4)] {
            let mut fallbacks = 0;
            for _ in 0..5000 {
                let c = random_resized_crop(w, h, scale, CROP_RATIO, &mut rng);
                assert_inside(&c, w, h);
                if c.fallback {
                    fallbacks += 1;
                    continue;
                }
                let frac = f64::from(c.width * c.height) / f64::from(w * h);
                // Rounding each side to whole pixels moves the area by less than one row+column.
                let slack = f64::from(c.width + c.height + 1) / f64::from(w * h);
                assert!(frac >= scale.0 - slack && frac <= scale.1 + slack, "{frac}");
                let ratio = f64::from(c.width) / f64::from(c.height);
                let (lo, hi) = CROP_RATIO;
                let rslack = 1.0 / f64::from(c.height.min(c.width)) * 2.5;
                assert!(ratio >= lo - rslack && ratio <= hi + rslack, "{ratio}");
            }
            assert!(fallbacks < 50, "{fallbacks} fallbacks");
        }
    }

    #[test]
    fn crop_positions_cover_the_image() {
        let mut rng = rng();
        let (mut min_left, mut max_right) = (u32::MAX, 0);
        for _ in 0..2000 {
            let c = random_resized_crop(200, 200, (0.05, 0.4), CROP_RATIO, &mut rng);
            min_left = min_left.min(c.left);
            max_right = max_right.max(c.left + c.width);
        }
        assert!(min_left < 5 && max_right > 195, "{min_left} {max_right}");
    }

    #[test]
    fn crop_survives_tiny_and_extreme_images() {
        let mut rng = rng();
        for (w, h) in [
            (1, 1),
            (5, 3),
            (3, 5),
            (1000, 10),
            (10, 1000),
            (1, 4000),
            (4000, 1),
        ] {
            for scale in [(0.4, 1.0), (0.05, 0.4)] {
                for _ in 0..200 {
                    let c = random_resized_crop(w, h, scale, CROP_RATIO, &mut rng);
                    assert_inside(&c, w, h);
                }
            }
        }
    }

    #[test]
    fn fallback_is_centred_with_clamped_ratio() {
        let c = centre_fallback(1000, 10, CROP_RATIO);
        assert_eq!((c.width, c.height, c.left, c.top), (13, 10, 493, 0));
        let c = centre_fallback(10, 1000, CROP_RATIO);
        assert_eq!((c.width, c.height, c.left, c.top), (10, 13, 0, 493));
        let c = centre_fallback(120, 100, CROP_RATIO);
        assert_eq!((c.width, c.height, c.left, c.top), (120, 100, 0, 0));
    }

    #[test]
    fn resize_takes_only_the_region() -> Result<(), ViewsError> {
        // Left half black, right half white: a crop of the right half must come out white.
        let img = RgbImage::from_fn(64, 32, |x, _| image::Rgb([if x < 32 { 0 } else { 255 }; 3]));
        let crop = CropRect {
            left: 32,
            top: 0,
            width: 32,
            height: 32,
            fallback: false,
        };
        let mut rgb = Vec::new();
        resize_crop(&mut Resizer::new(), &img, crop, 8, &mut rgb)?;
        assert!(rgb.iter().all(|&v| v == 255));
        // The whole-image variant lets the filter see the black half next to the region.
        let region = SourceRegion {
            left: 32.0,
            top: 0.0,
            width: 32.0,
            height: 32.0,
        };
        resize_region(&mut Resizer::new(), &img, region, 8, &mut rgb)?;
        assert!(rgb[0] < 255);
        Ok(())
    }

    #[test]
    fn planes_flip_mirrors_columns() {
        let rgb: Vec<u8> = (0..2 * 2 * 3).map(|i| i as u8 * 10).collect();
        let mut plain = vec![0.0; 12];
        let mut flipped = vec![0.0; 12];
        to_planes(&rgb, 2, false, &mut plain);
        to_planes(&rgb, 2, true, &mut flipped);
        assert_eq!(plain[0], 0.0);
        assert_eq!(plain[4], 10.0 / 255.0); // G of pixel (0, 0)
        assert_eq!(flipped[1], plain[0]);
        assert_eq!(flipped[0], plain[1]);
        assert_eq!(flipped[2 + 4 * 2], plain[3 + 4 * 2]);
    }
}
