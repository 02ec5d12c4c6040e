//! The student's DINO head and the DINO cross-entropy as one CPU custom op with a
//! hand-written backward:
//!
//! ```text
//! h = fc2(gelu(fc1(gelu(fc0(x)))))          the head's MLP, [N, bottleneck]
//! z = h / max(‖h‖, 1e-12)                   F.normalize
//! s = (z vᵀ) ⊙ (g / ‖v‖)ᵀ                   weight-normed last layer, [N, K]
//! loss = −1/(B·P) Σ_(i, v ≠ i) Σ_b q_(i,b) · log softmax(s_(v,b) / τs)
//! ```
//!
//! (`N = ncrops·B` student rows, view-major; `q`: the teacher's targets of its `n_t` global
//! views; `P = n_t·ncrops − n_t` view pairs.) Through candle's autograd the same graph is
//! ~25 nodes whose backward allocates and walks `[N, K]` tensors a dozen times; here the
//! loss gradient is one pass, `ds = (m·p − Q) / (B·P·τs)` with `p` the student softmax,
//! `Q` the sum of the targets of the other global views and `m` their count, and the
//! rest is eight products and three fused passes. The head's tensors arrive as one flat
//! vector ([`HeadParams`] order) so that the backward returns all their gradients at once.

use std::sync::{Mutex, PoisonError};

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::block::{linear, linear_backward, mat, mat_mut, product, product_bt, Products};
use super::kernels::{
    bias_gelu_rows_par, column_sums, contiguous_f32, flat_part, flat_parts_mut, multiply_in_place,
    read_f32, scaled_softmax, take_kept,
};
use super::scratch;

type CResult<T> = candle_core::Result<T>;

/// The head's products stay f32: bf16 ones (AMX) gained 0–1.5 % of a ViT-Tiny step, within
/// the noise (docs/benchmarks.md), too little to re-run the 30-minute recipe for.
const PRODUCTS: Products = Products::F32;

/// `F.normalize`'s floor on the norm.
const NORM_FLOOR: f32 = 1e-12;

/// Widths of the head; the flat parameter vector holds, in order, `mlp.0.weight`
/// `[hidden, in]`, `mlp.0.bias`, `mlp.2.weight` `[hidden, hidden]`, `mlp.2.bias`,
/// `mlp.4.weight` `[bottleneck, hidden]`, `mlp.4.bias`, `last_layer.weight_v`
/// `[out, bottleneck]` and `last_layer.weight_g` `[out, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadParams {
    /// Width of the features the head reads.
    pub in_dim: usize,
    /// Hidden width of the MLP.
    pub hidden: usize,
    /// Width before the normalisation.
    pub bottleneck: usize,
    /// Number of prototypes `K`.
    pub out_dim: usize,
}

/// Index of each tensor in [`HeadParams::sizes`].
#[derive(Debug, Clone, Copy)]
enum P {
    W0,
    B0,
    W1,
    B1,
    W2,
    B2,
    V,
    G,
}

impl HeadParams {
    /// Element counts of the eight tensors, in order.
    pub fn sizes(&self) -> [usize; 8] {
        let (d, h, b, k) = (self.in_dim, self.hidden, self.bottleneck, self.out_dim);
        [h * d, h, h * h, h, b * h, b, k * b, k]
    }

    /// Total element count.
    pub fn len(&self) -> usize {
        self.sizes().iter().sum()
    }

    /// Whether the head has no parameters (never, for valid widths).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get<'a>(&self, flat: &'a [f32], p: P) -> &'a [f32] {
        flat_part(&self.sizes(), flat, p as usize)
    }

    /// The eight tensors of a flat vector (such as the gradient), writable, in order.
    fn split<'a>(&self, flat: &'a mut [f32]) -> [&'a mut [f32]; 8] {
        flat_parts_mut(&self.sizes(), flat)
    }
}

/// How the loss pairs the views.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossViewTargets {
    /// The teacher's target distributions `[n_t·B, K]`, view-major.
    pub targets: Vec<f32>,
    /// Views the student saw (`N = ncrops·B` rows).
    pub ncrops: usize,
    /// Student temperature `τs`.
    pub student_temp: f32,
}

/// Activations the backward pass reads.
#[derive(Debug)]
struct Saved {
    /// `gelu'` of the first hidden layer's pre-activation (computed with `g0`).
    gelu_grad0: Vec<f32>,
    g0: Vec<f32>,
    /// `gelu'` of the second hidden layer's pre-activation.
    gelu_grad1: Vec<f32>,
    g1: Vec<f32>,
    /// Normalised bottleneck `z`.
    z: Vec<f32>,
    /// `max(‖h‖, 1e-12)` per row.
    h_norm: Vec<f32>,
    /// Raw products `z vᵀ` before the column scale.
    raw: Vec<f32>,
    /// Student probabilities `softmax(s / τs)`.
    probs: Vec<f32>,
    /// `‖v_k‖` per prototype.
    v_norm: Vec<f32>,
}

