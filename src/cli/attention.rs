//! `dino-curate attention IMAGE --out DIR`

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::models::open_named;
use super::{device_from, DeviceArg};
use dino_curate::attention::{
    attention_of, mask_overlay, mass_mask, overlay, write_png, DEFAULT_SIZE,
};
use dino_curate::embed::Embedder;
use dino_curate::photo::{self, DecodeOptions, Skipped, DEFAULT_MAX_PIXELS};

#[derive(Debug, Args)]
pub struct AttentionArgs {
    /// The photo.
    image: PathBuf,
    /// Folder for head-00.png …, mean.png and, with --threshold, mask-00.png ….
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Also write masks keeping the patches that hold this fraction of each head's
    /// attention (the official default for the paper's figures: 0.6).
    #[arg(long, value_name = "FRACTION")]
    threshold: Option<f32>,
    /// Shorter side of the model input in pixels (aspect ratio kept, cut to whole patches).
    #[arg(long, value_name = "PX", default_value_t = DEFAULT_SIZE)]
    size: u32,
    /// A released ViT (dino-vits16, dino-vits8, dino-vitb16, dino-vitb8; downloaded
    /// once), `trained` or a training run folder (default: the model `index` uses).
    #[arg(long, value_name = "NAME|RUN", conflicts_with = "weights")]
    model: Option<String>,
    /// Any weights file instead (official DINO .pth, safetensors).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
}

pub fn run(args: &AttentionArgs, workspace: Option<&Path>) -> Result<()> {
    super::on_compute_pool(|| maps(args, workspace))?
}

fn load(args: &AttentionArgs, workspace: Option<&Path>) -> Result<Embedder> {
    let device = device_from(args.device)?;
    if let Some(weights) = &args.weights {
        return Ok(Embedder::from_weights(weights, args.size, &device)?);
    }
    open_named(args.model.as_deref(), workspace, &device)
}

fn maps(args: &AttentionArgs, workspace: Option<&Path>) -> Result<()> {
    if let Some(t) = args.threshold.filter(|t| !(0.0..=1.0).contains(t)) {
        bail!("--threshold {t} is not a fraction between 0 and 1");
    }
    let model = load(args, workspace)?;
    let decode = DecodeOptions {
        max_pixels: DEFAULT_MAX_PIXELS,
        target_short_side: Some(args.size),
        ..DecodeOptions::default()
    };
    let photo = photo::decode(&args.image, &decode).map_err(Skipped::from)?;
    let (shown, maps) = attention_of(&model, &photo.image, args.size)?;
    let (rows, cols) = (maps.rows, maps.cols);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for (h, map) in maps.heads.iter().enumerate() {
        write_png(
            &args.out.join(format!("head-{h:02}.png")),
            &overlay(&shown, map, rows, cols),
        )?;
        if let Some(threshold) = args.threshold {
            let mask = mass_mask(map, threshold)?;
            write_png(
                &args.out.join(format!("mask-{h:02}.png")),
                &mask_overlay(&shown, &mask, rows, cols),
            )?;
        }
    }
    write_png(
        &args.out.join("mean.png"),
        &overlay(&shown, &maps.mean(), rows, cols),
    )?;
    println!(
        "{} heads over {rows}x{cols} patches ({}x{} px) written to {}",
        maps.heads.len(),
        shown.width(),
        shown.height(),
        args.out.display()
    );
    Ok(())
}
