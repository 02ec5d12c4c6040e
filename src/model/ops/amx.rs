//! bf16 matrix products on Intel AMX (Sapphire Rapids and later), for embedding and for the
//! transformer block's training forward and backward.
//!
//! `out = lhs · rhs` (strided views: `x · Wᵀ`, `dy · W`, `dyᵀ · x`) with both sides rounded
//! to bf16 (round to nearest even) and every product accumulated in f32 by the tile unit
//! (`tdpbf16ps`): about three significant digits per input, f32 sums. On the 2-core build
//! machine a single-threaded kernel on operands packed in advance ran 2–5× the f32 gemm's
//! rate on a ViT's shapes; in `bench embed` (packing, conversion and the f32 rest of the
//! model included) ViT-S/16 runs about 2× its f32 rate (docs/benchmarks.md, "Embedding").
//!
//! Layout: the left side is converted to bf16 row-major (rows padded to 32, columns to 32)
//! and read by tile loads with its row stride; the right side is packed per block of 32
//! output columns in the pair-interleaved layout the tile unit wants
//! (`[k/32][2 tiles][16 k-pairs][16 cols][2]`), by AVX-512 conversions for row-major,
//! column-major and transposed operands. Each thread takes blocks of 32 rows and walks all
//! column blocks with four accumulator tiles (2×2 of 16×16 f32).
//!
//! [`available`] says whether this CPU and kernel allow it (CPUID, then the Linux
//! permission request for the tile data state); callers fall back to f32 otherwise.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::small_gemm::{assert_product_shapes, MatMut, MatRef};

/// Rows and columns of one output block (2×2 tiles of 16).
const BLOCK: usize = 32;
/// bf16 elements along k per tile step.
const K_STEP: usize = 32;

/// Whether bf16 tile products can run here (checked once per process).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    if !crate::model::isa::allows(crate::model::isa::Isa::Amx) {
        return false;
    }
    let leaf7 = __cpuid_count(7, 0);
    let amx_bf16 = leaf7.edx & (1 << 22) != 0;
    let amx_tile = leaf7.edx & (1 << 24) != 0;
    let avx512 =
        std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512bf16");
    if !(amx_bf16 && amx_tile && avx512) {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM only asks the kernel for permission to use
    // the tile data state in this process; it touches no memory of ours.
    #[allow(unsafe_code)]
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    granted == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// `out = lhs · rhs` for strided views, in bf16 with f32 sums, blocks of 32 rows spread
/// over rayon's threads.
///
/// # Panics
/// When [`available`] is false, the shapes disagree or a view reaches past its slice.
pub fn matmul(out: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>) {
    assert!(available(), "amx::matmul called without AMX");
    assert_product_shapes("amx::matmul", out.rows, out.cols, &lhs, &rhs);
    assert!(reaches(&lhs) <= lhs.data.len() && reaches(&rhs) <= rhs.data.len());
    assert!(out.col_stride == 1 && (out.rows <= 1 || out.row_stride >= out.cols));
    assert!(out.rows == 0 || (out.rows - 1) * out.row_stride + out.cols <= out.data.len());
    if out.rows == 0 || out.cols == 0 {
        return;
    }
    if lhs.cols == 0 {
        for r in 0..out.rows {
            out.data[r * out.row_stride..r * out.row_stride + out.cols].fill(0.0);
        }
        return;
    }
    let packed = PackedRhs::new(&rhs);
    let lhs_bf16 = LhsBf16::new(&lhs);
    let (rows, row_stride) = (out.rows, out.row_stride);
    let chunk = BLOCK * row_stride;
    let lhs_chunk = BLOCK * lhs_bf16.k_padded;
    let work = |(block, (out_rows, lhs_rows)): (usize, (&mut [f32], &[u16]))| {
        let valid = BLOCK.min(rows - block * BLOCK);
        #[cfg(target_arch = "x86_64")]
        row_block(out_rows, row_stride, valid, lhs_rows, &packed);
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (out_rows, row_stride, valid, lhs_rows, &packed);
            unreachable!("AMX exists on x86-64 only; `available` is false elsewhere");
        }
    };
    out.data[..(rows - 1) * row_stride + out.cols]
        .par_chunks_mut(chunk)
        .zip(lhs_bf16.data.par_chunks(lhs_chunk))
        .enumerate()
        .for_each(work);
}

