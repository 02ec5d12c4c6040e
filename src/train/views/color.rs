//! Colour operations on three f32 planes in `[0, 1]` (torchvision's tensor semantics).
//!
//! Every function takes the CHW data of one square view (`3·n` values, R then G then B planes)
//! and clamps to `[0, 1]` after each step, as torchvision's `_blend` does.

/// torchvision `rgb_to_grayscale` / PIL `convert("L")` weights (ITU-R 601-2).
pub const GRAY_WEIGHTS: [f32; 3] = [0.299, 0.587, 0.114];

/// PIL `ImageOps.solarize` threshold (128 on the 8-bit scale) in `[0, 1]` units.
pub const SOLARIZE_THRESHOLD: f32 = 128.0 / 255.0;

/// One of the four `ColorJitter` operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitterOp {
    /// Blend with black.
    Brightness,
    /// Blend with the mean grey level of the image.
    Contrast,
    /// Blend with the per-pixel grey level.
    Saturation,
    /// Rotate the hue in HSV space.
    Hue,
}

/// The drawn parameters of one `ColorJitter` application.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    /// The order in which the four operations run (torchvision's `randperm(4)`).
    pub order: [JitterOp; 4],
    /// Brightness factor.
    pub brightness: f32,
    /// Contrast factor.
    pub contrast: f32,
    /// Saturation factor.
    pub saturation: f32,
    /// Hue shift, in turns (`[-0.5, 0.5]`).
    pub hue: f32,
}

/// Splits CHW data into its three planes.
fn planes(data: &mut [f32]) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let n = data.len() / 3;
    let (r, rest) = data.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    (r, g, &mut b[..n])
}

/// Grey level of one pixel.
#[inline]
fn gray(r: f32, g: f32, b: f32) -> f32 {
    GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b
}

/// torchvision `_blend`: `ratio·v + (1 − ratio)·other`, clamped.
#[inline]
fn blend(v: f32, other: f32, ratio: f32) -> f32 {
    (ratio * v + (1.0 - ratio) * other).clamp(0.0, 1.0)
}

/// Applies the jitter operations in their drawn order.
pub fn apply_jitter(data: &mut [f32], jitter: &Jitter) {
    for op in jitter.order {
        match op {
            JitterOp::Brightness => adjust_brightness(data, jitter.brightness),
            JitterOp::Contrast => adjust_contrast(data, jitter.contrast),
            JitterOp::Saturation => adjust_saturation(data, jitter.saturation),
            JitterOp::Hue => adjust_hue(data, jitter.hue),
        }
    }
}

/// Multiplies by `factor` (blend with black), clamped.
pub fn adjust_brightness(data: &mut [f32], factor: f32) {
    for v in data.iter_mut() {
        *v = blend(*v, 0.0, factor);
    }
}

/// Blends with the mean grey level of the whole image (one scalar).
pub fn adjust_contrast(data: &mut [f32], factor: f32) {
    let (r, g, b) = planes(data);
    let n = r.len().max(1);
    let sum: f64 = r
        .iter()
        .zip(g.iter())
        .zip(b.iter())
        .map(|((&r, &g), &b)| f64::from(gray(r, g, b)))
        .sum();
    let mean = (sum / n as f64) as f32;
    for v in data.iter_mut() {
        *v = blend(*v, mean, factor);
    }
}

/// Blends every pixel with its own grey level.
pub fn adjust_saturation(data: &mut [f32], factor: f32) {
    let (r, g, b) = planes(data);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let l = gray(*r, *g, *b);
        *r = blend(*r, l, factor);
        *g = blend(*g, l, factor);
        *b = blend(*b, l, factor);
    }
}

/// Rotates the hue by `shift` turns (`[-0.5, 0.5]`), as torchvision's `_rgb2hsv`, hue shift
/// and `_hsv2rgb` do.
///
/// Written without the HSV round trip: with `v = max`, `c = max − min` and the hue `h` in
/// sixths, `_hsv2rgb` gives each channel as `v − c·w(h + n)` for a piecewise-linear `w`
/// (`n` = 5, 3, 1 for R, G, B). The same maths, branch-free enough to vectorise.
pub fn adjust_hue(data: &mut [f32], shift: f32) {
    let shift6 = 6.0 * shift;
    let (r, g, b) = planes(data);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let maxc = r.max(*g).max(*b);
        let chroma = maxc - r.min(*g).min(*b);
        let h6 = wrap6(hue6(*r, *g, *b, maxc, chroma) + shift6);
        *r = maxc - chroma * hue_weight(h6 + 5.0);
        *g = maxc - chroma * hue_weight(h6 + 3.0);
        *b = maxc - chroma * hue_weight(h6 + 1.0);
    }
}

