//! Stage 4 on the benchmark: `dups` calibrated on the benchmark's clean photos only
//! (originals and distractors, as a user's collection before any copy), then measured on
//! the whole benchmark, so that the precision the calibration promises can be checked.

use super::pipeline::knn_pairs;
use super::{NearDupSet, PipelineInput};
use crate::calibrate::{
    sample_order, scans_all_hashes, score_sample, Calibration, Original, Stored,
};
use crate::photo::{self, DecodeOptions, DEFAULT_MAX_PIXELS};
use crate::Result;

/// The calibration `index` would make on the set's clean photos ([`NearDupSet::clean_rows`]),
/// with `input`'s descriptors (for the neighbours), hashes and keypoints; `k` neighbours
/// per photo; `seed` fixes the sample and the edits.
pub fn calibrate_on_clean_photos(
    set: &NearDupSet,
    input: &PipelineInput,
    k: usize,
    seed: u64,
) -> Result<Calibration> {
    let clean = set.clean_rows();
    let rows: Vec<Vec<f32>> = clean.iter().map(|&i| input.rows[i].clone()).collect();
    let mut neighbours = vec![Vec::new(); clean.len()];
    for (i, j) in knn_pairs(&rows, k) {
        neighbours[i].push(clean[j]);
    }
    let stored = |row: usize| Stored {
        hash: input.hashes.get(row).copied(),
        keypoints: input.keypoints.get(row).cloned(),
    };
    let decode = DecodeOptions {
        max_pixels: DEFAULT_MAX_PIXELS,
        target_short_side: Some(256),
        ..DecodeOptions::default()
    };
    let order = sample_order(clean.len(), seed);
    let load = |i: usize| {
        let at = *order.get(i)?;
        let image = photo::decode(&set.paths[clean[at]], &decode).ok()?.image;
        Some(Original {
            image,
            stored: stored(clean[at]),
            neighbours: neighbours[at].iter().map(|&j| stored(j)).collect(),
        })
    };
    let pool = scans_all_hashes(clean.len())
        .then(|| clean.iter().map(|&i| input.hashes[i]).collect::<Vec<_>>());
    let scores = score_sample(order.len(), &load, pool.as_deref(), seed, &|_, _| {});
    Ok(Calibration::from_scores(
        "benchmark",
        clean.len(),
        &scores,
        pool.is_some(),
    ))
}
