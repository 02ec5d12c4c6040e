//! Fused CPU kernels with their own backward pass, as candle custom ops.
//!
//! Each op does in one pass over memory what the composed formulation does in many
//! candle ops (each allocating a tensor, and a zero tensor plus an add per input in the
//! backward pass). They are numerically the same functions as the composed versions in
//! [`super`], which stay in use on other devices; tests check the two agree.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fastmath;
use super::small_gemm::{dot, matmul_par, matmul_small, MatMut, MatRef};

type CResult<T> = candle_core::Result<T>;

/// Rows per rayon task: enough work per task to amortise scheduling.
const MIN_ROWS_PER_TASK: usize = 32;

pub(super) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> CResult<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

fn last_dim(layout: &Layout) -> usize {
    layout.dims().last().copied().unwrap_or(1).max(1)
}

/// Runs `f` on the contiguous f32 values of a CPU tensor.
pub(super) fn read_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> CResult<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(cpu) => Ok(f(contiguous_f32(cpu, layout, "read")?)),
        _ => candle_core::bail!("fused kernels run on the CPU only"),
    }
}

fn tensor_like(values: Vec<f32>, like: &Tensor) -> CResult<Tensor> {
    Tensor::from_vec(values, like.shape(), like.device())
}

/// The activations a fused op's forward kept for its backward, taken out of their slot (a
/// second backward on the same graph, or one after a forward that kept nothing, is an error).
pub(super) fn take_kept<T>(slot: &std::sync::Mutex<Option<T>>, op: &str) -> CResult<T> {
    let kept = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    match kept {
        Some(kept) => Ok(kept),
        None => candle_core::bail!("{op}: backward without kept activations"),
    }
}

/// Tensor `index` of a flat vector that holds tensors of `sizes` back to back (a fused op's
/// concatenated parameters).
pub(super) fn flat_part<'a, const N: usize>(
    sizes: &[usize; N],
    flat: &'a [f32],
    index: usize,
) -> &'a [f32] {
    let start: usize = sizes[..index].iter().sum();
    &flat[start..start + sizes[index]]
}

/// Every tensor of such a flat vector (such as its gradient), writable, in order.
pub(super) fn flat_parts_mut<'a, const N: usize>(
    sizes: &[usize; N],
    flat: &'a mut [f32],
) -> [&'a mut [f32]; N] {
    let mut rest = flat;
    std::array::from_fn(|i| {
        let (tensor, tail) = std::mem::take(&mut rest).split_at_mut(sizes[i]);
        rest = tail;
        tensor
    })
}

/// Sums per-task partial vectors of length `n`.
pub(super) fn sum_partials(partials: Vec<Vec<f32>>, n: usize) -> Vec<f32> {
    partials.into_iter().fold(vec![0f32; n], |mut acc, p| {
        acc.iter_mut().zip(p).for_each(|(a, v)| *a += v);
        acc
    })
}

// ---------------------------------------------------------------------------------------
// LayerNorm

/// LayerNorm over the last dimension: `(x − mean) / sqrt(var + eps) · w + b`.
#[derive(Debug, Clone, Copy)]
pub struct LayerNormOp {
    /// Variance epsilon.
    pub eps: f32,
}

/// LayerNorm of every `w.len()`-wide row of `x` into `y`, in parallel.
pub(super) fn layer_norm_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
    let d = w.len().max(1);
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .with_min_len(MIN_ROWS_PER_TASK)
        .for_each(|(yr, xr)| normalize_row(xr, w, b, eps, yr));
}

with_avx512! {
    /// `y = (x − mean) / sqrt(var + eps) · w + b` for one row.
    fn normalize_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
        let (mean, rstd) = row_moments(x, eps);
        for (((o, &v), &wi), &bi) in y.iter_mut().zip(x).zip(w).zip(b) {
            *o = (v - mean) * rstd * wi + bi;
        }
    }
}

