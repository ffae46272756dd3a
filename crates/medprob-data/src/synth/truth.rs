//! The hidden state of every SynthCXR study, written beside `studies.csv` as `state.jsonl`:
//! the ground truth that evaluation compares models against (which findings a study really
//! has, whether its report says so, its views and how the patient and the exposure look).
//!
//! It is for evaluation only. Training, model selection and retrieval read the CSV, never
//! this file, so the state can measure what the reports hide (omitted findings, dropped
//! FINDINGS sections) without leaking into what a model learns from.
//!
//! One JSON object per line, one line per study, in the CSV's order; the schema is
//! documented field by field in `docs/DATASET.md` and is stable: fields are only ever added,
//! and the reader ignores fields it does not know.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::state::{Finding, Severity, Side, Zone};
use super::SynthStudy;
use crate::error::{DataError, Result};
use crate::record::{Split, StudyRecord, CHEXPERT_LABELS};

pub use super::report::Reported;

/// The file name [`super::write_dataset`] gives the state file, beside `studies.csv`.
pub const TRUTH_FILE: &str = "state.jsonl";

/// One present finding of the hidden state, and how the report conveys it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FindingTruth {
    /// Which finding.
    pub finding: Finding,
    /// Side, for lateralised findings; `None` (null) otherwise.
    pub side: Option<Side>,
    /// Severity: the report's size/degree word and how strongly the image draws it.
    pub severity: Severity,
    /// Lung zone, for focal lung findings; `None` (null) otherwise.
    pub zone: Option<Zone>,
    /// Drawn faintly (at 40 % strength): harder to see than the report suggests.
    pub subtle: bool,
    /// Whether the written text states it, names it only in an impression-only report, or
    /// leaves it out.
    pub reported: Reported,
}

/// One line of `state.jsonl`: the hidden state of one study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyTruth {
    /// The study, as in the CSV.
    pub study_id: String,
    /// The patient, as in the CSV.
    pub patient_id: Option<String>,
    /// The split, as in the CSV (`train`, `validate`, `test`).
    pub split: Option<Split>,
    /// Present findings (support devices included), in [`Finding::ALL`] order.
    pub findings: Vec<FindingTruth>,
    /// Present findings the written text does not contain ([`Reported::Omitted`]).
    pub omitted: Vec<Finding>,
    /// Findings the report hedges on. The generator never hedges, so this is always empty;
    /// it is part of the schema so that generators or datasets that do can say so.
    pub hedged: Vec<Finding>,
    /// The report has no FINDINGS section (drawn at the impression-only rate).
    pub impression_only: bool,
    /// The view names written to the CSV, one per image (`PA` or `AP`, then `LATERAL`).
    pub views: Vec<String>,
    /// Portable AP film rather than PA.
    pub ap: bool,
    /// Body width relative to average.
    pub body_scale: f32,
    /// Rotation of the patient in degrees.
    pub rotation: f32,
    /// Exposure (brightness) factor.
    pub exposure: f32,
    /// Standard deviation of the pixel noise the images were rendered with.
    pub noise: f32,
}

/// The JSON name of a finding (its serde name), as `state.jsonl` and [`StudyTruth::state_key`]
/// write it.
pub fn finding_name(f: Finding) -> &'static str {
    match f {
        Finding::EnlargedCardiomediastinum => "enlarged_cardiomediastinum",
        Finding::Cardiomegaly => "cardiomegaly",
        Finding::LungLesion => "lung_lesion",
        Finding::LungOpacity => "lung_opacity",
        Finding::Edema => "edema",
        Finding::Consolidation => "consolidation",
        Finding::Pneumonia => "pneumonia",
        Finding::Atelectasis => "atelectasis",
        Finding::Pneumothorax => "pneumothorax",
        Finding::PleuralEffusion => "pleural_effusion",
        Finding::PleuralOther => "pleural_other",
        Finding::Fracture => "fracture",
        Finding::SupportDevices => "support_devices",
    }
}