impl Saved {
    fn recycle(self) {
        scratch::give([
            self.gelu_grad0,
            self.g0,
            self.gelu_grad1,
            self.g1,
            self.z,
            self.raw,
            self.probs,
        ]);
    }
}

/// The fused head and loss. Build one per step; its output is the scalar loss.
#[derive(Debug)]
pub struct HeadLossOp {
    /// Widths of the head.
    pub params: HeadParams,
    /// Targets and view layout of the loss.
    pub loss: CrossViewTargets,
    saved: Mutex<Option<Saved>>,
}

/// Row counts of one call.
#[derive(Debug, Clone, Copy)]
struct Rows {
    /// Student rows `N`.
    student: usize,
    /// Images per view `B`.
    batch: usize,
    /// Teacher views `n_t`.
    teacher_views: usize,
}

impl Rows {
    /// Number of (teacher view, other student view) pairs.
    fn pairs(&self, ncrops: usize) -> usize {
        self.teacher_views * ncrops - self.teacher_views
    }

    /// Teacher views other than the student row's own view (`m`).
    fn other_teacher_views(&self, row: usize) -> usize {
        let view = row / self.batch;
        self.teacher_views - usize::from(view < self.teacher_views)
    }
}

impl HeadLossOp {
    /// An op for a head of widths `params` against `loss`.
    pub fn new(params: HeadParams, loss: CrossViewTargets) -> Self {
        Self {
            params,
            loss,
            saved: Mutex::new(None),
        }
    }

    fn rows(&self, student_rows: usize) -> CResult<Rows> {
        let (k, ncrops) = (self.params.out_dim.max(1), self.loss.ncrops);
        let batch = student_rows / ncrops.max(1);
        let teacher_rows = self.loss.targets.len() / k;
        if batch == 0
            || teacher_rows == 0
            || !student_rows.is_multiple_of(ncrops)
            || !teacher_rows.is_multiple_of(batch)
            || teacher_rows * k != self.loss.targets.len()
            || teacher_rows / batch > ncrops
        {
            candle_core::bail!(
                "head loss: {student_rows} student rows and {teacher_rows} teacher rows do not split into {ncrops} views"
            );
        }
        Ok(Rows {
            student: student_rows,
            batch,
            teacher_views: teacher_rows / batch,
        })
    }

    /// `Q` of a student row: the sum of the targets of the other global views.
    fn other_targets(&self, rows: &Rows, row: usize, out: &mut [f32]) {
        let (k, b) = (self.params.out_dim, rows.batch);
        let (view, image) = (row / b, row % b);
        out.fill(0.0);
        for i in (0..rows.teacher_views).filter(|&i| i != view) {
            let q = &self.loss.targets[(i * b + image) * k..][..k];
            out.iter_mut().zip(q).for_each(|(o, q)| *o += q);
        }
    }

    /// The MLP and the normalisation: GELU derivatives and outputs, `z` and `‖h‖`.
    fn bottleneck(&self, x: &[f32], flat: &[f32], n: usize) -> Saved {
        let (p, products) = (&self.params, PRODUCTS);
        let mut gelu_grad0 = scratch::take(n * p.hidden);
        product_bt(
            products,
            x,
            p.get(flat, P::W0),
            n,
            p.hidden,
            &mut gelu_grad0,
        );
        let g0 = bias_gelu_rows_par(&mut gelu_grad0, p.get(flat, P::B0), true);
        let mut gelu_grad1 = scratch::take(n * p.hidden);
        product_bt(
            products,
            &g0,
            p.get(flat, P::W1),
            n,
            p.hidden,
            &mut gelu_grad1,
        );
        let g1 = bias_gelu_rows_par(&mut gelu_grad1, p.get(flat, P::B1), true);
        let mut z = scratch::take(n * p.bottleneck);
        linear(
            products,
            &g1,
            p.get(flat, P::W2),
            p.get(flat, P::B2),
            n,
            &mut z,
        );
        let h_norm = z
            .par_chunks_mut(p.bottleneck.max(1))
            .map(|row| {
                let norm = row
                    .iter()
                    .map(|v| v * v)
                    .sum::<f32>()
                    .sqrt()
                    .max(NORM_FLOOR);
                row.iter_mut().for_each(|v| *v /= norm);
                norm
            })
            .collect();
        Saved {
            gelu_grad0,
            g0,
            gelu_grad1,
            g1,
            z,
            h_norm,
            raw: Vec::new(),
            probs: Vec::new(),
            v_norm: Vec::new(),
        }
    }

