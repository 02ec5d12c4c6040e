//! Odd ones out and diverse subsets.
//!
//! Outliers: the photos with the lowest mean similarity to their k nearest neighbours
//! (from the ANN graph). Diverse subset: greedy k-center (farthest-point) selection, which
//! keeps for every photo its distance to the nearest chosen one, O(n·d) memory.

use rayon::prelude::*;

use super::vectors::{dot, Vectors};

/// `(row, score)` for the `n` rows whose `neighbour_sims` have the lowest mean, lowest
/// first. Rows with no neighbour are left out.
pub fn outliers(neighbour_sims: &[Vec<f32>], n: usize) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = neighbour_sims
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .map(|(i, s)| (i, s.iter().sum::<f32>() / s.len() as f32))
        .collect();
    scored.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    scored.truncate(n);
    scored
}

/// `count` rows chosen greedily so that each is the farthest (lowest best similarity)
/// from those already chosen, starting from the photo most typical of the collection
/// (nearest the mean direction). Each comes with its similarity to the nearest photo
/// chosen before it (1 for the first).
pub fn diverse_subset(vectors: &Vectors, count: usize) -> Vec<(usize, f32)> {
    let n = vectors.len();
    if n == 0 || count == 0 {
        return Vec::new();
    }
    let dim = vectors.dim();
    let mut mean = vec![0f32; dim];
    for i in 0..n {
        mean.iter_mut()
            .zip(vectors.row(i))
            .for_each(|(m, x)| *m += x);
    }
    let first = (0..n)
        .map(|i| (i, dot(vectors.row(i), &mean)))
        .fold((0, f32::NEG_INFINITY), |b, x| if x.1 > b.1 { x } else { b })
        .0;
    let mut chosen = vec![(first, 1.0)];
    let mut best: Vec<f32> = (0..n)
        .into_par_iter()
        .map(|i| dot(vectors.row(i), vectors.row(first)))
        .collect();
    while chosen.len() < count.min(n) {
        let (next, sim) =
            best.iter().enumerate().fold(
                (0, f32::INFINITY),
                |b, (i, &s)| if s < b.1 { (i, s) } else { b },
            );
        if chosen.iter().any(|c| c.0 == next) {
            break; // every photo is chosen or identical to a chosen one
        }
        chosen.push((next, sim));
        let row = vectors.row(next);
        best.par_iter_mut().enumerate().for_each(|(i, b)| {
            *b = b.max(dot(vectors.row(i), row));
        });
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(angles: &[f32]) -> Vectors {
        let mut v = Vectors::new(2);
        for (i, a) in angles.iter().enumerate() {
            v.push(i as u64, &[a.cos(), a.sin()]);
        }
        v
    }

    #[test]
    fn the_lonely_photo_is_the_first_outlier() {
        let sims = vec![vec![0.9, 0.8], vec![0.95, 0.9], vec![0.1, 0.05], vec![]];
        let out = outliers(&sims, 2);
        assert_eq!(out[0].0, 2);
        assert_eq!(out.len(), 2);
        assert!((out[0].1 - 0.075).abs() < 1e-6);
    }

    #[test]
    fn the_subset_covers_the_spread_before_repeating_a_region() {
        // three tight bunches around 0, 2 and 4 radians
        let v = plane(&[0.0, 0.01, 0.02, 2.0, 2.01, 4.0, 4.01, 4.02, 4.03]);
        let picked = diverse_subset(&v, 3);
        let mut regions: Vec<usize> = picked
            .iter()
            .map(|p| (p.0 >= 3) as usize + (p.0 >= 5) as usize)
            .collect();
        regions.sort_unstable();
        assert_eq!(regions, vec![0, 1, 2]);
        assert_eq!(diverse_subset(&v, 100).len(), 9);
        assert!(diverse_subset(&Vectors::new(2), 3).is_empty());
    }
}
