//! A batch of diagonal Gaussian embeddings on plain `f32` buffers (the inference path).

use ndarray::{s, Array1, Array2, Array3, ArrayView2, Axis};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::error::{CoreError, Result};

/// Largest |log-variance| accepted: `exp(±80)` is still a normal `f32`.
pub const LOG_VARIANCE_LIMIT: f32 = 80.0;

/// The clamp that probabilistic heads apply to their log-variance output (SPEC §1).
///
/// Distances and losses never clamp; only heads do, through this type, so the range is
/// stated once.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogVarianceClamp {
    /// Lower bound on `v = log σ²`.
    pub min: f32,
    /// Upper bound on `v = log σ²`.
    pub max: f32,
}

impl Default for LogVarianceClamp {
    /// `[-6, 6]`, the MedProbCLIP head's range.
    fn default() -> Self {
        Self {
            min: -6.0,
            max: 6.0,
        }
    }
}

impl LogVarianceClamp {
    /// A clamp range; `min < max`, both finite.
    pub fn new(min: f32, max: f32) -> Result<Self> {
        if !(min.is_finite() && max.is_finite() && min < max) {
            return Err(CoreError::InvalidParameter {
                name: "log-variance clamp",
                value: min as f64,
                reason: "needs finite min < max",
            });
        }
        Ok(Self { min, max })
    }

    /// Clamp one log-variance.
    #[inline]
    pub fn apply(&self, v: f32) -> f32 {
        v.clamp(self.min, self.max)
    }

    /// Clamp a differentiable log-variance tensor (gradient passes inside the range).
    pub fn apply_tensor(&self, v: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        Ok(v.clamp(self.min as f64, self.max as f64)?)
    }
}

/// Per-item uncertainty summaries of a Gaussian embedding `N(mu, diag(exp(v)))`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Uncertainty {
    /// `Σ_d σ²_d`, the total variance (PCME++'s uncertainty measure).
    pub total_variance: f64,
    /// `mean_d v_d`, the mean log-variance.
    pub mean_log_variance: f64,
    /// Differential entropy `½ Σ_d (1 + ln 2π + v_d)` in nats.
    pub entropy: f64,
}

/// A batch of `N` diagonal Gaussian embeddings of dimension `D`: means and log-variances,
/// each `[N, D]`, row-major `f32`.
///
/// Every constructor validates: equal shapes, `D > 0`, finite values, and log-variances
/// within `±`[`LOG_VARIANCE_LIMIT`] (so `exp(v)` is representable). An empty batch
/// (`N = 0`) is allowed.
///
/// A batch may carry a *gallery offset* (one value per item, see
/// [`GaussianEmbeddings::with_gallery_offset`]): a retrieval-time correction added to every
/// distance in which the batch is the gallery.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianEmbeddings {
    mean: Array2<f32>,
    log_var: Array2<f32>,
    gallery_offset: Option<Vec<f32>>,
}

impl GaussianEmbeddings {
    /// From owned `[N, D]` arrays of means and log-variances.
    pub fn new(mean: Array2<f32>, log_var: Array2<f32>) -> Result<Self> {
        if mean.dim() != log_var.dim() {
            return Err(CoreError::Shape {
                what: "GaussianEmbeddings::new",
                detail: format!(
                    "mean is {:?} but log-variance is {:?}",
                    mean.dim(),
                    log_var.dim()
                ),
            });
        }
        if mean.ncols() == 0 {
            return Err(CoreError::Empty {
                what: "GaussianEmbeddings::new",
                detail: "embedding dimension D must be at least 1",
            });
        }
        check_finite("mean", mean.view())?;
        check_finite("log-variance", log_var.view())?;
        if let Some(((row, col), &value)) = log_var
            .indexed_iter()
            .find(|(_, v)| v.abs() > LOG_VARIANCE_LIMIT)
        {
            return Err(CoreError::LogVarianceRange {
                what: "log-variance",
                row,
                col,
                value: value as f64,
                limit: LOG_VARIANCE_LIMIT as f64,
            });
        }
        // Kernels index raw rows: keep the storage standard (row-major, contiguous).
        let mean = mean.as_standard_layout().into_owned();
        let log_var = log_var.as_standard_layout().into_owned();
        Ok(Self {
            mean,
            log_var,
            gallery_offset: None,
        })
    }