impl StudyTruth {
    /// The canonical key of "state agreement": two studies agree when they have the same
    /// findings on the same sides. The key is the `finding` or `finding:side` names of the
    /// present findings (support devices included; severity, zone and subtlety ignored),
    /// sorted as strings and joined by `|`, e.g. `cardiomegaly|pleural_effusion:left`;
    /// `""` for a study with no findings.
    pub fn state_key(&self) -> String {
        let mut parts: Vec<String> = self
            .findings
            .iter()
            .map(|p| match p.side {
                Some(s) => format!("{}:{}", finding_name(p.finding), s.word()),
                None => finding_name(p.finding).to_string(),
            })
            .collect();
        parts.sort();
        parts.dedup();
        parts.join("|")
    }

    /// Bit `c` set when `CHEXPERT_LABELS[c]` is present in the hidden state; the No Finding
    /// bit is set when no pathology is (support devices allowed), whatever the report says.
    pub fn finding_mask(&self) -> u32 {
        let bit = |name: &str| {
            CHEXPERT_LABELS
                .iter()
                .position(|n| *n == name)
                .map_or(0, |c| 1u32 << c)
        };
        let mut mask = 0;
        for p in &self.findings {
            mask |= bit(p.finding.chexpert_name());
        }
        if self
            .findings
            .iter()
            .all(|p| p.finding == Finding::SupportDevices)
        {
            mask |= bit("No Finding");
        }
        mask
    }
}

/// The truth line of a generated study. `views` are the view names written to the CSV and
/// `noise` the pixel noise the images were rendered with (the config's), since neither is
/// part of the state itself.
pub fn truth_of(study: &SynthStudy, views: &[String], noise: f32) -> StudyTruth {
    let reported = |f: Finding| {
        study
            .reported
            .iter()
            .find(|(g, _)| *g == f)
            .map_or(Reported::Omitted, |(_, how)| *how)
    };
    let findings: Vec<FindingTruth> = study
        .state
        .findings
        .iter()
        .map(|p| FindingTruth {
            finding: p.finding,
            side: p.side,
            severity: p.severity,
            zone: p.zone,
            subtle: p.subtle,
            reported: reported(p.finding),
        })
        .collect();
    StudyTruth {
        study_id: study.record.study_id.clone(),
        patient_id: study.record.patient_id.clone(),
        split: study.record.split,
        omitted: findings
            .iter()
            .filter(|p| p.reported == Reported::Omitted)
            .map(|p| p.finding)
            .collect(),
        findings,
        hedged: Vec::new(),
        impression_only: study.impression_only,
        views: views.to_vec(),
        ap: study.state.ap,
        body_scale: study.state.body_scale,
        rotation: study.state.rotation,
        exposure: study.state.exposure,
        noise,
    }
}

/// Write `truths` to `path` as JSON lines, atomically (a reader never sees half a file).
pub fn write_truth(path: &Path, truths: &[StudyTruth]) -> Result<()> {
    let mut out = Vec::new();
    for t in truths {
        serde_json::to_writer(&mut out, t).map_err(|e| DataError::BadStudy {
            study_id: t.study_id.clone(),
            reason: format!("cannot serialise its state: {e}"),
        })?;
        out.push(b'\n');
    }
    crate::record::write_atomic(path, &out)
}

