//! Calibrating `dups` on the user's own collection (stage 4 of docs/quality.md).
//!
//! A sample of the collection's photos gets edited copies, made with the edits of the
//! near-duplicate benchmark's generator ([`edits`]). Each copy is scored against its
//! original (a right pair) and against the photos `dups` would verify it with: the
//! original's nearest neighbours in the index, and, up to [`HASH_SCAN_LIMIT`] photos,
//! every photo whose perceptual hash comes close (wrong pairs). For every rule on a grid
//! of hash agreements and keypoint-inlier counts the links it makes are counted, and
//! `dups --precision P` takes the rule with the most recall whose precision, bounded from
//! below for the few wrong pairs a sample can show, is at least `P`.
//!
//! A photo that already seems to have a copy in the collection (a neighbour the loosest
//! rule would link) is not sampled: its real copies would count as wrong pairs. Precision
//! is that of a collection where each sampled photo has its copies; the estimate holds for
//! photos like the user's, not for the benchmark somebody tuned on.

use std::path::{Path, PathBuf};

use image::RgbImage;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::curate::dups::{DupRule, HASH_SCAN_LIMIT};
use crate::phash::{perceptual_hash, DihedralHash};
use crate::verify::{keypoints_of, verify, Keypoints};
use crate::{Error, Result};

mod collection;
pub mod edits;

pub use collection::{calibrate_store, needs_calibration};

/// File in the workspace holding the calibration.
pub const CALIBRATION_FILE: &str = "dups-calibration.json";
/// Most photos of the collection that get edited copies.
pub const MAX_ORIGINALS: usize = 150;
/// Seed of the sample and the edits (one collection calibrates the same each time).
pub const CALIBRATION_SEED: u64 = 0x0d0c;
/// Fewest indexed photos worth calibrating on.
pub const MIN_PHOTOS: usize = 20;
/// Copies made in all, spread over the sampled photos.
const COPIES_WANTED: usize = 600;
/// Fewest and most copies of one photo.
const COPIES_PER_PHOTO: (usize, usize) = (3, 30);
/// Copies of other photos each copy is verified with (those whose hashes agree best, as
/// the hash proposes candidates in `dups`).
const CROSS_CANDIDATES: usize = 5;
/// Most edits combined in one copy.
pub const MAX_EDITS: usize = 3;
/// Hash agreements tried (the loosest also decides which photos seem to have copies).
pub const HASH_GRID: [f32; 10] = [0.64, 0.66, 0.68, 0.69, 0.70, 0.72, 0.75, 0.80, 0.85, 0.90];
/// Keypoint inliers tried (the fewest also decides which photos seem to have copies).
pub const INLIER_GRID: [u32; 9] = [10, 12, 14, 16, 20, 24, 32, 48, 64];

/// The strictest rule of the grid: a pair it links is taken to be a copy beyond doubt.
const CERTAIN: (f32, u32) = (
    HASH_GRID[HASH_GRID.len() - 1],
    INLIER_GRID[INLIER_GRID.len() - 1],
);

/// What one pair of photos scores on the signals `dups` decides with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairScore {
    /// Best hash agreement under any flip or turn (None: a photo has no hash).
    pub hash: Option<f32>,
    /// Keypoint inliers of verification.
    pub inliers: u32,
    /// Keypoints of the plainer photo (verification needs as many as the inliers it asks).
    pub fewest_keypoints: usize,
}

impl PairScore {
    /// Scores a pair from its hashes and keypoints (None: not stored).
    pub fn of(
        a: (Option<&DihedralHash>, Option<&Keypoints>),
        b: (Option<&DihedralHash>, Option<&Keypoints>),
        seed: u64,
    ) -> Self {
        let hash = match (a.0, b.0) {
            (Some(x), Some(y)) => Some(x.agreement(y)),
            _ => None,
        };
        let (inliers, fewest_keypoints) = match (a.1, b.1) {
            (Some(x), Some(y)) => (
                verify(x, y, seed).inliers,
                x.points.len().min(y.points.len()),
            ),
            _ => (0, 0),
        };
        Self {
            hash,
            inliers,
            fewest_keypoints,
        }
    }

    /// Whether the hash links the pair at agreement `min`.
    pub fn hashed(&self, min: f32) -> bool {
        self.hash.is_some_and(|h| h >= min)
    }

