//! The near-duplicate benchmark made by `make_neardup_bench.py` (`images/`, `groups.json`,
//! optionally `manifest.csv`): pairwise precision and recall of any similarity over all
//! pairs of its images, with recall per kind of edit at an operating point.
//!
//! This scores a descriptor, not a grouping: every pair above a threshold counts as
//! predicted, which is what the `dups` grouping can at best achieve with that descriptor.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::phash::PerceptualHash;
use crate::photo::{self, DecodeOptions, Skipped, DEFAULT_MAX_PIXELS};
use crate::{Error, Result};

mod calibration;
mod pipeline;

pub use calibration::calibrate_on_clean_photos;
pub use pipeline::{
    extra_candidate_recall, pipeline, CandidateRecall, PairStats, PipelineInput, PipelineReport,
};

/// Precision the operating point must reach (the curation issue's target).
pub const TARGET_PRECISION: f64 = 0.99;

/// Thresholds always reported (similarities in [0, 1] for unit vectors of one sign and
/// for hash agreement).
const GRID: [f32; 9] = [0.70, 0.80, 0.85, 0.90, 0.92, 0.94, 0.96, 0.98, 0.99];

#[derive(Debug, Deserialize)]
struct GroupsFile {
    groups: Vec<Vec<String>>,
}

/// An edited copy and the original it was made from.
#[derive(Debug, Clone)]
struct Variant {
    original: usize,
    copy: usize,
    edits: Vec<String>,
}

/// The benchmark's images and ground truth.
#[derive(Debug)]
pub struct NearDupSet {
    /// Image files, sorted by name.
    pub paths: Vec<PathBuf>,
    group: Vec<Option<usize>>,
    variants: Vec<Variant>,
}

