//! Edited copies as people make them, for calibrating `dups` on the user's own photos: the
//! edits and parameter ranges of `make_neardup_bench.py`, the generator of the benchmarks
//! in docs/quality.md, so that a threshold chosen on these copies means what the
//! benchmark measures.

use image::{imageops, Rgb, RgbImage};
use imageproc::geometric_transformations::{rotate_about_center, Interpolation};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::train::views::edits::{draw_caption, jpeg_round_trip, with_bars, Bars, Caption};

/// The kinds of edit, in the order they are applied (geometry, then pixels, then encoding).
pub const EDITS: [&str; 10] = [
    "crop",
    "rotate",
    "aspect",
    "hflip",
    "downscale",
    "border",
    "color",
    "grayscale",
    "text",
    "jpeg",
];

const CAPTIONS: [&str; 6] = [
    "© 2024",
    "IMG_0042",
    "holiday!",
    "www.example.com",
    "Sample",
    "Draft",
];

fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// One to `max_edits` distinct edits of `img`, with their names in the order applied.
pub fn edited_copy(
    img: &RgbImage,
    max_edits: usize,
    rng: &mut impl Rng,
) -> (RgbImage, Vec<String>) {
    let count = rng.random_range(1..=max_edits.clamp(1, EDITS.len()));
    let mut chosen: Vec<usize> = (0..EDITS.len()).collect();
    chosen.shuffle(rng);
    chosen.truncate(count);
    chosen.sort_unstable();
    let mut out = img.clone();
    for &k in &chosen {
        out = apply(EDITS[k], &out, rng);
    }
    (out, chosen.iter().map(|&k| EDITS[k].to_string()).collect())
}

fn apply(edit: &str, img: &RgbImage, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = img.dimensions();
    match edit {
        "crop" => crop(img, rng),
        "rotate" => {
            let degrees = uniform(rng, 1.0, 5.0) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            let fill = [Rgb([0, 0, 0]), Rgb([255, 255, 255]), Rgb([128, 128, 128])]
                [rng.random_range(0..3)];
            rotate_about_center(
                img,
                degrees.to_radians() as f32,
                Interpolation::Bilinear,
                fill,
            )
        }
        "aspect" => {
            let f = if rng.random_bool(0.5) {
                uniform(rng, 0.85, 0.95)
            } else {
                uniform(rng, 1.05, 1.15)
            };
            let (nw, nh) = if rng.random_bool(0.5) {
                (scaled(w, f), h)
            } else {
                (w, scaled(h, f))
            };
            imageops::resize(img, nw, nh, imageops::FilterType::CatmullRom)
        }
        "hflip" => imageops::flip_horizontal(img),
        "downscale" => {
            let f = uniform(rng, 0.25, 0.6);
            imageops::resize(
                img,
                scaled(w, f),
                scaled(h, f),
                imageops::FilterType::Lanczos3,
            )
        }
        "border" => border(img, rng),
        "color" => colour(img, rng),
        "grayscale" => image::DynamicImage::ImageRgb8(img.clone())
            .grayscale()
            .to_rgb8(),
        "text" => {
            let mut out = img.clone();
            let caption = Caption {
                text: CAPTIONS[rng.random_range(0..CAPTIONS.len())].to_string(),
                size: uniform(rng, 0.05, 0.14),
                at: (uniform(rng, 0.02, 0.5), uniform(rng, 0.02, 0.85)),
                colour: [[255, 255, 255], [0, 0, 0], [255, 220, 0]][rng.random_range(0..3)],
            };
            draw_caption(&mut out, &caption);
            out
        }
        "jpeg" => jpeg_round_trip(img, rng.random_range(30..=70)).unwrap_or_else(|| img.clone()),
        _ => img.clone(),
    }
}

fn scaled(side: u32, factor: f64) -> u32 {
    ((f64::from(side) * factor).round() as u32).max(1)
}