    /// The same batch with a gallery offset `c_j` per item: wherever this batch is the
    /// gallery of [`crate::kernels::pairwise`] or [`crate::kernels::top_k`] (and its
    /// accumulator), the distance to item `j` becomes `d(q, j) + c_j`. As the query side, and
    /// in [`crate::kernels::paired`], the offset is not used. A hub correction (e.g.
    /// `medprob_metrics::hubness::csls_offsets`) is such an offset: a constant per gallery
    /// item leaves every query's own distances comparable and changes only which items come
    /// first. Offsets must be finite, one per item.
    pub fn with_gallery_offset(mut self, offset: Vec<f32>) -> Result<Self> {
        if offset.len() != self.len() {
            return Err(CoreError::Shape {
                what: "GaussianEmbeddings::with_gallery_offset",
                detail: format!("{} offsets for {} items", offset.len(), self.len()),
            });
        }
        if let Some((i, v)) = offset.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CoreError::NonFinite {
                what: "gallery offset",
                row: i,
                col: 0,
                value: *v as f64,
            });
        }
        self.gallery_offset = Some(offset);
        Ok(self)
    }

    /// The gallery offset, if any (one value per item).
    pub fn gallery_offset(&self) -> Option<&[f32]> {
        self.gallery_offset.as_deref()
    }

    /// The same batch without a gallery offset.
    pub fn without_gallery_offset(mut self) -> Self {
        self.gallery_offset = None;
        self
    }

    /// From flat row-major buffers of `n·dim` values each.
    pub fn from_vecs(n: usize, dim: usize, mean: Vec<f32>, log_var: Vec<f32>) -> Result<Self> {
        let shape_err = |which: &str, len: usize| CoreError::Shape {
            what: "GaussianEmbeddings::from_vecs",
            detail: format!("{which} has {len} values, expected n·dim = {n}·{dim}"),
        };
        let (ml, vl) = (mean.len(), log_var.len());
        let mean = Array2::from_shape_vec((n, dim), mean).map_err(|_| shape_err("mean", ml))?;
        let log_var =
            Array2::from_shape_vec((n, dim), log_var).map_err(|_| shape_err("log-variance", vl))?;
        Self::new(mean, log_var)
    }

    /// From candle tensors `[N, D]` of any float dtype and device (copied to host `f32`).
    pub fn from_tensors(mean: &candle_core::Tensor, log_var: &candle_core::Tensor) -> Result<Self> {
        let to_array = |t: &candle_core::Tensor, which: &'static str| -> Result<Array2<f32>> {
            let (n, d) = t.dims2().map_err(|_| CoreError::Tensor {
                what: which,
                detail: format!("expected a [N, D] tensor, got shape {:?}", t.dims()),
            })?;
            let v = t
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            Ok(Array2::from_shape_vec((n, d), v).expect("n·d values from a [n, d] tensor"))
        };
        Self::new(to_array(mean, "mean")?, to_array(log_var, "log-variance")?)
    }

    /// Both arrays as candle tensors on `device`.
    pub fn to_tensors(
        &self,
        device: &candle_core::Device,
    ) -> Result<(candle_core::Tensor, candle_core::Tensor)> {
        let shape = (self.len(), self.dim());
        let m = candle_core::Tensor::from_slice(self.mean_slice(), shape, device)?;
        let v = candle_core::Tensor::from_slice(self.log_var_slice(), shape, device)?;
        Ok((m, v))
    }

    /// Number of embeddings `N`.
    pub fn len(&self) -> usize {
        self.mean.nrows()
    }

    /// `true` when `N = 0`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Embedding dimension `D`.
    pub fn dim(&self) -> usize {
        self.mean.ncols()
    }

    /// Means, `[N, D]`.
    pub fn mean(&self) -> ArrayView2<'_, f32> {
        self.mean.view()
    }

    /// Log-variances `v = log σ²`, `[N, D]`.
    pub fn log_var(&self) -> ArrayView2<'_, f32> {
        self.log_var.view()
    }

    /// Means as one row-major slice.
    pub fn mean_slice(&self) -> &[f32] {
        self.mean
            .as_slice()
            .expect("GaussianEmbeddings keeps standard layout")
    }

    /// Log-variances as one row-major slice.
    pub fn log_var_slice(&self) -> &[f32] {
        self.log_var
            .as_slice()
            .expect("GaussianEmbeddings keeps standard layout")
    }

    /// Item `i` as `(mean, log-variance)` slices.
    pub fn row(&self, i: usize) -> (&[f32], &[f32]) {
        let d = self.dim();
        (
            &self.mean_slice()[i * d..(i + 1) * d],
            &self.log_var_slice()[i * d..(i + 1) * d],
        )
    }

    /// Items `start..end` as a new batch.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        Self {
            mean: self.mean.slice(s![range.clone(), ..]).to_owned(),
            log_var: self.log_var.slice(s![range.clone(), ..]).to_owned(),
            gallery_offset: self.gallery_offset.as_ref().map(|o| o[range].to_vec()),
        }
    }

    /// Variances `σ² = exp(v)`, `[N, D]`.
    pub fn variances(&self) -> Array2<f32> {
        self.log_var.mapv(f32::exp)
    }

    /// The same batch with log-variances clamped (what a head does; distances never clamp).
    pub fn clamped(mut self, clamp: LogVarianceClamp) -> Self {
        self.log_var.mapv_inplace(|v| clamp.apply(v));
        self
    }

    /// The same batch with each mean scaled to unit L2 norm (PCME++ normalises; MedProbCLIP
    /// does not). A zero mean stays zero.
    pub fn l2_normalized(mut self) -> Self {
        for mut row in self.mean.axis_iter_mut(Axis(0)) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.mapv_inplace(|x| x / norm);
            }
        }
        self
    }

    /// Item `i`'s mean log-variance `mean_d v_d` (computed in `f64`): the uncertainty a
    /// [`crate::MatchProbability`] may read.
    pub fn mean_log_variance(&self, i: usize) -> f64 {
        let v = self.row(i).1;
        v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
    }

    /// [`GaussianEmbeddings::mean_log_variance`] of every item.
    pub fn mean_log_variances(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.mean_log_variance(i)).collect()
    }

    /// Per-item uncertainty summaries (computed in `f64`).
    pub fn uncertainty(&self) -> Vec<Uncertainty> {
        let ln_2pi = (2.0 * std::f64::consts::PI).ln();
        self.log_var
            .axis_iter(Axis(0))
            .map(|v| {
                let d = v.len() as f64;
                let sum_v: f64 = v.iter().map(|&x| x as f64).sum();
                Uncertainty {
                    total_variance: v.iter().map(|&x| (x as f64).exp()).sum(),
                    mean_log_variance: sum_v / d,
                    entropy: 0.5 * (d * (1.0 + ln_2pi) + sum_v),
                }
            })
            .collect()
    }

    /// `KL(N(mu, σ²) ‖ N(0, I)) = ½ Σ_d (σ² + mu² − 1 − v)` per item, in `f64` (the VIB term).
    pub fn kl_to_standard_normal(&self) -> Array1<f64> {
        let d = self.dim();
        (0..self.len())
            .map(|i| {
                let (m, v) = self.row(i);
                0.5 * (0..d)
                    .map(|k| {
                        let (m, v) = (m[k] as f64, v[k] as f64);
                        v.exp() + m * m - 1.0 - v
                    })
                    .sum::<f64>()
            })
            .collect()
    }

    /// `k` reparameterised samples per item, `z = mu + σ·ε`, `ε ~ N(0, I)` from `rng`:
    /// `[N, k, D]`. Seeded `rng` → reproducible samples on any machine.
    pub fn sample<G: Rng + ?Sized>(&self, k: usize, rng: &mut G) -> Array3<f32> {
        let (n, d) = (self.len(), self.dim());
        let mut out = Array3::<f32>::zeros((n, k, d));
        for i in 0..n {
            let (m, v) = self.row(i);
            for s in 0..k {
                for j in 0..d {
                    let eps: f32 = rng.sample(StandardNormal);
                    out[[i, s, j]] = m[j] + (0.5 * v[j]).exp() * eps;
                }
            }
        }
        out
    }
}

