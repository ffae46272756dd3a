//! Multi-head scaled dot-product attention, the core of every transformer block here
//! (ViT and BERT), as one fused CPU kernel with a hand-written backward pass.
//!
//! Composed from candle operations, attention is about twenty small tensors forward
//! (splitting the packed projections into heads, the score matrix, its scaling and
//! padding bias, softmax, dropout, the weighted sum, merging the heads back) and as many
//! again backward, each allocated, and in the backward pass each also accumulated into a
//! fresh zero tensor. The `[B, H, L, L]` scores are the largest tensors of a small
//! encoder, and four of those operations run over them. Here the forward pass reads the
//! packed `[B, L, 3·D]` projections once and writes `[B, L, D]`; the backward pass
//! recomputes the probabilities (cheaper than keeping them) and writes the gradient of
//! the projections in the same packed layout. The products of each head are `gemm`
//! calls (candle's own CPU matrix kernel) on strided views of the packed rows, so no
//! head is copied out; batch items run in parallel, each product on one thread.
//!
//! For one head, with `S = s·QKᵀ + 1·βᵀ` (β the key bias), `P = softmax_rows(S)`,
//! `P̃ = P ⊙ M` (M the inverted-dropout mask, or ones) and `O = P̃V`:
//!
//! * `dV = P̃ᵀ dO`, `dP = (dO Vᵀ) ⊙ M`,
//! * `dS = P ⊙ (dP − rowsum(P ⊙ dP))`,
//! * `dQ = s·dS K`, `dK = s·dSᵀ Q`.
//!
//! Other devices and half precision take the composed operations, so every device trains
//! the same model; the tests check the two paths against each other.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::fused::{
    cpu_float, dispatch, matmul, scale_by, softmax_in_place, wide, Elem, Input, RowPairKernel,
    SoftmaxGrad, Strided, Wide,
};
use crate::ops::softmax_last_dim;

/// Multi-head attention over packed projections.
///
/// * `qkv`: `[B, L, 3·D]`, the query, key and value projections side by side, each with
///   its `heads` heads side by side (timm's `qkv` layout; BERT's three projections
///   concatenated);
/// * `key_bias`: optional `[B, L]`, added to every score towards that key (0 for a token,
///   a large negative number for padding);
/// * `dropout`: optional `[B, heads, L, L]` inverted-dropout mask (0 or `1/keep`)
///   multiplied into the attention probabilities.
///
/// Returns `[B, L, D]`, the heads' outputs side by side. Scores are scaled by `1/√(D/heads)`.
pub fn multi_head_attention(
    qkv: &Tensor,
    heads: usize,
    key_bias: Option<&Tensor>,
    dropout: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (b, l, packed) = qkv.dims3()?;
    if heads == 0 || !packed.is_multiple_of(3 * heads) {
        candle_core::bail!(
            "multi_head_attention: last dimension {packed} is not 3 × heads ({heads}) × head width"
        );
    }
    let d = packed / 3;
    let dh = d / heads;
    if let Some(bias) = key_bias {
        if bias.dims() != [b, l] {
            candle_core::bail!(
                "multi_head_attention: key bias {:?}, expected [{b}, {l}]",
                bias.dims()
            );
        }
    }
    if let Some(mask) = dropout {
        if mask.dims() != [b, heads, l, l] {
            candle_core::bail!(
                "multi_head_attention: dropout mask {:?}, expected [{b}, {heads}, {l}, {l}]",
                mask.dims()
            );
        }
    }
    if cpu_float(qkv) {
        let dtype = qkv.dtype();
        let bias = match key_bias {
            Some(bias) => bias.to_dtype(dtype)?.flatten_all()?,
            None => Tensor::zeros(b * l, dtype, qkv.device())?,
        };
        let extra = match dropout {
            Some(mask) => Tensor::cat(&[&bias, &mask.to_dtype(dtype)?.flatten_all()?], 0)?,
            None => bias,
        };
        let op = FusedAttention(Geometry {
            batch: b,
            len: l,
            heads,
            dh,
            scale: (dh as f64).powf(-0.5),
            dropout: dropout.is_some(),
        });
        return qkv
            .contiguous()?
            .apply_op2(&extra.detach().contiguous()?, op);
    }
    composed(qkv, heads, key_bias, dropout, softmax_last_dim)
}

