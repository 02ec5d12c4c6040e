//! Differentiable LayerNorm, GELU, softmax and attention.
//!
//! On the CPU these run as fused custom ops with their own backward ([`kernels`]); on
//! other devices they are composed of candle primitives that all have a backward pass
//! (candle's own fused `layer_norm` / `softmax_last_dim` cut the graph). Both paths
//! compute the same functions; the tests below hold them together.

/// Defines `fn NAME(ARGS)` that runs its body compiled for AVX-512 where the CPU has it
/// (16 lanes), else for AVX2 + FMA (8 lanes), else as is (SSE2's 4), within the cap of
/// `DINO_CURATE_ISA` ([`super::isa`]). Bodies must not depend on the vector width for their
/// results (fixed-lane reductions only); Rust does not contract a multiply and an add into
/// an FMA on its own, so enabling FMA changes no result.
macro_rules! with_avx512 {
    (@compiled_for $isa:ident, $features:literal, ($($arg:ident: $ty:ty),*) $body:block) => {
        #[cfg(target_arch = "x86_64")]
        if $crate::model::isa::allows($crate::model::isa::Isa::$isa) {
            /// # Safety
            /// The CPU must have the features enabled here.
            #[target_feature(enable = $features)]
            #[allow(unsafe_code)]
            unsafe fn compiled($($arg: $ty),*) $body
            // SAFETY: the CPU has these features (`isa::allows` checked them just above).
            #[allow(unsafe_code)]
            unsafe {
                compiled($($arg),*)
            };
            return;
        }
    };
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) {
            with_avx512!(@compiled_for Avx512, "avx512f", ($($arg: $ty),*) $body);
            with_avx512!(@compiled_for Avx2, "avx2,fma", ($($arg: $ty),*) $body);
            $body
        }
    };
}

pub mod amx;
pub mod block;
pub mod conv;
pub mod fastmath;
pub mod head_loss;
pub mod kernels;
pub mod norm;
pub mod pool;
pub mod scratch;
pub mod small_gemm;

use candle_core::{DType, Device, Tensor, D};

use crate::Result;
use kernels::{AttentionOp, BiasGeluOp, LayerNormOp, LinearBiasOp, LinearOp};

/// 2-D convolution of NCHW `x` with `w: [out, in, kh, kw]`, no bias, symmetric padding.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    if fused(x) {
        let op = conv::Conv2dOp { stride, pad };
        return Ok(x.contiguous()?.apply_op2(&w.contiguous()?, op)?);
    }
    conv2d_composed(x, w, stride, pad)
}

/// [`conv2d`] with candle's own convolution (and its backward).
pub fn conv2d_composed(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    Ok(x.conv2d(w, pad, stride, 1, 1)?)
}

/// Max pooling over NCHW with `kernel`, `stride` and an implicit −∞ border of `pad`.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, pad: usize) -> Result<Tensor> {
    if fused(x) {
        let op = pool::MaxPool2dOp {
            kernel,
            stride,
            pad,
        };
        return Ok(x.contiguous()?.apply_op1(op)?);
    }
    max_pool2d_composed(x, kernel, stride, pad)
}

/// [`max_pool2d`] as the maximum of `kernel²` strided views of a −∞-padded copy.
pub fn max_pool2d_composed(x: &Tensor, kernel: usize, stride: usize, pad: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let op = pool::MaxPool2dOp {
        kernel,
        stride,
        pad,
    };
    let (ho, wo) = (op.out_size(h), op.out_size(w));
    let (hp, wp) = (stride * ho + kernel, stride * wo + kernel);
    let fill = |rows: usize, cols: usize| {
        Tensor::full(f32::NEG_INFINITY, (n, c, rows, cols), x.device())?.to_dtype(x.dtype())
    };
    let x = Tensor::cat(&[fill(pad, w)?, x.clone(), fill(hp - h - pad, w)?], 2)?;
    let x = Tensor::cat(&[fill(hp, pad)?, x, fill(hp, wp - w - pad)?], 3)?;
    let mut out: Option<Tensor> = None;
    for ki in 0..kernel {
        let rows = x
            .narrow(2, ki, stride * ho)?
            .reshape((n, c, ho, stride, wp))?
            .narrow(3, 0, 1)?
            .squeeze(3)?;
        for kj in 0..kernel {
            let view = rows
                .narrow(3, kj, stride * wo)?
                .reshape((n, c, ho, wo, stride))?
                .narrow(4, 0, 1)?
                .squeeze(4)?;
            out = Some(match out {
                Some(m) => m.maximum(&view)?,
                None => view,
            });
        }
    }
    out.ok_or_else(|| crate::Error::Config("max_pool2d: empty kernel".into()))
}

