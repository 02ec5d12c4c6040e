//! AdamW or SGD with the official DINO parameter groups, per-tensor gradient clipping and
//! the frozen last layer, as `torch.optim.AdamW` / `torch.optim.SGD` +
//! `utils.clip_gradients` + `utils.cancel_gradients_last_layer` do them.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use super::inplace::{AdamWParamUpdate, FirstMoment, SecondMoment};

use super::config::{OptimizerKind, TrainConfig};
use crate::model::{ops, Param, ParamStore};
use crate::{Error, Result};

/// Whether the official `get_params_groups` puts a parameter in the weight-decay group:
/// everything but biases and 1-D tensors (so `cls_token` and `pos_embed` are decayed).
pub fn is_decayed(name: &str, dims: &[usize]) -> bool {
    !(name.ends_with(".bias") || dims.len() == 1)
}

/// The gradient of every trainable parameter, aligned with `params.params()`
/// (`None` for fixed parameters and for parameters the loss does not reach).
pub fn collect_gradients(params: &ParamStore, grads: &GradStore) -> Vec<Option<Tensor>> {
    params
        .params()
        .iter()
        .map(|p| {
            if p.trainable {
                grads.get(p.var.as_tensor()).cloned()
            } else {
                None
            }
        })
        .collect()
}

/// `utils.clip_gradients`: each gradient whose L2 norm exceeds `clip` is scaled by
/// `clip / (norm + 1e-6)`. Returns the norms before clipping (`None` where no gradient).
pub fn clip_gradients(grads: &mut [Option<Tensor>], clip: f64) -> Result<Vec<Option<f64>>> {
    let mut norms = Vec::with_capacity(grads.len());
    for grad in grads.iter_mut() {
        let Some(g) = grad.as_ref() else {
            norms.push(None);
            continue;
        };
        let norm = ops::sum_of_squares(g)?.sqrt();
        let coef = clip / (norm + 1e-6);
        if clip > 0.0 && coef < 1.0 {
            *grad = Some((g * coef)?);
        }
        norms.push(Some(norm));
    }
    Ok(norms)
}

/// `utils.cancel_gradients_last_layer` for a step inside the freeze: the gradients of
/// `*last_layer*` are dropped, so the optimizer skips those tensors entirely.
pub fn cancel_last_layer(grads: &mut [Option<Tensor>], params: &[Param]) {
    for (grad, param) in grads.iter_mut().zip(params) {
        if param.name.contains("last_layer") {
            *grad = None;
        }
    }
}

/// Which backbone parameters train in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainedBackbone {
    /// None of them (the start of an adaptation: only the head and the centre move).
    pub frozen: bool,
    /// Only the blocks from this one on and the final norm (`None`: all of them).
    pub first_block: Option<usize>,
}

impl TrainedBackbone {
    /// Whether the student parameter `name` stays as it is.
    pub fn holds(&self, name: &str) -> bool {
        let Some(rest) = name.strip_prefix("backbone.") else {
            return false;
        };
        if self.frozen {
            return true;
        }
        let Some(first) = self.first_block else {
            return false;
        };
        let block = rest
            .strip_prefix("blocks.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        match block {
            Some(i) => i < first,
            None => !rest.starts_with("norm."),
        }
    }
}

/// Drops the gradients of the backbone parameters that do not train in this step, so the
/// optimizer leaves them (and their weight decay) alone, and the teacher's EMA of them
/// stays where it started.
pub fn cancel_frozen_backbone(
    grads: &mut [Option<Tensor>],
    params: &[Param],
    trained: TrainedBackbone,
) {
    if !trained.frozen && trained.first_block.is_none() {
        return;
    }
    for (grad, param) in grads.iter_mut().zip(params) {
        if trained.holds(&param.name) {
            *grad = None;
        }
    }
}

/// Optimizer state of one parameter.
#[derive(Debug, Clone)]
pub struct Moments {
    /// Steps taken on this tensor (PyTorch counts per tensor).
    pub step: u64,
    /// Adam's first moment, or SGD's momentum buffer.
    pub exp_avg: Tensor,
    /// Adam's second moment (`None` for SGD).
    pub exp_avg_sq: Option<Tensor>,
}

/// Hyper-parameters of AdamW other than the scheduled lr and weight decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// The update rule and its fixed hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// AdamW.
    AdamW(AdamWConfig),
    /// SGD with (non-Nesterov, undampened) momentum and L2 weight decay, as
    /// `torch.optim.SGD`.
    Sgd {
        /// Momentum of the buffer.
        momentum: f64,
    },
}

/// SGD's momentum in the official code and in lightly's recipes.
pub const SGD_MOMENTUM: f64 = 0.9;

