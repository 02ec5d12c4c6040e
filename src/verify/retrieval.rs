//! Candidates from shared keypoints: photos that share many nearly equal keypoint
//! descriptors, found without comparing every pair. A crop keeps most of its original's
//! corners (which verification then lines up), while the model's vector and the hash, both
//! of the whole frame, can rank it far away.
//!
//! Each descriptor, as stored and mirrored (its halves swapped: the mirrored photo's
//! descriptor), is cut into [`TABLES`] keys of [`KEY_BITS`] fixed bit positions each. Two
//! descriptors a few bits apart share some key with good odds, two unrelated ones almost
//! never. Photos whose keypoints share keys are counted per pair (a vote per shared key;
//! keys shared by more than [`MAX_BUCKET`] photos say nothing and are skipped), and each
//! photo's best partners become candidates.

use std::collections::HashMap;

use rayon::prelude::*;

use super::Keypoints;

/// Keys per descriptor form.
const TABLES: usize = 6;

/// Bits of a key.
const KEY_BITS: usize = 22;

/// Keypoints of a photo that are keyed (the strongest).
const KEYED_POINTS: usize = 150;

/// Photos sharing one key beyond which the key is too common to count.
const MAX_BUCKET: usize = 24;

/// The bit positions of each table's key: distinct positions of the 256, spread by a fixed
/// permutation (a multiplicative step coprime to 256).
fn key_positions() -> [[u8; KEY_BITS]; TABLES] {
    let mut out = [[0u8; KEY_BITS]; TABLES];
    for (t, table) in out.iter_mut().enumerate() {
        for (k, bit) in table.iter_mut().enumerate() {
            *bit = (((t * KEY_BITS + k) * 167 + 13) % 256) as u8;
        }
    }
    out
}

fn key(bits: &[u64; 4], positions: &[u8; KEY_BITS]) -> u32 {
    positions.iter().enumerate().fold(0, |acc, (k, &p)| {
        let bit = (bits[usize::from(p) / 64] >> (p % 64)) & 1;
        acc | ((bit as u32) << k)
    })
}

/// The descriptor of the mirrored photo's keypoint: halves swapped.
fn mirrored(bits: &[u64; 4]) -> [u64; 4] {
    [bits[2], bits[3], bits[0], bits[1]]
}

/// For each photo of `keypoints` (None: none stored), up to `per_photo` other photos that
/// share the most keys with it, each with at least `min_votes` shared keys, as `(photo,
/// photo)` pairs.
pub fn shared_keypoint_pairs(
    keypoints: &[Option<&Keypoints>],
    per_photo: usize,
    min_votes: u32,
) -> Vec<(usize, usize)> {
    let positions = key_positions();
    // (table, key, photo) packed in one u64, sorted: runs of one (table, key) are buckets
    let mut entries: Vec<u64> = keypoints
        .par_iter()
        .enumerate()
        .flat_map_iter(|(photo, points)| {
            let points = points.map_or(&[][..], |k| &k.points[..k.points.len().min(KEYED_POINTS)]);
            points.iter().flat_map(move |p| {
                [p.bits, mirrored(&p.bits)]
                    .into_iter()
                    .flat_map(move |bits| {
                        (0..TABLES).map(move |t| {
                            let keyed =
                                ((t as u64) << KEY_BITS) | u64::from(key(&bits, &positions[t]));
                            (keyed << 32) | photo as u64
                        })
                    })
            })
        })
        .collect();
    entries.par_sort_unstable();
    entries.dedup();
    let votes = count_votes(&entries);
    best_partners(votes, keypoints.len(), per_photo, min_votes)
}

/// Votes per photo pair (smaller first) from the sorted packed entries.
fn count_votes(entries: &[u64]) -> HashMap<(u32, u32), u32> {
    let photo = |e: u64| e as u32;
    let mut votes: HashMap<(u32, u32), u32> = HashMap::new();
    for bucket in entries.chunk_by(|a, b| a >> 32 == b >> 32) {
        if bucket.len() < 2 || bucket.len() > MAX_BUCKET {
            continue;
        }
        for (i, &a) in bucket.iter().enumerate() {
            for &b in &bucket[i + 1..] {
                let (a, b) = (photo(a), photo(b));
                *votes.entry((a.min(b), a.max(b))).or_insert(0) += 1;
            }
        }
    }
    votes
}

/// Each photo's `per_photo` best-voted partners with at least `min_votes`.
fn best_partners(
    votes: HashMap<(u32, u32), u32>,
    photos: usize,
    per_photo: usize,
    min_votes: u32,
) -> Vec<(usize, usize)> {
    let mut by_photo: Vec<Vec<(u32, u32)>> = vec![Vec::new(); photos];
    for ((a, b), n) in votes {
        if n >= min_votes {
            by_photo[a as usize].push((n, b));
            by_photo[b as usize].push((n, a));
        }
    }
    by_photo
        .into_iter()
        .enumerate()
        .flat_map(|(photo, mut partners)| {
            partners.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
            partners
                .into_iter()
                .take(per_photo)
                .map(move |(_, other)| (photo, other as usize))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::Keypoint;
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_points(seed: u64, n: usize) -> Vec<Keypoint> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| Keypoint {
                x: rng.random_range(0.0..300.0),
                y: rng.random_range(0.0..300.0),
                bits: [rng.random(), rng.random(), rng.random(), rng.random()],
            })
            .collect()
    }

    fn photo(points: Vec<Keypoint>) -> Keypoints {
        Keypoints {
            width: 320,
            height: 320,
            points,
        }
    }

    /// Flips `n` bits of each descriptor, as a re-encoded copy's are.
    fn noisy(points: &[Keypoint], n: usize, seed: u64) -> Vec<Keypoint> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        points
            .iter()
            .map(|p| {
                let mut bits = p.bits;
                for _ in 0..n {
                    let b = rng.random_range(0..256usize);
                    bits[b / 64] ^= 1 << (b % 64);
                }
                Keypoint { bits, ..*p }
            })
            .collect()
    }

    #[test]
    fn a_crop_and_a_mirrored_crop_share_keys_with_their_original_and_strangers_do_not() {
        let original = random_points(1, 150);
        // a crop: 60 % of the corners, each a few bits off
        let crop = noisy(&original[..90], 12, 2);
        let mirror: Vec<Keypoint> = noisy(&original[30..120], 12, 3)
            .into_iter()
            .map(|p| Keypoint {
                bits: mirrored(&p.bits),
                ..p
            })
            .collect();
        let photos: Vec<Keypoints> = [original, crop, mirror]
            .into_iter()
            .chain((10..30).map(|s| random_points(s, 150)))
            .map(photo)
            .collect();
        let refs: Vec<Option<&Keypoints>> = photos.iter().map(Some).collect();
        let pairs = shared_keypoint_pairs(&refs, 3, 4);
        let partners =
            |p: usize| -> Vec<usize> { pairs.iter().filter(|x| x.0 == p).map(|x| x.1).collect() };
        assert_eq!(partners(0), vec![1, 2], "{pairs:?}");
        assert_eq!(partners(1), vec![0, 2]);
        assert!(
            (3..photos.len()).all(|p| partners(p).is_empty()),
            "{pairs:?}"
        );
    }

    #[test]
    fn photos_without_keypoints_get_no_partners() {
        let one = photo(random_points(1, 50));
        let pairs = shared_keypoint_pairs(&[None, Some(&one), None], 3, 1);
        assert!(pairs.is_empty());
    }
}
