//! Model-only speed measurements on synthetic inputs, comparable with the official
//! PyTorch figures in `shared/reference/torch-cpu.md` (same configuration, random
//! inputs, warm-up steps, median of the timed steps).

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::model::{Arch, Backbone, BackboneConfig};
use crate::train::config::{Preset, TrainConfig};
use crate::train::step::{DinoState, StepSchedule, StepTimes};
use crate::{Error, Result};

/// What to time.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainBenchConfig {
    /// Backbone.
    pub arch: Arch,
    /// Patch size.
    pub patch_size: usize,
    /// Global view side.
    pub global_size: usize,
    /// Local view side.
    pub local_size: usize,
    /// Local views per image.
    pub local_crops: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Head prototypes.
    pub out_dim: usize,
    /// Student stochastic depth.
    pub drop_path: f64,
    /// Untimed steps.
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// bf16 products where the CPU has AMX (ViT only; student and teacher).
    pub bf16: bool,
}

/// The result, as `bench train --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBenchReport {
    /// Median seconds per step.
    pub median_step_s: f64,
    /// Source images per second (batch size / median step).
    pub img_per_s: f64,
    /// Median seconds of each phase.
    pub breakdown: StepTimes,
    /// Every timed step, in order.
    pub step_s: Vec<f64>,
    /// Threads the CPU kernels use.
    pub threads: usize,
    /// Where it ran (`cpu`, `cuda:0`).
    pub device: String,
    /// Whether the ViT's linear layers ran in bf16 on AMX.
    pub bf16: bool,
    /// The instruction set our CPU kernels use (`DINO_CURATE_ISA` caps it).
    pub isa: &'static str,
}

/// The median of `values` (sorted in place; the mean of the middle two for an even count,
/// NaN for none).
pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => 0.5 * (values[n / 2 - 1] + values[n / 2]),
    }
}

fn synthetic_views(cfg: &TrainBenchConfig, device: &Device) -> Result<Vec<Tensor>> {
    let sizes = std::iter::repeat_n(cfg.global_size, 2)
        .chain(std::iter::repeat_n(cfg.local_size, cfg.local_crops));
    sizes
        .map(|s| Ok(Tensor::randn(0f32, 1., (cfg.batch_size, 3, s, s), device)?))
        .collect()
}

fn bench_state(cfg: &TrainBenchConfig, device: &Device) -> Result<DinoState> {
    let train = TrainConfig {
        arch: cfg.arch,
        patch_size: cfg.patch_size,
        global_size: cfg.global_size as u32,
        local_size: cfg.local_size as u32,
        local_crops: cfg.local_crops,
        out_dim: cfg.out_dim,
        head_hidden: 2048,
        head_bottleneck: 256,
        batch_size: cfg.batch_size,
        drop_path: cfg.drop_path,
        ..TrainConfig::preset(Preset::Cpu)
    };
    let state = DinoState::new(&train, device)?;
    state.set_bf16(cfg.bf16);
    Ok(state)
}

