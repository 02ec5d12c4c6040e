//! Small differentiable layers shared by the ViT and the DINO head.
//!
//! candle's fused `LayerNorm`, `ops::layer_norm` and `ops::softmax_last_dim` have no
//! backward pass and silently cut the graph, so everything here is either composed of
//! differentiable primitives or a custom op with its own backward (see [`super::ops`]).

use candle_core::{Tensor, Var, D};

use super::ops;
use super::params::{Init, ParamBuilder};
use crate::Result;

/// LayerNorm epsilon of the official ViT (`partial(nn.LayerNorm, eps=1e-6)`).
pub const LAYER_NORM_EPS: f64 = 1e-6;

/// `y = x Wᵀ + b` over the last dimension, PyTorch weight layout `[out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A linear layer with the official ViT/DINO-head init: weights truncated normal
    /// (std 0.02), bias zero.
    pub fn new(pb: &ParamBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = pb.param("weight", (out_dim, in_dim), Init::TruncNormal(0.02))?;
        let bias = if bias {
            Some(pb.param("bias", out_dim, Init::Zeros)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// The weight, `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[out]`, if the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Applies the layer to `[..., in]`, giving `[..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, self.bias.as_ref())
    }

    /// `x Wᵀ` only, for callers that fuse the bias into the next operation.
    pub fn forward_without_bias(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, None)
    }

    fn apply(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let dims = x.dims();
        let in_dim = dims.last().copied().unwrap_or(1);
        let rows = x.elem_count() / in_dim.max(1);
        let y = ops::linear(&x.reshape((rows, in_dim))?, &self.weight, bias)?;
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = self.weight.dim(0)?;
        }
        Ok(y.reshape(out_dims)?)
    }
}

/// LayerNorm over the last dimension with learned scale and shift.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    /// A LayerNorm initialised to the identity (scale 1, shift 0).
    pub fn new(pb: &ParamBuilder, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: pb.param("weight", dim, Init::Ones)?,
            bias: pb.param("bias", dim, Init::Zeros)?,
        })
    }

    /// The scale and the shift.
    pub fn weight_and_bias(&self) -> (&Tensor, &Tensor) {
        (&self.weight, &self.bias)
    }

    /// Normalises `x` over its last dimension (biased variance, eps 1e-6).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, LAYER_NORM_EPS)
    }
}

/// GELU with the exact erf formulation (`nn.GELU()`'s default).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.gelu_erf()?)
}

/// `gelu(linear(x))`: the linear layer and the GELU fused with the bias on the CPU.
pub fn linear_gelu(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    match &layer.bias {
        Some(bias) => ops::bias_gelu(&layer.forward_without_bias(x)?, bias),
        None => gelu(&layer.forward(x)?),
    }
}

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    ops::softmax_last_dim(x)
}

/// Log-softmax over the last dimension, differentiable.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&log_sum)?)
}

/// `x / max(‖x‖₂, 1e-12)` over the last dimension (`F.normalize(x, dim=-1)`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

/// BatchNorm epsilon and running-average momentum (`nn.BatchNorm2d`'s defaults).
pub const BATCH_NORM_EPS: f64 = 1e-5;
const BATCH_NORM_MOMENTUM: f64 = 0.1;

/// `nn.BatchNorm1d/2d`: learned scale and shift, running mean and variance as buffers.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
}

impl BatchNorm {
    /// Scale 1, shift 0, running mean 0 and variance 1, under PyTorch's key names.
    pub fn new(pb: &ParamBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            weight: pb.param("weight", channels, Init::Ones)?,
            bias: pb.param("bias", channels, Init::Zeros)?,
            running_mean: pb.buffer("running_mean", channels, 0.0)?,
            running_var: pb.buffer("running_var", channels, 1.0)?,
            num_batches_tracked: pb.buffer("num_batches_tracked", (), 0.0)?,
        })
    }

    /// Normalises `x: [N, C, ...]` (then a ReLU when `relu`). In training mode with the
    /// batch's statistics, moving the running averages as PyTorch does (momentum 0.1,
    /// unbiased variance); in eval mode with the running averages.
    pub fn forward(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        if train {
            let (y, moments) =
                ops::batch_norm_train(x, &self.weight, &self.bias, BATCH_NORM_EPS, relu)?;
            self.track(&moments)?;
            return Ok(y);
        }
        let rstd = (self.running_var.as_detached_tensor() + BATCH_NORM_EPS)?
            .sqrt()?
            .recip()?;
        let scale = self.weight.mul(&rstd)?;
        let shift = self
            .bias
            .sub(&self.running_mean.as_detached_tensor().mul(&scale)?)?;
        let mut shape = vec![1; x.rank()];
        shape[1] = x.dim(1)?;
        let y = x
            .broadcast_mul(&scale.reshape(shape.clone())?)?
            .broadcast_add(&shift.reshape(shape)?)?;
        Ok(if relu { y.relu()? } else { y })
    }

    fn track(&self, moments: &ops::BatchMoments) -> Result<()> {
        let m = BATCH_NORM_MOMENTUM;
        let n = moments.count as f64;
        let unbiased = (&moments.var * (n / (n - 1.0).max(1.0)))?;
        let mean = ((self.running_mean.as_detached_tensor() * (1.0 - m))? + (&moments.mean * m)?)?;
        let var = ((self.running_var.as_detached_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        let count = (self.num_batches_tracked.as_detached_tensor() + 1.0)?;
        self.running_mean.set(&mean)?;
        self.running_var.set(&var)?;
        self.num_batches_tracked.set(&count)?;
        Ok(())
    }
}
