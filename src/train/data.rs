//! The training data: a collection of usable photos (decoded once, kept in memory when
//! they fit) and a loader that makes the multi-crop views of each batch on worker
//! threads, ahead of the model, through a bounded queue.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use image::RgbImage;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::photo::{self, DecodeOptions, Skipped};
use crate::train::views::{make_views, views_to_tensors, View, ViewsConfig};
use crate::{Error, Result};

/// One photo of the collection: its path and, when it fit the cache, its pixels.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The file.
    pub path: PathBuf,
    /// Decoded, oriented and downscaled pixels, if cached.
    pub image: Option<Arc<RgbImage>>,
}

/// The usable photos, in path order, and the files left out with their reasons.
#[derive(Debug)]
pub struct Collection {
    /// Photos that decoded.
    pub samples: Vec<Sample>,
    /// Files and folders that could not be used.
    pub skipped: Vec<Skipped>,
    /// How the loader decodes photos that are not cached.
    pub decode: DecodeOptions,
}

/// What [`Collection::open`] reports while it decodes.
pub type ProgressFn<'a> = &'a (dyn Fn(usize, usize) + Sync);

impl Collection {
    /// Scans `roots`, decodes every photo once (in parallel) to find the usable ones,
    /// and keeps up to `cache_bytes` of decoded pixels for the following epochs.
    pub fn open(
        roots: &[PathBuf],
        decode: DecodeOptions,
        cache_bytes: u64,
        progress: ProgressFn<'_>,
    ) -> Result<Self> {
        let report = photo::scan(roots).map_err(|e| Error::Config(e.to_string()))?;
        let total = report.files.len();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let decoded: Vec<_> = report
            .files
            .par_iter()
            .map(|f| {
                let result = photo::decode(&f.path, &decode);
                progress(
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                    total,
                );
                (f.path.clone(), result)
            })
            .collect();
        let mut skipped = report.skipped;
        let mut samples = Vec::with_capacity(decoded.len());
        let mut cached = 0u64;
        for (path, result) in decoded {
            match result {
                Ok(p) => {
                    let bytes = p.image.as_raw().len() as u64;
                    let image = (cached + bytes <= cache_bytes).then(|| {
                        cached += bytes;
                        Arc::new(p.image)
                    });
                    samples.push(Sample { path, image });
                }
                Err(e) => skipped.push(Skipped::from(e)),
            }
        }
        if samples.is_empty() {
            let where_ = roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>();
            return Err(Error::Config(format!(
                "no usable photo in {} ({total} image files found, {} skipped)",
                where_.join(", "),
                skipped.len()
            )));
        }
        Ok(Self {
            samples,
            skipped,
            decode,
        })
    }

    /// Photos that are decoded again at every use (they did not fit the cache).
    pub fn uncached(&self) -> usize {
        self.samples.iter().filter(|s| s.image.is_none()).count()
    }
}

/// A seed derived from the run seed and a position, so that every random choice is
/// reproducible from `(seed, epoch, index)` alone (what makes resuming exact).
pub fn derive_seed(seed: u64, a: u64, b: u64) -> u64 {
    // SplitMix64 finaliser over the combined words.
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The order of the collection in `epoch`: a shuffle seeded by `(seed, epoch)`.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(derive_seed(
        seed,
        1,
        epoch as u64,
    )));
    order
}

/// One step's input.
#[derive(Debug)]
pub struct Batch {
    /// Global step this batch is for.
    pub step: u64,
    /// One `[B, 3, S, S]` tensor per view, globals first.
    pub views: Vec<Tensor>,
    /// Images in the batch (fewer than asked when some failed to decode).
    pub images: usize,
    /// Files that failed during this batch (e.g. changed or removed since the scan).
    pub failed: Vec<Skipped>,
}

/// Where the loader starts and how it cuts epochs.
#[derive(Debug, Clone)]
pub struct LoaderPlan {
    /// First step to produce.
    pub start_step: u64,
    /// Step after the last one.
    pub end_step: u64,
    /// Steps per epoch (`floor(images / batch)`, at least 1).
    pub steps_per_epoch: u64,
    /// Images per step.
    pub batch_size: usize,
    /// Run seed.
    pub seed: u64,
    /// Batches prepared ahead of the model.
    pub queue: usize,
}