    /// Forward pass: the loss, with the activations filled in `saved`.
    fn forward_slices(&self, flat: &[f32], rows: &Rows, saved: &mut Saved) -> f32 {
        let (p, n, k) = (&self.params, rows.student, self.params.out_dim);
        let v = p.get(flat, P::V);
        let g = p.get(flat, P::G);
        saved.v_norm = v
            .par_chunks(p.bottleneck.max(1))
            .map(|row| row.iter().map(|x| x * x).sum::<f32>().sqrt())
            .collect();
        let mut raw = scratch::take(n * k);
        product(
            PRODUCTS,
            mat_mut(&mut raw, n, k),
            mat(&saved.z, n, p.bottleneck),
            mat(v, k, p.bottleneck).t(),
        );
        let inv_temp = 1.0 / self.loss.student_temp;
        let scale: Vec<f32> = g
            .iter()
            .zip(&saved.v_norm)
            .map(|(g, vn)| g / vn * inv_temp)
            .collect();
        let mut probs = scratch::take(n * k);
        let row_losses: Vec<f64> = probs
            .par_chunks_mut(k)
            .zip(raw.par_chunks(k))
            .enumerate()
            .map_init(
                || vec![0f32; k],
                |others, (row, (prob, raw))| {
                    self.other_targets(rows, row, others);
                    row_loss(raw, &scale, others, rows.other_teacher_views(row), prob)
                },
            )
            .collect();
        saved.raw = raw;
        saved.probs = probs;
        (row_losses.iter().sum::<f64>() / (rows.batch * rows.pairs(self.loss.ncrops)) as f64) as f32
    }
}

/// One student row: fills `prob` with `softmax(raw ⊙ scale)` and returns
/// `−Σ_k Q_k log prob_k` (with `Σ_k Q_k = m`).
fn row_loss(raw: &[f32], scale: &[f32], others: &[f32], m: usize, prob: &mut [f32]) -> f64 {
    let (max, sum, weighted) = scaled_softmax(raw, scale, others, prob);
    // log softmax = s − max − ln Σ; Σ_k Q_k (s_k − max − ln Σ) = weighted − m (max + ln Σ)
    m as f64 * (f64::from(max) + f64::from(sum).ln()) - f64::from(weighted)
}

impl HeadLossOp {
    /// Gradients `(dx, dflat)` of `dloss · loss`.
    fn backward_slices(
        &self,
        x: &[f32],
        flat: &[f32],
        dloss: f32,
        rows: &Rows,
        s: &Saved,
    ) -> (Vec<f32>, Vec<f32>) {
        let (p, n, k, bn) = (
            &self.params,
            rows.student,
            self.params.out_dim,
            self.params.bottleneck,
        );
        let products = PRODUCTS;
        let mut grads = scratch::take(p.len());
        let [dw0, db0, dw1, db1, dw2, db2, dv, dg] = p.split(&mut grads);
        let v = p.get(flat, P::V);
        let g = p.get(flat, P::G);
        let inv_temp = 1.0 / self.loss.student_temp;
        let coef = dloss / (rows.batch * rows.pairs(self.loss.ncrops)) as f32 * inv_temp;
        // ds = coef (m p − Q), then da = ds ⊙ c with c_k = g_k / ‖v_k‖
        let mut da = scratch::take(n * k);
        da.par_chunks_mut(k)
            .zip(s.probs.par_chunks(k))
            .enumerate()
            .for_each_init(
                || vec![0f32; k],
                |others, (row, (d, prob))| {
                    self.other_targets(rows, row, others);
                    let m = rows.other_teacher_views(row) as f32;
                    for ((d, p), q) in d.iter_mut().zip(prob).zip(others.iter()) {
                        *d = coef * (m * p - q);
                    }
                },
            );
        // dc_k = Σ_n ds_nk raw_nk; then ds → da
        let dc = scale_columns_and_sum(&mut da, &s.raw, g, &s.v_norm, k);
        for ((dg, dc), vn) in dg.iter_mut().zip(&dc).zip(&s.v_norm) {
            *dg = dc / vn;
        }
        // dv = daᵀ z − (dc g / ‖v‖³) v
        product(
            products,
            mat_mut(dv, k, bn),
            mat(&da, n, k).t(),
            mat(&s.z, n, bn),
        );
        dv.par_chunks_mut(bn.max(1))
            .zip(v.par_chunks(bn.max(1)))
            .enumerate()
            .for_each(|(kk, (dv, v))| {
                let vn = s.v_norm[kk];
                let w = dc[kk] * g[kk] / (vn * vn * vn);
                dv.iter_mut().zip(v).for_each(|(d, v)| *d -= w * v);
            });
        // dz = da v, then dh = (dz − z (z·dz)) / ‖h‖
        let mut dh = scratch::take(n * bn);
        product(
            products,
            mat_mut(&mut dh, n, bn),
            mat(&da, n, k),
            mat(v, k, bn),
        );
        scratch::give([da]);
        dh.par_chunks_mut(bn.max(1))
            .zip(s.z.par_chunks(bn.max(1)))
            .zip(s.h_norm.par_iter())
            .for_each(|((dz, z), &norm)| {
                let along = if norm > NORM_FLOOR {
                    dz.iter().zip(z).map(|(d, z)| d * z).sum::<f32>()
                } else {
                    0.0
                };
                dz.iter_mut()
                    .zip(z)
                    .for_each(|(d, z)| *d = (*d - z * along) / norm);
            });
        // back through the MLP: each linear's weight and bias gradients, and its input's
        // gradient times the GELU derivative kept from the forward (none after the first)
        let layers = [
            (
                s.g1.as_slice(),
                P::W2,
                dw2,
                db2,
                Some(s.gelu_grad1.as_slice()),
            ),
            (
                s.g0.as_slice(),
                P::W1,
                dw1,
                db1,
                Some(s.gelu_grad0.as_slice()),
            ),
            (x, P::W0, dw0, db0, None),
        ];
        let mut dy = dh;
        for (input, w, dw, db, gelu_grad) in layers {
            let mut dx = scratch::take(input.len());
            let weight = p.get(flat, w);
            linear_backward(products, input, weight, &dy, n, dw, db, Some(&mut dx));
            if let Some(gelu_grad) = gelu_grad {
                multiply_in_place(&mut dx, gelu_grad);
            }
            scratch::give([std::mem::replace(&mut dy, dx)]);
        }
        (dy, grads)
    }
}

