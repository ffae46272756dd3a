//! Target matrices for many-to-many matching (SPEC §4).
//!
//! In chest X-ray data many studies share a word-for-word identical report ("No acute
//! cardiopulmonary process."). With one-to-one targets the loss pushes such duplicates
//! apart; a target matrix `M` marks every true match in the batch instead. Softmax losses
//! use it through the multi-positive form, BCE losses directly.

use std::collections::HashMap;
use std::hash::Hash;

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// `M_ij = 1` where `keys[i] == keys[j]` (so the diagonal is always 1), `[N, N]`.
///
/// Use the report text as key for "identical reports", or the label vector for
/// "identical findings".
///
/// ```
/// use candle_core::{DType, Device};
/// let m = medprob_losses::targets::from_keys(&["normal", "effusion", "normal"], DType::F32, &Device::Cpu)?;
/// assert_eq!(m.to_vec2::<f32>()?, vec![vec![1., 0., 1.], vec![0., 1., 0.], vec![1., 0., 1.]]);
/// # Ok::<(), medprob_losses::LossError>(())
/// ```
pub fn from_keys<K: Eq + Hash>(keys: &[K], dtype: DType, device: &Device) -> Result<Tensor> {
    let mut ids: HashMap<&K, usize> = HashMap::new();
    let group: Vec<usize> = keys
        .iter()
        .map(|k| {
            let next = ids.len();
            *ids.entry(k).or_insert(next)
        })
        .collect();
    let n = keys.len();
    let data: Vec<f32> = (0..n * n)
        .map(|ij| (group[ij / n] == group[ij % n]) as u8 as f32)
        .collect();
    Ok(Tensor::from_vec(data, (n, n), device)?.to_dtype(dtype)?)
}

/// The one-to-one targets, the identity `[N, N]`.
pub fn identity(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(Tensor::eye(n, dtype, device)?)
}
