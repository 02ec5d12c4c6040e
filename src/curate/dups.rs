//! Near-duplicate groups: exact copies (same content hash) first, then the edges of the
//! k-nearest-neighbour graph above a similarity threshold, merged so that a group never
//! chains unrelated photos through a series of neighbours: two groups join only when
//! every photo of one is close to every photo of the other (`min ≥ floor`) and they are
//! close on average (`mean ≥ threshold`). With a hash agreement in the rule, a pair whose
//! perceptual hashes agree on that fraction of bits counts as similarity 1: the hash finds
//! the colour-edited and re-encoded copies the descriptor misses (docs/quality.md), and
//! looking only along the descriptor's graph edges keeps it from linking unrelated photos.

use std::cmp::Ordering;
use std::collections::HashMap;

use dino_curate_index::PhotoId;

use super::vectors::{dot, Vectors};
use super::Neighbours;
use crate::phash::{agreement, PerceptualHash};

/// When two photos count as near-duplicates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DupRule {
    /// Smallest similarity of a k-NN edge, and of the mean similarity between two groups
    /// that merge.
    pub threshold: f32,
    /// Smallest similarity between any two members of a group.
    pub floor: f32,
    /// Fraction of agreeing perceptual-hash bits that makes a pair similar (1), if hashes
    /// count.
    pub hash_agreement: Option<f32>,
}

impl DupRule {
    /// The rule for a threshold, with the floor a fixed margin below it; hashes ignored.
    pub fn with_threshold(threshold: f32) -> Self {
        Self {
            threshold,
            floor: threshold - CHAIN_MARGIN,
            hash_agreement: None,
        }
    }

    /// The same rule, counting perceptual-hash matches at `agreement` (None: ignoring them).
    pub fn with_hash_agreement(self, agreement: Option<f32>) -> Self {
        Self {
            hash_agreement: agreement,
            ..self
        }
    }
}

/// Perceptual-hash agreement at which `dups` counts a pair along the k-NN graph as a
/// near-duplicate (calibrated on the near-duplicate benchmark, docs/quality.md).
pub const DEFAULT_HASH_AGREEMENT: f32 = 0.75;

/// How alike two rows are as grouping sees it: the vectors' cosine, or 1 when the rule
/// counts hash matches and both rows' perceptual hashes agree enough.
#[derive(Debug, Clone, Copy)]
pub struct PairScore<'a> {
    vectors: &'a Vectors,
    hashes: &'a [Option<PerceptualHash>],
    hash_agreement: Option<f32>,
}

impl<'a> PairScore<'a> {
    /// Scores over `vectors`, with `hashes` by row (shorter or empty: rows without one).
    pub fn new(vectors: &'a Vectors, hashes: &'a [Option<PerceptualHash>], rule: &DupRule) -> Self {
        Self {
            vectors,
            hashes,
            hash_agreement: rule.hash_agreement,
        }
    }

    fn hashes_match(&self, i: usize, j: usize) -> bool {
        match (self.hash_agreement, self.hashes.get(i), self.hashes.get(j)) {
            (Some(min), Some(Some(a)), Some(Some(b))) => agreement(a, b) >= min,
            _ => false,
        }
    }

    /// The similarity of rows `i` and `j`.
    pub fn score(&self, i: usize, j: usize) -> f32 {
        self.edge(i, j, dot(self.vectors.row(i), self.vectors.row(j)))
    }

    /// A graph edge's similarity `cosine` with the hash rule applied.
    fn edge(&self, i: usize, j: usize, cosine: f32) -> f32 {
        if self.hashes_match(i, j) {
            1.0
        } else {
            cosine
        }
    }
}

/// How far below the threshold a pair inside a group may be.
pub const CHAIN_MARGIN: f32 = 0.05;

/// Groups being merged: a union of lists, with each photo's group.
struct Groups {
    members: Vec<Vec<usize>>,
    group_of: Vec<usize>,
}