/// Turns `ds` into `da = ds ⊙ c` (`c_k = g_k / ‖v_k‖`) in place and returns
/// `dc_k = Σ_n ds_nk raw_nk`.
fn scale_columns_and_sum(
    ds: &mut [f32],
    raw: &[f32],
    g: &[f32],
    v_norm: &[f32],
    k: usize,
) -> Vec<f32> {
    let dc = column_sums_of_product(ds, raw, k);
    let c: Vec<f32> = g.iter().zip(v_norm).map(|(g, vn)| g / vn).collect();
    ds.par_chunks_mut(k.max(1))
        .for_each(|row| row.iter_mut().zip(&c).for_each(|(d, c)| *d *= c));
    dc
}

/// `Σ_rows a ⊙ b` per column of two row-major matrices with `k` columns.
fn column_sums_of_product(a: &[f32], b: &[f32], k: usize) -> Vec<f32> {
    let mut products = scratch::take(a.len());
    products
        .par_chunks_mut(k.max(1))
        .zip(a.par_chunks(k.max(1)).zip(b.par_chunks(k.max(1))))
        .for_each(|(o, (a, b))| {
            o.iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(o, (a, b))| *o = a * b)
        });
    let sums = column_sums(&products, k);
    scratch::give([products]);
    sums
}

impl CustomOp2 for HeadLossOp {
    fn name(&self) -> &'static str {
        "dino-head-loss"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "head features")?;
        let flat = contiguous_f32(s2, l2, "head parameters")?;
        let (n, d) = l1.shape().dims2()?;
        if d != self.params.in_dim || flat.len() != self.params.len() {
            candle_core::bail!(
                "head loss: features {:?}, {} parameters for {:?}",
                l1.dims(),
                flat.len(),
                self.params
            );
        }
        let rows = self.rows(n)?;
        let mut saved = self.bottleneck(x, flat, n);
        let loss = self.forward_slices(flat, &rows, &mut saved);
        *self.saved.lock().unwrap_or_else(PoisonError::into_inner) = Some(saved);
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        flat: &Tensor,
        _loss: &Tensor,
        dloss: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let saved = take_kept(&self.saved, "head loss")?;
        let rows = self.rows(x.dim(0)?)?;
        let dloss = dloss
            .to_dtype(candle_core::DType::F32)?
            .to_scalar::<f32>()?;
        let (dx, dflat) = read_f32(x, |xs| {
            read_f32(flat, |fs| {
                self.backward_slices(xs, fs, dloss, &rows, &saved)
            })
        })??;
        saved.recycle();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dflat, flat.shape(), flat.device())?),
        ))
    }
}