/// One past the last element a view reads.
fn reaches(m: &MatRef<'_>) -> usize {
    if m.rows == 0 || m.cols == 0 {
        return 0;
    }
    (m.rows - 1) * m.row_stride + (m.cols - 1) * m.col_stride + 1
}

/// The left side in bf16, row-major, rows padded to 32 and columns to 32 with zeros.
struct LhsBf16 {
    k_padded: usize,
    data: Vec<u16>,
}

impl LhsBf16 {
    fn new(lhs: &MatRef<'_>) -> Self {
        let k_padded = lhs.cols.div_ceil(K_STEP) * K_STEP;
        let rows_padded = lhs.rows.div_ceil(BLOCK) * BLOCK;
        let mut data = vec![0u16; rows_padded * k_padded];
        #[cfg(target_arch = "x86_64")]
        if lhs.col_stride != 1 && lhs.row_stride == 1 {
            convert_transposed(lhs, k_padded, &mut data);
            return Self { k_padded, data };
        }
        let convert = |(r, dst): (usize, &mut [u16])| {
            if r >= lhs.rows {
                return;
            }
            let start = r * lhs.row_stride;
            if lhs.col_stride == 1 {
                to_bf16(&lhs.data[start..start + lhs.cols], &mut dst[..lhs.cols]);
            } else {
                for (c, d) in dst[..lhs.cols].iter_mut().enumerate() {
                    *d = bf16_bits(lhs.data[start + c * lhs.col_stride]);
                }
            }
        };
        data.par_chunks_mut(k_padded)
            .enumerate()
            .with_min_len(64)
            .for_each(convert);
        Self { k_padded, data }
    }
}

/// `lhs` is the transpose of a row-major buffer (its rows run along the buffer's rows):
/// each block of 32 rows reads two columns at a time (contiguous in the buffer), converts
/// and interleaves them with AVX-512, and writes the pairs down the block's rows, which
/// stay in L1 while the columns go by.
#[cfg(target_arch = "x86_64")]
fn convert_transposed(lhs: &MatRef<'_>, k_padded: usize, data: &mut [u16]) {
    let convert = |(block, dst): (usize, &mut [u16])| {
        let first = block * BLOCK;
        let valid = BLOCK.min(lhs.rows.saturating_sub(first));
        for r0 in (0..valid).step_by(16) {
            let len = (valid - r0).min(16);
            let mut pairs = [0u16; 32];
            for c in (0..lhs.cols).step_by(2) {
                let start = first + r0 + c * lhs.col_stride;
                let next = start + lhs.col_stride;
                let a = &lhs.data[start..start + len];
                let b = (c + 1 < lhs.cols).then(|| &lhs.data[next..next + len]);
                wide::pairs_into(a, b, &mut pairs);
                for (i, pair) in pairs.chunks_exact(2).take(len).enumerate() {
                    let at = (r0 + i) * k_padded + c;
                    dst[at..at + 2].copy_from_slice(pair);
                }
            }
        }
    };
    data.par_chunks_mut(BLOCK * k_padded)
        .enumerate()
        .for_each(convert);
}

/// The right side packed for the tile unit, one contiguous run per block of 32 output
/// columns: `[k/32][2 tiles][16 k-pairs][16 columns][2]`. Only the x86-64 tile code reads
/// it; other targets build it for the shared tests and never multiply with it.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct PackedRhs {
    cols: usize,
    k_padded: usize,
    data: Vec<u16>,
}

