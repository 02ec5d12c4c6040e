//! Command-line arguments (clap derive: doc comments are the help) and dispatch.

mod attention;
mod bench;
mod curate;
mod eval;
mod index;
mod models;
mod train;
mod tui;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use dino_curate::device::DeviceChoice;
use dino_curate::model::Arch;

/// Curate an unlabelled photo collection with DINO features: near-duplicates, themes,
/// "more like this", outliers and diverse subsets.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Workspace folder (default: $DINO_CURATE_HOME, else $XDG_DATA_HOME/dino-curate).
    #[arg(long, global = true, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Compute in f32 even where the CPU has AMX (Intel Sapphire Rapids and later), on which
    /// a ViT's linear layers otherwise take bf16 inputs and sum in f32 when embedding (1.45-2x
    /// the rate) and training (weights, gradients and optimizer stay f32); features within
    /// noise on the evaluations (docs/benchmarks.md, docs/quality.md).
    #[arg(long, global = true)]
    f32: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Adapt the released DINO model to your photos, or train one from scratch.
    Train(Box<train::TrainArgs>),
    /// Embed a photo collection (the released DINO model by default; downloaded once), then
    /// keep it up to date: new and changed photos, moved ones, removed ones.
    Index(index::IndexArgs),
    /// Any image file's copies in the collection (as `dups` finds them), then its nearest photos.
    Search(curate::SearchArgs),
    /// Near-duplicate groups (exact copies included), each with the photo to keep.
    Dups(curate::DupsArgs),
    /// Visual themes (spherical k-means), each with a representative photo.
    Clusters(curate::ClustersArgs),
    /// The photos least like any other.
    Outliers(curate::OutliersArgs),
    /// A diverse subset of N photos (greedy k-center).
    Select(curate::SelectArgs),
    /// Blurry, dark, overexposed, tiny and blank photos.
    Quality(curate::QualityArgs),
    /// Move photos to the workspace trash (journaled; `undo` puts them back).
    Trash(curate::TrashArgs),
    /// Put back the photos of the last trash operation.
    Undo(curate::UndoArgs),
    /// Measure feature quality on a labelled folder.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Heat maps of the last block's CLS attention per head over a photo, and masks.
    Attention(attention::AttentionArgs),
    /// Browse clusters, review duplicates and search by example in the terminal.
    Tui(tui::TuiArgs),
    /// The released DINO models: which are downloaded, where, and their SHA-256.
    Models(models::ModelsArgs),
    /// Measure speed on synthetic inputs (no photos needed).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// `--arch` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ArchArg {
    /// ViT-Tiny: 192-d, 3 heads.
    #[value(name = "vit-tiny")]
    Tiny,
    /// ViT-Small: 384-d, 6 heads.
    #[value(name = "vit-small")]
    Small,
    /// ViT-Base: 768-d, 12 heads.
    #[value(name = "vit-base")]
    Base,
    /// torchvision's ResNet-18: 512-d, BatchNorm.
    #[value(name = "resnet18")]
    Resnet18,
    /// torchvision's ResNet-50: 2048-d, BatchNorm (the paper's ResNet).
    #[value(name = "resnet50")]
    Resnet50,
}

impl From<ArchArg> for Arch {
    fn from(arch: ArchArg) -> Self {
        match arch {
            ArchArg::Tiny => Arch::VitTiny,
            ArchArg::Small => Arch::VitSmall,
            ArchArg::Base => Arch::VitBase,
            ArchArg::Resnet18 => Arch::Resnet18,
            ArchArg::Resnet50 => Arch::Resnet50,
        }
    }
}

/// `--device` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DeviceArg {
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

/// Resolves `--device`, printing the fallback notice if there is one.
pub fn device_from(arg: DeviceArg) -> Result<candle_core::Device> {
    let selected = dino_curate::device::select_device(arg.into())?;
    if let Some(notice) = &selected.notice {
        eprintln!("{notice}");
    }
    Ok(selected.device)
}

/// Runs `f` on a worker of a rayon pool with one thread per core, so that the thread
/// driving the model is one of the compute threads instead of an extra one competing
/// with them (a third busy thread on two cores costs about a third of the speed).
pub fn on_compute_pool<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T> {
    let pool = rayon::ThreadPoolBuilder::new().build()?;
    Ok(pool.install(f))
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    dino_curate::model::isa::cap_from_env().map_err(anyhow::Error::msg)?;
    dino_curate::model::set_bf16_default(!cli.f32);
    match cli.command {
        Command::Train(args) => train::run(&args, cli.workspace.as_deref()),
        Command::Index(args) => index::run(&args, cli.workspace.as_deref()),
        Command::Search(a) => curate::search(&a, cli.workspace.as_deref()),
        Command::Dups(a) => curate::dups(&a, cli.workspace.as_deref()),
        Command::Clusters(a) => curate::clusters(&a, cli.workspace.as_deref()),
        Command::Outliers(a) => curate::outliers(&a, cli.workspace.as_deref()),
        Command::Select(a) => curate::select(&a, cli.workspace.as_deref()),
        Command::Quality(a) => curate::quality(&a, cli.workspace.as_deref()),
        Command::Trash(a) => curate::trash(&a, cli.workspace.as_deref()),
        Command::Undo(a) => curate::undo(&a, cli.workspace.as_deref()),
        Command::Eval(cmd) => eval::run(cmd, cli.workspace.as_deref()),
        Command::Attention(a) => attention::run(&a, cli.workspace.as_deref()),
        Command::Tui(a) => tui::run(&a, cli.workspace.as_deref()),
        Command::Models(a) => models::run(&a),
        Command::Bench(cmd) => bench::run(cmd),
    }
}