/// torchvision's `_rgb2hsv` hue before its `/6 mod 1`: in `[-1, 5]`, 0 for greys.
#[inline]
fn hue6(r: f32, g: f32, b: f32, maxc: f32, chroma: f32) -> f32 {
    let inv = if chroma > 0.0 { 1.0 / chroma } else { 0.0 };
    let (rc, gc, bc) = ((maxc - r) * inv, (maxc - g) * inv, (maxc - b) * inv);
    if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    }
}

/// `x mod 6` for `x` in `[-6, 12)`.
#[inline]
fn wrap6(x: f32) -> f32 {
    if x < 0.0 {
        x + 6.0
    } else if x >= 6.0 {
        x - 6.0
    } else {
        x
    }
}

/// `_hsv2rgb`'s channel weight `clamp(min(k, 4 − k), 0, 1)` with `k = x mod 6`, `x` in `[0, 12)`.
#[inline]
fn hue_weight(x: f32) -> f32 {
    let k = if x >= 6.0 { x - 6.0 } else { x };
    k.min(4.0 - k).clamp(0.0, 1.0)
}

/// Replaces every channel by the grey level (three equal channels).
pub fn grayscale(data: &mut [f32]) {
    let (r, g, b) = planes(data);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let l = gray(*r, *g, *b);
        (*r, *g, *b) = (l, l, l);
    }
}

