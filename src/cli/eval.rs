//! `dino-curate eval …`

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use super::{device_from, ArchArg, DeviceArg};
use dino_curate::embed::Embedder;
use dino_curate::eval::{knn_classify, split_features, Features, LabelledSet};
use dino_curate::model::VitConfig;
use dino_curate::workspace::Workspace;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Weighted k-NN accuracy of the features on DIR/train/<class>/… and DIR/test/<class>/….
    Knn(KnnArgs),
}

#[derive(Debug, Args)]
pub struct KnnArgs {
    /// Folder with train/<class>/ and test/<class>/ photo folders.
    dir: PathBuf,
    /// Neighbours that vote.
    #[arg(long, default_value_t = 20)]
    k: usize,
    /// Vote temperature: a neighbour's weight is exp(similarity / T).
    #[arg(long, default_value_t = 0.07)]
    temperature: f64,
    /// A training run folder (default: the workspace's current model).
    #[arg(long, value_name = "RUN", conflicts_with_all = ["weights", "random_init", "pixels"])]
    model: Option<PathBuf>,
    /// Any weights file instead (official DINO .pth, safetensors).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["random_init", "pixels"])]
    weights: Option<PathBuf>,
    /// Baseline: a randomly initialised ViT (--arch, --patch-size).
    #[arg(long, conflicts_with = "pixels")]
    random_init: bool,
    /// Baseline: raw pixels of a --size crop.
    #[arg(long)]
    pixels: bool,
    /// Input side in pixels (default: the run's global view size; 224 for --weights;
    /// 96 for --random-init; 32 for --pixels).
    #[arg(long, value_name = "PX")]
    size: Option<u32>,
    /// Backbone of --random-init.
    #[arg(long, value_enum, default_value = "vit-tiny")]
    arch: ArchArg,
    /// Patch size of --random-init.
    #[arg(long, default_value_t = 16)]
    patch_size: usize,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: EvalCommand, workspace: Option<&Path>) -> Result<()> {
    match cmd {
        EvalCommand::Knn(args) => super::on_compute_pool(|| knn(&args, workspace))?,
    }
}

fn embedder(
    args: &KnnArgs,
    workspace: Option<&Path>,
    device: &candle_core::Device,
) -> Result<Embedder> {
    if let Some(weights) = &args.weights {
        return Ok(Embedder::from_weights(
            weights,
            args.size.unwrap_or(224),
            device,
        )?);
    }
    if args.random_init {
        let cfg = VitConfig::preset(args.arch.into(), args.patch_size);
        return Ok(Embedder::random(&cfg, args.size.unwrap_or(96), 0, device)?);
    }
    let run = match &args.model {
        Some(run) => run.clone(),
        None => {
            let ws = Workspace::open(workspace)?;
            match ws.config()?.current_model {
                Some(run) => run,
                None => bail!("no model: train one first, or pass --model, --weights, --random-init or --pixels"),
            }
        }
    };
    let mut e = Embedder::from_run(&run, device)?;
    if let Some(size) = args.size {
        e = e.with_size(size);
    }
    Ok(e)
}

fn knn(args: &KnnArgs, workspace: Option<&Path>) -> Result<()> {
    let device = device_from(args.device)?;
    let set = LabelledSet::open(&args.dir)?;
    let model;
    let features = if args.pixels {
        Features::Pixels {
            size: args.size.unwrap_or(32),
        }
    } else {
        model = embedder(args, workspace, &device)?;
        Features::Model(&model)
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{prefix} {wide_bar} {pos}/{len} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    bar.set_prefix("train");
    let train = split_features(&set.train, &features, &device, &mut progress)?;
    bar.set_prefix("test");
    let test = split_features(&set.test, &features, &device, &mut progress)?;
    bar.finish_and_clear();
    let result = knn_classify(
        &train,
        &set.train.labels,
        &test,
        &set.test.labels,
        args.k,
        args.temperature,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "k-NN (k={}) on {} classes: top-1 {:.3}, top-5 {:.3} ({} train, {} test photos)",
            result.k,
            set.classes.len(),
            result.top1,
            result.top5,
            result.n_train,
            result.n_test
        );
    }
    Ok(())
}