/// Makes batches on a background thread (views in parallel with rayon) and hands them
/// over through a bounded queue; [`Loader::next_batch`] reports how long the model waited.
#[derive(Debug)]
pub struct Loader {
    receiver: Receiver<Result<Batch>>,
    worker: Option<JoinHandle<()>>,
}

fn load_image(
    sample: &Sample,
    decode: &DecodeOptions,
) -> std::result::Result<Arc<RgbImage>, Skipped> {
    match &sample.image {
        Some(img) => Ok(Arc::clone(img)),
        None => photo::decode(&sample.path, decode)
            .map(|p| Arc::new(p.image))
            .map_err(Skipped::from),
    }
}

fn make_batch(
    collection: &Collection,
    views_cfg: &ViewsConfig,
    plan: &LoaderPlan,
    step: u64,
    device: &Device,
) -> Result<Batch> {
    let epoch = (step / plan.steps_per_epoch) as usize;
    let position = (step % plan.steps_per_epoch) as usize * plan.batch_size;
    let order = epoch_order(collection.samples.len(), plan.seed, epoch);
    let picked: Vec<usize> = order
        .iter()
        .cycle()
        .skip(position)
        .take(plan.batch_size)
        .copied()
        .collect();
    let results: Vec<std::result::Result<Vec<View>, Skipped>> = picked
        .par_iter()
        .map(|&i| {
            let sample = &collection.samples[i];
            let img = load_image(sample, &collection.decode)?;
            let mut rng = StdRng::seed_from_u64(derive_seed(plan.seed, epoch as u64 + 2, i as u64));
            make_views(&img, views_cfg, &mut rng)
                .map_err(|e| Skipped::new(sample.path.clone(), e.to_string()))
        })
        .collect();
    let mut views = Vec::with_capacity(results.len());
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(v) => views.push(v),
            Err(s) => failed.push(s),
        }
    }
    if views.is_empty() {
        return Err(Error::Config(format!(
            "step {step}: no image of the batch could be read"
        )));
    }
    Ok(Batch {
        step,
        images: views.len(),
        views: views_to_tensors(&views, device)?,
        failed,
    })
}

impl Loader {
    /// Starts producing batches `plan.start_step..plan.end_step`.
    pub fn start(
        collection: Arc<Collection>,
        views_cfg: ViewsConfig,
        plan: LoaderPlan,
        device: Device,
    ) -> Self {
        let (sender, receiver) = sync_channel(plan.queue.max(1));
        let worker = std::thread::Builder::new()
            .name("dino-loader".into())
            .spawn(move || {
                for step in plan.start_step..plan.end_step {
                    let batch = make_batch(&collection, &views_cfg, &plan, step, &device);
                    let failed = batch.is_err();
                    if sender.send(batch).is_err() || failed {
                        break;
                    }
                }
            })
            .ok();
        Self { receiver, worker }
    }

    /// The next batch and how long the caller waited for it; `None` after the last.
    pub fn next_batch(&mut self) -> Option<(Result<Batch>, Duration)> {
        let started = Instant::now();
        let batch = self.receiver.recv().ok()?;
        Some((batch, started.elapsed()))
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Unblock the worker (its sends fail once the receiver is gone), then join it.
        let (_, empty) = sync_channel(1);
        drop(std::mem::replace(&mut self.receiver, empty));
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_orders_are_permutations_that_differ_by_epoch() {
        let a = epoch_order(50, 7, 0);
        let b = epoch_order(50, 7, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(a, b);
        assert_eq!(a, epoch_order(50, 7, 0));
    }

    #[test]
    fn derived_seeds_differ_by_position() {
        assert_ne!(derive_seed(1, 0, 0), derive_seed(1, 0, 1));
        assert_ne!(derive_seed(1, 0, 0), derive_seed(2, 0, 0));
        assert_eq!(derive_seed(1, 2, 3), derive_seed(1, 2, 3));
    }
}
