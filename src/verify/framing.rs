//! How two verified copies frame their scene: is one a crop of the other, or the other's
//! whole picture with padding (letterbox bars, a frame, the corners of a rotation) around it?
//!
//! The affine map that verification finds sends one photo's frame into the other's. Two
//! numbers per side come out of it: how much of a photo's frame the other frame also shows,
//! and how many of its keypoints lie where the other photo does not reach. A crop shows part
//! of the original's frame and the original has detail (keypoints) outside it; padding shows
//! the whole original and has no detail of its own outside it (bars and frames are flat, so
//! they hold no corners).
//!
//! Where both photos show the same part of the scene, keypoints of one with no counterpart in
//! the other, crowded into one horizontal band, are marks drawn on it: a caption, a watermark,
//! a logo. Measured on the BSDS near-duplicate bench (docs/quality.md, "Keepers"): a crop or
//! padding always left no keypoint of the copy outside the original, a crop sometimes only
//! one or two of the original's outside the copy; marks were found on 57 of 94 same-size
//! copies with text and on 5 of 266 other same-size copies (colour edits, whose lost corners
//! gather in the most textured band).

use super::ransac::Affine;
use super::{best_fit, position, Keypoints, INLIER_TOLERANCE};

/// Fewest inliers whose map is trusted to say where one frame lies in the other.
pub const MIN_FRAMING_INLIERS: u32 = 12;

/// Cells per side of the grid that measures how much of a frame the other frame shows.
const GRID: usize = 24;

/// Working pixels a mapped point may lie outside a frame and still count as inside it.
const EDGE_SLACK: f32 = INLIER_TOLERANCE;

/// A frame counts as inside another when at least this fraction of it is.
const INSIDE: f32 = 0.97;

/// A crop shows at most this fraction of the original's frame.
const CROP_SHOWS_AT_MOST: f32 = 0.95;

/// Height of the bands searched for marks, as a fraction of the photo's height.
const BAND: f32 = 0.15;

/// Fewest keypoints in one band that make marks.
const MIN_MARKS: u32 = 20;

/// Marks on one photo outnumber those on the other at least this many times.
const MARKS_RATIO: u32 = 2;

/// Marks hold at least this fraction of the photo's keypoints without a counterpart (text
/// crowds into its band; a change of contrast loses corners everywhere).
const MARKS_SHARE: f32 = 0.4;

/// Where two verified photos `a` and `b` lie in each other's frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Framing {
    /// Fraction of `a`'s frame that `b`'s frame also shows.
    pub a_shown_by_b: f32,
    /// Fraction of `b`'s frame that `a`'s frame also shows.
    pub b_shown_by_a: f32,
    /// Fraction of `a`'s keypoints where `b` does not reach: detail only `a` shows.
    pub a_detail_outside_b: f32,
    /// Fraction of `b`'s keypoints where `a` does not reach.
    pub b_detail_outside_a: f32,
    /// Where both photos show the scene: the most keypoints of `a` without a counterpart in
    /// `b` in one horizontal band ([`BAND`] of the height), less `b`'s without one in `a`
    /// there.
    pub a_marks: u32,
    /// The same for `b`.
    pub b_marks: u32,
    /// Keypoints of `a` without a counterpart in `b`, where both show the scene.
    pub a_lonely: u32,
    /// The same for `b`.
    pub b_lonely: u32,
}

/// How an edited copy was made from its original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingEdit {
    /// Part of the original's picture.
    Crop,
    /// The original's whole picture with flat padding around it: letterbox or pillarbox
    /// bars, a frame, the corners a rotation leaves.
    Padding,
    /// The original's picture with marks drawn on it: a caption, a watermark, a logo. Only
    /// a judgement between photos of one size (a smaller copy's lost detail can look alike).
    Marks,
}

impl Framing {
    /// The same framing seen from `b`.
    pub fn swapped(&self) -> Self {
        Self {
            a_shown_by_b: self.b_shown_by_a,
            b_shown_by_a: self.a_shown_by_b,
            a_detail_outside_b: self.b_detail_outside_a,
            b_detail_outside_a: self.a_detail_outside_b,
            a_marks: self.b_marks,
            b_marks: self.a_marks,
            a_lonely: self.b_lonely,
            b_lonely: self.a_lonely,
        }
    }

    /// How `b` was made from `a`, when the evidence says `b` is an edited copy of `a`.
    pub fn edit_of_a(&self) -> Option<FramingEdit> {
        if self.b_shown_by_a >= INSIDE
            && self.a_shown_by_b <= CROP_SHOWS_AT_MOST
            && self.a_detail_outside_b > 0.0
        {
            Some(FramingEdit::Crop)
        } else if self.a_shown_by_b >= INSIDE
            && self.b_shown_by_a < INSIDE
            && self.b_detail_outside_a == 0.0
        {
            Some(FramingEdit::Padding)
        } else if self.b_marks >= MIN_MARKS
            && self.b_marks >= MARKS_RATIO * self.a_marks.max(1)
            && self.b_marks as f32 >= MARKS_SHARE * self.b_lonely as f32
        {
            Some(FramingEdit::Marks)
        } else {
            None
        }
    }
}

