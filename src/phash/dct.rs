//! The sign-of-DCT hash and its eight dihedral forms.

use image::RgbImage;

/// Side of the luma square the DCT is taken on.
const SIDE: usize = 64;
/// Frequencies kept per axis (1..=16; frequency 0, the mean, is left out).
const FREQS: usize = 16;
/// A border row or column is uniform when the luma's standard deviation along it is below
/// this (0–255 scale): black, white and coloured bars, even after JPEG noise.
const UNIFORM_STD: f32 = 8.0;
/// Trimming never removes more than this fraction of either side (a nearly blank photo
/// is hashed as it is).
const MAX_TRIM: f32 = 0.8;

/// The hash as four little-endian words: bit `r * 16 + c` is the sign of coefficient
/// (row frequency `r + 1`, column frequency `c + 1`).
type Bits = [u64; 4];

/// The luma of `img` on the 0–255 scale, row by row.
fn luma_of(img: &RgbImage) -> Vec<f32> {
    img.pixels()
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect()
}

pub(super) fn sign_hash(img: &RgbImage) -> [u8; 32] {
    sign_hash_and_padding(img).0
}

/// [`sign_hash`] and the fraction of the image in flat padding ([`flat_part`]), from one
/// luma and one trimming of its borders.
pub(super) fn sign_hash_and_padding(img: &RgbImage) -> ([u8; 32], f32) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let luma = luma_of(img);
    let trimmed = trim_uniform_borders(&luma, w, h);
    let square = area_resize(&luma, w, trimmed);
    let hash = to_bytes(&coefficient_signs(&square));
    (hash, flat_part(&luma, w, h, trimmed))
}

/// The part of a `w × h` luma image inside its uniform borders, as `(x0, y0, x1, y1)`
/// (half-open). The whole image when trimming would leave too little.
pub fn trim_uniform_borders(luma: &[f32], w: usize, h: usize) -> (usize, usize, usize, usize) {
    let row = |y: usize| std_dev((0..w).map(|x| luma[y * w + x]));
    let col = |x: usize| std_dev((0..h).map(|y| luma[y * w + x]));
    let leading =
        |n: usize, uniform: &dyn Fn(usize) -> bool| (0..n).take_while(|&i| uniform(i)).count();
    let top = leading(h, &|y| row(y) < UNIFORM_STD);
    let bottom = leading(h, &|y| row(h - 1 - y) < UNIFORM_STD);
    let left = leading(w, &|x| col(x) < UNIFORM_STD);
    let right = leading(w, &|x| col(w - 1 - x) < UNIFORM_STD);
    let too_much = |a: usize, b: usize, n: usize| (a + b) as f32 >= MAX_TRIM * n as f32;
    if w == 0 || h == 0 || too_much(top, bottom, h) || too_much(left, right, w) {
        return (0, 0, w, h);
    }
    (left, top, w - right, h - bottom)
}

/// Fraction of a `w × h` luma image outside `trimmed` (its uniform borders,
/// [`trim_uniform_borders`]) in bands that are one flat colour as a whole: letterbox bars, a
/// frame. A band of sky, uniform along each row but shaded from row to row, is not.
fn flat_part(luma: &[f32], w: usize, h: usize, trimmed: (usize, usize, usize, usize)) -> f32 {
    if w == 0 || h == 0 {
        return 0.0;
    }
    let (x0, y0, x1, y1) = trimmed;
    let flat = |xs: std::ops::Range<usize>, ys: std::ops::Range<usize>| {
        let band = ys.flat_map(|y| xs.clone().map(move |x| (x, y)));
        std_dev(band.map(|(x, y)| luma[y * w + x])) < UNIFORM_STD
    };
    let left = if flat(0..x0, 0..h) { x0 } else { 0 };
    let right = if flat(x1..w, 0..h) { x1 } else { w };
    let top = if flat(0..w, 0..y0) { y0 } else { 0 };
    let bottom = if flat(0..w, y1..h) { y1 } else { h };
    1.0 - ((right - left) * (bottom - top)) as f32 / (w * h) as f32
}

fn std_dev(values: impl Iterator<Item = f32>) -> f32 {
    let (mut n, mut sum, mut sq) = (0f32, 0f32, 0f32);
    for v in values {
        n += 1.0;
        sum += v;
        sq += v * v;
    }
    if n == 0.0 {
        return 0.0;
    }
    let mean = sum / n;
    (sq / n - mean * mean).max(0.0).sqrt()
}

