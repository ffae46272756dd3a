//! One chest X-ray study: its images and view names, its report sections, and optionally
//! its patient, split and CheXpert labels; and the study CSV that holds many of them.
//!
//! The CSV schema is the MedProbCLIP reference's,
//! `study_id,image_paths,view_names,findings,impression`, with `;` separating the items of
//! the two list columns, plus optional columns `patient_id`, `split` and the 14 CheXpert
//! label columns (values `1`, `0`, `-1` or blank). Column order is free; unknown columns are
//! ignored.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::limits::{InputLimits, LineLimited, LineTooLong};

/// The 14 CheXpert labels, in the column order of MIMIC-CXR's `-chexpert.csv`.
pub const CHEXPERT_LABELS: [&str; 14] = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
];

/// The required columns, in the order the writer emits them.
pub const REQUIRED_COLUMNS: [&str; 5] = [
    "study_id",
    "image_paths",
    "view_names",
    "findings",
    "impression",
];

/// Which group a radiograph's view belongs to (SPEC §5): training pairs two images from
/// different groups when it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewKind {
    /// PA or AP.
    Frontal,
    /// LATERAL, LL or RL.
    Lateral,
    /// Anything else (or unknown).
    Other,
}

impl ViewKind {
    /// Classify a view-position string (`PA`, `AP`, `LATERAL`, `LL`, `RL`, case-insensitive;
    /// `AP AXIAL` and the like count as other).
    pub fn from_view_name(name: &str) -> Self {
        match name.trim().to_ascii_uppercase().as_str() {
            "PA" | "AP" => ViewKind::Frontal,
            "LATERAL" | "LL" | "RL" | "LAT" => ViewKind::Lateral,
            _ => ViewKind::Other,
        }
    }
}

/// A CheXpert label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// `1`
    Positive,
    /// `0`
    Negative,
    /// `-1`
    Uncertain,
    /// blank: not mentioned
    Blank,
}

impl Label {
    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "" => Some(Label::Blank),
            "1" | "1.0" => Some(Label::Positive),
            "0" | "0.0" => Some(Label::Negative),
            "-1" | "-1.0" => Some(Label::Uncertain),
            _ => None,
        }
    }

    fn as_csv(self) -> &'static str {
        match self {
            Label::Positive => "1",
            Label::Negative => "0",
            Label::Uncertain => "-1",
            Label::Blank => "",
        }
    }
}

/// Dataset split of a study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Training.
    Train,
    /// Validation (MIMIC calls it "validate").
    Validate,
    /// Test.
    Test,
}

impl Split {
    /// `train`, `validate` (or `val`, `valid`, `validation`), `test`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Some(Split::Train),
            "validate" | "val" | "valid" | "validation" => Some(Split::Validate),
            "test" => Some(Split::Test),
            _ => None,
        }
    }

    /// The name written to CSVs.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validate => "validate",
            Split::Test => "test",
        }
    }
}

/// One study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyRecord {
    /// Unique study identifier.
    pub study_id: String,
    /// Image paths, relative to an image root or absolute.
    pub image_paths: Vec<PathBuf>,
    /// View position of each image (same length as `image_paths`; empty strings allowed).
    pub view_names: Vec<String>,
    /// FINDINGS section (may be empty).
    pub findings: String,
    /// IMPRESSION section (may be empty).
    pub impression: String,
    /// Patient identifier, when known.
    pub patient_id: Option<String>,
    /// Dataset split, when known.
    pub split: Option<Split>,
    /// The 14 CheXpert labels in [`CHEXPERT_LABELS`] order, when known.
    pub labels: Option<[Label; 14]>,
}

impl StudyRecord {
    /// A study with no patient, split or labels.
    pub fn new(study_id: impl Into<String>) -> Self {
        Self {
            study_id: study_id.into(),
            image_paths: Vec::new(),
            view_names: Vec::new(),
            findings: String::new(),
            impression: String::new(),
            patient_id: None,
            split: None,
            labels: None,
        }
    }

    /// The view group of each image.
    pub fn view_kinds(&self) -> Vec<ViewKind> {
        self.view_names
            .iter()
            .map(|v| ViewKind::from_view_name(v))
            .collect()
    }
}

/// Read a study CSV. Errors name the file, the line and the column.
pub fn read_studies(path: &Path) -> Result<Vec<StudyRecord>> {
    read_studies_limited(path, &InputLimits::default())
}

/// [`read_studies`] under explicit [`InputLimits`] (line length, report length).
pub fn read_studies_limited(path: &Path, limits: &InputLimits) -> Result<Vec<StudyRecord>> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    read_studies_from_limited(file, path, limits)
}

/// Read a study CSV from any reader; `path` is used in error messages only.
pub fn read_studies_from<R: std::io::Read>(reader: R, path: &Path) -> Result<Vec<StudyRecord>> {
    read_studies_from_limited(reader, path, &InputLimits::default())
}

