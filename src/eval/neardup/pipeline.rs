//! `dups` stage by stage on the benchmark: which true pairs each candidate source brings,
//! how precise the links are, and what the grouping makes of them. The grouping is the
//! code `dups` runs ([`crate::curate::dups`]), fed the benchmark's descriptors, hashes and
//! keypoints.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::{edit_recall, EditRecall, NearDupSet};
use crate::curate::dups::{
    group_links, hash_links, links, DupRule, Evidence, Signals, KEYPOINT_PARTNERS, MIN_SHARED_KEYS,
    REGION_NEIGHBOURS,
};
use crate::curate::vectors::{dot, Vectors};
use crate::phash::DihedralHash;
use crate::verify::{shared_keypoint_pairs, Keypoints};

/// One candidate source (or their union).
#[derive(Debug, Clone, Serialize)]
pub struct CandidateRecall {
    /// Where the candidates come from.
    pub source: String,
    /// Distinct candidate pairs per photo.
    pub pairs_per_photo: f64,
    /// Fraction of (original, copy) pairs among the candidates.
    pub original_copy_recall: f64,
    /// Fraction of all true pairs (copy–copy too) among the candidates.
    pub true_pair_recall: f64,
    /// Original–copy recall per kind of edit.
    pub edits: Vec<EditRecall>,
}

/// Pairwise precision and recall of a set of predicted pairs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PairStats {
    /// Predicted pairs.
    pub predicted: usize,
    /// Fraction of them that are true.
    pub precision: f64,
    /// Fraction of the true pairs predicted.
    pub recall: f64,
}

/// What `eval neardup --dups` reports.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    /// Descriptor and rule.
    pub method: String,
    /// Candidate recall per source and for their union.
    pub candidates: Vec<CandidateRecall>,
    /// The links (pairs that pass the rule) by evidence, and all together.
    pub links: Vec<(String, PairStats)>,
    /// Pairs inside the groups: what `dups` outputs.
    pub groups: PairStats,
    /// Original–copy pairs that end in one group, per kind of edit.
    pub group_edits: Vec<EditRecall>,
    /// Candidate pairs verified by keypoints (those no other evidence linked).
    pub verified_pairs: usize,
    /// Seconds spent making the links, verification included (all cores).
    pub link_seconds: f64,
}

/// The set's images as `pipeline` needs them.
#[derive(Debug, Clone, Copy)]
pub struct PipelineInput<'a> {
    /// Unit descriptor per image.
    pub rows: &'a [Vec<f32>],
    /// Perceptual hash per image.
    pub hashes: &'a [DihedralHash],
    /// Verification keypoints per image (empty: no verification).
    pub keypoints: &'a [Keypoints],
    /// Region queries, the given number per image in image order, as `dups` searches them
    /// (none: the model makes none).
    pub regions: (&'a [Vec<f32>], usize),
}

/// The `k` nearest rows of each row by dot product, as `(row, neighbour)` pairs.
pub(super) fn knn_pairs(rows: &[Vec<f32>], k: usize) -> Vec<(usize, usize)> {
    (0..rows.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            let mut scored: Vec<(f32, usize)> = (0..rows.len())
                .filter(|&j| j != i)
                .map(|j| (dot(&rows[i], &rows[j]), j))
                .collect();
            scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            scored.into_iter().take(k).map(move |(_, j)| (i, j))
        })
        .collect()
}

fn ordered(pairs: impl IntoIterator<Item = (usize, usize)>) -> HashSet<(usize, usize)> {
    pairs
        .into_iter()
        .filter(|(i, j)| i != j)
        .map(|(i, j)| (i.min(j), i.max(j)))
        .collect()
}

fn stats(set: &NearDupSet, predicted: &HashSet<(usize, usize)>, true_pairs: usize) -> PairStats {
    let hits = predicted
        .iter()
        .filter(|&&(i, j)| set.same_photo(i, j))
        .count();
    PairStats {
        predicted: predicted.len(),
        precision: if predicted.is_empty() {
            1.0
        } else {
            hits as f64 / predicted.len() as f64
        },
        recall: hits as f64 / true_pairs.max(1) as f64,
    }
}

