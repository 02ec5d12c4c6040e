//! The training loop: collection → loader → DINO steps → metrics and checkpoints.
//! It never prints; it reports [`TrainEvent`]s to the caller.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use super::checkpoint::{self, Progress};
use super::config::{Augment, TrainConfig};
use super::data::{derive_seed, Collection, Loader, LoaderPlan, ProgressFn, Sample};
use super::plan::{steps_for_time, Budget, Plan, Schedules, CALIBRATION_STEPS};
use super::plot::{series_from_metrics, write_plot};
use super::signal::{check_sample, split_held_out, CheckViews, LearnedSignal};
use super::step::{DinoState, StepSchedule};
use super::views::ViewsConfig;
use crate::atomic::write_atomically;
use crate::bench::median;
use crate::model::weights::{backbone_tensors, read_weights};
use crate::photo::{DecodeOptions, Skipped, DEFAULT_MAX_PIXELS};
use crate::{Error, Result};

/// File names inside a run folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// One JSON line per step.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The plot of the metrics, written at the end of a run.
pub const PLOT_FILE: &str = "metrics.png";
/// The learned-signal check of the end of a run.
pub const SIGNAL_FILE: &str = "signal.json";

/// What to train, where, and from what.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The run's settings. On resume the checkpoint's are used, plan included.
    pub config: TrainConfig,
    /// Photo folders (or files).
    pub roots: Vec<PathBuf>,
    /// Folder of this run: checkpoint, metrics.
    pub run_dir: PathBuf,
    /// Device to compute on.
    pub device: Device,
    /// Continue from the run folder's checkpoint.
    pub resume: bool,
    /// Start both networks' backbones from these weights (official `.pth` or ours).
    pub init: Option<PathBuf>,
    /// Bytes of decoded photos kept in memory across epochs.
    pub cache_bytes: u64,
    /// End this session after this many steps of the run (as an interruption would: the
    /// plan and its schedules are unchanged, and `resume` continues it). `None`: run to
    /// the end of the plan.
    pub stop_after: Option<u64>,
    /// A ViT's linear layers with bf16 inputs and f32 sums where the CPU has AMX
    /// ([`DinoState::set_bf16`]).
    pub bf16: bool,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    /// Steps done after this one.
    pub step: u64,
    /// Epoch of this step.
    pub epoch: usize,
    /// DINO loss.
    pub loss: f32,
    /// Learning rate.
    pub lr: f64,
    /// Weight decay.
    pub wd: f64,
    /// Teacher momentum.
    pub momentum: f64,
    /// Teacher temperature.
    pub teacher_temp: f64,
    /// Images per second of this step (model time plus waiting for data).
    pub img_per_s: f64,
    /// Seconds the model waited for the loader.
    pub data_wait_s: f64,
    /// Seconds of the step itself.
    pub step_s: f64,
    /// Mean entropy of one image's teacher target (collapse to uniform: → ln K).
    pub target_entropy: f64,
    /// Entropy of the batch-mean teacher target (collapse to one prototype: → 0).
    pub batch_entropy: f64,
    /// The KoLeo regulariser (summed over the global views), when it is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub koleo: Option<f32>,
}

/// Progress reports.
#[derive(Debug)]
pub enum TrainEvent<'a> {
    /// The collection is open and the loop starts.
    Started {
        /// Usable photos.
        images: usize,
        /// Files left out.
        skipped: &'a [Skipped],
        /// First step of this session.
        start_step: u64,
        /// Steps of the whole run; `None` while a time budget is being measured.
        end_step: Option<u64>,
        /// Steps per epoch.
        steps_per_epoch: u64,
        /// What bounds the run.
        budget: Budget,
    },
    /// A time budget was turned into a step count.
    Planned {
        /// Steps of the whole run.
        end_step: u64,
        /// The measured seconds per step it was planned with.
        step_s: f64,
    },
    /// A step finished.
    Step(&'a StepMetrics),
    /// A checkpoint was written.
    Checkpoint {
        /// Steps it holds.
        step: u64,
    },
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Steps done in all (this session and before).
    pub steps: u64,
    /// Epochs reached.
    pub epochs: usize,
    /// Loss of the last step.
    pub last_loss: Option<f32>,
    /// The final checkpoint.
    pub checkpoint: PathBuf,
    /// The plot of loss and schedules.
    pub plot: PathBuf,
    /// Usable photos.
    pub images: usize,
    /// Files left out, with reasons.
    pub skipped: Vec<SkippedFile>,
    /// Seconds the model waited for data in this session.
    pub data_wait_s: f64,
    /// Seconds of this session's loop.
    pub elapsed_s: f64,
    /// Steps of the whole run as planned.
    pub planned_steps: u64,
    /// What bounded the run.
    pub budget: Budget,
    /// Whether the features moved from the run's start ([`crate::train::signal`]).
    pub signal: Option<LearnedSignal>,
    /// The released model the run adapted, if it did.
    pub adapted_from: Option<String>,
}

