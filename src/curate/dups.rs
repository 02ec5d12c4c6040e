//! Near-duplicate groups, in stages that are each measured (docs/quality.md):
//!
//! 1. **Candidates**: photos with the same content hash, the edges of the descriptor's
//!    k-nearest-neighbour graph (with the neighbours of each photo's region queries), every
//!    pair whose perceptual hashes agree under some flip or quarter-turn ([`hash_links`]),
//!    and each photo's best partners by shared keypoints
//!    ([`crate::verify::shared_keypoint_pairs`]: crops).
//! 2. **Links**: a candidate pair becomes a link with its [`Evidence`]: `exact`, `hash`
//!    (agreement ≥ the rule's) or `descriptor` (cosine ≥ the threshold), and a confidence:
//!    how far above its threshold it is, as a fraction of the way to a perfect score.
//!    A candidate that neither links is **verified** when the rule asks for it: its
//!    keypoints must line up under one affine transform ([`crate::verify`]), and the
//!    inlier count makes the confidence.
//! 3. **Verified grouping**: links merge groups, most confident first. Two photos alone
//!    join on any link; larger groups join on an exact or a strong link (confidence ≥
//!    [`STRONG_LINK`]), on two links between them, or, when the rule does not verify,
//!    when every pair across is close to the descriptor (the rule of the first version). A crop and a grey copy of one photo
//!    thus meet through the original, and a chain of neighbours, each only a little alike,
//!    never becomes one group.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use dino_curate_index::PhotoId;

use super::vectors::{dot, Vectors};
use super::Neighbours;
use crate::phash::DihedralHash;
use crate::verify::{verify, Keypoints};

/// When two photos count as near-duplicates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DupRule {
    /// Smallest descriptor similarity (cosine) of a link, and of the mean similarity
    /// between two groups that merge by the descriptor alone.
    pub threshold: f32,
    /// Smallest similarity between any two members of groups merged by the descriptor
    /// alone.
    pub floor: f32,
    /// Fraction of agreeing perceptual-hash bits (best flip or turn) that links two
    /// photos, if hashes count.
    pub hash_agreement: Option<f32>,
    /// Keypoint inliers that link two candidate photos by verification, if verified.
    pub min_inliers: Option<u32>,
}

impl DupRule {
    /// The rule for a threshold, with the floor a fixed margin below it; hashes ignored.
    pub fn with_threshold(threshold: f32) -> Self {
        Self {
            threshold,
            floor: threshold - CHAIN_MARGIN,
            hash_agreement: None,
            min_inliers: None,
        }
    }

    /// The same rule, linking photos whose hashes agree on `agreement` (None: ignoring
    /// hashes).
    pub fn with_hash_agreement(self, agreement: Option<f32>) -> Self {
        Self {
            hash_agreement: agreement,
            ..self
        }
    }

    /// Hash agreement from which pairs are candidates: the linking one, or lower when
    /// verification checks the pairs the hash alone is not sure of.
    pub fn hash_candidate_agreement(&self) -> Option<f32> {
        let link = self.hash_agreement?;
        Some(match self.min_inliers {
            Some(_) => link.min(HASH_CANDIDATE_AGREEMENT),
            None => link,
        })
    }

    /// The same rule, verifying the candidates it does not link otherwise and linking those
    /// with `inliers` (None: no verification).
    pub fn with_verification(self, inliers: Option<u32>) -> Self {
        Self {
            min_inliers: inliers,
            ..self
        }
    }
}

/// Perceptual-hash agreement at which `dups` links two photos (measured on the
/// near-duplicate benchmark, docs/quality.md).
pub const DEFAULT_HASH_AGREEMENT: f32 = 0.69;

/// How far below the threshold a pair inside a group merged by the descriptor may be.
pub const CHAIN_MARGIN: f32 = 0.05;

