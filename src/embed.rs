//! Image → vector: the teacher backbone's L2-normalised CLS token (the descriptor the
//! official evaluation uses) or CLS ⊕ GeM-pooled patch tokens (the official copy-detection
//! descriptor), on resize + centre-crop views. For a ResNet (BatchNorm in eval mode, with
//! the running statistics) the CLS token's place is taken by the average-pooled last
//! feature map, and the patch tokens' by its positions.

use std::path::Path;

use candle_core::{Device, Tensor, D};
use image::RgbImage;

use crate::model::weights::load_backbone;
use crate::model::{Backbone, BackboneConfig, ParamBuilder};
use crate::train::checkpoint;
use crate::train::trainer::CHECKPOINT_FILE;
use crate::train::views::{eval_view, views_to_tensors, whole_view, View};
use crate::{Error, Result};

/// Exponent of the generalised-mean pooling of patch tokens (`eval_copy_detection.py`).
const GEM_P: f64 = 4.0;

/// Input side of [`Embedder::untrained_for_copies`] (the size it was measured at).
pub const UNTRAINED_SIZE: u32 = 96;

/// Which output of the backbone becomes the image's vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Descriptor {
    /// The CLS token.
    #[default]
    Cls,
    /// The CLS token and the GeM (p = 4) pool of the patch tokens, each L2-normalised,
    /// concatenated (twice the width).
    ClsGem,
}

impl Descriptor {
    /// Short name, part of the index's model id.
    pub fn name(self) -> &'static str {
        match self {
            Descriptor::Cls => "cls",
            Descriptor::ClsGem => "cls-gem",
        }
    }
}

/// How a photo becomes the square input of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Shorter side resized, centre square kept (the official evaluation transform).
    #[default]
    CentreCrop,
    /// The whole photo squeezed into the square (nothing cut off).
    Whole,
}

impl Framing {
    /// Short name, part of the index's model id.
    pub fn name(self) -> &'static str {
        match self {
            Framing::CentreCrop => "crop",
            Framing::Whole => "whole",
        }
    }

    /// The model input of `img` at `size` pixels.
    pub fn view(self, img: &RgbImage, size: u32) -> Result<View> {
        let view = match self {
            Framing::CentreCrop => eval_view(img, size),
            Framing::Whole => whole_view(img, size),
        };
        view.map_err(|e| Error::Config(e.to_string()))
    }
}

