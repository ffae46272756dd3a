//! PCME's Monte-Carlo match probability (Chun et al., CVPR 2021, eq. 3), for comparison
//! with the closed forms that replaced it.
//!
//! `p = K⁻² Σ_{k,k'} σ̃(−a‖z_k − z'_{k'}‖ + b)` with `z = mu + σ·ε`, `K` samples per item and
//! `‖x‖ = √(Σx² + 1e-6)` as in PCME's code. PCME's code squashes with
//! `σ̃(x) = eˣ/(eˣ + e⁻ˣ) = sigmoid(2x)`; choose [`Squash::Pcme`] to reproduce its numbers.
//! PCME stores a log *standard deviation*; this crate always stores the log-variance, so
//! `σ = exp(v/2)` here.

use ndarray::{s, Array2};
use rand::Rng;

use crate::embedding::GaussianEmbeddings;
use crate::error::{CoreError, Result};
use crate::kernels::squared_euclidean;
use crate::match_prob::sigmoid;

/// The squashing function applied to `−a·‖z − z'‖ + b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Squash {
    /// The logistic sigmoid.
    Sigmoid,
    /// PCME's `eˣ/(eˣ + e⁻ˣ)`, i.e. `sigmoid(2x)`.
    Pcme,
}

/// Settings of the Monte-Carlo estimate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MonteCarloMatch {
    /// Samples per item, `K` (PCME: 7).
    pub samples: usize,
    /// Scale `a`.
    pub a: f64,
    /// Shift `b`.
    pub b: f64,
    /// Squashing function.
    pub squash: Squash,
}

impl Default for MonteCarloMatch {
    fn default() -> Self {
        Self {
            samples: 7,
            a: 1.0,
            b: 0.0,
            squash: Squash::Pcme,
        }
    }
}

impl MonteCarloMatch {
    /// `[N, M]` sampled match probabilities; `rng` makes the estimate reproducible.
    pub fn probabilities<G: Rng + ?Sized>(
        &self,
        queries: &GaussianEmbeddings,
        gallery: &GaussianEmbeddings,
        rng: &mut G,
    ) -> Result<Array2<f32>> {
        if self.samples == 0 {
            return Err(CoreError::InvalidParameter {
                name: "samples",
                value: 0.0,
                reason: "the Monte-Carlo estimate needs at least one sample",
            });
        }
        if queries.dim() != gallery.dim() {
            return Err(CoreError::Shape {
                what: "MonteCarloMatch::probabilities",
                detail: format!("D = {} vs {}", queries.dim(), gallery.dim()),
            });
        }
        let (n, m, k, d) = (queries.len(), gallery.len(), self.samples, queries.dim());
        let zq = queries
            .sample(k, rng)
            .into_shape_with_order((n * k, d))
            .expect("contiguous");
        let zg = gallery
            .sample(k, rng)
            .into_shape_with_order((m * k, d))
            .expect("contiguous");
        let mut out = Array2::<f32>::zeros((n, m));
        let squash = |x: f64| match self.squash {
            Squash::Sigmoid => sigmoid(x),
            Squash::Pcme => sigmoid(2.0 * x),
        };
        // Query chunks bound the [chunk·K, M·K] sample-distance tile.
        const CHUNK: usize = 64;
        let mut i0 = 0;
        while i0 < n {
            let i1 = (i0 + CHUNK).min(n);
            let d2 = squared_euclidean(zq.slice(s![i0 * k..i1 * k, ..]), zg.view())?;
            for i in i0..i1 {
                for j in 0..m {
                    let mut acc = 0.0f64;
                    for a in 0..k {
                        for b in 0..k {
                            let dist = (d2[[(i - i0) * k + a, j * k + b]] as f64 + 1e-6).sqrt();
                            acc += squash(-self.a * dist + self.b);
                        }
                    }
                    out[[i, j]] = (acc / (k * k) as f64) as f32;
                }
            }
            i0 = i1;
        }
        Ok(out)
    }
}