/// Where `a` and `b` lie in each other's frame, from the best affine map between them (as
/// they are or with `b` mirrored, as [`super::verify`] decides); `None` when no map has
/// [`MIN_FRAMING_INLIERS`] inliers. `seed` makes the sampling repeatable.
pub fn framing(a: &Keypoints, b: &Keypoints, seed: u64) -> Option<Framing> {
    let fit = best_fit(a, b, seed).filter(|fit| fit.inliers >= MIN_FRAMING_INLIERS)?;
    let (map, back) = (fit.map, fit.map.inverse()?);
    let a_points: Vec<[f32; 2]> = a.points.iter().map(|p| position(a, p, false)).collect();
    let b_points: Vec<[f32; 2]> = b
        .points
        .iter()
        .map(|p| position(b, p, fit.mirrored))
        .collect();
    let (a_frame, b_frame) = (frame_of(a), frame_of(b));
    let a_shared = shared(&a_points, &map, b_frame);
    let b_shared = shared(&b_points, &back, a_frame);
    let a_marks = marks(&a_shared, a_frame, &mapped(&b_shared, &back));
    let b_marks = marks(&b_shared, b_frame, &mapped(&a_shared, &map));
    Some(Framing {
        a_shown_by_b: shown_fraction(a_frame, &map, b_frame),
        b_shown_by_a: shown_fraction(b_frame, &back, a_frame),
        a_detail_outside_b: outside_fraction(&a_points, &map, b_frame),
        b_detail_outside_a: outside_fraction(&b_points, &back, a_frame),
        a_marks: a_marks.most_in_band,
        b_marks: b_marks.most_in_band,
        a_lonely: a_marks.lonely,
        b_lonely: b_marks.lonely,
    })
}

/// A working image's width and height.
fn frame_of(k: &Keypoints) -> [f32; 2] {
    [k.width as f32, k.height as f32]
}

/// Whether `p` lies in a frame of size `frame`, give or take [`EDGE_SLACK`].
fn inside(p: [f32; 2], frame: [f32; 2]) -> bool {
    (-EDGE_SLACK..=frame[0] + EDGE_SLACK).contains(&p[0])
        && (-EDGE_SLACK..=frame[1] + EDGE_SLACK).contains(&p[1])
}

/// Fraction of a `from` frame that `map` sends into a `to` frame (cell centres of a grid).
fn shown_fraction(from: [f32; 2], map: &Affine, to: [f32; 2]) -> f32 {
    let cells = (0..GRID * GRID)
        .filter(|i| {
            let cx = (i % GRID) as f32 + 0.5;
            let cy = (i / GRID) as f32 + 0.5;
            let p = [cx * from[0] / GRID as f32, cy * from[1] / GRID as f32];
            inside(map.apply(p), to)
        })
        .count();
    cells as f32 / (GRID * GRID) as f32
}

/// Fraction of `points` that `map` sends outside a `to` frame (0 when there are none).
fn outside_fraction(points: &[[f32; 2]], map: &Affine, to: [f32; 2]) -> f32 {
    if points.is_empty() {
        return 0.0;
    }
    let outside = points
        .iter()
        .filter(|&&p| !inside(map.apply(p), to))
        .count();
    outside as f32 / points.len() as f32
}

/// The `points` that `map` sends into a `to` frame: those the other photo shows too.
fn shared(points: &[[f32; 2]], map: &Affine, to: [f32; 2]) -> Vec<[f32; 2]> {
    points
        .iter()
        .copied()
        .filter(|&p| inside(map.apply(p), to))
        .collect()
}

/// `points` sent through `map`.
fn mapped(points: &[[f32; 2]], map: &Affine) -> Vec<[f32; 2]> {
    points.iter().map(|&p| map.apply(p)).collect()
}

/// Keypoints of one photo without a counterpart in the other.
struct Marks {
    /// The most in one band, less the other photo's there.
    most_in_band: u32,
    /// All of them.
    lonely: u32,
}

/// The `own` points of a frame of size `frame` without an `other` point near them (`other`
/// already mapped into the frame), and the most of them in one horizontal band less the
/// `other` points without an `own` one there.
fn marks(own: &[[f32; 2]], frame: [f32; 2], other: &[[f32; 2]]) -> Marks {
    let tol2 = INLIER_TOLERANCE * INLIER_TOLERANCE;
    let near = |p: &[f32; 2], q: &[f32; 2]| (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) <= tol2;
    let lonely_rows = |set: &[[f32; 2]], others: &[[f32; 2]]| -> Vec<f32> {
        set.iter()
            .filter(|p| inside(**p, frame) && !others.iter().any(|q| near(p, q)))
            .map(|p| p[1])
            .collect()
    };
    let (new, lost) = (lonely_rows(own, other), lonely_rows(other, own));
    let band = BAND * frame[1];
    let step = (band / 3.0).max(1.0);
    let in_band =
        |rows: &[f32], top: f32| rows.iter().filter(|&&y| y >= top && y < top + band).count();
    let most_in_band = (0..)
        .map(|i| i as f32 * step)
        .take_while(|&top| top < frame[1])
        .map(|top| in_band(&new, top).saturating_sub(in_band(&lost, top)))
        .max()
        .unwrap_or(0);
    Marks {
        most_in_band: most_in_band as u32,
        lonely: new.len() as u32,
    }
}