/// For each of `dst` output cells, the source cells of `src` it covers and their weights
/// (summing to 1): a box filter, exact for any ratio.
fn area_weights(src: usize, dst: usize) -> Vec<Vec<(usize, f32)>> {
    (0..dst)
        .map(|o| {
            let lo = o as f64 * src as f64 / dst as f64;
            let hi = (o + 1) as f64 * src as f64 / dst as f64;
            let mut cells: Vec<(usize, f32)> = (lo.floor() as usize..(hi.ceil() as usize).min(src))
                .map(|i| (i, (hi.min(i as f64 + 1.0) - lo.max(i as f64)) as f32))
                .filter(|&(_, w)| w > 0.0)
                .collect();
            let total: f32 = cells.iter().map(|c| c.1).sum();
            cells.iter_mut().for_each(|c| c.1 /= total);
            cells
        })
        .collect()
}

/// The `(x0, y0, x1, y1)` window of the `stride`-wide luma, box-filtered to `SIDE × SIDE`.
fn area_resize(luma: &[f32], stride: usize, window: (usize, usize, usize, usize)) -> Vec<f32> {
    let (x0, y0, x1, y1) = window;
    let across = area_weights(x1 - x0, SIDE);
    let down = area_weights(y1 - y0, SIDE);
    let rows: Vec<[f32; SIDE]> = (y0..y1)
        .map(|y| {
            let mut out = [0f32; SIDE];
            for (o, cells) in out.iter_mut().zip(&across) {
                *o = cells
                    .iter()
                    .map(|&(i, w)| w * luma[y * stride + x0 + i])
                    .sum();
            }
            out
        })
        .collect();
    let mut square = vec![0f32; SIDE * SIDE];
    for (oy, cells) in down.iter().enumerate() {
        for &(i, w) in cells {
            for (ox, v) in rows[i].iter().enumerate() {
                square[oy * SIDE + ox] += w * v;
            }
        }
    }
    square
}

/// DCT-II basis rows for frequencies 1..=FREQS.
fn basis() -> [[f32; SIDE]; FREQS] {
    let mut d = [[0f32; SIDE]; FREQS];
    for (k, row) in d.iter_mut().enumerate() {
        for (x, v) in row.iter_mut().enumerate() {
            let angle =
                std::f64::consts::PI * (2 * x + 1) as f64 * (k + 1) as f64 / (2 * SIDE) as f64;
            *v = angle.cos() as f32;
        }
    }
    d
}

/// Signs of the 16 × 16 DCT coefficients of frequencies 1..=16 of a `SIDE²` square.
fn coefficient_signs(square: &[f32]) -> Bits {
    let d = basis();
    // columns first: t[y][c] = Σx square[y][x] d[c][x]
    let t: Vec<[f32; FREQS]> = square
        .chunks_exact(SIDE)
        .map(|row| {
            let mut out = [0f32; FREQS];
            for (o, basis_row) in out.iter_mut().zip(&d) {
                *o = row.iter().zip(basis_row).map(|(a, b)| a * b).sum();
            }
            out
        })
        .collect();
    let mut bits = [0u64; 4];
    for (r, basis_row) in d.iter().enumerate() {
        for c in 0..FREQS {
            let coefficient: f32 = t.iter().zip(basis_row).map(|(row, b)| row[c] * b).sum();
            if coefficient > 0.0 {
                set(&mut bits, r * FREQS + c);
            }
        }
    }
    bits
}

fn set(bits: &mut Bits, i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn get(bits: &Bits, i: usize) -> bool {
    bits[i / 64] >> (i % 64) & 1 == 1
}

pub(super) fn to_bytes(bits: &Bits) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(8).zip(bits) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

fn from_bytes(bytes: &[u8; 32]) -> Bits {
    let mut bits = [0u64; 4];
    for (word, chunk) in bits.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *word = u64::from_le_bytes(b);
    }
    bits
}

/// Bits whose coefficient changes sign when the photo is flipped along one axis: an odd
/// frequency along that axis (row frequency for an upside-down flip, column for a mirror).
fn odd_mask(along_rows: bool) -> Bits {
    let mut mask = [0u64; 4];
    for r in 0..FREQS {
        for c in 0..FREQS {
            let frequency = if along_rows { r + 1 } else { c + 1 };
            if frequency % 2 == 1 {
                set(&mut mask, r * FREQS + c);
            }
        }
    }
    mask
}

fn transpose(bits: &Bits) -> Bits {
    let mut out = [0u64; 4];
    for r in 0..FREQS {
        for c in 0..FREQS {
            if get(bits, r * FREQS + c) {
                set(&mut out, c * FREQS + r);
            }
        }
    }
    out
}