impl PackedRhs {
    fn new(rhs: &MatRef<'_>) -> Self {
        let (k, cols) = (rhs.rows, rhs.cols);
        let k_padded = k.div_ceil(K_STEP) * K_STEP;
        let per_block = BLOCK * k_padded;
        let mut data = vec![0u16; cols.div_ceil(BLOCK) * per_block];
        let pack = |(block, dst): (usize, &mut [u16])| {
            let first = block * BLOCK;
            let width = BLOCK.min(cols - first);
            #[cfg(target_arch = "x86_64")]
            if rhs.col_stride == 1 {
                pack_row_major(rhs, first, width, dst);
                return;
            } else if rhs.row_stride == 1 {
                pack_column_major(rhs, first, width, dst);
                return;
            }
            pack_strided(rhs, first, width, dst);
        };
        data.par_chunks_mut(per_block).enumerate().for_each(pack);
        Self {
            cols,
            k_padded,
            data,
        }
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn block(&self, index: usize) -> &[u16] {
        let per_block = BLOCK * self.k_padded;
        &self.data[index * per_block..(index + 1) * per_block]
    }
}

/// Where value `kk` of column `c` (both within one 32-column block) goes in the packed
/// block: `[k/32][2 tiles][16 k-pairs][16 columns][2]`.
fn packed_at(kk: usize, c: usize) -> usize {
    let (step, within) = (kk / K_STEP, kk % K_STEP);
    let (tile, c) = (c / 16, c % 16);
    ((step * 2 + tile) * 16 + within / 2) * 32 + c * 2 + within % 2
}

/// Packs columns `first..first + width` of a row-major `rhs`: for each pair of rows and
/// each 16 columns, two contiguous loads, one conversion and one interleave give the 32
/// packed values in order.
#[cfg(target_arch = "x86_64")]
fn pack_row_major(rhs: &MatRef<'_>, first: usize, width: usize, dst: &mut [u16]) {
    for kk in (0..rhs.rows).step_by(2) {
        for c0 in (0..width).step_by(16) {
            let len = (width - c0).min(16);
            let start = kk * rhs.row_stride + first + c0;
            let next = start + rhs.row_stride;
            let a = &rhs.data[start..start + len];
            let b = (kk + 1 < rhs.rows).then(|| &rhs.data[next..next + len]);
            let at = packed_at(kk, c0);
            wide::pairs_into(a, b, &mut dst[at..at + 32]);
        }
    }
}

/// Packs columns `first..first + width` of a column-major `rhs` (each column contiguous,
/// as `Wᵀ` of a row-major weight): per 16 columns and 32 values of k, each column's run
/// becomes 16 bf16 pairs in one conversion, and the 16 × 16 pairs are transposed into
/// the tile's rows.
#[cfg(target_arch = "x86_64")]
fn pack_column_major(rhs: &MatRef<'_>, first: usize, width: usize, dst: &mut [u16]) {
    let k = rhs.rows;
    let mut block = [[0u16; 32]; 16];
    for c0 in (0..width).step_by(16) {
        let cols = (width - c0).min(16);
        for k0 in (0..k).step_by(K_STEP) {
            let len = (k - k0).min(K_STEP);
            for (c, pairs) in block.iter_mut().enumerate() {
                if c < cols {
                    let start = (first + c0 + c) * rhs.col_stride + k0;
                    wide::run_pairs_into(&rhs.data[start..start + len], pairs);
                } else {
                    *pairs = [0; 32];
                }
            }
            let at = packed_at(k0, c0);
            for (j, row) in dst[at..at + 16 * 32].chunks_exact_mut(32).enumerate() {
                for (c, pair) in row.chunks_exact_mut(2).enumerate() {
                    pair.copy_from_slice(&block[c][2 * j..2 * j + 2]);
                }
            }
        }
    }
}

/// Packs columns `first..first + width` of any strided `rhs`, one value at a time.
fn pack_strided(rhs: &MatRef<'_>, first: usize, width: usize, dst: &mut [u16]) {
    for c in 0..width {
        let base = (first + c) * rhs.col_stride;
        for kk in 0..rhs.rows {
            dst[packed_at(kk, c)] = bf16_bits(rhs.data[base + kk * rhs.row_stride]);
        }
    }
}

/// AVX-512 conversion of f32 runs into bf16 pairs, the packing's inner step.
#[cfg(target_arch = "x86_64")]
mod wide {
    use std::arch::x86_64::*;

    use super::available;