/// `Σ f(x_i)` in [`LANES`] partial sums over whole chunks, then the tail: vectorisable
/// (independent accumulators), and the same result whatever the vector width.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let (chunks, tail) = x.as_chunks::<LANES>();
    for chunk in chunks {
        for lane in 0..LANES {
            acc[lane] += f(chunk[lane]);
        }
    }
    acc.iter().sum::<f32>() + tail.iter().map(|&v| f(v)).sum::<f32>()
}

/// Mean and `1 / sqrt(var + eps)` of a row.
#[inline(always)]
fn row_moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = lane_sum(x, |v| v) / n;
    let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "dino-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let b = contiguous_f32(s3, l3, self.name())?;
        let mut y = vec![0f32; x.len()];
        layer_norm_rows(x, w, b, self.eps, &mut y);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = x.dims().last().copied().unwrap_or(1).max(1);
        let eps = self.eps;
        let (dx, dw, db) = read_f32(x, |xs| {
            read_f32(w, |ws| {
                read_f32(dy, |dys| layer_norm_backward(xs, ws, dys, eps))
            })
        })???;
        Ok((
            Some(tensor_like(dx, x)?),
            Some(tensor_like(dw, w)?),
            Some(Tensor::from_vec(db, d, w.device())?),
        ))
    }
}

type Grads3 = (Vec<f32>, Vec<f32>, Vec<f32>);

fn layer_norm_backward(x: &[f32], w: &[f32], dy: &[f32], eps: f32) -> Grads3 {
    let mut dx = vec![0f32; x.len()];
    let (dw, db) = layer_norm_backward_into(x, w, dy, eps, &mut dx, false);
    (dx, dw, db)
}

/// LayerNorm backward for rows of width `w.len()`: writes (or, with `accumulate`, adds)
/// the input gradient into `dx` and returns the weight and bias gradients.
pub(super) fn layer_norm_backward_into(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    eps: f32,
    dx: &mut [f32],
    accumulate: bool,
) -> (Vec<f32>, Vec<f32>) {
    let d = w.len().max(1);
    let rows_per_task = (x.len() / d)
        .div_ceil(rayon::current_num_threads() * 4)
        .max(1);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(d * rows_per_task)
        .zip(x.par_chunks(d * rows_per_task))
        .zip(dy.par_chunks(d * rows_per_task))
        .map(|((dxc, xc), dyc)| {
            let mut row = LayerNormRowGrads {
                dw: vec![0f32; d],
                db: vec![0f32; d],
                xhat: vec![0f32; d],
                gw: vec![0f32; d],
                eps,
                accumulate,
            };
            for ((dxr, xr), dyr) in dxc.chunks_mut(d).zip(xc.chunks(d)).zip(dyc.chunks(d)) {
                layer_norm_backward_row(xr, w, dyr, dxr, &mut row);
            }
            (row.dw, row.db)
        })
        .collect();
    let (dws, dbs): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
    (sum_partials(dws, d), sum_partials(dbs, d))
}

/// Per-task state of the LayerNorm backward: weight and bias gradients summed over its
/// rows, and two row-wide scratch vectors.
struct LayerNormRowGrads {
    dw: Vec<f32>,
    db: Vec<f32>,
    xhat: Vec<f32>,
    gw: Vec<f32>,
    eps: f32,
    accumulate: bool,
}

with_avx512! {
    /// One row of the LayerNorm backward: adds to `dw`/`db`, writes or adds `dx`.
    fn layer_norm_backward_row(
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        s: &mut LayerNormRowGrads,
    ) {
        let d = x.len();
        let (mean, rstd) = row_moments(x, s.eps);
        let (xhat, gw) = (&mut s.xhat[..d], &mut s.gw[..d]);
        for i in 0..d {
            xhat[i] = (x[i] - mean) * rstd;
            gw[i] = dy[i] * w[i];
            s.dw[i] += dy[i] * xhat[i];
            s.db[i] += dy[i];
        }
        let mean_g = lane_sum(gw, |v| v) / d as f32;
        let mean_gx = dot(gw, xhat) / d as f32;
        for i in 0..d {
            let g = rstd * (gw[i] - mean_g - xhat[i] * mean_gx);
            dx[i] = if s.accumulate { dx[i] + g } else { g };
        }
    }
}

