//! Did the run learn? A label-free check on the user's own photos.
//!
//! Each photo of a held-out sample gets two DINO global views (random crop, flip, colour
//! jitter, grayscale, blur, solarisation: the training augmentations, drawn from a fixed
//! seed). The teacher backbone embeds both; a photo *agrees* when its first view's nearest
//! neighbour among all second views is its own second view (and the other way round).
//! Features that only see pixels fail under colour jitter and crops; features that learned
//! what a photo shows pass. The same check runs on the network the run started from, so
//! the user sees how far training moved the features, with no labels.

use std::sync::Arc;

use candle_core::{Device, Tensor, D};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::data::{derive_seed, Sample};
use super::views::{make_views, views_to_tensors, View, ViewsConfig};
use crate::embed::l2_rows;
use crate::model::DinoNet;
use crate::photo::{self, DecodeOptions};
use crate::{Error, Result};
use image::RgbImage;

/// Photos held out of training for the check, at most.
pub const MAX_HELD_OUT: usize = 256;
/// Collections smaller than this hold nothing out; the check then uses training photos.
pub const MIN_COLLECTION_TO_HOLD_OUT: usize = 400;
/// Images per forward pass of the check.
const CHUNK: usize = 64;

/// How many photos of an `n`-photo collection are held out: 5 %, at most
/// [`MAX_HELD_OUT`], none below [`MIN_COLLECTION_TO_HOLD_OUT`].
pub fn held_out_count(n: usize) -> usize {
    if n < MIN_COLLECTION_TO_HOLD_OUT {
        0
    } else {
        (n / 20).min(MAX_HELD_OUT)
    }
}

/// Splits `samples` into (training, held out) deterministically from `seed`; the training
/// photos keep their order.
pub fn split_held_out(samples: Vec<Sample>, seed: u64) -> (Vec<Sample>, Vec<Sample>) {
    let count = held_out_count(samples.len());
    let mut picks: Vec<usize> = (0..samples.len()).collect();
    picks.shuffle(&mut StdRng::seed_from_u64(derive_seed(seed, 7, 0)));
    let mut held = vec![false; samples.len()];
    for &i in &picks[..count] {
        held[i] = true;
    }
    let (mut train, mut out) = (Vec::new(), Vec::new());
    for (sample, is_held) in samples.into_iter().zip(held) {
        if is_held {
            out.push(sample);
        } else {
            train.push(sample);
        }
    }
    (train, out)
}

/// The photos of the check: the held-out ones, or, when the collection is too small to
/// hold any out, up to [`MAX_HELD_OUT`] training photos drawn from `seed`; and whether they
/// were held out.
pub fn check_sample(training: &[Sample], held_out: Vec<Sample>, seed: u64) -> (Vec<Sample>, bool) {
    if !held_out.is_empty() {
        return (held_out, true);
    }
    let mut picks = training.to_vec();
    picks.shuffle(&mut StdRng::seed_from_u64(derive_seed(seed, 9, 0)));
    picks.truncate(MAX_HELD_OUT);
    (picks, false)
}

/// The photos of the check and how their two views are drawn. The views are made again,
/// a chunk at a time, at each measurement (from the same seeds, so they are the same
/// views), rather than kept on the device for the whole run.
#[derive(Debug)]
pub struct CheckViews {
    images: Vec<Arc<RgbImage>>,
    globals: ViewsConfig,
    seed: u64,
    device: Device,
    /// Photos in the check.
    pub photos: usize,
    /// Whether they were held out of training (false: training photos, the collection
    /// being too small to spare any).
    pub held_out: bool,
}

impl CheckViews {
    /// The check over `samples` (at most [`MAX_HELD_OUT`]) with the global views of
    /// `views`; photos that fail to decode are left out. `None` with fewer than 2 photos.
    pub fn new(
        samples: &[Sample],
        held_out: bool,
        views: &ViewsConfig,
        decode: &DecodeOptions,
        seed: u64,
        device: &Device,
    ) -> Result<Option<Self>> {
        let images: Vec<Arc<RgbImage>> = samples
            .par_iter()
            .take(MAX_HELD_OUT)
            .filter_map(|s| match &s.image {
                Some(img) => Some(Arc::clone(img)),
                None => Some(Arc::new(photo::decode(&s.path, decode).ok()?.image)),
            })
            .filter(|img| img.width() > 0 && img.height() > 0)
            .collect();
        if images.len() < 2 {
            return Ok(None);
        }
        // the paper's views whatever the run's augmentations, so runs compare
        let globals = ViewsConfig {
            local_crops: 0,
            curation: false,
            ..views.clone()
        };
        Ok(Some(Self {
            photos: images.len(),
            images,
            globals,
            seed,
            device: device.clone(),
            held_out,
        }))
    }

