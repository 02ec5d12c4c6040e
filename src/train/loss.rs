//! The DINO loss (`DINOLoss` of the official `main_dino.py`): cross-entropy between the
//! centred, sharpened teacher distribution of each global view and the student
//! distribution of every other view, with the centre updated after the loss.

use candle_core::{DType, Device, Tensor};

use super::config::{LossKind, TeacherNorm};
use super::schedule::teacher_temp_schedule;
use crate::model::layers::{log_softmax_last_dim, softmax_last_dim};
use crate::model::ops::{self, head_loss::CrossViewTargets, head_loss::HeadLossOp};
use crate::model::DinoHead;
use crate::{Error, Result};

/// Settings of the loss; the official defaults are in [`LossConfig::official`].
#[derive(Debug, Clone, PartialEq)]
pub struct LossConfig {
    /// Number of prototypes (head output width).
    pub out_dim: usize,
    /// Views the student sees per image (global + local).
    pub ncrops: usize,
    /// Teacher temperature at epoch 0.
    pub warmup_teacher_temp: f64,
    /// Teacher temperature after the warm-up.
    pub teacher_temp: f64,
    /// Epochs of linear teacher-temperature warm-up.
    pub warmup_teacher_temp_epochs: usize,
    /// Total epochs of the run (length of the temperature schedule).
    pub epochs: usize,
    /// Student temperature.
    pub student_temp: f64,
    /// Momentum of the centre's moving average.
    pub center_momentum: f64,
}

impl LossConfig {
    /// The official defaults for `out_dim` prototypes, `ncrops` views and `epochs`.
    pub fn official(out_dim: usize, ncrops: usize, epochs: usize) -> Self {
        Self {
            out_dim,
            ncrops,
            warmup_teacher_temp: 0.04,
            teacher_temp: 0.04,
            warmup_teacher_temp_epochs: 0,
            epochs,
            student_temp: 0.1,
            center_momentum: 0.9,
        }
    }
}

/// The loss with its running centre.
#[derive(Debug, Clone)]
pub struct DinoLoss {
    cfg: LossConfig,
    teacher_temps: Vec<f64>,
    center: Tensor,
    teacher_norm: TeacherNorm,
    kind: LossKind,
}

/// Sinkhorn-Knopp iterations of the Sinkhorn ablation (as SwAV).
const SINKHORN_ITERATIONS: usize = 3;

impl DinoLoss {
    /// A loss with a zero centre on `device`.
    pub fn new(cfg: LossConfig, device: &Device) -> Result<Self> {
        if cfg.ncrops < 2 || cfg.out_dim == 0 {
            return Err(Error::Config(format!(
                "the DINO loss needs at least 2 views and 1 prototype, got {} and {}",
                cfg.ncrops, cfg.out_dim
            )));
        }
        let teacher_temps = teacher_temp_schedule(
            cfg.warmup_teacher_temp,
            cfg.teacher_temp,
            cfg.warmup_teacher_temp_epochs,
            cfg.epochs,
        );
        let center = Tensor::zeros((1, cfg.out_dim), DType::F32, device)?;
        Ok(Self {
            cfg,
            teacher_temps,
            center,
            teacher_norm: TeacherNorm::Centering,
            kind: LossKind::Ce,
        })
    }

    /// The paper's ablations: Sinkhorn-Knopp targets instead of centring, MSE instead of
    /// cross-entropy.
    pub fn with_variants(mut self, teacher_norm: TeacherNorm, kind: LossKind) -> Self {
        self.teacher_norm = teacher_norm;
        self.kind = kind;
        self
    }

    /// The running centre `[1, out_dim]`.
    pub fn center(&self) -> &Tensor {
        &self.center
    }

    /// Replaces the centre (when resuming a run).
    pub fn set_center(&mut self, center: Tensor) -> Result<()> {
        if center.dims() != [1, self.cfg.out_dim] {
            return Err(Error::ParamMismatch(format!(
                "centre of shape {:?}, expected [1, {}]",
                center.dims(),
                self.cfg.out_dim
            )));
        }
        self.center = center;
        Ok(())
    }

    /// The teacher temperature used at `epoch` (the last one past the schedule's end).
    pub fn teacher_temp(&self, epoch: usize) -> f64 {
        let last = self.teacher_temps.len().saturating_sub(1);
        self.teacher_temps
            .get(epoch.min(last))
            .copied()
            .unwrap_or(self.cfg.teacher_temp)
    }

