//! Max pooling with padding (ResNet's 3×3, stride 2, padding 1 stem pool) as a CPU
//! custom op. candle's `max_pool2d` has no padding and no backward for overlapping
//! windows; here the gradient goes to the first maximum of each window in scan order,
//! as PyTorch's CPU kernel does.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::kernels::{contiguous_f32, read_f32};

type CResult<T> = candle_core::Result<T>;

/// `max_pool2d(x, kernel, stride, padding)` over NCHW, padding never chosen as a maximum.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2dOp {
    /// Window side.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Implicit −∞ border on every side (at most half the window, as in PyTorch).
    pub pad: usize,
}

impl MaxPool2dOp {
    /// Output side for an input side.
    pub fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.pad).saturating_sub(self.kernel) / self.stride.max(1) + 1
    }

    fn check(&self, dims: &[usize]) -> CResult<(usize, usize)> {
        let &[_, _, h, w] = dims else {
            candle_core::bail!("max_pool2d: expected NCHW, got {dims:?}")
        };
        if self.stride == 0 || 2 * self.pad > self.kernel || h + 2 * self.pad < self.kernel {
            candle_core::bail!("max_pool2d: {self:?} does not fit {dims:?}")
        }
        Ok((h, w))
    }

    /// Index (within the plane) of the first maximum of window (oh, ow).
    fn argmax(&self, plane: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> usize {
        let mut best = (f32::NEG_INFINITY, usize::MAX);
        for ki in 0..self.kernel {
            let Some(ih) = (oh * self.stride + ki)
                .checked_sub(self.pad)
                .filter(|&i| i < h)
            else {
                continue;
            };
            for kj in 0..self.kernel {
                let Some(iw) = (ow * self.stride + kj)
                    .checked_sub(self.pad)
                    .filter(|&i| i < w)
                else {
                    continue;
                };
                let v = plane[ih * w + iw];
                if v > best.0 || v.is_nan() || best.1 == usize::MAX {
                    best = (v, ih * w + iw);
                }
            }
        }
        best.1
    }
}

impl CustomOp1 for MaxPool2dOp {
    fn name(&self) -> &'static str {
        "dino-max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (h, w) = self.check(layout.dims())?;
        let x = contiguous_f32(storage, layout, self.name())?;
        let (ho, wo) = (self.out_size(h), self.out_size(w));
        let planes = x.len() / (h * w).max(1);
        let mut y = vec![0f32; planes * ho * wo];
        y.par_chunks_mut(ho * wo)
            .zip(x.par_chunks(h * w))
            .for_each(|(out, plane)| {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = plane[self.argmax(plane, h, w, i / wo, i % wo)];
                }
            });
        let mut dims = layout.dims().to_vec();
        dims[2] = ho;
        dims[3] = wo;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> CResult<Option<Tensor>> {
        let (h, w) = self.check(x.dims())?;
        let (ho, wo) = (self.out_size(h), self.out_size(w));
        let dx = read_f32(x, |xs| {
            read_f32(dy, |dys| {
                let mut dx = vec![0f32; xs.len()];
                dx.par_chunks_mut(h * w)
                    .zip(xs.par_chunks(h * w))
                    .zip(dys.par_chunks(ho * wo))
                    .for_each(|((d, plane), g)| {
                        for (i, &v) in g.iter().enumerate() {
                            d[self.argmax(plane, h, w, i / wo, i % wo)] += v;
                        }
                    });
                dx
            })
        })??;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn pools_with_padding_and_routes_gradients_to_the_maximum() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // One 4×4 plane; 3×3 windows, stride 2, padding 1 → 2×2 output.
        let values: Vec<f32> = (0..16).map(|i| ((i * 7) % 16) as f32).collect();
        let x = Var::from_vec(values, (1, 1, 4, 4), &dev)?;
        let op = MaxPool2dOp {
            kernel: 3,
            stride: 2,
            pad: 1,
        };
        let y = x.as_tensor().apply_op1(op)?;
        // plane rows: [0 7 14 5] [12 3 10 1] [8 15 6 13] [4 11 2 9]
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [12., 14., 15., 15.]);
        let grads = y.sum_all()?.backward()?;
        let dx = grads
            .get(x.as_tensor())
            .ok_or(candle_core::Error::Msg("grad".into()))?;
        let dx = dx.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(dx[4], 1.0);
        assert_eq!(dx[2], 1.0);
        assert_eq!(dx[9], 2.0);
        assert_eq!(dx.iter().sum::<f32>(), 4.0);
        Ok(())
    }
}