/// PIL `ImageOps.solarize(threshold=128)` in `[0, 1]` units: `v ≥ 128/255` becomes `1 − v`.
///
/// On values that came from 8-bit pixels this inverts exactly the pixels `≥ 128`.
pub fn solarize(data: &mut [f32]) {
    for v in data.iter_mut() {
        if *v >= SOLARIZE_THRESHOLD {
            *v = 1.0 - *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A random CHW image of `n` pixels.
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..3 * n).map(|_| rng.random::<f32>()).collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn solarize_inverts_exactly_the_high_pixels() {
        let bytes: Vec<u8> = (0..=255).cycle().take(3 * 256).collect();
        let mut data: Vec<f32> = bytes.iter().map(|&v| f32::from(v) / 255.0).collect();
        solarize(&mut data);
        for (&v, &out) in bytes.iter().zip(&data) {
            let expected = if v >= 128 { 255 - v } else { v };
            assert!(
                (out * 255.0 - f32::from(expected)).abs() < 1e-4,
                "{v} -> {out}"
            );
        }
    }

    #[test]
    fn grayscale_has_equal_channels_with_the_weights() {
        let mut data = noise(64, 1);
        let orig = data.clone();
        grayscale(&mut data);
        for i in 0..64 {
            let expected = 0.299 * orig[i] + 0.587 * orig[64 + i] + 0.114 * orig[128 + i];
            assert!((data[i] - expected).abs() < 1e-6);
            assert_eq!(data[i], data[64 + i]);
            assert_eq!(data[i], data[128 + i]);
        }
    }

    #[test]
    fn unit_factors_are_identities() {
        let orig = noise(256, 2);
        type Op = fn(&mut [f32], f32);
        let ops: [(Op, f32); 4] = [
            (adjust_brightness, 1.0),
            (adjust_contrast, 1.0),
            (adjust_saturation, 1.0),
            (adjust_hue, 0.0),
        ];
        for (op, factor) in ops {
            let mut data = orig.clone();
            op(&mut data, factor);
            assert!(max_diff(&data, &orig) < 1e-6, "{}", max_diff(&data, &orig));
        }
    }

    #[test]
    fn hue_matches_the_literal_hsv_round_trip() {
        let orig = noise(4096, 8);
        for shift in [-0.5, -0.31, -0.1, 0.0, 0.02, 0.1, 0.25, 0.5] {
            let mut fast = orig.clone();
            adjust_hue(&mut fast, shift);
            for i in 0..4096 {
                let (h, s, v) = rgb_to_hsv(orig[i], orig[4096 + i], orig[8192 + i]);
                let (r, g, b) = hsv_to_rgb((h + shift).rem_euclid(1.0), s, v);
                let got = [fast[i], fast[4096 + i], fast[8192 + i]];
                assert!(
                    max_diff(&got, &[r, g, b]) < 1e-5,
                    "{shift}: {got:?} vs {r} {g} {b}"
                );
            }
        }
    }

    #[test]
    fn hue_half_turn_makes_red_cyan() {
        let mut data = vec![1.0, 0.0, 0.0];
        adjust_hue(&mut data, 0.5);
        assert!(max_diff(&data, &[0.0, 1.0, 1.0]) < 1e-6, "{data:?}");
        let mut data = vec![0.0, 1.0, 0.0];
        adjust_hue(&mut data, -1.0 / 3.0);
        assert!(max_diff(&data, &[1.0, 0.0, 0.0]) < 1e-6, "{data:?}");
    }

    #[test]
    fn hue_keeps_grey_and_value() {
        let mut data = noise(128, 3);
        let max_before: Vec<f32> = (0..128)
            .map(|i| data[i].max(data[128 + i]).max(data[256 + i]))
            .collect();
        adjust_hue(&mut data, 0.23);
        for (i, m) in max_before.iter().enumerate() {
            let m2 = data[i].max(data[128 + i]).max(data[256 + i]);
            assert!((m - m2).abs() < 1e-5);
        }
        let mut grey = vec![0.3; 12];
        adjust_hue(&mut grey, 0.4);
        assert!(max_diff(&grey, &[0.3; 12]) < 1e-6);
    }

    #[test]
    fn saturation_zero_gives_gray() {
        let mut data = noise(64, 4);
        let mut expected = data.clone();
        grayscale(&mut expected);
        adjust_saturation(&mut data, 0.0);
        assert!(max_diff(&data, &expected) < 1e-6);
    }

    #[test]
    fn contrast_zero_gives_the_mean() {
        let mut data = noise(100, 5);
        let mut g = data.clone();
        grayscale(&mut g);
        let mean = g[..100].iter().sum::<f32>() / 100.0;
        adjust_contrast(&mut data, 0.0);
        assert!(data.iter().all(|&v| (v - mean).abs() < 1e-5));
    }

    #[test]
    fn brightness_scales_and_clamps() {
        let mut data = vec![0.2, 0.5, 0.8];
        adjust_brightness(&mut data, 1.5);
        assert!(max_diff(&data, &[0.3, 0.75, 1.0]) < 1e-6);
        adjust_brightness(&mut data, 0.0);
        assert_eq!(data, vec![0.0; 3]);
    }

    #[test]
    fn jitter_runs_ops_in_the_drawn_order() {
        let orig = noise(64, 6);
        let mut a = orig.clone();
        let mut b = orig.clone();
        let mut jitter = Jitter {
            order: [
                JitterOp::Brightness,
                JitterOp::Contrast,
                JitterOp::Saturation,
                JitterOp::Hue,
            ],
            brightness: 1.3,
            contrast: 0.7,
            saturation: 1.1,
            hue: 0.05,
        };
        apply_jitter(&mut a, &jitter);
        adjust_brightness(&mut b, 1.3);
        adjust_contrast(&mut b, 0.7);
        adjust_saturation(&mut b, 1.1);
        adjust_hue(&mut b, 0.05);
        assert_eq!(a, b);
        jitter.order.reverse();
        let mut c = orig;
        apply_jitter(&mut c, &jitter);
        assert!(max_diff(&a, &c) > 1e-4);
    }

    /// Reference: torchvision `_rgb2hsv` for one pixel, literally.
    fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        let cr = maxc - minc;
        if cr == 0.0 {
            return (0.0, 0.0, maxc);
        }
        let s = cr / maxc;
        let (rc, gc, bc) = ((maxc - r) / cr, (maxc - g) / cr, (maxc - b) / cr);
        let h = if maxc == r {
            bc - gc
        } else if maxc == g {
            2.0 + rc - bc
        } else {
            4.0 + gc - rc
        };
        ((h / 6.0 + 1.0).rem_euclid(1.0), s, maxc)
    }

    /// Reference: torchvision `_hsv2rgb` for one pixel, literally.
    fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
        let h6 = h * 6.0;
        let i = h6.floor();
        let f = h6 - i;
        let p = (v * (1.0 - s)).clamp(0.0, 1.0);
        let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
        let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
        match (i as i32).rem_euclid(6) {
            0 => (v, t, p),
            1 => (q, v, p),
            2 => (p, v, t),
            3 => (p, q, v),
            4 => (t, p, v),
            _ => (v, p, q),
        }
    }
}