/// Most photos whose hashes are all compared with each other; above it only the k-NN
/// graph's pairs are candidates (the hash still links them), since the all-pairs scan grows
/// with the square of the collection (27 s at this size on 2 cores).
pub const HASH_SCAN_LIMIT: usize = 50_000;

/// Most photos for which `dups` searches the graph again for each photo's neighbours;
/// above it the neighbours are read from the graph's own links
/// ([`dino_curate_index::Store::linked_graph`]): searching takes ~15 minutes at 1M photos
/// on 2 cores, the links cost recall (0.942 → 0.928 on BSDS, 0.888 → 0.853 held out,
/// docs/quality.md).
pub const SEARCHED_GRAPH_LIMIT: usize = 200_000;

/// Nearest photos of each region query that become candidates (the best of top-1, 2
/// and 3 on the near-duplicate benchmark: +1.2 pairs a photo, crops +0.05; docs/quality.md).
pub const REGION_NEIGHBOURS: usize = 3;

/// The candidate graph `dups` starts from: each photo's `k` nearest neighbours followed by
/// the nearest [`REGION_NEIGHBOURS`] of each of its region queries (photos that show a part
/// of it), and whether the neighbours were read from the graph's links (collections over
/// [`SEARCHED_GRAPH_LIMIT`], where region queries are not searched either). The graph is
/// freed afterwards, before the vectors are loaded.
pub fn candidate_graph(
    store: &mut dino_curate_index::Store,
    k: usize,
) -> Result<(dino_curate_index::KnnGraph, bool), dino_curate_index::IndexError> {
    let linked = store.meta()?.embeddings > SEARCHED_GRAPH_LIMIT;
    let graph = if linked {
        store.linked_graph(k)?
    } else {
        let mut graph = store.knn_graph(k)?;
        add_neighbours(&mut graph, store.region_neighbours(REGION_NEIGHBOURS)?);
        graph
    };
    store.release_ann();
    Ok((graph, linked))
}

/// Appends to each photo's list of `graph` (both in id order) the photos of `more` it does
/// not hold yet.
fn add_neighbours(graph: &mut dino_curate_index::KnnGraph, more: dino_curate_index::KnnGraph) {
    let mut more = more.into_iter().peekable();
    for (id, hits) in graph.iter_mut() {
        while more.next_if(|(other, _)| other < id).is_some() {}
        if let Some((_, extra)) = more.next_if(|(other, _)| other == id) {
            for hit in extra {
                if !hits.iter().any(|h| h.0 == hit.0) {
                    hits.push(hit);
                }
            }
        }
    }
}

/// Photos sharing the most keypoint keys with a photo that become its candidates
/// ([`crate::verify::shared_keypoint_pairs`]; chosen on the BSDS benchmark: 3 found 0.995 of
/// the copy pairs in groups at precision 1.000, 5 found 0.997 at 0.994; docs/quality.md).
pub const KEYPOINT_PARTNERS: usize = 3;

/// Keypoint keys two photos must share to be candidates that way.
pub const MIN_SHARED_KEYS: u32 = 4;

/// Most photos whose keypoints are all keyed for [`KEYPOINT_PARTNERS`]: every photo's
/// keypoints are read, 1,800 keys a photo sorted and the pairs' votes counted (+110 MB
/// peak at 1,654 photos, about 65 KB a photo: ~1.3 GB here, extrapolated).
pub const KEYPOINT_SCAN_LIMIT: usize = 20_000;

/// Confidence from which one link joins two groups of any size.
pub const STRONG_LINK: f32 = 0.75;

/// Keypoint inliers at which `dups` links a verified pair (measured on the near-duplicate
/// benchmark, docs/quality.md).
pub const DEFAULT_MIN_INLIERS: u32 = 16;

/// Hash agreement from which a pair is a candidate for verification (below the linking
/// agreement: the hash alone is not sure there).
pub const HASH_CANDIDATE_AGREEMENT: f32 = 0.6;

