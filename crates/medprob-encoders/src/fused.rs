//! Fused CPU kernels, with hand-written backward passes, for the layers of the encoders:
//! exact (erf) GELU, softmax over the last dimension, layer norm and the linear layer.
//!
//! Built from elementary candle operations (as [`crate::ops`] does on other devices), each
//! of these costs five to ten small tensors forward and as many again backward, and on a
//! CPU a training step of the small encoders spends most of its backward pass allocating,
//! broadcasting and reducing those temporaries (`scripts/bench_train.sh --breakdown`). Here
//! each layer is one pass forward and one pass backward over contiguous rows, in the
//! tensor's own precision (`f32` or `f64`).
//!
//! * GELU: `y = ½x(1 + erf(x/√2))`, `dy/dx = Φ(x) + x·φ(x)`.
//! * Softmax: `y = e^{x − max} / Σ e^{x − max}`, `dx = y ⊙ (g − Σ g ⊙ y)`.
//! * Linear: `y = x·wᵀ + b`, `dx = g·w`, `dw = gᵀ·x`, `db = Σ_rows g`, one graph node.
//! * Layer norm: `x̂ = (x − μ)/√(σ² + ε)`, `y = x̂ ⊙ w + b`;
//!   `dx = (1/√(σ²+ε)) · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂))` with `ĝ = g ⊙ w`,
//!   `dw = Σ_rows g ⊙ x̂`, `db = Σ_rows g`.
//!
//! Only `f32`/`f64` CPU tensors take these paths; callers fall back to the composed
//! operations elsewhere (CUDA, half precision), so every device trains the same model.
//! The element-wise loops are compiled twice, for baseline x86-64 and for AVX2 + FMA, and
//! the second is chosen at run time where the CPU has it ([`wide`]); the products are
//! `gemm`'s, which makes the same choice (up to AVX-512) itself.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Tensor,
};
use rayon::prelude::*;

/// One input of a kernel: its storage and layout.
pub(crate) type Input<'a> = (&'a CpuStorage, &'a Layout);

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// Whether `t` can take a fused CPU kernel.
pub(crate) fn cpu_float(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cpu) && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// The float types the kernels run in.
pub(crate) trait Elem: num_traits::Float + std::iter::Sum + Send + Sync + 'static {
    fn erf(self) -> Self;
    /// `eˣ`; for `f32` a branch-free evaluation that vectorises (libm's `expf` is a call
    /// per element), within 2 ulp of it, and exactly 0 below `ln(f32::MIN_POSITIVE)`.
    fn fast_exp(self) -> Self;
    fn cst(x: f64) -> Self;
    fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [Self]>;
    fn wrap(values: Vec<Self>) -> CpuStorage;
}

impl Elem for f32 {
    /// Abramowitz & Stegun 7.1.26: absolute error ≤ 1.5e-7 in exact arithmetic, 4.7e-7
    /// evaluated in `f32` (a few ulps; GELU's output is `f32` anyway), and branch-free, so
    /// the loops around it vectorise (libm's `erff` does not).
    #[inline(always)]
    fn erf(self) -> Self {
        const P: f32 = 0.327_591_1;
        const A: [f32; 5] = [
            0.254_829_6,
            -0.284_496_74,
            1.421_413_8,
            -1.453_152_1,
            1.061_405_4,
        ];
        let x = self.abs();
        let t = 1.0 / (1.0 + P * x);
        let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
        (1.0 - poly * (-x * x).fast_exp()).copysign(self)
    }
    /// Cephes' `expf`: `eˣ = 2ⁿ·eʳ` with `n = round(x·log₂e)`, `|r| ≤ ln2/2` from a
    /// two-part `ln 2` (exact product), `eʳ` by its degree-7 minimax polynomial, `2ⁿ` by
    /// building the exponent bits.
    #[inline(always)]
    fn fast_exp(self) -> Self {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        const P: [f32; 6] = [
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ];
        let x = self.clamp(-87.0, 88.0);
        // Round to nearest by adding and removing 1.5·2²³ (`round()` is a libm call on
        // baseline x86-64, which would stop the loops around this from vectorising).
        const SHIFT: f32 = 12_582_912.0;
        let n = (x * LOG2E + SHIFT) - SHIFT;
        let r = x - n * LN2_HI - n * LN2_LO;
        let p = P.iter().fold(0.0, |acc, &c| acc * r + c);
        let er = p * r * r + r + 1.0;
        // 2ⁿ without a float-to-int conversion (whose saturating semantics stop
        // vectorisation): n + 127 sits in the low mantissa bits of n + 127 + 1.5·2²³,
        // and shifting by 23 moves it into the exponent field, dropping the rest.
        let two_n = f32::from_bits((n + (127.0 + SHIFT)).to_bits() << 23);
        let y = er * two_n;
        let y = if self < -87.0 { 0.0 } else { y };
        if self > 88.0 {
            f32::INFINITY
        } else {
            y
        }
    }
    fn cst(x: f64) -> Self {
        x as f32
    }
    fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [Self]> {
        match s {
            CpuStorage::F32(v) => contiguous(v, l, what),
            _ => candle_core::bail!("{what}: inputs of different dtypes"),
        }
    }
    fn wrap(values: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(values)
    }
}

