//! Keypoints for verification: FAST-9 corners of the luma at [`WORK_SIDE`] pixels, each with
//! a 256-bit BRIEF descriptor whose test pattern is mirror-symmetric (bit `k + 128` tests
//! the mirror image of bit `k`'s pair), and their compact stored form.

use std::sync::OnceLock;

use image::{GrayImage, RgbImage};
use rand::{Rng, SeedableRng};

use super::fast::{corners, Corner};

/// Longest side, in pixels, of the luma the keypoints are found on.
pub const WORK_SIDE: u32 = 320;

/// Most keypoints kept per photo (the strongest corners).
pub const MAX_KEYPOINTS: usize = 300;

/// Corner threshold of FAST (intensity difference on the circle), and the lower one used
/// when a photo has few corners at the first.
const FAST_THRESHOLDS: [u8; 2] = [20, 8];

/// Half the side of the square the descriptor's tests sample.
const PATCH_RADIUS: i32 = 7;

/// Blur applied before the tests (the tests compare single pixels).
const BLUR_SIGMA: f32 = 2.0;

/// Tests in each half of the descriptor.
const HALF_TESTS: usize = 128;

/// Stored positions are fixed-point with this many steps per pixel.
const POSITION_STEPS: f32 = 16.0;

/// Layout version of the stored form.
const FORMAT: u8 = 1;

/// Bytes per stored keypoint: x and y as `u16`, then the 32 descriptor bytes.
const POINT_BYTES: usize = 4 + 32;

/// One keypoint: where it is in the working image and its descriptor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Keypoint {
    /// Column, in working pixels.
    pub x: f32,
    /// Row, in working pixels.
    pub y: f32,
    /// The 256 test results.
    pub bits: [u64; 4],
}

/// A photo's keypoints and the size of the working image they were found on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Keypoints {
    /// Working image width.
    pub width: u32,
    /// Working image height.
    pub height: u32,
    /// Strongest first.
    pub points: Vec<Keypoint>,
}

impl Keypoints {
    /// The stored form: format byte, width, height and count as little-endian `u16`, then
    /// each point's fixed-point position and descriptor.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(7 + self.points.len() * POINT_BYTES);
        out.push(FORMAT);
        for v in [self.width, self.height, self.points.len() as u32] {
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        for p in &self.points {
            for c in [p.x, p.y] {
                out.extend_from_slice(&((c * POSITION_STEPS).round() as u16).to_le_bytes());
            }
            p.bits
                .iter()
                .for_each(|w| out.extend_from_slice(&w.to_le_bytes()));
        }
        out
    }

    /// Reads the stored form; `None` when it is not one this build writes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (&format, rest) = bytes.split_first()?;
        let u16_at = |b: &[u8], i: usize| -> Option<u16> {
            Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?))
        };
        let (width, height, count) = (u16_at(rest, 0)?, u16_at(rest, 2)?, u16_at(rest, 4)?);
        let body = rest.get(6..)?;
        if format != FORMAT || body.len() != usize::from(count) * POINT_BYTES {
            return None;
        }
        let points = body
            .chunks_exact(POINT_BYTES)
            .map(|c| {
                let mut bits = [0u64; 4];
                for (w, b) in bits.iter_mut().zip(c[4..].chunks_exact(8)) {
                    *w = u64::from_le_bytes(b.try_into().ok()?);
                }
                Some(Keypoint {
                    x: f32::from(u16_at(c, 0)?) / POSITION_STEPS,
                    y: f32::from(u16_at(c, 2)?) / POSITION_STEPS,
                    bits,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            width: width.into(),
            height: height.into(),
            points,
        })
    }
}