    /// The share of photos whose two views find each other as nearest neighbours under
    /// `net`'s backbone (mean of both directions); chance is `1 / photos`.
    pub fn agreement(&self, net: &DinoNet) -> Result<f64> {
        Ok(self.measure(net)?.agreement)
    }

    /// The view agreement and the RankMe of the first views' features under `net`.
    pub fn measure(&self, net: &DinoNet) -> Result<CheckMeasures> {
        let (mut first, mut second) = (Vec::new(), Vec::new());
        for (chunk, images) in self.images.chunks(CHUNK).enumerate() {
            let (a, b) = self.views(net, chunk * CHUNK, images)?;
            first.push(a);
            second.push(b);
        }
        let first = Tensor::cat(&first, 0)?;
        Ok(CheckMeasures {
            agreement: mutual_agreement(&first, &Tensor::cat(&second, 0)?)?,
            rank_me: rank_me(&first)?,
        })
    }

    /// L2-normalised backbone features `[n, D]` of the first and second views of
    /// `images`, the photos from number `offset` on.
    fn views(
        &self,
        net: &DinoNet,
        offset: usize,
        images: &[Arc<RgbImage>],
    ) -> Result<(Tensor, Tensor)> {
        let pairs = images
            .par_iter()
            .enumerate()
            .map(|(i, img)| {
                let mut rng = StdRng::seed_from_u64(derive_seed(self.seed, 8, (offset + i) as u64));
                make_views(img, &self.globals, &mut rng)
            })
            .collect::<std::result::Result<Vec<Vec<View>>, _>>()
            .map_err(|e| Error::Config(format!("learned-signal views: {e}")))?;
        let mut tensors = views_to_tensors(&pairs, &self.device)?.into_iter();
        let (Some(a), Some(b)) = (tensors.next(), tensors.next()) else {
            return Err(Error::Config("learned-signal check: no views".into()));
        };
        // Eval mode: a ResNet's BatchNorm uses (and does not move) the running statistics.
        let embed = |x: &Tensor| l2_rows(&net.backbone.forward(x, None, false)?);
        Ok((embed(&a)?, embed(&b)?))
    }
}

/// The label-free measures of one network on the check's photos.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckMeasures {
    /// Share of photos whose two views find each other ([`CheckViews::agreement`]).
    pub agreement: f64,
    /// Effective rank of the features ([`rank_me`]).
    pub rank_me: f64,
}

/// RankMe (Garrido et al., ICML 2023): the exponential of the entropy of the normalised
/// singular values of the features `[n, D]`, the number of directions they really use
/// (1 for collapsed features, up to min(n, D)). A drop means features that lost
/// dimensions; it tracks downstream accuracy across SSL runs in the paper.
pub fn rank_me(features: &Tensor) -> Result<f64> {
    let rows = features
        .to_dtype(candle_core::DType::F32)?
        .to_vec2::<f32>()?;
    let (n, d) = (rows.len(), rows.first().map_or(0, Vec::len));
    if n == 0 || d == 0 {
        return Ok(0.0);
    }
    let x = nalgebra::DMatrix::from_fn(n, d, |i, j| f64::from(rows[i][j]));
    // The singular values are the square roots of the eigenvalues of the smaller Gram.
    let gram = if n <= d {
        &x * x.transpose()
    } else {
        x.transpose() * &x
    };
    let singular: Vec<f64> = nalgebra::SymmetricEigen::new(gram)
        .eigenvalues
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .collect();
    let total: f64 = singular.iter().sum();
    if total <= 0.0 {
        return Ok(0.0);
    }
    let entropy: f64 = singular
        .iter()
        .map(|s| s / total + 1e-7)
        .map(|p| -p * p.ln())
        .sum();
    Ok(entropy.exp())
}