/// A left-out file in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedFile {
    /// Its path (lossy for non-UTF-8 names).
    pub path: String,
    /// Why.
    pub reason: String,
}

impl From<&Skipped> for SkippedFile {
    fn from(s: &Skipped) -> Self {
        Self {
            path: s.path.to_string_lossy().into_owned(),
            reason: s.reason.clone(),
        }
    }
}

fn views_config(cfg: &TrainConfig) -> ViewsConfig {
    ViewsConfig {
        global_size: cfg.global_size,
        local_size: cfg.local_size,
        local_crops: cfg.local_crops,
        global_scale: cfg.global_scale,
        local_scale: cfg.local_scale,
        curation: cfg.augment == Augment::Curation,
    }
}

/// Starts both backbones from a weights file.
fn init_backbones(state: &DinoState, path: &Path) -> Result<()> {
    let tensors = backbone_tensors(read_weights(path)?);
    for net in [&state.student, &state.teacher] {
        net.params()
            .load_prefixed("backbone.", &tensors)
            .map_err(|e| Error::Weights {
                path: path.to_path_buf(),
                reason: format!("does not fit the configured backbone: {e}"),
            })?;
    }
    Ok(())
}

/// Keeps the lines of `metrics.jsonl` for steps before `start_step` (a resumed run
/// rewrites the steps after its checkpoint).
fn truncate_metrics(path: &Path, start_step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= start_step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).map_err(|e| Error::io(path, e))
}

/// Refuses to checkpoint weights that are no longer finite (the previous checkpoint
/// stays the last good one).
fn ensure_finite(state: &DinoState, step: u64, ckpt_path: &Path) -> Result<()> {
    for p in state.student.params().params() {
        let sum = p
            .var
            .as_tensor()
            .sum_all()?
            .to_dtype(candle_core::DType::F32)?;
        if !sum.to_scalar::<f32>()?.is_finite() {
            return Err(Error::Diverged(format!(
                "after step {step}, {} is no longer finite; the last good checkpoint is {}",
                p.name,
                ckpt_path.display()
            )));
        }
    }
    Ok(())
}

/// Trains as `opts` says; `reading(done, total)` follows the first decoding pass (from
/// worker threads), `events` the loop. Returns the summary.
pub fn train(
    opts: &TrainOptions,
    reading: ProgressFn<'_>,
    events: &mut dyn FnMut(TrainEvent<'_>),
) -> Result<TrainSummary> {
    std::fs::create_dir_all(&opts.run_dir).map_err(|e| Error::io(&opts.run_dir, e))?;
    let ckpt_path = opts.run_dir.join(CHECKPOINT_FILE);
    let resumed = if opts.resume && ckpt_path.exists() {
        Some(checkpoint::load(&ckpt_path, &opts.device)?)
    } else {
        None
    };
    let cfg = resumed.as_ref().map_or(&opts.config, |c| &c.config).clone();
    cfg.validate()?;
    let started = Instant::now();

    let decode = DecodeOptions {
        max_pixels: DEFAULT_MAX_PIXELS,
        target_short_side: Some(cfg.global_size.saturating_mul(2)),
        ..DecodeOptions::default()
    };
    let mut collection = Collection::open(&opts.roots, decode, opts.cache_bytes, reading)?;
    let (training, held_out) = split_held_out(std::mem::take(&mut collection.samples), cfg.seed);
    collection.samples = training;
    let check = check_views(&collection, held_out, &cfg, &opts.device)?;
    let cfg = cfg.for_collection(collection.samples.len());
    let session = Session {
        opts,
        ckpt_path: &ckpt_path,
        started,
        check,
    };
    run_loop(&session, cfg, Arc::new(collection), resumed, events)
}

/// What a training session works with besides the configuration.
struct Session<'a> {
    opts: &'a TrainOptions,
    ckpt_path: &'a Path,
    started: Instant,
    check: Option<CheckViews>,
}

/// The learned-signal check of this run ([`check_sample`] decides its photos).
fn check_views(
    collection: &Collection,
    held_out: Vec<Sample>,
    cfg: &TrainConfig,
    device: &candle_core::Device,
) -> Result<Option<CheckViews>> {
    let (sample, is_held_out) = check_sample(&collection.samples, held_out, cfg.seed);
    CheckViews::new(
        &sample,
        is_held_out,
        &views_config(cfg),
        &collection.decode,
        cfg.seed,
        device,
    )
}

