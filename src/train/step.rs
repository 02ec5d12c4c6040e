//! One DINO training step: teacher and student forward, loss, backward, per-tensor
//! clipping, last-layer freeze, optimizer (AdamW or SGD), EMA — the official
//! `train_one_epoch` body.

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;

use super::config::TrainConfig;
use super::ema::ema_update;
use super::loss::{koleo, DinoLoss};
use super::optim::{
    cancel_frozen_backbone, cancel_last_layer, clip_gradients, collect_gradients, Optimizer,
    TrainedBackbone,
};
use crate::model::{DinoNet, ParamBuilder};
use crate::{Error, Result};

/// One gradient per student parameter, `None` where the optimizer must skip it.
pub type Gradients = Vec<Option<Tensor>>;

/// Settings that stay fixed during a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepConfig {
    /// Number of global views (the teacher sees these only); they come first.
    pub n_global: usize,
    /// Per-tensor gradient clipping threshold; 0 disables it.
    pub clip_grad: f64,
    /// Weight of the KoLeo regulariser on the student's global-view features (0: off).
    pub koleo: f64,
    /// The first backbone block that trains (`--train-blocks`); `None`: all of them.
    pub first_trained_block: Option<usize>,
}

/// Scheduled values for one step (see [`crate::train::plan::Schedules`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSchedule {
    /// Epoch of the step (for messages).
    pub epoch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Weight decay of the decay group.
    pub weight_decay: f64,
    /// Teacher EMA momentum.
    pub momentum: f64,
    /// Teacher temperature.
    pub teacher_temp: f64,
    /// Whether the head's last layer is left untrained in this step.
    pub last_layer_frozen: bool,
    /// Whether the whole backbone is left untrained in this step.
    pub backbone_frozen: bool,
}

/// Wall-clock seconds of each phase of a step (the device is synchronised between them).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct StepTimes {
    /// Teacher forward on the global views.
    pub teacher_s: f64,
    /// Student forward on all views and the loss.
    pub student_s: f64,
    /// Backward pass, clipping and last-layer freeze.
    pub backward_s: f64,
    /// The optimizer and the EMA update.
    pub update_s: f64,
}

impl StepTimes {
    /// The whole step.
    pub fn total_s(&self) -> f64 {
        self.teacher_s + self.student_s + self.backward_s + self.update_s
    }
}

/// What one step measured.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The loss before the update (with the KoLeo term when it is on).
    pub loss: f32,
    /// Gradient norm of each student parameter before clipping (`None`: no gradient).
    pub grad_norms: Vec<Option<f64>>,
    /// Time spent in each phase.
    pub times: StepTimes,
    /// Collapse indicators of the teacher's targets in this step.
    pub targets: TargetEntropy,
    /// The KoLeo regulariser summed over the global views, when it is on.
    pub koleo: Option<f32>,
}

/// Entropies (nats) of the teacher's target distributions, DINO's two collapse modes:
/// `per_image` near `ln K` means uniform targets (collapse by flattening); `batch` near 0
/// means every image gets the same prototype (collapse by domination). Healthy training
/// keeps `per_image` well below `ln K` and `batch` well above `per_image`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct TargetEntropy {
    /// Mean entropy of one image's target.
    pub per_image: f64,
    /// Entropy of the batch's mean target.
    pub batch: f64,
}

fn entropy_rows(p: &Tensor) -> Result<Tensor> {
    let logp = p.clamp(1e-12f32, 1f32)?.log()?;
    Ok((p * logp)?.sum(candle_core::D::Minus1)?.neg()?)
}

/// [`TargetEntropy`] of target probabilities `[rows, K]`.
pub fn target_entropy(targets: &Tensor) -> Result<TargetEntropy> {
    let per_image = entropy_rows(targets)?.mean_all()?.to_scalar::<f32>()?;
    let mean = targets.mean_keepdim(0)?;
    let batch = entropy_rows(&mean)?.mean_all()?.to_scalar::<f32>()?;
    Ok(TargetEntropy {
        per_image: f64::from(per_image),
        batch: f64::from(batch),
    })
}

/// Seconds since `start`, after waiting for the device to finish queued work.
fn lap(start: &mut Instant, device: &Device) -> Result<f64> {
    device.synchronize()?;
    let now = Instant::now();
    let secs = now.duration_since(*start).as_secs_f64();
    *start = now;
    Ok(secs)
}

/// Student, teacher, loss and optimizer: everything a step changes.
#[derive(Debug)]
pub struct DinoState {
    /// The trained network.
    pub student: DinoNet,
    /// The EMA of the student, which provides the targets.
    pub teacher: DinoNet,
    /// The loss and its centre.
    pub loss: DinoLoss,
    /// Optimizer state of the student.
    pub optimizer: Optimizer,
    /// Fixed settings.
    pub cfg: StepConfig,
}

impl DinoState {
    /// A fresh run: student initialised from `cfg.seed`, teacher a copy of it, zero
    /// centre, empty optimizer.
    pub fn new(cfg: &TrainConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let student_pb = ParamBuilder::trainable(device, cfg.seed);
        let (student_net, head) = (cfg.backbone(true), cfg.head());
        let student = DinoNet::with_backbone(&student_pb, &student_net, &head, cfg.predictor)?;
        let teacher_pb = ParamBuilder::frozen(device, cfg.seed);
        let teacher = DinoNet::with_backbone(&teacher_pb, &cfg.backbone(false), &head, false)?;
        teacher.params().copy_matching(student.params())?;
        let loss =
            DinoLoss::new(cfg.loss_config(), device)?.with_variants(cfg.teacher_norm, cfg.loss);
        let optimizer = Optimizer::for_config(cfg, student.params().params().len());
        Ok(Self {
            student,
            teacher,
            loss,
            optimizer,
            cfg: StepConfig {
                n_global: 2,
                clip_grad: cfg.clip_grad,
                koleo: cfg.koleo,
                first_trained_block: (cfg.train_blocks > 0)
                    .then(|| cfg.depth.saturating_sub(cfg.train_blocks)),
            },
        })
    }