impl Elem for f64 {
    #[inline(always)]
    fn erf(self) -> Self {
        libm::erf(self)
    }
    #[inline(always)]
    fn fast_exp(self) -> Self {
        self.exp()
    }
    fn cst(x: f64) -> Self {
        x
    }
    fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [Self]> {
        match s {
            CpuStorage::F64(v) => contiguous(v, l, what),
            _ => candle_core::bail!("{what}: inputs of different dtypes"),
        }
    }
    fn wrap(values: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(values)
    }
}

fn contiguous<'a, T>(v: &'a [T], l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

/// `run::<f32>` or `run::<f64>`, by the dtype of the first input.
macro_rules! dispatch {
    ($s:expr, $name:expr, $run:ident ( $($arg:expr),* )) => {
        match $s {
            CpuStorage::F32(_) => $run::<f32>($($arg),*),
            CpuStorage::F64(_) => $run::<f64>($($arg),*),
            _ => candle_core::bail!("{}: only f32 and f64 are supported", $name),
        }
    };
}
pub(crate) use dispatch;

/// Work whose loops should run as wide as the CPU allows; see [`wide`]. Implementations
/// mark `run` `#[inline(always)]`, so that its body (and what it calls that is also
/// `#[inline(always)]`) is compiled into each version.
pub(crate) trait Wide {
    fn run(self);
}

/// `work.run()`, compiled for AVX2 and FMA when the CPU has them (checked at run time,
/// cached by the standard library), for the baseline SSE2 otherwise: the kernels' loops
/// then run eight `f32` lanes wide instead of four. The compiler neither reorders
/// floating-point sums nor fuses multiplies and adds on its own, so both versions give
/// the same bits.
#[inline(always)]
pub(crate) fn wide<W: Wide>(work: W) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: both features were detected on this CPU.
            return unsafe { wide_avx2(work) };
        }
    }
    work.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn wide_avx2<W: Wide>(work: W) {
    work.run()
}

/// A map of one row (last dimension) of an input to the same row of the output.
pub(crate) trait RowMap<T>: Sync {
    fn row(&self, x: &[T], out: &mut [T]);
}

/// A map of the same row of two inputs to that row of the output.
pub(crate) trait RowPairMap<T>: Sync {
    fn row(&self, a: &[T], b: &[T], out: &mut [T]);
}

/// One parallel task of [`map_rows`]: rows of length `d` of `a` into `out`.
struct Rows<'a, K, T> {
    kernel: &'a K,
    a: &'a [T],
    out: &'a mut [T],
    d: usize,
}

impl<T: Elem, K: RowMap<T>> Wide for Rows<'_, K, T> {
    #[inline(always)]
    fn run(self) {
        for (o, a) in self
            .out
            .chunks_exact_mut(self.d)
            .zip(self.a.chunks_exact(self.d))
        {
            self.kernel.row(a, o);
        }
    }
}

/// One parallel task of [`map_row_pairs`]: [`Rows`] with the same rows of a second input.
struct PairRows<'a, K, T> {
    rows: Rows<'a, K, T>,
    b: &'a [T],
}

impl<T: Elem, K: RowPairMap<T>> Wide for PairRows<'_, K, T> {
    #[inline(always)]
    fn run(self) {
        let r = self.rows;
        for ((o, a), b) in r
            .out
            .chunks_exact_mut(r.d)
            .zip(r.a.chunks_exact(r.d))
            .zip(self.b.chunks_exact(r.d))
        {
            r.kernel.row(a, b, o);
        }
    }
}

/// `kernel.row(input_row, output_row)` for each row of length `d`, rows in parallel.
fn map_rows<T: Elem, K: RowMap<T>>(x: &[T], d: usize, kernel: &K) -> Vec<T> {
    let d = d.max(1);
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .for_each(|(out, a)| wide(Rows { kernel, a, out, d }));
    out
}

/// `kernel.row(a_row, b_row, output_row)` for each pair of rows of length `d`, in parallel.
fn map_row_pairs<T: Elem, K: RowPairMap<T>>(a: &[T], b: &[T], d: usize, kernel: &K) -> Vec<T> {
    let d = d.max(1);
    let mut out = vec![T::zero(); a.len()];
    out.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(a.par_chunks(d * ROWS_PER_TASK))
        .zip(b.par_chunks(d * ROWS_PER_TASK))
        .for_each(|((out, a), b)| {
            wide(PairRows {
                rows: Rows { kernel, a, out, d },
                b,
            })
        });
    out
}

/// `x ⊙= m` (a dropout mask, in the linear layer and in attention).
#[inline(always)]
pub(crate) fn scale_by<T: Elem>(x: &mut [T], m: &[T]) {
    for (x, &m) in x.iter_mut().zip(m) {
        *x = *x * m;
    }
}

/// A [`RowKernel`] or [`RowPairKernel`] as a row map.
struct Static<K>(std::marker::PhantomData<K>);

impl<K> Static<K> {
    const NEW: Self = Self(std::marker::PhantomData);
}

impl<T: Elem, K: RowKernel + Sync> RowMap<T> for Static<K> {
    #[inline(always)]
    fn row(&self, x: &[T], out: &mut [T]) {
        K::row(x, out)
    }
}

impl<T: Elem, K: RowPairKernel> RowPairMap<T> for Static<K> {
    #[inline(always)]
    fn row(&self, a: &[T], b: &[T], out: &mut [T]) {
        K::row(a, b, out)
    }
}