/// [`read_studies_from`] under explicit [`InputLimits`].
pub fn read_studies_from_limited<R: std::io::Read>(
    reader: R,
    path: &Path,
    limits: &InputLimits,
) -> Result<Vec<StudyRecord>> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(LineLimited::new(reader, limits.max_csv_line_bytes));
    let csv_err = |e: csv::Error| {
        if let csv::ErrorKind::Io(io) = e.kind() {
            if let Some(long) = LineTooLong::from_io(io) {
                return DataError::Csv {
                    path: path.to_path_buf(),
                    line: long.line,
                    column: String::new(),
                    reason: long.to_string(),
                };
            }
        }
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        DataError::Csv {
            path: path.to_path_buf(),
            line,
            column: String::new(),
            reason: e.to_string(),
        }
    };
    let headers = rdr.headers().map_err(csv_err)?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let mut required = [0usize; 5];
    for (slot, name) in required.iter_mut().zip(REQUIRED_COLUMNS) {
        *slot = col(name).ok_or_else(|| DataError::MissingColumn {
            path: path.to_path_buf(),
            column: name.to_string(),
            found: headers.iter().collect::<Vec<_>>().join(","),
        })?;
    }
    let [c_id, c_img, c_view, c_find, c_imp] = required;
    let c_patient = col("patient_id");
    let c_split = col("split");
    let label_cols: Vec<Option<usize>> = CHEXPERT_LABELS.iter().map(|l| col(l)).collect();
    let has_labels = label_cols.iter().any(|c| c.is_some());

    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for row in rdr.records() {
        let row = row.map_err(csv_err)?;
        let line = row.position().map(|p| p.line()).unwrap_or(0);
        let bad = |column: &str, reason: String| DataError::Csv {
            path: path.to_path_buf(),
            line,
            column: column.to_string(),
            reason,
        };
        let field = |i: usize| row.get(i).unwrap_or("");
        let study_id = field(c_id).trim().to_string();
        if study_id.is_empty() {
            return Err(bad("study_id", "empty study id".into()));
        }
        if !seen.insert(study_id.clone()) {
            return Err(bad("study_id", format!("duplicate study id {study_id:?}")));
        }
        let report_chars = field(c_find).chars().count() + field(c_imp).chars().count();
        if report_chars > limits.max_report_chars {
            return Err(bad(
                "findings",
                format!(
                    "study {study_id}: report of {report_chars} characters exceeds limits.max_report_chars = {}",
                    limits.max_report_chars
                ),
            ));
        }
        let images = split_list(field(c_img));
        let mut views = split_list(field(c_view));
        if views.is_empty() && !images.is_empty() {
            views = vec![String::new(); images.len()];
        }
        if views.len() != images.len() {
            return Err(bad(
                "view_names",
                format!(
                    "study {study_id}: {} image paths but {} view names",
                    images.len(),
                    views.len()
                ),
            ));
        }
        let split = match c_split.map(field).map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(Split::parse(s).ok_or_else(|| {
                bad(
                    "split",
                    format!("unknown split {s:?} (train, validate, test)"),
                )
            })?),
        };
        let labels = if has_labels {
            let mut labels = [Label::Blank; 14];
            for (k, c) in label_cols.iter().enumerate() {
                if let Some(c) = c {
                    let v = field(*c);
                    labels[k] = Label::parse(v).ok_or_else(|| {
                        bad(
                            CHEXPERT_LABELS[k],
                            format!("label value {v:?} is not 1, 0, -1 or blank"),
                        )
                    })?;
                }
            }
            Some(labels)
        } else {
            None
        };
        out.push(StudyRecord {
            study_id,
            image_paths: images.into_iter().map(PathBuf::from).collect(),
            view_names: views,
            findings: field(c_find).trim().to_string(),
            impression: field(c_imp).trim().to_string(),
            patient_id: c_patient
                .map(field)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            split,
            labels,
        });
    }
    Ok(out)
}

fn split_list(s: &str) -> Vec<String> {
    if s.trim().is_empty() {
        return Vec::new();
    }
    s.split(';').map(|x| x.trim().to_string()).collect()
}

/// Write a study CSV atomically: to a temporary file beside `path`, then renamed over it,
/// so an interrupted write never leaves a half-written file where a good one was.
///
/// Optional columns are written when any record has them.
pub fn write_studies(path: &Path, studies: &[StudyRecord]) -> Result<()> {
    let mut buf = Vec::new();
    write_studies_to(&mut buf, studies).map_err(|e| DataError::io(path, e))?;
    write_atomic(path, &buf)
}