/// The share of rows `i` of `first` whose most similar row of `second` is row `i`, and
/// the other way round (mean of both directions); rows L2-normalised, `[n, D]` each.
fn mutual_agreement(first: &Tensor, second: &Tensor) -> Result<f64> {
    let photos = first.dim(0)?;
    let sim = first.matmul(&second.t()?)?;
    let hits = |best: Tensor| -> Result<usize> {
        let best = best.to_vec1::<u32>()?;
        Ok(best
            .iter()
            .enumerate()
            .filter(|&(i, &j)| i == j as usize)
            .count())
    };
    let forward = hits(sim.argmax(D::Minus1)?)?;
    let backward = hits(sim.argmax(0)?)?;
    Ok((forward + backward) as f64 / (2 * photos.max(1)) as f64)
}

/// What the check found at the end of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedSignal {
    /// Photos checked.
    pub photos: usize,
    /// Whether they were held out of training.
    pub held_out: bool,
    /// Agreement of the network the run started from.
    pub start: f64,
    /// Agreement of the trained teacher.
    pub trained: f64,
    /// Whether the trained teacher beats the start by more than the check's noise.
    pub learned: bool,
    /// RankMe of the start's features.
    #[serde(default)]
    pub rank_me_start: Option<f64>,
    /// RankMe of the trained teacher's features.
    #[serde(default)]
    pub rank_me_trained: Option<f64>,
    /// The verdict: the trained teacher is better than the start on both measures (views
    /// agree more, beyond the noise, and the features kept their dimensions).
    #[serde(default)]
    pub better: bool,
}

/// The largest relative drop of RankMe that still counts as keeping the dimensions.
pub const RANK_ME_TOLERANCE: f64 = 0.05;

impl LearnedSignal {
    /// Compares two agreements measured on `photos` photos: the gain counts when it exceeds
    /// two standard errors of the difference of two proportions.
    pub fn new(photos: usize, held_out: bool, start: f64, trained: f64) -> Self {
        let n = photos.max(1) as f64;
        let var = |p: f64| p * (1.0 - p) / n;
        let noise = 2.0 * (var(start) + var(trained)).sqrt().max(1.0 / n);
        let learned = trained - start > noise;
        Self {
            photos,
            held_out,
            start,
            trained,
            learned,
            rank_me_start: None,
            rank_me_trained: None,
            better: learned,
        }
    }

    /// Adds the RankMe of the start and of the trained teacher, and decides the verdict
    /// with them: no verdict of "better" when the features lost dimensions.
    pub fn with_rank_me(self, start: Option<f64>, trained: f64) -> Self {
        let kept = start.is_none_or(|s| trained >= s * (1.0 - RANK_ME_TOLERANCE));
        Self {
            rank_me_start: start,
            rank_me_trained: Some(trained),
            better: self.learned && kept,
            ..self
        }
    }

    /// The RankMe figures, for people ("" when not measured).
    pub fn rank_me_line(&self) -> String {
        match (self.rank_me_start, self.rank_me_trained) {
            (Some(s), Some(t)) => format!("; effective rank {t:.1}, {s:.1} at the start"),
            _ => String::new(),
        }
    }

