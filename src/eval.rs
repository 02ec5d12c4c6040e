//! Measuring feature quality with labels the user provides: the official weighted k-NN
//! protocol on `DIR/train/<class>/…` and `DIR/test/<class>/…`, and pairwise precision and
//! recall on a near-duplicate benchmark ([`neardup`]).

pub mod linear;
pub mod neardup;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;

use crate::embed::{l2_rows, Embedder};
use crate::photo::{self, DecodeOptions, Skipped, DEFAULT_MAX_PIXELS};
use crate::train::views::eval_view;
use crate::{Error, Result};

/// Images embedded per batch.
const BATCH: usize = 64;

/// Labelled photos of one split.
#[derive(Debug)]
pub struct LabelledSplit {
    /// Photo paths.
    pub paths: Vec<PathBuf>,
    /// Class index of each photo.
    pub labels: Vec<usize>,
}

/// Class names (sorted) and the two splits.
#[derive(Debug)]
pub struct LabelledSet {
    /// Folder names under `train/`, sorted.
    pub classes: Vec<String>,
    /// `train/`.
    pub train: LabelledSplit,
    /// `test/`.
    pub test: LabelledSplit,
}

fn class_folders(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut classes: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(Error::Config(format!(
            "{}: no class folders",
            dir.display()
        )));
    }
    Ok(classes)
}

fn split(dir: &Path, classes: &[String]) -> Result<LabelledSplit> {
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let folder = dir.join(class);
        if !folder.is_dir() {
            continue;
        }
        let report = photo::scan(&[folder]).map_err(|e| Error::Config(e.to_string()))?;
        for f in report.files {
            paths.push(f.path);
            labels.push(label);
        }
    }
    if paths.is_empty() {
        return Err(Error::Config(format!("{}: no photos", dir.display())));
    }
    Ok(LabelledSplit { paths, labels })
}

impl LabelledSet {
    /// Reads `dir/train/<class>/…` and `dir/test/<class>/…` (classes from `train/`).
    pub fn open(dir: &Path) -> Result<Self> {
        let classes = class_folders(&dir.join("train"))?;
        Ok(Self {
            train: split(&dir.join("train"), &classes)?,
            test: split(&dir.join("test"), &classes)?,
            classes,
        })
    }
}

/// How photos become vectors for the evaluation.
#[derive(Debug)]
pub enum Features<'a> {
    /// A backbone's normalised descriptor.
    Model(&'a Embedder),
    /// The normalised pixels of a `size × size` resize + centre crop.
    Pixels {
        /// Side in pixels.
        size: u32,
    },
}

impl Features<'_> {
    fn input_size(&self) -> u32 {
        match self {
            Features::Model(e) => e.size(),
            Features::Pixels { size } => *size,
        }
    }

    fn embed(&self, images: &[RgbImage], device: &Device) -> Result<Tensor> {
        match self {
            Features::Model(e) => e.embed(images),
            Features::Pixels { size } => {
                let rows = images
                    .iter()
                    .map(|img| eval_view(img, *size).map(|v| v.data))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::Config(e.to_string()))?;
                let dim = rows.first().map_or(0, Vec::len);
                let flat: Vec<f32> = rows.concat();
                l2_rows(&Tensor::from_vec(flat, (images.len(), dim), device)?)
            }
        }
    }
}

/// Vectors `[n, d]` of a split (photos that fail to decode are an error: labelled
/// evaluation sets are expected to be clean), reporting `(done, total)`.
pub fn split_features(
    split: &LabelledSplit,
    features: &Features<'_>,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    embed_paths(&split.paths, features, device, progress)
}

/// Vectors `[n, d]` of photo files, in order (a photo that fails to decode is an error),
/// reporting `(done, total)`.
pub fn embed_paths(
    paths: &[PathBuf],
    features: &Features<'_>,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    map_photos(
        paths,
        features.input_size(),
        |images| features.embed(images, device),
        progress,
    )
}