/// Write a study CSV to any writer.
pub fn write_studies_to<W: Write>(writer: W, studies: &[StudyRecord]) -> std::io::Result<()> {
    let with_patient = studies.iter().any(|s| s.patient_id.is_some());
    let with_split = studies.iter().any(|s| s.split.is_some());
    let with_labels = studies.iter().any(|s| s.labels.is_some());
    let mut w = csv::Writer::from_writer(writer);
    let mut header: Vec<&str> = REQUIRED_COLUMNS.to_vec();
    if with_patient {
        header.push("patient_id");
    }
    if with_split {
        header.push("split");
    }
    if with_labels {
        header.extend(CHEXPERT_LABELS);
    }
    w.write_record(&header)?;
    for s in studies {
        let mut row: Vec<String> = vec![
            s.study_id.clone(),
            s.image_paths
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(";"),
            s.view_names.join(";"),
            s.findings.clone(),
            s.impression.clone(),
        ];
        if with_patient {
            row.push(s.patient_id.clone().unwrap_or_default());
        }
        if with_split {
            row.push(s.split.map(|x| x.name().to_string()).unwrap_or_default());
        }
        if with_labels {
            let labels = s.labels.unwrap_or([Label::Blank; 14]);
            row.extend(labels.iter().map(|l| l.as_csv().to_string()));
        }
        w.write_record(&row)?;
    }
    w.flush()
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename.
/// (The same routine as `medprob_core::fs::write_atomic`, kept here because the data crate
/// depends on none of ours.)
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DataError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &str) -> Result<Vec<StudyRecord>> {
        read_studies_from(s.as_bytes(), Path::new("studies.csv"))
    }

    #[test]
    fn reads_the_reference_schema() {
        let s = read(
            "study_id,image_paths,view_names,findings,impression\n\
             s1,a.png;b.png,PA;LATERAL,Clear lungs.,No acute process.\n\
             s2,c.png,AP,,\"Small effusion, left.\"\n",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].image_paths,
            vec![PathBuf::from("a.png"), PathBuf::from("b.png")]
        );
        assert_eq!(
            s[0].view_kinds(),
            vec![ViewKind::Frontal, ViewKind::Lateral]
        );
        assert_eq!(s[1].impression, "Small effusion, left.");
        assert_eq!(s[1].findings, "");
        assert!(s[0].labels.is_none() && s[0].split.is_none());
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = read("study_id,image_paths,view_names,findings\ns1,a.png,PA,x\n").unwrap_err();
        assert!(
            e.to_string().contains("missing column \"impression\""),
            "{e}"
        );
        let e = read(
            "study_id,image_paths,view_names,findings,impression\ns1,a.png,PA,x,y\ns2,a.png;b.png,PA,x,y\n",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("studies.csv:3:") && msg.contains("view_names") && msg.contains("s2"),
            "{msg}"
        );
        let e =
            read("study_id,image_paths,view_names,findings,impression,Edema\ns1,a.png,PA,x,y,2\n")
                .unwrap_err();
        assert!(
            e.to_string().contains("studies.csv:2: column \"Edema\""),
            "{e}"
        );
        let e = read(
            "study_id,image_paths,view_names,findings,impression,split\ns1,a.png,PA,x,y,dev\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown split \"dev\""), "{e}");
        let e =
            read("study_id,image_paths,view_names,findings,impression\ns1,a,PA,x,y\ns1,b,PA,x,y\n")
                .unwrap_err();
        assert!(e.to_string().contains("duplicate study id"), "{e}");
        let e =
            read("study_id,image_paths,view_names,findings,impression\ns1,a,PA,x\n").unwrap_err();
        assert!(e.to_string().contains("studies.csv:2"), "{e}");
    }

    #[test]
    fn round_trips_with_optional_columns() {
        let mut a = StudyRecord::new("s1");
        a.image_paths = vec!["x/1.png".into(), "x/2.png".into()];
        a.view_names = vec!["PA".into(), "LL".into()];
        a.findings = "Heart size normal; lungs clear.".into();
        a.impression = "No \"acute\" disease,\nstable.".into();
        a.patient_id = Some("p7".into());
        a.split = Some(Split::Validate);
        let mut labels = [Label::Blank; 14];
        labels[1] = Label::Positive;
        labels[8] = Label::Negative;
        labels[13] = Label::Uncertain;
        a.labels = Some(labels);
        let b = StudyRecord::new("s2");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/studies.csv");
        write_studies(&path, &[a.clone(), b.clone()]).unwrap();
        let back = read_studies(&path).unwrap();
        let mut b2 = b;
        b2.labels = Some([Label::Blank; 14]);
        assert_eq!(back, vec![a, b2]);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn missing_file_is_named() {
        let e = read_studies(Path::new("/nonexistent/studies.csv")).unwrap_err();
        assert!(
            e.to_string().starts_with("/nonexistent/studies.csv:"),
            "{e}"
        );
    }

    #[test]
    fn report_and_line_limits_name_the_study_and_line() {
        let header = "study_id,image_paths,view_names,findings,impression\n";
        let csv = format!(
            "{header}s1,a.png,PA,Clear.,Normal.\ns2,b.png,PA,{},Normal.\n",
            "x".repeat(500)
        );
        let limits = InputLimits {
            max_report_chars: 100,
            ..InputLimits::default()
        };
        let path = Path::new("studies.csv");
        let e = read_studies_from_limited(csv.as_bytes(), path, &limits)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("studies.csv:3")
                && e.contains("study s2")
                && e.contains("max_report_chars = 100"),
            "{e}"
        );
        let limits = InputLimits {
            max_csv_line_bytes: 200,
            ..InputLimits::default()
        };
        let e = read_studies_from_limited(csv.as_bytes(), path, &limits)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("max_csv_line_bytes"),
            "{e}"
        );
        assert_eq!(read_studies_from(csv.as_bytes(), path).unwrap().len(), 2);
    }
}