fn last_dim(l: &Layout) -> usize {
    l.shape().dims().last().copied().unwrap_or(1)
}

const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`.
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// A forward kernel that maps a tensor row by row (last dimension) to one of its shape.
trait RowKernel {
    const NAME: &'static str;
    fn row<T: Elem>(x: &[T], out: &mut [T]);
}

/// `cpu_fwd` of a [`RowKernel`], in the storage's dtype.
fn rows_fwd<K: RowKernel + Sync>(
    s: &CpuStorage,
    l: &Layout,
) -> candle_core::Result<(CpuStorage, Shape)> {
    fn run<T: Elem, K: RowKernel + Sync>(
        s: &CpuStorage,
        l: &Layout,
    ) -> candle_core::Result<CpuStorage> {
        let x = T::slice(s, l, K::NAME)?;
        Ok(T::wrap(map_rows(x, last_dim(l), &Static::<K>::NEW)))
    }
    let out = match s {
        CpuStorage::F32(_) => run::<f32, K>(s, l),
        CpuStorage::F64(_) => run::<f64, K>(s, l),
        _ => candle_core::bail!("{}: only f32 and f64 are supported", K::NAME),
    }?;
    Ok((out, l.shape().clone()))
}

/// A backward kernel that maps two same-shaped tensors row by row to a third.
pub(crate) trait RowPairKernel: Send + Sync {
    const NAME: &'static str;
    fn row<T: Elem>(a: &[T], b: &[T], out: &mut [T]);
}

/// The candle operation of a [`RowPairKernel`] (no backward of its own: it *is* one).
struct RowPairs<K>(K);

impl<K: RowPairKernel> CustomOp2 for RowPairs<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Elem, K: RowPairKernel>(
            (s1, l1): Input,
            (s2, l2): Input,
        ) -> candle_core::Result<CpuStorage> {
            let (a, b) = (T::slice(s1, l1, K::NAME)?, T::slice(s2, l2, K::NAME)?);
            Ok(T::wrap(map_row_pairs(
                a,
                b,
                last_dim(l1),
                &Static::<K>::NEW,
            )))
        }
        let out = match s1 {
            CpuStorage::F32(_) => run::<f32, K>((s1, l1), (s2, l2)),
            CpuStorage::F64(_) => run::<f64, K>((s1, l1), (s2, l2)),
            _ => candle_core::bail!("{}: only f32 and f64 are supported", K::NAME),
        }?;
        Ok((out, l1.shape().clone()))
    }
}

// ---------------------------------------------------------------- GELU

/// Exact GELU.
pub(crate) struct GeluErf;

impl RowKernel for GeluErf {
    const NAME: &'static str = "medprob-gelu-erf";

    #[inline(always)]
    fn row<T: Elem>(x: &[T], y: &mut [T]) {
        let (half, r2) = (T::cst(0.5), T::cst(FRAC_1_SQRT_2));
        for (y, &x) in y.iter_mut().zip(x) {
            *y = half * x * (T::one() + (x * r2).erf());
        }
    }
}

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        rows_fwd::<Self>(s, l)
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(
            &grad.contiguous()?,
            &RowPairs(GeluErfGrad),
        )?))
    }
}

/// `(x, g) → g ⊙ GELU'(x)`.
struct GeluErfGrad;

impl RowPairKernel for GeluErfGrad {
    const NAME: &'static str = "medprob-gelu-erf-grad";

    #[inline(always)]
    fn row<T: Elem>(x: &[T], g: &[T], o: &mut [T]) {
        let (half, r2, rpi) = (T::cst(0.5), T::cst(FRAC_1_SQRT_2), T::cst(FRAC_1_SQRT_2PI));
        for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
            let cdf = half * (T::one() + (x * r2).erf());
            let pdf = rpi * (-half * x * x).fast_exp();
            *o = g * (cdf + x * pdf);
        }
    }
}

// ---------------------------------------------------------------- softmax

/// Softmax over the last dimension.
pub(crate) struct SoftmaxLastDim;

impl RowKernel for SoftmaxLastDim {
    const NAME: &'static str = "medprob-softmax-last-dim";

    #[inline(always)]
    fn row<T: Elem>(x: &[T], y: &mut [T]) {
        y.copy_from_slice(x);
        softmax_in_place(y);
    }
}

/// `x ← softmax(x)` (one row; also the attention kernel's).
#[inline(always)]
pub(crate) fn softmax_in_place<T: Elem>(x: &mut [T]) {
    let max = lanes(x, T::neg_infinity(), |a, b| if b > a { b } else { a });
    // The exponentials in a loop of their own (a running sum would serialise it).
    for x in x.iter_mut() {
        *x = (*x - max).fast_exp();
    }
    let inv = T::one() / lanes(x, T::zero(), |a, b| a + b);
    for x in x.iter_mut() {
        *x = *x * inv;
    }
}

/// `x` folded by `f` in eight interleaved lanes, then across them: a reduction the
/// compiler can vectorise (a single running fold is a serial chain).
#[inline(always)]
fn lanes<T: Elem>(x: &[T], init: T, f: impl Fn(T, T) -> T) -> T {
    let mut acc = [init; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder().iter().fold(init, |a, &b| f(a, b));
    for c in chunks {
        for k in 0..8 {
            acc[k] = f(acc[k], c[k]);
        }
    }
    acc.iter().fold(tail, |a, &b| f(a, b))
}

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        rows_fwd::<Self>(s, l)
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(
            &grad.contiguous()?,
            &RowPairs(SoftmaxGrad),
        )?))
    }
}

