//! The last block's self-attention from the CLS token to the patches, per head, as the
//! official `visualize_attention.py` shows it: heat maps over the image and masks that keep
//! the patches holding a given fraction of the attention mass.
//!
//! [`cls_maps`] and [`mass_mask`] are pure; [`attention_input`] prepares a photo (shorter
//! side resized, both sides cut to a multiple of the patch size, aspect ratio kept) and the
//! `overlay`/`mask` renderers draw at that input's size, each patch a block of pixels
//! (nearest-neighbour upsampling, as the official script). [`attention_of`] runs a model
//! on a decoded photo: the one path of the `attention` command and the TUI.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{Rgb, RgbImage};

use crate::atomic::write_atomically;
use crate::embed::Embedder;
use crate::train::views::{IMAGENET_MEAN, IMAGENET_STD};
use crate::{Error, Result};

/// Shorter side of the model input, in pixels, unless told otherwise.
pub const DEFAULT_SIZE: u32 = 480;

/// CLS-to-patch attention of each head over a `rows × cols` patch grid.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionMaps {
    /// Patch rows.
    pub rows: usize,
    /// Patch columns.
    pub cols: usize,
    /// One `rows · cols` map per head, row-major.
    pub heads: Vec<Vec<f32>>,
}

impl AttentionMaps {
    /// The heads' average map.
    pub fn mean(&self) -> Vec<f32> {
        let n = self.heads.len().max(1) as f32;
        (0..self.rows * self.cols)
            .map(|i| self.heads.iter().map(|h| h[i]).sum::<f32>() / n)
            .collect()
    }
}

/// The CLS row of the first image's attention `[B, heads, 1 + rows·cols, 1 + rows·cols]`
/// (`get_last_selfattention`), without the CLS column, as one map per head.
pub fn cls_maps(attention: &Tensor, rows: usize, cols: usize) -> Result<AttentionMaps> {
    let (_, heads, n, m) = attention.dims4()?;
    if n != m || n != 1 + rows * cols {
        return Err(Error::Config(format!(
            "attention over {n}x{m} tokens does not fit a {rows}x{cols} patch grid"
        )));
    }
    let cls = attention
        .get(0)?
        .narrow(1, 0, 1)?
        .narrow(2, 1, rows * cols)?;
    let heads_maps = cls.reshape((heads, rows * cols))?.to_vec2::<f32>()?;
    Ok(AttentionMaps {
        rows,
        cols,
        heads: heads_maps,
    })
}

/// The `(row, column)` of the largest value of a map with `cols` columns (the first one on
/// ties); None for an empty map.
pub fn strongest(map: &[f32], cols: usize) -> Option<(usize, usize)> {
    let (i, _) = map
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))?;
    Some((i.checked_div(cols)?, i % cols))
}

/// The smallest set of patches whose attention adds up to at least `threshold` of the
/// map's mass (largest values first), as the official `--threshold`.
pub fn mass_mask(map: &[f32], threshold: f32) -> Result<Vec<bool>> {
    if !(0.0..=1.0).contains(&threshold) {
        return Err(Error::Config(format!(
            "threshold {threshold} is not a fraction between 0 and 1"
        )));
    }
    let total: f32 = map.iter().sum();
    let mut order: Vec<usize> = (0..map.len()).collect();
    order.sort_by(|&a, &b| map[b].total_cmp(&map[a]).then(a.cmp(&b)));
    let mut keep = vec![false; map.len()];
    let mut held = 0.0f32;
    for i in order {
        if held >= threshold * total {
            break;
        }
        keep[i] = true;
        held += map[i];
    }
    Ok(keep)
}

/// The photo as the model sees it for the maps: shorter side resized to `short_side`
/// (Catmull-Rom), aspect ratio kept, then both sides cut down to a multiple of `patch`;
/// with its ImageNet-normalised `[1, 3, H, W]` tensor.
pub fn attention_input(
    img: &RgbImage,
    short_side: u32,
    patch: usize,
    device: &Device,
) -> Result<(RgbImage, Tensor)> {
    let (w, h) = (img.width(), img.height());
    let p = u32::try_from(patch).map_err(|e| Error::Config(e.to_string()))?;
    if w == 0 || h == 0 || short_side < p || p == 0 {
        return Err(Error::Config(format!(
            "cannot make a {short_side}-pixel input of {patch}-pixel patches from a {w}x{h} image"
        )));
    }
    let scale = f64::from(short_side) / f64::from(w.min(h));
    let (nw, nh) = (scaled(w, scale), scaled(h, scale));
    let resized = image::imageops::resize(img, nw, nh, FilterType::CatmullRom);
    let (cw, ch) = (nw - nw % p, nh - nh % p);
    let cropped = image::imageops::crop_imm(&resized, 0, 0, cw, ch).to_image();
    let tensor = normalised_chw(&cropped, device)?;
    Ok((cropped, tensor))
}