// ---------------------------------------------------------------------------------------
// bias + GELU

/// `gelu(x + bias)` with the exact erf GELU, bias broadcast over the last dimension.
#[derive(Debug, Clone, Copy)]
pub struct BiasGeluOp;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
pub(super) fn gelu(z: f32) -> f32 {
    0.5 * z * (1.0 + fastmath::erf(z * FRAC_1_SQRT_2))
}

#[inline(always)]
pub(super) fn gelu_grad(z: f32) -> f32 {
    gelu_and_grad(z).1
}

/// `(gelu(z), gelu'(z))`, sharing the erf.
#[inline(always)]
fn gelu_and_grad(z: f32) -> (f32, f32) {
    let cdf = 0.5 * (1.0 + fastmath::erf(z * FRAC_1_SQRT_2));
    (
        z * cdf,
        cdf + z * INV_SQRT_2PI * fastmath::exp(-0.5 * z * z),
    )
}

with_avx512! {
    /// For rows of width `bias.len()`: `g = gelu(u + bias)`; with `keep_grad`, `u` becomes
    /// `gelu'(u + bias)` (one erf for both).
    fn bias_gelu_rows(u: &mut [f32], bias: &[f32], g: &mut [f32], keep_grad: bool) {
        let d = bias.len().max(1);
        for (u_row, g_row) in u.chunks_mut(d).zip(g.chunks_mut(d)) {
            let values = u_row.iter_mut().zip(g_row.iter_mut()).zip(bias);
            if keep_grad {
                values.for_each(|((u, g), b)| (*g, *u) = gelu_and_grad(*u + b));
            } else {
                values.for_each(|((u, g), b)| *g = gelu(*u + b));
            }
        }
    }
}

with_avx512! {
    /// `a[i] *= b[i]`.
    fn multiply_slice(a: &mut [f32], b: &[f32]) {
        a.iter_mut().zip(b).for_each(|(a, b)| *a *= b);
    }
}

/// `gelu(u + bias)` (bias over rows of width `bias.len()`), in parallel. With
/// `keep_grad`, `u` is overwritten by `gelu'(u + bias)` for the backward
/// ([`multiply_in_place`]); otherwise it is left as it was.
pub(super) fn bias_gelu_rows_par(u: &mut [f32], bias: &[f32], keep_grad: bool) -> Vec<f32> {
    let d = bias.len().max(1);
    let rows_per_task = (ELEMENTS_PER_TASK / d).max(1);
    let mut g = super::scratch::take(u.len());
    g.par_chunks_mut(rows_per_task * d)
        .zip(u.par_chunks_mut(rows_per_task * d))
        .for_each(|(g, u)| bias_gelu_rows(u, bias, g, keep_grad));
    g
}

/// `a *= b` elementwise, in parallel (a gradient times a saved derivative).
pub(super) fn multiply_in_place(a: &mut [f32], b: &[f32]) {
    a.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(b.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|(a, b)| multiply_slice(a, b));
}

/// Elements per parallel task of the elementwise passes.
const ELEMENTS_PER_TASK: usize = 1 << 14;