fn candidate_recall(
    set: &NearDupSet,
    source: &str,
    pairs: &HashSet<(usize, usize)>,
    true_pairs: usize,
) -> CandidateRecall {
    let found = |i: usize, j: usize| f32::from(u8::from(pairs.contains(&(i.min(j), i.max(j)))));
    let copies = set.variants.len().max(1) as f64;
    let hits = set
        .variants
        .iter()
        .filter(|v| found(v.original, v.copy) > 0.0)
        .count();
    CandidateRecall {
        source: source.to_string(),
        pairs_per_photo: pairs.len() as f64 / set.paths.len().max(1) as f64,
        original_copy_recall: hits as f64 / copies,
        true_pair_recall: stats(set, pairs, true_pairs).recall,
        edits: edit_recall(set, found, 0.5),
    }
}

/// Runs candidates, links and grouping of `dups` under `rule` on the set, with the
/// `input`'s descriptors, hashes and keypoints and `graph_k` neighbours.
pub fn pipeline(
    set: &NearDupSet,
    method: &str,
    input: PipelineInput,
    rule: &DupRule,
    graph_k: usize,
) -> PipelineReport {
    let rows = input.rows;
    let n = set.paths.len();
    let true_pairs = (0..n)
        .map(|i| (i + 1..n).filter(|&j| set.same_photo(i, j)).count())
        .sum();
    let mut vectors = Vectors::new(rows.first().map_or(0, Vec::len));
    for (i, r) in rows.iter().enumerate() {
        vectors.push(i as u64, r);
    }
    let hashes: Vec<Option<DihedralHash>> = input.hashes.iter().copied().map(Some).collect();
    let lookups = AtomicUsize::new(0);
    let shared: Vec<Arc<Keypoints>> = input.keypoints.iter().cloned().map(Arc::new).collect();
    let lookup = |row: usize| {
        lookups.fetch_add(1, Ordering::Relaxed);
        shared.get(row).cloned()
    };
    let signals = Signals {
        vectors: &vectors,
        hashes: &hashes,
        keypoints: (!input.keypoints.is_empty()).then_some(&lookup as _),
    };
    let by_region = ordered(query_pairs(
        input.regions.0,
        input.regions.1,
        rows,
        REGION_NEIGHBOURS,
    ));
    let by_descriptor = ordered(knn_pairs(rows, graph_k));
    let graph: HashSet<(usize, usize)> = by_descriptor.union(&by_region).copied().collect();
    let by_hash = ordered(
        rule.hash_candidate_agreement()
            .map_or_else(Vec::new, |min| hash_links(&hashes, min)),
    );
    let keypoints: Vec<Option<&Keypoints>> = input.keypoints.iter().map(Some).collect();
    let by_points = ordered(shared_keypoint_pairs(
        &keypoints,
        KEYPOINT_PARTNERS,
        MIN_SHARED_KEYS,
    ));
    let mut union: HashSet<(usize, usize)> = graph.union(&by_hash).copied().collect();
    union.extend(by_points.iter().copied());
    let mut candidates = vec![candidate_recall(
        set,
        &format!("descriptor k={graph_k}"),
        &by_descriptor,
        true_pairs,
    )];
    if !by_region.is_empty() {
        candidates.push(candidate_recall(
            set,
            &format!("regions top-{REGION_NEIGHBOURS}"),
            &by_region,
            true_pairs,
        ));
        candidates.push(candidate_recall(
            set,
            "descriptor + regions",
            &graph,
            true_pairs,
        ));
    }
    if !by_points.is_empty() {
        candidates.push(candidate_recall(
            set,
            "shared keypoints",
            &by_points,
            true_pairs,
        ));
    }
    if let Some(min) = rule.hash_candidate_agreement() {
        candidates.push(candidate_recall(
            set,
            &format!("hash >= {min}"),
            &by_hash,
            true_pairs,
        ));
        candidates.push(candidate_recall(set, "union", &union, true_pairs));
    }
    let start = Instant::now();
    let found = links(&signals, &[], union.iter().copied(), rule);
    let link_seconds = start.elapsed().as_secs_f64();
    let link_stats = |evidence: Option<Evidence>| {
        let pairs = ordered(
            found
                .iter()
                .filter(|l| evidence.is_none_or(|e| l.evidence == e))
                .map(|l| (l.a, l.b)),
        );
        stats(set, &pairs, true_pairs)
    };
    let groups = group_links(&signals, &found, rule);
    let mut group_of = vec![usize::MAX; n];
    for (g, members) in groups.iter().enumerate() {
        members.iter().for_each(|&i| group_of[i] = g);
    }
    let grouped = ordered(groups.iter().flat_map(|members| {
        members
            .iter()
            .flat_map(move |&i| members.iter().map(move |&j| (i, j)))
    }));
    let together = |i: usize, j: usize| {
        f32::from(u8::from(
            group_of[i] != usize::MAX && group_of[i] == group_of[j],
        ))
    };
    PipelineReport {
        method: method.to_string(),
        candidates,
        links: vec![
            ("descriptor".into(), link_stats(Some(Evidence::Descriptor))),
            ("hash".into(), link_stats(Some(Evidence::Hash))),
            ("verified".into(), link_stats(Some(Evidence::Verified))),
            ("all".into(), link_stats(None)),
        ],
        groups: stats(set, &grouped, true_pairs),
        group_edits: edit_recall(set, together, 0.5),
        verified_pairs: lookups.into_inner() / 2,
        link_seconds,
    }
}

