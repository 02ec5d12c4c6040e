//! Calibration on an index: the sample of photos, their neighbours and what the store
//! holds of each.

use std::path::PathBuf;

use dino_curate_index::{PhotoId, PhotoRecord, Store};

use super::{
    sample_order, scans_all_hashes, score_sample, Calibration, Original, Stored, MAX_ORIGINALS,
    MIN_PHOTOS,
};
use crate::curate::GRAPH_K;
use crate::phash::DihedralHash;
use crate::photo::{self, DecodeOptions};
use crate::verify::Keypoints;
use crate::Result;

/// Sampled photos tried per photo wanted (some are left out: they seem copied, or no
/// longer decode).
const CANDIDATES_PER_ORIGINAL: usize = 3;

/// Whether `index` should calibrate again: there are enough photos, and there is no
/// calibration, or it was made for another model or on a collection a tenth smaller or
/// larger.
pub fn needs_calibration(existing: Option<&Calibration>, photos: usize, model_id: &str) -> bool {
    if photos < MIN_PHOTOS {
        return false;
    }
    match existing {
        None => true,
        Some(c) => c.model_id != model_id || photos.abs_diff(c.photos) * 10 > c.photos,
    }
}

/// What the store holds of `record`.
fn stored(store: &Store, record: &PhotoRecord) -> Stored {
    let keypoints = store
        .keypoints(&record.blake3)
        .ok()
        .flatten()
        .and_then(|bytes| Keypoints::from_bytes(&bytes));
    Stored {
        hash: record.perceptual_hash.as_ref().map(DihedralHash::new),
        keypoints,
    }
}

/// A sampled photo before decoding: its file, what is stored of it and of its neighbours.
struct Candidate {
    path: PathBuf,
    stored: Stored,
    neighbours: Vec<Stored>,
}

/// Calibrates `dups` on the photos of `store` (decoded with `decode`, as `index` does);
/// `seed` fixes the sample and the edits; reports `(photos copied, wanted)`.
pub fn calibrate_store(
    store: &mut Store,
    decode: &DecodeOptions,
    seed: u64,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Calibration> {
    let meta = store.meta()?;
    let model_id = meta.model_id.unwrap_or_default();
    let hashed: Vec<(PhotoId, PhotoRecord)> = store
        .photos()
        .filter(|item| !matches!(item, Ok((_, r)) if r.perceptual_hash.is_none()))
        .collect::<std::result::Result<_, _>>()?;
    let photos = meta.embeddings;
    let pool: Option<Vec<DihedralHash>> = scans_all_hashes(photos).then(|| {
        hashed
            .iter()
            .filter_map(|(_, r)| r.perceptual_hash.as_ref().map(DihedralHash::new))
            .collect()
    });
    let candidates = sample(store, &hashed, seed)?;
    let load = |i: usize| {
        let c = candidates.get(i)?;
        let image = photo::decode(&c.path, decode).ok()?.image;
        Some(Original {
            image,
            stored: c.stored.clone(),
            neighbours: c.neighbours.clone(),
        })
    };
    let scores = score_sample(candidates.len(), &load, pool.as_deref(), seed, progress);
    Ok(Calibration::from_scores(
        &model_id,
        photos,
        &scores,
        pool.is_some(),
    ))
}

/// Up to [`CANDIDATES_PER_ORIGINAL`] × [`MAX_ORIGINALS`] photos in a random order fixed by
/// `seed`, each with what the store holds of it and of its [`GRAPH_K`] nearest neighbours.
fn sample(
    store: &mut Store,
    records: &[(PhotoId, PhotoRecord)],
    seed: u64,
) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for i in sample_order(records.len(), seed) {
        if out.len() >= CANDIDATES_PER_ORIGINAL * MAX_ORIGINALS {
            break;
        }
        let (id, record) = &records[i];
        let Some(vector) = store.embedding(*id)? else {
            continue;
        };
        let near = store.search(&vector, GRAPH_K + 1)?;
        let mut neighbours = Vec::with_capacity(GRAPH_K);
        for (other, _) in near.into_iter().filter(|(other, _)| other != id) {
            if let Some(r) = store.get(other)? {
                neighbours.push(stored(store, &r));
            }
        }
        neighbours.truncate(GRAPH_K);
        out.push(Candidate {
            path: record.path.clone(),
            stored: stored(store, record),
            neighbours,
        });
    }
    Ok(out)
}