impl CustomOp2 for BiasGeluOp {
    fn name(&self) -> &'static str {
        "dino-bias-gelu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let bias = contiguous_f32(s2, l2, self.name())?;
        let d = last_dim(l1);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(yr, xr)| {
                for ((o, &v), &b) in yr.iter_mut().zip(xr).zip(bias) {
                    *o = gelu(v + b);
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let d = bias.elem_count().max(1);
        let (dx, db) = read_f32(x, |xs| {
            read_f32(bias, |bs| {
                read_f32(dy, |dys| bias_gelu_backward(xs, bs, dys, d))
            })
        })???;
        Ok((Some(tensor_like(dx, x)?), Some(tensor_like(db, bias)?)))
    }
}

fn bias_gelu_backward(x: &[f32], bias: &[f32], dy: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let mut dx = vec![0f32; x.len()];
    let rows_per_task = (x.len() / d)
        .div_ceil(rayon::current_num_threads() * 4)
        .max(1);
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(d * rows_per_task)
        .zip(x.par_chunks(d * rows_per_task))
        .zip(dy.par_chunks(d * rows_per_task))
        .map(|((dxc, xc), dyc)| {
            let mut db = vec![0f32; d];
            for ((dxr, xr), dyr) in dxc.chunks_mut(d).zip(xc.chunks(d)).zip(dyc.chunks(d)) {
                for i in 0..d {
                    let g = dyr[i] * gelu_grad(xr[i] + bias[i]);
                    dxr[i] = g;
                    db[i] += g;
                }
            }
            db
        })
        .collect();
    (dx, sum_partials(partials, d))
}

// ---------------------------------------------------------------------------------------
// multi-head self-attention core

/// `softmax(q kᵀ · scale) v` for every head, from the packed `[B, N, 3·D]` qkv projection
/// (`[3][heads][head_dim]` along the last axis, as the official reshape reads it) to
/// `[B, N, D]` with the heads side by side. The backward pass recomputes the attention
/// probabilities instead of storing them.
#[derive(Debug, Clone, Copy)]
pub struct AttentionOp {
    /// Number of heads.
    pub num_heads: usize,
    /// Logit scale, `head_dim^-0.5`.
    pub scale: f32,
}

/// Shape bookkeeping of one attention call.
#[derive(Debug, Clone, Copy)]
pub(super) struct AttnDims {
    n: usize,
    dim: usize,
    heads: usize,
    head_dim: usize,
}

impl AttnDims {
    pub(super) fn new(dims: &[usize], heads: usize) -> CResult<(usize, Self)> {
        match dims {
            [b, n, three_d] if three_d % 3 == 0 && (three_d / 3) % heads.max(1) == 0 => {
                let dim = three_d / 3;
                Ok((
                    *b,
                    Self {
                        n: *n,
                        dim,
                        heads,
                        head_dim: dim / heads,
                    },
                ))
            }
            other => candle_core::bail!("attention: qkv of shape {other:?} for {heads} heads"),
        }
    }

    /// Query (part 0), key (1) or value (2) of head `h` inside one sample's qkv block.
    fn qkv<'a>(&self, block: &'a [f32], part: usize, h: usize) -> MatRef<'a> {
        let offset = part * self.dim + h * self.head_dim;
        MatRef::rows_of(block, offset, self.n, self.head_dim, 3 * self.dim)
    }
}

with_avx512! {
    fn softmax_rows_in_place(m: &mut [f32], n: usize) {
        softmax_rows(m, n);
    }
}

#[inline(always)]
fn softmax_rows(m: &mut [f32], n: usize) {
    for row in m.chunks_mut(n) {
        softmax_row(row);
    }
}

/// Softmax of one row in place; returns the row's maximum and `Σ exp(v − max)` (its
/// log-sum-exp is `max + ln Σ`).
#[inline(always)]
fn softmax_row(row: &mut [f32]) -> (f32, f32) {
    let max = lanewise_max(row);
    row.iter_mut().for_each(|v| *v = fastmath::exp(*v - max));
    let sum = lane_sum(row, |v| v);
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
    (max, sum)
}

with_avx512! {
    /// `prob = softmax(raw ⊙ scale)` for one row, with `(max, Σ exp(s − max))` of the
    /// scaled row `s` in `stats` (its log-sum-exp is `max + ln Σ`) and `Σ weights ⊙ s` in
    /// `weighted`.
    fn scaled_softmax_row(
        raw: &[f32],
        scale: &[f32],
        weights: &[f32],
        prob: &mut [f32],
        stats: &mut (f32, f32, f32),
    ) {
        prob.iter_mut()
            .zip(raw.iter().zip(scale))
            .for_each(|(p, (r, s))| *p = r * s);
        let weighted = dot(prob, weights);
        let (max, sum) = softmax_row(prob);
        *stats = (max, sum, weighted);
    }
}

