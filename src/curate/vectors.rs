//! A read-only matrix of L2-normalised embeddings with their photo ids: what every
//! curation function works on. Similarity is the dot product (cosine on unit vectors).

use dino_curate_index::PhotoId;

/// `n` vectors of `dim` values, row-major, with the photo id of each row.
#[derive(Debug, Clone, Default)]
pub struct Vectors {
    ids: Vec<PhotoId>,
    data: Vec<f32>,
    dim: usize,
}

impl Vectors {
    /// An empty matrix of vectors of width `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            ids: Vec::new(),
            data: Vec::new(),
            dim,
        }
    }

    /// An empty matrix of vectors of width `dim` with room for `rows` vectors, so that
    /// filling it never holds two copies while growing.
    pub fn with_capacity(dim: usize, rows: usize) -> Self {
        Self {
            ids: Vec::with_capacity(rows),
            data: Vec::with_capacity(rows.saturating_mul(dim)),
            dim,
        }
    }

    /// Appends one vector; vectors of the wrong width are refused (returns false).
    pub fn push(&mut self, id: PhotoId, vector: &[f32]) -> bool {
        if vector.len() != self.dim {
            return false;
        }
        self.ids.push(id);
        self.data.extend_from_slice(vector);
        true
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there is no vector.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Width of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Photo id of row `i`.
    pub fn id(&self, i: usize) -> PhotoId {
        self.ids[i]
    }

    /// All ids, in row order.
    pub fn ids(&self) -> &[PhotoId] {
        &self.ids
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// The index crate's SIMD dot product, so curation and search score pairs alike.
pub use dino_curate_index::dot;

/// `v / ‖v‖` in place (left as is when the norm is 0).
pub fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_plain_sum_for_any_length() {
        for n in [0, 1, 15, 16, 17, 100] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.1).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() <= 1e-3 * plain.abs().max(1.0));
        }
    }

    #[test]
    fn rows_keep_their_ids_and_wrong_widths_are_refused() {
        let mut v = Vectors::new(2);
        assert!(v.push(7, &[1.0, 0.0]));
        assert!(!v.push(8, &[1.0]));
        assert!(v.push(9, &[0.0, 1.0]));
        assert_eq!((v.len(), v.id(1), v.row(1)), (2, 9, &[0.0, 1.0][..]));
    }
}