/// Attention from candle operations (every device; half precision through `softmax`'s own
/// `f32` evaluation), with the same arguments as [`multi_head_attention`].
fn composed(
    qkv: &Tensor,
    heads: usize,
    key_bias: Option<&Tensor>,
    dropout: Option<&Tensor>,
    softmax: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let (b, l, packed) = qkv.dims3()?;
    let (d, dh) = (packed / 3, packed / 3 / heads);
    let qkv = qkv
        .reshape((b, l, 3, heads, dh))?
        .permute((2, 0, 3, 1, 4))?;
    let (q, k, v) = (
        qkv.get(0)?.contiguous()?,
        qkv.get(1)?.contiguous()?,
        qkv.get(2)?.contiguous()?,
    );
    let mut scores = (q.matmul(&k.t()?)? * (dh as f64).powf(-0.5))?;
    if let Some(bias) = key_bias {
        let bias = bias.to_dtype(scores.dtype())?.reshape((b, 1, 1, l))?;
        scores = scores.broadcast_add(&bias)?;
    }
    let mut probs = softmax(&scores)?;
    if let Some(mask) = dropout {
        probs = (probs * mask.to_dtype(qkv.dtype())?)?;
    }
    probs
        .matmul(&v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, l, d))
}

/// Shapes and constants of one attention call.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    len: usize,
    heads: usize,
    /// Head width.
    dh: usize,
    scale: f64,
    /// Whether the extra input holds a dropout mask after the key bias.
    dropout: bool,
}

impl Geometry {
    fn width(&self) -> usize {
        self.heads * self.dh
    }

    fn check(&self, qkv: usize, extra: usize, what: &str) -> candle_core::Result<()> {
        let (b, l) = (self.batch, self.len);
        let want_extra = b * l
            + if self.dropout {
                b * self.heads * l * l
            } else {
                0
            };
        if qkv != b * l * 3 * self.width() || extra != want_extra {
            candle_core::bail!("{what}: inputs of {qkv} and {extra} values do not fit {self:?}");
        }
        Ok(())
    }
}

/// One batch item's packed rows `[L, 3·D]` and the strided views of one head in them.
struct Item<'a, T> {
    rows: &'a [T],
    l: usize,
    d: usize,
    dh: usize,
}

impl<T: Elem> Item<'_, T> {
    /// Head `h`'s queries (`part` 0), keys (1) or values (2) as an `[L, dh]` matrix.
    fn part(&self, part: usize, h: usize) -> Strided<T> {
        let at = part * self.d + h * self.dh;
        debug_assert!(at + (self.l - 1) * 3 * self.d + self.dh <= self.rows.len());
        (self.rows[at..].as_ptr(), 3 * self.d as isize, 1)
    }

    /// The same, transposed (`[dh, L]`).
    fn part_t(&self, part: usize, h: usize) -> Strided<T> {
        let (ptr, rs, cs) = self.part(part, h);
        (ptr, cs, rs)
    }

    /// `P = softmax(s·QKᵀ + 1·βᵀ)` of head `h` into `p` (`[L, L]`).
    fn probabilities(&self, h: usize, scale: f64, bias: &[T], p: &mut [T]) {
        let l = self.l;
        for row in p.chunks_exact_mut(l) {
            row.copy_from_slice(bias);
        }
        // SAFETY: Q and Kᵀ address rows of `self.rows` (checked in `part`); `p` is [L, L].
        unsafe {
            matmul(
                (l, l, self.dh),
                (p.as_mut_ptr(), l as isize, 1),
                true,
                self.part(0, h),
                self.part_t(1, h),
                T::cst(scale),
            );
        }
        wide(SoftmaxRows { p, l });
    }
}

/// Softmax of each row of length `l` of `p`, in place.
struct SoftmaxRows<'a, T> {
    p: &'a mut [T],
    l: usize,
}

impl<T: Elem> Wide for SoftmaxRows<'_, T> {
    #[inline(always)]
    fn run(self) {
        for row in self.p.chunks_exact_mut(self.l) {
            softmax_in_place(row);
        }
    }
}

/// `dS = s · softmax′(P)(dP ⊙ M)` row by row (`dP` is scaled by the mask in place).
struct ScoreGrads<'a, T> {
    p: &'a [T],
    dp: &'a mut [T],
    ds: &'a mut [T],
    mask: Option<&'a [T]>,
    l: usize,
    scale: T,
}

