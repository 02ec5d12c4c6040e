//! The distance the ANN graph is built with: `1 - a·b` on L2-normalised vectors.
//!
//! hnsw_rs's own `DistDot` sums in a single scalar chain (or, with `simdeez_f`, a single
//! vector accumulator), and it asserts `a·b ≤ 1`, which rounding can break for (near-)identical
//! vectors. This kernel keeps four independent accumulators and is dispatched at run time to
//! the widest instruction set the CPU has (AVX-512 or AVX2+FMA, through `pulp`'s safe API;
//! the generic loop is compiled once per instruction set). It clamps the distance at 0
//! (hnsw_rs asserts non-negative distances while searching).

use hnsw_rs::anndists::dist::distances::Distance;
use pulp::{Arch, Simd, WithSimd};

/// Accumulators kept in flight (hides the latency of the fused multiply-adds).
const ACC: usize = 4;

struct Dot<'a> {
    a: &'a [f32],
    b: &'a [f32],
}

impl WithSimd for Dot<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let n = self.a.len().min(self.b.len());
        let (va, ta) = S::as_simd_f32s(&self.a[..n]);
        let (vb, tb) = S::as_simd_f32s(&self.b[..n]);
        let mut acc = [simd.splat_f32s(0.0); ACC];
        let full = va.len() / ACC * ACC;
        for (x, y) in va[..full]
            .chunks_exact(ACC)
            .zip(vb[..full].chunks_exact(ACC))
        {
            for i in 0..ACC {
                acc[i] = simd.mul_add_f32s(x[i], y[i], acc[i]);
            }
        }
        for (x, y) in va[full..].iter().zip(&vb[full..]) {
            acc[0] = simd.mul_add_f32s(*x, *y, acc[0]);
        }
        let sum = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
        let mut total = simd.reduce_sum_f32s(sum);
        for (x, y) in ta.iter().zip(tb) {
            total += x * y;
        }
        total
    }
}

/// Dot product of two equally long slices (the shorter length wins if they differ), on the
/// widest SIMD the CPU offers.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    Arch::new().dispatch(Dot { a, b })
}

/// Cosine distance for unit vectors: `max(0, 1 - a·b)`.
///
/// Its type name is written into HNSW dumps; renaming it invalidates existing dumps (they are
/// then rebuilt, not misread).
#[derive(Debug, Default, Clone, Copy)]
pub struct DistUnitDot {
    /// Instruction set detected once, not at every evaluation.
    arch: Arch,
}

impl DistUnitDot {
    /// The distance, dispatched to the best instruction set of this CPU.
    pub fn new() -> Self {
        DistUnitDot { arch: Arch::new() }
    }
}

impl Distance<f32> for DistUnitDot {
    #[inline]
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        (1.0 - self.arch.dispatch(Dot { a: va, b: vb })).max(0.0)
    }
}

/// Similarity reported for a distance computed by [`DistUnitDot`].
#[inline]
pub(crate) fn similarity_from_distance(d: f32) -> f32 {
    1.0 - d
}

/// Similarity of two unit vectors, clamped like [`DistUnitDot`] so both search paths agree.
#[inline]
pub(crate) fn similarity(a: &[f32], b: &[f32]) -> f32 {
    similarity_from_distance((1.0 - dot(a, b)).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    #[test]
    fn dot_matches_naive_for_all_lengths() {
        for n in 0..100 {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 10.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 9.0).collect();
            let got = f64::from(dot(&a, &b));
            assert!((got - naive(&a, &b)).abs() < 1e-4, "n={n}");
        }
    }

    #[test]
    fn distance_is_never_negative() {
        let v: Vec<f32> = (0..384)
            .map(|i| 1.0 / (384f32).sqrt() * if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let scaled: Vec<f32> = v.iter().map(|x| x * 1.0001).collect();
        let d = DistUnitDot::new();
        assert!(d.eval(&v, &scaled) >= 0.0);
        assert_eq!(d.eval(&scaled, &scaled), 0.0);
    }
}