/// The photo as `model` sees it with a `short_side`-pixel input ([`attention_input`]) and
/// the CLS-to-patch attention of each head of the model's last block over it.
pub fn attention_of(
    model: &Embedder,
    img: &RgbImage,
    short_side: u32,
) -> Result<(RgbImage, AttentionMaps)> {
    let vit = model.backbone().vit("attention maps")?;
    let patch = vit.config().patch_size;
    let (shown, input) = attention_input(img, short_side, patch, model.device())?;
    let (rows, cols) = (input.dim(2)? / patch, input.dim(3)? / patch);
    let maps = cls_maps(&vit.last_self_attention(&input)?, rows, cols)?;
    Ok((shown, maps))
}

fn scaled(side: u32, scale: f64) -> u32 {
    // at most the input side times a ratio of u32s: fits u32
    ((f64::from(side) * scale).round() as u32).max(1)
}

fn normalised_chw(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; 3 * w * h];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            data[c * w * h + i] = (f32::from(px[c]) / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    Ok(Tensor::from_vec(data, (1, 3, h, w), device)?)
}

/// The patch under pixel `(x, y)` of an image `rows × cols` patches large.
fn patch_at(img: &RgbImage, maps: (usize, usize), x: u32, y: u32) -> usize {
    let (rows, cols) = maps;
    let r = (y as usize * rows / img.height() as usize).min(rows - 1);
    let c = (x as usize * cols / img.width() as usize).min(cols - 1);
    r * cols + c
}

/// `img` half covered by the map as a heat map (black → red → yellow → white), the map
/// stretched from its smallest value (black) to its largest (white), as `plt.imsave` does.
pub fn overlay(img: &RgbImage, map: &[f32], rows: usize, cols: usize) -> RgbImage {
    let min = map.iter().copied().fold(f32::INFINITY, f32::min);
    let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let range = (max - min).max(f32::MIN_POSITIVE);
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let heat = heat_colour((map[patch_at(img, (rows, cols), x, y)] - min) / range);
        let px = img.get_pixel(x, y);
        Rgb(std::array::from_fn(|c| {
            ((u16::from(px[c]) + u16::from(heat[c])) / 2) as u8
        }))
    })
}

/// `img` with the patches outside `mask` darkened to a quarter.
pub fn mask_overlay(img: &RgbImage, mask: &[bool], rows: usize, cols: usize) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let px = *img.get_pixel(x, y);
        if mask[patch_at(img, (rows, cols), x, y)] {
            px
        } else {
            Rgb(px.0.map(|v| v / 4))
        }
    })
}

/// A "hot" colour map of `t` in `[0, 1]`.
fn heat_colour(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0) * 3.0;
    let ramp = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    [ramp(t), ramp(t - 1.0), ramp(t - 2.0)]
}

