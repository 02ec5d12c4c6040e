//! FAST-9 corners (Rosten & Drummond): a pixel is a corner when 9 contiguous pixels of the
//! 16 on a circle of radius 3 around it are all brighter, or all darker, than it by more
//! than a threshold. Written here rather than taken from imageproc because its detector
//! is not mirror-symmetric (a photo and its mirror image get different corners), which
//! verification of mirrored copies needs.

use image::GrayImage;

/// The circle of radius 3, in order around it.
const CIRCLE: [(i32, i32); 16] = [
    (0, -3),
    (1, -3),
    (2, -2),
    (3, -1),
    (3, 0),
    (3, 1),
    (2, 2),
    (1, 3),
    (0, 3),
    (-1, 3),
    (-2, 2),
    (-3, 1),
    (-3, 0),
    (-3, -1),
    (-2, -2),
    (-1, -3),
];

/// Contiguous circle pixels a corner needs.
const ARC: usize = 9;

/// A corner and its score: the largest threshold at which it is still a corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corner {
    /// Column.
    pub x: u32,
    /// Row.
    pub y: u32,
    /// Largest threshold passing.
    pub score: u8,
}

/// Every FAST-9 corner of `img` at `threshold`, at least `margin` (≥ 3) pixels inside.
pub fn corners(img: &GrayImage, threshold: u8, margin: u32) -> Vec<Corner> {
    let (w, h) = img.dimensions();
    let margin = margin.max(3);
    if w <= 2 * margin || h <= 2 * margin {
        return Vec::new();
    }
    let mut out = Vec::new();
    for y in margin..h - margin {
        for x in margin..w - margin {
            if let Some(score) = corner_score(img, x, y, threshold) {
                out.push(Corner { x, y, score });
            }
        }
    }
    out
}

/// The corner score at `(x, y)` (at least 3 inside), if it is a corner at `threshold`.
fn corner_score(img: &GrayImage, x: u32, y: u32, threshold: u8) -> Option<u8> {
    let centre = i16::from(img.get_pixel(x, y)[0]);
    let t = i16::from(threshold);
    let at = |k: usize| {
        let (dx, dy) = CIRCLE[k];
        i16::from(img.get_pixel((x as i32 + dx) as u32, (y as i32 + dy) as u32)[0]) - centre
    };
    // any 9-arc holds at least two of the four compass points
    let compass = [at(0), at(4), at(8), at(12)];
    let brighter = compass.iter().filter(|&&d| d > t).count();
    let darker = compass.iter().filter(|&&d| d < -t).count();
    if brighter < 2 && darker < 2 {
        return None;
    }
    let diffs: [i16; 16] = std::array::from_fn(at);
    let best = (0..16)
        .map(|start| {
            let arc = (0..ARC).map(|i| diffs[(start + i) % 16]);
            let bright = arc.clone().min().unwrap_or(0);
            let dark = arc.map(|d| -d).min().unwrap_or(0);
            bright.max(dark)
        })
        .max()
        .unwrap_or(0);
    // the score is the largest threshold still passed: one below the arc's least difference
    (best > t).then(|| (best - 1).clamp(0, 255) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bright_square_has_corners_at_its_corners_and_none_on_its_edges() {
        let mut img = GrayImage::new(40, 40);
        for y in 10..30 {
            for x in 10..30 {
                img.put_pixel(x, y, image::Luma([200]));
            }
        }
        let found = corners(&img, 20, 3);
        assert!(!found.is_empty());
        for c in &found {
            let near = |v: u32| v.abs_diff(10) <= 2 || v.abs_diff(29) <= 2;
            assert!(near(c.x) && near(c.y), "{c:?} is not near a corner");
        }
        let flat = GrayImage::from_pixel(40, 40, image::Luma([90]));
        assert!(corners(&flat, 20, 3).is_empty());
    }

    #[test]
    fn a_mirrored_image_has_the_mirrored_corners() {
        let mut img = GrayImage::new(64, 48);
        for (i, p) in img.pixels_mut().enumerate() {
            p.0[0] = ((i * 2_654_435_761) >> 13) as u8;
        }
        let mirrored = image::imageops::flip_horizontal(&img);
        let mut a: Vec<_> = corners(&img, 20, 3)
            .into_iter()
            .map(|c| (63 - c.x, c.y, c.score))
            .collect();
        let mut b: Vec<_> = corners(&mirrored, 20, 3)
            .into_iter()
            .map(|c| (c.x, c.y, c.score))
            .collect();
        a.sort_unstable();
        b.sort_unstable();
        assert!(a.len() > 20);
        assert_eq!(a, b);
    }
}