/// A backbone ready to embed images at a fixed input size.
#[derive(Debug)]
pub struct Embedder {
    backbone: Backbone,
    size: u32,
    descriptor: Descriptor,
    framing: Framing,
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
        let backbone = load_backbone(&file, device)?;
        Ok(Self::new(backbone, ckpt.config.global_size, device))
    }

    fn new(backbone: Backbone, size: u32, device: &Device) -> Self {
        backbone.freeze();
        Self {
            backbone,
            size,
            descriptor: Descriptor::Cls,
            framing: Framing::CentreCrop,
            device: device.clone(),
        }
        .with_bf16(crate::model::bf16_default())
    }

    /// Any weights file [`load_backbone`] reads, at `size` pixels.
    pub fn from_weights(path: &Path, size: u32, device: &Device) -> Result<Self> {
        Ok(Self::new(load_backbone(path, device)?, size, device))
    }

    /// A randomly initialised backbone (a baseline for evaluations).
    pub fn random(
        cfg: impl Into<BackboneConfig>,
        size: u32,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let pb = ParamBuilder::frozen(device, seed);
        Ok(Self::new(Backbone::new(&pb, &cfg.into())?, size, device))
    }

    /// The network `index` uses when no model can be had (offline, nothing cached): an
    /// untrained ResNet-18 (seed 0) at [`UNTRAINED_SIZE`] px, average ⊕ GeM pooled, the
    /// best descriptor for copies measured on the near-duplicate bench (AP 0.578 against
    /// the perceptual hash's 0.512, docs/quality.md) and nothing semantic. Also returns
    /// the BLAKE3 hash of its weights, which identifies its vectors.
    pub fn untrained_for_copies(device: &Device) -> Result<(Self, [u8; 32])> {
        let pb = ParamBuilder::frozen(device, 0);
        let cfg = BackboneConfig::ResNet(crate::model::resnet::ResNetConfig::resnet18());
        let backbone = Backbone::new(&pb, &cfg)?;
        let mut tensors: Vec<_> = pb.store().tensors()?.into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hasher = blake3::Hasher::new();
        for (name, tensor) in tensors {
            hasher.update(name.as_bytes());
            for v in tensor.flatten_all()?.to_vec1::<f32>()? {
                hasher.update(&v.to_le_bytes());
            }
        }
        let embedder =
            Self::new(backbone, UNTRAINED_SIZE, device).with_descriptor(Descriptor::ClsGem);
        Ok((embedder, *hasher.finalize().as_bytes()))
    }

    /// With `on`, a ViT's linear layers take bf16 inputs and sum in f32 where the CPU has
    /// AMX (1.45–2× the embedding rate, k-NN and near-duplicate figures within noise:
    /// docs/benchmarks.md); f32 everywhere else. New embedders start from
    /// [`crate::model::set_bf16_default`].
    pub fn with_bf16(self, on: bool) -> Self {
        self.backbone.set_bf16_inference(on);
        self
    }

    /// The same backbone at another input size.
    pub fn with_size(self, size: u32) -> Self {
        Self { size, ..self }
    }

    /// The same backbone with another descriptor.
    pub fn with_descriptor(self, descriptor: Descriptor) -> Self {
        Self { descriptor, ..self }
    }

    /// The same backbone with another framing.
    pub fn with_framing(self, framing: Framing) -> Self {
        Self { framing, ..self }
    }

    /// How it frames photos.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The descriptor it computes.
    pub fn descriptor(&self) -> Descriptor {
        self.descriptor
    }

    /// The backbone itself (for the probes that need more than the descriptor).
    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    /// The device the backbone lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Input side in pixels.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Width of the vectors.
    pub fn dim(&self) -> usize {
        match self.descriptor {
            Descriptor::Cls => self.backbone.out_dim(),
            Descriptor::ClsGem => 2 * self.backbone.out_dim(),
        }
    }

    /// L2-normalised descriptors `[n, dim]` of a batch of images.
    pub fn embed(&self, images: &[RgbImage]) -> Result<Tensor> {
        let views = images
            .iter()
            .map(|img| self.framing.view(img, self.size))
            .collect::<Result<Vec<_>>>()?;
        self.embed_views(views)
    }

    /// [`Embedder::embed`] on views already made with [`Framing::view`] at
    /// [`Embedder::size`] (so that callers can prepare them on other threads).
    pub fn embed_views(&self, views: Vec<View>) -> Result<Tensor> {
        self.describe(&self.input_of(views)?)
    }

    /// The `[B, 3, H, W]` input of views made with [`Framing::view`].
    fn input_of(&self, views: Vec<View>) -> Result<Tensor> {
        let views: Vec<Vec<View>> = views.into_iter().map(|v| vec![v]).collect();
        views_to_tensors(&views, &self.device)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Config("no image to embed".into()))
    }

    /// The descriptor of a `[B, 3, H, W]` input (any size the patch grid divides).
    pub fn describe(&self, input: &Tensor) -> Result<Tensor> {
        match self.descriptor {
            Descriptor::Cls => l2_rows(&self.backbone.forward(input, None, false)?),
            Descriptor::ClsGem => {
                let (global, positions) = self.global_and_positions(input)?;
                cls_gem(&global, &positions)
            }
        }
    }

    /// Whether it makes region queries: with the [`Descriptor::ClsGem`] descriptor, on a
    /// position grid large enough that a window differs from the whole (a ResNet at 96 px
    /// has 3 × 3 positions, where every window is the whole grid).
    pub fn makes_region_queries(&self) -> bool {
        let side = self.size as usize / self.backbone.grid_stride().max(1);
        self.descriptor == Descriptor::ClsGem && region_window(side) < side
    }

    /// Region queries `[B, R × dim]` of a batch of images, for finding crops of them:
    /// for each of the four corner windows and the centre window of the position grid,
    /// each 3/4 of its side, the GeM pool of those positions, L2-normalised, in the GeM
    /// half of a [`Descriptor::ClsGem`] vector (the CLS half zero), so that its dot product
    /// with a stored descriptor compares the region with the stored photo's GeM part alone.
    pub fn region_queries(&self, images: &[RgbImage]) -> Result<Tensor> {
        let (_, regions) = self.embed_with_regions(images)?;
        regions.ok_or_else(|| {
            Error::Config(
                "region queries need the cls-gem descriptor and a grid of at least 4 × 4".into(),
            )
        })
    }

    /// [`Embedder::embed`] and, where it [makes them](Embedder::makes_region_queries), the
    /// [`Embedder::region_queries`] of the same images, from one forward pass.
    pub fn embed_with_regions(&self, images: &[RgbImage]) -> Result<(Tensor, Option<Tensor>)> {
        let views = images
            .iter()
            .map(|img| self.framing.view(img, self.size))
            .collect::<Result<Vec<_>>>()?;
        self.embed_views_with_regions(views)
    }

    /// [`Embedder::embed_with_regions`] on views made with [`Framing::view`].
    pub fn embed_views_with_regions(&self, views: Vec<View>) -> Result<(Tensor, Option<Tensor>)> {
        let input = self.input_of(views)?;
        if !self.makes_region_queries() {
            return Ok((self.describe(&input)?, None));
        }
        let (global, positions) = self.global_and_positions(&input)?;
        let regions = region_gems(&positions.contiguous()?)?;
        Ok((cls_gem(&global, &positions)?, Some(regions)))
    }

    /// The image-level vector `[B, D]` and the per-position features `[B, N, D]`: CLS
    /// and patch tokens of a ViT, average pool and positions of a ResNet's last map.
    fn global_and_positions(&self, input: &Tensor) -> Result<(Tensor, Tensor)> {
        match &self.backbone {
            Backbone::Vit(vit) => {
                let tokens = vit.forward_tokens(input, None)?;
                let n = tokens.dim(1)?;
                let cls = tokens.narrow(1, 0, 1)?.squeeze(1)?;
                Ok((cls, tokens.narrow(1, 1, n - 1)?))
            }
            Backbone::ResNet(resnet) => {
                let map = resnet.feature_map(input, false)?.flatten_from(2)?;
                Ok((map.mean(D::Minus1)?, map.transpose(1, 2)?))
            }
        }
    }

    /// [`Embedder::embed_views`] as one `Vec<f32>` per image.
    pub fn embed_rows(&self, views: Vec<View>) -> Result<Vec<Vec<f32>>> {
        if views.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.embed_views(views)?.to_vec2::<f32>()?)
    }

    /// [`Embedder::embed_views_with_regions`] as rows: per image its descriptor and its
    /// region queries (none where it [makes none](Embedder::makes_region_queries)).
    pub fn embed_rows_with_regions(&self, views: Vec<View>) -> Result<Vec<EmbeddedRow>> {
        if views.is_empty() {
            return Ok(Vec::new());
        }
        let (vectors, regions) = self.embed_views_with_regions(views)?;
        let vectors = vectors.to_vec2::<f32>()?;
        let dim = self.dim();
        let regions: Vec<Vec<Vec<f32>>> = match regions {
            Some(r) => r
                .to_vec2::<f32>()?
                .into_iter()
                .map(|row| row.chunks(dim).map(<[f32]>::to_vec).collect())
                .collect(),
            None => vec![Vec::new(); vectors.len()],
        };
        Ok(vectors.into_iter().zip(regions).collect())
    }
}