    /// Writes `(a[i], b[i])` as bf16 pairs for i < a.len() ≤ 16 (pair i = a[i] | b[i] << 16)
    /// and zero pairs after, 64 bytes at `out`; `b` absent (or shorter) reads as zeros.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and BF16; `out` must be writable for 64 bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[allow(unsafe_code)]
    unsafe fn store_pairs(a: &[f32], b: Option<&[f32]>, out: *mut u8) {
        let len = a.len().min(16);
        let mask = ((1u32 << len) - 1) as __mmask16;
        // SAFETY: masked loads read only the first `len` elements of each slice; `out` is
        // the caller's.
        unsafe {
            let x = _mm512_maskz_loadu_ps(mask, a.as_ptr());
            let y = match b {
                Some(b) if b.len() >= len => _mm512_maskz_loadu_ps(mask, b.as_ptr()),
                _ => _mm512_setzero_ps(),
            };
            // x in the low 16 bf16 lanes, y in the high 16; then interleave x0 y0 x1 y1 …
            let halves: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(y, x));
            let order = _mm512_set_epi16(
                31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
            );
            _mm512_storeu_si512(out.cast(), _mm512_permutexvar_epi16(order, halves));
        }
    }

    /// Writes up to 32 consecutive values (`run`) as 16 bf16 pairs
    /// `run[2i] | run[2i + 1] << 16`, zeros past the run, 64 bytes at `out`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and BF16; `out` must be writable for 64 bytes.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(unsafe_code)]
    unsafe fn store_run_pairs(run: &[f32], out: *mut u8) {
        let len = run.len().min(32);
        let low = ((1u32 << len.min(16)) - 1) as __mmask16;
        let high = ((1u32 << len.saturating_sub(16)) - 1) as __mmask16;
        // SAFETY: the masked loads read only the first `len` values of `run` (the second
        // starts at most at its end and then reads nothing); `out` is the caller's.
        unsafe {
            let x = _mm512_maskz_loadu_ps(low, run.as_ptr());
            let y = _mm512_maskz_loadu_ps(high, run.as_ptr().add(16.min(len)));
            let pairs: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(y, x));
            _mm512_storeu_si512(out.cast(), pairs);
        }
    }

    /// [`store_pairs`] into the first 32 `u16` of `out` (the pair-interleaved order).
    pub(super) fn pairs_into(a: &[f32], b: Option<&[f32]>, out: &mut [u16]) {
        assert!(available() && out.len() >= 32);
        // SAFETY: `available` implies AVX-512 F, BW and BF16; `out` holds at least 64 bytes.
        #[allow(unsafe_code)]
        unsafe {
            store_pairs(a, b, out.as_mut_ptr().cast())
        };
    }

    /// [`store_run_pairs`] into 32 `u16` (pair i at `2i`, `2i + 1`).
    pub(super) fn run_pairs_into(run: &[f32], out: &mut [u16; 32]) {
        assert!(available());
        // SAFETY: `available` implies AVX-512 F and BF16; `out` holds 64 bytes.
        #[allow(unsafe_code)]
        unsafe {
            store_run_pairs(run, out.as_mut_ptr().cast())
        };
    }
}

#[cfg(target_arch = "x86_64")]
/// Up to 32 output rows (`out` starts at the first, rows `row_stride` apart) against every
/// column block.
fn row_block(
    out: &mut [f32],
    row_stride: usize,
    valid_rows: usize,
    lhs_rows: &[u16],
    packed: &PackedRhs,
) {
    let cols_total = packed.cols;
    let mut tile_out = [0f32; BLOCK * BLOCK];
    let _tiles = TileConfig::load();
    for block in 0..cols_total.div_ceil(BLOCK) {
        let first_col = block * BLOCK;
        let cols = BLOCK.min(cols_total - first_col);
        // SAFETY: `lhs_rows` holds 32 rows of `k_padded` bf16 (padded in `LhsBf16`), the
        // block 32 × `k_padded` packed values, `tile_out` 32 × 32 f32; tiles are configured
        // by `_tiles` on this thread.
        #[allow(unsafe_code)]
        unsafe {
            kernel(
                lhs_rows.as_ptr(),
                packed.k_padded,
                packed.block(block).as_ptr(),
                tile_out.as_mut_ptr(),
            )
        };
        for r in 0..valid_rows {
            let at = r * row_stride + first_col;
            out[at..at + cols].copy_from_slice(&tile_out[r * BLOCK..r * BLOCK + cols]);
        }
    }
}