/// An optimizer over a [`ParamStore`] with the two official groups (no weight decay on
/// biases and 1-D tensors).
#[derive(Debug, Clone)]
pub struct Optimizer {
    rule: Rule,
    moments: Vec<Option<Moments>>,
}

impl Optimizer {
    /// AdamW for `n_params` parameters (aligned with the store's order).
    pub fn adamw(cfg: AdamWConfig, n_params: usize) -> Self {
        Self::new(Rule::AdamW(cfg), n_params)
    }

    /// The optimizer a run's configuration asks for.
    pub fn for_config(cfg: &TrainConfig, n_params: usize) -> Self {
        let rule = match cfg.optimizer {
            OptimizerKind::Adamw => Rule::AdamW(AdamWConfig::default()),
            OptimizerKind::Sgd => Rule::Sgd {
                momentum: SGD_MOMENTUM,
            },
        };
        Self::new(rule, n_params)
    }

    /// `rule` for `n_params` parameters, with empty state.
    pub fn new(rule: Rule, n_params: usize) -> Self {
        Self {
            rule,
            moments: vec![None; n_params],
        }
    }

    /// State per parameter, for checkpoints.
    pub fn moments(&self) -> &[Option<Moments>] {
        &self.moments
    }

    /// Restores state saved by [`Optimizer::moments`].
    pub fn set_moments(&mut self, moments: Vec<Option<Moments>>) -> Result<()> {
        if moments.len() != self.moments.len() {
            return Err(Error::ParamMismatch(format!(
                "{} optimizer states for {} parameters",
                moments.len(),
                self.moments.len()
            )));
        }
        let adam = matches!(self.rule, Rule::AdamW(_));
        if moments
            .iter()
            .flatten()
            .any(|m| m.exp_avg_sq.is_some() != adam)
        {
            return Err(Error::ParamMismatch(
                "the saved optimizer state belongs to another optimizer".into(),
            ));
        }
        self.moments = moments;
        Ok(())
    }

    /// One step with learning rate `lr` and weight decay `weight_decay` (applied to the
    /// decay group only). Parameters without a gradient are left untouched.
    pub fn step(
        &mut self,
        params: &[Param],
        grads: &[Option<Tensor>],
        lr: f64,
        weight_decay: f64,
    ) -> Result<()> {
        if params.len() != self.moments.len() || grads.len() != params.len() {
            return Err(Error::ParamMismatch(
                "optimizer, parameters and gradients differ in length".into(),
            ));
        }
        for ((param, grad), moments) in params.iter().zip(grads).zip(&mut self.moments) {
            let Some(grad) = grad else { continue };
            let decay = if is_decayed(&param.name, param.var.dims()) {
                weight_decay
            } else {
                0.0
            };
            match self.rule {
                Rule::AdamW(cfg) => {
                    let state = match moments {
                        Some(m) => m,
                        None => moments.insert(Moments {
                            step: 0,
                            exp_avg: param.var.zeros_like()?.contiguous()?,
                            exp_avg_sq: Some(param.var.zeros_like()?.contiguous()?),
                        }),
                    };
                    update_one(&param.var, grad, state, &cfg, lr, decay)?;
                }
                Rule::Sgd { momentum } => {
                    sgd_update(&param.var, grad, moments, momentum, lr, decay)?;
                }
            }
        }
        Ok(())
    }
}

/// `torch.optim.SGD`'s update: `d = g + wd·p`, `buf = μ·buf + d` (`buf = d` on the first
/// step), `p -= lr·buf`.
fn sgd_update(
    var: &Var,
    grad: &Tensor,
    state: &mut Option<Moments>,
    momentum: f64,
    lr: f64,
    weight_decay: f64,
) -> Result<()> {
    let value = var.as_detached_tensor();
    let direction = if weight_decay == 0.0 {
        grad.clone()
    } else {
        (grad + (&value * weight_decay)?)?
    };
    let (buffer, step) = match state.take() {
        Some(m) if momentum != 0.0 => (((m.exp_avg * momentum)? + direction)?, m.step),
        Some(m) => (direction, m.step),
        None => (direction.copy()?, 0),
    };
    var.set(&(value - (&buffer * lr)?)?)?;
    *state = Some(Moments {
        step: step + 1,
        exp_avg: buffer,
        exp_avg_sq: None,
    });
    Ok(())
}

