//! How long a run is and how every scheduled value moves over it.
//!
//! A run has one of three budgets: epochs (the official recipe: every schedule is laid out
//! per epoch exactly as `main_dino.py` does), a step count (`--max-steps`) or a wall-clock
//! time (`--time`). With a step or time budget every schedule spans the steps that will
//! actually run, and the settings given in epochs (learning-rate warm-up, teacher
//! temperature warm-up, last-layer freeze) keep the share of the run they have in the
//! configuration (`warmup_epochs / epochs` of it, and so on).
//!
//! A time budget is turned into a step count after a few *calibration* steps, which run at
//! the schedules' starting values (learning rate 0, the first weight decay, momentum and
//! teacher temperature); the schedules then span the remaining steps. The step count and
//! the calibration length are stored in the run's configuration, so a resumed run follows
//! the same plan exactly.

use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::schedule::{cosine_scheduler, cosine_steps, teacher_temp_schedule};
use super::step::StepSchedule;
use crate::{Error, Result};

/// Steps run at the starting values before a time budget is turned into a step count.
pub const CALIBRATION_STEPS: u64 = 5;

/// What bounds a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum Budget {
    /// Passes over the collection (the official schedules, per epoch).
    Epochs(usize),
    /// Optimizer steps.
    Steps(u64),
    /// Seconds of training, measured from the start of `train`.
    Seconds(f64),
}

impl Budget {
    /// The budget a configuration asks for: a time, else a step count, else epochs.
    pub fn of(cfg: &TrainConfig) -> Self {
        if cfg.time_budget_s > 0.0 {
            Budget::Seconds(cfg.time_budget_s)
        } else if cfg.max_steps > 0 {
            Budget::Steps(cfg.max_steps)
        } else {
            Budget::Epochs(cfg.epochs)
        }
    }

    /// A short description for progress lines: `12 epochs`, `300 steps`, `30m`.
    pub fn describe(&self) -> String {
        match *self {
            Budget::Epochs(e) => format!("{e} epochs"),
            Budget::Steps(s) => format!("{s} steps"),
            Budget::Seconds(s) => format_duration(s),
        }
    }
}

/// `90s`, `30m`, `1h30m`.
pub fn format_duration(seconds: f64) -> String {
    let total = seconds.round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// Parses a duration as users write it: `90s`, `30m`, `2h`, `1h30m`, `1.5h`, or plain
/// seconds.
pub fn parse_duration(text: &str) -> Result<f64> {
    let bad = || {
        Error::Config(format!(
            "'{text}' is not a duration: write e.g. 90s, 30m, 2h or 1h30m"
        ))
    };
    let mut total = 0.0;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => return Err(bad()),
        };
        total += number.parse::<f64>().map_err(|_| bad())? * unit;
        number.clear();
    }
    if !number.is_empty() {
        total += number.parse::<f64>().map_err(|_| bad())?;
    }
    if total.is_finite() && total > 0.0 {
        Ok(total)
    } else {
        Err(bad())
    }
}

/// The steps a run takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Steps in the whole run (0 while a time budget is still calibrating).
    pub total_steps: u64,
    /// Steps run at the starting values before the schedules begin.
    pub calibration_steps: u64,
    /// Steps per pass over the collection.
    pub steps_per_epoch: u64,
}

impl Plan {
    /// The plan of `cfg` over a collection giving `steps_per_epoch`; `total_steps` is 0
    /// for a time budget whose step count is not fixed yet.
    pub fn of(cfg: &TrainConfig, steps_per_epoch: u64) -> Self {
        let total_steps = match Budget::of(cfg) {
            Budget::Epochs(e) => e as u64 * steps_per_epoch,
            Budget::Steps(s) => s,
            Budget::Seconds(_) => cfg.planned_steps,
        };
        Self {
            total_steps,
            calibration_steps: cfg.calibration_steps,
            steps_per_epoch,
        }
    }

    /// Whether the step count is known.
    pub fn is_fixed(&self) -> bool {
        self.total_steps > 0
    }
}

/// The step count that fits `budget_s` seconds when `elapsed_s` are spent and a step
/// takes `step_s`; never fewer than the `done` steps already run plus one.
pub fn steps_for_time(budget_s: f64, elapsed_s: f64, step_s: f64, done: u64) -> u64 {
    let left = (budget_s - elapsed_s).max(0.0);
    let more = if step_s > 0.0 { left / step_s } else { 0.0 };
    done + (more.floor() as u64).max(1)
}