    /// Whether verification links the pair at `min` inliers (as `dups` does: photos with
    /// fewer keypoints than that are not verified).
    pub fn verified(&self, min: u32) -> bool {
        self.fewest_keypoints >= min as usize && self.inliers >= min
    }

    /// Whether the rule of hash agreement `hash` and `inliers` links the pair.
    pub fn linked(&self, hash: f32, inliers: u32) -> bool {
        self.hashed(hash) || self.verified(inliers)
    }
}

/// What the index holds of one photo: its hash and keypoints.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// The perceptual hash with its flips and turns.
    pub hash: Option<DihedralHash>,
    /// The verification keypoints.
    pub keypoints: Option<Keypoints>,
}

impl Stored {
    fn parts(&self) -> (Option<&DihedralHash>, Option<&Keypoints>) {
        (self.hash.as_ref(), self.keypoints.as_ref())
    }
}

/// A photo of the collection to copy: its pixels as `index` decoded them, what the index
/// stores of it, and what it stores of its nearest neighbours.
#[derive(Debug, Clone)]
pub struct Original {
    /// The decoded photo.
    pub image: RgbImage,
    /// Its stored hash and keypoints.
    pub stored: Stored,
    /// Its nearest neighbours' (itself excluded).
    pub neighbours: Vec<Stored>,
}

/// The scores of the copies of the sampled photos.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    /// Each copy against its original, with the copy's edits.
    pub right: Vec<(PairScore, Vec<String>)>,
    /// Each copy against its original's neighbours.
    pub wrong_candidates: Vec<PairScore>,
    /// Each copy's hash agreement with the other photos of the collection, where it is at
    /// least the grid's loosest (only when the hashes of the whole collection are scanned).
    pub wrong_hashes: Vec<f32>,
    /// Photos that got copies.
    pub originals: usize,
    /// Sampled photos left out because they seem to have a copy in the collection already.
    pub left_out: usize,
    /// The copies made, each with the sampled photo it was made of, for scoring them
    /// against each other.
    made: Vec<(usize, Stored)>,
}

impl Scores {
    fn extend(&mut self, other: Scores) {
        self.made.extend(other.made);
        self.right.extend(other.right);
        self.wrong_candidates.extend(other.wrong_candidates);
        self.wrong_hashes.extend(other.wrong_hashes);
        self.originals += other.originals;
        self.left_out += other.left_out;
    }
}

/// Whether `original` seems to have a copy among its neighbours or in `pool` (the
/// collection's hashes, itself included): a pair the loosest rule of the grid links.
fn seems_copied(original: &Original, pool: Option<&[DihedralHash]>) -> bool {
    let (loosest_hash, fewest_inliers) = (HASH_GRID[0], INLIER_GRID[0]);
    let by_neighbour = original.neighbours.iter().enumerate().any(|(i, n)| {
        PairScore::of(original.stored.parts(), n.parts(), i as u64)
            .linked(loosest_hash, fewest_inliers)
    });
    let by_pool = match (pool, &original.stored.hash) {
        (Some(pool), Some(hash)) => {
            pool.iter()
                .filter(|p| hash.agreement(p) >= loosest_hash)
                .count()
                > 1
        }
        _ => false,
    };
    by_neighbour || by_pool
}

