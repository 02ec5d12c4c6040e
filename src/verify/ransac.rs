//! RANSAC over affine transforms: how many matched points one transform explains.

use rand::{Rng, SeedableRng};

/// Most transforms tried per pair.
const MAX_TRIALS: usize = 500;

/// Probability of having drawn one all-inlier sample when the trials stop early.
const CONFIDENCE: f64 = 0.99;

/// Least area (working pixels²) of a sample's triangle: thinner ones fit noise.
const MIN_TRIANGLE_AREA: f32 = 20.0;

/// Range of the transform's determinant (area ratio) accepted as a copy: a crop to a
/// sixteenth of the photo and back. Mirrored copies are matched as mirrored, so the
/// transform keeps orientation.
const AREA_RATIO: (f32, f32) = (1.0 / 16.0, 16.0);

/// An affine map `(x, y) -> (a x + b y + c, d x + e y + f)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine([f32; 6]);

impl Affine {
    /// The map taking the three `from` points to the three `to` points, if they span a
    /// triangle.
    pub fn through(from: [[f32; 2]; 3], to: [[f32; 2]; 3]) -> Option<Self> {
        let [p, q, r] = from;
        let det = (q[0] - p[0]) * (r[1] - p[1]) - (r[0] - p[0]) * (q[1] - p[1]);
        if det.abs() / 2.0 < MIN_TRIANGLE_AREA {
            return None;
        }
        // solve for each output coordinate: [x y 1] · [a b c] = out
        let row = |k: usize| {
            let (u, v, w) = (to[0][k], to[1][k], to[2][k]);
            let a = ((v - u) * (r[1] - p[1]) - (w - u) * (q[1] - p[1])) / det;
            let b = ((w - u) * (q[0] - p[0]) - (v - u) * (r[0] - p[0])) / det;
            [a, b, u - a * p[0] - b * p[1]]
        };
        let ([a, b, c], [d, e, f]) = (row(0), row(1));
        Some(Self([a, b, c, d, e, f]))
    }

    /// Where the map sends `p`.
    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        let [a, b, c, d, e, f] = self.0;
        [a * p[0] + b * p[1] + c, d * p[0] + e * p[1] + f]
    }

    /// The map taking each point back to where this one found it (`None` when it squashes
    /// the plane flat).
    pub fn inverse(&self) -> Option<Self> {
        let [a, b, c, d, e, f] = self.0;
        let det = a * e - b * d;
        if det.abs() < 1e-9 {
            return None;
        }
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        Some(Self([
            ia,
            ib,
            -(ia * c + ib * f),
            id,
            ie,
            -(id * c + ie * f),
        ]))
    }

    /// Whether the map could turn one photo into a copy: orientation kept, area changed by
    /// at most [`AREA_RATIO`].
    fn plausible(&self) -> bool {
        let [a, b, _, d, e, _] = self.0;
        let det = a * e - b * d;
        det > AREA_RATIO.0 && det < AREA_RATIO.1
    }
}