/// The tile configuration of [`kernel`] loaded on this thread, released on drop.
#[cfg(target_arch = "x86_64")]
struct TileConfig;

#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct TileConfigBytes([u8; 64]);

#[cfg(target_arch = "x86_64")]
impl TileConfig {
    fn load() -> Self {
        let mut bytes = [0u8; 64];
        bytes[0] = 1; // palette 1
        for tile in 0..8 {
            bytes[16 + 2 * tile] = 64; // bytes per row: 16 f32, or 32 bf16
            bytes[48 + tile] = 16; // rows
        }
        let config = TileConfigBytes(bytes);
        // SAFETY: a valid palette-1 configuration of 64 aligned bytes; AMX availability is
        // asserted by `matmul` through `available`.
        #[allow(unsafe_code)]
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack));
        }
        Self
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for TileConfig {
    fn drop(&mut self) {
        // SAFETY: releases the tile state this thread configured in `load`.
        #[allow(unsafe_code)]
        unsafe {
            std::arch::asm!("tilerelease", options(nostack));
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// `c[32 × 32] = a[32 × k] · b` for `a` row-major bf16 with row length `k` (a multiple of
/// 32) and `b` one packed column block; `c` row-major with row length 32.
///
/// # Safety
/// Tiles configured as in [`TileConfig::load`]; `a` readable for 32 rows of `k`, `b` for
/// 32·`k` values, `c` writable for 1024 f32.
#[allow(unsafe_code)]
unsafe fn kernel(a: *const u16, k: usize, b: *const u16, c: *mut f32) {
    let a_stride = k * 2;
    let c_stride = BLOCK * 4;
    // SAFETY: per the function's contract; tmm0–3 accumulate C's four 16×16 quarters,
    // tmm4/5 hold A's two 16-row halves, tmm6/7 B's two 16-column halves.
    unsafe {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a} + {a_stride}*1]",
            "tileloadd tmm5, [{a16} + {a_stride}*1]",
            "tileloadd tmm6, [{b} + {b_stride}*1]",
            "tileloadd tmm7, [{b} + {b_stride}*1 + 1024]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a}, 64",
            "add {a16}, 64",
            "add {b}, 2048",
            "dec {steps}",
            "jnz 2b",
            "tilestored [{c} + {c_stride}*1], tmm0",
            "tilestored [{c} + {c_stride}*1 + 64], tmm1",
            "tilestored [{c16} + {c_stride}*1], tmm2",
            "tilestored [{c16} + {c_stride}*1 + 64], tmm3",
            a = inout(reg) a => _,
            a16 = inout(reg) a.add(16 * k) => _,
            b = inout(reg) b => _,
            steps = inout(reg) k / K_STEP => _,
            a_stride = in(reg) a_stride,
            b_stride = in(reg) 64usize,
            c = in(reg) c,
            c16 = in(reg) c.add(16 * BLOCK),
            c_stride = in(reg) c_stride,
            options(nostack)
        );
    }
}

/// f32 → bf16 bits, round to nearest even; NaN stays NaN.
fn bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// Converts a row to bf16 (vectorised with AVX-512 where [`available`] holds).
fn to_bf16(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: `available` implies AVX-512 BW and BF16.
        #[allow(unsafe_code)]
        unsafe {
            to_bf16_avx512(src, dst)
        };
        return;
    }
    dst.iter_mut()
        .zip(src)
        .for_each(|(d, &s)| *d = bf16_bits(s));
}

