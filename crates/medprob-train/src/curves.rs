//! Training curves of a run, drawn from its `log.jsonl`: the loss and its parts per step
//! (a moving average, so the trend shows through the batch noise), and validation RSUM and
//! plausible P@1 per epoch.

use std::path::{Path, PathBuf};

use medprob_metrics::plot::{line_chart_grid, LineChart, Series};

use crate::error::{Result, TrainError};

/// Steps per moving-average window of the loss panel.
pub const SMOOTHING: usize = 25;

/// The loss parts drawn (the log's `parts` keys), with their legend names.
const PARTS: [(&str, &str); 6] = [
    ("total", "total"),
    ("inter", "image–text"),
    ("intra_image", "image–image"),
    ("intra_text", "text–text"),
    ("pseudo", "pseudo-positives"),
    ("vib", "VIB"),
];

/// What a run's log holds for the curves.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Curves {
    /// Per loss part: `(step, value)`.
    pub parts: Vec<(String, Vec<(f64, f64)>)>,
    /// `(epoch, validation RSUM)`.
    pub rsum: Vec<(f64, f64)>,
    /// `(epoch, plausible P@1)` image → report.
    pub plausible_i2t: Vec<(f64, f64)>,
    /// `(epoch, plausible P@1)` report → image.
    pub plausible_t2i: Vec<(f64, f64)>,
}

/// Read the step and validation events of `log` (a run's `log.jsonl`). A line that is not
/// JSON is an error naming the file and the line; events of other kinds are skipped.
pub fn read_log(log: &Path) -> Result<Curves> {
    let text = std::fs::read_to_string(log).map_err(|e| TrainError::io(log, e))?;
    let mut c = Curves {
        parts: PARTS
            .iter()
            .map(|(_, name)| (name.to_string(), Vec::new()))
            .collect(),
        ..Curves::default()
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| TrainError::Input {
            path: log.to_path_buf(),
            reason: format!("line {}: {e}", i + 1),
        })?;
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        match v.get("event").and_then(|e| e.as_str()) {
            Some("step") => {
                let Some(step) = num("step") else { continue };
                for (k, (key, _)) in PARTS.iter().enumerate() {
                    if let Some(y) = v
                        .get("parts")
                        .and_then(|p| p.get(key))
                        .and_then(serde_json::Value::as_f64)
                    {
                        c.parts[k].1.push((step, y));
                    }
                }
            }
            Some("validation") => {
                let Some(epoch) = num("epoch") else { continue };
                if let Some(r) = num("rsum") {
                    c.rsum.push((epoch, r));
                }
                if let Some(p) = num("plausible_i2t_p1") {
                    c.plausible_i2t.push((epoch, p));
                }
                if let Some(p) = num("plausible_t2i_p1") {
                    c.plausible_t2i.push((epoch, p));
                }
            }
            _ => {}
        }
    }
    c.parts.retain(|(_, p)| !p.is_empty());
    Ok(c)
}

/// Trailing moving average over `window` points.
pub fn smooth(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let w = window.max(1);
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            sum += y;
            if i >= w {
                sum -= points[i - w].1;
            }
            (x, sum / (i + 1).min(w) as f64)
        })
        .collect()
}

/// Draw `<run>/curves.png` from `<run>/log.jsonl`; returns its path.
pub fn write_curves(run: &Path, title: &str) -> Result<PathBuf> {
    let c = read_log(&run.join("log.jsonl"))?;
    let path = run.join("curves.png");
    let series = |name: &str, points: Vec<(f64, f64)>| Series {
        name: name.to_string(),
        points,
    };
    let smoothed: Vec<Series> = c
        .parts
        .iter()
        .map(|(n, p)| series(n, smooth(p, SMOOTHING)))
        .collect();
    let panels = vec![
        LineChart {
            title: format!("loss per step (moving average of {SMOOTHING})"),
            x_label: "step".into(),
            y_label: "loss".into(),
            // The first steps' losses are many times the rest: the axis shows the part
            // after the first tenth of training (earlier points are clipped at the top).
            y_range: loss_range(&smoothed),
            series: smoothed,
            ..LineChart::default()
        },
        LineChart {
            title: "validation RSUM (instance, %)".into(),
            x_label: "epoch".into(),
            y_label: "RSUM".into(),
            series: vec![series("RSUM", c.rsum.clone())],
            ..LineChart::default()
        },
        LineChart {
            title: "validation plausible P@1".into(),
            x_label: "epoch".into(),
            y_label: "P@1".into(),
            y_range: Some((0.0, 1.0)),
            series: vec![
                series("image → report", c.plausible_i2t.clone()),
                series("report → image", c.plausible_t2i.clone()),
            ],
            ..LineChart::default()
        },
    ];
    line_chart_grid(&path, title, &panels, 3)?;
    Ok(path)
}

/// `0 … 1.2 ×` the largest value after the first tenth of each series (`None`: no data).
fn loss_range(series: &[Series]) -> Option<(f64, f64)> {
    let top = series
        .iter()
        .flat_map(|s| s.points[s.points.len() / 10..].iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    (top.is_finite() && top > 0.0).then_some((0.0, 1.2 * top))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_is_a_trailing_mean() {
        let p: Vec<(f64, f64)> = [1.0, 3.0, 5.0, 7.0]
            .iter()
            .enumerate()
            .map(|(i, &y)| (i as f64, y))
            .collect();
        assert_eq!(
            smooth(&p, 2),
            vec![(0.0, 1.0), (1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]
        );
    }

    #[test]
    fn the_loss_axis_leaves_out_the_first_tenth() {
        let points: Vec<(f64, f64)> = (0..20)
            .map(|i| (i as f64, if i < 2 { 80.0 } else { 2.0 + (i % 3) as f64 }))
            .collect();
        let s = [Series {
            name: "total".into(),
            points,
        }];
        assert_eq!(loss_range(&s), Some((0.0, 1.2 * 4.0)));
        assert_eq!(loss_range(&[]), None);
    }

    #[test]
    fn reads_steps_and_validations_and_names_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.jsonl");
        std::fs::write(
            &log,
            concat!(
                r#"{"event":"step","step":1,"parts":{"total":2.5,"inter":2.0}}"#,
                "\n",
                r#"{"event":"skipped_step","step":1}"#,
                "\n",
                r#"{"event":"validation","epoch":1,"rsum":120.0,"plausible_i2t_p1":0.25,"plausible_t2i_p1":null}"#,
                "\n"
            ),
        )
        .unwrap();
        let c = read_log(&log).unwrap();
        assert_eq!(c.parts.len(), 2);
        assert_eq!(c.parts[0], ("total".to_string(), vec![(1.0, 2.5)]));
        assert_eq!(c.parts[1], ("image–text".to_string(), vec![(1.0, 2.0)]));
        assert_eq!(c.rsum, vec![(1.0, 120.0)]);
        assert_eq!(c.plausible_i2t, vec![(1.0, 0.25)]);
        assert!(c.plausible_t2i.is_empty());
        let png = write_curves(dir.path(), "test run").unwrap();
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
        std::fs::write(&log, "{\"event\":\"step\"}\nnot json\n").unwrap();
        let e = read_log(&log).unwrap_err().to_string();
        assert!(e.contains("log.jsonl") && e.contains("line 2"), "{e}");
    }
}
