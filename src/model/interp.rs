//! Bicubic resizing of the positional-embedding grid, exactly as the official
//! `interpolate_pos_encoding` does it through `F.interpolate(mode='bicubic')`.
//!
//! The official call passes `scale_factor = (n + 0.1) / N` (not `n / N`) with
//! `align_corners=False`, so PyTorch maps output index `i` to the source coordinate
//! `(i + 0.5) / scale_factor - 0.5` (in f32, with the scale rounded to f32 first) and
//! weighs the four neighbours with the cubic convolution kernel, A = -0.75, clamping
//! the taps to the grid. Resizing is separable, so the whole 2-D resize is one matrix
//! `kron(R_rows, R_cols)` applied to the flattened grid: exact and differentiable.

/// The cubic convolution constant PyTorch uses.
const CUBIC_A: f32 = -0.75;

fn cubic_near(x: f32) -> f32 {
    ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0
}

fn cubic_far(x: f32) -> f32 {
    ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A
}

/// Weights of the four taps at offsets -1, 0, 1, 2 for a fractional position `t`.
fn cubic_coefficients(t: f32) -> [f32; 4] {
    let x2 = 1.0 - t;
    [
        cubic_far(t + 1.0),
        cubic_near(t),
        cubic_near(x2),
        cubic_far(x2 + 1.0),
    ]
}

/// The `out × input` matrix that resizes one axis from `input` to `out` samples the way
/// `F.interpolate(..., scale_factor, mode='bicubic', align_corners=False)` does.
pub fn bicubic_axis_matrix(input: usize, out: usize, scale_factor: f64) -> Vec<f32> {
    let scale = (1.0 / scale_factor) as f32;
    let last = input as i64 - 1;
    let mut matrix = vec![0f32; out * input];
    for i in 0..out {
        let source = scale * (i as f32 + 0.5) - 0.5;
        // PyTorch's guard_index_and_lambda: index at most input-1, fraction in [0, 1].
        let index = (source.floor() as i64).min(last);
        let t = (source - index as f32).clamp(0.0, 1.0);
        for (k, weight) in cubic_coefficients(t).into_iter().enumerate() {
            let tap = (index - 1 + k as i64).clamp(0, last) as usize;
            matrix[i * input + tap] += weight;
        }
    }
    matrix
}

/// The `(rows·cols) × (side·side)` matrix that maps a `side × side` positional grid
/// (row-major) to a `rows × cols` one, with the official `(n + 0.1) / side` scale factors.
pub fn pos_embed_resize_matrix(side: usize, rows: usize, cols: usize) -> Vec<f32> {
    let r = bicubic_axis_matrix(side, rows, (rows as f64 + 0.1) / side as f64);
    let c = bicubic_axis_matrix(side, cols, (cols as f64 + 0.1) / side as f64);
    let n_in = side * side;
    let mut matrix = vec![0f32; rows * cols * n_in];
    for i in 0..rows {
        for j in 0..cols {
            let out_row = &mut matrix[(i * cols + j) * n_in..(i * cols + j + 1) * n_in];
            for a in 0..side {
                let ra = r[i * side + a];
                if ra == 0.0 {
                    continue;
                }
                for b in 0..side {
                    out_row[a * side + b] = ra * c[j * side + b];
                }
            }
        }
    }
    matrix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one() {
        for (input, out) in [(14, 6), (14, 2), (14, 20), (28, 60)] {
            let m = bicubic_axis_matrix(input, out, (out as f64 + 0.1) / input as f64);
            for row in m.chunks(input) {
                let s: f32 = row.iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "{input}->{out}: row sums to {s}");
            }
        }
    }

    #[test]
    fn integer_positions_copy_the_sample() {
        // t = 0 puts all the weight on the centre tap.
        assert_eq!(cubic_coefficients(0.0), [0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn scale_factor_uses_the_official_offset() {
        // 14 -> 6 with scale (6.1/14): output 0 reads source (0.5 * 14/6.1) - 0.5.
        let m = bicubic_axis_matrix(14, 6, 6.1 / 14.0);
        let source = 0.5f32 * (14.0 / 6.1) - 0.5;
        let t = source - source.floor();
        let w = cubic_coefficients(t);
        // floor(source) = 0: taps -1, 0, 1, 2, the first clamped onto 0
        assert!((m[0] - (w[0] + w[1])).abs() < 1e-5);
        assert!((m[1] - w[2]).abs() < 1e-5);
        assert!((m[2] - w[3]).abs() < 1e-5);
    }
}