/// [`scaled_softmax_row`] for the fused head loss: `(max, Σ exp, Σ weights ⊙ s)`.
pub(super) fn scaled_softmax(
    raw: &[f32],
    scale: &[f32],
    weights: &[f32],
    prob: &mut [f32],
) -> (f32, f32, f32) {
    let mut stats = (0.0, 0.0, 0.0);
    scaled_softmax_row(raw, scale, weights, prob, &mut stats);
    stats
}

/// Lanes of the reductions (`lanewise_max`, `lane_sum`): independent accumulators let the
/// compiler vectorise them (a single running max or sum is a serial chain it must keep in
/// order).
const LANES: usize = 16;

/// The largest element (−∞ for an empty slice).
#[inline(always)]
fn lanewise_max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a = if x > *a { x } else { *a };
        }
    }
    let tail = chunks.remainder().iter().copied();
    acc.into_iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Attention probabilities of head `h` of one sample into `probs` (`n × n`).
fn head_probs(qkv: &[f32], dims: &AttnDims, h: usize, scale: f32, probs: &mut [f32]) {
    let n = dims.n;
    let q = dims.qkv(qkv, 0, h);
    let k = dims.qkv(qkv, 1, h);
    matmul_small(MatMut::rows_of(probs, 0, n, n, n), q, k.t(), scale);
    softmax_rows_in_place(probs, n);
}

pub(super) fn attention_forward_sample(qkv: &[f32], out: &mut [f32], dims: &AttnDims, scale: f32) {
    let n = dims.n;
    let mut probs = vec![0f32; n * n];
    for h in 0..dims.heads {
        head_probs(qkv, dims, h, scale, &mut probs);
        let p = MatRef::rows_of(&probs, 0, n, n, n);
        let dst = MatMut::rows_of(out, h * dims.head_dim, n, dims.head_dim, dims.dim);
        matmul_small(dst, p, dims.qkv(qkv, 2, h), 1.0);
    }
}

/// `dS = P ⊙ (dP − Σ dP ⊙ P)` in place over `dp`. The result is re-centred so that the
/// row sums to zero up to one rounding, as it does exactly in real arithmetic: the
/// key-bias gradient, which is mathematically zero, then stays at rounding noise
/// instead of accumulating it (AdamW turns noise into ±lr steps).
fn softmax_backward_row(dp: &mut [f32], p: &[f32]) {
    let dot: f32 = dp.iter().zip(p).map(|(a, b)| a * b).sum();
    let mut total = 0f32;
    for (ds, &pv) in dp.iter_mut().zip(p) {
        *ds = pv * (*ds - dot);
        total += *ds;
    }
    // Σ dS = Σ P·dP − dot·Σ P = dot·(1 − Σ P): spread the residual back by P.
    dp.iter_mut().zip(p).for_each(|(ds, &pv)| *ds -= pv * total);
}

