//! A whole pre-norm transformer block as one CPU custom op with a hand-written backward:
//!
//! ```text
//! x1 = x  + m1 ⊙ proj(attention(qkv(LN1(x))))
//! y  = x1 + m2 ⊙ fc2(gelu(fc1(LN2(x1))))
//! ```
//!
//! (`m1`, `m2`: per-sample stochastic-depth scales.) candle's autograd sees one node per
//! block instead of ~30, and the backward pass is a dozen strided gemms plus a few fused
//! passes. The forward keeps the activations the backward needs inside the op object,
//! which candle holds in the graph until the graph is dropped. The block's parameters
//! arrive as one flat tensor (the official tensors concatenated in [`BlockParams`]
//! order), so that the backward returns all their gradients at once.

use std::sync::{Mutex, PoisonError};

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::amx;
use super::kernels::{
    attention_backward_sample, attention_forward_sample, bias_gelu_rows_par, column_sums,
    contiguous_f32, flat_part, flat_parts_mut, layer_norm_backward_into, layer_norm_rows,
    multiply_in_place, read_f32, take_kept, AttnDims,
};
use super::scratch;
use super::small_gemm::{matmul_par, MatMut, MatRef};

type CResult<T> = candle_core::Result<T>;

/// Offsets of the block's tensors inside the flat parameter vector, in the official
/// order: norm1.{weight,bias}, attn.qkv.{weight,bias}, attn.proj.{weight,bias},
/// norm2.{weight,bias}, mlp.fc1.{weight,bias}, mlp.fc2.{weight,bias}.
#[derive(Debug, Clone, Copy)]
pub struct BlockParams {
    dim: usize,
    hidden: usize,
}

/// Index of each tensor in [`BlockParams::sizes`].
#[derive(Debug, Clone, Copy)]
enum P {
    Norm1W,
    Norm1B,
    QkvW,
    QkvB,
    ProjW,
    ProjB,
    Norm2W,
    Norm2B,
    Fc1W,
    Fc1B,
    Fc2W,
    Fc2B,
}

impl BlockParams {
    /// Layout for width `dim` and MLP width `hidden`.
    pub fn new(dim: usize, hidden: usize) -> Self {
        Self { dim, hidden }
    }

    /// Element counts of the twelve tensors, in order.
    pub fn sizes(&self) -> [usize; 12] {
        let (d, h) = (self.dim, self.hidden);
        [d, d, 3 * d * d, 3 * d, d * d, d, d, d, h * d, h, d * h, d]
    }

    /// Total element count.
    pub fn len(&self) -> usize {
        self.sizes().iter().sum()
    }

    /// Whether the block has no parameters (never, for a valid width).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get<'a>(&self, flat: &'a [f32], p: P) -> &'a [f32] {
        flat_part(&self.sizes(), flat, p as usize)
    }

    /// The twelve tensors of a flat vector (such as the gradient), writable, in order.
    fn split<'a>(&self, flat: &'a mut [f32]) -> [&'a mut [f32]; 12] {
        flat_parts_mut(&self.sizes(), flat)
    }
}

/// Activations the backward pass reads.
#[derive(Debug, Default)]
struct Saved {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    x1: Vec<f32>,
    h2: Vec<f32>,
    /// `gelu'(u)` of the MLP's pre-activation `u = fc1(LN2(x1))`, computed with `gelu(u)`
    /// in the forward (they share the erf), so that the backward only multiplies.
    gelu_grad: Vec<f32>,
    /// `gelu(u)`, kept so that the backward does not recompute it.
    g: Vec<f32>,
}

impl Saved {
    /// Hands the buffers back to [`scratch`] for the next forward.
    fn recycle(self) {
        scratch::give([self.qkv, self.ctx, self.x1, self.h2, self.gelu_grad, self.g]);
    }
}