    /// Lets the student's training forward and backward, and the teacher's forward,
    /// compute a ViT's linear layers with bf16 inputs and f32 sums where the CPU has AMX
    /// (weights, gradients, optimizer and EMA stay f32).
    pub fn set_bf16(&self, on: bool) {
        self.student.backbone.set_bf16_training(on);
        self.teacher.backbone.set_bf16_inference(on);
    }

    /// Teacher outputs on the global views and student outputs on all views.
    pub fn forward(&self, views: &[Tensor], rng: Option<&mut StdRng>) -> Result<(Tensor, Tensor)> {
        let teacher_output = self.teacher_forward(views)?;
        let student_output = self.student.forward_views(views, rng)?;
        Ok((teacher_output, student_output))
    }

    fn teacher_forward(&self, views: &[Tensor]) -> Result<Tensor> {
        if views.len() < self.cfg.n_global || self.cfg.n_global == 0 {
            return Err(Error::Config(format!(
                "{} views for {} global views",
                views.len(),
                self.cfg.n_global
            )));
        }
        Ok(self
            .teacher
            .forward_views(&views[..self.cfg.n_global], None)?
            .detach())
    }

    /// Gradients of `loss` for the student, clipped and, when `last_layer_frozen`, with
    /// the head's last layer dropped, aligned with the student's parameters; also the
    /// norms before clipping.
    pub fn gradients(
        &self,
        loss: &Tensor,
        sched: &StepSchedule,
    ) -> Result<(Gradients, Vec<Option<f64>>)> {
        let grad_store = loss.backward()?;
        let params = self.student.params();
        let mut grads = collect_gradients(params, &grad_store);
        let norms = clip_gradients(&mut grads, self.cfg.clip_grad)?;
        if sched.last_layer_frozen {
            cancel_last_layer(&mut grads, params.params());
        }
        let trained = TrainedBackbone {
            frozen: sched.backbone_frozen,
            first_block: self.cfg.first_trained_block,
        };
        cancel_frozen_backbone(&mut grads, params.params(), trained);
        Ok((grads, norms))
    }

    /// One full step on `views` (global views first, each `[B, 3, H, W]`).
    pub fn step(
        &mut self,
        views: &[Tensor],
        sched: StepSchedule,
        rng: &mut StdRng,
    ) -> Result<StepReport> {
        let device = self.student.params().device().clone();
        let mut clock = Instant::now();
        let mut times = StepTimes::default();
        let teacher_output = self.teacher_forward(views)?;
        let targets = target_entropy(
            &self
                .loss
                .teacher_targets_at(&teacher_output, sched.teacher_temp)?,
        )?;
        times.teacher_s = lap(&mut clock, &device)?;
        let (loss, features) =
            self.student_loss(views, &teacher_output, sched.teacher_temp, rng)?;
        let (loss, koleo) = self.with_koleo(loss, &features, views)?;
        let loss_value = loss.to_scalar::<f32>()?;
        if !loss_value.is_finite() {
            return Err(Error::Diverged(format!(
                "loss is {loss_value} at epoch {}, learning rate {:.3e}",
                sched.epoch, sched.lr
            )));
        }
        times.student_s = lap(&mut clock, &device)?;
        let (grads, grad_norms) = self.gradients(&loss, &sched)?;
        times.backward_s = lap(&mut clock, &device)?;
        self.optimizer.step(
            self.student.params().params(),
            &grads,
            sched.lr,
            sched.weight_decay,
        )?;
        ema_update(self.teacher.params(), self.student.params(), sched.momentum)?;
        times.update_s = lap(&mut clock, &device)?;
        Ok(StepReport {
            loss: loss_value,
            grad_norms,
            times,
            targets,
            koleo,
        })
    }

    /// The student's forward on all views and the DINO loss against `teacher_output`,
    /// with the backbone features (the head and the loss fused where
    /// [`DinoLoss::forward_head_at`] can).
    fn student_loss(
        &mut self,
        views: &[Tensor],
        teacher_output: &Tensor,
        teacher_temp: f64,
        rng: &mut StdRng,
    ) -> Result<(Tensor, Tensor)> {
        if self.student.predictor.is_some() {
            let (output, features) = self.student.forward_views_with_features(views, Some(rng))?;
            let loss = self
                .loss
                .forward_at(&output, teacher_output, teacher_temp)?;
            return Ok((loss, features));
        }
        let features = self.student.backbone_features(views, Some(rng))?;
        let loss = self.loss.forward_head_at(
            &self.student.head,
            &features,
            teacher_output,
            teacher_temp,
        )?;
        Ok((loss, features))
    }

    /// `loss + koleo · KoLeo(features of each global view)` when the regulariser is on
    /// (DINOv2 applies it per global crop), with the regulariser's value.
    fn with_koleo(
        &self,
        loss: Tensor,
        features: &Tensor,
        views: &[Tensor],
    ) -> Result<(Tensor, Option<f32>)> {
        let batch = views.first().map_or(Ok(0), |v| v.dim(0))?;
        if self.cfg.koleo == 0.0 || batch < 2 {
            return Ok((loss, None));
        }
        let mut total = Tensor::zeros((), loss.dtype(), loss.device())?;
        for view in 0..self.cfg.n_global {
            total = (total + koleo(&features.narrow(0, view * batch, batch)?)?)?;
        }
        let value = total.to_scalar::<f32>()?;
        Ok(((loss + (total * self.cfg.koleo)?)?, Some(value)))
    }
}
