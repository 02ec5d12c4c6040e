//! Drawing every random decision of one view up front, in a fixed order, from the caller's rng.

use rand::seq::SliceRandom;
use rand::Rng;

use super::color::{Jitter, JitterOp};
use super::crop::{random_resized_crop, CropRect, CROP_RATIO};

/// `RandomHorizontalFlip` probability.
pub const FLIP_P: f64 = 0.5;
/// `RandomApply([ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8)` probability.
pub const JITTER_P: f64 = 0.8;
/// `RandomGrayscale` probability.
pub const GRAY_P: f64 = 0.2;
/// Solarization probability of the second global view.
pub const SOLARIZE_P: f64 = 0.2;
/// ColorJitter strengths: brightness, contrast, saturation, hue.
pub const JITTER_STRENGTH: (f32, f32, f32, f32) = (0.4, 0.4, 0.2, 0.1);
/// Blur sigma range (`GaussianBlur(radius_min=0.1, radius_max=2.0)`).
pub const BLUR_SIGMA: (f32, f32) = (0.1, 2.0);

/// Which of DINO's three transforms a view gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    /// First global view: always blurred, never solarized.
    Global1,
    /// Second global view: blurred with p = 0.1, solarized with p = 0.2.
    Global2,
    /// Local view: blurred with p = 0.5.
    Local,
}

impl ViewKind {
    /// Probability of the Gaussian blur for this kind.
    pub fn blur_p(self) -> f64 {
        match self {
            ViewKind::Global1 => 1.0,
            ViewKind::Global2 => 0.1,
            ViewKind::Local => 0.5,
        }
    }

    /// Probability of solarization for this kind.
    pub fn solarize_p(self) -> f64 {
        match self {
            ViewKind::Global2 => SOLARIZE_P,
            ViewKind::Global1 | ViewKind::Local => 0.0,
        }
    }
}

/// Every random choice of one view; rendering it is then deterministic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewParams {
    /// The source region to crop (before resizing).
    pub crop: CropRect,
    /// Mirror left-right.
    pub flip: bool,
    /// Colour jitter, when applied.
    pub jitter: Option<Jitter>,
    /// Convert to three equal grey channels.
    pub gray: bool,
    /// Gaussian blur sigma, when applied.
    pub blur_sigma: Option<f32>,
    /// Solarize.
    pub solarize: bool,
}

/// Uniform draw in `[lo, hi)`, tolerating `lo == hi`.
fn uniform(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// torchvision `ColorJitter.get_params`: a random order, then the four factors.
pub fn draw_jitter(rng: &mut impl Rng) -> Jitter {
    let (b, c, s, h) = JITTER_STRENGTH;
    let mut order = [
        JitterOp::Brightness,
        JitterOp::Contrast,
        JitterOp::Saturation,
        JitterOp::Hue,
    ];
    order.shuffle(rng);
    Jitter {
        order,
        brightness: uniform(rng, (1.0 - b).max(0.0), 1.0 + b),
        contrast: uniform(rng, (1.0 - c).max(0.0), 1.0 + c),
        saturation: uniform(rng, (1.0 - s).max(0.0), 1.0 + s),
        hue: uniform(rng, -h, h),
    }
}

/// Draws the parameters of one view of a `width`×`height` (non-empty) image, in the order the
/// official pipeline applies them: crop, flip, jitter, grayscale, blur, solarize.
pub fn draw_view(
    kind: ViewKind,
    width: u32,
    height: u32,
    scale: (f32, f32),
    rng: &mut impl Rng,
) -> ViewParams {
    let scale = (f64::from(scale.0), f64::from(scale.1));
    let crop = random_resized_crop(width, height, scale, CROP_RATIO, rng);
    let flip = rng.random_bool(FLIP_P);
    let jitter = rng.random_bool(JITTER_P).then(|| draw_jitter(rng));
    let gray = rng.random_bool(GRAY_P);
    let blur = rng.random_bool(kind.blur_p());
    let blur_sigma = blur.then(|| uniform(rng, BLUR_SIGMA.0, BLUR_SIGMA.1));
    let solarize = rng.random_bool(kind.solarize_p());
    ViewParams {
        crop,
        flip,
        jitter,
        gray,
        blur_sigma,
        solarize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const DRAWS: usize = 20_000;

    /// Asserts an observed count is within 5 binomial standard deviations of `p·DRAWS`.
    fn assert_rate(count: usize, p: f64, what: &str) {
        let n = DRAWS as f64;
        let sd = (n * p * (1.0 - p)).sqrt().max(0.5);
        let dev = (count as f64 - n * p).abs();
        assert!(dev <= 5.0 * sd, "{what}: {count}/{DRAWS}, expected p = {p}");
    }

    fn draws(kind: ViewKind) -> Vec<ViewParams> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        (0..DRAWS)
            .map(|_| draw_view(kind, 320, 240, (0.4, 1.0), &mut rng))
            .collect()
    }

    #[test]
    fn flip_jitter_and_gray_frequencies() {
        for kind in [ViewKind::Global1, ViewKind::Global2, ViewKind::Local] {
            let d = draws(kind);
            assert_rate(d.iter().filter(|p| p.flip).count(), FLIP_P, "flip");
            assert_rate(
                d.iter().filter(|p| p.jitter.is_some()).count(),
                JITTER_P,
                "jitter",
            );
            assert_rate(d.iter().filter(|p| p.gray).count(), GRAY_P, "gray");
        }
    }

    #[test]
    fn blur_and_solarize_frequencies_per_kind() {
        for (kind, blur, sol) in [
            (ViewKind::Global1, 1.0, 0.0),
            (ViewKind::Global2, 0.1, 0.2),
            (ViewKind::Local, 0.5, 0.0),
        ] {
            let d = draws(kind);
            let blurred: Vec<f32> = d.iter().filter_map(|p| p.blur_sigma).collect();
            assert_rate(blurred.len(), blur, "blur");
            assert!(blurred.iter().all(|s| (0.1..=2.0).contains(s)));
            assert_rate(d.iter().filter(|p| p.solarize).count(), sol, "solarize");
        }
    }

    #[test]
    fn jitter_factors_stay_in_range_and_orders_vary() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let mut first_ops = [0usize; 4];
        for _ in 0..4000 {
            let j = draw_jitter(&mut rng);
            assert!((0.6..=1.4).contains(&j.brightness) && (0.6..=1.4).contains(&j.contrast));
            assert!((0.8..=1.2).contains(&j.saturation) && (-0.1..=0.1).contains(&j.hue));
            let mut sorted = j.order.map(|o| o as usize);
            first_ops[sorted[0]] += 1;
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3]);
        }
        assert!(first_ops.iter().all(|&c| c > 800), "{first_ops:?}");
    }
}