/// Makes `copies` edited copies of `original` and scores them; an original that seems to
/// have a copy in the collection already is only counted as left out.
pub fn score_copies(
    original: &Original,
    pool: Option<&[DihedralHash]>,
    copies: usize,
    seed: u64,
) -> Scores {
    if seems_copied(original, pool) {
        return Scores {
            left_out: 1,
            ..Scores::default()
        };
    }
    let others: Vec<&DihedralHash> = match (pool, &original.stored.hash) {
        (Some(pool), Some(hash)) => pool
            .iter()
            .filter(|p| hash.agreement(p) < HASH_GRID[0])
            .collect(),
        _ => Vec::new(),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut scores = Scores {
        originals: 1,
        ..Scores::default()
    };
    let mut by_neighbour = vec![Vec::with_capacity(copies); original.neighbours.len()];
    let mut by_other = vec![Vec::new(); others.len()];
    for c in 0..copies {
        let (image, edits) = edits::edited_copy(&original.image, MAX_EDITS, &mut rng);
        let copy = Stored {
            hash: Some(DihedralHash::new(&perceptual_hash(&image))),
            keypoints: Some(keypoints_of(&image)),
        };
        let pair_seed = seed ^ ((c as u64) << 40);
        let right = PairScore::of(copy.parts(), original.stored.parts(), pair_seed);
        scores.right.push((right, edits));
        for (i, n) in original.neighbours.iter().enumerate() {
            by_neighbour[i].push(PairScore::of(copy.parts(), n.parts(), pair_seed ^ i as u64));
        }
        if let Some(hash) = &copy.hash {
            for (i, other) in others.iter().enumerate() {
                let agreement = hash.agreement(other);
                if agreement >= HASH_GRID[0] {
                    by_other[i].push(agreement);
                }
            }
        }
        scores.made.push((0, copy));
    }
    // A photo that some copy matches beyond doubt is a copy of the original the screening
    // missed (a crop, say), not a wrong pair.
    let beyond_doubt = |s: &PairScore| s.linked(CERTAIN.0, CERTAIN.1);
    for pairs in by_neighbour {
        if !pairs.iter().any(beyond_doubt) {
            scores.wrong_candidates.extend(pairs);
        }
    }
    for agreements in by_other {
        if !agreements.iter().any(|&a| a >= CERTAIN.0) {
            scores.wrong_hashes.extend(agreements);
        }
    }
    scores
}

/// Scores the copies against the copies of other photos, as a collection that holds
/// edited copies of many photos does: every pair's hashes, and each copy verified with the
/// [`CROSS_CANDIDATES`] copies of other photos whose hashes agree best with its own.
fn score_copies_against_each_other(scores: &mut Scores, seed: u64) {
    let made: Vec<&Stored> = scores.made.iter().map(|(_, s)| s).collect();
    let photo_of = |i: usize| scores.made[i].0;
    let found: Vec<(Vec<f32>, Vec<PairScore>)> = (0..made.len())
        .into_par_iter()
        .map(|i| {
            let Some(hash) = &made[i].hash else {
                return (Vec::new(), Vec::new());
            };
            let mut others: Vec<(f32, usize)> = (0..made.len())
                .filter(|&j| photo_of(j) != photo_of(i))
                .filter_map(|j| Some((hash.agreement(made[j].hash.as_ref()?), j)))
                .collect();
            let hashes = others
                .iter()
                .filter(|&&(a, j)| j > i && a >= HASH_GRID[0] && a < CERTAIN.0)
                .map(|&(a, _)| a)
                .collect();
            others.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let verified = others
                .iter()
                .take(CROSS_CANDIDATES)
                .map(|&(_, j)| {
                    let pair_seed = seed ^ (i * made.len() + j) as u64;
                    PairScore::of(made[i].parts(), made[j].parts(), pair_seed)
                })
                .filter(|s| !s.linked(CERTAIN.0, CERTAIN.1))
                .collect();
            (hashes, verified)
        })
        .collect();
    for (hashes, verified) in found {
        scores.wrong_hashes.extend(hashes);
        scores.wrong_candidates.extend(verified);
    }
}

/// One rule and what it did on the copies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationPoint {
    /// Hash agreement that links.
    pub hash_agreement: f32,
    /// Keypoint inliers that link a verified pair.
    pub min_inliers: u32,
    /// Copies linked to their original.
    pub right_links: usize,
    /// Copies linked to another photo.
    pub wrong_links: usize,
    /// Precision, bounded from below: the wrong links are taken as their count plus what
    /// a sample of this size could have missed (see [`precision_bound`]).
    pub precision: f64,
    /// Copies linked to their original, of all copies.
    pub recall: f64,
}

impl CalibrationPoint {
    /// `rule` with this point's hash agreement and inliers.
    pub fn apply(&self, rule: DupRule) -> DupRule {
        rule.with_hash_agreement(Some(self.hash_agreement))
            .with_verification(Some(self.min_inliers))
    }
}

/// `right / (right + wrong')`, with `wrong'` the one-sided 95 % upper bound of a Poisson
/// count of `wrong` (Wilson–Hilferty: 3.0 when none was seen, 4.7 for one, 6.3 for two),
/// so that a sample with no wrong link does not promise precision 1.
pub fn precision_bound(right: usize, wrong: usize) -> f64 {
    if right == 0 {
        return 0.0;
    }
    let n = wrong as f64 + 1.0;
    let z = 1.645;
    let bound = n * (1.0 - 1.0 / (9.0 * n) + z / (3.0 * n.sqrt())).powi(3);
    right as f64 / (right as f64 + bound)
}

