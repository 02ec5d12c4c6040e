//! Multi-crop views with the DINO augmentations (`DataAugmentationDINO` of the official
//! `main_dino.py`), plus the deterministic evaluation transform.
//!
//! Each view is cut from the source first and only that region is resized (bicubic), so the
//! colour operations run on the small output crop. All randomness comes from the caller's rng,
//! drawn in a fixed order ([`draw_view`]) before rendering, so one rng state always gives
//! bit-identical views.
//!
//! Differences from the PIL pipeline: the colour operations run in f32 on `[0, 1]` (torchvision's
//! tensor semantics) instead of rounding to 8 bits after each step; solarization inverts values
//! `≥ 128/255`; the blur is an exact separable Gaussian (radius `ceil(3σ)`, edge pixels repeated)
//! rather than PIL's box-blur approximation.

mod blur;
mod color;
mod crop;
pub(crate) mod edits;
mod params;

use candle_core::{Device, Tensor};
use fast_image_resize::Resizer;
use image::RgbImage;
use rand::Rng;

pub use blur::gaussian_blur;
pub use color::{Jitter, JitterOp};
pub use crop::{random_resized_crop, CropRect, CROP_RATIO};
pub use edits::{draw_edit, Edit};
pub use params::{draw_view, ViewKind, ViewParams};

use crop::SourceRegion;

/// ImageNet channel means used by `transforms.Normalize`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations used by `transforms.Normalize`.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// What can go wrong while making views.
#[derive(Debug, thiserror::Error)]
pub enum ViewsError {
    /// The source image has no pixels.
    #[error("cannot crop an empty {width}x{height} image")]
    EmptyImage {
        /// Source width.
        width: u32,
        /// Source height.
        height: u32,
    },
    /// The configuration cannot produce views.
    #[error("invalid views configuration: {0}")]
    Config(String),
    /// The resampler refused the crop.
    #[error("resize failed: {0}")]
    Resize(#[from] fast_image_resize::ResizeError),
    /// The crop box does not fit the image.
    #[error("crop box: {0}")]
    CropBox(#[from] fast_image_resize::CropBoxError),
    /// The resampler refused the output buffer.
    #[error("resize buffer: {0}")]
    Buffer(#[from] fast_image_resize::ImageBufferError),
}

/// Sizes and scales of DINO's multi-crop.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewsConfig {
    /// Side of the two global views (224 in the paper).
    pub global_size: u32,
    /// Side of the local views (96 in the paper).
    pub local_size: u32,
    /// Number of local views.
    pub local_crops: usize,
    /// Area fraction range of the global crops (`global_crops_scale`, default (0.4, 1.0)).
    pub global_scale: (f32, f32),
    /// Area fraction range of the local crops (`local_crops_scale`, default (0.05, 0.4)).
    pub local_scale: (f32, f32),
    /// Also apply the edits people make to photos ([`Edit`]), for copy-robust features.
    pub curation: bool,
}

impl Default for ViewsConfig {
    fn default() -> Self {
        ViewsConfig {
            global_size: 224,
            local_size: 96,
            local_crops: 8,
            global_scale: (0.4, 1.0),
            local_scale: (0.05, 0.4),
            curation: false,
        }
    }
}

impl ViewsConfig {
    /// Checks the sizes are positive and the scales are ranges within `(0, 1]`.
    pub fn validate(&self) -> Result<(), ViewsError> {
        if self.global_size == 0 || (self.local_crops > 0 && self.local_size == 0) {
            return Err(ViewsError::Config("view sizes must be positive".into()));
        }
        for (name, (lo, hi)) in [("global", self.global_scale), ("local", self.local_scale)] {
            if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
                return Err(ViewsError::Config(format!(
                    "{name} scale ({lo}, {hi}) must satisfy 0 < lo <= hi <= 1"
                )));
            }
        }
        Ok(())
    }

    /// The kind, side and scale of every view, globals first.
    fn plan(&self) -> impl Iterator<Item = (ViewKind, u32, (f32, f32))> + '_ {
        let globals = [ViewKind::Global1, ViewKind::Global2]
            .map(|kind| (kind, self.global_size, self.global_scale));
        let locals =
            (0..self.local_crops).map(|_| (ViewKind::Local, self.local_size, self.local_scale));
        globals.into_iter().chain(locals)
    }
}

/// One augmented view: ImageNet-normalised CHW f32 planes.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Side in pixels.
    pub size: u32,
    /// `3·size·size` values, channel-major (R plane, G plane, B plane).
    pub data: Vec<f32>,
}

/// Buffers reused across the views of one image.
#[derive(Debug, Default)]
struct Workspace {
    resizer: Resizer,
    rgb: Vec<u8>,
    scratch: Vec<f32>,
}

/// Fails on an image without pixels.
fn check_nonempty(img: &RgbImage) -> Result<(), ViewsError> {
    if img.width() == 0 || img.height() == 0 {
        return Err(ViewsError::EmptyImage {
            width: img.width(),
            height: img.height(),
        });
    }
    Ok(())
}

/// The DINO multi-crop of one image: the two global views first, then `local_crops` locals.
///
/// All random parameters are drawn from `rng` before any pixel work, in view order.
pub fn make_views(
    img: &RgbImage,
    cfg: &ViewsConfig,
    rng: &mut impl Rng,
) -> Result<Vec<View>, ViewsError> {
    cfg.validate()?;
    check_nonempty(img)?;
    let (w, h) = img.dimensions();
    let plan: Vec<(u32, Edit, ViewParams)> = cfg
        .plan()
        .map(|(kind, size, scale)| {
            let edit = if cfg.curation {
                draw_edit(rng)
            } else {
                Edit::default()
            };
            let (ew, eh) = edit.edited_size(w, h);
            (size, edit, draw_view(kind, ew, eh, scale, rng))
        })
        .collect();
    let mut ws = Workspace::default();
    plan.iter()
        .map(|(size, edit, p)| {
            if edit.is_none() {
                render_view(img, *size, p, &mut ws)
            } else {
                render_view(&edit.apply(img), *size, p, &mut ws)
            }
        })
        .collect()
}

