//! Vision Transformer as in the official DINO `vision_transformer.py`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use candle_core::{Device, IndexOp, Tensor};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::interp::pos_embed_resize_matrix;
use super::layers::{linear_gelu, LayerNorm, Linear, LAYER_NORM_EPS};
use super::ops;
use super::ops::block::{BlockOp, BlockParams};
use super::params::{Init, ParamBuilder};
use crate::{Error, Result};

/// The three official sizes. All use 12 blocks, 64-d heads and an MLP ratio of 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VitArch {
    /// ViT-Tiny: 192-d, 3 heads.
    VitTiny,
    /// ViT-Small: 384-d, 6 heads.
    VitSmall,
    /// ViT-Base: 768-d, 12 heads.
    VitBase,
}

impl VitArch {
    /// Embedding width and number of heads.
    pub fn dims(self) -> (usize, usize) {
        match self {
            VitArch::VitTiny => (192, 3),
            VitArch::VitSmall => (384, 6),
            VitArch::VitBase => (768, 12),
        }
    }
}

/// Shape of a ViT. `img_size` fixes the learned positional grid (`img_size / patch_size`
/// per side); other input sizes interpolate it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Token width.
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// Hidden width of the MLP as a multiple of `embed_dim`.
    pub mlp_ratio: usize,
    /// Side of a square patch in pixels (8 or 16 for the official models).
    pub patch_size: usize,
    /// Side of the image the positional grid was made for (224).
    pub img_size: usize,
    /// Stochastic-depth rate of the last block (linearly 0 → rate over depth); students only.
    pub drop_path_rate: f64,
}

impl VitConfig {
    /// An official preset with the given patch size.
    pub fn preset(arch: VitArch, patch_size: usize) -> Self {
        let (embed_dim, num_heads) = arch.dims();
        Self {
            embed_dim,
            depth: 12,
            num_heads,
            mlp_ratio: 4,
            patch_size,
            img_size: 224,
            drop_path_rate: 0.0,
        }
    }

    /// Patches per side of the learned positional grid.
    pub fn grid_side(&self) -> usize {
        self.img_size / self.patch_size
    }

