//! Input checks shared by the metrics: each names the argument and the index at fault.

use crate::error::{MetricsError, Result};

/// `got` entries where `expected` are needed.
pub(crate) fn len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected != got {
        return Err(MetricsError::Length {
            what,
            detail: format!("{got} entries for {expected} items"),
        });
    }
    Ok(())
}

/// Every value finite.
pub(crate) fn finite(what: &'static str, values: &[f64]) -> Result<()> {
    match values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        Some((index, &value)) => Err(MetricsError::BadValue {
            what,
            index,
            value,
            reason: "not finite",
        }),
        None => Ok(()),
    }
}

/// Per-query confidences (no NaN: they must be ordered) and losses in `[0, 1]`, one each.
pub(crate) fn confidence_and_loss(
    what: &'static str,
    confidence: &[f64],
    loss: &[f64],
) -> Result<()> {
    len(what, confidence.len(), loss.len())?;
    if confidence.is_empty() {
        return Err(MetricsError::Empty {
            what,
            detail: "no queries",
        });
    }
    if let Some((i, &c)) = confidence.iter().enumerate().find(|(_, c)| c.is_nan()) {
        return Err(MetricsError::BadValue {
            what,
            index: i,
            value: c,
            reason: "a NaN confidence cannot be ordered",
        });
    }
    if let Some((i, &l)) = loss
        .iter()
        .enumerate()
        .find(|(_, l)| !(0.0..=1.0).contains(*l))
    {
        return Err(MetricsError::BadValue {
            what,
            index: i,
            value: l,
            reason: "losses must lie in [0, 1]",
        });
    }
    Ok(())
}

/// Indices of `values` sorted (ascending, or descending when `descending`), and the ranges
/// of that order holding equal values: ties are what ranking metrics must treat alike.
pub(crate) fn tie_groups(
    values: &[f64],
    descending: bool,
) -> (Vec<usize>, Vec<std::ops::Range<usize>>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    if descending {
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    } else {
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    }
    let mut groups = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let v = values[order[start]];
        let end = start
            + order[start..]
                .iter()
                .take_while(|&&i| values[i] == v)
                .count();
        groups.push(start..end);
        start = end;
    }
    (order, groups)
}
