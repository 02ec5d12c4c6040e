//! Helpers shared by the integration tests that index a folder through the binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::Device;
use dino_curate::model::weights::save_safetensors;
use dino_curate::model::{ParamBuilder, Vit, VitArch, VitConfig};
use image::{Rgb, RgbImage};

/// A distinct striped picture for each `i`, (64 + i) × (48 + i) pixels.
pub fn picture(i: u32) -> RgbImage {
    RgbImage::from_fn(64 + i, 48 + i, |x, y| {
        let stripe = ((x + i * 5) / (2 + i % 5)) % 2 == 0;
        Rgb([
            ((x * 255 / (64 + i)) as u8).wrapping_add((i * 37) as u8),
            if stripe { 220 } else { (y * 5) as u8 },
            ((i * 71) % 256) as u8,
        ])
    })
}

/// Weights of a randomly initialised two-block ViT-Tiny/16, saved as `dir/w.safetensors`.
pub fn tiny_weights(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let pb = ParamBuilder::frozen(&Device::Cpu, 11);
    Vit::new(
        &pb,
        &VitConfig {
            depth: 2,
            ..VitConfig::preset(VitArch::VitTiny, 16)
        },
    )?;
    let weights = dir.join("w.safetensors");
    save_safetensors(&pb.store().tensors()?, &weights)?;
    Ok(weights)
}
