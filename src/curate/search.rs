//! Search by example that lists the query's copies first, found as `dups` finds them, then
//! the model's nearest photos.
//!
//! Candidates are the photos with the query's content hash, those whose perceptual hash
//! agrees with the query's under some flip or turn (every indexed photo is compared), the
//! model's nearest neighbours of the query and of its regions (a crop of the query is near
//! the region it shows). Each candidate is linked to the query by the same rule as `dups`
//! ([`Signals::link`]): the hash links alone, else the keypoints must line up. Linked
//! candidates are copies; the other neighbours are similar photos.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use dino_curate_index::{PhotoId, PhotoRecord, Store};

use super::burst::times_apart;
use super::dups::{DupRule, Evidence, KeypointLookup, Signals};
use super::vectors::Vectors;
use crate::embed::Embedder;
use crate::phash::{perceptual_hash, DihedralHash};
use crate::photo::{decode, DEFAULT_MAX_PIXELS};
use crate::verify::{keypoints_of, Keypoints};
use crate::{Error, Result};

/// Nearest neighbours of the query that are checked for being copies, at least (20 found
/// 0.956 of the copies in the top 5 on the first 100 BSDS queries, 50 with
/// [`REGION_CANDIDATES`] 4 found 0.971; docs/quality.md).
pub const NEIGHBOUR_CANDIDATES: usize = 50;

/// Nearest neighbours of each of the query's five regions that are checked (crops: 0.83 at
/// 2, 0.90 at 4 on those queries).
pub const REGION_CANDIDATES: usize = 4;

/// What a search knows of its query photo.
#[derive(Debug, Clone, Default)]
pub struct QueryPhoto {
    /// The model's descriptor.
    pub vector: Vec<f32>,
    /// Region queries ([`Embedder::region_queries`]); empty when the descriptor has none.
    pub regions: Vec<Vec<f32>>,
    /// Perceptual hash with its flips and turns, if known.
    pub hash: Option<DihedralHash>,
    /// Verification keypoints, if known.
    pub keypoints: Option<Keypoints>,
    /// Content hash of the file, if known.
    pub blake3: Option<[u8; 32]>,
    /// The query's own record, when it is an indexed photo (left out of the results).
    pub id: Option<PhotoId>,
    /// Its EXIF time (as records store it), if any: a photo taken at another moment is
    /// never its copy ([`other_moments`](super::burst::other_moments)).
    pub taken_at: Option<String>,
}

impl QueryPhoto {
    /// Everything a search uses, from an image file, decoded as `index` decodes.
    pub fn of_file(embedder: &Embedder, path: &Path) -> Result<Self> {
        let options = crate::indexer::decode_options(embedder.size(), DEFAULT_MAX_PIXELS);
        let photo = decode(path, &options).map_err(|e| Error::Config(e.to_string()))?;
        let image = std::slice::from_ref(&photo.image);
        let (vector, regions) = embedder.embed_with_regions(image)?;
        let vector = vector.to_vec2::<f32>()?.into_iter().next();
        let vector = vector.ok_or_else(|| Error::Config("no vector for the query".into()))?;
        // descriptors without region features (CLS alone) search by the whole photo only
        let regions = match regions {
            Some(rows) => split_rows(rows.to_vec2::<f32>()?, vector.len()),
            None => Vec::new(),
        };
        Ok(Self {
            regions,
            hash: Some(DihedralHash::new(&perceptual_hash(&photo.image))),
            keypoints: Some(keypoints_of(&photo.image)),
            blake3: crate::indexer::content_hash(path).ok(),
            vector,
            id: None,
            taken_at: crate::indexer::taken_at(path),
        })
    }

    /// An indexed photo as the query, from what the index stored of it.
    pub fn of_indexed(store: &Store, id: PhotoId) -> Result<Self> {
        let record = store
            .get(id)?
            .ok_or_else(|| Error::Config("the photo is no longer indexed".into()))?;
        let vector = store
            .embedding(id)?
            .ok_or_else(|| Error::Config("no vector for this photo".into()))?;
        let keypoints = store.keypoints(&record.blake3)?;
        Ok(Self {
            vector,
            regions: store.region_queries(id)?.unwrap_or_default(),
            hash: record.perceptual_hash.as_ref().map(DihedralHash::new),
            keypoints: keypoints.as_deref().and_then(Keypoints::from_bytes),
            blake3: Some(record.blake3),
            id: Some(id),
            taken_at: record.taken_at,
        })
    }
}