fn check_finite(what: &'static str, a: ArrayView2<'_, f32>) -> Result<()> {
    match a.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((row, col), &value)) => Err(CoreError::NonFinite {
            what,
            row,
            col,
            value: value as f64,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn rejects_shape_mismatch() {
        let e = GaussianEmbeddings::new(Array2::zeros((2, 3)), Array2::zeros((2, 4))).unwrap_err();
        assert!(matches!(e, CoreError::Shape { .. }), "{e}");
        assert!(e.to_string().contains("[2, 3]") || e.to_string().contains("(2, 3)"));
    }

    #[test]
    fn rejects_zero_dimension() {
        let e = GaussianEmbeddings::new(Array2::zeros((2, 0)), Array2::zeros((2, 0))).unwrap_err();
        assert!(matches!(e, CoreError::Empty { .. }), "{e}");
    }

    #[test]
    fn rejects_non_finite_and_names_the_position() {
        let m = array![[0.0, 1.0], [2.0, f32::NAN]];
        let e = GaussianEmbeddings::new(m, Array2::zeros((2, 2))).unwrap_err();
        match e {
            CoreError::NonFinite { what, row, col, .. } => {
                assert_eq!((what, row, col), ("mean", 1, 1))
            }
            other => panic!("unexpected {other}"),
        }
        let v = array![[0.0, f32::INFINITY]];
        let e = GaussianEmbeddings::new(Array2::zeros((1, 2)), v).unwrap_err();
        assert!(matches!(
            e,
            CoreError::NonFinite {
                what: "log-variance",
                row: 0,
                col: 1,
                ..
            }
        ));
    }

    #[test]
    fn rejects_unrepresentable_log_variance() {
        let v = array![[0.0, 90.0]];
        let e = GaussianEmbeddings::new(Array2::zeros((1, 2)), v).unwrap_err();
        assert!(
            matches!(e, CoreError::LogVarianceRange { row: 0, col: 1, .. }),
            "{e}"
        );
    }

    #[test]
    fn from_vecs_checks_lengths() {
        let e = GaussianEmbeddings::from_vecs(2, 3, vec![0.0; 6], vec![0.0; 5]).unwrap_err();
        assert!(e.to_string().contains("log-variance has 5 values"), "{e}");
        let ok = GaussianEmbeddings::from_vecs(2, 3, vec![0.0; 6], vec![0.0; 6]).unwrap();
        assert_eq!((ok.len(), ok.dim()), (2, 3));
    }

    #[test]
    fn from_tensors_rejects_wrong_rank() {
        let t = candle_core::Tensor::zeros(4, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
        let e = GaussianEmbeddings::from_tensors(&t, &t).unwrap_err();
        assert!(matches!(e, CoreError::Tensor { what: "mean", .. }), "{e}");
    }

    #[test]
    fn clamp_bounds_only_log_variance() {
        let g = GaussianEmbeddings::new(array![[9.0, -9.0]], array![[9.0, -9.0]]).unwrap();
        let c = g.clamped(LogVarianceClamp::default());
        assert_eq!(c.log_var(), array![[6.0, -6.0]]);
        assert_eq!(c.mean(), array![[9.0, -9.0]]);
        assert!(LogVarianceClamp::new(1.0, -1.0).is_err());
    }

    #[test]
    fn uncertainty_summaries() {
        let g = GaussianEmbeddings::new(array![[0.0, 0.0]], array![[0.0, 2.0f32.ln()]]).unwrap();
        let u = g.uncertainty()[0];
        assert!((u.total_variance - 3.0).abs() < 1e-6);
        assert!((u.mean_log_variance - 0.5 * 2f64.ln()).abs() < 1e-6);
        let h = 0.5 * (2.0 * (1.0 + (2.0 * std::f64::consts::PI).ln()) + 2f64.ln());
        assert!((u.entropy - h).abs() < 1e-6);
    }

    #[test]
    fn kl_is_zero_for_the_standard_normal() {
        let g = GaussianEmbeddings::new(Array2::zeros((3, 5)), Array2::zeros((3, 5))).unwrap();
        assert!(g.kl_to_standard_normal().iter().all(|&k| k == 0.0));
        let g = GaussianEmbeddings::new(array![[1.0]], array![[0.0]]).unwrap();
        assert!((g.kl_to_standard_normal()[0] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn l2_normalisation() {
        let g = GaussianEmbeddings::new(array![[3.0, 4.0], [0.0, 0.0]], Array2::zeros((2, 2)))
            .unwrap()
            .l2_normalized();
        assert_eq!(g.mean(), array![[0.6, 0.8], [0.0, 0.0]]);
    }

    #[test]
    fn sampling_is_seeded_and_has_the_right_moments() {
        use rand::SeedableRng;
        let g = GaussianEmbeddings::new(array![[1.0, -2.0]], array![[0.0, 2.0f32.ln()]]).unwrap();
        let a = g.sample(4000, &mut rand::rngs::StdRng::seed_from_u64(7));
        let b = g.sample(4000, &mut rand::rngs::StdRng::seed_from_u64(7));
        assert_eq!(a, b);
        let col = |j: usize| a.slice(s![0, .., j]).to_owned();
        let (m0, m1) = (col(0).mean().unwrap(), col(1).mean().unwrap());
        let var1 = col(1).mapv(|x| (x - m1) * (x - m1)).mean().unwrap();
        // Standard errors: 1/√4000 ≈ 0.016 for the mean, ≈ 0.045 for a variance of 2.
        assert!(
            (m0 - 1.0).abs() < 0.08 && (m1 + 2.0).abs() < 0.11,
            "{m0} {m1}"
        );
        assert!((var1 - 2.0).abs() < 0.25, "{var1}");
    }
}