/// PyTorch's single-tensor AdamW update (in place on the CPU, tensor ops elsewhere).
fn update_one(
    var: &Var,
    grad: &Tensor,
    state: &mut Moments,
    cfg: &AdamWConfig,
    lr: f64,
    weight_decay: f64,
) -> Result<()> {
    state.step += 1;
    let step = state.step as i32;
    let bias_correction1 = 1.0 - cfg.beta1.powi(step);
    let bias_correction2_sqrt = (1.0 - cfg.beta2.powi(step)).sqrt();
    let step_size = lr / bias_correction1;
    let decay = 1.0 - lr * weight_decay;
    let coefficients = UpdateCoefficients {
        step_size,
        bias_correction2_sqrt,
        decay,
    };
    let Some(second) = state.exp_avg_sq.as_mut() else {
        return Err(Error::ParamMismatch(
            "AdamW state without a second moment".into(),
        ));
    };
    let moments = AdamMoments {
        first: &mut state.exp_avg,
        second,
    };
    if var.device().is_cpu() && grad.dtype() == DType::F32 {
        update_in_place(var, grad, moments, cfg, coefficients)
    } else {
        update_with_tensor_ops(var, grad, moments, cfg, coefficients)
    }
}

/// The two moments of one AdamW parameter, updated in place.
struct AdamMoments<'a> {
    first: &'a mut Tensor,
    second: &'a mut Tensor,
}

/// Per-step scalars of the AdamW update.
#[derive(Debug, Clone, Copy)]
struct UpdateCoefficients {
    step_size: f64,
    bias_correction2_sqrt: f64,
    decay: f64,
}

fn update_in_place(
    var: &Var,
    grad: &Tensor,
    state: AdamMoments<'_>,
    cfg: &AdamWConfig,
    c: UpdateCoefficients,
) -> Result<()> {
    let UpdateCoefficients {
        step_size,
        bias_correction2_sqrt,
        decay,
    } = c;
    {
        let grad = grad.contiguous()?;
        state.first.inplace_op2(
            &grad,
            &FirstMoment {
                weight: (1.0 - cfg.beta1) as f32,
            },
        )?;
        let second = SecondMoment {
            beta2: cfg.beta2 as f32,
            weight: (1.0 - cfg.beta2) as f32,
        };
        state.second.inplace_op2(&grad, &second)?;
        let update = AdamWParamUpdate {
            decay: decay as f32,
            step_size: step_size as f32,
            bias_correction2_sqrt: bias_correction2_sqrt as f32,
            eps: cfg.eps as f32,
        };
        var.as_tensor()
            .inplace_op3(state.first, state.second, &update)?;
    }
    Ok(())
}