/// Rows `[n, d]` that `f` makes of the photo files, decoded (to twice `size` on the
/// shorter side) a batch at a time, in order; a photo that fails to decode is an error
/// naming the file. Reports `(done, total)`.
pub fn map_photos(
    paths: &[PathBuf],
    size: u32,
    f: impl Fn(&[RgbImage]) -> Result<Tensor>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    let decode = DecodeOptions {
        max_pixels: DEFAULT_MAX_PIXELS,
        target_short_side: Some(size.saturating_mul(2)),
        ..DecodeOptions::default()
    };
    let mut parts = Vec::new();
    for (i, chunk) in paths.chunks(BATCH).enumerate() {
        let images = chunk
            .par_iter()
            .map(|p| photo::decode(p, &decode).map(|ph| ph.image))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(Skipped::from(e).to_string()))?;
        parts.push(f(&images)?);
        progress((i * BATCH + chunk.len()).min(paths.len()), paths.len());
    }
    if parts.is_empty() {
        return Err(Error::Config("no photos to embed".into()));
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// What `eval knn` reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KnnResult {
    /// Fraction of test photos whose top class is right.
    pub top1: f64,
    /// Fraction whose class is among the five best.
    pub top5: f64,
    /// Neighbours voting.
    pub k: usize,
    /// Training photos.
    pub n_train: usize,
    /// Test photos.
    pub n_test: usize,
}

/// The official weighted k-NN (DINO `eval_knn.py`): the `k` most similar training
/// vectors vote for their class with weight `exp(similarity / t)`.
pub fn knn_classify(
    train: &Tensor,
    train_labels: &[usize],
    test: &Tensor,
    test_labels: &[usize],
    k: usize,
    t: f64,
) -> Result<KnnResult> {
    let n_classes = train_labels
        .iter()
        .chain(test_labels)
        .max()
        .map_or(0, |m| m + 1);
    let k = k.min(train_labels.len()).max(1);
    let (mut hit1, mut hit5) = (0usize, 0usize);
    let rows = test.dim(0)?;
    for start in (0..rows).step_by(256) {
        let len = 256.min(rows - start);
        let sims = test
            .narrow(0, start, len)?
            .matmul(&train.t()?)?
            .to_vec2::<f32>()?;
        for (row, sim) in sims.iter().enumerate() {
            let ranked = rank_classes(sim, train_labels, n_classes, k, t);
            let label = test_labels[start + row];
            hit1 += usize::from(ranked.first() == Some(&label));
            hit5 += usize::from(ranked.iter().take(5).any(|&c| c == label));
        }
    }
    Ok(KnnResult {
        top1: hit1 as f64 / rows.max(1) as f64,
        top5: hit5 as f64 / rows.max(1) as f64,
        k,
        n_train: train_labels.len(),
        n_test: rows,
    })
}

/// Classes ordered by weighted vote of the `k` nearest training vectors.
fn rank_classes(sim: &[f32], labels: &[usize], n_classes: usize, k: usize, t: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sim.len()).collect();
    order.select_nth_unstable_by(k - 1, |&a, &b| sim[b].total_cmp(&sim[a]));
    let mut votes = vec![0f64; n_classes];
    for &i in &order[..k] {
        votes[labels[i]] += (f64::from(sim[i]) / t).exp();
    }
    let mut classes: Vec<usize> = (0..n_classes).collect();
    classes.sort_by(|&a, &b| votes[b].total_cmp(&votes[a]).then(a.cmp(&b)));
    classes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_votes_by_weighted_neighbours() -> Result<()> {
        let dev = Device::Cpu;
        // two clusters on the unit circle
        let train = Tensor::new(&[[1f32, 0.], [0.99, 0.14], [0., 1.], [0.14, 0.99]], &dev)?;
        let test = Tensor::new(&[[0.98f32, 0.2], [0.2, 0.98]], &dev)?;
        let r = knn_classify(&train, &[0, 0, 1, 1], &test, &[0, 1], 2, 0.07)?;
        assert_eq!((r.top1, r.n_train, r.n_test), (1.0, 4, 2));
        // a wrong label is counted as a miss
        let r = knn_classify(&train, &[0, 0, 1, 1], &test, &[1, 1], 2, 0.07)?;
        assert_eq!(r.top1, 0.5);
        assert_eq!(r.top5, 1.0);
        Ok(())
    }

    #[test]
    fn closer_neighbours_outvote_more_numerous_far_ones() {
        // one very close vote for class 1 against two distant votes for class 0
        let sim = [0.2f32, 0.2, 0.95];
        let ranked = rank_classes(&sim, &[0, 0, 1], 2, 3, 0.07);
        assert_eq!(ranked[0], 1);
    }
}