/// Each image's concatenated region rows cut into rows of `dim`.
fn split_rows(rows: Vec<Vec<f32>>, dim: usize) -> Vec<Vec<f32>> {
    rows.into_iter()
        .flat_map(|row| {
            row.chunks_exact(dim.max(1))
                .map(<[f32]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Why a result is a copy of the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyEvidence {
    /// What linked it.
    pub evidence: Evidence,
    /// The evidence's score: 1 for exact, the hash agreement, or the cosine.
    pub score: f32,
    /// Keypoint inliers of a verified copy (else 0).
    pub inliers: u32,
    /// How sure: exact copies first, then by the link's confidence.
    pub confidence: f32,
}

impl CopyEvidence {
    /// What a user reads: "copy: exact", "copy: hash 0.83", "copy: verified 57".
    pub fn label(&self) -> String {
        match self.evidence {
            Evidence::Exact => "copy: exact".into(),
            Evidence::Hash => format!("copy: hash {:.2}", self.score),
            Evidence::Descriptor => format!("copy: desc {:.3}", self.score),
            Evidence::Verified => format!("copy: verified {}", self.inliers),
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The photo.
    pub id: PhotoId,
    /// The model's similarity (cosine) to the query.
    pub similarity: f32,
    /// Why it is a copy of the query; None: it is only similar.
    pub copy: Option<CopyEvidence>,
}

impl SearchHit {
    /// "copy: verified 57" or "similar 0.83".
    pub fn label(&self) -> String {
        match &self.copy {
            Some(copy) => copy.label(),
            None => format!("similar {:.2}", self.similarity),
        }
    }
}

/// What [`search`] found: every copy and the nearest other photos.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Found {
    /// Copies of the query, exact first, then the surest.
    pub copies: Vec<SearchHit>,
    /// Other photos by similarity, best first.
    pub similar: Vec<SearchHit>,
}

impl Found {
    /// The first `k` results: copies first.
    pub fn top(self, k: usize) -> Vec<SearchHit> {
        self.copies
            .into_iter()
            .chain(self.similar)
            .take(k)
            .collect()
    }
}

/// The query's copies in `store` under `rule`, and its `k` nearest other photos.
pub fn search(store: &mut Store, query: &QueryPhoto, rule: &DupRule, k: usize) -> Result<Found> {
    let mut neighbours = store.search(&query.vector, k.max(NEIGHBOUR_CANDIDATES) + 1)?;
    neighbours.retain(|(id, _)| Some(*id) != query.id);
    let mut candidates: Vec<PhotoId> = neighbours.iter().map(|(id, _)| *id).collect();
    for region in &query.regions {
        let hits = store.search(region, REGION_CANDIDATES)?;
        candidates.extend(hits.into_iter().map(|(id, _)| id));
    }
    let exact = match &query.blake3 {
        Some(hash) => store.ids_by_hash(hash)?,
        None => Vec::new(),
    };
    candidates.extend(&exact);
    if let (Some(hash), Some(min)) = (&query.hash, rule.hash_candidate_agreement()) {
        candidates.extend(hash_matches(store, hash, min)?);
    }
    candidates.sort_unstable();
    candidates.dedup();
    candidates.retain(|&id| Some(id) != query.id);
    let copies = copies_among(store, query, &candidates, &exact, rule)?;
    let mut found = Found {
        similar: neighbours
            .iter()
            .filter(|(id, _)| !copies.contains_key(id))
            .map(|&(id, similarity)| SearchHit {
                id,
                similarity,
                copy: None,
            })
            .take(k)
            .collect(),
        copies: copies.into_values().collect(),
    };
    found.copies.sort_by(|a, b| {
        let sureness = |h: &SearchHit| h.copy.map_or(f32::NEG_INFINITY, |c| c.confidence);
        sureness(b)
            .total_cmp(&sureness(a))
            .then(b.similarity.total_cmp(&a.similarity))
            .then(a.id.cmp(&b.id))
    });
    Ok(found)
}

/// Indexed photos whose perceptual hash agrees with `hash` on at least `min` of its bits
/// under some flip or turn (every record is read: about 1 µs a photo).
fn hash_matches(store: &Store, hash: &DihedralHash, min: f32) -> Result<Vec<PhotoId>> {
    let mut out = Vec::new();
    for entry in store.photos() {
        let (id, record) = entry?;
        if let Some(other) = &record.perceptual_hash {
            if hash.agreement(&DihedralHash::new(other)) >= min {
                out.push(id);
            }
        }
    }
    Ok(out)
}

/// The candidates linked to the query under `rule`, with their evidence; `exact` ones
/// (same content) without further checks.
fn copies_among(
    store: &Store,
    query: &QueryPhoto,
    candidates: &[PhotoId],
    exact: &[PhotoId],
    rule: &DupRule,
) -> Result<HashMap<PhotoId, SearchHit>> {
    let rows = CandidateRows::read(store, query, candidates)?;
    let lookup = |row: usize| rows.keypoints.get(row).cloned().flatten();
    let signals = Signals {
        vectors: &rows.vectors,
        hashes: &rows.hashes,
        keypoints: Some(&lookup as KeypointLookup),
    };
    let mut out = HashMap::new();
    for row in 1..rows.vectors.len() {
        let id = rows.vectors.id(row);
        let similarity = signals.cosine(0, row);
        let copy = if exact.contains(&id) {
            Some(CopyEvidence {
                evidence: Evidence::Exact,
                score: 1.0,
                inliers: 0,
                confidence: f32::INFINITY,
            })
        } else if times_apart(query.taken_at.as_deref(), rows.taken_at[row].as_deref()) {
            None
        } else {
            signals.link(0, row, rule).map(|link| CopyEvidence {
                evidence: link.evidence,
                score: link.score,
                inliers: link.inliers,
                confidence: link.confidence,
            })
        };
        if let Some(copy) = copy {
            let copy = Some(copy);
            out.insert(
                id,
                SearchHit {
                    id,
                    similarity,
                    copy,
                },
            );
        }
    }
    Ok(out)
}

/// The query (row 0) and the candidates with a vector, as `dups`' signals see them.
struct CandidateRows {
    vectors: Vectors,
    hashes: Vec<Option<DihedralHash>>,
    keypoints: Vec<Option<Arc<Keypoints>>>,
    taken_at: Vec<Option<String>>,
}

impl CandidateRows {
    fn read(store: &Store, query: &QueryPhoto, candidates: &[PhotoId]) -> Result<Self> {
        let mut rows = Self {
            vectors: Vectors::with_capacity(query.vector.len(), candidates.len() + 1),
            hashes: vec![query.hash],
            keypoints: vec![query.keypoints.clone().map(Arc::new)],
            taken_at: vec![query.taken_at.clone()],
        };
        // the query's id is never a candidate; u64::MAX stands for "not indexed"
        rows.vectors
            .push(query.id.unwrap_or(PhotoId::MAX), &query.vector);
        for &id in candidates {
            let (Some(record), Some(vector)) = (store.get(id)?, store.embedding(id)?) else {
                continue;
            };
            if rows.vectors.push(id, &vector) {
                rows.push_signals(store, &record)?;
            }
        }
        Ok(rows)
    }

    fn push_signals(&mut self, store: &Store, record: &PhotoRecord) -> Result<()> {
        self.hashes
            .push(record.perceptual_hash.as_ref().map(DihedralHash::new));
        let bytes = store.keypoints(&record.blake3)?;
        let points = bytes.as_deref().and_then(Keypoints::from_bytes);
        self.keypoints.push(points.map(Arc::new));
        self.taken_at.push(record.taken_at.clone());
        Ok(())
    }
}