/// Per-channel statistics of a training-mode batch norm: mean and biased variance
/// (`[C]`, detached) over `count` values each.
#[derive(Debug, Clone)]
pub struct BatchMoments {
    /// Batch mean per channel.
    pub mean: Tensor,
    /// Biased batch variance per channel.
    pub var: Tensor,
    /// Values per channel (N · H · W).
    pub count: usize,
}

/// Training-mode batch norm of `x: [N, C, ...]` with batch statistics, `relu` optionally
/// applied after; also returns the statistics for the running averages.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, BatchMoments)> {
    if !fused(x) {
        return batch_norm_train_composed(x, weight, bias, eps, relu);
    }
    let shared = norm::SharedMoments::default();
    let op = norm::BatchNormOp {
        eps: eps as f32,
        relu,
        moments: std::sync::Arc::clone(&shared),
    };
    let y = x.contiguous()?.apply_op3(weight, bias, op)?;
    let moments = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let (mean, var): (Vec<f32>, Vec<f32>) = moments.into_iter().unzip();
    let channels = mean.len();
    Ok((
        y,
        BatchMoments {
            mean: Tensor::from_vec(mean, channels, x.device())?,
            var: Tensor::from_vec(var, channels, x.device())?,
            count: x.elem_count() / channels.max(1),
        },
    ))
}

/// [`batch_norm_train`] from candle primitives.
pub fn batch_norm_train_composed(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, BatchMoments)> {
    let dims = x.dims().to_vec();
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    let s = x.elem_count() / (n * c).max(1);
    let x3 = x.reshape((n, c, s))?;
    let mean = x3.mean_keepdim(2)?.mean_keepdim(0)?;
    let centred = x3.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(2)?.mean_keepdim(0)?;
    let normed = centred.broadcast_div(&(&var + eps)?.sqrt()?)?;
    let y = normed
        .broadcast_mul(&weight.reshape((1, c, 1))?)?
        .broadcast_add(&bias.reshape((1, c, 1))?)?;
    let y = if relu { y.relu()? } else { y };
    let moments = BatchMoments {
        mean: mean.flatten_all()?.detach(),
        var: var.flatten_all()?.detach(),
        count: n * s,
    };
    Ok((y.reshape(dims)?, moments))
}

/// Whether the fused CPU kernels apply to this tensor.
pub fn fused(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32
}

/// `Σ x²` over every element, summed in f64 per chunk: one read of a CPU f32 tensor, where
/// `x.sqr().sum_all()` would write and read a squared copy first (gradient clipping reads
/// every gradient once per step).
pub fn sum_of_squares(x: &Tensor) -> Result<f64> {
    if fused(x) {
        return Ok(kernels::read_f32(x, kernels::sum_of_squares)?);
    }
    Ok(f64::from(x.sqr()?.sum_all()?.to_scalar::<f32>()?))
}

/// LayerNorm over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if fused(x) {
        let op = LayerNormOp { eps: eps as f32 };
        return Ok(x.contiguous()?.apply_op3(weight, bias, op)?);
    }
    layer_norm_composed(x, weight, bias, eps)
}

/// [`layer_norm`] from candle primitives.
pub fn layer_norm_composed(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(normed.broadcast_mul(weight)?.broadcast_add(bias)?)
}

/// `x Wᵀ (+ bias)` for a 2-D `x: [rows, in]` and `W: [out, in]`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if fused(x) {
        let (x, w) = (x.contiguous()?, weight.contiguous()?);
        return Ok(match bias {
            Some(b) => x.apply_op3(&w, b, LinearBiasOp)?,
            None => x.apply_op2(&w, LinearOp)?,
        });
    }
    linear_composed(x, weight, bias)
}

/// [`linear`] from candle primitives.
pub fn linear_composed(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&weight.t()?)?;
    Ok(match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// `gelu(x + bias)` (exact erf GELU), bias over the last dimension.
pub fn bias_gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if fused(x) {
        return Ok(x.contiguous()?.apply_op2(bias, BiasGeluOp)?);
    }
    bias_gelu_composed(x, bias)
}