/// The hash of every flip and quarter-turn of the photo: transposed or not, then
/// flipped upside down and/or mirrored. Form 0 is the hash itself.
pub(super) fn dihedral_forms(hash: &[u8; 32]) -> [Bits; 8] {
    let upright = from_bytes(hash);
    let (rows, cols) = (odd_mask(true), odd_mask(false));
    let xor = |a: &Bits, b: &Bits| -> Bits { std::array::from_fn(|i| a[i] ^ b[i]) };
    let none = [0u64; 4];
    let both = xor(&rows, &cols);
    let mut forms = [[0u64; 4]; 8];
    for (t, base) in [upright, transpose(&upright)].iter().enumerate() {
        for (f, mask) in [none, rows, cols, both].iter().enumerate() {
            forms[t * 4 + f] = xor(base, mask);
        }
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured picture (a diagonal pattern) of `w × h`.
    fn texture(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = ((x * 7 + y * 13) % 97 * 2 + (x * y) % 31) as u8;
            image::Rgb([v, v.wrapping_add(40), 255 - v])
        })
    }

    fn flat_padding(img: &RgbImage) -> f32 {
        sign_hash_and_padding(img).1
    }

    #[test]
    fn flat_padding_measures_bars_and_frames_but_not_a_shaded_sky() {
        let picture = texture(200, 120);
        assert!(flat_padding(&picture) < 0.01);
        let mut letterboxed = RgbImage::from_pixel(200, 200, image::Rgb([0, 0, 0]));
        image::imageops::overlay(&mut letterboxed, &picture, 0, 40);
        let bars = flat_padding(&letterboxed);
        assert!((bars - 0.4).abs() < 0.02, "{bars}");
        let mut framed = RgbImage::from_pixel(220, 140, image::Rgb([250, 250, 250]));
        image::imageops::overlay(&mut framed, &picture, 10, 10);
        let frame = flat_padding(&framed);
        assert!(
            (frame - (1.0 - 200.0 * 120.0 / (220.0 * 140.0))).abs() < 0.02,
            "{frame}"
        );
        let mut sky = picture.clone();
        for y in 0..50 {
            for x in 0..200 {
                let v = 120 + y as u8 * 2;
                sky.put_pixel(x, y, image::Rgb([v / 2, v, 255]));
            }
        }
        let shaded = flat_padding(&sky);
        assert!(
            shaded < 0.01,
            "a sky shaded row to row is no padding: {shaded}"
        );
    }

    #[test]
    fn box_weights_cover_each_source_cell_once() {
        for (src, dst) in [(100, 64), (64, 64), (10, 64), (1, 64), (333, 64)] {
            let weights = area_weights(src, dst);
            let mut coverage = vec![0f32; src];
            for cells in &weights {
                let total: f32 = cells.iter().map(|c| c.1).sum();
                assert!((total - 1.0).abs() < 1e-5);
                for &(i, w) in cells {
                    coverage[i] += w * src as f32 / dst as f32;
                }
            }
            assert!(
                coverage.iter().all(|c| (c - 1.0).abs() < 1e-3),
                "{src}->{dst}"
            );
        }
    }

    #[test]
    fn bytes_round_trip_and_forms_are_a_group() {
        let mut hash = [0u8; 32];
        hash.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i * 37 + 11) as u8);
        assert_eq!(to_bytes(&from_bytes(&hash)), hash);
        let forms = dihedral_forms(&hash);
        assert_eq!(to_bytes(&forms[0]), hash);
        // applying a flip twice, or transposing twice, gives the hash back
        assert_eq!(to_bytes(&dihedral_forms(&to_bytes(&forms[1]))[1]), hash);
        assert_eq!(transpose(&transpose(&forms[0])), forms[0]);
        let distinct: std::collections::HashSet<Bits> = forms.into_iter().collect();
        assert_eq!(distinct.len(), 8);
    }

    #[test]
    fn uniform_bars_are_trimmed_and_a_blank_image_is_not() {
        let (w, h) = (40, 30);
        let luma: Vec<f32> = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                if !(5..27).contains(&y) {
                    0.0
                } else {
                    100.0 + (x * 7 % 50) as f32 * 4.0
                }
            })
            .collect();
        assert_eq!(trim_uniform_borders(&luma, w, h), (0, 5, w, 27));
        assert_eq!(trim_uniform_borders(&vec![3.0; w * h], w, h), (0, 0, w, h));
    }
}