/// Where the loop stands: the plan, its schedules once it is fixed, and the step times
/// measured to fix a time budget.
struct Course {
    cfg: TrainConfig,
    plan: Plan,
    schedules: Option<Schedules>,
    measured_s: Vec<f64>,
    stop_after: Option<u64>,
}

impl Course {
    fn new(mut cfg: TrainConfig, steps_per_epoch: u64, stop_after: Option<u64>) -> Self {
        if matches!(Budget::of(&cfg), Budget::Seconds(_)) && cfg.planned_steps == 0 {
            cfg.calibration_steps = CALIBRATION_STEPS;
        }
        let plan = Plan::of(&cfg, steps_per_epoch);
        let schedules = plan.is_fixed().then(|| Schedules::new(&cfg, &plan));
        Self {
            cfg,
            plan,
            schedules,
            measured_s: Vec::new(),
            stop_after,
        }
    }

    /// The step after the last of this session (`u64::MAX` while a time budget is
    /// still being measured).
    fn session_end(&self) -> u64 {
        let stop = self.stop_after.unwrap_or(u64::MAX);
        if self.plan.is_fixed() {
            self.plan.total_steps.min(stop)
        } else {
            stop
        }
    }

    fn values(&self, step: u64) -> StepSchedule {
        match &self.schedules {
            Some(s) => s.at(step),
            None => Schedules::calibration(&self.cfg, step, self.plan.steps_per_epoch),
        }
    }

    /// Records a calibration step's seconds; once calibration is over, or a checkpoint is
    /// due (a checkpoint always holds a fixed plan), fixes the step count of the time
    /// budget and returns it with the step time it used.
    fn measured(
        &mut self,
        done: u64,
        seconds: f64,
        elapsed_s: f64,
        checkpoint_due: bool,
    ) -> Option<(u64, f64)> {
        if self.schedules.is_some() {
            return None;
        }
        self.measured_s.push(seconds);
        if done < self.cfg.calibration_steps && !checkpoint_due {
            return None;
        }
        // the first step pays for allocations and caches: leave it out when there are more
        let times = if self.measured_s.len() > 1 {
            &self.measured_s[1..]
        } else {
            &self.measured_s[..]
        };
        let step_s = median(&mut times.to_vec());
        self.cfg.planned_steps = steps_for_time(self.cfg.time_budget_s, elapsed_s, step_s, done);
        self.plan = Plan::of(&self.cfg, self.plan.steps_per_epoch);
        self.schedules = Some(Schedules::new(&self.cfg, &self.plan));
        Some((self.plan.total_steps, step_s))
    }
}

