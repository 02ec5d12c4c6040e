//! `dino-curate bench …`

use anyhow::Result;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};

use super::{device_from, ArchArg, DeviceArg};
use dino_curate::bench::{bench_embed, bench_train, EmbedBenchConfig, TrainBenchConfig};
use dino_curate::device::device_name;
use dino_curate::indexer::{read_without_model, ReadStages, StageClock};
use dino_curate::photo::JpegDecoder;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time full DINO training steps (teacher + student forward, loss, backward, AdamW, EMA).
    Train(BenchTrainArgs),
    /// Time the backbone's eval forward (what indexing runs per image).
    Embed(BenchEmbedArgs),
    /// Time the terminal UI's first frame and key redraws on a synthetic collection.
    Tui(super::tui::BenchTuiArgs),
    /// Time what `index` does to photos before the model (or only the decoding), on
    /// every core: photos/s and seconds per stage.
    Read(BenchReadArgs),
}

#[derive(Debug, Args)]
pub struct BenchReadArgs {
    /// Photo folders to read (nothing is written).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The model's input side the photos are decoded for.
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// Decode only, instead of every stage before the model (hash, decode, view,
    /// statistics, perceptual hash, keypoints, EXIF date).
    #[arg(long)]
    decode_only: bool,
    /// JPEG decoder: libjpeg-turbo (what `index` uses) or jpeg-decoder (pure Rust, the
    /// one before it).
    #[arg(long, value_enum, default_value = "libjpeg")]
    jpeg: JpegArg,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum JpegArg {
    Libjpeg,
    JpegDecoder,
}

#[derive(Debug, Args)]
pub struct BenchEmbedArgs {
    /// Backbone size.
    #[arg(long, value_enum, default_value = "vit-small")]
    arch: ArchArg,
    /// Patch size in pixels.
    #[arg(long, default_value_t = 16)]
    patch_size: usize,
    /// Input side in pixels.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Images per forward.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Untimed batches first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed batches (the median is reported).
    #[arg(long, default_value_t = 5)]
    batches: usize,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Backbone size.
    #[arg(long, value_enum, default_value = "vit-tiny")]
    arch: ArchArg,
    /// Patch size in pixels.
    #[arg(long, default_value_t = 16)]
    patch_size: usize,
    /// Side of the global views in pixels.
    #[arg(long, default_value_t = 96)]
    global_size: usize,
    /// Side of the local views in pixels.
    #[arg(long, default_value_t = 48)]
    local_size: usize,
    /// Number of local views per image.
    #[arg(long, default_value_t = 6)]
    local_crops: usize,
    /// Images per step.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Number of prototypes of the head.
    #[arg(long, default_value_t = 4096)]
    out_dim: usize,
    /// Student stochastic-depth rate.
    #[arg(long, default_value_t = 0.1)]
    drop_path: f64,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 7)]
    steps: usize,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Train(args) => bench_train_command(args),
        BenchCommand::Embed(args) => bench_embed_command(args),
        BenchCommand::Tui(args) => super::tui::bench(&args),
        BenchCommand::Read(args) => bench_read_command(&args),
    }
}

fn bench_read_command(args: &BenchReadArgs) -> Result<()> {
    let stages = match args.decode_only {
        true => ReadStages::Decode,
        false => ReadStages::AllButModel,
    };
    let jpeg = match args.jpeg {
        JpegArg::Libjpeg => JpegDecoder::Libjpeg,
        JpegArg::JpegDecoder => JpegDecoder::JpegDecoder,
    };
    let clock = Arc::new(StageClock::default());
    let start = Instant::now();
    let tally = super::on_compute_pool(|| {
        read_without_model(&args.paths, args.size, stages, jpeg, &clock)
    })??;
    let profile = clock.report(tally.photos, start.elapsed());
    if args.json {
        let mut value = serde_json::to_value(&profile)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("failed".into(), tally.failed.into());
            object.insert("threads".into(), rayon::current_num_threads().into());
        }
        println!("{value}");
    } else {
        print!("{profile}");
        if tally.failed > 0 {
            println!("{} files could not be read", tally.failed);
        }
    }
    Ok(())
}

fn bench_train_command(args: BenchTrainArgs) -> Result<()> {
    let cfg = TrainBenchConfig {
        arch: args.arch.into(),
        patch_size: args.patch_size,
        global_size: args.global_size,
        local_size: args.local_size,
        local_crops: args.local_crops,
        batch_size: args.batch_size,
        out_dim: args.out_dim,
        drop_path: args.drop_path,
        warmup: args.warmup,
        steps: args.steps,
        bf16: dino_curate::model::bf16_default(),
    };
    let device = device_from(args.device)?;
    eprintln!("benchmarking on {}", device_name(&device));
    let report = super::on_compute_pool(|| {
        bench_train(&cfg, &device, |i, total, secs| {
            eprintln!("step {i}/{total}: {secs:.3} s");
        })
    })??;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let b = &report.breakdown;
        println!(
            "median step {:.3} s, {:.1} source img/s (teacher {:.3} s, student+loss {:.3} s, backward {:.3} s, update {:.3} s; {} products)",
            report.median_step_s, report.img_per_s, b.teacher_s, b.student_s, b.backward_s, b.update_s,
            if report.bf16 { "bf16" } else { "f32" }
        );
    }
    Ok(())
}

fn bench_embed_command(args: BenchEmbedArgs) -> Result<()> {
    let cfg = EmbedBenchConfig {
        arch: args.arch.into(),
        patch_size: args.patch_size,
        size: args.size,
        batch_size: args.batch_size,
        warmup: args.warmup,
        batches: args.batches,
        bf16: dino_curate::model::bf16_default(),
    };
    let device = device_from(args.device)?;
    eprintln!("benchmarking on {}", device_name(&device));
    let report = super::on_compute_pool(|| {
        bench_embed(&cfg, &device, |i, total, secs| {
            eprintln!("batch {i}/{total}: {secs:.3} s");
        })
    })??;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "median batch {:.3} s, {:.1} img/s ({} products)",
            report.median_batch_s,
            report.img_per_s,
            if report.bf16 { "bf16" } else { "f32" }
        );
    }
    Ok(())
}