/// Every scheduled value, per step.
#[derive(Debug, Clone)]
pub struct Schedules {
    lr: Vec<f64>,
    wd: Vec<f64>,
    momentum: Vec<f64>,
    teacher_temp: Vec<f64>,
    frozen_steps: u64,
    /// Steps at the start in which the backbone does not train.
    backbone_frozen_steps: u64,
    offset: u64,
    steps_per_epoch: u64,
    calibration: StepSchedule,
}

/// `part / whole` of `steps`, rounded.
/// `fraction` of `steps`, rounded.
fn share_of_steps(fraction: f64, steps: usize) -> u64 {
    (fraction.clamp(0.0, 1.0) * steps as f64).round() as u64
}

fn share(part: usize, whole: usize, steps: usize) -> usize {
    if whole == 0 {
        return 0;
    }
    ((part as f64 / whole as f64) * steps as f64).round() as usize
}

impl Schedules {
    /// The schedules of `cfg` over `plan` (which must be fixed).
    pub fn new(cfg: &TrainConfig, plan: &Plan) -> Self {
        let base_lr = cfg.lr * cfg.batch_size as f64 / 256.0;
        let spe = plan.steps_per_epoch.max(1) as usize;
        let mut s = match Budget::of(cfg) {
            Budget::Epochs(epochs) => Self::per_epoch(cfg, base_lr, epochs, spe),
            Budget::Steps(_) | Budget::Seconds(_) => {
                let steps = plan.total_steps.saturating_sub(plan.calibration_steps) as usize;
                Self::fitted(cfg, base_lr, steps.max(1))
            }
        };
        if cfg.no_momentum_teacher {
            s.momentum.iter_mut().for_each(|m| *m = 0.0);
        }
        s.offset = plan.calibration_steps;
        s.steps_per_epoch = plan.steps_per_epoch.max(1);
        s.calibration = Self::calibration(cfg, 0, s.steps_per_epoch);
        s
    }

    /// The official layout: warm-ups and freeze in whole epochs, the teacher temperature
    /// per epoch.
    fn per_epoch(cfg: &TrainConfig, base_lr: f64, epochs: usize, spe: usize) -> Self {
        let temps = teacher_temp_schedule(
            cfg.warmup_teacher_temp,
            cfg.teacher_temp,
            cfg.warmup_teacher_temp_epochs,
            epochs,
        );
        Self {
            lr: cosine_scheduler(base_lr, cfg.min_lr, epochs, spe, cfg.warmup_epochs, 0.0),
            wd: cosine_scheduler(cfg.weight_decay, cfg.weight_decay_end, epochs, spe, 0, 0.0),
            momentum: cosine_scheduler(
                cfg.momentum_teacher,
                cfg.momentum_teacher_end,
                epochs,
                spe,
                0,
                0.0,
            ),
            teacher_temp: temps
                .iter()
                .flat_map(|&t| std::iter::repeat_n(t, spe))
                .collect(),
            frozen_steps: (cfg.freeze_last_layer * spe) as u64,
            backbone_frozen_steps: share_of_steps(cfg.freeze_backbone_share, epochs * spe),
            offset: 0,
            steps_per_epoch: spe as u64,
            calibration: Self::calibration(cfg, 0, spe as u64),
        }
    }

    /// Every schedule over `steps`, the epoch-denominated settings as shares of the run.
    fn fitted(cfg: &TrainConfig, base_lr: f64, steps: usize) -> Self {
        let warmup = share(cfg.warmup_epochs, cfg.epochs, steps).min(steps);
        let temp_warmup = share(cfg.warmup_teacher_temp_epochs, cfg.epochs, steps).min(steps);
        // the per-epoch schedule's rule, one value per step
        let teacher_temp = teacher_temp_schedule(
            cfg.warmup_teacher_temp,
            cfg.teacher_temp,
            temp_warmup,
            steps,
        );
        Self {
            lr: cosine_steps(base_lr, cfg.min_lr, steps, warmup, 0.0),
            wd: cosine_steps(cfg.weight_decay, cfg.weight_decay_end, steps, 0, 0.0),
            momentum: cosine_steps(
                cfg.momentum_teacher,
                cfg.momentum_teacher_end,
                steps,
                0,
                0.0,
            ),
            teacher_temp,
            frozen_steps: share(cfg.freeze_last_layer, cfg.epochs, steps) as u64,
            backbone_frozen_steps: share_of_steps(cfg.freeze_backbone_share, steps),
            offset: 0,
            steps_per_epoch: 1,
            calibration: Self::calibration(cfg, 0, 1),
        }
    }