impl<T: Elem> Wide for ScoreGrads<'_, T> {
    #[inline(always)]
    fn run(self) {
        if let Some(m) = self.mask {
            scale_by(self.dp, m);
        }
        for ((dsi, pi), dpi) in self
            .ds
            .chunks_exact_mut(self.l)
            .zip(self.p.chunks_exact(self.l))
            .zip(self.dp.chunks_exact(self.l))
        {
            SoftmaxGrad::row(pi, dpi, dsi);
        }
        for s in self.ds.iter_mut() {
            *s = *s * self.scale;
        }
    }
}

/// The dropout mask of head `h` of batch item `bi`, if any.
fn head_mask<'a, T>(g: &Geometry, extra: &'a [T], bi: usize, h: usize) -> Option<&'a [T]> {
    let (b, l) = (g.batch, g.len);
    g.dropout.then(|| {
        let at = b * l + (bi * g.heads + h) * l * l;
        &extra[at..at + l * l]
    })
}

fn forward<T: Elem>(g: &Geometry, qkv: &[T], extra: &[T]) -> Vec<T> {
    let (l, d, dh) = (g.len, g.width(), g.dh);
    let mut out = vec![T::zero(); g.batch * l * d];
    out.par_chunks_mut(l * d).enumerate().for_each(|(bi, out)| {
        let item = Item {
            rows: &qkv[bi * l * 3 * d..(bi + 1) * l * 3 * d],
            l,
            d,
            dh,
        };
        let bias = &extra[bi * l..(bi + 1) * l];
        let mut p = vec![T::zero(); l * l];
        for h in 0..g.heads {
            item.probabilities(h, g.scale, bias, &mut p);
            if let Some(m) = head_mask(g, extra, bi, h) {
                scale_by(&mut p, m);
            }
            // O = P̃V into this head's columns of the output rows.
            // SAFETY: V addresses `item.rows`; the destination is `out`'s [L, D]
            // rows, columns h·dh.., which fit.
            unsafe {
                matmul(
                    (l, dh, l),
                    (out[h * dh..].as_mut_ptr(), d as isize, 1),
                    false,
                    (p.as_ptr(), l as isize, 1),
                    item.part(2, h),
                    T::one(),
                );
            }
        }
    });
    out
}

fn backward<T: Elem>(g: &Geometry, qkv: &[T], extra: &[T], grad: &[T]) -> Vec<T> {
    let (l, d, dh) = (g.len, g.width(), g.dh);
    let scale = T::cst(g.scale);
    let mut dqkv = vec![T::zero(); qkv.len()];
    dqkv.par_chunks_mut(l * 3 * d)
        .enumerate()
        .for_each(|(bi, dx)| {
            let item = Item {
                rows: &qkv[bi * l * 3 * d..(bi + 1) * l * 3 * d],
                l,
                d,
                dh,
            };
            let bias = &extra[bi * l..(bi + 1) * l];
            let grad = &grad[bi * l * d..(bi + 1) * l * d];
            let [mut p, mut pd, mut dp, mut ds] = std::array::from_fn(|_| vec![T::zero(); l * l]);
            for h in 0..g.heads {
                item.probabilities(h, g.scale, bias, &mut p);
                let mask = head_mask(g, extra, bi, h);
                // P̃ = P ⊙ M.
                let pt: &[T] = match mask {
                    Some(m) => {
                        pd.copy_from_slice(&p);
                        scale_by(&mut pd, m);
                        &pd
                    }
                    None => &p,
                };
                let d_out: Strided<T> = (grad[h * dh..].as_ptr(), d as isize, 1);
                let base = dx.as_mut_ptr();
                // SAFETY: part·D + h·dh < 3·D, inside the first row of `dx`.
                let at = |part: usize| unsafe { base.add(part * d + h * dh) };
                let rows3 = 3 * d as isize;
                // SAFETY (all four products): Q, K, V address `item.rows`, dO `grad`'s
                // [L, D] rows from column h·dh, the destinations `dx`'s [L, 3·D] rows
                // from columns part·D + h·dh, and the [L, L] buffers are L × L.
                unsafe {
                    // dV = P̃ᵀ dO.
                    matmul(
                        (l, dh, l),
                        (at(2), rows3, 1),
                        false,
                        (pt.as_ptr(), 1, l as isize),
                        d_out,
                        T::one(),
                    );
                    // dP = dO Vᵀ.
                    matmul(
                        (l, l, dh),
                        (dp.as_mut_ptr(), l as isize, 1),
                        false,
                        d_out,
                        item.part_t(2, h),
                        T::one(),
                    );
                }
                // dS = s · softmax′(P)(dP ⊙ M), the softmax backward row by row.
                wide(ScoreGrads {
                    p: &p,
                    dp: &mut dp,
                    ds: &mut ds,
                    mask,
                    l,
                    scale,
                });
                unsafe {
                    // dQ = dS K.
                    matmul(
                        (l, dh, l),
                        (at(0), rows3, 1),
                        false,
                        (ds.as_ptr(), l as isize, 1),
                        item.part(1, h),
                        T::one(),
                    );
                    // dK = dSᵀ Q.
                    matmul(
                        (l, dh, l),
                        (at(1), rows3, 1),
                        false,
                        (ds.as_ptr(), 1, l as isize),
                        item.part(0, h),
                        T::one(),
                    );
                }
            }
        });
    dqkv
}