    /// The teacher's target distributions `softmax((t - center) / τt)` (or the
    /// Sinkhorn-Knopp assignment of `t / τt`), detached.
    pub fn teacher_targets(&self, teacher_output: &Tensor, epoch: usize) -> Result<Tensor> {
        self.teacher_targets_at(teacher_output, self.teacher_temp(epoch))
    }

    /// [`DinoLoss::teacher_targets`] at teacher temperature `temp`.
    pub fn teacher_targets_at(&self, teacher_output: &Tensor, temp: f64) -> Result<Tensor> {
        let targets = match self.teacher_norm {
            TeacherNorm::Centering => {
                let centred = teacher_output.broadcast_sub(&self.center)?;
                softmax_last_dim(&(centred / temp)?)?
            }
            TeacherNorm::Sinkhorn => sinkhorn_knopp(&(teacher_output.detach() / temp)?)?,
        };
        Ok(targets.detach())
    }

    /// The loss for `student_output` (`[ncrops·B, K]`, view-major) against
    /// `teacher_output` (`[n_global·B, K]`), then the centre update on the raw teacher
    /// outputs. Differentiable with respect to the student output.
    pub fn forward(
        &mut self,
        student_output: &Tensor,
        teacher_output: &Tensor,
        epoch: usize,
    ) -> Result<Tensor> {
        self.forward_at(student_output, teacher_output, self.teacher_temp(epoch))
    }

    /// [`DinoLoss::forward`] at teacher temperature `temp`.
    pub fn forward_at(
        &mut self,
        student_output: &Tensor,
        teacher_output: &Tensor,
        temp: f64,
    ) -> Result<Tensor> {
        let targets = self.teacher_targets_at(teacher_output, temp)?;
        let loss = match self.kind {
            LossKind::Ce => cross_view_entropy(student_output, &targets, &self.cfg)?,
            LossKind::Mse => cross_view_squared_error(student_output, &targets, &self.cfg)?,
        };
        self.update_center(teacher_output)?;
        Ok(loss)
    }

    /// [`DinoLoss::forward_at`] for the student's backbone `features` (`[ncrops·B, D]`)
    /// through its `head`: on the CPU the head and the cross-entropy run as one fused op
    /// with its own backward ([`ops::head_loss`]), elsewhere (and for the MSE ablation or
    /// a head with BatchNorms) as candle ops.
    pub fn forward_head_at(
        &mut self,
        head: &DinoHead,
        features: &Tensor,
        teacher_output: &Tensor,
        temp: f64,
    ) -> Result<Tensor> {
        let fused = match self.kind {
            LossKind::Ce if ops::fused(features) => head.flat_params()?,
            _ => None,
        };
        let Some((params, flat)) = fused else {
            return self.forward_at(&head.forward(features)?, teacher_output, temp);
        };
        let targets = self.teacher_targets_at(teacher_output, temp)?;
        let op = HeadLossOp::new(
            params,
            CrossViewTargets {
                targets: targets.flatten_all()?.to_vec1::<f32>()?,
                ncrops: self.cfg.ncrops,
                student_temp: self.cfg.student_temp as f32,
            },
        );
        let loss = features.contiguous()?.apply_op2(&flat, op)?;
        self.update_center(teacher_output)?;
        Ok(loss)
    }

    /// `center ← m·center + (1 − m)·mean(teacher_output)` over the batch.
    pub fn update_center(&mut self, teacher_output: &Tensor) -> Result<()> {
        let rows = teacher_output.dim(0)?;
        let batch_center = (teacher_output.detach().sum_keepdim(0)? / rows as f64)?;
        let m = self.cfg.center_momentum;
        self.center = ((&self.center * m)? + (batch_center * (1.0 - m))?)?;
        Ok(())
    }
}