pub(super) fn attention_backward_sample(
    qkv: &[f32],
    dout: &[f32],
    dqkv: &mut [f32],
    dims: &AttnDims,
    scale: f32,
) {
    let (n, hd, d3) = (dims.n, dims.head_dim, 3 * dims.dim);
    let mut probs = vec![0f32; n * n];
    let mut dscores = vec![0f32; n * n];
    for h in 0..dims.heads {
        head_probs(qkv, dims, h, scale, &mut probs);
        let p = MatRef::rows_of(&probs, 0, n, n, n);
        let dout_h = MatRef::rows_of(dout, h * hd, n, hd, dims.dim);
        let v = dims.qkv(qkv, 2, h);
        // dV = Pᵀ dO
        let dv = MatMut::rows_of(dqkv, 2 * dims.dim + h * hd, n, hd, d3);
        matmul_small(dv, p.t(), dout_h, 1.0);
        // dP = dO Vᵀ, then dS = P ⊙ (dP − rowsum(dP ⊙ P))
        matmul_small(
            MatMut::rows_of(&mut dscores, 0, n, n, n),
            dout_h,
            v.t(),
            1.0,
        );
        for (ds_row, p_row) in dscores.chunks_mut(n).zip(probs.chunks(n)) {
            softmax_backward_row(ds_row, p_row);
        }
        let ds = MatRef::rows_of(&dscores, 0, n, n, n);
        // dQ = scale · dS K, dK = scale · dSᵀ Q
        let dq = MatMut::rows_of(dqkv, h * hd, n, hd, d3);
        matmul_small(dq, ds, dims.qkv(qkv, 1, h), scale);
        let dk = MatMut::rows_of(dqkv, dims.dim + h * hd, n, hd, d3);
        matmul_small(dk, ds.t(), dims.qkv(qkv, 0, h), scale);
    }
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "dino-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(storage, layout, self.name())?;
        let (b, dims) = AttnDims::new(layout.dims(), self.num_heads)?;
        let mut out = vec![0f32; b * dims.n * dims.dim];
        out.par_chunks_mut((dims.n * dims.dim).max(1))
            .zip(qkv.par_chunks((dims.n * 3 * dims.dim).max(1)))
            .for_each(|(o, x)| attention_forward_sample(x, o, &dims, self.scale));
        Ok((CpuStorage::F32(out), Shape::from((b, dims.n, dims.dim))))
    }

    fn bwd(&self, qkv: &Tensor, _out: &Tensor, dout: &Tensor) -> CResult<Option<Tensor>> {
        let (_, dims) = AttnDims::new(qkv.dims(), self.num_heads)?;
        let scale = self.scale;
        let dqkv = read_f32(qkv, |x| {
            read_f32(dout, |g| {
                let mut dqkv = vec![0f32; x.len()];
                let sample = (dims.n * 3 * dims.dim).max(1);
                dqkv.par_chunks_mut(sample)
                    .zip(x.par_chunks(sample))
                    .zip(g.par_chunks((dims.n * dims.dim).max(1)))
                    .for_each(|((dx, x), g)| attention_backward_sample(x, g, dx, &dims, scale));
                dqkv
            })
        })??;
        Ok(Some(tensor_like(dqkv, qkv)?))
    }
}

// ---------------------------------------------------------------------------------------
// linear layer

/// `y = x Wᵀ (+ b)` for `x: [rows, in]`, `W: [out, in]` (PyTorch layout), with a
/// backward that writes `dW` contiguous (candle's `matmul(w.t())` hands back a
/// transposed gradient whose accumulation is a slow strided pass).
#[derive(Debug, Clone, Copy)]
pub struct LinearOp;

fn linear_dims(x: &Layout, w: &Layout) -> CResult<(usize, usize, usize)> {
    match (x.dims(), w.dims()) {
        ([rows, n_in], [n_out, w_in]) if n_in == w_in => Ok((*rows, *n_in, *n_out)),
        (a, b) => candle_core::bail!("linear: input {a:?} against weight {b:?}"),
    }
}

fn linear_forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    dims: (usize, usize, usize),
) -> Vec<f32> {
    let (rows, n_in, n_out) = dims;
    let mut y = vec![0f32; rows * n_out];
    let dst = MatMut::rows_of(&mut y, 0, rows, n_out, n_out);
    let lhs = MatRef::rows_of(x, 0, rows, n_in, n_in);
    matmul_par(
        dst,
        lhs,
        MatRef::rows_of(w, 0, n_out, n_in, n_in).t(),
        1.0,
        false,
    );
    if let Some(b) = bias {
        y.par_chunks_mut(n_out.max(1))
            .for_each(|r| r.iter_mut().zip(b).for_each(|(o, b)| *o += b));
    }
    y
}

with_avx512! {
    /// `*acc = Σ v²` over `values` in sixteen f32 lanes.
    fn lane_squares(values: &[f32], acc: &mut f32) {
        *acc = lane_sum(values, |v| v * v);
    }
}