/// One image's descriptor and its region queries (each as wide as the descriptor).
pub type EmbeddedRow = (Vec<f32>, Vec<Vec<f32>>);

/// The [`Descriptor::ClsGem`] vector: the L2-normalised image-level vector `[B, D]` and
/// GeM pool of the positions `[B, N, D]`, side by side, scaled to unit length.
fn cls_gem(global: &Tensor, positions: &Tensor) -> Result<Tensor> {
    let cls = l2_rows(global)?;
    let gem = l2_rows(&gem_pool(positions)?)?;
    Ok((Tensor::cat(&[&cls, &gem], 1)? * std::f64::consts::FRAC_1_SQRT_2)?)
}

/// The five window queries of [`Embedder::region_queries`] from positions `[B, N, D]` on a
/// square grid, as `[B, 5 × 2D]`.
fn region_gems(positions: &Tensor) -> Result<Tensor> {
    let (b, n, d) = positions.dims3()?;
    let side = (n as f64).sqrt().round() as usize;
    let window = region_window(side);
    let far = side - window;
    let corners = [(0, 0), (0, far), (far, 0), (far, far), (far / 2, far / 2)];
    let zeros = Tensor::zeros((b, d), positions.dtype(), positions.device())?;
    let mut queries = Vec::with_capacity(corners.len());
    for (top, left) in corners {
        let idx: Vec<u32> = (top..top + window)
            .flat_map(|y| (left..left + window).map(move |x| (y * side + x) as u32))
            .collect();
        let idx = Tensor::from_vec(idx, window * window, positions.device())?;
        let gem = l2_rows(&gem_pool(&positions.index_select(&idx, 1)?)?)?;
        queries.push(Tensor::cat(&[&zeros, &gem], 1)?);
    }
    Ok(Tensor::cat(&queries, 1)?)
}