/// `(y, g) → y ⊙ (g − Σ g ⊙ y)` row by row.
pub(crate) struct SoftmaxGrad;

impl RowPairKernel for SoftmaxGrad {
    const NAME: &'static str = "medprob-softmax-grad";

    #[inline(always)]
    fn row<T: Elem>(y: &[T], g: &[T], o: &mut [T]) {
        let dot: T = y.iter().zip(g).map(|(&y, &g)| y * g).sum();
        for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
            *o = y * (g - dot);
        }
    }
}

// ---------------------------------------------------------------- matrix products

/// A strided matrix: pointer to element (0, 0), row stride, column stride (in elements).
pub(crate) type Strided<T> = (*const T, isize, isize);

/// `dst = beta·lhs·rhs` (`+ dst` when `accumulate`) for `m × k` by `k × n` strided
/// matrices, on this thread: the `gemm` crate, candle's own CPU matrix kernel, which picks
/// the widest vector instructions the CPU has at run time.
///
/// # Safety
/// Every element the shapes and strides address must lie inside its allocation, and `dst`
/// must not overlap `lhs` or `rhs`.
pub(crate) unsafe fn matmul<T: Elem>(
    mnk: (usize, usize, usize),
    dst: (*mut T, isize, isize),
    accumulate: bool,
    lhs: Strided<T>,
    rhs: Strided<T>,
    beta: T,
) {
    matmul_on(
        mnk,
        dst,
        accumulate,
        lhs,
        rhs,
        beta,
        gemm::Parallelism::None,
    )
}

/// [`matmul`] on `parallelism`'s threads.
///
/// # Safety
/// As [`matmul`].
unsafe fn matmul_on<T: Elem>(
    (m, n, k): (usize, usize, usize),
    dst: (*mut T, isize, isize),
    accumulate: bool,
    lhs: Strided<T>,
    rhs: Strided<T>,
    beta: T,
    parallelism: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        dst.2,
        dst.1,
        accumulate,
        lhs.0,
        lhs.2,
        lhs.1,
        rhs.0,
        rhs.2,
        rhs.1,
        T::one(),
        beta,
        false,
        false,
        false,
        parallelism,
    )
}

// ---------------------------------------------------------------- linear

/// A linear layer, `(x [.., K], w [N, K], b [N]) → x·wᵀ + b`, `[.., N]`, as one node of the
/// graph. Composed, it is a reshape, a transpose, a product, a bias add and a reshape back,
/// and in the backward pass each of those allocates its gradient and adds it into a fresh
/// zero tensor (candle's gradient store); here the backward pass is the two products and
/// the column sum it needs, written straight into the three gradients.
///
/// With a `mask` (an inverted-dropout mask of the output's shape and dtype, not a
/// variable) the output is multiplied by it in the same pass, and so is the incoming
/// gradient in the backward pass: the layer and the dropout after it are one node.
pub(crate) struct LinearOp {
    pub(crate) mask: Option<Tensor>,
}

