//! Pairwise verification of near-duplicate candidates: do two photos show the same scene
//! *in the same places*? Global descriptors and hashes say "alike"; a crop, a copy with a
//! caption or a mirrored copy is only proven when its details line up under one geometric
//! transform.
//!
//! Each photo gets up to [`MAX_KEYPOINTS`] FAST corners at [`WORK_SIDE`] pixels with a
//! 256-bit binary descriptor ([`Keypoints`], computed while indexing, where the photo is
//! decoded anyway, and stored beside its record). Two photos are verified by matching the
//! descriptors (mutual nearest neighbours in Hamming distance) and counting the matches that
//! one affine transform maps onto each other (RANSAC, [`ransac`]). The descriptor's test
//! pattern is mirror-symmetric, so the mirrored photo's descriptors are a fixed permutation
//! of the stored ones: mirrored copies are verified without decoding anything again.

mod fast;
mod framing;
mod keypoints;
mod ransac;
mod retrieval;

pub use framing::{framing, Framing, FramingEdit, MIN_FRAMING_INLIERS};
pub use keypoints::{keypoints_of, Keypoint, Keypoints, MAX_KEYPOINTS, WORK_SIDE};
pub use retrieval::shared_keypoint_pairs;

/// Largest Hamming distance (of 256 bits) between two matched descriptors.
pub const MAX_HAMMING: u32 = 64;

/// Largest distance, in working pixels, between a transformed keypoint and its match
/// for the match to count as an inlier.
pub const INLIER_TOLERANCE: f32 = 4.0;

/// Matched keypoint positions: `(position in a, position in b)`.
type Matches = Vec<([f32; 2], [f32; 2])>;

/// What verifying a pair found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verification {
    /// Matches that the best affine transform maps onto each other.
    pub inliers: u32,
    /// Whether the best transform mirrors the photo.
    pub mirrored: bool,
}

/// Verifies photos `a` and `b` as they are and with `b` mirrored; the better of the two.
/// `seed` makes the random sampling repeatable.
pub fn verify(a: &Keypoints, b: &Keypoints, seed: u64) -> Verification {
    best_fit(a, b, seed).map_or_else(Verification::default, |fit| Verification {
        inliers: fit.inliers,
        mirrored: fit.mirrored,
    })
}

/// The affine map that explains the most matches between `a` and `b`.
struct Fit {
    /// From `a`'s working pixels to `b`'s (flipped left to right when `mirrored`).
    map: ransac::Affine,
    /// Matches it explains.
    inliers: u32,
    /// Whether `b` is matched mirrored.
    mirrored: bool,
}

/// The better [`Fit`] of `a` to `b` as it is and to `b` mirrored (more inliers; unmirrored
/// on a tie); `None` when neither has four matches that a plausible map fits.
fn best_fit(a: &Keypoints, b: &Keypoints, seed: u64) -> Option<Fit> {
    [false, true]
        .into_iter()
        .filter_map(|mirrored| {
            let pairs = mutual_matches(a, b, mirrored);
            let (map, inliers) = ransac::best_affine(&pairs, INLIER_TOLERANCE, seed)?;
            Some(Fit {
                map,
                inliers,
                mirrored,
            })
        })
        .max_by_key(|fit| (fit.inliers, !fit.mirrored))
}

/// Where keypoint `p` of photo `k` lies, in `k` flipped left to right when `mirrored`.
fn position(k: &Keypoints, p: &Keypoint, mirrored: bool) -> [f32; 2] {
    let x = if mirrored {
        k.width as f32 - 1.0 - p.x
    } else {
        p.x
    };
    [x, p.y]
}

/// Pairs of keypoints of `a` and `b` (mirrored: `b` flipped left to right) that are each
/// other's nearest descriptor, within [`MAX_HAMMING`].
fn mutual_matches(a: &Keypoints, b: &Keypoints, mirrored: bool) -> Matches {
    let b_bits: Vec<[u64; 4]> = b
        .points
        .iter()
        .map(|p| {
            if mirrored {
                mirror_bits(&p.bits)
            } else {
                p.bits
            }
        })
        .collect();
    let a_bits: Vec<[u64; 4]> = a.points.iter().map(|p| p.bits).collect();
    if a_bits.is_empty() || b_bits.is_empty() {
        return Vec::new();
    }
    let (best_for_a, best_for_b) = pulp::Arch::new().dispatch(Nearest {
        a: &a_bits,
        b: &b_bits,
    });
    best_for_a
        .iter()
        .enumerate()
        .filter(|&(i, &(d, j))| d <= MAX_HAMMING && best_for_b[j].1 == i)
        .map(|(i, &(_, j))| {
            let (p, q) = (&a.points[i], &b.points[j]);
            (position(a, p, false), position(b, q, mirrored))
        })
        .collect()
}

/// Each descriptor's nearest in the other list, `(distance, index)`: for `a`, then for `b`.
/// Run through pulp so that `count_ones` compiles to the CPU's popcount where it has one
/// (the portable build's fallback was most of the time of verification).
struct Nearest<'a> {
    a: &'a [[u64; 4]],
    b: &'a [[u64; 4]],
}

/// Nearest `(distance, index)` per descriptor.
type Best = Vec<(u32, usize)>;

impl pulp::WithSimd for Nearest<'_> {
    type Output = (Best, Best);

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        let mut best_for_a = vec![(u32::MAX, usize::MAX); self.a.len()];
        let mut best_for_b = vec![(u32::MAX, usize::MAX); self.b.len()];
        for (i, p) in self.a.iter().enumerate() {
            for (j, q) in self.b.iter().enumerate() {
                let d = hamming(p, q);
                if d < best_for_a[i].0 {
                    best_for_a[i] = (d, j);
                }
                if d < best_for_b[j].0 {
                    best_for_b[j] = (d, i);
                }
            }
        }
        (best_for_a, best_for_b)
    }
}

/// Bits that differ between two descriptors.
#[inline(always)]
fn hamming(a: &[u64; 4], b: &[u64; 4]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// The descriptor of the same point in the mirrored photo: the test pattern's second half
/// is its first half mirrored, so mirroring swaps the halves.
fn mirror_bits(bits: &[u64; 4]) -> [u64; 4] {
    [bits[2], bits[3], bits[0], bits[1]]
}

#[cfg(test)]
mod tests;
