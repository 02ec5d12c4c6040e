//! Linear probing on frozen features, as the official `eval_linear.py` trains its
//! classifier: one linear layer (weights drawn from N(0, 0.01²), bias 0), softmax
//! cross-entropy, SGD with momentum 0.9 and no weight decay, a learning rate of
//! `lr · batch / 256` annealed to 0 by a per-epoch cosine schedule.
//!
//! The features are computed once ([`probe_features`]) and held in memory, so training is
//! plain loops over a small matrix; the official probe instead re-embeds randomly cropped
//! and flipped images every epoch.

use candle_core::Tensor;
use image::RgbImage;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;

use crate::curate::vectors::dot;
use crate::embed::Embedder;
use crate::model::Backbone;
use crate::train::views::{eval_view, views_to_tensors};
use crate::{Error, Result};

/// Blocks whose CLS tokens are concatenated (the official `n_last_blocks` for ViT-S).
pub const LAST_BLOCKS: usize = 4;

/// Row-major `rows × cols` features.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Number of rows (samples).
    pub rows: usize,
    /// Number of columns (feature width).
    pub cols: usize,
    /// `rows · cols` values.
    pub data: Vec<f32>,
}

impl Matrix {
    /// Wraps `data`, checking its length.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != rows * cols {
            return Err(Error::Config(format!(
                "{} values do not make a {rows}x{cols} matrix",
                data.len()
            )));
        }
        Ok(Self { rows, cols, data })
    }

    /// The values of a `[rows, cols]` tensor.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let (rows, cols) = t.dims2()?;
        Self::new(rows, cols, t.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// How the probe is trained (the official defaults, except the epochs' count is the
/// caller's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeConfig {
    /// Passes over the training features.
    pub epochs: usize,
    /// Samples per SGD step (official `batch_size_per_gpu`, 128, on one GPU).
    pub batch_size: usize,
    /// Learning rate for a batch of 256 (official 0.001), scaled by `batch_size / 256`.
    pub lr: f64,
    /// Seed of the initial weights and of each epoch's shuffle.
    pub seed: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch_size: 128,
            lr: 0.001,
            seed: 0,
        }
    }
}

impl ProbeConfig {
    fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::Config(format!(
                "linear probe needs epochs > 0, batch size > 0 and a positive learning rate \
                 (got {}, {}, {})",
                self.epochs, self.batch_size, self.lr
            )));
        }
        Ok(())
    }

    /// Learning rate of `epoch` (0-based): the scaled rate on a cosine from 1 to 0, as
    /// `CosineAnnealingLR(T_max = epochs, eta_min = 0)` stepped once per epoch.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let base = self.lr * self.batch_size as f64 / 256.0;
        let t = epoch as f64 / self.epochs as f64;
        base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// A trained linear classifier: `logits = W x + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// `classes × dim`, row-major.
    weight: Vec<f32>,
    bias: Vec<f32>,
    dim: usize,
}

impl Probe {
    fn init(dim: usize, classes: usize, rng: &mut StdRng) -> Result<Self> {
        let normal = Normal::new(0.0f32, 0.01).map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            weight: (0..dim * classes).map(|_| normal.sample(rng)).collect(),
            bias: vec![0.0; classes],
            dim,
        })
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.bias.len()
    }

    /// Class scores of one feature row.
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        self.bias
            .iter()
            .zip(self.weight.chunks_exact(self.dim))
            .map(|(b, w)| b + dot(w, x))
            .collect()
    }

    /// Classes ordered by score, best first (ties by index).
    pub fn ranked(&self, x: &[f32]) -> Vec<usize> {
        let logits = self.logits(x);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        order
    }
}

/// Gradients of the mean cross-entropy over one batch, and momentum buffers.
#[derive(Debug)]
struct Sgd {
    grad_w: Vec<f32>,
    grad_b: Vec<f32>,
    mom_w: Vec<f32>,
    mom_b: Vec<f32>,
}

/// PyTorch's SGD momentum (dampening 0, no Nesterov).
const MOMENTUM: f32 = 0.9;

impl Sgd {
    fn new(probe: &Probe) -> Self {
        Self {
            grad_w: vec![0.0; probe.weight.len()],
            grad_b: vec![0.0; probe.bias.len()],
            mom_w: vec![0.0; probe.weight.len()],
            mom_b: vec![0.0; probe.bias.len()],
        }
    }