/// The rows of `x [.., K]` and the output shape `[.., N]`.
fn linear_shape(x: &Layout, n: usize) -> (usize, Shape) {
    let mut dims = x.dims().to_vec();
    let rows = dims[..dims.len().saturating_sub(1)].iter().product();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    (rows, Shape::from(dims))
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "medprob-linear"
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
            (s1, l1): Input,
            (s2, l2): Input,
            (s3, l3): Input,
            mask: Option<&Tensor>,
        ) -> candle_core::Result<CpuStorage> {
            let name = "medprob-linear";
            let (x, w, b) = (
                T::slice(s1, l1, name)?,
                T::slice(s2, l2, name)?,
                T::slice(s3, l3, name)?,
            );
            let (k, n) = (last_dim(l1), b.len());
            if l1.dims().is_empty() || l2.dims() != [n, k] {
                candle_core::bail!(
                    "{name}: weight {:?} does not fit input {:?} and bias of {n}",
                    l2.dims(),
                    l1.dims()
                );
            }
            let (m, _) = linear_shape(l1, n);
            let mut y = Vec::with_capacity(m * n);
            for _ in 0..m {
                y.extend_from_slice(b);
            }
            if m * n * k > 0 {
                let threads = rayon::current_num_threads();
                let parallelism = if threads > 1 && m * n * k >= PARALLEL_PRODUCT {
                    gemm::Parallelism::Rayon(threads)
                } else {
                    gemm::Parallelism::None
                };
                // SAFETY: x is [m, k] and w [n, k] row-major (read as wᵀ, [k, n]), y is
                // [m, n] and a fresh allocation.
                unsafe {
                    matmul_on(
                        (m, n, k),
                        (y.as_mut_ptr(), n as isize, 1),
                        true,
                        (x.as_ptr(), k as isize, 1),
                        (w.as_ptr(), 1, k as isize),
                        T::one(),
                        parallelism,
                    )
                }
            }
            if let Some(mask) = mask {
                let (storage, layout) = mask.storage_and_layout();
                let candle_core::Storage::Cpu(storage) = &*storage else {
                    candle_core::bail!("{name}: the dropout mask is not on the CPU");
                };
                let m = T::slice(storage, layout, name)?;
                if m.len() != y.len() {
                    candle_core::bail!(
                        "{name}: dropout mask of {} values for an output of {}",
                        m.len(),
                        y.len()
                    );
                }
                scale_by(&mut y, m);
            }
            Ok(T::wrap(y))
        }
        let mask = self.mask.as_ref();
        let out = dispatch!(s1, self.name(), run((s1, l1), (s2, l2), (s3, l3), mask))?;
        Ok((out, linear_shape(l1, l3.shape().elem_count()).1))
    }

    /// `dx = g·w`, `dw = gᵀ·x`, `db = Σ_rows g`, with `g` and `x` as `[rows, ·]` matrices.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, k) = w.dims2()?;
        let g = match &self.mask {
            Some(mask) => (grad * mask)?,
            None => grad.contiguous()?,
        };
        let g = g.reshape(((), n))?;
        let x2 = x.reshape(((), k))?;
        let dx = g.matmul(&w.detach())?.reshape(x.shape())?;
        let dw = g.t()?.matmul(&x2.detach())?;
        let db = g.apply_op1_no_bwd(&ColumnSums)?.reshape(b.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Multiply-adds above which a linear layer's product is split across the rayon pool.
const PARALLEL_PRODUCT: usize = 1 << 16;

/// `[.., D] → [D]`, the sum over all rows.
struct ColumnSums;

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "medprob-column-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Elem>(s: &CpuStorage, l: &Layout) -> candle_core::Result<CpuStorage> {
            let g = T::slice(s, l, "medprob-column-sums")?;
            let d = last_dim(l).max(1);
            let mut out = vec![T::zero(); d];
            for row in g.chunks_exact(d) {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = *o + v;
                }
            }
            Ok(T::wrap(out))
        }
        let d = last_dim(l);
        Ok((dispatch!(s, self.name(), run(s, l))?, Shape::from(d)))
    }
}

// ---------------------------------------------------------------- layer norm

/// Layer norm over the last dimension: `(x [.., D], w [D], b [D]) → [.., D]`.
pub(crate) struct LayerNormOp {
    pub(crate) eps: f64,
}

/// Mean and `1/√(σ² + ε)` of a row.
#[inline(always)]
fn moments<T: Elem>(x: &[T], eps: T) -> (T, T) {
    let n = T::cst(x.len() as f64);
    let mean = x.iter().copied().sum::<T>() / n;
    let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<T>() / n;
    (mean, T::one() / (var + eps).sqrt())
}

/// One row of layer norm: `y = (x − μ)·inv·w + b`.
struct LayerNormRow<'a, T> {
    w: &'a [T],
    b: &'a [T],
    eps: T,
}

impl<T: Elem> RowMap<T> for LayerNormRow<'_, T> {
    #[inline(always)]
    fn row(&self, x: &[T], y: &mut [T]) {
        let (mean, inv) = moments(x, self.eps);
        for k in 0..x.len() {
            y[k] = (x[k] - mean) * inv * self.w[k] + self.b[k];
        }
    }
}

/// One row of the layer-norm input gradient, from `(x, g)`.
struct LayerNormGradRow<'a, T> {
    w: &'a [T],
    eps: T,
    /// The row length, as a number.
    dn: T,
}

impl<T: Elem> RowPairMap<T> for LayerNormGradRow<'_, T> {
    #[inline(always)]
    fn row(&self, x: &[T], g: &[T], o: &mut [T]) {
        let (w, d) = (self.w, x.len());
        let (mean, inv) = moments(x, self.eps);
        let (mut mg, mut mgx) = (T::zero(), T::zero());
        for k in 0..d {
            let gh = g[k] * w[k];
            mg = mg + gh;
            mgx = mgx + gh * (x[k] - mean) * inv;
        }
        let (mg, mgx) = (mg / self.dn, mgx / self.dn);
        for k in 0..d {
            o[k] = inv * (g[k] * w[k] - mg - (x[k] - mean) * inv * mgx);
        }
    }
}

/// The layer-norm weight and bias gradients, `Σ_rows g ⊙ x̂` and `Σ_rows g`.
struct LayerNormParamGrads<'a, T> {
    x: &'a [T],
    g: &'a [T],
    eps: T,
    dw: &'a mut [T],
    db: &'a mut [T],
}