/// Why two photos are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Evidence {
    /// Same file content (blake3).
    Exact,
    /// Perceptual hashes agree (under some flip or quarter-turn).
    Hash,
    /// The model's descriptors are close.
    Descriptor,
    /// Keypoints line up under one affine transform.
    Verified,
}

impl Evidence {
    /// The name `dups --json` uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Hash => "hash",
            Self::Descriptor => "descriptor",
            Self::Verified => "verified",
        }
    }
}

/// A link between rows `a` and `b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// One row.
    pub a: usize,
    /// The other row.
    pub b: usize,
    /// Why they are linked.
    pub evidence: Evidence,
    /// The evidence's score: 1 for exact, the hash agreement, or the cosine.
    pub score: f32,
    /// How far above its threshold the score is, as a fraction of the way to 1 (exact
    /// copies: above every other link; verified pairs: 1 − the least inliers / theirs).
    pub confidence: f32,
    /// Keypoint inliers of a verified link (0 for the others).
    pub inliers: u32,
}

/// Where verification finds a row's keypoints (None: the row has none), shared so that a
/// photo verified with many others is read once.
pub type KeypointLookup<'a> = &'a (dyn Fn(usize) -> Option<Arc<Keypoints>> + Sync);

/// What grouping knows of each row: its vector, its perceptual hash and its keypoints.
#[derive(Clone, Copy)]
pub struct Signals<'a> {
    /// The descriptors.
    pub vectors: &'a Vectors,
    /// Each row's hash with its flips and turns (shorter or empty: rows without one).
    pub hashes: &'a [Option<DihedralHash>],
    /// Each row's keypoints, if verification is possible.
    pub keypoints: Option<KeypointLookup<'a>>,
}

impl std::fmt::Debug for Signals<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("rows", &self.vectors.len())
            .field("keypoints", &self.keypoints.is_some())
            .finish_non_exhaustive()
    }
}

impl Signals<'_> {
    /// The descriptor similarity of rows `i` and `j`.
    pub fn cosine(&self, i: usize, j: usize) -> f32 {
        dot(self.vectors.row(i), self.vectors.row(j))
    }

    /// The best hash agreement of rows `i` and `j` under any flip or turn, if both have
    /// a hash.
    pub fn hash_agreement(&self, i: usize, j: usize) -> Option<f32> {
        match (self.hashes.get(i), self.hashes.get(j)) {
            (Some(Some(a)), Some(Some(b))) => Some(a.agreement(b)),
            _ => None,
        }
    }

    /// The link between rows `i` and `j` under `rule`, if any. The hash links alone; else,
    /// when the rule verifies, the keypoints decide; the descriptor links alone only when
    /// the rule does not verify or the pair's keypoints are not stored (an index from
    /// before them): on the held-out benchmark it linked other photos of one kind
    /// (docs/quality.md).
    pub fn link(&self, i: usize, j: usize, rule: &DupRule) -> Option<Link> {
        let over = |score: f32, min: f32| (score - min) / (1.0 - min).max(1e-6);
        let cosine = self.cosine(i, j);
        let by_hash = rule.hash_agreement.and_then(|min| {
            let agreement = self.hash_agreement(i, j)?;
            (agreement >= min).then_some((Evidence::Hash, agreement, over(agreement, min)))
        });
        let check = match (by_hash, rule.min_inliers) {
            (None, Some(min)) => self.check(i, j, min),
            (Some(_), Some(_)) => Check::NotNeeded,
            (_, None) => Check::Unavailable,
        };
        if let (Check::Inliers(inliers), Some(min)) = (check, rule.min_inliers) {
            return (inliers >= min).then(|| Link {
                a: i,
                b: j,
                evidence: Evidence::Verified,
                score: cosine,
                confidence: 1.0 - min as f32 / inliers.max(1) as f32,
                inliers,
            });
        }
        let by_descriptor = (check == Check::Unavailable && cosine >= rule.threshold).then_some((
            Evidence::Descriptor,
            cosine,
            over(cosine, rule.threshold),
        ));
        let (evidence, score, confidence) = [by_descriptor, by_hash]
            .into_iter()
            .flatten()
            .max_by(|x, y| x.2.total_cmp(&y.2))?;
        Some(Link {
            a: i,
            b: j,
            evidence,
            score,
            confidence,
            inliers: 0,
        })
    }

    /// Verifies rows `i` and `j`, needing `min` inliers.
    fn check(&self, i: usize, j: usize, min: u32) -> Check {
        let Some(lookup) = self.keypoints else {
            return Check::Unavailable;
        };
        let (Some(a), Some(b)) = (lookup(i), lookup(j)) else {
            return Check::Unavailable;
        };
        if a.points.len() < min as usize || b.points.len() < min as usize {
            return Check::TooFewKeypoints;
        }
        Check::Inliers(verify(&a, &b, ((i as u64) << 32) ^ j as u64).inliers)
    }
}