/// # Safety
/// The CPU must have AVX-512 F and BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(unsafe_code)]
unsafe fn to_bf16_avx512(src: &[f32], dst: &mut [u16]) {
    let whole = src.len().min(dst.len()) / 16 * 16;
    for (s, d) in src[..whole]
        .chunks_exact(16)
        .zip(dst[..whole].chunks_exact_mut(16))
    {
        // SAFETY: both chunks hold exactly 16 elements (unaligned load and store); the
        // caller guarantees AVX-512 F and BF16.
        unsafe {
            std::arch::asm!(
                "vmovups {v}, [{src}]",
                "vcvtneps2bf16 {h}, {v}",
                "vmovdqu [{dst}], {h}",
                src = in(reg) s.as_ptr(),
                dst = in(reg) d.as_mut_ptr(),
                v = out(zmm_reg) _,
                h = out(ymm_reg) _,
                options(nostack)
            );
        }
    }
    dst[whole..]
        .iter_mut()
        .zip(&src[whole..])
        .for_each(|(d, &s)| *d = bf16_bits(s));
}

/// The bf16 value of `v` as f32 (for tests and tolerance reasoning).
pub fn round_to_bf16(v: f32) -> f32 {
    f32::from_bits(u32::from(bf16_bits(v)) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `out = x · wᵀ` for row-major `x` and `w` (the forward's layout).
    fn linear_bt(out: &mut [f32], x: &[f32], w: &[f32], rows: usize, n_out: usize, n_in: usize) {
        let out = MatMut::rows_of(out, 0, rows, n_out, n_out);
        let lhs = MatRef::rows_of(x, 0, rows, n_in, n_in);
        matmul(out, lhs, MatRef::rows_of(w, 0, n_out, n_in, n_in).t());
    }

    fn pseudo(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0) - 1.0)
            .collect()
    }

    /// f64 reference of the product of the bf16-rounded inputs.
    fn reference(x: &[f32], w: &[f32], rows: usize, n_out: usize, n_in: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * n_out];
        for r in 0..rows {
            for c in 0..n_out {
                let sum: f64 = (0..n_in)
                    .map(|k| {
                        f64::from(round_to_bf16(x[r * n_in + k]))
                            * f64::from(round_to_bf16(w[c * n_in + k]))
                    })
                    .sum();
                out[r * n_out + c] = sum as f32;
            }
        }
        out
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(round_to_bf16(1.0), 1.0);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(
            round_to_bf16(1.0 + 3.0 * 2f32.powi(-8)),
            1.0 + 2f32.powi(-6)
        );
        assert!(round_to_bf16(f32::NAN).is_nan());
        assert_eq!(round_to_bf16(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn products_match_the_bf16_reference_on_ragged_shapes() {
        if !available() {
            eprintln!("skipped: no AMX on this CPU");
            return;
        }
        // Rows, outputs and inputs that are not multiples of 32 exercise every padding.
        for &(rows, n_out, n_in) in &[(1, 1, 1), (33, 40, 70), (70, 64, 192), (197, 96, 33)] {
            let x = pseudo(rows * n_in, 1);
            let w = pseudo(n_out * n_in, 2);
            let mut out = vec![f32::NAN; rows * n_out];
            linear_bt(&mut out, &x, &w, rows, n_out, n_in);
            let want = reference(&x, &w, rows, n_out, n_in);
            for (i, (got, want)) in out.iter().zip(&want).enumerate() {
                // f32 sums of exact bf16 products: only summation order differs.
                let tol = 1e-5 * n_in as f32;
                assert!(
                    (got - want).abs() <= tol,
                    "{rows}x{n_in}x{n_out} at {i}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn strided_views_multiply_like_their_dense_copies() {
        if !available() {
            eprintln!("skipped: no AMX on this CPU");
            return;
        }
        // lhs is the transpose of a 50 × 37 buffer, rhs every third column of a 50 × 60
        // buffer, out the middle 20 columns of a 37 × 30 buffer.
        let (m, k, n) = (37, 50, 20);
        let a = pseudo(k * m, 5);
        let b = pseudo(k * 60, 6);
        let mut out = vec![7f32; m * 30];
        let lhs = MatRef::rows_of(&a, 0, k, m, m).t();
        let rhs = MatRef {
            data: &b,
            rows: k,
            cols: n,
            row_stride: 60,
            col_stride: 3,
        };
        matmul(MatMut::rows_of(&mut out, 5, m, n, 30), lhs, rhs);
        let x: Vec<f32> = (0..m * k).map(|i| a[(i % k) * m + i / k]).collect();
        let w: Vec<f32> = (0..n * k).map(|i| b[(i % k) * 60 + 3 * (i / k)]).collect();
        let want = reference(&x, &w, m, n, k);
        for r in 0..m {
            for c in 0..30 {
                let got = out[r * 30 + c];
                if (5..25).contains(&c) {
                    assert!((got - want[r * n + c - 5]).abs() <= 1e-5 * k as f32);
                } else {
                    assert_eq!(got, 7.0, "wrote outside the view at {r},{c}");
                }
            }
        }
    }

    /// Row-major `rows × cols` transposed into a dense `cols × rows` buffer.
    fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| m[(i % rows) * cols + i / rows])
            .collect()
    }

    #[test]
    fn backward_layouts_match_the_bf16_reference() {
        if !available() {
            eprintln!("skipped: no AMX on this CPU");
            return;
        }
        // A linear layer's backward: dx = dy · W (both row-major: W packed by rows) and
        // dW = dyᵀ · x (dy read transposed, x packed by rows), on shapes off every multiple
        // of 16 and 32, an odd k included.
        for &(rows, n_out, n_in) in &[(70, 33, 45), (37, 64, 17), (1, 5, 3)] {
            let (x, w, dy) = (
                pseudo(rows * n_in, 7),
                pseudo(n_out * n_in, 8),
                pseudo(rows * n_out, 9),
            );
            let mut dx = vec![f32::NAN; rows * n_in];
            let out = MatMut::rows_of(&mut dx, 0, rows, n_in, n_in);
            let lhs = MatRef::rows_of(&dy, 0, rows, n_out, n_out);
            matmul(out, lhs, MatRef::rows_of(&w, 0, n_out, n_in, n_in));
            let want = reference(&dy, &transposed(&w, n_out, n_in), rows, n_in, n_out);
            for (got, want) in dx.iter().zip(&want) {
                assert!(
                    (got - want).abs() <= 1e-5 * n_out as f32,
                    "dx {got} vs {want}"
                );
            }
            let mut dw = vec![f32::NAN; n_out * n_in];
            let out = MatMut::rows_of(&mut dw, 0, n_out, n_in, n_in);
            let lhs = MatRef::rows_of(&dy, 0, rows, n_out, n_out).t();
            matmul(out, lhs, MatRef::rows_of(&x, 0, rows, n_in, n_in));
            let (dy_t, x_t) = (transposed(&dy, rows, n_out), transposed(&x, rows, n_in));
            let want = reference(&dy_t, &x_t, n_out, n_in, rows);
            for (got, want) in dw.iter().zip(&want) {
                assert!(
                    (got - want).abs() <= 1e-5 * rows as f32,
                    "dW {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn products_stay_within_bf16_rounding_of_f32() {
        if !available() {
            eprintln!("skipped: no AMX on this CPU");
            return;
        }
        let (rows, n_out, n_in) = (64, 96, 384);
        let x = pseudo(rows * n_in, 3);
        let w = pseudo(n_out * n_in, 4);
        let mut out = vec![0f32; rows * n_out];
        linear_bt(&mut out, &x, &w, rows, n_out, n_in);
        for r in 0..rows {
            for c in 0..n_out {
                let exact: f64 = (0..n_in)
                    .map(|k| f64::from(x[r * n_in + k]) * f64::from(w[c * n_in + k]))
                    .sum();
                // Each input carries a relative error ≤ 2^-9, so each product ≤ 2^-8 of its
                // magnitude; the bound below is that over the sum of magnitudes.
                let magnitude: f64 = (0..n_in)
                    .map(|k| f64::from((x[r * n_in + k] * w[c * n_in + k]).abs()))
                    .sum();
                let got = f64::from(out[r * n_out + c]);
                assert!((got - exact).abs() <= magnitude / 256.0 + 1e-4);
            }
        }
    }
}