    /// Accumulates `∂ mean CE / ∂ (W, b)` over `batch` rows into the gradient buffers.
    fn gradients(&mut self, probe: &Probe, x: &Matrix, labels: &[usize], batch: &[usize]) {
        self.grad_w.fill(0.0);
        self.grad_b.fill(0.0);
        let scale = 1.0 / batch.len() as f32;
        for &i in batch {
            let row = x.row(i);
            let probs = softmax(&probe.logits(row));
            for (c, p) in probs.iter().enumerate() {
                let g = (p - f32::from(u8::from(c == labels[i]))) * scale;
                self.grad_b[c] += g;
                let gw = &mut self.grad_w[c * probe.dim..(c + 1) * probe.dim];
                gw.iter_mut().zip(row).for_each(|(w, v)| *w += g * v);
            }
        }
    }

    /// `buf = μ·buf + g; p -= lr·buf`.
    fn step(&mut self, probe: &mut Probe, lr: f32) {
        let update = |p: &mut [f32], m: &mut [f32], g: &[f32]| {
            for ((p, m), g) in p.iter_mut().zip(m.iter_mut()).zip(g) {
                *m = MOMENTUM * *m + g;
                *p -= lr * *m;
            }
        };
        update(&mut probe.weight, &mut self.mom_w, &self.grad_w);
        update(&mut probe.bias, &mut self.mom_b, &self.grad_b);
    }
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

fn check_labels(x: &Matrix, labels: &[usize], classes: usize) -> Result<()> {
    if x.rows == 0 || x.rows != labels.len() {
        return Err(Error::Config(format!(
            "{} feature rows for {} labels",
            x.rows,
            labels.len()
        )));
    }
    if let Some(bad) = labels.iter().find(|&&l| l >= classes) {
        return Err(Error::Config(format!(
            "label {bad} is not one of {classes} classes"
        )));
    }
    Ok(())
}

/// Trains a linear classifier of `classes` outputs on the rows of `x` with SGD.
pub fn train_probe(
    x: &Matrix,
    labels: &[usize],
    classes: usize,
    cfg: &ProbeConfig,
) -> Result<Probe> {
    cfg.validate()?;
    check_labels(x, labels, classes)?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut probe = Probe::init(x.cols, classes, &mut rng)?;
    let mut sgd = Sgd::new(&probe);
    let mut order: Vec<usize> = (0..x.rows).collect();
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let lr = cfg.lr_at(epoch) as f32;
        for batch in order.chunks(cfg.batch_size) {
            sgd.gradients(&probe, x, labels, batch);
            sgd.step(&mut probe, lr);
        }
    }
    Ok(probe)
}

/// What `eval linear` reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LinearResult {
    /// Fraction of test rows whose best class is right.
    pub top1: f64,
    /// Fraction whose class is among the five best (1 with five classes or fewer).
    pub top5: f64,
    /// Training rows.
    pub n_train: usize,
    /// Test rows.
    pub n_test: usize,
    /// Epochs the probe was trained for.
    pub epochs: usize,
    /// Width of the features.
    pub dim: usize,
}

/// Top-1 and top-5 accuracy of `probe` on the rows of `x`.
pub fn accuracy(probe: &Probe, x: &Matrix, labels: &[usize]) -> Result<(f64, f64)> {
    check_labels(x, labels, probe.classes())?;
    let (mut hit1, mut hit5) = (0usize, 0usize);
    for (i, &label) in labels.iter().enumerate() {
        let ranked = probe.ranked(x.row(i));
        hit1 += usize::from(ranked.first() == Some(&label));
        hit5 += usize::from(ranked.iter().take(5).any(|&c| c == label));
    }
    let n = labels.len() as f64;
    Ok((hit1 as f64 / n, hit5 as f64 / n))
}

/// Trains on `(train, train_labels)`, scores on `(test, test_labels)`.
pub fn linear_probe(
    train: &Matrix,
    train_labels: &[usize],
    test: &Matrix,
    test_labels: &[usize],
    classes: usize,
    cfg: &ProbeConfig,
) -> Result<LinearResult> {
    if train.cols != test.cols {
        return Err(Error::Config(format!(
            "train features are {} wide, test features {}",
            train.cols, test.cols
        )));
    }
    let probe = train_probe(train, train_labels, classes, cfg)?;
    let (top1, top5) = accuracy(&probe, test, test_labels)?;
    Ok(LinearResult {
        top1,
        top5,
        n_train: train.rows,
        n_test: test.rows,
        epochs: cfg.epochs,
        dim: train.cols,
    })
}

