//! The DINO projection head (`DINOHead` of the official `vision_transformer.py`).

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use super::layers::{gelu, l2_normalize, linear_gelu, BatchNorm, Linear};
use super::ops;
use super::ops::head_loss::HeadParams;
use super::params::{Init, ParamBuilder};
use crate::{Error, Result};

/// Shape of the head. The official defaults are hidden 2048, bottleneck 256, three
/// layers, out_dim 65536 and a fixed-norm last layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// Width of the backbone output it reads.
    pub in_dim: usize,
    /// Number of prototypes (`K`).
    pub out_dim: usize,
    /// Hidden width of the MLP.
    pub hidden_dim: usize,
    /// Width before the L2 normalisation and the weight-normed layer.
    pub bottleneck_dim: usize,
    /// Keep the weight-norm magnitude `g` fixed at 1 (not trained).
    pub norm_last_layer: bool,
    /// BatchNorm1d after each hidden linear layer (official `use_bn_in_head`), in
    /// training mode (batch statistics) whenever the head runs.
    #[serde(default)]
    pub use_bn: bool,
}

impl HeadConfig {
    /// The official head for a backbone of width `in_dim` with `out_dim` prototypes.
    pub fn official(in_dim: usize, out_dim: usize) -> Self {
        Self {
            in_dim,
            out_dim,
            hidden_dim: 2048,
            bottleneck_dim: 256,
            norm_last_layer: true,
            use_bn: false,
        }
    }
}

/// Linear → GELU → Linear → GELU → Linear → L2-normalise → weight-normed Linear (no bias),
/// with a BatchNorm before each GELU when `use_bn`.
#[derive(Debug, Clone)]
pub struct DinoHead {
    mlp: [Linear; 3],
    bns: Option<[BatchNorm; 2]>,
    weight_g: Tensor,
    weight_v: Tensor,
}

impl DinoHead {
    /// Creates the head's parameters under `pb` with official names
    /// (`mlp.0/2/4.*`, or `mlp.0/3/6.*` and BatchNorms `mlp.1/4.*` with `use_bn`;
    /// `last_layer.weight_g`, `last_layer.weight_v`) and init.
    pub fn new(pb: &ParamBuilder, cfg: &HeadConfig) -> Result<Self> {
        if cfg.out_dim == 0 || cfg.bottleneck_dim == 0 || cfg.hidden_dim == 0 {
            return Err(Error::Config(format!(
                "head dimensions must be positive: {cfg:?}"
            )));
        }
        let pbm = pb.push("mlp");
        // nn.Sequential indices: Linear, (BatchNorm1d,) GELU per hidden layer.
        let step = if cfg.use_bn { 3 } else { 2 };
        let mlp = [
            Linear::new(&pbm.push(0), cfg.in_dim, cfg.hidden_dim, true)?,
            Linear::new(&pbm.push(step), cfg.hidden_dim, cfg.hidden_dim, true)?,
            Linear::new(
                &pbm.push(2 * step),
                cfg.hidden_dim,
                cfg.bottleneck_dim,
                true,
            )?,
        ];
        let bns = if cfg.use_bn {
            Some([
                BatchNorm::new(&pbm.push(1), cfg.hidden_dim)?,
                BatchNorm::new(&pbm.push(4), cfg.hidden_dim)?,
            ])
        } else {
            None
        };
        let last = pb.push("last_layer");
        let g_shape = (cfg.out_dim, 1);
        let weight_g = if cfg.norm_last_layer {
            last.fixed_param("weight_g", g_shape, Init::Ones)?
        } else {
            last.param("weight_g", g_shape, Init::Ones)?
        };
        // nn.Linear's default init: the official _init_weights runs before last_layer exists.
        let bound = 1.0 / (cfg.bottleneck_dim as f64).sqrt();
        let weight_v = last.param(
            "weight_v",
            (cfg.out_dim, cfg.bottleneck_dim),
            Init::Uniform(bound),
        )?;
        Ok(Self {
            mlp,
            bns,
            weight_g,
            weight_v,
        })
    }

    /// The L2-normalised bottleneck `F.normalize(mlp(x))`, `[B, bottleneck]`.
    pub fn bottleneck(&self, x: &Tensor) -> Result<Tensor> {
        let x = match &self.bns {
            None => linear_gelu(&self.mlp[1], &linear_gelu(&self.mlp[0], x)?)?,
            Some([bn0, bn1]) => {
                let x = gelu(&bn0.forward(&self.mlp[0].forward(x)?, true, false)?)?;
                gelu(&bn1.forward(&self.mlp[1].forward(&x)?, true, false)?)?
            }
        };
        l2_normalize(&self.mlp[2].forward(&x)?)
    }

    /// Widths and the eight tensors as one flat vector in [`HeadParams`] order, for the
    /// fused head and loss ([`ops::head_loss`]); `None` for a head with BatchNorms.
    pub fn flat_params(&self) -> Result<Option<(HeadParams, Tensor)>> {
        if self.bns.is_some() {
            return Ok(None);
        }
        let mut parts = Vec::with_capacity(8);
        for layer in &self.mlp {
            let Some(bias) = layer.bias() else {
                return Ok(None);
            };
            parts.extend([layer.weight().flatten_all()?, bias.clone()]);
        }
        parts.extend([self.weight_v.flatten_all()?, self.weight_g.flatten_all()?]);
        let (hidden, in_dim) = self.mlp[0].weight().dims2()?;
        let (out_dim, bottleneck) = self.weight_v.dims2()?;
        let params = HeadParams {
            in_dim,
            hidden,
            bottleneck,
            out_dim,
        };
        Ok(Some((params, Tensor::cat(&parts, 0)?)))
    }

    /// Logits over the prototypes, `[B, out_dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let z = self.bottleneck(x)?;
        // x Wᵀ with W = g v / ‖v‖ (rows) is (x vᵀ) with column k scaled by g_k / ‖v_k‖:
        // the scaling touches [B, K] values instead of the [K, bottleneck] weight.
        let v_norm = self.weight_v.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        let column_scale = self.weight_g.div(&v_norm)?.t()?;
        Ok(ops::linear(&z, &self.weight_v, None)?.broadcast_mul(&column_scale)?)
    }
}