/// The fused block. Build one per forward call.
#[derive(Debug)]
pub struct BlockOp {
    /// Tensor layout inside the flat parameters.
    pub params: BlockParams,
    /// Attention heads.
    pub num_heads: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// Per-sample residual scales of the attention branch (stochastic depth); empty = 1.
    pub attn_scale: Vec<f32>,
    /// Per-sample residual scales of the MLP branch; empty = 1.
    pub mlp_scale: Vec<f32>,
    /// Keep activations for a backward pass.
    pub keep_activations: bool,
    /// Compute the linear layers (forward, and backward when activations are kept) with
    /// bf16 inputs and f32 sums where the CPU has AMX.
    pub bf16: bool,
    saved: Mutex<Option<Saved>>,
}

impl BlockOp {
    /// A block op; `keep_activations` when a gradient will be asked for.
    pub fn new(params: BlockParams, num_heads: usize, eps: f32, keep_activations: bool) -> Self {
        Self {
            params,
            num_heads,
            eps,
            attn_scale: Vec::new(),
            mlp_scale: Vec::new(),
            keep_activations,
            bf16: false,
            saved: Mutex::new(None),
        }
    }
}

/// Row-major `rows × cols` view of a whole buffer.
pub(super) fn mat(data: &[f32], rows: usize, cols: usize) -> MatRef<'_> {
    MatRef::rows_of(data, 0, rows, cols, cols)
}

pub(super) fn mat_mut(data: &mut [f32], rows: usize, cols: usize) -> MatMut<'_> {
    MatMut::rows_of(data, 0, rows, cols, cols)
}

/// How the forward computes its products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Products {
    /// f32 gemm.
    F32,
    /// bf16 inputs, f32 sums on AMX ([`amx`]).
    Bf16,
}

/// `out = x · Wᵀ` for `W` of shape `[n_out, n_in]`.
pub(super) fn product_bt(
    products: Products,
    x: &[f32],
    w: &[f32],
    rows: usize,
    n_out: usize,
    out: &mut [f32],
) {
    let n_in = w.len() / n_out.max(1);
    product(
        products,
        mat_mut(out, rows, n_out),
        mat(x, rows, n_in),
        mat(w, n_out, n_in).t(),
    );
}

/// `out = x · Wᵀ + b` for `W` of shape `[out, in]`.
pub(super) fn linear(
    products: Products,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    rows: usize,
    out: &mut [f32],
) {
    let n_out = b.len();
    product_bt(products, x, w, rows, n_out, out);
    out.par_chunks_mut(n_out.max(1))
        .for_each(|r| r.iter_mut().zip(b).for_each(|(o, b)| *o += b));
}

/// `out = lhs · rhs` for strided views, overwriting `out`.
pub(super) fn product(products: Products, out: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>) {
    match products {
        Products::Bf16 => amx::matmul(out, lhs, rhs),
        Products::F32 => matmul_par(out, lhs, rhs, 1.0, false),
    }
}

/// Weight and bias gradients of a linear layer: `dW = dyᵀ x`, `db = Σ_rows dy`,
/// written into `dw`/`db`; and `dx = dy · W` when asked.
#[allow(clippy::too_many_arguments)]
pub(super) fn linear_backward(
    products: Products,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    rows: usize,
    dw: &mut [f32],
    db: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    let (n_out, n_in) = (db.len(), w.len() / db.len().max(1));
    product(
        products,
        mat_mut(dw, n_out, n_in),
        mat(dy, rows, n_out).t(),
        mat(x, rows, n_in),
    );
    db.copy_from_slice(&column_sums(dy, n_out));
    if let Some(dx) = dx {
        product(
            products,
            mat_mut(dx, rows, n_in),
            mat(dy, rows, n_out),
            mat(w, n_out, n_in),
        );
    }
}

/// `out[r] = base[r] + scale[sample(r)] · (branch[r] + bias)`, rows of width `bias.len()`.
fn residual(
    base: &[f32],
    branch: &[f32],
    bias: &[f32],
    scale: &[f32],
    tokens: usize,
    out: &mut [f32],
) {
    let d = bias.len().max(1);
    out.par_chunks_mut(d)
        .zip(base.par_chunks(d))
        .zip(branch.par_chunks(d))
        .enumerate()
        .with_min_len(64)
        .for_each(|(r, ((o, x), y))| {
            let s = scale.get(r / tokens.max(1)).copied().unwrap_or(1.0);
            for i in 0..d {
                o[i] = x[i] + s * (y[i] + bias[i]);
            }
        });
}