    /// The values of a calibration step: learning rate 0 (so the weights do not move
    /// while the step time is measured), the starting weight decay, momentum and teacher
    /// temperature, and the last layer frozen if the run freezes it at all. They do not
    /// depend on the plan, which is not known yet.
    pub fn calibration(cfg: &TrainConfig, step: u64, steps_per_epoch: u64) -> StepSchedule {
        StepSchedule {
            epoch: (step / steps_per_epoch.max(1)) as usize,
            lr: 0.0,
            weight_decay: cfg.weight_decay,
            momentum: if cfg.no_momentum_teacher {
                0.0
            } else {
                cfg.momentum_teacher
            },
            teacher_temp: cfg.warmup_teacher_temp,
            last_layer_frozen: cfg.freeze_last_layer > 0,
            backbone_frozen: cfg.freeze_backbone_share > 0.0,
        }
    }

    /// The values of step `step` (0-based): [`Schedules::calibration`] during calibration,
    /// then the schedules; steps past the end keep the last values.
    pub fn at(&self, step: u64) -> StepSchedule {
        let epoch = (step / self.steps_per_epoch) as usize;
        if step < self.offset {
            return StepSchedule {
                epoch,
                ..self.calibration
            };
        }
        let i = step - self.offset;
        let pick = |v: &[f64], fallback: f64| {
            let last = v.len().saturating_sub(1);
            v.get((i as usize).min(last)).copied().unwrap_or(fallback)
        };
        StepSchedule {
            epoch,
            lr: pick(&self.lr, 0.0),
            weight_decay: pick(&self.wd, 0.0),
            momentum: pick(&self.momentum, 1.0),
            teacher_temp: pick(&self.teacher_temp, 0.04),
            last_layer_frozen: i < self.frozen_steps,
            backbone_frozen: i < self.backbone_frozen_steps,
        }
    }

    /// Steps the schedules span after calibration.
    pub fn len(&self) -> usize {
        self.lr.len()
    }