/// DINOv2's KoLeo regulariser (Kozachenko–Leonenko differential-entropy estimator,
/// Sablayrolles et al. 2019) on the rows of `features` `[B, D]`: each row is L2-normalised
/// and `−mean(log(‖x_i − x_nn(i)‖ + ε))` is returned, where `nn(i)` is the row's nearest
/// other row (chosen without gradient). Minimising it spreads unrelated photos apart.
pub fn koleo(features: &Tensor) -> Result<Tensor> {
    const EPS: f64 = 1e-8;
    let rows = features.dim(0)?;
    if rows < 2 {
        return Err(Error::Config("KoLeo needs at least 2 rows".into()));
    }
    let norm = (features.sqr()?.sum_keepdim(1)?.sqrt()? + EPS)?;
    let x = features.broadcast_div(&norm)?;
    let detached = x.detach();
    let eye = Tensor::eye(rows, DType::F32, x.device())?;
    // the row itself is never its own neighbour
    let sim = (detached.matmul(&detached.t()?)? - (eye * 4.0)?)?;
    let nearest = sim.argmax(1)?;
    let neighbours = x.index_select(&nearest, 0)?;
    let dist = ((x - neighbours)? + EPS)?.sqr()?.sum(1)?.sqrt()?;
    Ok((dist + EPS)?.log()?.mean_all()?.neg()?)
}

/// SwAV's Sinkhorn-Knopp: rows of `exp(scores)` rescaled so that every prototype gets
/// an equal share of the batch and every sample a distribution (rows sum to 1).
fn sinkhorn_knopp(scores: &Tensor) -> Result<Tensor> {
    let (rows, k) = scores.dims2()?;
    let max = scores.max_all()?;
    let mut q = scores.broadcast_sub(&max)?.exp()?;
    q = q.broadcast_div(&q.sum_all()?)?;
    for _ in 0..SINKHORN_ITERATIONS {
        q = (q.broadcast_div(&q.sum_keepdim(0)?)? / k as f64)?;
        q = (q.broadcast_div(&q.sum_keepdim(1)?)? / rows as f64)?;
    }
    Ok((q * rows as f64)?)
}

/// The view pairs of [`cross_view_entropy`] with `Σ_k (q − p)²` instead of `−q log p`
/// (`p = softmax(s / τs)`): the paper's MSE ablation.
fn cross_view_squared_error(
    student_output: &Tensor,
    targets: &Tensor,
    cfg: &LossConfig,
) -> Result<Tensor> {
    let (student_rows, k) = student_output.dims2()?;
    let batch = student_rows / cfg.ncrops.max(1);
    let n_teacher = targets.dim(0)? / batch.max(1);
    let probs =
        softmax_last_dim(&(student_output / cfg.student_temp)?)?.reshape((cfg.ncrops, batch, k))?;
    let targets = targets.reshape((n_teacher, batch, k))?;
    let mut total = Tensor::zeros((), student_output.dtype(), student_output.device())?;
    for i in 0..n_teacher {
        let t = targets.get(i)?;
        for v in (0..cfg.ncrops).filter(|&v| v != i) {
            let d = (probs.get(v)? - &t)?.sqr()?.sum_all()?;
            total = (total + d)?;
        }
    }
    let n_pairs = n_teacher * cfg.ncrops - n_teacher;
    Ok((total / (batch * n_pairs) as f64)?)
}