/// The plausible affine map that sends the most `pairs` within `tolerance` of their
/// partner, with that count; `None` when fewer than four pairs match or no sample fits.
pub fn best_affine(
    pairs: &[([f32; 2], [f32; 2])],
    tolerance: f32,
    seed: u64,
) -> Option<(Affine, u32)> {
    let n = pairs.len();
    if n < 4 {
        return None;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tol2 = tolerance * tolerance;
    let (mut best, mut needed): (Option<(Affine, usize)>, usize) = (None, MAX_TRIALS);
    let mut trial = 0;
    while trial < needed.min(MAX_TRIALS) {
        trial += 1;
        let (i, j, k) = distinct_three(&mut rng, n);
        let sample = |m: usize| pairs[m];
        let from = [sample(i).0, sample(j).0, sample(k).0];
        let to = [sample(i).1, sample(j).1, sample(k).1];
        let Some(map) = Affine::through(from, to).filter(Affine::plausible) else {
            continue;
        };
        let count = pairs
            .iter()
            .filter(|(p, q)| {
                let t = map.apply(*p);
                (t[0] - q[0]).powi(2) + (t[1] - q[1]).powi(2) <= tol2
            })
            .count();
        if best.is_none_or(|(_, most)| count > most) {
            best = Some((map, count));
            needed = trials_needed(count as f64 / n as f64);
        }
    }
    best.map(|(map, count)| (map, count as u32))
}

/// Three different indices below `n` (at least 3).
fn distinct_three(rng: &mut impl Rng, n: usize) -> (usize, usize, usize) {
    let i = rng.random_range(0..n);
    let mut j = rng.random_range(0..n - 1);
    if j >= i {
        j += 1;
    }
    let (lo, hi) = (i.min(j), i.max(j));
    let mut k = rng.random_range(0..n - 2);
    if k >= lo {
        k += 1;
    }
    if k >= hi {
        k += 1;
    }
    (i, j, k)
}

/// Trials after which an all-inlier sample has been drawn with probability
/// [`CONFIDENCE`], when `ratio` of the pairs are inliers.
fn trials_needed(ratio: f64) -> usize {
    let all_in = ratio.powi(3);
    if all_in >= 1.0 {
        return 1;
    }
    let trials = (1.0 - CONFIDENCE).ln() / (1.0 - all_in).ln();
    if trials.is_finite() {
        trials.ceil().max(1.0) as usize
    } else {
        MAX_TRIALS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count of [`best_affine`], 0 when it fits no map.
    fn affine_inliers(pairs: &[([f32; 2], [f32; 2])], tolerance: f32, seed: u64) -> u32 {
        best_affine(pairs, tolerance, seed).map_or(0, |(_, inliers)| inliers)
    }

    #[test]
    fn a_map_through_three_points_sends_them_there() {
        let from = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]];
        let to = [[5.0, 7.0], [25.0, 7.0], [5.0, 17.0]];
        let map = Affine::through(from, to).expect("a triangle");
        for (p, q) in from.iter().zip(&to) {
            let t = map.apply(*p);
            assert!(
                (t[0] - q[0]).abs() < 1e-4 && (t[1] - q[1]).abs() < 1e-4,
                "{t:?} {q:?}"
            );
        }
        assert!(map.plausible(), "stretch 2 × 1 keeps orientation");
        let back = map.inverse().expect("invertible");
        for (p, q) in from.iter().zip(&to) {
            let t = back.apply(*q);
            assert!(
                (t[0] - p[0]).abs() < 1e-3 && (t[1] - p[1]).abs() < 1e-3,
                "{t:?} {p:?}"
            );
        }
    }

    #[test]
    fn collinear_points_and_mirroring_maps_are_refused() {
        let line = [[0.0, 0.0], [10.0, 10.0], [20.0, 20.0]];
        assert!(Affine::through(line, line).is_none());
        let from = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]];
        let mirrored = [[0.0, 0.0], [-10.0, 0.0], [0.0, 10.0]];
        let map = Affine::through(from, mirrored).expect("a triangle");
        assert!(!map.plausible(), "a mirror has a negative determinant");
    }

    #[test]
    fn counts_the_points_one_map_explains_among_outliers() {
        // 30 points moved by a scale and shift, 30 scattered at random
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut pairs = Vec::new();
        for _ in 0..30 {
            let p = [rng.random_range(0.0..300.0), rng.random_range(0.0..200.0)];
            pairs.push((p, [0.8 * p[0] + 12.0, 0.9 * p[1] - 5.0]));
        }
        for _ in 0..30 {
            let p = [rng.random_range(0.0..300.0), rng.random_range(0.0..200.0)];
            let q = [rng.random_range(0.0..300.0), rng.random_range(0.0..200.0)];
            pairs.push((p, q));
        }
        let inliers = affine_inliers(&pairs, 2.0, 7);
        assert!((30..=32).contains(&inliers), "{inliers}");
        assert!(
            affine_inliers(&pairs[30..], 2.0, 7) <= 4,
            "random pairs explain little"
        );
    }
}