/// Read a state file and return the truths of `studies`, in their order. Lines of studies
/// not in `studies` are ignored, so a caller may pass one split only; blank lines are
/// skipped. Errors name the file, the 1-based line and the study: a malformed line, a study
/// on two lines, and a study of `studies` without a line (the file belongs to another CSV).
pub fn read_truth(path: &Path, studies: &[StudyRecord]) -> Result<Vec<StudyTruth>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let bad = |line: usize, study_id: Option<String>, reason: String| DataError::State {
        path: path.to_path_buf(),
        line: line as u64,
        study_id,
        reason,
    };
    let mut by_id: HashMap<String, (usize, StudyTruth)> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let truth: StudyTruth = serde_json::from_str(raw).map_err(|e| {
            // Name the study when the line is JSON with a study id, however broken the rest.
            let id = serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| v.get("study_id")?.as_str().map(str::to_string));
            bad(line, id, format!("malformed state: {e}"))
        })?;
        let id = truth.study_id.clone();
        if let Some((first, _)) = by_id.get(&id) {
            return Err(bad(
                line,
                Some(id),
                format!("duplicate state (first on line {first})"),
            ));
        }
        by_id.insert(id, (line, truth));
    }
    studies
        .iter()
        .map(|s| {
            by_id
                .remove(&s.study_id)
                .map(|(_, t)| t)
                .ok_or_else(|| DataError::StateMismatch {
                    path: path.to_path_buf(),
                    study_id: s.study_id.clone(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{generate_reports, write_dataset, SynthConfig};

    fn sample() -> Vec<StudyTruth> {
        generate_reports(&SynthConfig {
            studies: 40,
            ..Default::default()
        })
        .iter()
        .map(|s| truth_of(s, &["PA".to_string()], 0.02))
        .collect()
    }

    #[test]
    fn finding_names_are_the_serde_names() {
        for f in Finding::ALL {
            assert_eq!(
                serde_json::to_value(f).unwrap(),
                serde_json::Value::String(finding_name(f).into())
            );
        }
    }

    #[test]
    fn read_truth_round_trips_write_dataset() {
        let cfg = SynthConfig {
            studies: 30,
            image_size: 32,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let summary = write_dataset(&cfg, dir.path()).unwrap();
        let studies = crate::read_studies(&summary.csv).unwrap();
        let path = dir.path().join(TRUTH_FILE);
        let truths = read_truth(&path, &studies).unwrap();
        assert_eq!(truths.len(), studies.len());
        let generated = generate_reports(&cfg);
        for ((t, s), g) in truths.iter().zip(&studies).zip(&generated) {
            assert_eq!(t.study_id, s.study_id);
            assert_eq!((&t.patient_id, t.split), (&s.patient_id, s.split));
            assert_eq!(t.views, s.view_names);
            assert_eq!(t, &truth_of(g, &s.view_names, cfg.noise));
            assert!(t.hedged.is_empty());
            assert_eq!(t.impression_only, g.impression_only);
            assert!(!t.impression_only || s.findings.is_empty());
        }
        // Lines are in CSV order, and a subset (one split) reads back in its own order.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), studies.len());
        let mut subset: Vec<StudyRecord> = studies.iter().skip(3).step_by(4).cloned().collect();
        subset.reverse();
        let part = read_truth(&path, &subset).unwrap();
        assert!(part
            .iter()
            .zip(&subset)
            .all(|(t, s)| t.study_id == s.study_id));
    }

    #[test]
    fn the_line_has_the_documented_schema() {
        let t = &sample()[1];
        let v: serde_json::Value = serde_json::to_value(t).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut want = vec![
            "study_id",
            "patient_id",
            "split",
            "findings",
            "omitted",
            "hedged",
            "impression_only",
            "views",
            "ap",
            "body_scale",
            "rotation",
            "exposure",
            "noise",
        ];
        let mut got = keys.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        let line = serde_json::to_string(&StudyTruth {
            findings: vec![
                FindingTruth {
                    finding: Finding::Atelectasis,
                    side: Some(Side::Right),
                    severity: Severity::Mild,
                    zone: Some(Zone::Lower),
                    subtle: false,
                    reported: Reported::Omitted,
                },
                FindingTruth {
                    finding: Finding::PleuralEffusion,
                    side: Some(Side::Left),
                    severity: Severity::Mild,
                    zone: None,
                    subtle: false,
                    reported: Reported::Stated,
                },
            ],
            omitted: vec![Finding::Atelectasis],
            ..t.clone()
        })
        .unwrap();
        assert!(
            line.contains(r#""findings":[{"finding":"atelectasis","side":"right","severity":"mild","zone":"lower","subtle":false,"reported":"omitted"},{"finding":"pleural_effusion","side":"left","severity":"mild","zone":null,"subtle":false,"reported":"stated"}],"omitted":["atelectasis"],"hedged":[]"#),
            "{line}"
        );
    }

    #[test]
    fn state_key_and_finding_mask() {
        let mut t = sample()[0].clone();
        let f = |finding, side| FindingTruth {
            finding,
            side,
            severity: Severity::Moderate,
            zone: None,
            subtle: false,
            reported: Reported::Stated,
        };
        t.findings = vec![];
        assert_eq!(t.state_key(), "");
        let nf = 1
            << CHEXPERT_LABELS
                .iter()
                .position(|n| *n == "No Finding")
                .unwrap();
        assert_eq!(t.finding_mask(), nf);
        t.findings = vec![f(Finding::SupportDevices, None)];
        assert_eq!(t.state_key(), "support_devices");
        assert_eq!(t.finding_mask(), nf | 1 << 13);
        t.findings = vec![
            f(Finding::Cardiomegaly, None),
            f(Finding::PleuralEffusion, Some(Side::Left)),
            f(Finding::SupportDevices, None),
        ];
        assert_eq!(
            t.state_key(),
            "cardiomegaly|pleural_effusion:left|support_devices"
        );
        assert_eq!(t.finding_mask(), 1 << 1 | 1 << 9 | 1 << 13);
        // The same findings on another side do not agree.
        let mut u = t.clone();
        u.findings[1].side = Some(Side::Right);
        assert_ne!(t.state_key(), u.state_key());
        // Severity, zone and subtlety do not change the key.
        u.findings[1].side = Some(Side::Left);
        u.findings[0].severity = Severity::Severe;
        u.findings[0].subtle = true;
        assert_eq!(t.state_key(), u.state_key());
    }

    fn records(ids: &[&str]) -> Vec<StudyRecord> {
        ids.iter().map(|id| StudyRecord::new(*id)).collect()
    }

    #[test]
    fn a_malformed_line_names_file_line_and_study() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TRUTH_FILE);
        let truths = sample();
        write_truth(&path, &truths[..3]).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        let second = text.lines().nth(1).unwrap().to_string();
        let broken = second.replace("\"ap\":", "\"ap_\":");
        text = text.replace(&second, &broken);
        std::fs::write(&path, &text).unwrap();
        let ids: Vec<&str> = truths[..3].iter().map(|t| t.study_id.as_str()).collect();
        let err = read_truth(&path, &records(&ids)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::State { line: 2, .. }), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(":2:"), "{msg}");
        assert!(msg.contains(ids[1]), "{msg}");
        // Not JSON at all: the file and line, no study.
        std::fs::write(
            &path,
            format!("{}\n{{not json\n", text.lines().next().unwrap()),
        )
        .unwrap();
        let msg = read_truth(&path, &records(&ids[..1]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&format!("{}:2:", path.display())), "{msg}");
    }

    #[test]
    fn a_duplicate_study_names_both_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TRUTH_FILE);
        let truths = sample();
        let lines = vec![truths[0].clone(), truths[1].clone(), truths[0].clone()];
        write_truth(&path, &lines).unwrap();
        let err = read_truth(&path, &records(&[&truths[1].study_id]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{}:3:", path.display())), "{err}");
        assert!(err.contains(&truths[0].study_id), "{err}");
        assert!(err.contains("duplicate") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn a_study_without_state_is_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TRUTH_FILE);
        let truths = sample();
        write_truth(&path, &truths[..2]).unwrap();
        let err = read_truth(&path, &records(&[&truths[0].study_id, "synth999999"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "state file {} does not match the CSV: study synth999999 has no state",
                path.display()
            )
        );
        // A missing file is an I/O error naming it.
        let gone = dir.path().join("nothing.jsonl");
        let err = read_truth(&gone, &[]).unwrap_err().to_string();
        assert!(err.contains("nothing.jsonl"), "{err}");
    }
}