/// `Σ v²` of a slice: f32 lanes within chunks of [`ELEMENTS_PER_TASK`], f64 across them.
pub(super) fn sum_of_squares(values: &[f32]) -> f64 {
    values
        .par_chunks(ELEMENTS_PER_TASK)
        .map(|chunk| {
            let mut acc = 0f32;
            lane_squares(chunk, &mut acc);
            f64::from(acc)
        })
        .sum()
}

/// Column sums of a row-major matrix with `cols` columns, in parallel.
pub(super) fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let cols = cols.max(1);
    let rows_per_task = (m.len() / cols)
        .div_ceil(rayon::current_num_threads() * 2)
        .max(1);
    let partials = m
        .par_chunks(rows_per_task * cols)
        .map(|chunk| {
            let mut acc = vec![0f32; cols];
            for row in chunk.chunks(cols) {
                acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
            }
            acc
        })
        .collect();
    sum_partials(partials, cols)
}

/// `(dx, dW)` of a linear layer: `dx = dy W` (only when `want_dx`: the patch embedding's
/// input is the image, which needs no gradient), `dW = dyᵀ x`.
fn linear_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dims: (usize, usize, usize),
    want_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>) {
    let (rows, n_in, n_out) = dims;
    let dy_m = MatRef::rows_of(dy, 0, rows, n_out, n_out);
    let dx = want_dx.then(|| {
        let mut dx = vec![0f32; rows * n_in];
        let w_m = MatRef::rows_of(w, 0, n_out, n_in, n_in);
        matmul_par(
            MatMut::rows_of(&mut dx, 0, rows, n_in, n_in),
            dy_m,
            w_m,
            1.0,
            false,
        );
        dx
    });
    let mut dw = vec![0f32; n_out * n_in];
    let x_m = MatRef::rows_of(x, 0, rows, n_in, n_in);
    matmul_par(
        MatMut::rows_of(&mut dw, 0, n_out, n_in, n_in),
        dy_m.t(),
        x_m,
        1.0,
        false,
    );
    (dx, dw)
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "dino-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let dims = linear_dims(l1, l2)?;
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let y = linear_forward(x, w, None, dims);
        Ok((CpuStorage::F32(y), Shape::from((dims.0, dims.2))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let dims = (x.dim(0)?, x.dim(1)?, w.dim(0)?);
        let want_dx = x.track_op();
        let (dx, dw) = read_f32(x, |xs| {
            read_f32(w, |ws| {
                read_f32(dy, |g| linear_backward(xs, ws, g, dims, want_dx))
            })
        })???;
        let dx = dx.map(|dx| tensor_like(dx, x)).transpose()?;
        Ok((dx, Some(tensor_like(dw, w)?)))
    }
}

/// [`LinearOp`] with a bias added to every row.
#[derive(Debug, Clone, Copy)]
pub struct LinearBiasOp;

impl CustomOp3 for LinearBiasOp {
    fn name(&self) -> &'static str {
        "dino-linear-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let dims = linear_dims(l1, l2)?;
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let b = contiguous_f32(s3, l3, self.name())?;
        if b.len() != dims.2 {
            candle_core::bail!("linear: bias of {} for {} outputs", b.len(), dims.2);
        }
        let y = linear_forward(x, w, Some(b), dims);
        Ok((CpuStorage::F32(y), Shape::from((dims.0, dims.2))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = (x.dim(0)?, x.dim(1)?, w.dim(0)?);
        let want_dx = x.track_op();
        let (dx, dw) = read_f32(x, |xs| {
            read_f32(w, |ws| {
                read_f32(dy, |g| linear_backward(xs, ws, g, dims, want_dx))
            })
        })???;
        let db = read_f32(dy, |g| column_sums(g, dims.2))?;
        Ok((
            dx.map(|dx| tensor_like(dx, x)).transpose()?,
            Some(tensor_like(dw, w)?),
            Some(tensor_like(db, b)?),
        ))
    }
}