fn run_loop(
    session: &Session<'_>,
    cfg: TrainConfig,
    collection: Arc<Collection>,
    resumed: Option<checkpoint::Checkpoint>,
    events: &mut dyn FnMut(TrainEvent<'_>),
) -> Result<TrainSummary> {
    let (opts, ckpt_path, started) = (session.opts, session.ckpt_path, session.started);
    let steps_per_epoch = (collection.samples.len() / cfg.batch_size).max(1) as u64;
    let mut course = Course::new(cfg, steps_per_epoch, opts.stop_after);

    let mut state = DinoState::new(&course.cfg, &opts.device)?;
    state.set_bf16(opts.bf16);
    let mut progress = Progress {
        step: 0,
        epoch: 0,
        last_loss: None,
        start_agreement: None,
        start_rank_me: None,
    };
    match &resumed {
        Some(ckpt) => {
            ckpt.restore(&mut state)?;
            progress = ckpt.progress.clone();
        }
        None => {
            if let Some(init) = &opts.init {
                init_backbones(&state, init)?;
            }
            if let Some(check) = &session.check {
                let start = check.measure(&state.teacher)?;
                progress.start_agreement = Some(start.agreement);
                progress.start_rank_me = Some(start.rank_me);
            }
        }
    }
    let metrics_path = opts.run_dir.join(METRICS_FILE);
    truncate_metrics(&metrics_path, progress.step)?;
    let mut metrics_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;

    events(TrainEvent::Started {
        images: collection.samples.len(),
        skipped: &collection.skipped,
        start_step: progress.step,
        end_step: course.plan.is_fixed().then_some(course.plan.total_steps),
        steps_per_epoch,
        budget: Budget::of(&course.cfg),
    });
    let plan = LoaderPlan {
        start_step: progress.step,
        end_step: course.session_end(),
        steps_per_epoch,
        batch_size: course.cfg.batch_size,
        seed: course.cfg.seed,
        queue: 2,
    };
    let mut loader = Loader::start(
        Arc::clone(&collection),
        views_config(&course.cfg),
        plan,
        opts.device.clone(),
    );
    let loop_started = Instant::now();
    let mut data_wait_s = 0.0;
    let mut skipped = collection.skipped.clone();
    while progress.step < course.session_end() {
        let Some((batch, waited)) = loader.next_batch() else {
            break;
        };
        let batch = batch?;
        skipped.extend(batch.failed.iter().cloned());
        let step = batch.step;
        let sched = course.values(step);
        let mut rng = StdRng::seed_from_u64(derive_seed(course.cfg.seed, 0, step));
        let clock = Instant::now();
        let report = state
            .step(&batch.views, sched, &mut rng)
            .map_err(|e| match e {
                Error::Diverged(why) => Error::Diverged(format!(
                    "step {step}: {why}; the last good checkpoint is {}",
                    ckpt_path.display()
                )),
                other => other,
            })?;
        let step_s = clock.elapsed().as_secs_f64();
        let wait = waited.as_secs_f64();
        data_wait_s += wait;
        let metrics = StepMetrics {
            step: step + 1,
            epoch: sched.epoch,
            loss: report.loss,
            lr: sched.lr,
            wd: sched.weight_decay,
            momentum: sched.momentum,
            teacher_temp: sched.teacher_temp,
            img_per_s: batch.images as f64 / (step_s + wait).max(1e-9),
            data_wait_s: wait,
            step_s,
            target_entropy: report.targets.per_image,
            batch_entropy: report.targets.batch,
            koleo: report.koleo,
        };
        let line = serde_json::to_string(&metrics).map_err(|e| Error::Config(e.to_string()))?;
        writeln!(metrics_file, "{line}").map_err(|e| Error::io(&metrics_path, e))?;
        events(TrainEvent::Step(&metrics));
        progress = Progress {
            step: step + 1,
            epoch: ((step + 1) / steps_per_epoch) as usize,
            last_loss: Some(report.loss),
            ..progress
        };
        let epoch_end = (step + 1) % steps_per_epoch == 0;
        let every = course.cfg.checkpoint_every;
        let periodic = every > 0 && (step + 1) % every == 0;
        let due = epoch_end || periodic || step + 1 >= course.session_end();
        let elapsed_s = started.elapsed().as_secs_f64();
        if let Some((end_step, step_s)) = course.measured(step + 1, step_s + wait, elapsed_s, due) {
            events(TrainEvent::Planned { end_step, step_s });
        }
        if epoch_end || periodic || step + 1 >= course.session_end() {
            ensure_finite(&state, step + 1, ckpt_path)?;
            checkpoint::save(ckpt_path, &state, &course.cfg, &progress)?;
            events(TrainEvent::Checkpoint { step: step + 1 });
        }
    }
    if progress.step < course.session_end() {
        return Err(Error::Config("the data loader stopped early".into()));
    }
    drop(loader);
    drop(metrics_file);
    let signal = learned_signal(session, &state, &progress)?;
    let plot_path = opts.run_dir.join(PLOT_FILE);
    let caption = signal.as_ref().map(LearnedSignal::describe);
    write_plot(
        &series_from_metrics(&metrics_path)?,
        caption.as_deref(),
        &plot_path,
    )?;
    Ok(TrainSummary {
        steps: progress.step,
        epochs: progress.epoch,
        last_loss: progress.last_loss,
        checkpoint: ckpt_path.to_path_buf(),
        plot: plot_path,
        images: collection.samples.len(),
        skipped: skipped.iter().map(SkippedFile::from).collect(),
        data_wait_s,
        elapsed_s: loop_started.elapsed().as_secs_f64(),
        planned_steps: course.plan.total_steps,
        budget: Budget::of(&course.cfg),
        signal,
        adapted_from: course.cfg.adapted_from.clone(),
    })
}

/// The learned-signal check on the trained teacher against the run's start, also written
/// to the run folder's `signal.json`.
fn learned_signal(
    session: &Session<'_>,
    state: &DinoState,
    progress: &Progress,
) -> Result<Option<LearnedSignal>> {
    let (Some(check), Some(start)) = (&session.check, progress.start_agreement) else {
        return Ok(None);
    };
    let trained = check.measure(&state.teacher)?;
    let signal = LearnedSignal::new(check.photos, check.held_out, start, trained.agreement)
        .with_rank_me(progress.start_rank_me, trained.rank_me);
    let path = session.opts.run_dir.join(SIGNAL_FILE);
    let json = serde_json::to_vec_pretty(&signal).map_err(|e| Error::Config(e.to_string()))?;
    write_atomically(&path, |tmp| {
        std::fs::write(tmp, &json).map_err(|e| Error::io(tmp, e))
    })?;
    Ok(Some(signal))
}