impl<T: Elem> Wide for LayerNormParamGrads<'_, T> {
    #[inline(always)]
    fn run(self) {
        let d = self.dw.len();
        for (x, g) in self.x.chunks_exact(d).zip(self.g.chunks_exact(d)) {
            let (mean, inv) = moments(x, self.eps);
            for k in 0..d {
                self.dw[k] = self.dw[k] + g[k] * (x[k] - mean) * inv;
                self.db[k] = self.db[k] + g[k];
            }
        }
    }
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "medprob-layer-norm"
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
            eps: f64,
            (s1, l1): Input,
            (s2, l2): Input,
            (s3, l3): Input,
        ) -> candle_core::Result<CpuStorage> {
            let name = "medprob-layer-norm";
            let x = T::slice(s1, l1, name)?;
            let (w, b) = (T::slice(s2, l2, name)?, T::slice(s3, l3, name)?);
            let d = last_dim(l1);
            if w.len() != d || b.len() != d {
                candle_core::bail!("{name}: weight and bias must have {d} values");
            }
            let kernel = LayerNormRow {
                w,
                b,
                eps: T::cst(eps),
            };
            Ok(T::wrap(map_rows(x, d, &kernel)))
        }
        let out = dispatch!(s1, self.name(), run(self.eps, (s1, l1), (s2, l2), (s3, l3)))?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.elem_count();
        let rows = x.elem_count() / d.max(1);
        let g = grad.contiguous()?;
        let packed = x.apply_op3_no_bwd(w, &g, &LayerNormGrad { eps: self.eps })?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = packed.narrow(0, rows, 1)?.reshape(w.shape())?;
        let db = packed.narrow(0, rows + 1, 1)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `(x, w, g) → [rows + 2, D]`: `dx` row by row, then `dw`, then `db`.