/// The forward operation: `(qkv, extra) → [B, L, D]`, `extra` = key bias `[B·L]`, then
/// the dropout mask `[B·H·L·L]` when there is one.
struct FusedAttention(Geometry);

impl CustomOp2 for FusedAttention {
    fn name(&self) -> &'static str {
        "medprob-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Elem>(
            g: &Geometry,
            (s1, l1): Input,
            (s2, l2): Input,
        ) -> candle_core::Result<CpuStorage> {
            let what = "medprob-attention";
            let (qkv, extra) = (T::slice(s1, l1, what)?, T::slice(s2, l2, what)?);
            g.check(qkv.len(), extra.len(), what)?;
            Ok(T::wrap(forward(g, qkv, extra)))
        }
        let g = &self.0;
        let out = dispatch!(s1, self.name(), run(g, (s1, l1), (s2, l2)))?;
        Ok((out, Shape::from((g.batch, g.len, g.width()))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        extra: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dqkv = qkv.apply_op3_no_bwd(extra, &grad.contiguous()?, &FusedAttentionGrad(self.0))?;
        Ok((Some(dqkv), None))
    }
}

/// The backward operation: `(qkv, extra, dO) → d qkv`.
struct FusedAttentionGrad(Geometry);

impl CustomOp3 for FusedAttentionGrad {
    fn name(&self) -> &'static str {
        "medprob-attention-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Elem>(
            g: &Geometry,
            (s1, l1): Input,
            (s2, l2): Input,
            (s3, l3): Input,
        ) -> candle_core::Result<CpuStorage> {
            let what = "medprob-attention-grad";
            let (qkv, extra, grad) = (
                T::slice(s1, l1, what)?,
                T::slice(s2, l2, what)?,
                T::slice(s3, l3, what)?,
            );
            g.check(qkv.len(), extra.len(), what)?;
            if grad.len() != g.batch * g.len * g.width() {
                candle_core::bail!("{what}: gradient of {} values", grad.len());
            }
            Ok(T::wrap(backward(g, qkv, extra, grad)))
        }
        let g = &self.0;
        let out = dispatch!(s1, self.name(), run(g, (s1, l1), (s2, l2), (s3, l3)))?;
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Deterministic, non-uniform values in about [-2, 2].
    fn values(n: usize, salt: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (((i * 37 + salt * 11) % 101) as f64 / 101.0 - 0.5) * 4.0)
            .collect()
    }

    /// The composed path on the same inputs (a non-CPU device takes it), with softmax
    /// written out from elementary operations (on the CPU `softmax_last_dim` is itself a
    /// fused kernel).
    fn reference(
        qkv: &Tensor,
        heads: usize,
        bias: Option<&Tensor>,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        composed(qkv, heads, bias, mask, |s| {
            let max = s.max_keepdim(candle_core::D::Minus1)?.detach();
            let e = s.broadcast_sub(&max)?.exp()?;
            e.broadcast_div(&e.sum_keepdim(candle_core::D::Minus1)?)
        })
    }

    /// Value and gradient of `Σ c ⊙ attention(qkv)` by the fused kernel and the composed
    /// operations, in `f64`.
    fn compare(b: usize, l: usize, heads: usize, dh: usize, bias: bool, dropout: bool) {
        let dev = Device::Cpu;
        let d = heads * dh;
        let qkv = Tensor::from_vec(values(b * l * 3 * d, 1), (b, l, 3 * d), &dev).unwrap();
        let c = Tensor::from_vec(values(b * l * d, 2), (b, l, d), &dev).unwrap();
        // Padding: the last `i % l` keys of item i are masked, as BERT's bias does.
        let bias = bias.then(|| {
            let v: Vec<f64> = (0..b * l)
                .map(|n| if n % l >= l - n / l % l { -1e4 } else { 0.0 })
                .collect();
            Tensor::from_vec(v, (b, l), &dev).unwrap()
        });
        let mask = dropout.then(|| {
            let v: Vec<f64> = (0..b * heads * l * l)
                .map(|n| if n * 7 % 10 < 3 { 0.0 } else { 1.0 / 0.7 })
                .collect();
            Tensor::from_vec(v, (b, heads, l, l), &dev).unwrap()
        });
        let run = |fused: bool| {
            let x = Var::from_tensor(&qkv).unwrap();
            let y = if fused {
                multi_head_attention(x.as_tensor(), heads, bias.as_ref(), mask.as_ref())
            } else {
                reference(x.as_tensor(), heads, bias.as_ref(), mask.as_ref())
            }
            .unwrap();
            let g = (&y * &c).unwrap().sum_all().unwrap().backward().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            (flat(&y), flat(g.get(x.as_tensor()).unwrap()))
        };
        let ((y1, g1), (y2, g2)) = (run(true), run(false));
        assert_eq!((y1.len(), g1.len()), (b * l * d, b * l * 3 * d));
        for (a, e) in y1.iter().zip(&y2).chain(g1.iter().zip(&g2)) {
            assert!((a - e).abs() < 1e-12, "{a} vs {e}");
        }
        // Every part of the packed gradient (queries, keys, values) is non-trivial.
        for part in 0..3 {
            let any = g1
                .chunks_exact(d)
                .skip(part)
                .step_by(3)
                .any(|r| r.iter().any(|g| g.abs() > 1e-3));
            assert!(any, "gradient of part {part} is zero");
        }
    }

    #[test]
    fn matches_composed_operations_plain() {
        compare(2, 5, 2, 3, false, false);
    }

    #[test]
    fn matches_composed_operations_with_padding_bias() {
        compare(3, 6, 4, 2, true, false);
    }

    #[test]
    fn matches_composed_operations_with_dropout_and_bias() {
        compare(2, 7, 3, 4, true, true);
    }

    #[test]
    fn masked_keys_get_no_weight() {
        // One head, keys 2 and 3 masked: the output is a mix of values 0 and 1 only.
        let dev = Device::Cpu;
        let (l, dh) = (4, 1);
        // q = 1, k = 0 for every token (uniform scores), v = token index.
        let mut rows = Vec::new();
        for i in 0..l {
            rows.extend([1.0f64, 0.0, i as f64]);
        }
        let qkv = Tensor::from_vec(rows, (1, l, 3 * dh), &dev).unwrap();
        let bias = Tensor::new(&[[0.0f64, 0.0, -1e4, -1e4]], &dev).unwrap();
        let out = multi_head_attention(&qkv, 1, Some(&bias), None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for o in out {
            assert!((o - 0.5).abs() < 1e-12, "{o}");
        }
    }

    #[test]
    fn f32_agrees_with_f64() {
        let dev = Device::Cpu;
        let (b, l, heads, dh) = (2, 9, 2, 8);
        let v = values(b * l * 3 * heads * dh, 3);
        let x64 = Tensor::from_vec(v, (b, l, 3 * heads * dh), &dev).unwrap();
        let x32 = x64.to_dtype(DType::F32).unwrap();
        let y64 = multi_head_attention(&x64, heads, None, None).unwrap();
        let y32 = multi_head_attention(&x32, heads, None, None).unwrap();
        let diff = crate::testing::max_abs_diff(&y64, &y32).unwrap();
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn bad_shapes_are_refused() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3, 12), DType::F32, &dev).unwrap();
        let err = multi_head_attention(&x, 5, None, None).unwrap_err();
        assert!(err.to_string().contains("not 3 × heads"), "{err}");
        let bias = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        let err = multi_head_attention(&x, 2, Some(&bias), None).unwrap_err();
        assert!(err.to_string().contains("key bias"), "{err}");
    }
}