    /// Whether the schedules are empty (a run of no steps).
    pub fn is_empty(&self) -> bool {
        self.lr.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::Preset;

    fn cpu() -> TrainConfig {
        TrainConfig::preset(Preset::Cpu)
    }

    #[test]
    fn durations_parse_as_users_write_them() -> Result<()> {
        assert_eq!(parse_duration("90s")?, 90.0);
        assert_eq!(parse_duration("30m")?, 1800.0);
        assert_eq!(parse_duration("2h")?, 7200.0);
        assert_eq!(parse_duration("1h30m")?, 5400.0);
        assert_eq!(parse_duration("1.5h")?, 5400.0);
        assert_eq!(parse_duration("45")?, 45.0);
        for bad in ["", "0m", "m", "ten minutes", "1x", "-5m", "1..2h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(1800.0), "30m");
        assert_eq!(format_duration(5400.0), "1h30m");
        assert_eq!(format_duration(90.0), "1m30s");
        Ok(())
    }

    #[test]
    fn budgets_are_chosen_time_then_steps_then_epochs() {
        let mut cfg = cpu();
        assert_eq!(Budget::of(&cfg), Budget::Epochs(30));
        cfg.max_steps = 300;
        assert_eq!(Budget::of(&cfg), Budget::Steps(300));
        cfg.time_budget_s = 60.0;
        assert_eq!(Budget::of(&cfg), Budget::Seconds(60.0));
        assert!(!Plan::of(&cfg, 10).is_fixed());
        cfg.planned_steps = 42;
        assert_eq!(Plan::of(&cfg, 10).total_steps, 42);
    }

    /// The case of the issue: 300 steps on 10,000 photos (312 steps per epoch) used to
    /// stop inside the 30-epoch schedules' first warm-up epoch.
    #[test]
    fn a_step_budget_spans_every_schedule() {
        let cfg = TrainConfig {
            max_steps: 300,
            warmup_teacher_temp: 0.02,
            warmup_teacher_temp_epochs: 3,
            ..cpu()
        };
        let plan = Plan::of(&cfg, 312);
        let s = Schedules::new(&cfg, &plan);
        assert_eq!(s.len(), 300);
        let peak = cfg.lr * cfg.batch_size as f64 / 256.0;
        // warm-up: 1 of 30 epochs = 10 of 300 steps
        assert_eq!(s.at(0).lr, 0.0);
        assert_eq!(s.at(9).lr, peak);
        assert!(s.at(299).lr < cfg.min_lr + 0.01 * peak);
        assert!(s.at(299).momentum > 0.9999);
        assert!(s.at(299).weight_decay > 0.39);
        // teacher temperature: 3 of 30 epochs = 30 steps
        assert_eq!(s.at(0).teacher_temp, 0.02);
        assert_eq!(s.at(29).teacher_temp, cfg.teacher_temp);
        // last layer frozen for 1 of 30 epochs = 10 steps
        assert!(s.at(9).last_layer_frozen && !s.at(10).last_layer_frozen);
        assert_eq!(s.at(299).epoch, 0);
    }

    #[test]
    fn an_epoch_budget_keeps_the_official_layout() {
        let cfg = TrainConfig {
            epochs: 4,
            warmup_teacher_temp: 0.02,
            warmup_teacher_temp_epochs: 2,
            ..cpu()
        };
        let plan = Plan::of(&cfg, 5);
        assert_eq!(plan.total_steps, 20);
        let s = Schedules::new(&cfg, &plan);
        let lr = cosine_scheduler(
            cfg.lr * cfg.batch_size as f64 / 256.0,
            cfg.min_lr,
            4,
            5,
            1,
            0.0,
        );
        for (i, want) in lr.iter().enumerate() {
            assert_eq!(s.at(i as u64).lr, *want);
        }
        // per epoch: constant inside an epoch
        assert_eq!(s.at(0).teacher_temp, 0.02);
        assert_eq!(s.at(4).teacher_temp, 0.02);
        assert_eq!(s.at(5).teacher_temp, cfg.teacher_temp);
        assert!(s.at(4).last_layer_frozen && !s.at(5).last_layer_frozen);
        assert_eq!(s.at(7).epoch, 1);
    }

    #[test]
    fn calibration_steps_run_at_the_starting_values() {
        let cfg = TrainConfig {
            time_budget_s: 60.0,
            planned_steps: 105,
            calibration_steps: CALIBRATION_STEPS,
            ..cpu()
        };
        let s = Schedules::new(&cfg, &Plan::of(&cfg, 50));
        assert_eq!(s.len(), 100);
        for step in 0..CALIBRATION_STEPS {
            let values = s.at(step);
            assert_eq!(
                values,
                Schedules::calibration(&cfg, step, 50),
                "step {step}"
            );
            assert_eq!(values.lr, 0.0);
            assert_eq!(values.momentum, cfg.momentum_teacher);
            assert!(values.last_layer_frozen);
        }
        // then the warm-up (1 of 30 epochs = 3 of 100 steps) from 0
        assert_eq!(s.at(CALIBRATION_STEPS).lr, 0.0);
        assert!(s.at(CALIBRATION_STEPS + 1).lr > 0.0);
        assert_eq!(s.at(104).epoch, 2);
    }

    #[test]
    fn a_time_budget_fills_what_is_left() {
        assert_eq!(steps_for_time(1800.0, 20.0, 1.6, 5), 5 + 1112);
        assert_eq!(steps_for_time(10.0, 30.0, 1.0, 5), 6);
        assert_eq!(steps_for_time(10.0, 0.0, 0.0, 5), 6);
    }

    #[test]
    fn no_momentum_teacher_copies_every_step() {
        let cfg = TrainConfig {
            max_steps: 10,
            no_momentum_teacher: true,
            ..cpu()
        };
        let s = Schedules::new(&cfg, &Plan::of(&cfg, 3));
        assert!((0..10).all(|i| s.at(i).momentum == 0.0));
    }

    #[test]
    fn a_constant_teacher_momentum_stays_put() {
        let cfg = TrainConfig {
            max_steps: 10,
            momentum_teacher: 0.99,
            momentum_teacher_end: 0.99,
            ..cpu()
        };
        let s = Schedules::new(&cfg, &Plan::of(&cfg, 3));
        assert!((0..10).all(|i| (s.at(i).momentum - 0.99).abs() < 1e-12));
        let rising = TrainConfig {
            momentum_teacher_end: 1.0,
            ..cfg
        };
        let s = Schedules::new(&rising, &Plan::of(&rising, 3));
        assert!(s.at(9).momentum > s.at(0).momentum);
    }
}
