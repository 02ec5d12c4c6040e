//! Model-only speed measurements on synthetic inputs, comparable with the official
//! PyTorch figures in `shared/reference/torch-cpu.md` (same configuration, random
//! inputs, warm-up steps, median of the timed steps).

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::model::{DinoNet, HeadConfig, ParamBuilder, VitArch, VitConfig};
use crate::train::loss::{DinoLoss, LossConfig};
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::step::{DinoState, StepConfig, StepSchedule, StepTimes};
use crate::{Error, Result};

/// What to time.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainBenchConfig {
    /// Backbone size.
    pub arch: VitArch,
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
}

fn median(values: &mut [f64]) -> f64 {
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
    let vit = VitConfig {
        drop_path_rate: cfg.drop_path,
        ..VitConfig::preset(cfg.arch, cfg.patch_size)
    };
    let head = HeadConfig::official(vit.embed_dim, cfg.out_dim);
    let student = DinoNet::new(&ParamBuilder::trainable(device, 0), &vit, &head)?;
    let teacher = DinoNet::new(&ParamBuilder::frozen(device, 0), &vit, &head)?;
    teacher.params().copy_from(student.params())?;
    let ncrops = 2 + cfg.local_crops;
    let loss = DinoLoss::new(LossConfig::official(cfg.out_dim, ncrops, 100), device)?;
    let optimizer = AdamW::new(AdamWConfig::default(), student.params().params().len());
    let step_cfg = StepConfig {
        n_global: 2,
        clip_grad: 3.0,
        freeze_last_layer: 1,
    };
    Ok(DinoState {
        student,
        teacher,
        loss,
        optimizer,
        cfg: step_cfg,
    })
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
    let views = synthetic_views(cfg, device)?;
    let mut rng = StdRng::seed_from_u64(0);
    let sched = StepSchedule {
        // epoch 1: the last layer trains too, as in most of a run
        epoch: 1,
        lr: 1e-4,
        weight_decay: 0.04,
        momentum: 0.996,
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
    })
}
