//! Fixed in-memory states for the snapshot tests and the responsiveness benchmark: no
//! clock, no temporary paths, so every frame drawn from them is reproducible.

use std::collections::HashMap;
use std::path::PathBuf;

use dino_curate_index::{PhotoId, PhotoRecord};

use super::action::Query;
use super::job::{AttentionMap, ClusterRow, Found, Snapshot, Training};
use crate::curate::burst::GroupKind;
use crate::curate::collection::{DupGroup, DupMember};
use crate::curate::dups::Evidence;
use crate::curate::keeper::KeepRule;
use crate::curate::search::{CopyEvidence, SearchHit};
use crate::train::plot::Series;
use crate::train::signal::LearnedSignal;

/// 2024-05-01T12:00:00Z in nanoseconds.
const MAY_2024_NS: i128 = 1_714_564_800 * 1_000_000_000;

fn record(i: u64, path: String) -> PhotoRecord {
    PhotoRecord {
        path: PathBuf::from(path),
        size: 800_000 + i * 37_501 % 3_000_000,
        mtime_ns: MAY_2024_NS + i128::from(i) * 86_400_000_000_000,
        blake3: blake3::hash(&i.to_le_bytes()).into(),
        width: 4032 - (i % 3) as u32 * 1016,
        height: 3024 - (i % 3) as u32 * 762,
        taken_at: i
            .is_multiple_of(4)
            .then(|| format!("2023-0{}-1{}T10:00:00", 1 + i % 9, i % 10)),
        stats: None,
        perceptual_hash: None,
        padding: None,
    }
}

fn photo_path(i: u64) -> String {
    let album = ["beach", "city", "forest", "family"][(i % 4) as usize];
    format!("/photos/{album}/IMG_{:04}.jpg", 1000 + i)
}

/// `n` photos in `n / 50` clusters and `n / 20` duplicate groups of three.
pub fn synthetic(n: u64) -> Snapshot {
    let records: HashMap<PhotoId, PhotoRecord> =
        (0..n).map(|i| (i, record(i, photo_path(i)))).collect();
    let k = (n / 50).max(4);
    let clusters = (0..k)
        .map(|c| ClusterRow {
            representative: c,
            cohesion: 0.5 + (c % 40) as f32 / 100.0,
            members: (c..n).step_by(k as usize).collect(),
        })
        .collect();
    let dups = (0..n / 20)
        .map(|g| DupGroup {
            kind: if g % 3 == 2 {
                GroupKind::Burst
            } else {
                GroupKind::Copy
            },
            keep: g * 20,
            members: vec![
                member(g * 20 + 1, 0.981, Evidence::Descriptor, 0.981, g * 20),
                member(g * 20 + 2, 0.934, Evidence::Hash, 0.81, g * 20 + 1),
            ],
        })
        .collect();
    Snapshot {
        empty_reason: None,
        records,
        clusters,
        dups,
        keep: KeepRule::Largest,
        failures: failures(),
        training: Ok(training()),
    }
}

fn member(id: PhotoId, similarity: f32, evidence: Evidence, score: f32, to: PhotoId) -> DupMember {
    DupMember {
        id,
        similarity,
        evidence,
        score,
        inliers: 0,
        linked_to: to,
    }
}

fn failures() -> Vec<(PathBuf, String)> {
    vec![
        (
            PathBuf::from("/photos/broken/cut-short.jpg"),
            "corrupt image: unexpected end of file".into(),
        ),
        (
            PathBuf::from("/photos/huge/panorama.tif"),
            "too large: 40000x30000 pixels, the limit is 268435456".into(),
        ),
    ]
}

fn training() -> Training {
    let curve = |f: &dyn Fn(f64) -> f64| (0..60).map(|s| (f64::from(s), f(f64::from(s)))).collect();
    Training {
        run: "run-demo".into(),
        signal: Some(LearnedSignal::new(150, true, 0.31, 0.58).describe()),
        series: vec![
            Series {
                title: "loss",
                points: curve(&|s| 9.0 - 5.0 * (1.0 - (-s / 15.0).exp())),
                color: image::Rgb([200, 40, 40]),
            },
            Series {
                title: "learning rate",
                points: curve(&|s| {
                    if s < 10.0 {
                        s * 5e-5
                    } else {
                        5e-4 * (1.0 - (s - 10.0) / 60.0)
                    }
                }),
                color: image::Rgb([40, 90, 200]),
            },
        ],
    }
}

/// A small collection: 40 photos, 4 clusters of 10, 2 duplicate groups, 2 failures, a
/// training run.
pub fn small() -> Snapshot {
    synthetic(40)
}

/// An attention map of 3 heads over 30 × 40 patches, strongest at row 12, column 21
/// (counted from 1).
pub fn attention() -> AttentionMap {
    AttentionMap {
        overlay: image::RgbImage::from_pixel(40, 30, image::Rgb([200, 60, 20])),
        rows: 30,
        cols: 40,
        heads: 3,
        strongest: (11, 20),
        file: Ok(PathBuf::from("/ws/attention/5f0e.png")),
    }
}

/// Search results for photo 3 of [`small`].
pub fn search() -> Found {
    Found {
        query: Query::Photo(3),
        hits: vec![
            copy(7, 0.912, Evidence::Verified, 154),
            similar(11, 0.874),
            similar(19, 0.803),
            similar(23, 0.771),
        ],
    }
}

/// A search result that is a copy of the query.
fn copy(id: PhotoId, similarity: f32, evidence: Evidence, inliers: u32) -> SearchHit {
    SearchHit {
        id,
        similarity,
        copy: Some(CopyEvidence {
            evidence,
            score: similarity,
            inliers,
            confidence: 0.9,
        }),
    }
}

/// A search result that is only similar to the query.
fn similar(id: PhotoId, similarity: f32) -> SearchHit {
    SearchHit {
        id,
        similarity,
        copy: None,
    }
}