/// Multiplies each sample's rows by its scale (no-op when `scale` is empty).
fn scale_rows(m: &mut [f32], scale: &[f32], sample_len: usize) {
    if scale.is_empty() {
        return;
    }
    m.par_chunks_mut(sample_len.max(1))
        .zip(scale.par_iter())
        .for_each(|(rows, &s)| rows.iter_mut().for_each(|v| *v *= s));
}

impl BlockOp {
    fn forward_slices(&self, x: &[f32], flat: &[f32], b: usize, n: usize) -> (Vec<f32>, Saved) {
        let (p, d, h) = (&self.params, self.params.dim, self.params.hidden);
        let rows = b * n;
        let mut h1 = scratch::take(rows * d);
        layer_norm_rows(
            x,
            p.get(flat, P::Norm1W),
            p.get(flat, P::Norm1B),
            self.eps,
            &mut h1,
        );
        let products = self.products();
        let mut qkv = scratch::take(rows * 3 * d);
        linear(
            products,
            &h1,
            p.get(flat, P::QkvW),
            p.get(flat, P::QkvB),
            rows,
            &mut qkv,
        );
        let mut ctx = scratch::take(rows * d);
        let dims = self.attn_dims(b, n);
        let scale = (d / self.num_heads.max(1)) as f32;
        // Attention stays f32 in either mode: at ~200 tokens packing its operands for the
        // tile unit cost more than the products (measured: 28.5 vs 29.0 img/s).
        ctx.par_chunks_mut(n * d)
            .zip(qkv.par_chunks(n * 3 * d))
            .for_each(|(o, q)| attention_forward_sample(q, o, &dims, scale.powf(-0.5)));
        let mut a = h1; // reuse: same size
        product_bt(products, &ctx, p.get(flat, P::ProjW), rows, d, &mut a);
        let mut x1 = scratch::take(rows * d);
        residual(x, &a, p.get(flat, P::ProjB), &self.attn_scale, n, &mut x1);
        let mut h2 = a; // reuse again
        layer_norm_rows(
            &x1,
            p.get(flat, P::Norm2W),
            p.get(flat, P::Norm2B),
            self.eps,
            &mut h2,
        );
        let mut u = scratch::take(rows * h);
        product_bt(products, &h2, p.get(flat, P::Fc1W), rows, h, &mut u);
        // one pass: bias, GELU and, for a backward, its derivative (written over `u`)
        let g = bias_gelu_rows_par(&mut u, p.get(flat, P::Fc1B), self.keep_activations);
        let mut f = scratch::take(rows * d);
        product_bt(products, &g, p.get(flat, P::Fc2W), rows, d, &mut f);
        let mut y = scratch::take(rows * d);
        residual(&x1, &f, p.get(flat, P::Fc2B), &self.mlp_scale, n, &mut y);
        scratch::give([f]);
        (
            y,
            Saved {
                qkv,
                ctx,
                x1,
                h2,
                gelu_grad: u,
                g,
            },
        )
    }

    /// bf16 products when asked for and when AMX is here.
    fn products(&self) -> Products {
        if self.bf16 && amx::available() {
            Products::Bf16
        } else {
            Products::F32
        }
    }

    fn attn_dims(&self, b: usize, n: usize) -> AttnDims {
        // Shape validated in cpu_fwd; `new` cannot fail for [b, n, 3·dim] with dim % heads == 0.
        let dims = [b, n, 3 * self.params.dim];
        AttnDims::new(&dims, self.num_heads)
            .map(|(_, d)| d)
            .unwrap_or_else(|_| unreachable!())
    }

