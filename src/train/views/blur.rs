//! Separable Gaussian blur of CHW f32 planes (stand-in for PIL's `GaussianBlur(radius=sigma)`).

/// Normalised 1-D Gaussian taps for `sigma`, radius `ceil(3·sigma)` (at least 1).
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as usize;
    let denom = 2.0 * sigma * sigma;
    let mut taps: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let d = i as f32 - radius as f32;
            (-d * d / denom).exp()
        })
        .collect();
    let sum: f32 = taps.iter().sum();
    for t in &mut taps {
        *t /= sum;
    }
    taps
}

/// Blurs each of the three `width`×`height` planes of `data` in place, clamping at the borders
/// (edge pixels repeat). `scratch` is reused between calls.
pub fn gaussian_blur(
    data: &mut [f32],
    width: usize,
    height: usize,
    sigma: f32,
    scratch: &mut Vec<f32>,
) {
    let n = width * height;
    if n == 0 || sigma <= 0.0 {
        return;
    }
    let taps = gaussian_kernel(sigma);
    let radius = taps.len() / 2;
    scratch.clear();
    scratch.resize(n + width + 2 * radius, 0.0);
    let (tmp, pad) = scratch.split_at_mut(n);
    for plane in data.chunks_exact_mut(n) {
        horizontal(plane, tmp, width, &taps, pad);
        vertical(tmp, plane, width, height, &taps);
    }
}

/// Row pass: `dst[y][x] = Σ taps[k]·src[y][clamp(x + k − r)]`, via a clamped padded row.
fn horizontal(src: &[f32], dst: &mut [f32], width: usize, taps: &[f32], pad: &mut [f32]) {
    let radius = taps.len() / 2;
    for (row, out) in src.chunks_exact(width).zip(dst.chunks_exact_mut(width)) {
        let (first, last) = (row[0], row[width - 1]);
        pad[..radius].fill(first);
        pad[radius..radius + width].copy_from_slice(row);
        pad[radius + width..].fill(last);
        out.fill(0.0);
        for (k, &t) in taps.iter().enumerate() {
            for (o, &p) in out.iter_mut().zip(&pad[k..k + width]) {
                *o += t * p;
            }
        }
    }
}

/// Column pass: `dst[y][x] = Σ taps[k]·src[clamp(y + k − r)][x]`, whole rows at a time.
fn vertical(src: &[f32], dst: &mut [f32], width: usize, height: usize, taps: &[f32]) {
    let radius = taps.len() / 2;
    for (y, out) in dst.chunks_exact_mut(width).enumerate() {
        out.fill(0.0);
        for (k, &t) in taps.iter().enumerate() {
            let sy = (y + k).saturating_sub(radius).min(height - 1);
            let row = &src[sy * width..(sy + 1) * width];
            for (o, &p) in out.iter_mut().zip(row) {
                *o += t * p;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn variance(v: &[f32]) -> f32 {
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32
    }

    #[test]
    fn kernel_is_normalised_with_radius_three_sigma() {
        for sigma in [0.1, 0.5, 1.0, 1.7, 2.0] {
            let k = gaussian_kernel(sigma);
            assert_eq!(k.len(), 2 * ((3.0 * sigma).ceil().max(1.0) as usize) + 1);
            assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn blur_keeps_a_constant_image() {
        let mut data = vec![0.37; 3 * 20 * 12];
        gaussian_blur(&mut data, 20, 12, 2.0, &mut Vec::new());
        assert!(data.iter().all(|&v| (v - 0.37).abs() < 1e-6));
    }

    #[test]
    fn blur_reduces_noise_variance_and_keeps_its_mean() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let orig: Vec<f32> = (0..3 * 48 * 48).map(|_| rng.random::<f32>()).collect();
        let mut data = orig.clone();
        gaussian_blur(&mut data, 48, 48, 1.5, &mut Vec::new());
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean(&data) - mean(&orig)).abs() < 0.01);
        assert!(variance(&data) < 0.2 * variance(&orig));
    }

    #[test]
    fn small_sigma_is_nearly_identity() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let orig: Vec<f32> = (0..3 * 16 * 9).map(|_| rng.random::<f32>()).collect();
        let mut data = orig.clone();
        gaussian_blur(&mut data, 16, 9, 0.1, &mut Vec::new());
        assert!(data.iter().zip(&orig).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn blur_handles_planes_smaller_than_the_kernel() {
        let mut data = vec![0.0, 1.0, 0.5, 0.5, 0.2, 0.9];
        gaussian_blur(&mut data, 2, 1, 2.0, &mut Vec::new());
        assert!(data
            .iter()
            .all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
        assert!((data[0] - data[1]).abs() < 1.0);
    }
}
