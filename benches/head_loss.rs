//! Seconds of the student's DINO head + loss, forward and backward, fused
//! (`DinoLoss::forward_head_at`, one op with its own backward) against candle ops
//! (`DinoHead::forward` + `DinoLoss::forward_at`), on the CPU, at the shape of the
//! `bench train` default: ViT-Tiny features (192), 8 images × 8 views, 4096 prototypes.
//!
//! `cargo bench --bench head_loss` (median of 20 after 3 warm-up runs, each path in turn).

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use dino_curate::model::{DinoHead, HeadConfig, ParamBuilder};
use dino_curate::train::loss::{DinoLoss, LossConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Seconds of one forward (loss value read back) and of its backward.
fn time(run: impl Fn() -> dino_curate::Result<Tensor>) -> BenchResult<(f64, f64)> {
    let start = Instant::now();
    let loss = run()?;
    loss.to_scalar::<f32>()?;
    let forward = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let grads = loss.backward()?;
    let backward = start.elapsed().as_secs_f64();
    drop(grads);
    Ok((forward, backward))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// As the binary does (src/main.rs): mimalloc keeps freed memory mapped, so each run
/// reuses the last one's pages instead of faulting fresh ones in.
#[allow(unsafe_code)]
fn keep_freed_memory_mapped() {
    // SAFETY: sets mimalloc's integer option `purge_delay` (index 15); any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
}

fn main() -> BenchResult<()> {
    keep_freed_memory_mapped();
    let dev = Device::Cpu;
    let (batch, views, k, dim) = (8, 8, 4096, 192);
    let head = DinoHead::new(
        &ParamBuilder::trainable(&dev, 0),
        &HeadConfig::official(dim, k),
    )?;
    let loss = DinoLoss::new(LossConfig::official(k, views, 100), &dev)?;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (batch * views, dim), &dev)?)?;
    let teacher = Tensor::randn(0f32, 1., (2 * batch, k), &dev)?;
    let composed = || {
        let out = head.forward(x.as_tensor())?;
        loss.clone().forward_at(&out, &teacher, 0.04)
    };
    let fused = || {
        loss.clone()
            .forward_head_at(&head, x.as_tensor(), &teacher, 0.04)
    };
    let (mut c, mut f) = (Vec::new(), Vec::new());
    for round in 0..23 {
        let (tc, tf) = (time(composed)?, time(fused)?);
        if round >= 3 {
            c.push(tc);
            f.push(tf);
        }
    }
    let mut cat = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        head.flat_params()?;
        cat.push(start.elapsed().as_secs_f64());
    }
    println!(
        "flat parameters (part of the fused forward): {:.1} ms",
        median(cat) * 1e3
    );
    for (name, runs) in [("candle ops", c), ("fused", f)] {
        let fwd = median(runs.iter().map(|r| r.0).collect());
        let bwd = median(runs.iter().map(|r| r.1).collect());
        println!(
            "{name:>10}: forward {:.1} ms, backward {:.1} ms, total {:.1} ms",
            fwd * 1e3,
            bwd * 1e3,
            (fwd + bwd) * 1e3
        );
    }
    Ok(())
}
