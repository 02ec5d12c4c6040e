//! In-place CPU kernels for the optimizer and the EMA: one parallel pass over each
//! tensor instead of a chain of allocating tensor ops. Same arithmetic as the tensor
//! versions in [`super::optim`] and [`super::ema`], which other devices use.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout};
use rayon::prelude::*;

type CResult<T> = candle_core::Result<T>;

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> CResult<&'a mut [f32]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: destination must be contiguous")
    };
    match s {
        CpuStorage::F32(v) => Ok(&mut v[start..end]),
        _ => candle_core::bail!("{op}: f32 only"),
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> CResult<&'a [f32]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: source must be contiguous")
    };
    Ok(&s.as_slice::<f32>()?[start..end])
}

fn check_len(a: usize, b: usize, op: &str) -> CResult<()> {
    if a != b {
        candle_core::bail!("{op}: {a} values against {b}")
    }
    Ok(())
}

/// Applies `update(dst_i, src_i)` over two equally long contiguous f32 buffers, in parallel.
fn update_each(
    name: &str,
    dst: (&mut CpuStorage, &Layout),
    src: (&CpuStorage, &Layout),
    update: impl Fn(&mut f32, f32) + Sync,
) -> CResult<()> {
    let d = slice_mut(dst.0, dst.1, name)?;
    let s = slice(src.0, src.1, name)?;
    check_len(d.len(), s.len(), name)?;
    d.par_chunks_mut(CHUNK)
        .zip(s.par_chunks(CHUNK))
        .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &s)| update(d, s)));
    Ok(())
}

/// `exp_avg.lerp_(grad, 1 − β1)`: `m += (g − m)(1 − β1)`.
#[derive(Debug, Clone, Copy)]
pub struct FirstMoment {
    /// `1 − β1`.
    pub weight: f32,
}

impl InplaceOp2 for FirstMoment {
    fn name(&self) -> &'static str {
        "adamw-first-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<()> {
        let w = self.weight;
        update_each(self.name(), (s1, l1), (s2, l2), |m, g| *m += w * (g - *m))
    }
}

/// `exp_avg_sq.mul_(β2).addcmul_(g, g, 1 − β2)`.
#[derive(Debug, Clone, Copy)]
pub struct SecondMoment {
    /// `β2`.
    pub beta2: f32,
    /// `1 − β2`.
    pub weight: f32,
}

impl InplaceOp2 for SecondMoment {
    fn name(&self) -> &'static str {
        "adamw-second-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<()> {
        let (b2, w) = (self.beta2, self.weight);
        update_each(self.name(), (s1, l1), (s2, l2), |v, g| {
            *v = *v * b2 + w * g * g
        })
    }
}

/// `p ← p(1 − lr·wd) − step_size · m / (sqrt(v)/sqrt(bc2) + eps)`.
#[derive(Debug, Clone, Copy)]
pub struct AdamWParamUpdate {
    /// `1 − lr · weight_decay`.
    pub decay: f32,
    /// `lr / (1 − β1^t)`.
    pub step_size: f32,
    /// `sqrt(1 − β2^t)`.
    pub bias_correction2_sqrt: f32,
    /// Denominator epsilon.
    pub eps: f32,
}

impl InplaceOp3 for AdamWParamUpdate {
    fn name(&self) -> &'static str {
        "adamw-param-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<()> {
        let p = slice_mut(s1, l1, self.name())?;
        let m = slice(s2, l2, self.name())?;
        let v = slice(s3, l3, self.name())?;
        check_len(p.len(), m.len(), self.name())?;
        check_len(p.len(), v.len(), self.name())?;
        let u = *self;
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK))
            .zip(v.par_chunks(CHUNK))
            .for_each(|((p, m), v)| {
                for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                    let denom = v.sqrt() / u.bias_correction2_sqrt + u.eps;
                    *p = *p * u.decay - u.step_size * (m / denom);
                }
            });
        Ok(())
    }
}

/// `teacher ← teacher · m + student · (1 − m)`.
#[derive(Debug, Clone, Copy)]
pub struct EmaUpdate {
    /// Teacher momentum `m`.
    pub momentum: f32,
    /// `1 − m`, rounded once as PyTorch does.
    pub student_weight: f32,
}

impl InplaceOp2 for EmaUpdate {
    fn name(&self) -> &'static str {
        "ema-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<()> {
        let (m, w) = (self.momentum, self.student_weight);
        update_each(self.name(), (s1, l1), (s2, l2), |t, s| *t = *t * m + w * s)
    }
}