/// The probe's input for a batch of images `[n, d]`, not normalised: the CLS tokens of
/// the last [`LAST_BLOCKS`] blocks concatenated (each after the final norm, as
/// `get_intermediate_layers`), and with `avgpool` the last block's mean patch token
/// appended (the official code interleaves that one with the CLS features, which only
/// permutes the inputs of a linear layer). For a ResNet: the pooled features (the
/// official probe of a ResNet); `avgpool` is then refused.
pub fn probe_features(embedder: &Embedder, images: &[RgbImage], avgpool: bool) -> Result<Tensor> {
    let views = images
        .iter()
        .map(|img| {
            embedder
                .framing()
                .view(img, embedder.size())
                .map(|v| vec![v])
        })
        .collect::<Result<Vec<_>>>()?;
    let input = views_to_tensors(&views, embedder.device())?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Config("no image to embed".into()))?;
    let backbone = embedder.backbone();
    if let (Backbone::ResNet(resnet), false) = (backbone, avgpool) {
        return resnet.forward(&input, false);
    }
    let layers = backbone
        .vit("the last blocks' CLS tokens and --avgpool")?
        .intermediate_layers(&input, LAST_BLOCKS)?;
    let mut parts = layers
        .iter()
        .map(|t| Ok(t.narrow(1, 0, 1)?.squeeze(1)?))
        .collect::<Result<Vec<_>>>()?;
    if avgpool {
        let last = layers
            .last()
            .ok_or_else(|| Error::Config("the backbone has no blocks".into()))?;
        let n = last.dim(1)?;
        parts.push(last.narrow(1, 1, n - 1)?.mean(1)?);
    }
    Ok(Tensor::cat(&parts, 1)?)
}