/// A window of 60–90 % of the area, its aspect ×0.85–1.15 of the photo's.
fn crop(img: &RgbImage, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = img.dimensions();
    let area = uniform(rng, 0.6, 0.9);
    let stretch = uniform(rng, 0.85, 1.15);
    let cw = scaled(w, (area * stretch).sqrt()).min(w);
    let ch = scaled(h, (area / stretch).sqrt()).min(h);
    let x = rng.random_range(0..=w - cw);
    let y = rng.random_range(0..=h - ch);
    imageops::crop_imm(img, x, y, cw, ch).to_image()
}

/// A 3–10 % frame, or bars padding the photo to 16:9, 4:3, 1:1 or 9:16.
fn border(img: &RgbImage, rng: &mut impl Rng) -> RgbImage {
    let colour = [
        [0, 0, 0],
        [255, 255, 255],
        [rng.random(), rng.random(), rng.random()],
    ][rng.random_range(0..3)];
    if rng.random_bool(0.5) {
        return with_bars(img, Bars::Border, uniform(rng, 0.03, 0.1), colour);
    }
    let (w, h) = (f64::from(img.width()), f64::from(img.height()));
    let target = [16.0 / 9.0, 4.0 / 3.0, 1.0, 9.0 / 16.0][rng.random_range(0..4)];
    if w / h < target {
        // too tall for the target: bars left and right
        let share = (h * target - w) / 2.0 / w;
        with_bars(img, Bars::Pillarbox, share, colour)
    } else {
        let share = (w / target - h) / 2.0 / h;
        with_bars(img, Bars::Letterbox, share, colour)
    }
}

/// One to three of brightness, contrast and saturation, each by ×0.6–0.85 or ×1.15–1.4
/// (saturation ×0.4–0.8 or ×1.2–1.6).
fn colour(img: &RgbImage, rng: &mut impl Rng) -> RgbImage {
    let mut factor = |lo: f64, hi: f64, lo2: f64, hi2: f64| {
        if rng.random_bool(0.5) {
            uniform(rng, lo, hi)
        } else {
            uniform(rng, lo2, hi2)
        }
    };
    let brightness = factor(0.6, 0.85, 1.15, 1.4);
    let contrast = factor(0.6, 0.85, 1.15, 1.4);
    let saturation = factor(0.4, 0.8, 1.2, 1.6);
    let which = rng.random_range(1..8u8);
    let mean_luma = {
        let sum: f64 = img.pixels().map(luma).sum();
        sum / f64::from((img.width() * img.height()).max(1))
    };
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let mut c = p.0.map(f64::from);
        if which & 1 != 0 {
            c = c.map(|v| v * brightness);
        }
        if which & 2 != 0 {
            c = c.map(|v| mean_luma + (v - mean_luma) * contrast);
        }
        if which & 4 != 0 {
            let grey = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
            c = c.map(|v| grey + (v - grey) * saturation);
        }
        p.0 = c.map(|v| v.round().clamp(0.0, 255.0) as u8);
    }
    out
}

fn luma(p: &Rgb<u8>) -> f64 {
    0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn photo() -> RgbImage {
        RgbImage::from_fn(120, 80, |x, y| {
            Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8])
        })
    }

    #[test]
    fn every_edit_is_drawn_and_changes_the_photo() {
        let mut rng = StdRng::seed_from_u64(5);
        let img = photo();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let (copy, edits) = edited_copy(&img, 3, &mut rng);
            assert!((1..=3).contains(&edits.len()));
            assert!(copy.width() > 0 && copy.height() > 0);
            seen.extend(edits);
        }
        assert_eq!(seen.len(), EDITS.len(), "{seen:?}");
        for edit in EDITS {
            let out = apply(edit, &img, &mut rng);
            assert!(out != img, "{edit} left the photo as it was");
        }
    }

    #[test]
    fn letterbox_bars_reach_the_target_aspect() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..20 {
            let out = border(&photo(), &mut rng);
            let aspect = f64::from(out.width()) / f64::from(out.height());
            let known = [1.5, 16.0 / 9.0, 4.0 / 3.0, 1.0, 9.0 / 16.0];
            let framed = out.width() > 120 && out.height() > 80;
            assert!(
                framed || known.iter().any(|a| (a - aspect).abs() < 0.05),
                "{aspect}"
            );
        }
    }
}