/// Renders one view from drawn parameters: crop+resize, flip, jitter, grayscale, blur,
/// solarize, normalise.
pub fn render(img: &RgbImage, size: u32, params: &ViewParams) -> Result<View, ViewsError> {
    check_nonempty(img)?;
    render_view(img, size, params, &mut Workspace::default())
}

/// [`render`] with reused buffers.
fn render_view(
    img: &RgbImage,
    size: u32,
    p: &ViewParams,
    ws: &mut Workspace,
) -> Result<View, ViewsError> {
    crop::resize_crop(&mut ws.resizer, img, p.crop, size, &mut ws.rgb)?;
    let mut data = to_planes(&ws.rgb, size, p.flip);
    if let Some(jitter) = &p.jitter {
        color::apply_jitter(&mut data, jitter);
    }
    if p.gray {
        color::grayscale(&mut data);
    }
    if let Some(sigma) = p.blur_sigma {
        let s = size as usize;
        blur::gaussian_blur(&mut data, s, s, sigma, &mut ws.scratch);
    }
    if p.solarize {
        color::solarize(&mut data);
    }
    normalize(&mut data);
    Ok(View { size, data })
}

/// Converts a resized `size`×`size` RGB buffer into `[0, 1]` CHW planes.
fn to_planes(rgb: &[u8], size: u32, flip: bool) -> Vec<f32> {
    let mut data = vec![0.0; 3 * size as usize * size as usize];
    crop::to_planes(rgb, size as usize, flip, &mut data);
    data
}

/// `transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)` on CHW planes.
fn normalize(data: &mut [f32]) {
    let n = data.len() / 3;
    if n == 0 {
        return;
    }
    for (c, plane) in data.chunks_exact_mut(n).enumerate() {
        let (mean, std) = (IMAGENET_MEAN[c], IMAGENET_STD[c]);
        for v in plane {
            *v = (*v - mean) / std;
        }
    }
}

/// The source region of the official k-NN transform `Resize(256)` + `CenterCrop(224)`,
/// scaled to an output side of `size`.
fn eval_region(width: u32, height: u32, size: u32) -> SourceRegion {
    let (w, h) = (f64::from(width), f64::from(height));
    let short_target = (f64::from(size) * 256.0 / 224.0).round();
    // torchvision: the short side becomes the target, the long side is truncated.
    let (new_w, new_h) = if w <= h {
        (short_target, (short_target * h / w).floor())
    } else {
        ((short_target * w / h).floor(), short_target)
    };
    let side = f64::from(size);
    let left = ((new_w - side) / 2.0).round_ties_even();
    let top = ((new_h - side) / 2.0).round_ties_even();
    let (sx, sy) = (new_w / w, new_h / h);
    SourceRegion {
        left: left / sx,
        top: top / sy,
        width: side / sx,
        height: side / sy,
    }
}

/// The whole image resized to `size`×`size` (bicubic, aspect ratio not kept),
/// ImageNet-normalised: nothing is cropped away, so borders, letterboxes and corners count.
pub fn whole_view(img: &RgbImage, size: u32) -> Result<View, ViewsError> {
    check_nonempty(img)?;
    if size == 0 {
        return Err(ViewsError::Config("view size must be positive".into()));
    }
    let region = SourceRegion {
        left: 0.0,
        top: 0.0,
        width: f64::from(img.width()),
        height: f64::from(img.height()),
    };
    let mut ws = Workspace::default();
    crop::resize_region(&mut ws.resizer, img, region, size, &mut ws.rgb)?;
    let mut data = to_planes(&ws.rgb, size, false);
    normalize(&mut data);
    Ok(View { size, data })
}

/// Deterministic evaluation view: shorter side resized to `size·256/224` (bicubic), centre crop
/// `size`×`size`, ImageNet-normalised. Done as one resize of the matching source region.
pub fn eval_view(img: &RgbImage, size: u32) -> Result<View, ViewsError> {
    check_nonempty(img)?;
    if size == 0 {
        return Err(ViewsError::Config("eval size must be positive".into()));
    }
    let region = eval_region(img.width(), img.height(), size);
    let mut ws = Workspace::default();
    crop::resize_region(&mut ws.resizer, img, region, size, &mut ws.rgb)?;
    let mut data = to_planes(&ws.rgb, size, false);
    normalize(&mut data);
    Ok(View { size, data })
}

/// Stacks view `k` of every image into one `[B, 3, S, S]` tensor, for each view index `k`.
///
/// Every image must have the same number of views with the same sizes.
pub fn views_to_tensors(batch: &[Vec<View>], device: &Device) -> candle_core::Result<Vec<Tensor>> {
    let Some(first) = batch.first() else {
        return Ok(Vec::new());
    };
    if batch.iter().any(|views| views.len() != first.len()) {
        candle_core::bail!("images in the batch have different numbers of views");
    }
    (0..first.len())
        .map(|k| {
            let size = first[k].size as usize;
            let mut data = Vec::with_capacity(batch.len() * 3 * size * size);
            for views in batch {
                let view = &views[k];
                if view.size as usize != size || view.data.len() != 3 * size * size {
                    candle_core::bail!("view {k} has different sizes across the batch");
                }
                data.extend_from_slice(&view.data);
            }
            Tensor::from_vec(data, (batch.len(), 3, size, size), device)
        })
        .collect()
}

#[cfg(test)]
mod tests;
