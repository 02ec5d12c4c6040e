//! Helpers shared by the integration tests that index a folder through the binary.
#![allow(dead_code)]

pub mod mirror;
pub mod pth;

use std::path::{Path, PathBuf};

use candle_core::Device;
use dino_curate::model::weights::save_safetensors;
use dino_curate::model::{ParamBuilder, Vit, VitArch, VitConfig};
use image::{Rgb, RgbImage};

/// A distinct striped picture for each `i`, (64 + i) × (48 + i) pixels: a ramp whose
/// direction turns by 47° from one `i` to the next, with stripes, so that neither the model
/// nor a perceptual hash takes two of them for copies.
pub fn picture(i: u32) -> RgbImage {
    let angle = (i * 47) as f32 * std::f32::consts::PI / 180.0;
    let (dx, dy) = (angle.cos(), angle.sin());
    let teeth = 1.0 + (i % 3) as f32;
    RgbImage::from_fn(64 + i, 48 + i, |x, y| {
        let along = (x as f32 * dx + y as f32 * dy) / 64.0;
        let ramp = ((along * teeth).rem_euclid(1.0) * 255.0) as u8;
        let stripe = ((x + i * 5) / (2 + i % 5)).is_multiple_of(2);
        Rgb([
            ramp,
            if stripe { 220 } else { ramp / 2 },
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

/// Runs the binary on workspace `ws` with `args`: (success, stdout, stderr).
pub fn dino(
    ws: &Path,
    args: &[&str],
) -> Result<(bool, String, String), Box<dyn std::error::Error>> {
    // Never the real network: a released model is looked for in the workspace's own cache
    // and "downloaded" from a port nobody listens on.
    dino_with_models(ws, &ws.join("model-cache"), "http://127.0.0.1:9/", args)
}

/// [`dino`] with the model cache `cache` and the download base `base`.
pub fn dino_with_models(
    ws: &Path,
    cache: &Path,
    base: &str,
    args: &[&str],
) -> Result<(bool, String, String), Box<dyn std::error::Error>> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dino-curate"))
        .arg("--workspace")
        .arg(ws)
        .args(args)
        .env("DINO_CURATE_MODELS", cache)
        .env("DINO_CURATE_DOWNLOAD_BASE", base)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8(out.stdout)?,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `dino-curate index PHOTOS --weights WEIGHTS --size 32 --device cpu` in workspace `ws`.
pub fn index_at_32px(
    ws: &Path,
    photos: &Path,
    weights: &Path,
) -> Result<(bool, String, String), Box<dyn std::error::Error>> {
    let args = [
        "index",
        photos.to_str().ok_or("path")?,
        "--weights",
        weights.to_str().ok_or("path")?,
        "--size",
        "32",
        "--device",
        "cpu",
    ];
    dino(ws, &args)
}

/// A ViT-S/16 backbone (random weights, seed 7) as the official `dino_deitsmall16_pretrain.pth`
/// is stored: the full-size fixture the download tests serve.
pub fn vits16_pth_bytes() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let pb = ParamBuilder::frozen(&Device::Cpu, 7);
    Vit::new(&pb, &VitConfig::preset(VitArch::VitSmall, 16))?;
    let mut tensors = Vec::new();
    for (name, t) in pb.store().tensors()? {
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        tensors.push((name, t.dims().to_vec(), values));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("dino_deitsmall16_pretrain.pth");
    pth::write_pth(&path, &tensors)?;
    Ok(std::fs::read(&path)?)
}
