//! Does an embedding's variance track ambiguity? (issue #22.) On a split with labels, the
//! *group size* of a study is the number of studies of the split (itself included) with
//! its positive label set (ζ = 0): a study with a common label set has many plausible
//! partners. A study's image and its report share it. [`AmbiguityReport`] gives Spearman's
//! ρ between each modality's total variance Σσ² and the group size (positive when bigger
//! groups get more variance).

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Spearman's rank correlation of `x` and `y` (average ranks for ties); NaN when either
/// is constant or fewer than 2 values are given.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
                j += 1;
            }
            let mid = (i + j) as f64 / 2.0 + 1.0;
            for &k in &order[i..=j] {
                r[k] = mid;
            }
            i = j + 1;
        }
        r
    }
    if x.len() != y.len() || x.len() < 2 {
        return f64::NAN;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

/// The number of items with each item's label mask, item by item.
pub fn group_sizes(labels: &[u32]) -> Vec<usize> {
    let mut counts = std::collections::HashMap::new();
    for &l in labels {
        *counts.entry(l).or_insert(0usize) += 1;
    }
    labels.iter().map(|l| counts[l]).collect()
}

/// Variance against group size, on the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AmbiguityReport {
    /// Studies measured.
    pub studies: usize,
    /// Spearman ρ of the image Σσ² and the group size.
    #[serde(with = "crate::nan_null")]
    pub rho_image_group: f64,
    /// Spearman ρ of the report Σσ² and the group size.
    #[serde(with = "crate::nan_null")]
    pub rho_text_group: f64,
    /// The same with the image's mean log-variance (what the match probability reads).
    #[serde(with = "crate::nan_null", default = "nan")]
    pub rho_image_group_log_var: f64,
    /// The same with the report's mean log-variance.
    #[serde(with = "crate::nan_null", default = "nan")]
    pub rho_text_group_log_var: f64,
}

fn nan() -> f64 {
    f64::NAN
}

/// One modality's items: label masks and embeddings, row-aligned.
pub struct Side<'a> {
    pub labels: &'a [u32],
    pub embeddings: &'a medprob_core::GaussianEmbeddings,
}

impl AmbiguityReport {
    /// From the images and the reports with their label masks (a study's image and report
    /// carry the same mask).
    pub fn new(images: Side<'_>, texts: Side<'_>) -> Result<Self> {
        let rho = |side: &Side<'_>, what: &'static str| -> Result<(f64, f64)> {
            crate::check::len(what, side.labels.len(), side.embeddings.len())?;
            let g: Vec<f64> = group_sizes(side.labels)
                .into_iter()
                .map(|x| x as f64)
                .collect();
            let total: Vec<f64> = side
                .embeddings
                .uncertainty()
                .iter()
                .map(|u| u.total_variance)
                .collect();
            Ok((
                spearman(&total, &g),
                spearman(&side.embeddings.mean_log_variances(), &g),
            ))
        };
        let (ri, ri_log) = rho(&images, "AmbiguityReport: images")?;
        let (rt, rt_log) = rho(&texts, "AmbiguityReport: reports")?;
        Ok(Self {
            studies: images.labels.len(),
            rho_image_group: ri,
            rho_text_group: rt,
            rho_image_group_log_var: ri_log,
            rho_text_group_log_var: rt_log,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_matches_hand_computed_values() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Ties get average ranks: x ranks (1.5, 1.5, 3), y ranks (1, 2, 3).
        let r = spearman(&[5.0, 5.0, 9.0], &[1.0, 2.0, 3.0]);
        assert!((r - 0.866_025_403_784_438_6).abs() < 1e-12, "{r}");
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
    }

    #[test]
    fn group_sizes_and_rho_by_hand() {
        // Masks: two "no finding" (0), three effusions (1), one cardiomegaly (2).
        let labels = [0, 1, 1, 0, 1, 2];
        assert_eq!(group_sizes(&labels), vec![2, 3, 3, 2, 3, 1]);
        // Image variance rises with the group; report variance falls with it. One
        // dimension holds each item's variance (σ² = the value), the other is σ² = 1, so
        // Σσ² and the mean log-variance order the items alike.
        let img = [5.0, 9.0, 8.0, 4.0, 7.0, 1.0];
        let txt = [2.0, 1.0, 1.5, 3.0, 0.5, 9.0];
        let embed = |v: &[f64]| {
            let log_var: Vec<f32> = v.iter().flat_map(|&x| [(x as f32).ln(), 0.0]).collect();
            medprob_core::GaussianEmbeddings::from_vecs(v.len(), 2, vec![0.0; 2 * v.len()], log_var)
                .unwrap()
        };
        let (ei, et) = (embed(&img), embed(&txt));
        let side = |e| Side {
            labels: &labels,
            embeddings: e,
        };
        let r = AmbiguityReport::new(side(&ei), side(&et)).unwrap();
        assert!((r.rho_image_group_log_var - r.rho_image_group).abs() < 1e-12);
        assert!((r.rho_text_group_log_var - r.rho_text_group).abs() < 1e-12);
        assert_eq!(r.studies, 6);
        // Group ranks (average for ties): 2.5, 5, 5, 2.5, 5, 1; image ranks 3, 6, 5, 2, 4, 1.
        let expected = spearman(
            &[3.0, 6.0, 5.0, 2.0, 4.0, 1.0],
            &[2.5, 5.0, 5.0, 2.5, 5.0, 1.0],
        );
        assert!((r.rho_image_group - expected).abs() < 1e-12);
        assert!(r.rho_image_group > 0.8 && r.rho_text_group < -0.8, "{r:?}");
        let short = Side {
            labels: &labels[..5],
            embeddings: &ei,
        };
        assert!(AmbiguityReport::new(short, side(&et)).is_err());
    }
}