/// Writes `img` as a PNG file, atomically.
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    write_atomically(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention `[1, heads, n, n]` whose CLS row over the patches is `row(h)`.
    fn attention(heads: usize, patches: usize, row: impl Fn(usize) -> Vec<f32>) -> Tensor {
        let n = patches + 1;
        let mut data = vec![0f32; heads * n * n];
        for h in 0..heads {
            let r = row(h);
            data[h * n * n + 1..h * n * n + n].copy_from_slice(&r);
        }
        Tensor::from_vec(data, (1, heads, n, n), &Device::Cpu).expect("shape matches")
    }

    #[test]
    fn maps_have_one_grid_per_head_and_a_mean() -> Result<()> {
        let t = attention(3, 6, |h| (0..6).map(|i| (h * 10 + i) as f32).collect());
        let maps = cls_maps(&t, 2, 3)?;
        assert_eq!((maps.heads.len(), maps.rows, maps.cols), (3, 2, 3));
        assert_eq!(maps.heads[2], vec![20.0, 21.0, 22.0, 23.0, 24.0, 25.0]);
        assert_eq!(maps.mean()[0], 10.0);
        assert!(cls_maps(&t, 3, 3).is_err());
        Ok(())
    }

    #[test]
    fn strongest_is_the_first_largest_patch() {
        assert_eq!(strongest(&[0.1, 0.5, 0.2, 0.5, 0.0, 0.3], 3), Some((0, 1)));
        assert_eq!(strongest(&[0.1, 0.2, 0.2, 0.9], 2), Some((1, 1)));
        assert_eq!(strongest(&[], 3), None);
    }

    #[test]
    fn mask_is_the_smallest_set_holding_the_mass() -> Result<()> {
        let map = [0.05f32, 0.4, 0.1, 0.25, 0.2];
        let keep = mass_mask(&map, 0.6)?;
        // 0.4 + 0.25 = 0.65 ≥ 0.6, and no single patch holds 0.6
        assert_eq!(keep, vec![false, true, false, true, false]);
        for threshold in [0.0f32, 0.3, 0.6, 0.9, 1.0] {
            let keep = mass_mask(&map, threshold)?;
            let held: f32 = map
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(v, _)| v)
                .sum();
            assert!(held >= threshold - 1e-6);
            // dropping the smallest kept patch falls below the threshold: no smaller set
            let smallest = map
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(v, _)| *v)
                .fold(f32::INFINITY, f32::min);
            if threshold > 0.0 {
                assert!(held - smallest < threshold);
            }
        }
        assert!(mass_mask(&map, 1.5).is_err());
        Ok(())
    }

    #[test]
    fn input_keeps_the_aspect_ratio_on_whole_patches() -> Result<()> {
        let img = RgbImage::from_pixel(300, 200, Rgb([10, 200, 30]));
        let (shown, t) = attention_input(&img, 100, 16, &Device::Cpu)?;
        // 150 x 100 → 144 x 96
        assert_eq!((shown.width(), shown.height()), (144, 96));
        assert_eq!(t.dims(), &[1, 3, 96, 144]);
        assert!(attention_input(&img, 8, 16, &Device::Cpu).is_err());
        Ok(())
    }

    #[test]
    fn overlays_are_the_image_size_and_follow_the_patches() {
        let img = RgbImage::from_pixel(6, 4, Rgb([200, 200, 200]));
        let map = [0.0f32, 0.0, 1.0, 0.0, 0.0, 0.0];
        let heat = overlay(&img, &map, 2, 3);
        assert_eq!(heat.dimensions(), (6, 4));
        // top-right patch (pixels 4..6 × 0..2) is the hottest
        assert_eq!(heat.get_pixel(5, 0), &Rgb([227, 227, 227]));
        assert_eq!(heat.get_pixel(0, 3), &Rgb([100, 100, 100]));
        let masked = mask_overlay(&img, &[false, false, true, false, false, false], 2, 3);
        assert_eq!(masked.get_pixel(4, 1), &Rgb([200, 200, 200]));
        assert_eq!(masked.get_pixel(0, 0), &Rgb([50, 50, 50]));
    }

    #[test]
    fn a_random_vit_gives_maps_that_sum_to_at_most_one() -> Result<()> {
        use crate::model::{ParamBuilder, Vit, VitArch, VitConfig};
        let cfg = VitConfig {
            depth: 2,
            ..VitConfig::preset(VitArch::VitTiny, 16)
        };
        let vit = Vit::new(&ParamBuilder::frozen(&Device::Cpu, 0), &cfg)?;
        let img = RgbImage::from_fn(80, 50, |x, y| Rgb([x as u8 * 3, y as u8 * 5, 7]));
        let (_, input) = attention_input(&img, 48, 16, &Device::Cpu)?;
        let maps = cls_maps(&vit.last_self_attention(&input)?, 3, 4)?;
        assert_eq!(maps.heads.len(), 3);
        for h in &maps.heads {
            let s: f32 = h.iter().sum();
            assert!(s > 0.0 && s <= 1.0 + 1e-5);
        }
        Ok(())
    }

    #[test]
    fn a_random_embedder_maps_a_photo_at_the_input_size() -> Result<()> {
        use crate::model::{VitArch, VitConfig};
        let cfg = VitConfig {
            depth: 2,
            ..VitConfig::preset(VitArch::VitTiny, 16)
        };
        let model = Embedder::random(&cfg, 32, 0, &Device::Cpu)?;
        let img = RgbImage::from_fn(80, 50, |x, y| Rgb([x as u8 * 3, y as u8 * 5, 7]));
        // 50 → 48 short side: 77 x 48, cut to 64 x 48 = 4 x 3 patches of 16
        let (shown, maps) = attention_of(&model, &img, 48)?;
        assert_eq!(shown.dimensions(), (64, 48));
        assert_eq!((maps.rows, maps.cols, maps.heads.len()), (3, 4, 3));
        assert_eq!(maps.mean().len(), 12);
        assert!(maps.heads.iter().all(|h| h.len() == 12));
        assert_eq!(overlay(&shown, &maps.mean(), 3, 4).dimensions(), (64, 48));
        Ok(())
    }
}
