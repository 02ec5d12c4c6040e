//! AdamW with the official DINO parameter groups, per-tensor gradient clipping and the
//! frozen last layer, as `torch.optim.AdamW` + `utils.clip_gradients` +
//! `utils.cancel_gradients_last_layer` do them.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

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

/// `utils.cancel_gradients_last_layer`: during the first `freeze_last_layer` epochs the
/// gradients of `*last_layer*` are dropped, so AdamW skips those tensors entirely.
pub fn cancel_last_layer(
    grads: &mut [Option<Tensor>],
    params: &[Param],
    epoch: usize,
    freeze_last_layer: usize,
) {
    if epoch >= freeze_last_layer {
        return;
    }
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
                    exp_avg: grad.zeros_like()?,
                    exp_avg_sq: grad.zeros_like()?,
                }),
            };
            update_one(&param.var, grad, state, &self.cfg, lr, decay)?;
        }
        Ok(())
    }
}

/// PyTorch's single-tensor AdamW update.
fn update_one(
    var: &Var,
    grad: &Tensor,
    state: &mut Moments,
    cfg: &AdamWConfig,
    lr: f64,
    weight_decay: f64,
) -> Result<()> {
    state.step += 1;
    let value = var.as_detached_tensor();
    let value = if weight_decay != 0.0 {
        (value * (1.0 - lr * weight_decay))?
    } else {
        value
    };
    // exp_avg.lerp_(grad, 1 - beta1)
    let exp_avg = (&state.exp_avg + ((grad - &state.exp_avg)? * (1.0 - cfg.beta1))?)?;
    let exp_avg_sq = ((&state.exp_avg_sq * cfg.beta2)? + (grad.sqr()? * (1.0 - cfg.beta2))?)?;
    let step = state.step as i32;
    let bias_correction1 = 1.0 - cfg.beta1.powi(step);
    let bias_correction2_sqrt = (1.0 - cfg.beta2.powi(step)).sqrt();
    let step_size = lr / bias_correction1;
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
