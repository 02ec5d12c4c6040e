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

/// [`matmul`] on all of rayon's threads, for large products.
pub fn matmul_par(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, scale: f32, accumulate: bool) {
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    product(dst, lhs, rhs, scale, accumulate, parallelism);
}

fn product(
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    scale: f32,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    assert!(
        lhs.cols == rhs.rows && dst.rows == lhs.rows && dst.cols == rhs.cols,
        "small_gemm: shapes {}x{} · {}x{} -> {}x{}",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols,
        dst.rows,
        dst.cols
    );
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
