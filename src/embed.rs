//! Image → vector: the teacher backbone's L2-normalised CLS token (the descriptor the
//! official evaluation uses), on resize + centre-crop views.

use std::path::Path;

use candle_core::{Device, Tensor, D};
use image::RgbImage;

use crate::model::weights::load_backbone;
use crate::model::{ParamBuilder, Vit, VitConfig};
use crate::train::checkpoint;
use crate::train::trainer::CHECKPOINT_FILE;
use crate::train::views::{eval_view, views_to_tensors, View};
use crate::{Error, Result};

/// A backbone ready to embed images at a fixed input size.
#[derive(Debug)]
pub struct Embedder {
    vit: Vit,
    size: u32,
    device: Device,
}

impl Embedder {
    /// The teacher of a training run folder (or a checkpoint file), at the run's
    /// global view size.
    pub fn from_run(run: &Path, device: &Device) -> Result<Self> {
        let file = if run.is_dir() {
            run.join(CHECKPOINT_FILE)
        } else {
            run.to_path_buf()
        };
        if !file.exists() {
            return Err(Error::Config(format!(
                "no trained model at {}",
                file.display()
            )));
        }
        let ckpt = checkpoint::load(&file, &Device::Cpu)?;
        let vit = load_backbone(&file, device)?;
        Ok(Self {
            vit,
            size: ckpt.config.global_size,
            device: device.clone(),
        })
    }

    /// Any weights file [`load_backbone`] reads, at `size` pixels.
    pub fn from_weights(path: &Path, size: u32, device: &Device) -> Result<Self> {
        Ok(Self {
            vit: load_backbone(path, device)?,
            size,
            device: device.clone(),
        })
    }

    /// A randomly initialised backbone (a baseline for evaluations).
    pub fn random(cfg: &VitConfig, size: u32, seed: u64, device: &Device) -> Result<Self> {
        let pb = ParamBuilder::frozen(device, seed);
        Ok(Self {
            vit: Vit::new(&pb, cfg)?,
            size,
            device: device.clone(),
        })
    }

    /// The same backbone at another input size.
    pub fn with_size(self, size: u32) -> Self {
        Self { size, ..self }
    }

    /// Input side in pixels.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Width of the vectors.
    pub fn dim(&self) -> usize {
        self.vit.config().embed_dim
    }

    /// L2-normalised CLS vectors `[n, dim]` of a batch of images.
    pub fn embed(&self, images: &[RgbImage]) -> Result<Tensor> {
        let views = images
            .iter()
            .map(|img| eval_view(img, self.size))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(e.to_string()))?;
        self.embed_views(views)
    }

    /// [`Embedder::embed`] on views already made with [`eval_view`] at [`Embedder::size`]
    /// (so that callers can prepare them on other threads).
    pub fn embed_views(&self, views: Vec<View>) -> Result<Tensor> {
        let views: Vec<Vec<View>> = views.into_iter().map(|v| vec![v]).collect();
        let batch = views_to_tensors(&views, &self.device)?;
        let input = batch
            .into_iter()
            .next()
            .ok_or_else(|| Error::Config("no image to embed".into()))?;
        let cls = self.vit.forward(&input, None)?;
        l2_rows(&cls)
    }

    /// [`Embedder::embed_views`] as one `Vec<f32>` per image.
    pub fn embed_rows(&self, views: Vec<View>) -> Result<Vec<Vec<f32>>> {
        if views.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.embed_views(views)?.to_vec2::<f32>()?)
    }
}

/// Rows divided by their L2 norm.
pub fn l2_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}
