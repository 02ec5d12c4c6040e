//! AdamW with the official DINO parameter groups, per-tensor gradient clipping and the
//! frozen last layer, as `torch.optim.AdamW` + `utils.clip_gradients` +
//! `utils.cancel_gradients_last_layer` do them.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use super::inplace::{AdamWParamUpdate, FirstMoment, SecondMoment};

use crate::model::{Param, ParamStore};
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
        let norm = f64::from(g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?);
        let coef = clip / (norm + 1e-6);
        if clip > 0.0 && coef < 1.0 {
            *grad = Some((g * coef)?);
        }
        norms.push(Some(norm));
    }
    Ok(norms)
}

/// `utils.cancel_gradients_last_layer` for a step inside the freeze: the gradients of
/// `*last_layer*` are dropped, so AdamW skips those tensors entirely.
pub fn cancel_last_layer(grads: &mut [Option<Tensor>], params: &[Param]) {
    for (grad, param) in grads.iter_mut().zip(params) {
        if param.name.contains("last_layer") {
            *grad = None;
        }
    }
}

/// Adam moments of one parameter.
#[derive(Debug, Clone)]
pub struct Moments {
    /// Steps taken on this tensor (PyTorch counts per tensor).
    pub step: u64,
    /// First moment.
    pub exp_avg: Tensor,
    /// Second moment.
    pub exp_avg_sq: Tensor,
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

/// AdamW over a [`ParamStore`] with the two official groups.
#[derive(Debug, Clone)]
pub struct AdamW {
    cfg: AdamWConfig,
    moments: Vec<Option<Moments>>,
}

impl AdamW {
    /// An optimizer for `n_params` parameters (aligned with the store's order).
    pub fn new(cfg: AdamWConfig, n_params: usize) -> Self {
        Self {
            cfg,
            moments: vec![None; n_params],
        }
    }

    /// Moments per parameter, for checkpoints.
    pub fn moments(&self) -> &[Option<Moments>] {
        &self.moments
    }

    /// Restores moments saved by [`AdamW::moments`].
    pub fn set_moments(&mut self, moments: Vec<Option<Moments>>) -> Result<()> {
        if moments.len() != self.moments.len() {
            return Err(Error::ParamMismatch(format!(
                "{} optimizer states for {} parameters",
                moments.len(),
                self.moments.len()
            )));
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
            let state = match moments {
                Some(m) => m,
                None => moments.insert(Moments {
                    step: 0,
                    exp_avg: param.var.zeros_like()?.contiguous()?,
                    exp_avg_sq: param.var.zeros_like()?.contiguous()?,
                }),
            };
            update_one(&param.var, grad, state, &self.cfg, lr, decay)?;
        }
        Ok(())
    }
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
    if var.device().is_cpu() && grad.dtype() == DType::F32 {
        update_in_place(var, grad, state, cfg, coefficients)
    } else {
        update_with_tensor_ops(var, grad, state, cfg, coefficients)
    }
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
    state: &mut Moments,
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
        state.exp_avg.inplace_op2(
            &grad,
            &FirstMoment {
                weight: (1.0 - cfg.beta1) as f32,
            },
        )?;
        let second = SecondMoment {
            beta2: cfg.beta2 as f32,
            weight: (1.0 - cfg.beta2) as f32,
        };
        state.exp_avg_sq.inplace_op2(&grad, &second)?;
        let update = AdamWParamUpdate {
            decay: decay as f32,
            step_size: step_size as f32,
            bias_correction2_sqrt: bias_correction2_sqrt as f32,
            eps: cfg.eps as f32,
        };
        var.as_tensor()
            .inplace_op3(&state.exp_avg, &state.exp_avg_sq, &update)?;
    }
    Ok(())
}

fn update_with_tensor_ops(
    var: &Var,
    grad: &Tensor,
    state: &mut Moments,
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
    let exp_avg = (&state.exp_avg + ((grad - &state.exp_avg)? * (1.0 - cfg.beta1))?)?;
    let exp_avg_sq = ((&state.exp_avg_sq * cfg.beta2)? + (grad.sqr()? * (1.0 - cfg.beta2))?)?;
    let denom = ((exp_avg_sq.sqrt()? / bias_correction2_sqrt)? + cfg.eps)?;
    let updated = (value - (exp_avg.div(&denom)? * step_size)?)?;
    var.set(&updated)?;
    state.exp_avg = exp_avg;
    state.exp_avg_sq = exp_avg_sq;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let mut state = Moments {
                step: 0,
                exp_avg: init.zeros_like()?,
                exp_avg_sq: init.zeros_like()?,
            };
            for (grad, step) in grads.iter().zip(1..) {
                state.step = step;
                let c = UpdateCoefficients {
                    step_size: 1e-3 / (1.0 - 0.9f64.powi(step as i32)),
                    bias_correction2_sqrt: (1.0 - 0.999f64.powi(step as i32)).sqrt(),
                    decay: 1.0 - 1e-3 * 0.04,
                };
                if in_place {
                    update_in_place(&var, grad, &mut state, &cfg, c)?;
                } else {
                    update_with_tensor_ops(&var, grad, &mut state, &cfg, c)?;
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