impl NearDupSet {
    /// Reads `dir/groups.json`, `dir/images/` and, when present, `dir/manifest.csv`.
    pub fn open(dir: &Path) -> Result<Self> {
        let groups_path = dir.join("groups.json");
        let text = std::fs::read_to_string(&groups_path).map_err(|e| Error::io(&groups_path, e))?;
        let groups: GroupsFile = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", groups_path.display())))?;
        let images = dir.join("images");
        let mut names: Vec<String> = std::fs::read_dir(&images)
            .map_err(|e| Error::io(&images, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let group = group_of_each(&groups.groups, &index, names.len())?;
        let manifest = dir.join("manifest.csv");
        let variants = if manifest.exists() {
            read_variants(&manifest, &index)?
        } else {
            Vec::new()
        };
        Ok(Self {
            paths: names.iter().map(|n| images.join(n)).collect(),
            group,
            variants,
        })
    }

    /// The images that are not edited copies: originals and distractors (without a
    /// manifest, the images of no group).
    pub fn clean_rows(&self) -> Vec<usize> {
        let copies: HashSet<usize> = self.variants.iter().map(|v| v.copy).collect();
        (0..self.paths.len())
            .filter(|i| match self.variants.is_empty() {
                true => self.group[*i].is_none(),
                false => !copies.contains(i),
            })
            .collect()
    }

    /// Whether images `i` and `j` are copies of one photo.
    pub fn same_photo(&self, i: usize, j: usize) -> bool {
        matches!((self.group[i], self.group[j]), (Some(a), Some(b)) if a == b)
    }
}

fn group_of_each(
    groups: &[Vec<String>],
    index: &HashMap<&str, usize>,
    n: usize,
) -> Result<Vec<Option<usize>>> {
    let mut group = vec![None; n];
    for (g, members) in groups.iter().enumerate() {
        for name in members {
            let i = index.get(name.as_str()).ok_or_else(|| {
                Error::Config(format!("groups.json names {name}, which is not in images/"))
            })?;
            group[*i] = Some(g);
        }
    }
    Ok(group)
}

#[derive(Debug, Deserialize)]
struct ManifestRow {
    name: String,
    group: String,
    role: String,
    edits: String,
}

/// Variants with their original, from the manifest (`role` original/variant/distractor).
fn read_variants(path: &Path, index: &HashMap<&str, usize>) -> Result<Vec<Variant>> {
    let bad = |e: csv::Error| Error::Config(format!("{}: {e}", path.display()));
    let mut reader = csv::Reader::from_path(path).map_err(bad)?;
    let mut originals = HashMap::new();
    let mut copies = Vec::new();
    for row in reader.deserialize::<ManifestRow>() {
        let row = row.map_err(bad)?;
        let Some(&i) = index.get(row.name.as_str()) else {
            continue;
        };
        match row.role.as_str() {
            "original" => {
                originals.insert(row.group, i);
            }
            "variant" => copies.push((row.group, i, edit_kinds(&row.edits))),
            _ => {}
        }
    }
    Ok(copies
        .into_iter()
        .filter_map(|(g, copy, edits)| {
            originals.get(&g).map(|&original| Variant {
                original,
                copy,
                edits,
            })
        })
        .collect())
}

/// `"crop_area0.76_at80,1;hflip;jpeg_q56"` → `["crop", "hflip", "jpeg"]`.
fn edit_kinds(edits: &str) -> Vec<String> {
    edits
        .split(';')
        .filter(|e| !e.is_empty())
        .map(|e| {
            let head = e.split('_').next().unwrap_or(e);
            head.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.')
                .to_string()
        })
        .collect()
}

/// Precision and recall of "similarity ≥ threshold".
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OperatingPoint {
    /// Pairs at or above it are predicted duplicates.
    pub threshold: f32,
    /// Fraction of predicted pairs that are true.
    pub precision: f64,
    /// Fraction of true pairs predicted.
    pub recall: f64,
    /// Number of predicted pairs.
    pub predicted: usize,
}

/// Every pair's similarity, highest first, with whether it is a true pair.
#[derive(Debug)]
pub struct PairCurve {
    pairs: Vec<(f32, bool)>,
    true_pairs: usize,
}

impl PairCurve {
    /// Scores all `n(n-1)/2` pairs of the set.
    pub fn new(set: &NearDupSet, similarity: impl Fn(usize, usize) -> f32 + Sync) -> Self {
        let n = set.paths.len();
        let mut pairs: Vec<(f32, bool)> = (0..n)
            .into_par_iter()
            .flat_map_iter(|i| {
                let similarity = &similarity;
                (i + 1..n).map(move |j| (similarity(i, j), set.same_photo(i, j)))
            })
            .collect();
        pairs.par_sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let true_pairs = pairs.iter().filter(|p| p.1).count();
        Self { pairs, true_pairs }
    }

    /// Number of true pairs.
    pub fn true_pairs(&self) -> usize {
        self.true_pairs
    }

    /// Precision and recall at `threshold`.
    pub fn at(&self, threshold: f32) -> OperatingPoint {
        let predicted = self.pairs.partition_point(|p| p.0 >= threshold);
        let hits = self.pairs[..predicted].iter().filter(|p| p.1).count();
        self.point(threshold, predicted, hits)
    }

    fn point(&self, threshold: f32, predicted: usize, hits: usize) -> OperatingPoint {
        OperatingPoint {
            threshold,
            precision: if predicted == 0 {
                1.0
            } else {
                hits as f64 / predicted as f64
            },
            recall: if self.true_pairs == 0 {
                1.0
            } else {
                hits as f64 / self.true_pairs as f64
            },
            predicted,
        }
    }

    /// Operating points at each distinct similarity, highest first (the precision–recall
    /// curve; ties are predicted together).
    fn sweep(&self) -> Vec<OperatingPoint> {
        let mut out = Vec::new();
        let mut hits = 0;
        for (k, &(score, truth)) in self.pairs.iter().enumerate() {
            hits += usize::from(truth);
            let last_of_tie = self.pairs.get(k + 1).is_none_or(|next| next.0 != score);
            if last_of_tie {
                out.push(self.point(score, k + 1, hits));
            }
        }
        out
    }

    /// Area under the precision–recall curve (average precision over the true pairs).
    pub fn average_precision(&self) -> f64 {
        if self.true_pairs == 0 {
            return 1.0;
        }
        let mut previous_recall = 0.0;
        let mut area = 0.0;
        for p in self.sweep() {
            area += (p.recall - previous_recall) * p.precision;
            previous_recall = p.recall;
        }
        area
    }

    /// The lowest threshold whose precision is still ≥ `precision` (the most recall at
    /// that precision), if any.
    pub fn at_precision(&self, precision: f64) -> Option<OperatingPoint> {
        self.sweep()
            .into_iter()
            .filter(|p| p.precision >= precision && p.predicted > 0)
            .max_by(|a, b| a.recall.total_cmp(&b.recall))
    }

    /// The threshold with the best F1 score.
    pub fn best_f1(&self) -> Option<OperatingPoint> {
        let f1 = |p: &OperatingPoint| {
            let sum = p.precision + p.recall;
            if sum > 0.0 {
                2.0 * p.precision * p.recall / sum
            } else {
                0.0
            }
        };
        self.sweep()
            .into_iter()
            .max_by(|a, b| f1(a).total_cmp(&f1(b)))
    }
}

/// Recall of (original, copy) pairs whose copy went through one kind of edit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EditRecall {
    /// Kind of edit (`crop`, `hflip`, `jpeg`, …).
    pub edit: String,
    /// Copies with that edit (among others).
    pub copies: usize,
    /// Fraction of them found at the threshold.
    pub recall: f64,
}

/// Recall per kind of edit at `threshold`, sorted by edit name.
pub fn edit_recall(
    set: &NearDupSet,
    similarity: impl Fn(usize, usize) -> f32,
    threshold: f32,
) -> Vec<EditRecall> {
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for v in &set.variants {
        let found = similarity(v.original, v.copy) >= threshold;
        let unique: HashSet<&str> = v.edits.iter().map(String::as_str).collect();
        for edit in unique {
            let entry = counts.entry(edit).or_default();
            entry.0 += 1;
            entry.1 += usize::from(found);
        }
    }
    counts
        .into_iter()
        .map(|(edit, (copies, found))| EditRecall {
            edit: edit.to_string(),
            copies,
            recall: found as f64 / copies as f64,
        })
        .collect()
}

/// What `eval neardup` reports for one way of comparing photos.
#[derive(Debug, Clone, Serialize)]
pub struct NearDupReport {
    /// How photos were compared.
    pub method: String,
    /// Images in the set.
    pub images: usize,
    /// Pairs of copies of one photo.
    pub true_pairs: usize,
    /// Area under the pairwise precision–recall curve.
    pub average_precision: f64,
    /// Most recall at precision ≥ 0.99, if that precision is reached at all.
    pub at_target_precision: Option<OperatingPoint>,
    /// The threshold with the best F1.
    pub best_f1: Option<OperatingPoint>,
    /// Precision and recall on a fixed grid of thresholds.
    pub thresholds: Vec<OperatingPoint>,
    /// Recall per kind of edit at the target-precision point (else the best-F1 point).
    pub edits: Vec<EditRecall>,
}

/// The `hash` ([`crate::phash`]) of each of the set's images, decoded as `index` decodes,
/// reporting `(done, total)`. A photo that fails to decode is an error.
pub fn perceptual_hashes(
    set: &NearDupSet,
    hash: fn(&image::RgbImage) -> PerceptualHash,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<PerceptualHash>> {
    each_image(set, hash, progress)
}

/// `measure` of each of the set's images, decoded as `index` decodes, reporting
/// `(done, total)`. A photo that fails to decode is an error.
pub fn each_image<T: Send>(
    set: &NearDupSet,
    measure: impl Fn(&image::RgbImage) -> T + Sync,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<T>> {
    let decode = DecodeOptions {
        max_pixels: DEFAULT_MAX_PIXELS,
        target_short_side: Some(256),
        ..DecodeOptions::default()
    };
    let done = std::sync::atomic::AtomicUsize::new(0);
    set.paths
        .par_iter()
        .map(|path| {
            let photo = photo::decode(path, &decode)
                .map_err(|e| Error::Config(Skipped::from(e).to_string()))?;
            let value = measure(&photo.image);
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(n, set.paths.len());
            Ok(value)
        })
        .collect()
}

/// "Either signal is confident": the descriptor's similarity, raised to 1 for a pair whose
/// perceptual hashes agree on at least `hash_threshold` of their bits, when that pair is also
/// an edge of the descriptor's k-nearest-neighbour graph (as `dups` only ever looks at
/// those). Sweeping the descriptor threshold then traces the union of both rules.
#[derive(Debug)]
pub struct Hybrid {
    neighbours: Vec<HashSet<usize>>,
    hash_threshold: f32,
}

impl Hybrid {
    /// The k-NN graph of `rows` (unit vectors) by dot product, without self-edges.
    pub fn new(rows: &[Vec<f32>], k: usize, hash_threshold: f32) -> Self {
        let mut neighbours = vec![HashSet::new(); rows.len()];
        for (i, j) in pipeline::knn_pairs(rows, k) {
            neighbours[i].insert(j);
        }
        Self {
            neighbours,
            hash_threshold,
        }
    }

    /// Whether `i` and `j` are graph neighbours (either direction).
    fn linked(&self, i: usize, j: usize) -> bool {
        self.neighbours[i].contains(&j) || self.neighbours[j].contains(&i)
    }

    /// The pair's score from its descriptor and hash similarities.
    pub fn score(&self, i: usize, j: usize, descriptor: f32, hash: f32) -> f32 {
        if hash >= self.hash_threshold && self.linked(i, j) {
            1.0
        } else {
            descriptor
        }
    }
}

/// Scores `similarity` on the set.
pub fn evaluate(
    set: &NearDupSet,
    method: &str,
    similarity: impl Fn(usize, usize) -> f32 + Sync,
) -> NearDupReport {
    let curve = PairCurve::new(set, &similarity);
    let at_target_precision = curve.at_precision(TARGET_PRECISION);
    let best_f1 = curve.best_f1();
    let edits = at_target_precision
        .or(best_f1)
        .map(|p| edit_recall(set, &similarity, p.threshold))
        .unwrap_or_default();
    NearDupReport {
        method: method.to_string(),
        images: set.paths.len(),
        true_pairs: curve.true_pairs(),
        average_precision: curve.average_precision(),
        at_target_precision,
        best_f1,
        thresholds: GRID.iter().map(|&t| curve.at(t)).collect(),
        edits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Six images: {0, 1, 2} are one photo, {3, 4} another, 5 a distractor.
    fn toy_set() -> NearDupSet {
        NearDupSet {
            paths: (0..6).map(|i| PathBuf::from(format!("{i}.jpg"))).collect(),
            group: vec![Some(0), Some(0), Some(0), Some(1), Some(1), None],
            variants: vec![
                Variant {
                    original: 0,
                    copy: 1,
                    edits: vec!["crop".into(), "hflip".into()],
                },
                Variant {
                    original: 0,
                    copy: 2,
                    edits: vec!["jpeg".into()],
                },
                Variant {
                    original: 3,
                    copy: 4,
                    edits: vec!["crop".into()],
                },
            ],
        }
    }

    fn same_photo_score(set: &NearDupSet) -> impl Fn(usize, usize) -> f32 + Sync + '_ {
        |i, j| if set.same_photo(i, j) { 0.95 } else { 0.2 }
    }

    #[test]
    fn a_perfect_similarity_has_full_precision_and_recall() {
        let set = toy_set();
        let report = evaluate(&set, "oracle", same_photo_score(&set));
        assert_eq!(report.true_pairs, 4);
        assert!((report.average_precision - 1.0).abs() < 1e-12);
        let point = report.at_target_precision.expect("reached");
        assert_eq!(
            (point.precision, point.recall, point.predicted),
            (1.0, 1.0, 4)
        );
        assert!(report.edits.iter().all(|e| e.recall == 1.0));
        assert_eq!(report.edits.len(), 3);
    }

    #[test]
    fn counts_false_pairs_and_missed_edits() {
        let set = toy_set();
        // The crop+flip copy (0, 1) and the pair (1, 2) are missed; (3, 5) is a false pair.
        let score = |i: usize, j: usize| match (i, j) {
            (0, 1) | (1, 2) => 0.1,
            (3, 5) => 0.93,
            _ if set.same_photo(i, j) => 0.95,
            _ => 0.0,
        };
        let curve = PairCurve::new(&set, score);
        let at = curve.at(0.9);
        assert_eq!(at.predicted, 3);
        assert!((at.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((at.recall - 0.5).abs() < 1e-12);
        let strict = curve.at_precision(0.99).expect("the top pairs are true");
        assert_eq!((strict.threshold, strict.predicted), (0.95, 2));
        let edits = edit_recall(&set, score, 0.9);
        let hflip = edits.iter().find(|e| e.edit == "hflip").expect("listed");
        assert_eq!((hflip.copies, hflip.recall), (1, 0.0));
        let crop = edits.iter().find(|e| e.edit == "crop").expect("listed");
        assert_eq!((crop.copies, crop.recall), (2, 0.5));
    }

    #[test]
    fn hybrid_adds_hash_matches_only_along_graph_edges() {
        // 0 and 1 point the same way, 2 is orthogonal to both, 3 is near 2
        let rows = vec![
            vec![1.0, 0.0],
            vec![0.96, 0.28],
            vec![0.0, 1.0],
            vec![0.28, 0.96],
        ];
        let hybrid = Hybrid::new(&rows, 1, 0.9);
        assert_eq!(hybrid.score(0, 1, 0.96, 0.5), 0.96, "weak hash: descriptor");
        assert_eq!(hybrid.score(2, 3, 0.96, 0.95), 1.0, "edge and strong hash");
        assert_eq!(hybrid.score(0, 2, 0.0, 0.95), 0.0, "no edge: hash ignored");
    }

    #[test]
    fn edit_names_drop_their_parameters() {
        assert_eq!(
            edit_kinds("crop_area0.76_at80,1;aspect_x1.13;hflip;rotate3.5"),
            ["crop", "aspect", "hflip", "rotate"]
        );
        assert!(edit_kinds("").is_empty());
    }
}