/// Runs `warmup + steps` DINO steps on random inputs; `progress(i, total, seconds)` is
/// called after each.
pub fn bench_train(
    cfg: &TrainBenchConfig,
    device: &Device,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<TrainBenchReport> {
    if cfg.steps == 0 || cfg.batch_size == 0 {
        return Err(Error::Config(
            "bench needs at least one step and one image".into(),
        ));
    }
    let mut state = bench_state(cfg, device)?;
    let bf16 = state.student.backbone.computes_bf16(cfg.bf16, device);
    let views = synthetic_views(cfg, device)?;
    let mut rng = StdRng::seed_from_u64(0);
    let sched = StepSchedule {
        // epoch 1: the last layer trains too, as in most of a run
        epoch: 1,
        lr: 1e-4,
        weight_decay: 0.04,
        momentum: 0.996,
        teacher_temp: 0.04,
        last_layer_frozen: false,
        backbone_frozen: false,
    };
    let total = cfg.warmup + cfg.steps;
    let mut timed = Vec::with_capacity(cfg.steps);
    for i in 0..total {
        let report = state.step(&views, sched, &mut rng)?;
        progress(i + 1, total, report.times.total_s());
        if i >= cfg.warmup {
            timed.push(report.times);
        }
    }
    let phase = |f: fn(&StepTimes) -> f64| median(&mut timed.iter().map(f).collect::<Vec<_>>());
    let breakdown = StepTimes {
        teacher_s: phase(|t| t.teacher_s),
        student_s: phase(|t| t.student_s),
        backward_s: phase(|t| t.backward_s),
        update_s: phase(|t| t.update_s),
    };
    let step_s: Vec<f64> = timed.iter().map(StepTimes::total_s).collect();
    let median_step_s = median(&mut step_s.clone());
    Ok(TrainBenchReport {
        median_step_s,
        img_per_s: cfg.batch_size as f64 / median_step_s,
        breakdown,
        step_s,
        threads: candle_core::utils::get_num_threads(),
        device: crate::device::device_name(device),
        bf16,
        isa: crate::model::isa::in_use().name(),
    })
}

/// What `bench embed` times: the backbone's eval forward (the CLS vector) on random
/// square images, as indexing runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedBenchConfig {
    /// Backbone.
    pub arch: Arch,
    /// Patch size.
    pub patch_size: usize,
    /// Input side in pixels.
    pub size: usize,
    /// Images per forward.
    pub batch_size: usize,
    /// Untimed batches.
    pub warmup: usize,
    /// Timed batches.
    pub batches: usize,
    /// bf16 products where the CPU has AMX (ViT only).
    pub bf16: bool,
}

/// The result, as `bench embed --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedBenchReport {
    /// Median seconds per batch.
    pub median_batch_s: f64,
    /// Images per second (batch size / median batch time).
    pub img_per_s: f64,
    /// Every timed batch, in order.
    pub batch_s: Vec<f64>,
    /// Threads the CPU kernels use.
    pub threads: usize,
    /// Where it ran.
    pub device: String,
    /// Whether the linear layers ran in bf16 on AMX.
    pub bf16: bool,
    /// The instruction set our CPU kernels use (`DINO_CURATE_ISA` caps it).
    pub isa: &'static str,
}

/// Runs `warmup + batches` forwards of a randomly initialised backbone; `progress(i,
/// total, seconds)` is called after each.
pub fn bench_embed(
    cfg: &EmbedBenchConfig,
    device: &Device,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<EmbedBenchReport> {
    if cfg.batches == 0 || cfg.batch_size == 0 {
        return Err(Error::Config(
            "bench needs at least one batch and one image".into(),
        ));
    }
    let net_cfg = match (cfg.arch.vit(), cfg.arch.resnet()) {
        (Some(v), _) => BackboneConfig::Vit(crate::model::VitConfig::preset(v, cfg.patch_size)),
        (None, Some(r)) => BackboneConfig::ResNet(r),
        (None, None) => unreachable!("every arch is a ViT or a ResNet"),
    };
    let pb = crate::model::ParamBuilder::frozen(device, 0);
    let backbone = Backbone::new(&pb, &net_cfg)?;
    backbone.freeze();
    backbone.set_bf16_inference(cfg.bf16);
    let bf16 = backbone.computes_bf16(cfg.bf16, device);
    let input = Tensor::randn(0f32, 1., (cfg.batch_size, 3, cfg.size, cfg.size), device)?;
    let total = cfg.warmup + cfg.batches;
    let mut timed = Vec::with_capacity(cfg.batches);
    for i in 0..total {
        let start = std::time::Instant::now();
        let cls = backbone.forward(&input, None, false)?;
        // wait for the device (a no-op on the CPU)
        let _ = cls.sum_all()?.to_scalar::<f32>()?;
        let secs = start.elapsed().as_secs_f64();
        progress(i + 1, total, secs);
        if i >= cfg.warmup {
            timed.push(secs);
        }
    }
    let median_batch_s = median(&mut timed.clone());
    Ok(EmbedBenchReport {
        median_batch_s,
        img_per_s: cfg.batch_size as f64 / median_batch_s,
        batch_s: timed,
        threads: candle_core::utils::get_num_threads(),
        device: crate::device::device_name(device),
        bf16,
        isa: crate::model::isa::in_use().name(),
    })
}
