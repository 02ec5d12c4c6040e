//! Visual themes: spherical k-means (cosine similarity, unit centroids) with k-means++
//! seeding, assignments computed in parallel. No n×n matrix: memory is the vectors plus
//! k centroids.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::vectors::{dot, normalize, Vectors};

/// One cluster: its rows, its centroid and the member nearest to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Rows of the members, most central first.
    pub rows: Vec<usize>,
    /// The member nearest the centroid.
    pub representative: usize,
    /// Mean similarity of the members to the centroid (how tight the theme is).
    pub cohesion: f32,
}

/// The k a collection of `n` photos gets when none is asked: about √(n/2), between 2
/// and 200 (a screenful of themes for a few thousand photos, a few hundred for a million).
pub fn default_k(n: usize) -> usize {
    (((n as f64) / 2.0).sqrt().round() as usize)
        .clamp(2, 200)
        .min(n.max(1))
}

/// Index and similarity of the centroid nearest to `v`.
fn nearest(centroids: &[Vec<f32>], v: &[f32]) -> (usize, f32) {
    centroids
        .iter()
        .enumerate()
        .map(|(c, centre)| (c, dot(centre, v)))
        .fold(
            (0, f32::NEG_INFINITY),
            |best, x| if x.1 > best.1 { x } else { best },
        )
}

/// k-means++ seeding on cosine distance `1 − s`.
fn seed_centroids(vectors: &Vectors, k: usize, rng: &mut StdRng) -> Vec<Vec<f32>> {
    let n = vectors.len();
    let mut centroids = vec![vectors.row(rng.random_range(0..n)).to_vec()];
    let mut dist: Vec<f32> = (0..n)
        .into_par_iter()
        .map(|i| (1.0 - dot(vectors.row(i), &centroids[0])).max(0.0))
        .collect();
    while centroids.len() < k {
        let total: f64 = dist.iter().map(|&d| f64::from(d)).sum();
        let pick = if total <= 0.0 {
            rng.random_range(0..n)
        } else {
            let mut target = rng.random::<f64>() * total;
            dist.iter()
                .position(|&d| {
                    target -= f64::from(d);
                    target <= 0.0
                })
                .unwrap_or(n - 1)
        };
        let centre = vectors.row(pick).to_vec();
        dist.par_iter_mut().enumerate().for_each(|(i, d)| {
            *d = d.min((1.0 - dot(vectors.row(i), &centre)).max(0.0));
        });
        centroids.push(centre);
    }
    centroids
}

/// New unit centroids from the assignment (an emptied cluster keeps its old centroid).
fn update_centroids(vectors: &Vectors, assign: &[usize], centroids: &mut [Vec<f32>]) {
    let dim = vectors.dim();
    let mut sums = vec![vec![0f32; dim]; centroids.len()];
    let mut counts = vec![0usize; centroids.len()];
    for (i, &c) in assign.iter().enumerate() {
        counts[c] += 1;
        sums[c]
            .iter_mut()
            .zip(vectors.row(i))
            .for_each(|(s, x)| *s += x);
    }
    for ((centre, mut sum), count) in centroids.iter_mut().zip(sums).zip(counts) {
        if count > 0 {
            normalize(&mut sum);
            *centre = sum;
        }
    }
}

/// Spherical k-means with `k` clusters (at most the number of vectors), `max_iter`
/// rounds at most, deterministic for a seed. Clusters come largest first.
pub fn kmeans(vectors: &Vectors, k: usize, max_iter: usize, seed: u64) -> Vec<Cluster> {
    let n = vectors.len();
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut centroids = seed_centroids(vectors, k, &mut rng);
    let mut assign = vec![usize::MAX; n];
    for _ in 0..max_iter.max(1) {
        let next: Vec<usize> = (0..n)
            .into_par_iter()
            .map(|i| nearest(&centroids, vectors.row(i)).0)
            .collect();
        let changed = next != assign;
        assign = next;
        update_centroids(vectors, &assign, &mut centroids);
        if !changed {
            break;
        }
    }
    collect_clusters(vectors, &assign, &centroids)
}

fn collect_clusters(vectors: &Vectors, assign: &[usize], centroids: &[Vec<f32>]) -> Vec<Cluster> {
    let mut members: Vec<Vec<(usize, f32)>> = vec![Vec::new(); centroids.len()];
    for (i, &c) in assign.iter().enumerate() {
        members[c].push((i, dot(vectors.row(i), &centroids[c])));
    }
    let mut clusters: Vec<Cluster> = members
        .into_iter()
        .filter(|m| !m.is_empty())
        .map(|mut m| {
            m.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let cohesion = m.iter().map(|x| x.1).sum::<f32>() / m.len() as f32;
            Cluster {
                representative: m[0].0,
                rows: m.into_iter().map(|x| x.0).collect(),
                cohesion,
            }
        })
        .collect();
    clusters.sort_by(|a, b| {
        b.rows
            .len()
            .cmp(&a.rows.len())
            .then(a.rows[0].cmp(&b.rows[0]))
    });
    clusters
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    /// `per` noisy unit vectors around each of `centres` random directions in 16-d.
    fn blobs(centres: usize, per: usize, noise: f32, seed: u64) -> (Vectors, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let normal = Normal::new(0f32, 1.0).unwrap_or_else(|_| unreachable!());
        let dirs: Vec<Vec<f32>> = (0..centres)
            .map(|_| (0..16).map(|_| normal.sample(&mut rng)).collect())
            .collect();
        let mut v = Vectors::new(16);
        let mut labels = Vec::new();
        for (c, d) in dirs.iter().enumerate() {
            for _ in 0..per {
                let mut x: Vec<f32> = d
                    .iter()
                    .map(|a| a + noise * normal.sample(&mut rng))
                    .collect();
                normalize(&mut x);
                v.push(v.len() as u64, &x);
                labels.push(c);
            }
        }
        (v, labels)
    }

    #[test]
    fn well_separated_blobs_are_recovered_exactly() {
        let (v, labels) = blobs(5, 40, 0.1, 1);
        let clusters = kmeans(&v, 5, 50, 7);
        assert_eq!(clusters.len(), 5);
        for c in &clusters {
            assert_eq!(c.rows.len(), 40);
            let label = labels[c.rows[0]];
            assert!(c.rows.iter().all(|&r| labels[r] == label), "mixed cluster");
            assert!(c.rows.contains(&c.representative));
            assert!(c.cohesion > 0.9);
        }
    }

    #[test]
    fn k_is_capped_by_the_collection_and_results_are_deterministic() {
        let (v, _) = blobs(2, 3, 0.3, 2);
        assert_eq!(
            kmeans(&v, 50, 10, 1)
                .iter()
                .map(|c| c.rows.len())
                .sum::<usize>(),
            6
        );
        assert_eq!(kmeans(&v, 2, 10, 3), kmeans(&v, 2, 10, 3));
        assert!(kmeans(&Vectors::new(4), 3, 10, 1).is_empty());
        assert_eq!(
            (default_k(1), default_k(10_000), default_k(10_000_000)),
            (1, 71, 200)
        );
    }
}
