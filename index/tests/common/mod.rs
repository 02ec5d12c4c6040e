//! Synthetic "real-like" embeddings shared by the tests and the benchmark: unit vectors in
//! a few hundred clusters of uneven size and spread, each cluster varying mostly along a
//! low-dimensional subspace of its own (image embeddings have a low intrinsic dimension),
//! plus a little isotropic noise. Uniform random vectors would be HNSW's worst case and
//! unlike any photo collection.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// Dimension of each cluster's subspace.
const RANK: usize = 24;

fn gaussian(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| StandardNormal.sample(rng)).collect()
}

/// Scales `v` to unit length.
pub fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// `n` clustered unit vectors of dimension `dim`, deterministic for a seed.
pub fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    struct Cluster {
        centre: Vec<f32>,
        basis: Vec<Vec<f32>>,
        spread: f32,
        weight: f64,
    }
    let cs: Vec<Cluster> = (0..clusters)
        .map(|_| {
            let mut centre = gaussian(&mut rng, dim);
            normalise(&mut centre);
            let basis = (0..RANK)
                .map(|_| {
                    let mut b = gaussian(&mut rng, dim);
                    normalise(&mut b);
                    b
                })
                .collect();
            let spread = rng.random_range(0.35f32..1.1);
            // Log-normal cluster sizes: a few big themes, many small ones.
            let weight = (rng.random_range(-1.5f64..1.5)).exp();
            Cluster {
                centre,
                basis,
                spread,
                weight,
            }
        })
        .collect();
    let total: f64 = cs.iter().map(|c| c.weight).sum();
    (0..n)
        .map(|_| {
            let mut pick = rng.random_range(0.0..total);
            let c = cs
                .iter()
                .find(|c| {
                    pick -= c.weight;
                    pick < 0.0
                })
                .unwrap_or(&cs[cs.len() - 1]);
            let mut v = c.centre.clone();
            for b in &c.basis {
                let z: f32 = StandardNormal.sample(&mut rng);
                let z = z * c.spread / (RANK as f32).sqrt();
                v.iter_mut().zip(b).for_each(|(x, y)| *x += z * y);
            }
            let iso = 0.25 * c.spread / (dim as f32).sqrt();
            for x in v.iter_mut() {
                let g: f32 = StandardNormal.sample(&mut rng);
                *x += iso * g;
            }
            normalise(&mut v);
            v
        })
        .collect()
}

/// Exact top-k (indices into `base`, best first; ties by index).
pub fn exact_topk(base: &[Vec<f32>], query: &[f32], k: usize) -> Vec<usize> {
    let mut sims: Vec<(f32, usize)> = base
        .iter()
        .enumerate()
        .map(|(i, v)| (v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>(), i))
        .collect();
    let k = k.min(sims.len());
    if k == 0 {
        return Vec::new();
    }
    sims.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    sims.truncate(k);
    sims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    sims.into_iter().map(|(_, i)| i).collect()
}

/// Fraction of `truth` found in `got`.
pub fn recall(truth: &[usize], got: &[usize]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let hits = truth.iter().filter(|t| got.contains(t)).count();
    hits as f64 / truth.len() as f64
}

/// A plausible record for `path`, varied by `i`.
pub fn record(path: &str, i: u64) -> dino_curate_index::PhotoRecord {
    dino_curate_index::PhotoRecord {
        path: std::path::PathBuf::from(path),
        size: 1000 + i,
        mtime_ns: 1_700_000_000_000_000_000 + i128::from(i),
        blake3: hash(i),
        width: 640 + i as u32,
        height: 480,
        taken_at: i
            .is_multiple_of(2)
            .then(|| format!("2024-01-01T00:00:{:02}", i % 60)),
        stats: None,
        perceptual_hash: None,
        padding: None,
    }
}

/// A fake blake3 derived from `i`.
pub fn hash(i: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&i.to_le_bytes());
    h[31] = 0xab;
    h
}

/// A unit vector of dimension `dim`, deterministic for `seed`.
pub fn unit(dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = gaussian(&mut rng, dim);
    normalise(&mut v);
    v
}