/// Each image's `k` best rows (itself excluded) for each of its `queries` (`per_image` rows
/// of queries per image, in image order), as `(image, row)` pairs.
fn query_pairs(
    queries: &[Vec<f32>],
    per_image: usize,
    rows: &[Vec<f32>],
    k: usize,
) -> Vec<(usize, usize)> {
    if per_image == 0 {
        return Vec::new();
    }
    queries
        .par_iter()
        .enumerate()
        .flat_map_iter(|(q, query)| {
            let owner = q / per_image.max(1);
            let mut scored: Vec<(f32, usize)> = (0..rows.len())
                .filter(|&j| j != owner)
                .map(|j| (dot(query, &rows[j]), j))
                .collect();
            scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            scored.into_iter().take(k).map(move |(_, j)| (owner, j))
        })
        .collect()
}

/// Extra candidate sources measured beside `dups`' own (`eval neardup --regions`): region
/// queries (`regions`, `per_image` a photo, [`crate::embed::Embedder::region_queries`])
/// and the mirrored photo's descriptor (`mirrored`, one a photo), each alone and added to
/// the union of the k-NN graph and the hash candidates from `hash_min`.
pub fn extra_candidate_recall(
    set: &NearDupSet,
    input: &PipelineInput,
    graph_k: usize,
    hash_min: f32,
    regions: (&[Vec<f32>], usize),
    mirrored: &[Vec<f32>],
) -> Vec<CandidateRecall> {
    let n = set.paths.len();
    let true_pairs = (0..n)
        .map(|i| (i + 1..n).filter(|&j| set.same_photo(i, j)).count())
        .sum();
    let hashes: Vec<Option<DihedralHash>> = input.hashes.iter().copied().map(Some).collect();
    let base: HashSet<(usize, usize)> = ordered(
        knn_pairs(input.rows, graph_k)
            .into_iter()
            .chain(hash_links(&hashes, hash_min)),
    );
    let mut out = Vec::new();
    let mut all = base.clone();
    for k in [1, 2, 3] {
        let by_region = ordered(query_pairs(regions.0, regions.1, input.rows, k));
        out.push(candidate_recall(
            set,
            &format!("regions top-{k}"),
            &by_region,
            true_pairs,
        ));
        let with: HashSet<_> = base.union(&by_region).copied().collect();
        out.push(candidate_recall(
            set,
            &format!("union + regions top-{k}"),
            &with,
            true_pairs,
        ));
        if k == 2 {
            all = with;
        }
    }
    let by_mirror = ordered(query_pairs(mirrored, 1, input.rows, 3));
    out.push(candidate_recall(
        set,
        "mirrored top-3",
        &by_mirror,
        true_pairs,
    ));
    let with: HashSet<_> = base.union(&by_mirror).copied().collect();
    out.push(candidate_recall(
        set,
        "union + mirrored top-3",
        &with,
        true_pairs,
    ));
    all.extend(by_mirror);
    out.push(candidate_recall(
        set,
        "union + regions top-2 + mirrored",
        &all,
        true_pairs,
    ));
    out
}