/// Side of a region window on a position grid of side `side`: 3/4 of it, rounded up.
fn region_window(side: usize) -> usize {
    (side * 3).div_ceil(4).max(1)
}

/// Generalised mean over the token axis of `[B, N, D]` → `[B, D]`:
/// `mean(max(x, 1e-6)^p)^(1/p)`.
fn gem_pool(tokens: &Tensor) -> Result<Tensor> {
    let powered = tokens.maximum(1e-6)?.powf(GEM_P)?;
    Ok(powered.mean(1)?.powf(1.0 / GEM_P)?)
}

/// Rows divided by their L2 norm.
pub fn l2_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{VitArch, VitConfig};

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn tiny() -> VitConfig {
        VitConfig {
            depth: 2,
            ..VitConfig::preset(VitArch::VitTiny, 16)
        }
    }

    fn photos() -> Vec<RgbImage> {
        (0..3u8)
            .map(|k| {
                RgbImage::from_fn(40, 30, |x, y| {
                    image::Rgb([(x * 6) as u8, (y * 8) as u8, k.wrapping_mul(90)])
                })
            })
            .collect()
    }

    #[test]
    fn bf16_embeddings_point_where_the_f32_ones_do() -> TestResult {
        if !crate::model::ops::amx::available() {
            eprintln!("skipped: no AMX on this CPU");
            return Ok(());
        }
        // The full 12-block ViT-Tiny, so rounding has every layer to accumulate through.
        let cfg = VitConfig::preset(VitArch::VitTiny, 16);
        let exact = Embedder::random(&cfg, 64, 5, &Device::Cpu)?.with_bf16(false);
        let fast = Embedder::random(&cfg, 64, 5, &Device::Cpu)?.with_bf16(true);
        let a = exact.embed(&photos())?.to_vec2::<f32>()?;
        let b = fast.embed(&photos())?.to_vec2::<f32>()?;
        for (x, y) in a.iter().zip(&b) {
            let cosine: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            assert!(cosine > 0.999, "cosine {cosine}");
            assert!(x != y, "the bf16 path did not run");
        }
        Ok(())
    }

    #[test]
    fn gem_of_equal_tokens_is_that_token_and_clamps_negatives() -> TestResult {
        let tokens = Tensor::new(&[[[2f32, -1.0], [2.0, -3.0], [2.0, -2.0]]], &Device::Cpu)?;
        let pooled = gem_pool(&tokens)?.to_vec2::<f32>()?;
        assert!((pooled[0][0] - 2.0).abs() < 1e-5);
        assert!(pooled[0][1] < 1e-5);
        Ok(())
    }

    #[test]
    fn cls_gem_is_twice_as_wide_unit_norm_and_starts_with_the_cls_direction() -> TestResult {
        let cls = Embedder::random(&tiny(), 32, 7, &Device::Cpu)?;
        let both =
            Embedder::random(&tiny(), 32, 7, &Device::Cpu)?.with_descriptor(Descriptor::ClsGem);
        assert_eq!(both.dim(), 2 * cls.dim());
        let a = cls.embed(&photos())?.to_vec2::<f32>()?;
        let b = both.embed(&photos())?.to_vec2::<f32>()?;
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(b.len(), 2 * a.len());
            let norm: f32 = b.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4);
            for (x, y) in a.iter().zip(&b[..a.len()]) {
                assert!((x * std::f32::consts::FRAC_1_SQRT_2 - y).abs() < 1e-5);
            }
        }
        Ok(())
    }

    #[test]
    fn region_queries_are_five_unit_gem_halves_with_the_cls_half_zero() -> TestResult {
        let cls = Embedder::random(&tiny(), 64, 7, &Device::Cpu)?;
        assert!(
            cls.region_queries(&photos()).is_err(),
            "cls alone has no GeM half"
        );
        let model = cls.with_descriptor(Descriptor::ClsGem);
        let dim = model.dim();
        let rows = model.region_queries(&photos())?.to_vec2::<f32>()?;
        assert_eq!(rows.len(), 3);
        for row in &rows {
            assert_eq!(row.len(), 5 * dim);
            for query in row.chunks(dim) {
                let (cls_half, gem_half) = query.split_at(dim / 2);
                assert!(cls_half.iter().all(|&v| v == 0.0));
                let norm: f32 = gem_half.iter().map(|v| v * v).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-4, "{norm}");
            }
        }
        Ok(())
    }

    #[test]
    fn one_pass_gives_the_descriptor_and_the_region_queries() -> TestResult {
        let model =
            Embedder::random(&tiny(), 64, 7, &Device::Cpu)?.with_descriptor(Descriptor::ClsGem);
        let (vectors, regions) = model.embed_with_regions(&photos())?;
        let alone = model.embed(&photos())?.to_vec2::<f32>()?;
        for (a, b) in vectors.to_vec2::<f32>()?.iter().zip(&alone) {
            assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6));
        }
        let regions = regions.ok_or("cls-gem has regions")?.to_vec2::<f32>()?;
        assert_eq!(regions.len(), 3);
        let cls = model.with_descriptor(Descriptor::Cls);
        assert!(cls.embed_with_regions(&photos())?.1.is_none());
        Ok(())
    }

    #[test]
    fn rows_carry_five_queries_per_image_where_the_grid_has_room_for_windows() -> TestResult {
        let vit =
            Embedder::random(&tiny(), 64, 7, &Device::Cpu)?.with_descriptor(Descriptor::ClsGem);
        assert!(vit.makes_region_queries(), "4 × 4 patches");
        let views = photos()
            .iter()
            .map(|p| vit.framing().view(p, vit.size()))
            .collect::<Result<Vec<_>>>()?;
        let rows = vit.embed_rows_with_regions(views)?;
        assert_eq!(rows.len(), 3);
        for (vector, regions) in &rows {
            assert_eq!(regions.len(), 5);
            assert!(regions.iter().all(|r| r.len() == vector.len()));
        }
        let cfg = BackboneConfig::ResNet(crate::model::resnet::ResNetConfig::resnet18());
        let resnet =
            Embedder::random(cfg, 96, 7, &Device::Cpu)?.with_descriptor(Descriptor::ClsGem);
        assert!(
            !resnet.makes_region_queries(),
            "3 × 3 positions: every window is the whole"
        );
        assert!(!vit.with_size(48).makes_region_queries(), "3 × 3 patches");
        Ok(())
    }

    #[test]
    fn whole_framing_sees_the_borders_a_centre_crop_cuts_off() -> TestResult {
        let mut wide = RgbImage::from_pixel(90, 30, image::Rgb([128, 128, 128]));
        for y in 0..30 {
            wide.put_pixel(0, y, image::Rgb([255, 0, 0]));
        }
        let mut plain = RgbImage::from_pixel(90, 30, image::Rgb([128, 128, 128]));
        plain.put_pixel(89, 0, image::Rgb([128, 128, 128]));
        let crop = |img: &RgbImage| Framing::CentreCrop.view(img, 16).map(|v| v.data);
        let whole = |img: &RgbImage| Framing::Whole.view(img, 16).map(|v| v.data);
        assert_eq!(crop(&wide)?, crop(&plain)?);
        assert_ne!(whole(&wide)?, whole(&plain)?);
        Ok(())
    }
}