    fn validate(&self) -> Result<()> {
        if self.patch_size == 0 || self.img_size < self.patch_size {
            return Err(Error::Config(format!(
                "patch size {} does not fit image size {}",
                self.patch_size, self.img_size
            )));
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(Error::Config(format!(
                "embed_dim {} is not a multiple of {} heads",
                self.embed_dim, self.num_heads
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
}

impl Attention {
    fn new(pb: &ParamBuilder, dim: usize, num_heads: usize) -> Result<Self> {
        Ok(Self {
            qkv: Linear::new(&pb.push("qkv"), dim, 3 * dim, true)?,
            proj: Linear::new(&pb.push("proj"), dim, dim, true)?,
            num_heads,
        })
    }

    /// The block output (fused kernel on the CPU, no probabilities kept).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let ctx = ops::attention(&self.qkv.forward(x)?, self.num_heads)?;
        self.proj.forward(&ctx)
    }

    /// The block output and the attention probabilities `[B, heads, N, N]`.
    fn forward_with_probs(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (ctx, probs) = ops::attention_composed(&self.qkv.forward(x)?, self.num_heads)?;
        Ok((self.proj.forward(&ctx)?, probs))
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(pb: &ParamBuilder, dim: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(&pb.push("fc1"), dim, hidden, true)?,
            fc2: Linear::new(&pb.push("fc2"), hidden, dim, true)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&linear_gelu(&self.fc1, x)?)
    }
}

/// Per-sample stochastic-depth scales: 0 with probability `rate`, else `1 / (1 - rate)`.
/// Empty (all ones) in eval mode or when `rate` is 0; draws one number per sample.
fn drop_path_scales(batch: usize, rate: f64, rng: Option<&mut StdRng>) -> Vec<f32> {
    match rng {
        Some(rng) if rate > 0.0 => {
            let keep = 1.0 - rate;
            (0..batch)
                .map(|_| {
                    if rng.random::<f64>() < keep {
                        (1.0 / keep) as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Per-sample stochastic depth on a residual branch `[B, ...]`.
fn drop_path(x: &Tensor, rate: f64, rng: Option<&mut StdRng>) -> Result<Tensor> {
    let b = x.dim(0)?;
    let scales = drop_path_scales(b, rate, rng);
    if scales.is_empty() {
        return Ok(x.clone());
    }
    let mask = Tensor::from_vec(scales, (b, 1, 1), x.device())?;
    Ok(x.broadcast_mul(&mask)?)
}

#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
    drop_path: f64,
    /// The fused op's concatenated parameters, kept once the backbone is frozen.
    frozen_params: OnceLock<Tensor>,
}

/// How a gradient-free forward may compute (see [`Vit::freeze`]).
#[derive(Debug, Clone, Copy, Default)]
struct Inference {
    /// Linear layers of gradient-free forwards in bf16 on AMX.
    bf16: bool,
    /// Linear layers of forwards that keep activations, and of their backward, in bf16.
    bf16_training: bool,
    /// Weights never change again: parameters may be cached.
    frozen: bool,
}

impl Block {
    fn new(pb: &ParamBuilder, cfg: &VitConfig, drop_path: f64) -> Result<Self> {
        let dim = cfg.embed_dim;
        Ok(Self {
            norm1: LayerNorm::new(&pb.push("norm1"), dim)?,
            attn: Attention::new(&pb.push("attn"), dim, cfg.num_heads)?,
            norm2: LayerNorm::new(&pb.push("norm2"), dim)?,
            mlp: Mlp::new(&pb.push("mlp"), dim, dim * cfg.mlp_ratio)?,
            drop_path,
            frozen_params: OnceLock::new(),
        })
    }

    fn forward(&self, x: &Tensor, rng: Option<&mut StdRng>, mode: Inference) -> Result<Tensor> {
        if ops::fused(x) {
            self.forward_fused(x, rng, mode)
        } else {
            self.forward_composed(x, rng)
        }
    }

    /// The block as one fused CPU op (see [`ops::block`]).
    fn forward_fused(
        &self,
        x: &Tensor,
        mut rng: Option<&mut StdRng>,
        mode: Inference,
    ) -> Result<Tensor> {
        let flat = match (mode.frozen, self.frozen_params.get()) {
            (true, Some(flat)) => flat.clone(),
            (true, None) => {
                let flat = self.flat_params()?;
                self.frozen_params.get_or_init(|| flat).clone()
            }
            (false, _) => self.flat_params()?,
        };
        let (b, _, dim) = x.dims3()?;
        let hidden = self.mlp.fc1.weight().dim(0)?;
        let keep = x.track_op() || flat.track_op();
        let params = BlockParams::new(dim, hidden);
        let eps = LAYER_NORM_EPS as f32;
        let mut op = BlockOp::new(params, self.attn.num_heads, eps, keep);
        op.bf16 = if keep { mode.bf16_training } else { mode.bf16 };
        op.attn_scale = drop_path_scales(b, self.drop_path, rng.as_deref_mut());
        op.mlp_scale = drop_path_scales(b, self.drop_path, rng);
        Ok(x.contiguous()?.apply_op2(&flat, op)?)
    }

    /// The block's twelve tensors as one vector, in [`BlockParams`] order.
    fn flat_params(&self) -> Result<Tensor> {
        let (n1w, n1b) = self.norm1.weight_and_bias();
        let (n2w, n2b) = self.norm2.weight_and_bias();
        let linears = [
            &self.attn.qkv,
            &self.attn.proj,
            &self.mlp.fc1,
            &self.mlp.fc2,
        ];
        let mut parts = vec![n1w.clone(), n1b.clone()];
        for (i, layer) in linears.iter().enumerate() {
            if i == 2 {
                parts.extend([n2w.clone(), n2b.clone()]);
            }
            let bias = layer
                .bias()
                .ok_or_else(|| Error::Config("fused block needs biased linears".into()))?;
            parts.extend([layer.weight().flatten_all()?, bias.clone()]);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// The block from candle primitives (other devices; reference for the fused op).
    fn forward_composed(&self, x: &Tensor, mut rng: Option<&mut StdRng>) -> Result<Tensor> {
        let y = self.attn.forward(&self.norm1.forward(x)?)?;
        let x = (x + drop_path(&y, self.drop_path, rng.as_deref_mut())?)?;
        let y = self.mlp.forward(&self.norm2.forward(&x)?)?;
        Ok((&x + drop_path(&y, self.drop_path, rng)?)?)
    }
}

/// The ViT backbone: patch embedding, CLS token, positional embedding, blocks, final norm.
#[derive(Debug)]
pub struct Vit {
    cfg: VitConfig,
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    resize_matrices: Mutex<HashMap<(usize, usize), Tensor>>,
    /// Gradient-free forwards run their linear layers in bf16 where the CPU has AMX.
    bf16_inference: AtomicBool,
    /// Forwards with a backward (and that backward) do too.
    bf16_training: AtomicBool,
    /// The weights will not change again ([`Vit::freeze`]).
    frozen: AtomicBool,
}

impl Vit {
    /// Creates the backbone's parameters under `pb` with the official names and init.
    pub fn new(pb: &ParamBuilder, cfg: &VitConfig) -> Result<Self> {
        cfg.validate()?;
        let dim = cfg.embed_dim;
        let patch = cfg.patch_size;
        let fan_in = 3 * patch * patch;
        let bound = 1.0 / (fan_in as f64).sqrt();
        // Creation order = PyTorch's named_parameters order (own parameters first).
        let cls_token = pb.param("cls_token", (1, 1, dim), Init::TruncNormal(0.02))?;
        let num_patches = cfg.grid_side() * cfg.grid_side();
        let pos_embed = pb.param(
            "pos_embed",
            (1, num_patches + 1, dim),
            Init::TruncNormal(0.02),
        )?;
        let proj = pb.push("patch_embed").push("proj");
        let patch_weight = proj.param("weight", (dim, 3, patch, patch), Init::Uniform(bound))?;
        let patch_bias = proj.param("bias", dim, Init::Uniform(bound))?;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let rate = if cfg.depth > 1 {
                    cfg.drop_path_rate * i as f64 / (cfg.depth - 1) as f64
                } else {
                    0.0
                };
                Block::new(&pb.push("blocks").push(i), cfg, rate)
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = LayerNorm::new(&pb.push("norm"), dim)?;
        Ok(Self {
            cfg: cfg.clone(),
            patch_weight: patch_weight.reshape((dim, fan_in))?,
            patch_bias,
            cls_token,
            pos_embed,
            blocks,
            norm,
            resize_matrices: Mutex::new(HashMap::new()),
            bf16_inference: AtomicBool::new(false),
            bf16_training: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
        })
    }

    /// The configuration the backbone was built with.
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// Patch tokens `[B, rows·cols, D]` of an NCHW image batch; trailing pixels that do
    /// not fill a whole patch are dropped, as a strided convolution does.
    fn embed_patches(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let p = self.cfg.patch_size;
        let (rows, cols) = (h / p, w / p);
        if rows == 0 || cols == 0 || c != 3 {
            return Err(Error::Config(format!(
                "input {h}x{w} with {c} channels is smaller than one {p}-pixel RGB patch"
            )));
        }
        let x = x.narrow(2, 0, rows * p)?.narrow(3, 0, cols * p)?;
        let patches = x
            .reshape((b, c, rows, p, cols, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * rows * cols, c * p * p))?;
        let tokens = ops::linear(&patches, &self.patch_weight, Some(&self.patch_bias))?
            .reshape((b, rows * cols, self.cfg.embed_dim))?;
        Ok(tokens)
    }

    /// The positional embedding for an `height × width` pixel input, CLS position first,
    /// exactly as the official `interpolate_pos_encoding`: the learned grid as is when the
    /// image is square and has as many patches as the grid, otherwise resized bicubically
    /// to `(height / patch) × (width / patch)`.
    pub fn interpolate_pos_encoding(&self, height: usize, width: usize) -> Result<Tensor> {
        let side = self.cfg.grid_side();
        let (rows, cols) = (height / self.cfg.patch_size, width / self.cfg.patch_size);
        if rows * cols == side * side && height == width {
            return Ok(self.pos_embed.clone());
        }
        let dim = self.cfg.embed_dim;
        let cls_pos = self.pos_embed.narrow(1, 0, 1)?;
        let grid = self
            .pos_embed
            .narrow(1, 1, side * side)?
            .reshape((side * side, dim))?;
        let matrix = self.resize_matrix(rows, cols, self.pos_embed.device())?;
        let resized = matrix.matmul(&grid)?.reshape((1, rows * cols, dim))?;
        Ok(Tensor::cat(&[&cls_pos, &resized], 1)?)
    }

    fn resize_matrix(&self, rows: usize, cols: usize, device: &Device) -> Result<Tensor> {
        let mut cache = self
            .resize_matrices
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = cache.get(&(rows, cols)) {
            return Ok(m.clone());
        }
        let side = self.cfg.grid_side();
        let values = pos_embed_resize_matrix(side, rows, cols);
        let m = Tensor::from_vec(values, (rows * cols, side * side), device)?;
        cache.insert((rows, cols), m.clone());
        Ok(m)
    }

    /// Tokens entering the first block: `[CLS; patches] + pos_embed`.
    fn prepare_tokens(&self, x: &Tensor) -> Result<Tensor> {
        let patches = self.embed_patches(x)?;
        let (b, _, height, width) = x.dims4()?;
        let cls = self.cls_token.broadcast_as((b, 1, self.cfg.embed_dim))?;
        let tokens = Tensor::cat(&[&cls, &patches], 1)?;
        let pos = self.interpolate_pos_encoding(height, width)?;
        Ok(tokens.broadcast_add(&pos)?)
    }

    /// Lets forwards without gradients compute the blocks' linear layers with bf16 inputs
    /// and f32 sums where the CPU has AMX (see [`ops::amx`]); off by default.
    pub fn set_bf16_inference(&self, on: bool) {
        self.bf16_inference.store(on, Ordering::Relaxed);
    }

    /// Lets forwards that keep activations for a backward, and that backward, compute the
    /// blocks' linear layers (x·Wᵀ, dy·W, dyᵀ·x) with bf16 inputs and f32 sums where the
    /// CPU has AMX; weights, gradients and everything else stay f32. Off by default.
    pub fn set_bf16_training(&self, on: bool) {
        self.bf16_training.store(on, Ordering::Relaxed);
    }

    /// Promises that the weights never change again (an embedder's backbone), so the
    /// blocks keep their fused parameter vectors instead of concatenating them per forward.
    /// A trained or EMA-updated network must not be frozen.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::Relaxed);
    }

    fn inference(&self) -> Inference {
        Inference {
            bf16: self.bf16_inference.load(Ordering::Relaxed),
            bf16_training: self.bf16_training.load(Ordering::Relaxed),
            frozen: self.frozen.load(Ordering::Relaxed),
        }
    }

    /// Normalised tokens of the last block `[B, 1 + patches, D]`. With `rng`, the
    /// student's stochastic depth is applied; without, the network runs in eval mode.
    pub fn forward_tokens(&self, x: &Tensor, mut rng: Option<&mut StdRng>) -> Result<Tensor> {
        let mut h = self.prepare_tokens(x)?;
        for block in &self.blocks {
            h = block.forward(&h, rng.as_deref_mut(), self.inference())?;
        }
        self.norm.forward(&h)
    }

    /// The CLS output `[B, D]` (the official `model(x)`).
    pub fn forward(&self, x: &Tensor, rng: Option<&mut StdRng>) -> Result<Tensor> {
        Ok(self.forward_tokens(x, rng)?.i((.., 0))?)
    }

    /// Softmax attention of the last block `[B, heads, N, N]` (`get_last_selfattention`).
    pub fn last_self_attention(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.prepare_tokens(x)?;
        let (last, rest) = self
            .blocks
            .split_last()
            .ok_or_else(|| Error::Config("a ViT needs at least one block".into()))?;
        for block in rest {
            h = block.forward(&h, None, self.inference())?;
        }
        Ok(last.attn.forward_with_probs(&last.norm1.forward(&h)?)?.1)
    }

    /// Normalised outputs of the last `n` blocks, oldest first (`get_intermediate_layers`).
    pub fn intermediate_layers(&self, x: &Tensor, n: usize) -> Result<Vec<Tensor>> {
        let mut h = self.prepare_tokens(x)?;
        let first_kept = self.blocks.len().saturating_sub(n);
        let mut outputs = Vec::with_capacity(n);
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward(&h, None, self.inference())?;
            if i >= first_kept {
                outputs.push(self.norm.forward(&h)?);
            }
        }
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn presets_have_the_official_sizes() -> Result<()> {
        // timm/official counts: ViT-Ti/16 5.52 M, ViT-S/16 21.67 M, ViT-S/8 21.67 M + grid
        for (arch, patch, want) in [
            (VitArch::VitTiny, 16, 5_524_416),
            (VitArch::VitSmall, 16, 21_665_664),
        ] {
            let pb = ParamBuilder::frozen(&Device::Cpu, 0);
            Vit::new(&pb, &VitConfig::preset(arch, patch))?;
            assert_eq!(pb.store().num_values(), want, "{arch:?}/{patch}");
        }
        Ok(())
    }

    #[test]
    fn fused_block_matches_the_composed_block(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let cfg = VitConfig {
            embed_dim: 48,
            num_heads: 3,
            ..VitConfig::preset(VitArch::VitTiny, 16)
        };
        let pb = ParamBuilder::trainable(&Device::Cpu, 3);
        let block = Block::new(&pb, &cfg, 0.3)?;
        let store = pb.store();
        let x = candle_core::Var::randn(0f32, 1., (6, 5, 48), &Device::Cpu)?;
        let r = Tensor::randn(0f32, 1., (6, 5, 48), &Device::Cpu)?;
        let run = |fused: bool| -> Result<(Tensor, candle_core::backprop::GradStore)> {
            let mut rng = StdRng::seed_from_u64(9);
            let y = if fused {
                block.forward_fused(x.as_tensor(), Some(&mut rng), Inference::default())?
            } else {
                block.forward_composed(x.as_tensor(), Some(&mut rng))?
            };
            let grads = (&y * &r)?.sum_all()?.backward()?;
            Ok((y, grads))
        };
        let (y1, g1) = run(true)?;
        let (y2, g2) = run(false)?;
        let diff = |a: &Tensor, b: &Tensor| -> candle_core::Result<f32> {
            (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
        };
        assert!(
            diff(&y1, &y2)? < 1e-5,
            "forward differs by {}",
            diff(&y1, &y2)?
        );
        let mut tensors: Vec<(String, Tensor)> = vec![("x".into(), x.as_tensor().clone())];
        tensors.extend(
            store
                .params()
                .iter()
                .map(|p| (p.name.clone(), p.var.as_tensor().clone())),
        );
        for (name, t) in tensors {
            let (a, b) = (
                g1.get(&t).ok_or("no fused grad")?,
                g2.get(&t).ok_or("no composed grad")?,
            );
            let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-3);
            assert!(
                diff(a, b)? < 1e-4 * scale,
                "{name}: gradients differ by {}",
                diff(a, b)?
            );
        }
        Ok(())
    }

    #[test]
    fn drop_path_zeroes_whole_samples_and_rescales_the_rest() -> Result<()> {
        let x = Tensor::ones((64, 2, 3), candle_core::DType::F32, &Device::Cpu)?;
        let mut rng = StdRng::seed_from_u64(0);
        let y = drop_path(&x, 0.25, Some(&mut rng))?;
        let per_sample = y.sum((1, 2))?.to_vec1::<f32>()?;
        let kept = per_sample.iter().filter(|&&s| s > 0.0).count();
        assert!(per_sample
            .iter()
            .all(|&s| s == 0.0 || (s - 6.0 / 0.75).abs() < 1e-5));
        assert!((32..64).contains(&kept), "kept {kept} of 64");
        // eval mode (no rng) is the identity
        let same = drop_path(&x, 0.25, None)?;
        assert_eq!(same.sum_all()?.to_scalar::<f32>()?, 384.0);
        Ok(())
    }
}