struct LayerNormGrad {
    eps: f64,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "medprob-layer-norm-grad"
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
            eps: f64,
            (s1, l1): Input,
            (s2, l2): Input,
            (s3, l3): Input,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            let name = "medprob-layer-norm-grad";
            let x = T::slice(s1, l1, name)?;
            let (w, g) = (T::slice(s2, l2, name)?, T::slice(s3, l3, name)?);
            let d = w.len().max(1);
            let rows = x.len() / d;
            let (eps, dn) = (T::cst(eps), T::cst(d as f64));
            let mut dx = map_row_pairs(x, g, d, &LayerNormGradRow { w, eps, dn });
            let (mut dw, mut db) = (vec![T::zero(); d], vec![T::zero(); d]);
            wide(LayerNormParamGrads {
                x,
                g,
                eps,
                dw: &mut dw,
                db: &mut db,
            });
            dx.extend(dw);
            dx.extend(db);
            Ok((T::wrap(dx), Shape::from((rows + 2, d))))
        }
        dispatch!(s1, self.name(), run(self.eps, (s1, l1), (s2, l2), (s3, l3)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// Value and gradients of `Σ c ⊙ f(x)` (a fixed, non-uniform `c`) through the fused op
    /// and through the composed reference, in f64.
    fn check(
        fused: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        reference: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        shape: (usize, usize, usize),
        tol: f64,
    ) {
        let dev = Device::Cpu;
        let n = shape.0 * shape.1 * shape.2;
        let vals: Vec<f64> = (0..n)
            .map(|i| ((i * 37 % 101) as f64 / 101.0 - 0.5) * 6.0)
            .collect();
        let c: Vec<f64> = (0..n)
            .map(|i| ((i * 13 % 29) as f64 / 29.0) - 0.3)
            .collect();
        let c = Tensor::from_vec(c, shape, &dev).unwrap();
        let run = |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| {
            let x =
                Var::from_tensor(&Tensor::from_vec(vals.clone(), shape, &dev).unwrap()).unwrap();
            let y = f(x.as_tensor()).unwrap();
            let loss = (&y * &c).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            let gx = g
                .get(x.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            (y.flatten_all().unwrap().to_vec1::<f64>().unwrap(), gx)
        };
        let (y1, g1) = run(&fused);
        let (y2, g2) = run(&reference);
        for (a, b) in y1.iter().zip(&y2).chain(g1.iter().zip(&g2)) {
            assert!((a - b).abs() < tol, "{a} vs {b}");
        }
        assert!(
            g1.iter().any(|g| g.abs() > 1e-3),
            "gradient is not trivially zero"
        );
    }

    #[test]
    fn gelu_matches_candle_in_value_and_gradient() {
        // candle's erf (and so its GELU backward) is an approximation good to about 1e-7;
        // libm's is exact to the last bit.
        check(|x| x.apply_op1(GeluErf), |x| x.gelu_erf(), (2, 3, 17), 1e-6);
    }

    #[test]
    fn softmax_matches_the_composed_formula() {
        let reference = |x: &Tensor| {
            let max = x.max_keepdim(candle_core::D::Minus1)?.detach();
            let e = x.broadcast_sub(&max)?.exp()?;
            e.broadcast_div(&e.sum_keepdim(candle_core::D::Minus1)?)
        };
        check(|x| x.apply_op1(SoftmaxLastDim), reference, (2, 5, 9), 1e-12);
    }

    #[test]
    fn layer_norm_matches_the_composed_formula_for_input_weight_and_bias() {
        let dev = Device::Cpu;
        let d = 11;
        let w = Var::from_vec(
            (0..d).map(|i| 0.5 + i as f64 * 0.1).collect::<Vec<_>>(),
            d,
            &dev,
        )
        .unwrap();
        let b = Var::from_vec(
            (0..d).map(|i| i as f64 * -0.05).collect::<Vec<_>>(),
            d,
            &dev,
        )
        .unwrap();
        let eps = 1e-5;
        let composed = |x: &Tensor| {
            let mean = x.mean_keepdim(candle_core::D::Minus1)?;
            let c = x.broadcast_sub(&mean)?;
            let var = c.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
            c.broadcast_div(&(var + eps)?.sqrt()?)?
                .broadcast_mul(w.as_tensor())?
                .broadcast_add(b.as_tensor())
        };
        let fused = |x: &Tensor| x.apply_op3(w.as_tensor(), b.as_tensor(), LayerNormOp { eps });
        check(fused, composed, (3, 4, d), 1e-12);
        // Weight and bias gradients.
        let x = Tensor::from_vec(
            (0..4 * d)
                .map(|i| (i as f64 * 0.37).sin() * 3.0)
                .collect::<Vec<_>>(),
            (4, d),
            &dev,
        )
        .unwrap();
        let c = Tensor::from_vec(
            (0..4 * d)
                .map(|i| (i as f64 * 0.11).cos())
                .collect::<Vec<_>>(),
            (4, d),
            &dev,
        )
        .unwrap();
        let grads = |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| {
            let g = (f(&x).unwrap() * &c)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            [w.as_tensor(), b.as_tensor()].map(|v| g.get(v).unwrap().to_vec1::<f64>().unwrap())
        };
        let (a, r) = (grads(&fused), grads(&composed));
        for (p, q) in a.iter().flatten().zip(r.iter().flatten()) {
            assert!((p - q).abs() < 1e-10, "{p} vs {q}");
        }
    }

    #[test]
    fn f32_kernels_agree_with_f64() {
        let dev = Device::Cpu;
        let x64 = Tensor::from_vec(
            (0..60)
                .map(|i| (i as f64 * 0.71).sin() * 4.0)
                .collect::<Vec<_>>(),
            (6, 10),
            &dev,
        )
        .unwrap();
        let x32 = x64.to_dtype(DType::F32).unwrap();
        let w = Tensor::from_vec(
            (0..10).map(|i| 1.0 + i as f64 * 0.1).collect::<Vec<_>>(),
            10,
            &dev,
        )
        .unwrap();
        let b = w.affine(-0.5, 0.2).unwrap();
        let ln = LayerNormOp { eps: 1e-6 };
        let ops: [&dyn Fn(&Tensor) -> Tensor; 3] = [
            &|x| x.apply_op1(GeluErf).unwrap(),
            &|x| x.apply_op1(SoftmaxLastDim).unwrap(),
            &|x| {
                let (w, b) = (
                    w.to_dtype(x.dtype()).unwrap(),
                    b.to_dtype(x.dtype()).unwrap(),
                );
                x.apply_op3(&w, &b, LayerNormOp { eps: ln.eps }).unwrap()
            },
        ];
        for f in ops {
            let a = f(&x64).flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let c = f(&x32)
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for (p, q) in a.iter().zip(&c) {
                assert!((p - q).abs() < 2e-6 * (1.0 + p.abs()), "{p} vs {q}");
            }
        }
    }

    #[test]
    fn f32_erf_is_within_half_a_micro() {
        let worst = (-6000..=6000)
            .map(|i| i as f32 * 1e-3)
            .map(|x| (Elem::erf(x) as f64 - libm::erf(x as f64)).abs())
            .fold(0.0, f64::max);
        assert!(worst < 5e-7, "max |erf error| {worst}");
        for x in [0.3f32, 1.7, 4.0] {
            assert_eq!(Elem::erf(-x), -Elem::erf(x), "erf is odd");
        }
    }

    #[test]
    fn f32_fast_exp_is_within_two_ulp_and_saturates() {
        let worst = (-870_000..=880_000)
            .map(|i| i as f32 * 1e-4)
            .map(|x| {
                let exact = (x as f64).exp();
                (Elem::fast_exp(x) as f64 - exact).abs() / exact
            })
            .fold(0.0, f64::max);
        assert!(
            worst < 2.0 * f32::EPSILON as f64,
            "max relative error {worst}"
        );
        assert_eq!(Elem::fast_exp(0.0f32), 1.0);
        assert_eq!(
            Elem::fast_exp(-1e4f32),
            0.0,
            "masked scores get exactly no weight"
        );
        assert_eq!(Elem::fast_exp(100.0f32), f32::INFINITY);
        assert!(Elem::fast_exp(f32::NAN).is_nan());
    }

    #[test]
    fn wide_kernels_give_the_same_bits_as_the_baseline_build() {
        // `wide` runs the AVX2 build where the CPU has it; `run` is the baseline build.
        let d = 37; // rows that are not a multiple of any vector width
        let n = 11 * d;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 9.0) - 5.0)
            .collect();
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 13 % 29) as f32 / 29.0) - 0.4)
            .collect();
        let w: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 * 0.03).collect();
        let b: Vec<f32> = (0..d).map(|i| i as f32 * -0.02).collect();
        /// Build 0: the baseline one (`run` called directly); build 1: [`wide`]'s choice.
        fn run_build<W: Wide>(job: W, build: usize) {
            if build == 0 {
                job.run()
            } else {
                wide(job)
            }
        }
        fn both<K: RowMap<f32>>(k: &K, x: &[f32], d: usize) -> [Vec<f32>; 2] {
            std::array::from_fn(|version| {
                let mut out = vec![0.0; x.len()];
                let job = Rows {
                    kernel: k,
                    a: x,
                    out: &mut out,
                    d,
                };
                run_build(job, version);
                out
            })
        }
        fn both_pairs<K: RowPairMap<f32>>(k: &K, a: &[f32], b: &[f32], d: usize) -> [Vec<f32>; 2] {
            std::array::from_fn(|version| {
                let mut out = vec![0.0; a.len()];
                let job = PairRows {
                    rows: Rows {
                        kernel: k,
                        a,
                        out: &mut out,
                        d,
                    },
                    b,
                };
                run_build(job, version);
                out
            })
        }
        let same = |[p, q]: [Vec<f32>; 2], what: &str| {
            assert!(p.iter().any(|v| *v != 0.0), "{what}: not trivially zero");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&p), bits(&q), "{what}");
        };
        let y = both(&Static::<SoftmaxLastDim>::NEW, &x, d);
        same(y.clone(), "softmax");
        same(both(&Static::<GeluErf>::NEW, &x, d), "gelu");
        same(
            both_pairs(&Static::<GeluErfGrad>::NEW, &x, &g, d),
            "gelu grad",
        );
        same(
            both_pairs(&Static::<SoftmaxGrad>::NEW, &y[0], &g, d),
            "softmax grad",
        );
        let ln = LayerNormRow {
            w: &w,
            b: &b,
            eps: 1e-6,
        };
        same(both(&ln, &x, d), "layer norm");
        let grad = LayerNormGradRow {
            w: &w,
            eps: 1e-6,
            dn: d as f32,
        };
        same(both_pairs(&grad, &x, &g, d), "layer norm grad");
        let params: [Vec<f32>; 2] = std::array::from_fn(|version| {
            let (mut dw, mut db) = (vec![0.0; d], vec![0.0; d]);
            let job = LayerNormParamGrads {
                x: &x,
                g: &g,
                eps: 1e-6,
                dw: &mut dw,
                db: &mut db,
            };
            run_build(job, version);
            [dw, db].concat()
        });
        same(params, "layer norm weight and bias grads");
    }

    #[test]
    fn linear_matches_the_composed_layer_for_input_weight_and_bias() {
        let dev = Device::Cpu;
        let (k, n) = (5, 7);
        let w = Var::from_vec(
            (0..n * k)
                .map(|i| (i as f64 * 0.47).sin())
                .collect::<Vec<_>>(),
            (n, k),
            &dev,
        )
        .unwrap();
        let b = Var::from_vec(
            (0..n).map(|i| i as f64 * 0.3 - 1.0).collect::<Vec<_>>(),
            n,
            &dev,
        )
        .unwrap();
        let x = Var::from_vec(
            (0..6 * k)
                .map(|i| (i as f64 * 0.9).cos())
                .collect::<Vec<_>>(),
            (2, 3, k),
            &dev,
        )
        .unwrap();
        let c = Tensor::from_vec(
            (0..6 * n)
                .map(|i| (i as f64 * 0.13).sin())
                .collect::<Vec<_>>(),
            (2, 3, n),
            &dev,
        )
        .unwrap();
        let run = |f: &dyn Fn() -> Tensor| {
            let y = f();
            let g = (&y * &c).unwrap().sum_all().unwrap().backward().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            [
                flat(&y),
                flat(g.get(x.as_tensor()).unwrap()),
                flat(g.get(w.as_tensor()).unwrap()),
                flat(g.get(b.as_tensor()).unwrap()),
            ]
        };
        let (x_, w_, b_) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
        let fused = run(&|| x_.apply_op3(w_, b_, LinearOp { mask: None }).unwrap());
        let composed = run(&|| {
            x_.broadcast_matmul(&w_.t().unwrap())
                .unwrap()
                .broadcast_add(b_)
                .unwrap()
        });
        assert_eq!(fused[0].len(), 6 * n, "output is [2, 3, n]");
        for (p, q) in fused.iter().zip(&composed) {
            assert_eq!(p.len(), q.len());
            for (u, v) in p.iter().zip(q) {
                assert!((u - v).abs() < 1e-12, "{u} vs {v}");
            }
            assert!(p.iter().any(|v| v.abs() > 0.1), "not trivially zero");
        }
        // A weight of the wrong width is refused, naming both shapes.
        let bad = Tensor::zeros((n, k + 1), DType::F64, &dev).unwrap();
        let err = x_
            .apply_op3(&bad, b_, LinearOp { mask: None })
            .unwrap_err()
            .to_string();
        assert!(err.contains("[7, 6]") && err.contains("[2, 3, 5]"), "{err}");
    }

    #[test]
    fn linear_splits_large_products_across_threads_with_the_same_result() {
        // 64·128·96 multiply-adds: above PARALLEL_PRODUCT, so gemm runs on the rayon pool.
        let dev = Device::Cpu;
        let (m, k, n) = (64, 96, 128);
        assert!(m * n * k >= PARALLEL_PRODUCT);
        let x = Tensor::from_vec(
            (0..m * k)
                .map(|i| (i as f32 * 0.01).sin())
                .collect::<Vec<_>>(),
            (m, k),
            &dev,
        )
        .unwrap();
        let w = Tensor::from_vec(
            (0..n * k)
                .map(|i| (i as f32 * 0.02).cos())
                .collect::<Vec<_>>(),
            (n, k),
            &dev,
        )
        .unwrap();
        let b = Tensor::ones(n, DType::F32, &dev).unwrap();
        let fused = x.apply_op3(&w, &b, LinearOp { mask: None }).unwrap();
        let composed = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        let diff = crate::testing::max_abs_diff(&fused, &composed).unwrap();
        assert!(diff < 1e-4, "max difference {diff}");
    }
}
