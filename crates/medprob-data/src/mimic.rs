//! MIMIC-CXR-JPG → study CSVs, one per official split.
//!
//! Inputs, in the layout PhysioNet distributes:
//!
//! * `mimic-cxr-2.0.0-metadata.csv(.gz)`: `dicom_id, subject_id, study_id, ViewPosition, …`;
//! * `mimic-cxr-2.0.0-split.csv(.gz)`: `dicom_id, study_id, subject_id, split`;
//! * `mimic-cxr-2.0.0-chexpert.csv(.gz)` (optional): `subject_id, study_id` and the 14
//!   CheXpert label columns (`1.0`, `0.0`, `-1.0` or blank);
//! * the reports, `files/pXX/pXXXXXXXX/sXXXXXXXX.txt` (from `mimic-cxr-reports`), split into
//!   FINDINGS and IMPRESSION by [`crate::sections`];
//! * images are referred to as `files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg`, relative to
//!   the image root you give the loader.
//!
//! Every study of the metadata becomes a record; a study whose report file is missing keeps
//! empty sections and is listed in [`MimicCounts::missing_reports`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::record::{Label, Split, StudyRecord, CHEXPERT_LABELS};
use crate::sections::parse_report;
use crate::table::Table;

/// Where the MIMIC-CXR files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MimicInputs {
    /// `mimic-cxr-2.0.0-metadata.csv` or `.csv.gz`.
    pub metadata: PathBuf,
    /// `mimic-cxr-2.0.0-split.csv` or `.csv.gz`.
    pub split: PathBuf,
    /// `mimic-cxr-2.0.0-chexpert.csv` or `.csv.gz`, optional.
    pub chexpert: Option<PathBuf>,
    /// The folder that holds `files/pXX/…/sXXXXXXXX.txt` (the reports' `files` parent).
    pub reports_root: PathBuf,
}

/// What the converter found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MimicCounts {
    /// Studies per split name.
    pub per_split: BTreeMap<String, usize>,
    /// Images in all.
    pub images: usize,
    /// Studies with non-empty FINDINGS.
    pub with_findings: usize,
    /// Studies with non-empty IMPRESSION.
    pub with_impression: usize,
    /// Studies whose impression came from the report's last paragraph (no headers).
    pub impression_from_last_paragraph: usize,
    /// Studies without a report file (kept, with empty sections).
    pub missing_reports: Vec<String>,
}

/// Convert; returns the studies of each split (sorted by subject, then study) and counts.
pub fn convert(inputs: &MimicInputs) -> Result<(BTreeMap<Split, Vec<StudyRecord>>, MimicCounts)> {
    // study_id → (subject_id, images [(dicom, view)])
    let mut studies: BTreeMap<(u64, u64), Vec<(String, String)>> = BTreeMap::new();
    let t = Table::open(&inputs.metadata)?;
    let (c_dicom, c_subject, c_study, c_view) = (
        t.column("dicom_id")?,
        t.column("subject_id")?,
        t.column("study_id")?,
        t.column("ViewPosition")?,
    );
    t.for_each(|row| {
        let subject = number(row, c_subject)?;
        let study = number(row, c_study)?;
        studies
            .entry((subject, study))
            .or_default()
            .push((row.get(c_dicom).to_string(), row.get(c_view).to_string()));
        Ok(())
    })?;

    let mut split_of: BTreeMap<u64, Split> = BTreeMap::new();
    let t = Table::open(&inputs.split)?;
    let (c_study, c_split) = (t.column("study_id")?, t.column("split")?);
    t.for_each(|row| {
        let study = number(row, c_study)?;
        let s = Split::parse(row.get(c_split))
            .ok_or_else(|| row.error(c_split, format!("unknown split {:?}", row.get(c_split))))?;
        match split_of.insert(study, s) {
            Some(prev) if prev != s => Err(row.error(
                c_split,
                format!("study {study} is in both {} and {}", prev.name(), s.name()),
            )),
            _ => Ok(()),
        }
    })?;

    let mut labels_of: BTreeMap<u64, [Label; 14]> = BTreeMap::new();
    if let Some(path) = &inputs.chexpert {
        let t = Table::open(path)?;
        let c_study = t.column("study_id")?;
        let cols: Vec<Option<usize>> = CHEXPERT_LABELS
            .iter()
            .map(|l| t.optional_column(l))
            .collect();
        t.for_each(|row| {
            let mut labels = [Label::Blank; 14];
            for (k, c) in cols.iter().enumerate() {
                if let Some(c) = *c {
                    labels[k] = match row.get(c) {
                        "" => Label::Blank,
                        "1" | "1.0" => Label::Positive,
                        "0" | "0.0" => Label::Negative,
                        "-1" | "-1.0" => Label::Uncertain,
                        v => {
                            return Err(
                                row.error(c, format!("label value {v:?} is not 1, 0, -1 or blank"))
                            )
                        }
                    };
                }
            }
            labels_of.insert(number(row, c_study)?, labels);
            Ok(())
        })?;
    }

    let mut out: BTreeMap<Split, Vec<StudyRecord>> = BTreeMap::new();
    let mut counts = MimicCounts::default();
    for ((subject, study), images) in studies {
        let split = *split_of.get(&study).ok_or_else(|| DataError::BadStudy {
            study_id: study.to_string(),
            reason: format!("not listed in {}", inputs.split.display()),
        })?;
        let sub = subject.to_string();
        let dir = format!("files/p{}/p{sub}", &sub[..2.min(sub.len())]);
        let report = inputs.reports_root.join(&dir).join(format!("s{study}.txt"));
        let mut record = StudyRecord::new(study.to_string());
        match std::fs::read_to_string(&report) {
            Ok(text) => {
                let s = parse_report(&text);
                counts.impression_from_last_paragraph += s.from_last_paragraph as usize;
                record.findings = s.findings;
                record.impression = s.impression;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                counts.missing_reports.push(study.to_string());
            }
            Err(e) => return Err(DataError::io(report, e)),
        }
        counts.images += images.len();
        for (dicom, view) in images {
            record
                .image_paths
                .push(PathBuf::from(format!("{dir}/s{study}/{dicom}.jpg")));
            record.view_names.push(view);
        }
        record.patient_id = Some(subject.to_string());
        record.split = Some(split);
        // With a label file, a study it does not list has all labels blank.
        record.labels = inputs
            .chexpert
            .as_ref()
            .map(|_| labels_of.get(&study).copied().unwrap_or([Label::Blank; 14]));
        counts.with_findings += !record.findings.is_empty() as usize;
        counts.with_impression += !record.impression.is_empty() as usize;
        *counts
            .per_split
            .entry(split.name().to_string())
            .or_default() += 1;
        out.entry(split).or_default().push(record);
    }
    Ok((out, counts))
}

/// Write `train.csv`, `validate.csv` and `test.csv` into `dir` (atomically each).
pub fn write_split_csvs(
    dir: &Path,
    studies: &BTreeMap<Split, Vec<StudyRecord>>,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (split, records) in studies {
        let path = dir.join(format!("{}.csv", split.name()));
        crate::record::write_studies(&path, records)?;
        written.push(path);
    }
    Ok(written)
}

fn number(row: &crate::table::Row<'_>, column: usize) -> Result<u64> {
    let v = row.get(column);
    v.trim_start_matches(['s', 'p'])
        .parse()
        .map_err(|_| row.error(column, format!("{v:?} is not a numeric id")))
}