/// Mean over (teacher view i, student view v ≠ i) of `mean_b Σ_k −q_i log softmax(s_v/τs)`.
///
/// Summing the student log-probabilities over views once makes it linear in the number
/// of views: the pairs of teacher view i are `Σ_v ls_v − ls_i`.
fn cross_view_entropy(
    student_output: &Tensor,
    targets: &Tensor,
    cfg: &LossConfig,
) -> Result<Tensor> {
    let (student_rows, k) = student_output.dims2()?;
    let batch = student_rows / cfg.ncrops;
    let teacher_rows = targets.dim(0)?;
    if batch == 0 || student_rows % cfg.ncrops != 0 || teacher_rows % batch != 0 {
        return Err(Error::Config(format!(
            "{student_rows} student rows and {teacher_rows} teacher rows do not split into {} views",
            cfg.ncrops
        )));
    }
    let n_teacher = teacher_rows / batch;
    if n_teacher > cfg.ncrops {
        return Err(Error::Config(
            "more teacher views than student views".into(),
        ));
    }
    let log_probs = log_softmax_last_dim(&(student_output / cfg.student_temp)?)?
        .reshape((cfg.ncrops, batch, k))?;
    let all_views = log_probs.sum(0)?;
    let targets = targets.reshape((n_teacher, batch, k))?;
    let others = all_views
        .unsqueeze(0)?
        .broadcast_sub(&log_probs.narrow(0, 0, n_teacher)?)?;
    let cross = (targets * others)?.sum_all()?;
    let n_pairs = n_teacher * cfg.ncrops - n_teacher;
    Ok((cross.neg()? / (batch * n_pairs) as f64)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairwise_reference(student: &[Vec<f32>], teacher: &[Vec<f32>], tt: f32) -> f32 {
        let softmax = |x: &[f32], t: f32| {
            let m = x.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = x.iter().map(|v| ((v - m) / t).exp()).collect();
            let s: f32 = e.iter().sum();
            e.into_iter().map(|v| v / s).collect::<Vec<_>>()
        };
        let mut total = 0.0;
        let mut n = 0;
        for (i, t) in teacher.iter().enumerate() {
            let q = softmax(t, tt);
            for (v, s) in student.iter().enumerate() {
                if v == i {
                    continue;
                }
                let p = softmax(s, 0.1);
                total += q.iter().zip(&p).map(|(q, p)| -q * p.ln()).sum::<f32>();
                n += 1;
            }
        }
        total / n as f32
    }

    #[test]
    fn sinkhorn_balances_prototypes_and_normalises_images() -> Result<()> {
        // fixed scores (a random draw made this test flaky): prototype 0 is favoured by
        // most images, so a plain softmax gives it far more than its share
        let values: Vec<f32> = (0..32)
            .map(|i| {
                if i % 4 == 0 {
                    1.5
                } else {
                    ((i * 7) % 5) as f32 * 0.3
                }
            })
            .collect();
        let scores = Tensor::from_vec(values, (8, 4), &Device::Cpu)?;
        let softmax_share = softmax_last_dim(&scores)?.sum(0)?.to_vec1::<f32>()?[0];
        assert!(softmax_share > 3.0, "softmax share {softmax_share}");
        let q = sinkhorn_knopp(&scores)?;
        for row in q.sum(1)?.to_vec1::<f32>()? {
            assert!((row - 1.0).abs() < 1e-4, "row sums to {row}");
        }
        // three iterations get each prototype close to an equal share (8 / 4)
        for col in q.sum(0)?.to_vec1::<f32>()? {
            assert!((col - 2.0).abs() < 0.25, "prototype share {col}");
        }
        Ok(())
    }

    /// Known answers: rows on a regular simplex are all `√2` apart; pulling two rows
    /// together raises the regulariser, and its gradient pushes them apart.
    #[test]
    fn koleo_rewards_spread_and_pushes_neighbours_apart() -> Result<()> {
        let dev = Device::Cpu;
        let spread = Tensor::eye(4, DType::F32, &dev)?;
        let value = koleo(&spread)?.to_scalar::<f32>()?;
        assert!((value + 2f32.sqrt().ln()).abs() < 1e-5, "{value}");
        let close = Tensor::new(
            &[[1f32, 0.0, 0.0], [0.99, 0.141, 0.0], [0.0, 0.0, 1.0]],
            &dev,
        )?;
        assert!(koleo(&close)?.to_scalar::<f32>()? > value);
        let var = candle_core::Var::from_tensor(&close)?;
        let grads = koleo(var.as_tensor())?.backward()?;
        let g = grads
            .get(var.as_tensor())
            .ok_or_else(|| Error::Config("no gradient".into()))?
            .to_vec2::<f32>()?;
        // descending the gradient moves row 1 away from row 0 (its y grows)
        assert!(g[1][1] < 0.0, "{g:?}");
        Ok(())
    }

    #[test]
    fn mse_is_zero_when_every_view_matches_the_targets() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = LossConfig::official(5, 3, 1);
        let logits = Tensor::randn(0f32, 1., (2, 5), &dev)?;
        let student = Tensor::cat(&[&logits, &logits, &logits], 0)?;
        let targets = softmax_last_dim(&(&logits / cfg.student_temp)?)?;
        let targets = Tensor::cat(&[&targets, &targets], 0)?;
        let loss = cross_view_squared_error(&student, &targets, &cfg)?.to_scalar::<f32>()?;
        assert!(loss.abs() < 1e-10, "{loss}");
        let shifted = (&student + Tensor::randn(0f32, 1., (6, 5), &dev)?)?;
        assert!(cross_view_squared_error(&shifted, &targets, &cfg)?.to_scalar::<f32>()? > 0.0);
        Ok(())
    }

    /// Loss and gradients (features, then every trainable head tensor) of `loss`.
    fn loss_and_grads(
        loss: &Tensor,
        x: &candle_core::Var,
        store: &crate::model::ParamStore,
    ) -> Result<(f32, Vec<Vec<f32>>)> {
        let grads = loss.backward()?;
        let mut all = vec![grads
            .get(x.as_tensor())
            .ok_or_else(|| Error::Config("no feature gradient".into()))?
            .flatten_all()?
            .to_vec1::<f32>()?];
        for p in store.params().iter().filter(|p| p.trainable) {
            let g = grads
                .get(p.var.as_tensor())
                .ok_or_else(|| Error::Config(format!("no gradient for {}", p.name)))?;
            all.push(g.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok((loss.to_scalar::<f32>()?, all))
    }

    /// The fused head + loss op against the same head and loss as candle ops: loss, the
    /// features' gradient and every head gradient, with the last layer's `g` fixed
    /// (official default) and trained, to 1e-4 of the largest value.
    #[test]
    fn fused_head_loss_matches_the_composed_graph() -> Result<()> {
        use crate::model::{DinoHead, HeadConfig, ParamBuilder};
        let dev = Device::Cpu;
        let (batch, ncrops, k) = (3, 4, 32);
        for norm_last_layer in [true, false] {
            let pb = ParamBuilder::trainable(&dev, 7);
            let cfg = HeadConfig {
                hidden_dim: 24,
                bottleneck_dim: 8,
                norm_last_layer,
                ..HeadConfig::official(12, k)
            };
            let head = DinoHead::new(&pb, &cfg)?;
            let x = candle_core::Var::from_tensor(&Tensor::randn(
                0f32,
                1.,
                (ncrops * batch, 12),
                &dev,
            )?)?;
            let teacher = (Tensor::randn(0f32, 1., (2 * batch, k), &dev)? * 3.0)?;
            let mut composed_loss = DinoLoss::new(LossConfig::official(k, ncrops, 1), &dev)?;
            let mut fused_loss = composed_loss.clone();
            let out = head.forward(x.as_tensor())?;
            let composed = composed_loss.forward_at(&out, &teacher, 0.04)?;
            let (want, want_grads) = loss_and_grads(&composed, &x, &pb.store())?;
            let fused = fused_loss.forward_head_at(&head, x.as_tensor(), &teacher, 0.04)?;
            let (got, got_grads) = loss_and_grads(&fused, &x, &pb.store())?;
            assert!(
                (got - want).abs() < 1e-5 * want.abs().max(1.0),
                "{got} vs {want}"
            );
            assert_eq!(got_grads.len(), want_grads.len());
            for (i, (g, w)) in got_grads.iter().zip(&want_grads).enumerate() {
                let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
                let worst = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(worst < 1e-4 * scale, "gradient {i}: {worst} of {scale}");
            }
            let centres = [composed_loss.center(), fused_loss.center()];
            let gap = (centres[0] - centres[1])?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert_eq!(gap, 0.0, "the centre moves the same way");
        }
        Ok(())
    }

    #[test]
    fn matches_a_direct_pairwise_sum() -> Result<()> {
        let dev = Device::Cpu;
        // batch 1, 3 student views, 2 teacher views, 4 prototypes
        let student = vec![
            vec![0.1, 0.5, -0.2, 0.3],
            vec![0.0, 0.2, 0.4, -0.1],
            vec![0.3, -0.3, 0.1, 0.2],
        ];
        let teacher = vec![vec![0.2, 0.1, 0.0, -0.1], vec![-0.2, 0.3, 0.1, 0.0]];
        let flat = |rows: &[Vec<f32>]| rows.concat();
        let s = Tensor::from_vec(flat(&student), (3, 4), &dev)?;
        let t = Tensor::from_vec(flat(&teacher), (2, 4), &dev)?;
        let mut loss = DinoLoss::new(LossConfig::official(4, 3, 1), &dev)?;
        let got = loss.forward(&s, &t, 0)?.to_scalar::<f32>()?;
        let want = pairwise_reference(&student, &teacher, 0.04);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        Ok(())
    }
}