    #[allow(clippy::too_many_arguments)]
    fn backward_slices(
        &self,
        x: &[f32],
        flat: &[f32],
        dy: &[f32],
        b: usize,
        n: usize,
        s: &Saved,
    ) -> (Vec<f32>, Vec<f32>) {
        let (p, d, h) = (&self.params, self.params.dim, self.params.hidden);
        let rows = b * n;
        let products = self.products();
        let mut grads = scratch::take(p.len());
        let [dw_n1, db_n1, dw_qkv, db_qkv, dw_proj, db_proj, dw_n2, db_n2, dw_fc1, db_fc1, dw_fc2, db_fc2] =
            p.split(&mut grads);
        // MLP branch: f = fc2(gelu(u)), scaled per sample.
        let mut df = scratch::copy_of(dy);
        scale_rows(&mut df, &self.mlp_scale, n * d);
        let mut dg = scratch::take(rows * h);
        linear_backward(
            products,
            &s.g,
            p.get(flat, P::Fc2W),
            &df,
            rows,
            dw_fc2,
            db_fc2,
            Some(&mut dg),
        );
        multiply_in_place(&mut dg, &s.gelu_grad);
        let mut dh2 = scratch::take(rows * d);
        linear_backward(
            products,
            &s.h2,
            p.get(flat, P::Fc1W),
            &dg,
            rows,
            dw_fc1,
            db_fc1,
            Some(&mut dh2),
        );
        scratch::give([dg, df]);
        let mut dx1 = scratch::copy_of(dy);
        let (w_grad, b_grad) = layer_norm_backward_into(
            &s.x1,
            p.get(flat, P::Norm2W),
            &dh2,
            self.eps,
            &mut dx1,
            true,
        );
        dw_n2.copy_from_slice(&w_grad);
        db_n2.copy_from_slice(&b_grad);
        // Attention branch: a = proj(ctx), scaled per sample.
        let mut da = scratch::copy_of(&dx1);
        scale_rows(&mut da, &self.attn_scale, n * d);
        let mut dctx = dh2; // reuse
        linear_backward(
            products,
            &s.ctx,
            p.get(flat, P::ProjW),
            &da,
            rows,
            dw_proj,
            db_proj,
            Some(&mut dctx),
        );
        let dims = self.attn_dims(b, n);
        let scale = ((d / self.num_heads.max(1)) as f32).powf(-0.5);
        let mut dqkv = scratch::take(rows * 3 * d);
        dqkv.par_chunks_mut(n * 3 * d)
            .zip(s.qkv.par_chunks(n * 3 * d))
            .zip(dctx.par_chunks(n * d))
            .for_each(|((dq, q), g)| attention_backward_sample(q, g, dq, &dims, scale));
        let mut h1 = da; // reuse: recompute LN1(x)
        layer_norm_rows(
            x,
            p.get(flat, P::Norm1W),
            p.get(flat, P::Norm1B),
            self.eps,
            &mut h1,
        );
        let mut dh1 = dctx; // reuse
        linear_backward(
            products,
            &h1,
            p.get(flat, P::QkvW),
            &dqkv,
            rows,
            dw_qkv,
            db_qkv,
            Some(&mut dh1),
        );
        let (w_grad, b_grad) =
            layer_norm_backward_into(x, p.get(flat, P::Norm1W), &dh1, self.eps, &mut dx1, true);
        dw_n1.copy_from_slice(&w_grad);
        db_n1.copy_from_slice(&b_grad);
        scratch::give([dqkv, h1, dh1]);
        (dx1, grads)
    }
}

impl CustomOp2 for BlockOp {
    fn name(&self) -> &'static str {
        "dino-transformer-block"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "transformer block tokens")?;
        let flat = contiguous_f32(s2, l2, "transformer block parameters")?;
        let (b, n, d) = l1.shape().dims3()?;
        if d != self.params.dim || flat.len() != self.params.len() || d % self.num_heads.max(1) != 0
        {
            candle_core::bail!(
                "transformer block: tokens {:?}, {} parameters",
                l1.dims(),
                flat.len()
            );
        }
        let (y, saved) = self.forward_slices(x, flat, b, n);
        if self.keep_activations {
            *self.saved.lock().unwrap_or_else(PoisonError::into_inner) = Some(saved);
        } else {
            saved.recycle();
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        flat: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let saved = take_kept(&self.saved, "transformer block")?;
        let (b, n, _) = x.dims3()?;
        let (dx, dflat) = read_f32(x, |xs| {
            read_f32(flat, |fs| {
                read_f32(dy, |dys| self.backward_slices(xs, fs, dys, b, n, &saved))
            })
        })???;
        saved.recycle();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dflat, flat.shape(), flat.device())?),
        ))
    }
}