/// What verifying a pair said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// The hash linked the pair already.
    NotNeeded,
    /// No verification: the rule does not ask, or a photo's keypoints are not stored.
    Unavailable,
    /// A photo is too plain to verify (fewer keypoints than the inliers needed).
    TooFewKeypoints,
    /// Keypoints that line up.
    Inliers(u32),
}

/// Every pair of rows whose hashes agree on at least `min` of their bits under some flip
/// or turn, as `(row, row)` with the smaller first. Compares all pairs (n²/2 × 8 forms):
/// 1.0 s for 10k photos and 9.6 s for 30k on 2 cores (docs/benchmarks.md); a million
/// photos would need an index over the bits.
pub fn hash_links(hashes: &[Option<DihedralHash>], min: f32) -> Vec<(usize, usize)> {
    let rows: Vec<(usize, &DihedralHash)> = hashes
        .iter()
        .enumerate()
        .filter_map(|(i, h)| Some((i, h.as_ref()?)))
        .collect();
    rows.par_iter()
        .enumerate()
        .flat_map_iter(|(k, &(i, a))| {
            rows[k + 1..]
                .iter()
                .filter(move |(_, b)| a.agreement(b) >= min)
                .map(move |&(j, _)| (i, j))
        })
        .collect()
}

/// Groups being merged: a union of lists, with each row's group and accepted links.
struct Groups {
    members: Vec<Vec<usize>>,
    group_of: Vec<usize>,
    linked: Vec<Vec<usize>>,
}

impl Groups {
    fn new(n: usize) -> Self {
        Self {
            members: (0..n).map(|i| vec![i]).collect(),
            group_of: (0..n).collect(),
            linked: vec![Vec::new(); n],
        }
    }

    fn merge(&mut self, a: usize, b: usize) {
        let (keep, gone) = if self.members[a].len() >= self.members[b].len() {
            (a, b)
        } else {
            (b, a)
        };
        let moved = std::mem::take(&mut self.members[gone]);
        for &i in &moved {
            self.group_of[i] = keep;
        }
        self.members[keep].extend(moved);
    }

    /// Links between groups `a` and `b`.
    fn cross_links(&self, a: usize, b: usize) -> usize {
        let (small, other) = if self.members[a].len() <= self.members[b].len() {
            (a, b)
        } else {
            (b, a)
        };
        self.members[small]
            .iter()
            .flat_map(|&i| &self.linked[i])
            .filter(|&&j| self.group_of[j] == other)
            .count()
    }
}

/// Whether groups `a` and `b` (row lists) are all close to the descriptor under `rule`.
fn close_by_descriptor(signals: &Signals, a: &[usize], b: &[usize], rule: &DupRule) -> bool {
    let mut sum = 0f64;
    for &i in a {
        for &j in b {
            let s = signals.cosine(i, j);
            if s < rule.floor {
                return false;
            }
            sum += f64::from(s);
        }
    }
    sum / (a.len() * b.len()) as f64 >= f64::from(rule.threshold)
}