fn update_with_tensor_ops(
    var: &Var,
    grad: &Tensor,
    state: AdamMoments<'_>,
    cfg: &AdamWConfig,
    c: UpdateCoefficients,
) -> Result<()> {
    let UpdateCoefficients {
        step_size,
        bias_correction2_sqrt,
        decay,
    } = c;
    let value = (var.as_detached_tensor() * decay)?;
    // exp_avg.lerp_(grad, 1 - beta1)
    let exp_avg = (&*state.first + ((grad - &*state.first)? * (1.0 - cfg.beta1))?)?;
    let exp_avg_sq = ((&*state.second * cfg.beta2)? + (grad.sqr()? * (1.0 - cfg.beta2))?)?;
    let denom = ((exp_avg_sq.sqrt()? / bias_correction2_sqrt)? + cfg.eps)?;
    let updated = (value - (exp_avg.div(&denom)? * step_size)?)?;
    var.set(&updated)?;
    *state.first = exp_avg;
    *state.second = exp_avg_sq;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_backbone_parameters_hold_still() {
        let all = TrainedBackbone {
            frozen: false,
            first_block: None,
        };
        let frozen = TrainedBackbone {
            frozen: true,
            ..all
        };
        let last_two = TrainedBackbone {
            first_block: Some(10),
            ..all
        };
        for name in ["backbone.blocks.3.attn.qkv.weight", "backbone.cls_token"] {
            assert!(!all.holds(name) && frozen.holds(name) && last_two.holds(name));
        }
        assert!(!last_two.holds("backbone.blocks.10.mlp.fc1.bias"));
        assert!(!last_two.holds("backbone.norm.weight"));
        assert!(last_two.holds("backbone.patch_embed.proj.weight"));
        assert!(last_two.holds("backbone.blocks.9.norm1.weight"));
        for trained in [all, frozen, last_two] {
            assert!(!trained.holds("head.last_layer.weight_v"));
        }
    }

    #[test]
    fn in_place_and_tensor_updates_agree() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let init = Tensor::randn(0f32, 1., (7, 5), &dev)?;
        let cfg = AdamWConfig::default();
        let grads: Vec<Tensor> = (0..3)
            .map(|_| Tensor::randn(0f32, 1., (7, 5), &dev))
            .collect::<candle_core::Result<_>>()?;
        let run = |in_place: bool| -> Result<Vec<f32>> {
            let var = Var::from_tensor(&init)?;
            let (mut first, mut second) = (init.zeros_like()?, init.zeros_like()?);
            for (grad, step) in grads.iter().zip(1i32..) {
                let state = AdamMoments {
                    first: &mut first,
                    second: &mut second,
                };
                let c = UpdateCoefficients {
                    step_size: 1e-3 / (1.0 - 0.9f64.powi(step)),
                    bias_correction2_sqrt: (1.0 - 0.999f64.powi(step)).sqrt(),
                    decay: 1.0 - 1e-3 * 0.04,
                };
                if in_place {
                    update_in_place(&var, grad, state, &cfg, c)?;
                } else {
                    update_with_tensor_ops(&var, grad, state, &cfg, c)?;
                }
            }
            Ok(var.as_tensor().flatten_all()?.to_vec1::<f32>()?)
        };
        let (a, b) = (run(true)?, run(false)?);
        for (x, y) in a.iter().zip(&b) {
            // a few ulps: the two paths round the same maths in a different order
            assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{x} vs {y}");
        }
        Ok(())
    }

    /// Two steps of `torch.optim.SGD(momentum=0.9, weight_decay=wd)` by hand: with
    /// p = 1, g = 1, lr = 0.1: wd 0 gives 0.9 then 0.71; wd 0.5 gives d = 1.5, p = 0.85,
    /// then d = 1.425, buf = 0.9·1.5 + 1.425 = 2.775, p = 0.5725.
    #[test]
    fn sgd_matches_torch_by_hand() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let params = [
            Param {
                name: "head.mlp.0.weight".into(),
                var: Var::from_tensor(&Tensor::ones((1, 1), DType::F32, &dev)?)?,
                trainable: true,
            },
            Param {
                name: "head.mlp.0.bias".into(),
                var: Var::from_tensor(&Tensor::ones(1, DType::F32, &dev)?)?,
                trainable: true,
            },
        ];
        let grads = [
            Some(Tensor::ones((1, 1), DType::F32, &dev)?),
            Some(Tensor::ones(1, DType::F32, &dev)?),
        ];
        let mut sgd = Optimizer::new(Rule::Sgd { momentum: 0.9 }, 2);
        let mut values = Vec::new();
        for _ in 0..2 {
            sgd.step(&params, &grads, 0.1, 0.5)?;
            let weight = params[0].var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let bias = params[1].var.as_tensor().to_vec1::<f32>()?;
            values.push((weight[0], bias[0]));
        }
        // the bias is in the no-decay group
        let want = [(0.85, 0.9), (0.5725, 0.71)];
        for ((w, b), (ww, wb)) in values.iter().zip(want) {
            assert!((w - ww).abs() < 1e-6 && (b - wb).abs() < 1e-6, "{values:?}");
        }
        assert!(sgd
            .moments()
            .iter()
            .flatten()
            .all(|m| m.exp_avg_sq.is_none()));
        let mut adamw = Optimizer::adamw(AdamWConfig::default(), 2);
        let refused = adamw.set_moments(sgd.moments().to_vec());
        assert!(refused.is_err(), "SGD state restored into AdamW");
        Ok(())
    }

    #[test]
    fn groups_follow_the_official_rule() {
        assert!(is_decayed("backbone.cls_token", &[1, 1, 192]));
        assert!(is_decayed("backbone.pos_embed", &[1, 197, 192]));
        assert!(is_decayed("head.last_layer.weight_v", &[1024, 128]));
        assert!(!is_decayed("backbone.norm.weight", &[192]));
        assert!(!is_decayed("head.mlp.0.bias", &[512]));
    }

    #[test]
    fn clipping_is_per_tensor() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let big = Tensor::new(&[3f32, 4.], &dev)?; // norm 5
        let small = Tensor::new(&[0.3f32, 0.4], &dev)?; // norm 0.5
        let mut grads = vec![Some(big), None, Some(small)];
        let norms = clip_gradients(&mut grads, 1.0)?;
        assert_eq!(norms[1], None);
        let clipped = grads[0].as_ref().map(|g| g.to_vec1::<f32>()).transpose()?;
        let clipped = clipped.unwrap_or_default();
        assert!((clipped[0] - 0.6).abs() < 1e-5 && (clipped[1] - 0.8).abs() < 1e-5);
        let kept = grads[2].as_ref().map(|g| g.to_vec1::<f32>()).transpose()?;
        assert_eq!(kept.unwrap_or_default(), [0.3, 0.4]);
        Ok(())
    }
}