/// The baseline's input: the ImageNet-normalised pixels of a `size × size` resize and
/// centre crop, not normalised further.
pub fn pixel_features(
    images: &[RgbImage],
    size: u32,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let rows = images
        .iter()
        .map(|img| eval_view(img, size).map(|v| v.data))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(e.to_string()))?;
    let dim = rows.first().map_or(0, Vec::len);
    Ok(Tensor::from_vec(
        rows.concat(),
        (images.len(), dim),
        device,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `n` rows per class around `classes` well separated centres in `dim` dimensions.
    fn blobs(classes: usize, n: usize, dim: usize, seed: u64) -> (Matrix, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let noise = Normal::new(0.0f32, 1.0).expect("valid normal");
        let mut centres = StdRng::seed_from_u64(99);
        let centres: Vec<Vec<f32>> = (0..classes)
            .map(|_| (0..dim).map(|_| 3.0 * noise.sample(&mut centres)).collect())
            .collect();
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for i in 0..classes * n {
            let c = i % classes;
            data.extend(centres[c].iter().map(|m| m + noise.sample(&mut rng)));
            labels.push(c);
        }
        (
            Matrix {
                rows: classes * n,
                cols: dim,
                data,
            },
            labels,
        )
    }

    #[test]
    fn separable_features_are_classified_almost_perfectly() -> Result<()> {
        let (train, train_labels) = blobs(10, 60, 32, 1);
        let (test, test_labels) = blobs(10, 30, 32, 2);
        let cfg = ProbeConfig {
            epochs: 20,
            ..ProbeConfig::default()
        };
        let r = linear_probe(&train, &train_labels, &test, &test_labels, 10, &cfg)?;
        assert!(r.top1 >= 0.99, "top-1 {}", r.top1);
        assert_eq!((r.n_train, r.n_test, r.dim, r.epochs), (600, 300, 32, 20));
        Ok(())
    }

    #[test]
    fn shuffled_labels_are_not_learnt_beyond_memorising() -> Result<()> {
        // same features, random labels: the test accuracy stays near chance
        let (train, _) = blobs(10, 60, 32, 1);
        let (test, _) = blobs(10, 30, 32, 2);
        let mut rng = StdRng::seed_from_u64(5);
        let random = |n: usize, rng: &mut StdRng| -> Vec<usize> {
            let mut l: Vec<usize> = (0..n).map(|i| i % 10).collect();
            l.shuffle(rng);
            l
        };
        let (a, b) = (random(600, &mut rng), random(300, &mut rng));
        let r = linear_probe(&train, &a, &test, &b, 10, &ProbeConfig::default())?;
        assert!(r.top1 < 0.3, "top-1 {}", r.top1);
        Ok(())
    }

    #[test]
    fn cosine_schedule_scales_by_batch_and_anneals_to_zero() {
        let cfg = ProbeConfig::default();
        assert!((cfg.lr_at(0) - 0.0005).abs() < 1e-12);
        assert!((cfg.lr_at(50) - 0.00025).abs() < 1e-12);
        assert!(cfg.lr_at(99) > 0.0 && cfg.lr_at(99) < 1e-6);
    }

    #[test]
    fn one_step_moves_towards_the_label() -> Result<()> {
        let x = Matrix::new(1, 2, vec![1.0, -1.0])?;
        let mut rng = StdRng::seed_from_u64(0);
        let mut probe = Probe::init(2, 3, &mut rng)?;
        let before = softmax(&probe.logits(x.row(0)))[2];
        let mut sgd = Sgd::new(&probe);
        sgd.gradients(&probe, &x, &[2], &[0]);
        // ∂CE/∂b = p − onehot
        let p = softmax(&probe.logits(x.row(0)));
        assert!((sgd.grad_b[2] - (p[2] - 1.0)).abs() < 1e-6);
        sgd.step(&mut probe, 0.5);
        assert!(softmax(&probe.logits(x.row(0)))[2] > before);
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = Matrix {
            rows: 2,
            cols: 1,
            data: vec![0.0, 1.0],
        };
        let cfg = ProbeConfig::default();
        assert!(train_probe(&x, &[0], 2, &cfg).is_err());
        assert!(train_probe(&x, &[0, 2], 2, &cfg).is_err());
        let zero = ProbeConfig { epochs: 0, ..cfg };
        assert!(train_probe(&x, &[0, 1], 2, &zero).is_err());
        assert!(Matrix::new(2, 2, vec![0.0]).is_err());
    }

    #[test]
    fn probe_features_concatenate_four_cls_tokens_and_the_mean_patch() -> Result<()> {
        use crate::model::{VitArch, VitConfig};
        let cfg = VitConfig {
            depth: 5,
            ..VitConfig::preset(VitArch::VitTiny, 16)
        };
        let e = Embedder::random(&cfg, 32, 3, &Device::Cpu)?;
        let img = RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 9]));
        let images = vec![img.clone(), img];
        let plain = probe_features(&e, &images, false)?;
        let pooled = probe_features(&e, &images, true)?;
        assert_eq!(plain.dims(), &[2, 4 * 192]);
        assert_eq!(pooled.dims(), &[2, 5 * 192]);
        // the last CLS block is the model's own output
        let last = plain.narrow(1, 3 * 192, 192)?;
        let view = e.framing().view(&images[0], 32)?;
        let input = Tensor::from_vec(view.data, (1, 3, 32, 32), &Device::Cpu)?;
        let cls = e.backbone().forward(&input, None, false)?;
        let diff = (last.narrow(0, 0, 1)? - cls)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        Ok(())
    }

    #[test]
    fn probe_on_a_tiny_labelled_folder_of_generated_photos() -> Result<()> {
        use crate::eval::{map_photos, LabelledSet};
        use crate::model::{VitArch, VitConfig};
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        // two classes a random ViT tells apart easily: dark red and bright blue photos
        for (split, n) in [("train", 6u8), ("test", 3)] {
            for (class, base) in [("blue", [20u8, 40, 230]), ("red", [120, 10, 10])] {
                let folder = dir.path().join(split).join(class);
                std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
                for k in 0..n {
                    let img = RgbImage::from_fn(48, 40, |x, y| {
                        let v = ((x + y) as u8).wrapping_mul(k + 1) / 8;
                        image::Rgb(base.map(|c| c.saturating_add(v)))
                    });
                    let path = folder.join(format!("{k}.png"));
                    img.save(&path).map_err(|e| Error::Config(e.to_string()))?;
                }
            }
        }
        let set = LabelledSet::open(dir.path())?;
        let cfg = VitConfig {
            depth: 4,
            ..VitConfig::preset(VitArch::VitTiny, 16)
        };
        let e = Embedder::random(&cfg, 32, 1, &Device::Cpu)?;
        let rows = |paths: &[std::path::PathBuf]| -> Result<Matrix> {
            let t = map_photos(paths, 32, |im| probe_features(&e, im, true), &mut |_, _| {})?;
            Matrix::from_tensor(&t)
        };
        let (train, test) = (rows(&set.train.paths)?, rows(&set.test.paths)?);
        let probe_cfg = ProbeConfig {
            epochs: 30,
            batch_size: 4,
            ..ProbeConfig::default()
        };
        let r = linear_probe(
            &train,
            &set.train.labels,
            &test,
            &set.test.labels,
            set.classes.len(),
            &probe_cfg,
        )?;
        assert_eq!((r.n_train, r.n_test, r.dim), (12, 6, 5 * 192));
        assert_eq!(r.top1, 1.0);
        // a file that is not a photo is an error naming it
        let bad = dir.path().join("train/red/broken.jpg");
        std::fs::write(&bad, b"not a jpeg").map_err(|e| Error::io(&bad, e))?;
        let set = LabelledSet::open(dir.path())?;
        let err = rows(&set.train.paths).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("broken.jpg")));
        Ok(())
    }
}