/// The keypoints of a photo (any size; it is resized to [`WORK_SIDE`] on its longer side).
pub fn keypoints_of(img: &RgbImage) -> Keypoints {
    let luma = working_luma(img);
    let (width, height) = luma.dimensions();
    let margin = (PATCH_RADIUS + 1) as u32;
    if width <= 2 * margin || height <= 2 * margin {
        return Keypoints {
            width,
            height,
            points: Vec::new(),
        };
    }
    let corners = strongest_corners(&luma, margin);
    let blurred = imageproc::filter::gaussian_blur_f32(&luma, BLUR_SIGMA);
    let points = corners
        .iter()
        .map(|c| Keypoint {
            x: c.x as f32,
            y: c.y as f32,
            bits: describe(&blurred, c.x as i32, c.y as i32),
        })
        .collect();
    Keypoints {
        width,
        height,
        points,
    }
}

/// The photo's luma with its longer side at [`WORK_SIDE`].
fn working_luma(img: &RgbImage) -> GrayImage {
    let luma = image::imageops::grayscale(img);
    let (w, h) = luma.dimensions();
    let long = w.max(h).max(1);
    let scale = WORK_SIDE as f32 / long as f32;
    let (tw, th) = (
        ((w as f32 * scale).round() as u32).max(1),
        ((h as f32 * scale).round() as u32).max(1),
    );
    if (tw, th) == (w, h) {
        return luma;
    }
    image::imageops::resize(&luma, tw, th, image::imageops::FilterType::Triangle)
}

/// Up to [`MAX_KEYPOINTS`] FAST corners at least `margin` from every edge, each the
/// strongest of its 3 × 3 neighbourhood, strongest first.
fn strongest_corners(luma: &GrayImage, margin: u32) -> Vec<Corner> {
    let (w, h) = luma.dimensions();
    let mut found = Vec::new();
    for threshold in FAST_THRESHOLDS {
        found = corners(luma, threshold, margin);
        if found.len() >= MAX_KEYPOINTS / 4 {
            break;
        }
    }
    let mut score = vec![0u16; (w * h) as usize];
    for c in &found {
        score[(c.y * w + c.x) as usize] = u16::from(c.score) + 1;
    }
    let at = |x: u32, y: u32| score[(y * w + x) as usize];
    // ties keep both, so that a photo and its mirror image keep the same corners
    found.retain(|c| {
        let s = at(c.x, c.y);
        (c.y - 1..=c.y + 1)
            .flat_map(|y| (c.x - 1..=c.x + 1).map(move |x| (x, y)))
            .all(|(x, y)| at(x, y) <= s)
    });
    found.sort_by(|a, b| b.score.cmp(&a.score).then((a.y, a.x).cmp(&(b.y, b.x))));
    found.truncate(MAX_KEYPOINTS);
    found
}

/// A test: is the pixel at the first offset darker than the one at the second?
type Test = ([i32; 2], [i32; 2]);

/// The descriptor's tests: [`HALF_TESTS`] random pairs inside the patch (Gaussian around
/// the centre, as BRIEF), then the same pairs mirrored left to right.
fn pattern() -> &'static [Test] {
    static PATTERN: OnceLock<Vec<Test>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x000b_71ef_5eed);
        let mut offset = || {
            let sigma = (2 * PATCH_RADIUS + 1) as f32 / 5.0;
            let v: f32 = rng.sample::<f32, _>(rand_distr::StandardNormal) * sigma;
            (v.round() as i32).clamp(-PATCH_RADIUS, PATCH_RADIUS)
        };
        let mut first = Vec::with_capacity(HALF_TESTS);
        while first.len() < HALF_TESTS {
            let test = ([offset(), offset()], [offset(), offset()]);
            if test.0 != test.1 {
                first.push(test);
            }
        }
        let mirrored = first.iter().map(|(p, q)| ([-p[0], p[1]], [-q[0], q[1]]));
        first.iter().copied().chain(mirrored).collect()
    })
}

/// The 256 test results at `(x, y)`, which lies at least the patch radius inside `img`.
fn describe(img: &GrayImage, x: i32, y: i32) -> [u64; 4] {
    let px = |o: [i32; 2]| img.get_pixel((x + o[0]) as u32, (y + o[1]) as u32)[0];
    let mut bits = [0u64; 4];
    for (k, (p, q)) in pattern().iter().enumerate() {
        if px(*p) < px(*q) {
            bits[k / 64] |= 1 << (k % 64);
        }
    }
    bits
}
