//! Exact top-k selection and brute-force search (the oracle, and the path for small sets).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::dist::similarity;
use crate::PhotoId;

/// A candidate; orders worst first so a max-heap keeps the worst on top.
#[derive(Debug, Clone, Copy)]
struct Entry {
    sim: f32,
    id: PhotoId,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Greater = worse: lower similarity, then higher id.
    fn cmp(&self, other: &Self) -> Ordering {
        other.sim.total_cmp(&self.sim).then(self.id.cmp(&other.id))
    }
}

/// Keeps the `k` most similar ids seen (ties: lower id first).
#[derive(Debug)]
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Entry>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    pub fn push(&mut self, id: PhotoId, sim: f32) {
        let e = Entry { sim, id };
        if self.heap.len() < self.k {
            self.heap.push(e);
        } else if self.heap.peek().is_some_and(|worst| e < *worst) {
            self.heap.pop();
            self.heap.push(e);
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<(PhotoId, f32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|e| (e.id, e.sim))
            .collect()
    }
}

/// The `k` nearest neighbours of every vector among `points`, excluding itself, computed in
/// parallel; exact.
pub(crate) fn exact_knn_graph(
    points: &[(PhotoId, Vec<f32>)],
    k: usize,
) -> Vec<(PhotoId, Vec<(PhotoId, f32)>)> {
    use rayon::prelude::*;
    points
        .par_iter()
        .map(|(id, v)| {
            let mut top = TopK::new(k);
            for (other, w) in points {
                if other != id {
                    top.push(*other, similarity(v, w));
                }
            }
            (*id, top.into_sorted())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_best_in_order_with_ties_by_id() {
        let mut t = TopK::new(3);
        for (id, s) in [(5, 0.1), (1, 0.9), (7, 0.5), (2, 0.9), (3, 0.2), (0, 0.5)] {
            t.push(id, s);
        }
        assert_eq!(t.into_sorted(), vec![(1, 0.9), (2, 0.9), (0, 0.5)]);
    }

    #[test]
    fn zero_k_keeps_nothing() {
        let mut t = TopK::new(0);
        t.push(1, 1.0);
        assert!(t.into_sorted().is_empty());
    }
}
