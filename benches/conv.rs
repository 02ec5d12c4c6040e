//! Forward and backward seconds of the ResNet convolutions, ours (`ops::conv2d`) against
//! candle's own (`ops::conv2d_composed`), on the CPU: `cargo bench --bench conv`.

use candle_core::{Device, Tensor, Var};
use dino_curate::model::ops::{conv2d, conv2d_composed};

type Conv = fn(&Tensor, &Tensor, usize, usize) -> dino_curate::Result<Tensor>;

/// Seconds of the forward and of the backward of `conv` on `x` and `w`.
fn time(
    conv: Conv,
    x: &Var,
    w: &Var,
    stride: usize,
    pad: usize,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let t0 = std::time::Instant::now();
    let y = conv(x.as_tensor(), w.as_tensor(), stride, pad)?;
    let fwd = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    y.sum_all()?.backward()?;
    Ok((fwd, t1.elapsed().as_secs_f64()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    // (input, out channels, kernel, stride, pad): ResNet-18 layers at batch 32 × 96 px
    let shapes = [
        ((32, 3, 96, 96), 64, 7, 2, 3),
        ((32, 64, 24, 24), 64, 3, 1, 1),
        ((32, 128, 12, 12), 128, 3, 1, 1),
        ((32, 256, 6, 6), 512, 3, 2, 1),
        ((32, 256, 12, 12), 512, 1, 2, 0),
    ];
    for (x, o, k, stride, pad) in shapes {
        let xv = Var::from_tensor(&Tensor::randn(0f32, 1., x, &dev)?)?;
        let wv = Var::from_tensor(&Tensor::randn(0f32, 0.1, (o, x.1, k, k), &dev)?)?;
        // one warm-up each, then the timed run
        time(conv2d, &xv, &wv, stride, pad)?;
        let ours = time(conv2d, &xv, &wv, stride, pad)?;
        time(conv2d_composed, &xv, &wv, stride, pad)?;
        let stock = time(conv2d_composed, &xv, &wv, stride, pad)?;
        println!(
            "{x:?} k{k} s{stride} -> {o}: ours fwd {:.3}s bwd {:.3}s | candle fwd {:.3}s bwd {:.3}s",
            ours.0, ours.1, stock.0, stock.1
        );
    }
    Ok(())
}
