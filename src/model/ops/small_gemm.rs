//! A bounds-checked front for the `gemm` crate's strided matrix product, used by the
//! fused CPU kernels on matrices that live inside larger buffers (e.g. one attention
//! head's queries inside a `[N, 3·D]` qkv row block), so no copy is needed.

/// A read-only strided matrix view: element `(r, c)` is `data[r * row_stride + c * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    /// Backing storage.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between consecutive rows.
    pub row_stride: usize,
    /// Distance between consecutive columns.
    pub col_stride: usize,
}

/// A writable strided matrix view, laid out like [`MatRef`].
#[derive(Debug)]
pub struct MatMut<'a> {
    /// Backing storage.
    pub data: &'a mut [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between consecutive rows.
    pub row_stride: usize,
    /// Distance between consecutive columns.
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major view of `rows × cols` starting at `offset` with the given row stride.
    pub fn rows_of(
        data: &'a [f32],
        offset: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Self {
        Self {
            data: data.get(offset..).unwrap_or(&[]),
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            data: self.data,
        }
    }
}

impl<'a> MatMut<'a> {
    /// A row-major writable view of `rows × cols` starting at `offset`.
    pub fn rows_of(
        data: &'a mut [f32],
        offset: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Self {
        let data = match data.get_mut(offset..) {
            Some(d) => d,
            None => &mut [],
        };
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }
}

/// Panics, naming `who` and the shapes, unless `lhs · rhs` is `rows × cols`.
pub(super) fn assert_product_shapes(
    who: &str,
    rows: usize,
    cols: usize,
    lhs: &MatRef<'_>,
    rhs: &MatRef<'_>,
) {
    assert!(
        lhs.cols == rhs.rows && rows == lhs.rows && cols == rhs.cols,
        "{who}: shapes {}x{} · {}x{} -> {rows}x{cols}",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols,
    );
}

fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1).checked_mul(row_stride).and_then(|a| {
        (cols - 1)
            .checked_mul(col_stride)
            .and_then(|b| a.checked_add(b))
    });
    matches!(last, Some(i) if i < len)
}

/// `dst = scale · lhs · rhs` (or `dst += scale · lhs · rhs` with `accumulate`), single-threaded.
///
/// # Panics
/// When the shapes disagree or a view does not fit inside its buffer: both are
/// programming errors of the calling kernel, never caused by user data.
pub fn matmul(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, scale: f32, accumulate: bool) {
    product(dst, lhs, rhs, scale, accumulate, gemm::Parallelism::None);
}

/// Products at most this many multiply-adds use plain loops: below it, gemm's packing
/// and dispatch cost more than the arithmetic (attention of 48- and 96-pixel crops).
pub const SMALL_PRODUCT: usize = 48 * 48 * 64;

/// [`matmul`] for tiny matrices: loops the compiler vectorises when the inner
/// dimension is contiguous, gemm otherwise.
pub fn matmul_small(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, scale: f32) {
    let contiguous_rows = rhs.col_stride == 1 && dst.col_stride == 1;
    let contiguous_dots = lhs.col_stride == 1 && rhs.row_stride == 1;
    if lhs.rows * lhs.cols * rhs.cols > SMALL_PRODUCT || !(contiguous_rows || contiguous_dots) {
        return matmul(dst, lhs, rhs, scale, false);
    }
    assert!(
        lhs.cols == rhs.rows && dst.rows == lhs.rows && dst.cols == rhs.cols,
        "small_gemm: shapes"
    );
    if contiguous_rows {
        axpy_product(dst, lhs, rhs, scale);
    } else {
        dot_product(dst, lhs, rhs, scale);
    }
}

with_avx512! {
    /// `dst_i = scale · Σ_p lhs_ip · rhs_p` with contiguous rows of `rhs` and `dst`.
    fn axpy_product(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, scale: f32) {
        let n = dst.cols;
        for i in 0..dst.rows {
            let out = &mut dst.data[i * dst.row_stride..i * dst.row_stride + n];
            out.fill(0.0);
            for p in 0..lhs.cols {
                let a = scale * lhs.data[i * lhs.row_stride + p * lhs.col_stride];
                let row = &rhs.data[p * rhs.row_stride..p * rhs.row_stride + n];
                out.iter_mut().zip(row).for_each(|(o, &r)| *o += a * r);
            }
        }
    }
}

with_avx512! {
    /// `dst_ij = scale · lhs_i · rhs_j` with contiguous rows of `lhs` and columns of `rhs`.
    fn dot_product(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, scale: f32) {
        let k = lhs.cols;
        for i in 0..dst.rows {
            let a = &lhs.data[i * lhs.row_stride..i * lhs.row_stride + k];
            for j in 0..dst.cols {
                let b = &rhs.data[j * rhs.col_stride..j * rhs.col_stride + k];
                dst.data[i * dst.row_stride + j * dst.col_stride] = scale * dot(a, b);
            }
        }
    }
}

