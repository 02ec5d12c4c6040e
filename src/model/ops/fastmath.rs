//! Branch-free `exp` and `erf` for f32 that the compiler can vectorise (libm's scalar
//! versions cannot be), accurate to a few units in the last place: enough for the
//! exact-erf GELU and its gradient to match PyTorch within the parity tolerances.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in a part exact in f32 and a remainder (Cephes).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 · 2^23: adding and subtracting it rounds an f32 of magnitude < 2^22 to an integer.
const ROUNDING_MAGIC: f32 = 12_582_912.0;

/// `e^x`, relative error below 2e-7 on [-87, 88]; saturates outside.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2_E + ROUNDING_MAGIC;
    let k = shifted - ROUNDING_MAGIC;
    // The integer k sits in the low mantissa bits of `shifted`: reading it from the bits
    // instead of `k as i32` (which must saturate) keeps the whole function vectorisable.
    let k_int = shifted.to_bits() as i32 - ROUNDING_MAGIC.to_bits() as i32;
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_2e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let poly = p * r * r + r + 1.0;
    let scale = f32::from_bits(((k_int + 127) as u32) << 23);
    poly * scale
}

/// `erf(x)` by Eigen's rational approximation on [-4, 4] (±1 beyond), absolute error
/// below 1e-6.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.9546e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_the_standard_library() {
        let mut worst = 0f32;
        for i in -86_000..88_000 {
            let x = i as f32 * 1e-3;
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2e-7, "relative error {worst}");
    }

    #[test]
    fn erf_matches_libm() {
        let mut worst = 0f32;
        for i in -6_000..6_000 {
            let x = i as f32 * 1e-3;
            worst = worst.max((erf(x) - libm::erff(x)).abs());
        }
        assert!(worst < 1e-6, "absolute error {worst}");
        assert_eq!(erf(10.0), erf(4.0));
    }
}
