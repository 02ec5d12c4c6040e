//! Training-mode batch normalisation (statistics of the batch, per channel), optionally
//! followed by a ReLU, as one CPU custom op with its own backward. The batch mean and
//! biased variance it computed are kept for the caller's running-statistics update.

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::kernels::{contiguous_f32, read_f32};

type CResult<T> = candle_core::Result<T>;

/// Per-channel batch mean and biased variance of the last forward.
pub type SharedMoments = Arc<Mutex<Vec<(f32, f32)>>>;

/// `relu?((x − mean) / sqrt(var + eps) · w + b)` with per-channel statistics over every
/// axis but 1 of `x` (`[N, C, ...]`).
#[derive(Debug)]
pub struct BatchNormOp {
    /// Variance epsilon.
    pub eps: f32,
    /// Apply a ReLU to the output.
    pub relu: bool,
    /// Filled by the forward pass; read by the backward and by the caller.
    pub moments: SharedMoments,
}

/// `(n, c, s)`: batch, channels and values per channel per sample.
fn split_dims(dims: &[usize]) -> CResult<(usize, usize, usize)> {
    match dims {
        [n, c, rest @ ..] if *n > 0 => Ok((*n, *c, rest.iter().product())),
        _ => candle_core::bail!("batch_norm: expected [N, C, ...] with N > 0, got {dims:?}"),
    }
}

/// The values of channel `c`: one contiguous run of `s` per sample.
fn channel_runs(x: &[f32], c: usize, channels: usize, s: usize) -> impl Iterator<Item = &[f32]> {
    x.chunks_exact(s * channels)
        .map(move |sample| &sample[c * s..(c + 1) * s])
}

fn channel_moments(x: &[f32], c: usize, channels: usize, s: usize) -> (f32, f32) {
    let count = (x.len() / channels.max(1)) as f64;
    let sum: f64 = channel_runs(x, c, channels, s)
        .map(|r| r.iter().map(|&v| f64::from(v)).sum::<f64>())
        .sum();
    let mean = sum / count;
    let sq: f64 = channel_runs(x, c, channels, s)
        .map(|r| {
            r.iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
        })
        .sum();
    (mean as f32, (sq / count) as f32)
}

impl CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "dino-batch-norm"
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
        let (_, channels, s) = split_dims(l1.dims())?;
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let b = contiguous_f32(s3, l3, self.name())?;
        if w.len() != channels || b.len() != channels || s == 0 {
            candle_core::bail!("batch_norm: {channels} channels, weight {}", w.len())
        }
        let moments: Vec<(f32, f32)> = (0..channels)
            .into_par_iter()
            .map(|c| channel_moments(x, c, channels, s))
            .collect();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(s)
            .zip(x.par_chunks(s))
            .enumerate()
            .for_each(|(i, (yr, xr))| {
                let c = i % channels;
                let (mean, var) = moments[c];
                let scale = w[c] / (var + self.eps).sqrt();
                let shift = b[c] - mean * scale;
                for (o, &v) in yr.iter_mut().zip(xr) {
                    let z = v * scale + shift;
                    *o = if self.relu { z.max(0.0) } else { z };
                }
            });
        *self.moments.lock().unwrap_or_else(PoisonError::into_inner) = moments;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, channels, s) = split_dims(x.dims())?;
        let moments = self
            .moments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if moments.len() != channels {
            candle_core::bail!("batch_norm: backward before forward")
        }
        let (dx, dw, db) = read_f32(x, |xs| {
            read_f32(w, |ws| {
                read_f32(y, |ys| {
                    read_f32(dy, |dys| {
                        let g = BnGrad {
                            channels,
                            s,
                            eps: self.eps,
                            relu: self.relu,
                            moments: &moments,
                        };
                        g.run(xs, ws, ys, dys)
                    })
                })
            })
        })????;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
            Some(Tensor::from_vec(db, w.shape(), w.device())?),
        ))
    }
}

struct BnGrad<'a> {
    channels: usize,
    s: usize,
    eps: f32,
    relu: bool,
    moments: &'a [(f32, f32)],
}

impl BnGrad<'_> {
    /// The upstream gradient through the ReLU (zero where the output was clipped).
    fn through_relu(&self, dy: f32, y: f32) -> f32 {
        if self.relu && y <= 0.0 {
            0.0
        } else {
            dy
        }
    }

    /// `Σ dy` and `Σ dy · x̂` of channel `c`.
    fn sums(&self, c: usize, xs: &[f32], ys: &[f32], dys: &[f32]) -> (f32, f32) {
        let (mean, var) = self.moments[c];
        let rstd = 1.0 / (var + self.eps).sqrt();
        let (mut sdy, mut sdyx) = (0f64, 0f64);
        let runs = channel_runs(xs, c, self.channels, self.s)
            .zip(channel_runs(ys, c, self.channels, self.s))
            .zip(channel_runs(dys, c, self.channels, self.s));
        for ((xr, yr), dr) in runs {
            for ((&xv, &yv), &dv) in xr.iter().zip(yr).zip(dr) {
                let d = self.through_relu(dv, yv);
                sdy += f64::from(d);
                sdyx += f64::from(d * (xv - mean) * rstd);
            }
        }
        (sdy as f32, sdyx as f32)
    }

    fn run(
        &self,
        xs: &[f32],
        ws: &[f32],
        ys: &[f32],
        dys: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let sums: Vec<(f32, f32)> = (0..self.channels)
            .into_par_iter()
            .map(|c| self.sums(c, xs, ys, dys))
            .collect();
        let m = (xs.len() / self.channels.max(1)) as f32;
        let mut dx = vec![0f32; xs.len()];
        dx.par_chunks_mut(self.s).enumerate().for_each(|(i, out)| {
            let c = i % self.channels;
            let (mean, var) = self.moments[c];
            let rstd = 1.0 / (var + self.eps).sqrt();
            let (sdy, sdyx) = sums[c];
            let k = ws[c] * rstd;
            let range = i * self.s..(i + 1) * self.s;
            let parts = xs[range.clone()]
                .iter()
                .zip(&ys[range.clone()])
                .zip(&dys[range]);
            for (o, ((&xv, &yv), &dv)) in out.iter_mut().zip(parts) {
                let xhat = (xv - mean) * rstd;
                let d = self.through_relu(dv, yv);
                *o = k * (d - sdy / m - xhat * sdyx / m);
            }
        });
        let dw = sums.iter().map(|s| s.1).collect();
        let db = sums.iter().map(|s| s.0).collect();
        (dx, dw, db)
    }
}