/// What the rule (`hash`, `inliers`) does on `scores`; `pool_scanned`: the wrong hashes
/// were scanned over the whole collection (else the candidates' hashes count).
fn point(scores: &Scores, pool_scanned: bool, hash: f32, inliers: u32) -> CalibrationPoint {
    let right_links = scores
        .right
        .iter()
        .filter(|(s, _)| s.linked(hash, inliers))
        .count();
    let wrong_by_hash = if pool_scanned {
        scores.wrong_hashes.iter().filter(|&&a| a >= hash).count()
    } else {
        scores
            .wrong_candidates
            .iter()
            .filter(|s| s.hashed(hash))
            .count()
    };
    let wrong_by_keypoints = scores
        .wrong_candidates
        .iter()
        .filter(|s| !s.hashed(hash) && s.verified(inliers))
        .count();
    let wrong_links = wrong_by_hash + wrong_by_keypoints;
    CalibrationPoint {
        hash_agreement: hash,
        min_inliers: inliers,
        right_links,
        wrong_links,
        precision: precision_bound(right_links, wrong_links),
        recall: right_links as f64 / scores.right.len().max(1) as f64,
    }
}

/// Recall of one kind of edit at the calibrated point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditRecall {
    /// The edit.
    pub edit: String,
    /// Copies with this edit (among others).
    pub copies: usize,
    /// Of them, linked to their original.
    pub recall: f64,
}

/// The calibration of `dups` on one collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The index's model when calibrated (its neighbours are the wrong pairs).
    pub model_id: String,
    /// Photos in the collection when calibrated.
    pub photos: usize,
    /// Photos that got copies.
    pub originals: usize,
    /// Sampled photos left out because they seem to have a copy already.
    pub left_out: usize,
    /// Edited copies made.
    pub copies: usize,
    /// Wrong pairs scored by verification (copies against their original's neighbours).
    pub wrong_candidates: usize,
    /// Whether wrong hash pairs were scanned over the whole collection.
    pub hashes_scanned: bool,
    /// Every rule of the grid.
    pub points: Vec<CalibrationPoint>,
    /// Recall per edit at the rule for [`DEFAULT_PRECISION`].
    pub edits: Vec<EditRecall>,
}

/// Precision `dups` aims for unless told otherwise.
pub const DEFAULT_PRECISION: f64 = 0.99;

impl Calibration {
    /// The calibration from the copies' `scores`.
    pub fn from_scores(model_id: &str, photos: usize, scores: &Scores, pool_scanned: bool) -> Self {
        let points: Vec<CalibrationPoint> = HASH_GRID
            .iter()
            .flat_map(|&h| INLIER_GRID.iter().map(move |&m| (h, m)))
            .map(|(h, m)| point(scores, pool_scanned, h, m))
            .collect();
        let mut calibration = Self {
            model_id: model_id.to_string(),
            photos,
            originals: scores.originals,
            left_out: scores.left_out,
            copies: scores.right.len(),
            wrong_candidates: scores.wrong_candidates.len(),
            hashes_scanned: pool_scanned,
            points,
            edits: Vec::new(),
        };
        if let Some(p) = calibration.point_for(DEFAULT_PRECISION) {
            calibration.edits = edit_recall(scores, &p);
        }
        calibration
    }

    /// Where the calibration of the workspace at `root` lives.
    pub fn path(root: &Path) -> PathBuf {
        root.join(CALIBRATION_FILE)
    }

    /// The workspace's calibration, if there is one.
    pub fn load(root: &Path) -> Result<Option<Calibration>> {
        let path = Self::path(root);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Writes the calibration into the workspace at `root`, atomically.
    pub fn save(&self, root: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Config(e.to_string()))?;
        crate::atomic::write_atomically(&Self::path(root), |tmp| {
            std::fs::write(tmp, &json).map_err(|e| Error::io(tmp, e))
        })
    }

    /// The rule with the most recall whose precision bound is at least `precision` (on
    /// ties the stricter: more inliers, then more hash agreement); None when none is.
    pub fn point_for(&self, precision: f64) -> Option<CalibrationPoint> {
        self.points
            .iter()
            .filter(|p| p.precision >= precision)
            .max_by(|a, b| {
                a.right_links
                    .cmp(&b.right_links)
                    .then(a.min_inliers.cmp(&b.min_inliers))
                    .then(a.hash_agreement.total_cmp(&b.hash_agreement))
            })
            .copied()
    }
}