impl Groups {
    fn new(n: usize) -> Self {
        Self {
            members: (0..n).map(|i| vec![i]).collect(),
            group_of: (0..n).collect(),
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
}

/// Whether groups `a` and `b` (row lists) may merge under `rule`.
fn close_enough(scores: &PairScore, a: &[usize], b: &[usize], rule: &DupRule) -> bool {
    let mut sum = 0f64;
    for &i in a {
        for &j in b {
            let s = scores.score(i, j);
            if s < rule.floor {
                return false;
            }
            sum += f64::from(s);
        }
    }
    sum / (a.len() * b.len()) as f64 >= f64::from(rule.threshold)
}

/// Near-duplicate groups (row-index lists of at least two photos, each sorted).
///
/// `exact` lists groups of rows with identical content (always grouped); `edges` are the
/// k-NN graph's `(row, row, similarity)` pairs, in any order.
pub fn group_rows(
    scores: &PairScore,
    exact: &[Vec<usize>],
    mut edges: Vec<(usize, usize, f32)>,
    rule: &DupRule,
) -> Vec<Vec<usize>> {
    let mut groups = Groups::new(scores.vectors.len());
    for copies in exact {
        for pair in copies.windows(2) {
            let (a, b) = (groups.group_of[pair[0]], groups.group_of[pair[1]]);
            if a != b {
                groups.merge(a, b);
            }
        }
    }
    for edge in &mut edges {
        edge.2 = scores.edge(edge.0, edge.1, edge.2);
    }
    edges.retain(|e| e.2 >= rule.threshold && e.0 != e.1);
    edges.sort_by(|x, y| y.2.partial_cmp(&x.2).unwrap_or(Ordering::Equal));
    for (i, j, _) in edges {
        let (a, b) = (groups.group_of[i], groups.group_of[j]);
        if a != b && close_enough(scores, &groups.members[a], &groups.members[b], rule) {
            groups.merge(a, b);
        }
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

/// [`group_rows`] with photo ids: `exact` groups and `knn` lists by id.
pub fn group_ids(
    scores: &PairScore,
    exact: &[Vec<PhotoId>],
    knn: &[(PhotoId, Neighbours)],
    rule: &DupRule,
) -> Vec<Vec<PhotoId>> {
    let vectors = scores.vectors;
    let row: HashMap<PhotoId, usize> = vectors
        .ids()
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i))
        .collect();
    let exact_rows: Vec<Vec<usize>> = exact
        .iter()
        .map(|g| g.iter().filter_map(|id| row.get(id).copied()).collect())
        .collect();
    let edges = knn
        .iter()
        .filter_map(|(id, hits)| Some((*row.get(id)?, hits)))
        .flat_map(|(i, hits)| {
            hits.iter()
                .filter_map(|(other, s)| Some((i, *row.get(other)?, *s)))
                .collect::<Vec<_>>()
        })
        .collect();
    group_rows(scores, &exact_rows, edges, rule)
        .into_iter()
        .map(|g| g.into_iter().map(|i| vectors.id(i)).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors at the given angles (radians) in the plane.
    fn at_angles(angles: &[f32]) -> Vectors {
        let mut v = Vectors::new(2);
        for (i, a) in angles.iter().enumerate() {
            v.push(i as PhotoId, &[a.cos(), a.sin()]);
        }
        v
    }

    fn all_edges(v: &Vectors) -> Vec<(usize, usize, f32)> {
        let mut edges = Vec::new();
        for i in 0..v.len() {
            for j in 0..v.len() {
                if i != j {
                    edges.push((i, j, dot(v.row(i), v.row(j))));
                }
            }
        }
        edges
    }

    #[test]
    fn a_chain_of_neighbours_is_not_one_group() {
        // each step 0.3 rad: neighbours at cos 0.955, two steps apart at cos 0.825
        let v = at_angles(&[0.0, 0.3, 0.6, 0.9, 1.2]);
        let rule = DupRule::with_threshold(0.9);
        let groups = group_rows(&PairScore::new(&v, &[], &rule), &[], all_edges(&v), &rule);
        for g in &groups {
            assert!(g.len() <= 2, "chained group {g:?}");
        }
        // plain connected components would have put all five together
        assert!(!groups.is_empty());
    }

    #[test]
    fn tight_groups_form_and_far_photos_stay_alone() {
        let v = at_angles(&[0.0, 0.05, 0.1, 1.5, 1.52, 3.0]);
        let rule = DupRule::with_threshold(0.95);
        let groups = group_rows(&PairScore::new(&v, &[], &rule), &[], all_edges(&v), &rule);
        assert_eq!(groups, vec![vec![0, 1, 2], vec![3, 4]]);
    }

    #[test]
    fn exact_copies_group_even_without_edges() {
        let v = at_angles(&[0.0, 0.0, 2.0]);
        let rule = DupRule::with_threshold(0.99);
        let groups = group_ids(&PairScore::new(&v, &[], &rule), &[vec![0, 1]], &[], &rule);
        assert_eq!(groups, vec![vec![0, 1]]);
    }

    #[test]
    fn ids_map_back_from_rows() {
        let mut v = Vectors::new(2);
        v.push(40, &[1.0, 0.0]);
        v.push(10, &[0.999, 0.0447]);
        v.push(30, &[0.0, 1.0]);
        let knn = vec![(40, vec![(10, 0.999), (30, 0.0)]), (10, vec![(40, 0.999)])];
        let rule = DupRule::with_threshold(0.95);
        let groups = group_ids(&PairScore::new(&v, &[], &rule), &[], &knn, &rule);
        assert_eq!(groups, vec![vec![40, 10]]);
    }

    #[test]
    fn matching_hashes_join_graph_neighbours_the_vectors_keep_apart() {
        // rows 0 and 1 are 0.3 rad apart (cos 0.955 < 0.99) but hash alike; row 2 has
        // row 0's hash but no edge to it
        let v = at_angles(&[0.0, 0.3, 2.0]);
        let mut near = [0u8; 32];
        near[0] = 0b111; // 3 bits of 256 differ: agreement 0.988
        let hashes = [Some([0u8; 32]), Some(near), Some([0u8; 32])];
        let edges = vec![(0, 1, dot(v.row(0), v.row(1)))];
        let off = DupRule::with_threshold(0.99);
        let on = off.with_hash_agreement(Some(0.95));
        let groups = |rule: &DupRule| {
            group_rows(&PairScore::new(&v, &hashes, rule), &[], edges.clone(), rule)
        };
        assert!(groups(&off).is_empty());
        assert_eq!(groups(&on), vec![vec![0, 1]]);
        let strict = off.with_hash_agreement(Some(0.995));
        assert!(groups(&strict).is_empty(), "3 differing bits exceed 0.995");
    }
}