/// [`bias_gelu`] from candle primitives.
pub fn bias_gelu_composed(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_add(bias)?.gelu_erf()?)
}

/// Softmax over the last dimension. The row maximum is detached: softmax does not
/// depend on it, so its gradient would be zero anyway.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let exp = x.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_keepdim(D::Minus1)?;
    Ok(exp.broadcast_div(&sum)?)
}

/// Multi-head self-attention core: from the packed qkv projection `[B, N, 3·D]` to the
/// heads' outputs side by side, `[B, N, D]`.
pub fn attention(qkv: &Tensor, num_heads: usize) -> Result<Tensor> {
    let head_dim = qkv.dim(D::Minus1)? / 3 / num_heads.max(1);
    let scale = (head_dim as f64).powf(-0.5);
    if fused(qkv) {
        let op = AttentionOp {
            num_heads,
            scale: scale as f32,
        };
        return Ok(qkv.contiguous()?.apply_op1(op)?);
    }
    Ok(attention_composed(qkv, num_heads)?.0)
}

/// [`attention`] from candle primitives; also returns the probabilities `[B, heads, N, N]`.
pub fn attention_composed(qkv: &Tensor, num_heads: usize) -> Result<(Tensor, Tensor)> {
    let (b, n, three_d) = qkv.dims3()?;
    let dim = three_d / 3;
    let head_dim = dim / num_heads.max(1);
    let scale = (head_dim as f64).powf(-0.5);
    let qkv = qkv
        .reshape((b, n, 3, num_heads, head_dim))?
        .permute((2, 0, 3, 1, 4))?;
    let q = qkv.get(0)?.contiguous()?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;
    let attn = softmax_last_dim(&(q.matmul(&k.t()?)? * scale)?)?;
    let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, n, dim))?;
    Ok((out, attn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn max_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
        (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
    }

    /// Known answer (1² + … + n²) on a length that leaves a partial chunk and a lane tail,
    /// and a strided view, which is read in its logical order.
    #[test]
    fn sum_of_squares_matches_the_closed_form() -> TestResult {
        let n: usize = (1 << 14) * 2 + 37;
        let x = Tensor::arange(1f32, n as f32 + 1.0, &Device::Cpu)?;
        let want = (n * (n + 1) * (2 * n + 1)) as f64 / 6.0;
        let got = sum_of_squares(&x)?;
        assert!((got - want).abs() < 1e-5 * want, "{got} vs {want}");
        let m = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?;
        assert_eq!(sum_of_squares(&m.t()?)?, 30.0);
        Ok(())
    }

    /// Forward values and gradients (of `sum(y · r)` for a random `r`) of both paths.
    fn compare<F, G>(inputs: &[Tensor], fused_f: F, composed_f: G, tol: f32) -> TestResult
    where
        F: Fn(&[Tensor]) -> Result<Tensor>,
        G: Fn(&[Tensor]) -> Result<Tensor>,
    {
        let vars: Vec<Var> = inputs
            .iter()
            .map(Var::from_tensor)
            .collect::<candle_core::Result<_>>()?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y1 = fused_f(&ts)?;
        let y2 = composed_f(&ts)?;
        assert!(
            max_diff(&y1, &y2)? < tol,
            "forward differs by {}",
            max_diff(&y1, &y2)?
        );
        let r = Tensor::randn(0f32, 1., y1.shape(), &Device::Cpu)?;
        let g1 = (&y1 * &r)?.sum_all()?.backward()?;
        let g2 = (&y2 * &r)?.sum_all()?.backward()?;
        for (i, t) in ts.iter().enumerate() {
            let (a, b) = (
                g1.get(t).ok_or("no fused grad")?,
                g2.get(t).ok_or("no composed grad")?,
            );
            let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            let diff = max_diff(a, b)?;
            assert!(diff < tol * scale, "gradient {i} differs by {diff}");
        }
        Ok(())
    }

    #[test]
    fn fused_layer_norm_matches_composed() -> TestResult {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 2., (3, 7, 48), &dev)? + 0.5)?;
        let w = Tensor::randn(1f32, 0.1, 48, &dev)?;
        let b = Tensor::randn(0f32, 0.1, 48, &dev)?;
        compare(
            &[x, w, b],
            |t| layer_norm(&t[0], &t[1], &t[2], 1e-6),
            |t| layer_norm_composed(&t[0], &t[1], &t[2], 1e-6),
            2e-5,
        )
    }

    #[test]
    fn fused_linear_matches_composed() -> TestResult {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (13, 24), &dev)?;
        let w = Tensor::randn(0f32, 0.3, (10, 24), &dev)?;
        let b = Tensor::randn(0f32, 0.3, 10, &dev)?;
        compare(
            &[x.clone(), w.clone(), b],
            |t| linear(&t[0], &t[1], Some(&t[2])),
            |t| linear_composed(&t[0], &t[1], Some(&t[2])),
            2e-5,
        )?;
        compare(
            &[x, w],
            |t| linear(&t[0], &t[1], None),
            |t| linear_composed(&t[0], &t[1], None),
            2e-5,
        )
    }

    #[test]
    fn fused_bias_gelu_matches_composed() -> TestResult {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2., (5, 9, 32), &dev)?;
        let b = Tensor::randn(0f32, 0.5, 32, &dev)?;
        compare(
            &[x, b],
            |t| bias_gelu(&t[0], &t[1]),
            |t| bias_gelu_composed(&t[0], &t[1]),
            2e-5,
        )
    }

    #[test]
    fn fused_batch_norm_matches_composed() -> TestResult {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 2., (3, 5, 4, 6), &dev)? + 0.7)?;
        let w = Tensor::randn(1f32, 0.3, 5, &dev)?;
        let b = Tensor::randn(0f32, 0.3, 5, &dev)?;
        for relu in [false, true] {
            compare(
                &[x.clone(), w.clone(), b.clone()],
                |t| Ok(batch_norm_train(&t[0], &t[1], &t[2], 1e-5, relu)?.0),
                |t| Ok(batch_norm_train_composed(&t[0], &t[1], &t[2], 1e-5, relu)?.0),
                2e-5,
            )?;
        }
        let (_, m1) = batch_norm_train(&x, &w, &b, 1e-5, false)?;
        let (_, m2) = batch_norm_train_composed(&x, &w, &b, 1e-5, false)?;
        assert!(max_diff(&m1.mean, &m2.mean)? < 1e-5);
        assert!(max_diff(&m1.var, &m2.var)? < 1e-4);
        assert_eq!((m1.count, m2.count), (72, 72));
        // BatchNorm1d layout: [N, C].
        let x2 = Tensor::randn(0f32, 1., (6, 7), &dev)?;
        let (w2, b2) = (
            Tensor::ones(7, DType::F32, &dev)?,
            Tensor::zeros(7, DType::F32, &dev)?,
        );
        compare(
            &[x2, w2, b2],
            |t| Ok(batch_norm_train(&t[0], &t[1], &t[2], 1e-5, false)?.0),
            |t| Ok(batch_norm_train_composed(&t[0], &t[1], &t[2], 1e-5, false)?.0),
            2e-5,
        )
    }

    #[test]
    fn fused_max_pool_matches_composed() -> TestResult {
        let dev = Device::Cpu;
        for (h, w) in [(9, 9), (8, 11), (3, 3)] {
            let x = Tensor::randn(0f32, 1., (2, 3, h, w), &dev)?;
            compare(
                &[x],
                |t| max_pool2d(&t[0], 3, 2, 1),
                |t| max_pool2d_composed(&t[0], 3, 2, 1),
                1e-6,
            )?;
        }
        Ok(())
    }

    #[test]
    fn fused_conv_matches_composed() -> TestResult {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 12, 10), &dev)?;
        let w = Tensor::randn(0f32, 0.2, (4, 3, 3, 3), &dev)?;
        compare(
            &[x, w],
            |t| conv2d(&t[0], &t[1], 2, 1),
            |t| conv2d_composed(&t[0], &t[1], 2, 1),
            2e-5,
        )
    }

    #[test]
    fn fused_attention_matches_composed() -> TestResult {
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1., (3, 11, 3 * 24), &dev)?;
        compare(
            &[qkv],
            |t| attention(&t[0], 3),
            |t| Ok(attention_composed(&t[0], 3)?.0),
            2e-5,
        )
    }
}
