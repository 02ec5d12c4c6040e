//! `dino-curate train PATH...`

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::{device_from, ArchArg, DeviceArg};
use dino_curate::device::device_name;
use dino_curate::released::{self, ModelCache, ModelError, ReleasedModel, DEFAULT_MODEL};
use dino_curate::train::config::{
    Augment, LossKind, OptimizerKind, Preset, TeacherNorm, TrainConfig,
};
use dino_curate::train::plan::{format_duration, parse_duration, Budget};
use dino_curate::train::trainer::{train, TrainEvent, TrainOptions, TrainSummary};
use dino_curate::watchdog::{StallPolicy, Watchdog};
use dino_curate::workspace::{ModelChoice, Workspace};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Photo folders (or files) to learn from; searched recursively.
    #[arg(required_unless_present = "resume", value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// The released model to adapt to the photos (dino-vits16, dino-vits8, dino-vitb16,
    /// dino-vitb8, dino-resnet50; downloaded once): both networks start from it with a
    /// fresh head, which trains alone for the first tenth of the steps; then a low
    /// learning rate and teacher momentum 0.9995. 224/96-px views. At the end, the adapted
    /// model replaces the released one for `index` only if it is better on held-out
    /// photos (docs/training.md). Default: dino-vits16, for 30 minutes on a CPU and 10
    /// epochs on a GPU unless a budget is given.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["from_scratch", "init"])]
    model: Option<String>,
    /// Learn from nothing, as the paper does: for GPUs and large collections (on a CPU,
    /// no budget a user would give learns features better than raw pixels).
    #[arg(long, conflicts_with = "init")]
    from_scratch: bool,
    /// From scratch, the starting settings: `cpu` (ViT-Tiny, small views) or `gpu`
    /// (ViT-S/16, 224/96); chosen by device when omitted. Every flag below overrides it.
    #[arg(long, value_enum)]
    preset: Option<PresetArg>,
    /// Train only the backbone's last N transformer blocks and its final norm (ExPLoRA
    /// unfreezes 1-2); default: all.
    #[arg(long, value_name = "N")]
    train_blocks: Option<usize>,
    /// Share of the first steps in which only the head learns (0.1 when adapting, 0 from
    /// scratch).
    #[arg(long, value_name = "SHARE")]
    freeze_backbone: Option<f64>,
    /// Backbone: a ViT size, or torchvision's resnet18/resnet50 (BatchNorm in training
    /// mode in student and teacher; --patch-size, --depth and drop-path do not apply).
    #[arg(long, value_enum)]
    arch: Option<ArchArg>,
    /// Patch size in pixels (8 or 16 for the official models; ViT only).
    #[arg(long)]
    patch_size: Option<usize>,
    /// Transformer blocks (12 in every official model).
    #[arg(long)]
    depth: Option<usize>,
    /// Train for this many passes over the collection (the official schedules, in epochs).
    #[arg(long, conflicts_with_all = ["max_steps", "time"])]
    epochs: Option<usize>,
    /// Train for this many steps; every schedule spans them.
    #[arg(long, value_name = "N", conflicts_with = "time")]
    max_steps: Option<u64>,
    /// Train for this long (e.g. 90s, 30m, 2h, 1h30m): the step count is fixed after a few
    /// measured steps and every schedule spans it.
    #[arg(long, value_name = "DURATION", value_parser = parse_time)]
    time: Option<f64>,
    /// Images per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Side of the two global views in pixels.
    #[arg(long, value_name = "PX")]
    global_size: Option<u32>,
    /// Side of the local views in pixels.
    #[arg(long, value_name = "PX")]
    local_size: Option<u32>,
    /// Local views per image (0 disables multi-crop).
    #[arg(long)]
    local_crops: Option<usize>,
    /// Prototypes of the DINO head (default: from the collection size, 4096 to 65536).
    #[arg(long)]
    out_dim: Option<usize>,
    /// Peak learning rate for a batch of 256 (scaled with the batch size).
    #[arg(long)]
    lr: Option<f64>,
    /// Warm-up epochs of the learning rate.
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// Teacher temperature.
    #[arg(long)]
    teacher_temp: Option<f64>,
    /// Teacher temperature at the start, rising linearly to --teacher-temp.
    #[arg(long, value_name = "T")]
    warmup_teacher_temp: Option<f64>,
    /// Epochs of that rise (with --time or --max-steps: that share of --epochs).
    #[arg(long, value_name = "EPOCHS")]
    warmup_teacher_temp_epochs: Option<usize>,
    /// Epochs with the head's last layer frozen (with --time or --max-steps: that share of
    /// --epochs).
    #[arg(long, value_name = "EPOCHS")]
    freeze_last_layer: Option<usize>,
    /// Let the head's prototypes learn their norms (official `norm_last_layer=False`).
    #[arg(long)]
    no_norm_last_layer: bool,
    /// Learning rate at the end of the cosine.
    #[arg(long)]
    min_lr: Option<f64>,
    /// Weight decay at the start (cosine to --weight-decay-end).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Weight decay at the end.
    #[arg(long)]
    weight_decay_end: Option<f64>,
    /// Teacher EMA momentum at the start (cosine to --momentum-teacher-end).
    #[arg(long)]
    momentum_teacher: Option<f64>,
    /// Teacher EMA momentum at the end (1 officially; the start value keeps it constant).
    #[arg(long, value_name = "M")]
    momentum_teacher_end: Option<f64>,
    /// The student's optimizer: `adamw` (the ViT recipe) or `sgd` (momentum 0.9, the usual
    /// choice for a ResNet; give it --lr, e.g. 0.06, and --weight-decay, e.g. 5e-4).
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerArg>,
    /// Student stochastic-depth rate (0.1 officially).
    #[arg(long)]
    drop_path: Option<f64>,
    /// Seed of every random choice.
    #[arg(long)]
    seed: Option<u64>,
    /// Write a checkpoint every N steps (and at each epoch end).
    #[arg(long, value_name = "N")]
    checkpoint_every: Option<u64>,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Start both backbones from these weights (an official DINO .pth or a dino-curate file).
    #[arg(long, value_name = "WEIGHTS")]
    init: Option<PathBuf>,
    /// Continue the workspace's current run from its last checkpoint, exactly, to the end
    /// of its original plan.
    #[arg(long, conflicts_with_all = ["epochs", "max_steps", "time"])]
    resume: bool,
    /// Memory for decoded photos kept between epochs, in MiB.
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    cache_mb: u64,
    /// Weight of DINOv2's KoLeo regulariser, which spreads unrelated photos apart in the
    /// backbone's feature space (DINOv2 uses 0.1; 0: off).
    #[arg(long, value_name = "WEIGHT")]
    koleo: Option<f64>,
    /// Augmentations: the paper's (`dino`), or those plus the edits people make to photos
    /// (`curation`: 90° turns, aspect changes, borders, letterbox, text, JPEG re-encoding).
    #[arg(long, value_enum)]
    augment: Option<AugmentArg>,
    /// Ablation: the teacher copies the student every step (no momentum encoder).
    #[arg(long)]
    no_momentum_teacher: bool,
    /// Ablation: Sinkhorn-Knopp normalisation of the teacher instead of centring.
    #[arg(long)]
    sinkhorn: bool,
    /// Ablation: the objective (`mse` instead of DINO's cross-entropy).
    #[arg(long, value_enum, default_value = "ce")]
    loss: LossArg,
    /// Ablation: a 2-layer MLP predictor on the student output.
    #[arg(long)]
    predictor: bool,
    /// BatchNorm in the head's hidden layers (official --use_bn_in_head).
    #[arg(long)]
    head_bn: bool,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PresetArg {
    /// ViT-Tiny/16, 96/48-px views: learns on a laptop CPU.
    Cpu,
    /// ViT-S/16, 224/96-px views, the paper's setup.
    Gpu,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OptimizerArg {
    /// AdamW, β = (0.9, 0.999).
    Adamw,
    /// SGD with momentum 0.9.
    Sgd,
}

impl From<OptimizerArg> for OptimizerKind {
    fn from(arg: OptimizerArg) -> Self {
        match arg {
            OptimizerArg::Adamw => OptimizerKind::Adamw,
            OptimizerArg::Sgd => OptimizerKind::Sgd,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AugmentArg {
    /// The paper's augmentations.
    Dino,
    /// The paper's plus edits people make to photos, for copy-robust features.
    Curation,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LossArg {
    /// Cross-entropy between teacher and student (DINO).
    Ce,
    /// Mean squared error between the distributions.
    Mse,
}

fn parse_time(text: &str) -> std::result::Result<f64, String> {
    parse_duration(text).map_err(|e| match e {
        dino_curate::Error::Config(why) => why,
        other => other.to_string(),
    })
}

/// The default budget of an adaptation on a CPU, when none is given.
const CPU_ADAPT_SECONDS: f64 = 1800.0;

fn config_from(
    args: &TrainArgs,
    device: &candle_core::Device,
    released: Option<&ReleasedModel>,
) -> TrainConfig {
    let preset = match args.preset {
        Some(PresetArg::Cpu) => Preset::Cpu,
        Some(PresetArg::Gpu) => Preset::Gpu,
        None if device.is_cuda() => Preset::Gpu,
        None => Preset::Cpu,
    };
    let mut c = match released {
        Some(m) => TrainConfig::adapt(m.name, &m.backbone_config(), !device.is_cuda()),
        None => TrainConfig::preset(preset),
    };
    let no_budget = args.epochs.is_none() && args.max_steps.is_none() && args.time.is_none();
    if released.is_some() && !device.is_cuda() && no_budget {
        c.time_budget_s = CPU_ADAPT_SECONDS;
    }
    macro_rules! set {
        ($($field:ident),*) => { $(if let Some(v) = args.$field { c.$field = v.into(); })* };
    }
    set!(
        arch,
        patch_size,
        depth,
        epochs,
        max_steps,
        batch_size,
        global_size,
        local_size,
        local_crops
    );
    set!(
        out_dim,
        lr,
        warmup_epochs,
        teacher_temp,
        momentum_teacher,
        seed,
        checkpoint_every
    );
    set!(
        koleo,
        warmup_teacher_temp_epochs,
        freeze_last_layer,
        min_lr,
        weight_decay,
        weight_decay_end,
        drop_path,
        momentum_teacher_end,
        optimizer
    );
    if let Some(t) = args.time {
        c.time_budget_s = t;
    }
    if let Some(n) = args.train_blocks {
        c.train_blocks = n;
    }
    if let Some(share) = args.freeze_backbone {
        c.freeze_backbone_share = share;
    }
    c.warmup_teacher_temp = args
        .warmup_teacher_temp
        .unwrap_or(c.warmup_teacher_temp.min(c.teacher_temp));
    c.norm_last_layer &= !args.no_norm_last_layer;
    c.no_momentum_teacher = args.no_momentum_teacher;
    c.teacher_norm = if args.sinkhorn {
        TeacherNorm::Sinkhorn
    } else {
        TeacherNorm::Centering
    };
    c.loss = match args.loss {
        LossArg::Ce => LossKind::Ce,
        LossArg::Mse => LossKind::Mse,
    };
    c.predictor = args.predictor;
    match args.augment {
        Some(AugmentArg::Dino) => c.augment = Augment::Dino,
        Some(AugmentArg::Curation) => c.augment = Augment::Curation,
        None => {}
    }
    c.head_bn = args.head_bn;
    if c.local_crops == 0 {
        // The official advice without multi-crop: a wider range of global crop scales.
        c.global_scale = (0.14, 1.0);
    }
    c
}

fn absolute(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    paths
        .iter()
        .map(|p| std::path::absolute(p).with_context(|| format!("{}", p.display())))
        .collect()
}

pub fn run(args: &TrainArgs, workspace: Option<&Path>) -> Result<()> {
    let ws = Workspace::open(workspace)?;
    let mut ws_cfg = ws.config()?;
    let device = device_from(args.device)?;
    let (run_dir, roots) = if args.resume {
        let Some(run) = ws_cfg.current_model.clone() else {
            bail!(
                "nothing to resume: no run recorded in {}",
                ws.root().display()
            );
        };
        let roots = if args.paths.is_empty() {
            ws_cfg.roots.clone()
        } else {
            absolute(&args.paths)?
        };
        (run, roots)
    } else {
        (ws.new_run_dir()?, absolute(&args.paths)?)
    };
    let start = if args.resume {
        Start::Resume
    } else {
        starting_point(args)?
    };
    let (released, init) = match &start {
        Start::Released(m, path) => (Some(*m), Some(path.clone())),
        Start::Weights(path) => (None, Some(path.clone())),
        Start::Scratch | Start::Resume => (None, None),
    };
    ws_cfg.roots = roots.clone();
    ws_cfg.current_model = Some(run_dir.clone());
    ws.save_config(&ws_cfg)?;
    let opts = TrainOptions {
        config: config_from(args, &device, released),
        roots,
        run_dir: run_dir.clone(),
        device: device.clone(),
        resume: args.resume,
        init,
        cache_bytes: args.cache_mb.saturating_mul(1 << 20),
        stop_after: None,
        bf16: dino_curate::model::bf16_default(),
    };
    let what = match released {
        Some(m) => format!("adapting {} to your photos", m.name),
        None if args.resume => "resuming".to_owned(),
        None => "training".to_owned(),
    };
    eprintln!(
        "{what} on {} into {}",
        device_name(&device),
        run_dir.display()
    );
    let watchdog = Watchdog::start("train", StallPolicy::from_env())
        .context("cannot start the watchdog thread")?;
    let summary = super::on_compute_pool(|| train_with_progress(&opts, &watchdog))??;
    report(&summary, args.json)?;
    decide_index_model(&ws, &summary)
}

/// What both networks start from.
#[derive(Debug)]
enum Start {
    /// A released backbone (its cached file).
    Released(&'static ReleasedModel, PathBuf),
    /// A weights file given with --init.
    Weights(PathBuf),
    /// Random initialisation.
    Scratch,
    /// The run's own checkpoint.
    Resume,
}

/// The start `args` ask for; a released model that cannot be had for lack of a network
/// means training from scratch, said in one line.
fn starting_point(args: &TrainArgs) -> Result<Start> {
    if let Some(init) = &args.init {
        return Ok(Start::Weights(init.clone()));
    }
    if args.from_scratch {
        return Ok(Start::Scratch);
    }
    if args.preset.is_some()
        || args.arch.is_some()
        || args.patch_size.is_some()
        || args.depth.is_some()
    {
        bail!(
            "--preset, --arch, --patch-size and --depth choose the network of a \
             --from-scratch or --init run; an adaptation takes the released model's (--model)"
        );
    }
    let name = args.model.as_deref().unwrap_or(DEFAULT_MODEL);
    let model = released::find(name)
        .with_context(|| format!("no released model {name} (known: {})", released::names()))?;
    let cache = ModelCache::from_env()?;
    match super::models::fetch_with_progress(&cache, model) {
        Ok(path) => Ok(Start::Released(model, path)),
        Err(e @ ModelError::Offline { .. }) => {
            eprintln!("{e}: training from scratch instead (--from-scratch)");
            Ok(Start::Scratch)
        }
        Err(e) => Err(e.into()),
    }
}

/// After an adaptation, `index` uses the adapted model only if the verdict says it is
/// better than the released start; otherwise the workspace keeps what it had.
fn decide_index_model(ws: &Workspace, summary: &TrainSummary) -> Result<()> {
    let Some(released) = &summary.adapted_from else {
        eprintln!("to index with this model: dino-curate index --model trained");
        return Ok(());
    };
    let better = summary.signal.as_ref().is_some_and(|s| s.better);
    if better {
        let mut cfg = ws.config()?;
        cfg.model = Some(ModelChoice::Trained);
        ws.save_config(&cfg)?;
        eprintln!(
            "the adapted model is better than {released} on your held-out photos:              `dino-curate index` uses it from now on"
        );
    } else {
        eprintln!(
            "the adapted model is not better than {released} on your held-out photos:              `dino-curate index` keeps {released}"
        );
    }
    Ok(())
}

fn train_with_progress(opts: &TrainOptions, watchdog: &Watchdog) -> Result<TrainSummary> {
    let reading =
        ProgressBar::new(0).with_style(style("reading photos {pos}/{len} {wide_bar} {eta}"));
    let reading_progress = |done: usize, total: usize| {
        reading.set_length(total as u64);
        reading.set_position(done as u64);
        watchdog.stage(format!("reading photos ({done} of {total})"));
    };
    let bar = ProgressBar::hidden();
    let mut shown_budget = Budget::Epochs(0);
    let mut on_event = |event: TrainEvent<'_>| match event {
        TrainEvent::Started {
            images,
            skipped,
            start_step,
            end_step,
            steps_per_epoch,
            budget,
        } => {
            reading.finish_and_clear();
            let steps = end_step.map_or("steps to be measured".into(), |e| {
                format!("steps {start_step}..{e}")
            });
            eprintln!(
                "{images} photos, {} skipped; budget {}: {steps}, {steps_per_epoch} per epoch",
                skipped.len(),
                budget.describe(),
            );
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_style(style("{prefix} {wide_bar} {pos}/{len} {msg} eta {eta}"));
            bar.set_length(end_step.unwrap_or(0));
            bar.set_position(start_step);
            bar.set_prefix(budget_prefix(budget, 0));
            shown_budget = budget;
            bar.reset_eta();
            watchdog.stage(format!("training from step {start_step}"));
        }
        TrainEvent::Planned { end_step, step_s } => {
            bar.set_length(end_step);
            bar.suspend(|| {
                eprintln!(
                    "measured {step_s:.2} s/step: the budget holds {end_step} steps, every schedule spans them"
                )
            });
            bar.reset_eta();
        }
        TrainEvent::Step(m) => {
            watchdog.beat(format!("training (step {} done)", m.step));
            bar.set_position(m.step);
            bar.set_prefix(budget_prefix(shown_budget, m.epoch));
            bar.set_message(format!(
                "loss {:.4} lr {:.2e} {:.1} img/s wait {:.0} ms",
                m.loss,
                m.lr,
                m.img_per_s,
                m.data_wait_s * 1e3
            ));
        }
        TrainEvent::Checkpoint { step } => {
            watchdog.stage(format!("training (checkpoint of step {step} written)"))
        }
    };
    let result = train(opts, &reading_progress, &mut on_event);
    bar.finish();
    Ok(result?)
}

/// The bar's prefix: the epoch, and the budget it counts against.
fn budget_prefix(budget: Budget, epoch: usize) -> String {
    match budget {
        Budget::Epochs(total) => format!("epoch {epoch}/{total}"),
        Budget::Steps(_) => format!("epoch {epoch}"),
        Budget::Seconds(s) => format!("{} budget, epoch {epoch}", format_duration(s)),
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn report(summary: &TrainSummary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
        return Ok(());
    }
    for s in &summary.skipped {
        eprintln!("skipped {}: {}", s.path, s.reason);
    }
    println!(
        "trained {} steps ({} epochs) on {} photos, last loss {}; checkpoint {}",
        summary.steps,
        summary.epochs,
        summary.images,
        summary.last_loss.map_or("-".into(), |l| format!("{l:.4}")),
        summary.checkpoint.display()
    );
    if let Some(signal) = &summary.signal {
        println!("{}", signal.describe());
    }
    Ok(())
}
