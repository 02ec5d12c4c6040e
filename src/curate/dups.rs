//! Near-duplicate groups: exact copies (same content hash) first, then the edges of the
//! k-nearest-neighbour graph above a similarity threshold, merged so that a group never
//! chains unrelated photos through a series of neighbours: two groups join only when
//! every photo of one is close to every photo of the other (`min ≥ floor`) and they are
//! close on average (`mean ≥ threshold`).

use std::cmp::Ordering;
use std::collections::HashMap;

use dino_curate_index::PhotoId;

use super::vectors::{dot, Vectors};
use super::Neighbours;

/// When two photos count as near-duplicates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DupRule {
    /// Smallest similarity of a k-NN edge, and of the mean similarity between two groups
    /// that merge.
    pub threshold: f32,
    /// Smallest similarity between any two members of a group.
    pub floor: f32,
}

impl DupRule {
    /// The rule for a threshold, with the floor a fixed margin below it.
    pub fn with_threshold(threshold: f32) -> Self {
        Self {
            threshold,
            floor: threshold - CHAIN_MARGIN,
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
fn close_enough(vectors: &Vectors, a: &[usize], b: &[usize], rule: &DupRule) -> bool {
    let mut sum = 0f64;
    for &i in a {
        for &j in b {
            let s = dot(vectors.row(i), vectors.row(j));
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
    vectors: &Vectors,
    exact: &[Vec<usize>],
    mut edges: Vec<(usize, usize, f32)>,
    rule: &DupRule,
) -> Vec<Vec<usize>> {
    let mut groups = Groups::new(vectors.len());
    for copies in exact {
        for pair in copies.windows(2) {
            let (a, b) = (groups.group_of[pair[0]], groups.group_of[pair[1]]);
            if a != b {
                groups.merge(a, b);
            }
        }
    }
    edges.retain(|e| e.2 >= rule.threshold && e.0 != e.1);
    edges.sort_by(|x, y| y.2.partial_cmp(&x.2).unwrap_or(Ordering::Equal));
    for (i, j, _) in edges {
        let (a, b) = (groups.group_of[i], groups.group_of[j]);
        if a != b && close_enough(vectors, &groups.members[a], &groups.members[b], rule) {
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
    vectors: &Vectors,
    exact: &[Vec<PhotoId>],
    knn: &[(PhotoId, Neighbours)],
    rule: &DupRule,
) -> Vec<Vec<PhotoId>> {
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
    group_rows(vectors, &exact_rows, edges, rule)
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
        let groups = group_rows(&v, &[], all_edges(&v), &rule);
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
        let groups = group_rows(&v, &[], all_edges(&v), &rule);
        assert_eq!(groups, vec![vec![0, 1, 2], vec![3, 4]]);
    }

    #[test]
    fn exact_copies_group_even_without_edges() {
        let v = at_angles(&[0.0, 0.0, 2.0]);
        let groups = group_ids(&v, &[vec![0, 1]], &[], &DupRule::with_threshold(0.99));
        assert_eq!(groups, vec![vec![0, 1]]);
    }

    #[test]
    fn ids_map_back_from_rows() {
        let mut v = Vectors::new(2);
        v.push(40, &[1.0, 0.0]);
        v.push(10, &[0.999, 0.0447]);
        v.push(30, &[0.0, 1.0]);
        let knn = vec![(40, vec![(10, 0.999), (30, 0.0)]), (10, vec![(40, 0.999)])];
        let groups = group_ids(&v, &[], &knn, &DupRule::with_threshold(0.95));
        assert_eq!(groups, vec![vec![40, 10]]);
    }
}
