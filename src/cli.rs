//! Command-line arguments (clap derive: doc comments are the help) and dispatch.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use dino_curate::bench::{self, TrainBenchConfig};
use dino_curate::device::{device_name, select_device, DeviceChoice};
use dino_curate::model::VitArch;

/// Learn image features with DINO on your own photos, then curate the collection.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure speed on synthetic inputs (no photos needed).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time full DINO training steps (teacher + student forward, loss, backward, AdamW, EMA).
    Train(BenchTrainArgs),
}

#[derive(Debug, Args)]
struct BenchTrainArgs {
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

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DeviceArg {
    /// A CUDA GPU when this build has CUDA and one works, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU (error if none).
    Cuda,
}

impl From<DeviceArg> for DeviceChoice {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Auto => DeviceChoice::Auto,
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::Cuda => DeviceChoice::Cuda,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ArchArg {
    /// ViT-Tiny: 192-d, 3 heads.
    #[value(name = "vit-tiny")]
    Tiny,
    /// ViT-Small: 384-d, 6 heads.
    #[value(name = "vit-small")]
    Small,
    /// ViT-Base: 768-d, 12 heads.
    #[value(name = "vit-base")]
    Base,
}

impl From<ArchArg> for VitArch {
    fn from(arch: ArchArg) -> Self {
        match arch {
            ArchArg::Tiny => VitArch::VitTiny,
            ArchArg::Small => VitArch::VitSmall,
            ArchArg::Base => VitArch::VitBase,
        }
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bench(BenchCommand::Train(args)) => bench_train(args),
    }
}

fn bench_train(args: BenchTrainArgs) -> Result<()> {
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
    };
    let selected = select_device(args.device.into())?;
    if let Some(notice) = &selected.notice {
        eprintln!("{notice}");
    }
    let device = selected.device;
    eprintln!("benchmarking on {}", device_name(&device));
    let report = bench::bench_train(&cfg, &device, |i, total, secs| {
        eprintln!("step {i}/{total}: {secs:.3} s");
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "median step {:.3} s, {:.1} source img/s (teacher {:.3} s, student+loss {:.3} s, backward {:.3} s, update {:.3} s)",
            report.median_step_s,
            report.img_per_s,
            report.breakdown.teacher_s,
            report.breakdown.student_s,
            report.breakdown.backward_s,
            report.breakdown.update_s
        );
    }
    Ok(())
}