    /// One plain line for the user.
    pub fn describe(&self) -> String {
        let sample = if self.held_out {
            format!("{} held-out photos", self.photos)
        } else {
            format!("{} training photos", self.photos)
        };
        let figures = format!(
            "two views of a photo match {:.0} % of the time, {:.0} % at the start{} ({sample})",
            self.trained * 100.0,
            self.start * 100.0,
            self.rank_me_line()
        );
        if self.learned {
            format!("learned: {figures}")
        } else {
            format!(
                "not learned yet: {figures}; no better than the start: train longer \
                 (e.g. --time 2h) or on a GPU"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn samples(n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                path: PathBuf::from(format!("p{i:04}.jpg")),
                image: None,
            })
            .collect()
    }

    #[test]
    fn held_out_photos_are_a_fixed_share_that_never_trains() {
        assert_eq!(held_out_count(399), 0);
        assert_eq!(held_out_count(400), 20);
        assert_eq!(held_out_count(3000), 150);
        assert_eq!(held_out_count(100_000), MAX_HELD_OUT);
        let (train, out) = split_held_out(samples(1000), 3);
        assert_eq!((train.len(), out.len()), (950, 50));
        assert!(out.iter().all(|o| train.iter().all(|t| t.path != o.path)));
        assert!(train.windows(2).all(|w| w[0].path < w[1].path));
        let (_, again) = split_held_out(samples(1000), 3);
        assert_eq!(
            out.iter().map(|s| &s.path).collect::<Vec<_>>(),
            again.iter().map(|s| &s.path).collect::<Vec<_>>()
        );
        let (train, out) = split_held_out(samples(30), 3);
        assert_eq!((train.len(), out.len()), (30, 0));
    }

    /// Identical second views agree everywhere; second views shifted by one photo (each
    /// view's twin sits at another photo's place) agree nowhere.
    #[test]
    fn agreement_has_known_answers() -> Result<()> {
        use crate::model::{HeadConfig, ParamBuilder, VitArch, VitConfig};
        let device = Device::Cpu;
        let vit = VitConfig {
            depth: 1,
            ..VitConfig::preset(VitArch::VitTiny, 16)
        };
        let head = HeadConfig {
            in_dim: 192,
            out_dim: 16,
            hidden_dim: 32,
            bottleneck_dim: 8,
            norm_last_layer: true,
            use_bn: false,
        };
        let net = DinoNet::new(&ParamBuilder::frozen(&device, 1), &vit, &head)?;
        let x = Tensor::randn(0f32, 1f32, (6, 3, 32, 32), &device)?;
        let embed = |x: &Tensor| l2_rows(&net.backbone.forward(x, None, false)?);
        let features = embed(&x)?;
        assert_eq!(mutual_agreement(&features, &features)?, 1.0);
        let shifted = Tensor::cat(&[x.narrow(0, 1, 5)?, x.narrow(0, 0, 1)?], 0)?;
        assert_eq!(mutual_agreement(&features, &embed(&shifted)?)?, 0.0);
        Ok(())
    }

    #[test]
    fn rank_me_counts_the_directions_used() -> Result<()> {
        let device = Device::Cpu;
        // 5 orthonormal rows in 8 dimensions: 5 equal singular values.
        let eye = Tensor::eye(8, candle_core::DType::F32, &device)?.narrow(0, 0, 5)?;
        assert!((rank_me(&eye)? - 5.0).abs() < 1e-3);
        // Every row the same: one direction.
        let same = Tensor::ones((6, 8), candle_core::DType::F32, &device)?;
        assert!((rank_me(&same)? - 1.0).abs() < 1e-3);
        // More rows than dimensions goes through the other Gram matrix.
        let tall = Tensor::eye(8, candle_core::DType::F32, &device)?.repeat((3, 1))?;
        assert!((rank_me(&tall)? - 8.0).abs() < 1e-3);
        Ok(())
    }

    #[test]
    fn the_verdict_needs_more_agreement_and_no_lost_dimensions() {
        let learned = LearnedSignal::new(256, true, 0.40, 0.60);
        assert!(learned.clone().with_rank_me(Some(100.0), 97.0).better);
        assert!(!learned.with_rank_me(Some(100.0), 90.0).better);
        let flat = LearnedSignal::new(256, true, 0.90, 0.91);
        assert!(!flat.with_rank_me(Some(100.0), 120.0).better);
        assert!(LearnedSignal::new(256, true, 0.40, 0.60)
            .with_rank_me(Some(100.0), 120.0)
            .describe()
            .contains("effective rank 120.0, 100.0 at the start"));
    }

    #[test]
    fn a_gain_within_the_noise_is_not_learning() {
        assert!(!LearnedSignal::new(256, true, 0.40, 0.43).learned);
        assert!(LearnedSignal::new(256, true, 0.40, 0.60).learned);
        assert!(!LearnedSignal::new(256, true, 0.40, 0.30).learned);
        let line = LearnedSignal::new(30, false, 0.5, 0.5).describe();
        assert!(line.starts_with("not learned yet"), "{line}");
        assert!(line.contains("train longer"), "{line}");
        assert!(LearnedSignal::new(200, true, 0.2, 0.7)
            .describe()
            .starts_with("learned: "));
    }
}