impl Calibration {
    /// The strictest rule of the grid, for a precision no rule reaches.
    pub fn strictest(&self) -> Option<CalibrationPoint> {
        self.points
            .iter()
            .find(|p| (p.hash_agreement, p.min_inliers) == CERTAIN)
            .copied()
    }

    /// The most precision the sample can show (with no wrong link at all).
    pub fn best_precision(&self) -> f64 {
        precision_bound(self.copies, 0)
    }
}

/// Recall of each edit at `point`.
fn edit_recall(scores: &Scores, point: &CalibrationPoint) -> Vec<EditRecall> {
    edits::EDITS
        .iter()
        .filter_map(|&edit| {
            let with: Vec<&PairScore> = scores
                .right
                .iter()
                .filter(|(_, e)| e.iter().any(|x| x == edit))
                .map(|(s, _)| s)
                .collect();
            let linked = with
                .iter()
                .filter(|s| s.linked(point.hash_agreement, point.min_inliers))
                .count();
            (!with.is_empty()).then(|| EditRecall {
                edit: edit.to_string(),
                copies: with.len(),
                recall: linked as f64 / with.len() as f64,
            })
        })
        .collect()
}

/// Copies to make of each of `originals` sampled photos.
pub fn copies_per_photo(originals: usize) -> usize {
    (COPIES_WANTED / originals.max(1)).clamp(COPIES_PER_PHOTO.0, COPIES_PER_PHOTO.1)
}

/// Scores copies of up to [`MAX_ORIGINALS`] of the `candidates` sampled photos (in the
/// order given; `load` reads one, None when it cannot be read), with the collection's
/// hashes `pool` when they are all compared; reports `(originals done, wanted)`.
pub fn score_sample(
    candidates: usize,
    load: &(dyn Fn(usize) -> Option<Original> + Sync),
    pool: Option<&[DihedralHash]>,
    seed: u64,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Scores {
    let wanted = MAX_ORIGINALS.min(candidates);
    let copies = copies_per_photo(wanted);
    let chunk = 2 * rayon::current_num_threads().max(1);
    let mut scores = Scores::default();
    let mut copied = Vec::new();
    let mut next = 0;
    while scores.originals < wanted && next < candidates {
        let end = (next + chunk).min(candidates);
        let batch: Vec<(usize, Scores)> = (next..end)
            .into_par_iter()
            .filter_map(|i| {
                let original = load(i)?;
                Some((
                    i,
                    score_copies(&original, pool, copies, seed ^ (i as u64) << 20),
                ))
            })
            .collect();
        for (i, mut s) in batch {
            if s.originals > 0 {
                copied.push(i);
            }
            s.made.iter_mut().for_each(|m| m.0 = i);
            scores.extend(s);
        }
        next = end;
        progress(scores.originals.min(wanted), wanted);
    }
    more_copies(&mut scores, &copied, load, pool, seed);
    score_copies_against_each_other(&mut scores, seed);
    scores
}

/// When fewer photos could be copied than wanted (most seemed copied already), more copies
/// of those that were, up to [`COPIES_PER_PHOTO`]'s most, so that the sample can still show
/// a high precision.
fn more_copies(
    scores: &mut Scores,
    copied: &[usize],
    load: &(dyn Fn(usize) -> Option<Original> + Sync),
    pool: Option<&[DihedralHash]>,
    seed: u64,
) {
    let missing = COPIES_WANTED.saturating_sub(scores.right.len());
    if missing == 0 || copied.is_empty() {
        return;
    }
    let made = scores.right.len() / copied.len();
    let extra = missing
        .div_ceil(copied.len())
        .min(COPIES_PER_PHOTO.1.saturating_sub(made));
    if extra == 0 {
        return;
    }
    let batch: Vec<(usize, Scores)> = copied
        .par_iter()
        .filter_map(|&i| {
            let original = load(i)?;
            let again = score_copies(&original, pool, extra, !seed ^ (i as u64) << 20);
            Some((i, again))
        })
        .collect();
    for (i, mut s) in batch {
        s.originals = 0;
        s.made.iter_mut().for_each(|m| m.0 = i);
        scores.extend(s);
    }
}

/// `0..n` in the random order fixed by `seed` in which photos are sampled.
pub fn sample_order(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    order
}

/// Whether the collection's hashes are all compared by `dups` (and so by calibration).
pub fn scans_all_hashes(photos: usize) -> bool {
    photos <= HASH_SCAN_LIMIT
}

#[cfg(test)]
mod tests;