/// The links among `candidates` (row pairs, either order, duplicates allowed) under
/// `rule`, with `exact` groups linked pairwise along each group, most confident first.
pub fn links(
    signals: &Signals,
    exact: &[Vec<usize>],
    candidates: impl IntoIterator<Item = (usize, usize)>,
    rule: &DupRule,
) -> Vec<Link> {
    let mut pairs: Vec<(usize, usize)> = candidates
        .into_iter()
        .filter(|(i, j)| i != j)
        .map(|(i, j)| (i.min(j), i.max(j)))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut out: Vec<Link> = exact
        .iter()
        .flat_map(|copies| copies.windows(2))
        .map(|pair| Link {
            a: pair[0],
            b: pair[1],
            evidence: Evidence::Exact,
            score: 1.0,
            confidence: f32::INFINITY,
            inliers: 0,
        })
        .collect();
    out.extend(
        pairs
            .par_iter()
            .filter_map(|&(i, j)| signals.link(i, j, rule))
            .collect::<Vec<_>>(),
    );
    out.sort_by(|x, y| {
        y.confidence
            .partial_cmp(&x.confidence)
            .unwrap_or(Ordering::Equal)
            .then((x.a, x.b).cmp(&(y.a, y.b)))
    });
    out
}

/// Near-duplicate groups (row-index lists of at least two rows, each sorted) from
/// `links` in the order given (most confident first).
pub fn group_links(signals: &Signals, links: &[Link], rule: &DupRule) -> Vec<Vec<usize>> {
    let mut groups = Groups::new(signals.vectors.len());
    let verifying = rule.min_inliers.is_some() && signals.keypoints.is_some();
    for link in links {
        let (a, b) = (groups.group_of[link.a], groups.group_of[link.b]);
        if a != b {
            let join = link.evidence == Evidence::Exact
                || link.confidence >= STRONG_LINK
                || (groups.members[a].len() == 1 && groups.members[b].len() == 1)
                || groups.cross_links(a, b) >= 1
                || (!verifying
                    && close_by_descriptor(signals, &groups.members[a], &groups.members[b], rule));
            if join {
                groups.merge(a, b);
            }
        }
        // the link counts toward later joins whether or not it joined now
        groups.linked[link.a].push(link.b);
        groups.linked[link.b].push(link.a);
    }
    let mut out: Vec<Vec<usize>> = groups
        .members
        .into_iter()
        .filter(|m| m.len() > 1)
        .map(|mut m| {
            m.sort_unstable();
            m
        })
        .collect();
    out.sort_unstable();
    out
}

/// For each row of `rows` that is in one of `groups`, its most confident link to another
/// member of its group (one pass over `links`, which come most confident first).
pub fn evidence_by_row(groups: &[Vec<usize>], links: &[Link], rows: usize) -> Vec<Option<Link>> {
    let mut group_of = vec![usize::MAX; rows];
    for (g, members) in groups.iter().enumerate() {
        members.iter().for_each(|&i| group_of[i] = g);
    }
    let mut best: Vec<Option<Link>> = vec![None; rows];
    for link in links {
        let g = group_of[link.a];
        if g != usize::MAX && g == group_of[link.b] {
            best[link.a].get_or_insert(*link);
            best[link.b].get_or_insert(*link);
        }
    }
    best
}

/// Candidate row pairs from a k-NN graph by photo id, `row` mapping ids to rows.
pub fn graph_pairs(
    row: &HashMap<PhotoId, usize>,
    knn: &[(PhotoId, Neighbours)],
) -> Vec<(usize, usize)> {
    knn.iter()
        .filter_map(|(id, hits)| Some((*row.get(id)?, hits)))
        .flat_map(|(i, hits)| {
            hits.iter()
                .filter_map(|(other, _)| Some((i, *row.get(other)?)))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests;