/// Dot product with 8 independent accumulators so the compiler can vectorise it.
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    let tail: f32 = a[chunks..]
        .iter()
        .zip(&b[chunks..])
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// [`matmul`] on all of rayon's threads, for large products.
pub fn matmul_par(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, scale: f32, accumulate: bool) {
    let threads = rayon::current_num_threads();
    if threads > 1
        && dst.col_stride == 1
        && lhs.col_stride == 1
        && dst.rows >= threads * ROWS_PER_THREAD
    {
        return matmul_row_blocks(dst, lhs, rhs, scale, accumulate, threads);
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    product(dst, lhs, rhs, scale, accumulate, parallelism);
}

/// Fewest output rows per thread for [`matmul_row_blocks`].
const ROWS_PER_THREAD: usize = 128;

/// Tall products with row-major output and left side: one independent single-threaded
/// gemm per block of rows, a block per thread. Measured faster than gemm's own rayon
/// split for the token-major linear layers of a ViT batch.
fn matmul_row_blocks(
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    scale: f32,
    accumulate: bool,
    threads: usize,
) {
    use rayon::prelude::*;
    let per = dst.rows.div_ceil(threads);
    let (total, cols, stride) = (dst.rows, dst.cols, dst.row_stride);
    dst.data
        .par_chunks_mut(per * stride)
        .enumerate()
        .for_each(|(i, chunk)| {
            let first = i * per;
            if first >= total {
                return;
            }
            let rows = per.min(total - first);
            let out = MatMut::rows_of(chunk, 0, rows, cols, stride);
            let start = (first * lhs.row_stride).min(lhs.data.len());
            let left = MatRef::rows_of(&lhs.data[start..], 0, rows, lhs.cols, lhs.row_stride);
            product(out, left, rhs, scale, accumulate, gemm::Parallelism::None);
        });
}

fn product(
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    scale: f32,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    assert_product_shapes("small_gemm", dst.rows, dst.cols, &lhs, &rhs);
    assert!(fits(
        lhs.data.len(),
        lhs.rows,
        lhs.cols,
        lhs.row_stride,
        lhs.col_stride
    ));
    assert!(fits(
        rhs.data.len(),
        rhs.rows,
        rhs.cols,
        rhs.row_stride,
        rhs.col_stride
    ));
    assert!(fits(
        dst.data.len(),
        dst.rows,
        dst.cols,
        dst.row_stride,
        dst.col_stride
    ));
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    let as_isize = |s: usize| s as isize;
    // SAFETY: every element gemm touches is inside the slices (checked by `fits` above with
    // non-negative strides); `dst` is a unique borrow, so it overlaps neither input; an
    // empty inner dimension (k = 0) makes gemm write `dst = 0` (or leave it) only.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.data.as_mut_ptr(),
            as_isize(dst.col_stride),
            as_isize(dst.row_stride),
            accumulate,
            lhs.data.as_ptr(),
            as_isize(lhs.col_stride),
            as_isize(lhs.row_stride),
            rhs.data.as_ptr(),
            as_isize(rhs.col_stride),
            as_isize(rhs.row_stride),
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &MatRef, b: &MatRef) -> Vec<f32> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols)
                    .map(|k| {
                        a.data[i * a.row_stride + k * a.col_stride]
                            * b.data[k * b.row_stride + j * b.col_stride]
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn strided_and_transposed_views_multiply_correctly() {
        let a: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..40).map(|i| (i as f32 * 0.11).cos()).collect();
        // a: 3x4 block inside rows of 10; b: transpose of a 5x4 block inside rows of 8
        let lhs = MatRef::rows_of(&a, 2, 3, 4, 10);
        let rhs = MatRef::rows_of(&b, 1, 5, 4, 8).t();
        let want = naive(&lhs, &rhs);
        let mut out = vec![1.0; 3 * 5];
        matmul(MatMut::rows_of(&mut out, 0, 3, 5, 5), lhs, rhs, 1.0, false);
        for (o, w) in out.iter().zip(&want) {
            assert!((o - w).abs() < 1e-5, "{o} vs {w}");
        }
        matmul(MatMut::rows_of(&mut out, 0, 3, 5, 5), lhs, rhs, 2.0, true);
        for (o, w) in out.iter().zip(&want) {
            assert!((o - 3.0 * w).abs() < 1e-5);
        }
    }

    #[test]
    fn loop_products_match_gemm() {
        let a: Vec<f32> = (0..2000).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..2000).map(|i| (i as f32 * 0.11).cos()).collect();
        // q kᵀ (dot form), p v (axpy form), pᵀ v (axpy, strided lhs)
        let cases = [
            (
                MatRef::rows_of(&a, 3, 7, 16, 40),
                MatRef::rows_of(&b, 5, 9, 16, 40).t(),
            ),
            (
                MatRef::rows_of(&a, 0, 7, 9, 9),
                MatRef::rows_of(&b, 1, 9, 16, 40),
            ),
            (
                MatRef::rows_of(&a, 0, 9, 7, 7).t(),
                MatRef::rows_of(&b, 2, 9, 16, 40),
            ),
        ];
        for (lhs, rhs) in cases {
            let mut want = vec![0f32; lhs.rows * rhs.cols];
            let mut got = want.clone();
            let (r, c) = (lhs.rows, rhs.cols);
            matmul(MatMut::rows_of(&mut want, 0, r, c, c), lhs, rhs, 0.5, false);
            matmul_small(MatMut::rows_of(&mut got, 0, r, c, c), lhs, rhs, 0.5);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "small_gemm")]
    fn mismatched_shapes_are_refused() {
        let a = [0f32; 4];
        let mut out = [0f32; 4];
        matmul(
            MatMut::rows_of(&mut out, 0, 2, 2, 2),
            MatRef::rows_of(&a, 0, 2, 2, 2),
            MatRef::rows_of(&a, 0, 1, 2, 2),
            1.0,
            false,
        );
    }

    #[test]
    #[should_panic]
    fn views_outside_their_buffer_are_refused() {
        let a = [0f32; 4];
        let mut out = [0f32; 4];
        matmul(
            MatMut::rows_of(&mut out, 0, 2, 2, 2),
            MatRef::rows_of(&a, 1, 2, 2, 2),
            MatRef::rows_of(&a, 0, 2, 2, 2),
            1.0,
            false,
        );
    }
}
