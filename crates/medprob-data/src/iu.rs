//! Indiana University chest X-ray collection (Open-i) → study records.
//!
//! Each report is an XML file (`ecgen-radiology/<n>.xml`) with `AbstractText` elements
//! labelled `FINDINGS` and `IMPRESSION`, and one `parentImage id="CXR<n>_IM-…"` per
//! radiograph. The reports may be read from a directory or straight from
//! `NLMCXR_reports.tgz`. Every report becomes a study — including those with empty sections
//! or no image: dropping them is the loader's decision (`on_bad_study`), not the
//! converter's. View positions are not in the XML; pass the projections CSV
//! (`filename`/`uid`, `projection`) when you have it.
//!
//! Labels come from the report's MeSH indexing (`<MeSH><major>…</major></MeSH>`), which
//! NLM's annotators assigned from the report text: [`mesh_labels`] maps the major terms to
//! the 14 CheXpert labels (a label a term names is positive, the others negative; a report
//! without indexing has no labels, which a study CSV stores as 14 blanks).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::record::{Label, StudyRecord, CHEXPERT_LABELS};

/// What the converter found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IuCounts {
    /// Reports read (= studies written).
    pub studies: usize,
    /// With non-empty FINDINGS.
    pub with_findings: usize,
    /// With non-empty IMPRESSION.
    pub with_impression: usize,
    /// With both.
    pub with_both: usize,
    /// With neither.
    pub with_neither: usize,
    /// Listing no image.
    pub without_image: usize,
}

impl IuCounts {
    fn of(studies: &[StudyRecord]) -> Self {
        let mut c = IuCounts {
            studies: studies.len(),
            ..Default::default()
        };
        for s in studies {
            let (f, i) = (!s.findings.is_empty(), !s.impression.is_empty());
            c.with_findings += f as usize;
            c.with_impression += i as usize;
            c.with_both += (f && i) as usize;
            c.with_neither += (!f && !i) as usize;
            c.without_image += s.image_paths.is_empty() as usize;
        }
        c
    }
}

impl std::fmt::Display for IuCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} studies: {} with findings, {} with impression, {} with both, {} with neither, {} without image",
            self.studies, self.with_findings, self.with_impression, self.with_both, self.with_neither, self.without_image
        )
    }
}

/// Options of the IU conversion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IuOptions {
    /// Extension of the image files (`png` in the NLM release).
    pub image_extension: String,
    /// Prefix joined to every image file name (the image folder, relative or absolute).
    pub image_prefix: PathBuf,
}

impl Default for IuOptions {
    fn default() -> Self {
        Self {
            image_extension: "png".into(),
            image_prefix: PathBuf::new(),
        }
    }
}

/// Parse one Open-i report. `source` names the file in errors.
pub fn parse_report_xml(xml: &str, source: &Path, options: &IuOptions) -> Result<StudyRecord> {
    let bad = |reason: String| DataError::Report {
        path: source.to_path_buf(),
        reason,
    };
    let doc = roxmltree::Document::parse(xml).map_err(|e| bad(format!("invalid XML: {e}")))?;
    let root = doc.root_element();
    let id = root
        .descendants()
        .find(|n| n.has_tag_name("uId"))
        .and_then(|n| n.attribute("id"))
        .map(str::to_string)
        .or_else(|| {
            source
                .file_stem()
                .map(|s| format!("CXR{}", s.to_string_lossy()))
        })
        .ok_or_else(|| bad("no uId element and no file name to take the id from".into()))?;
    let mut study = StudyRecord::new(id);
    for n in root
        .descendants()
        .filter(|n| n.has_tag_name("AbstractText"))
    {
        let text = n
            .text()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        match n.attribute("Label") {
            Some("FINDINGS") => study.findings = text,
            Some("IMPRESSION") => study.impression = text,
            _ => {}
        }
    }
    let majors: Vec<&str> = root
        .descendants()
        .filter(|n| n.has_tag_name("major"))
        .filter_map(|n| n.text())
        .collect();
    study.labels = mesh_labels(&majors);
    for n in root.descendants().filter(|n| n.has_tag_name("parentImage")) {
        let id = n
            .attribute("id")
            .ok_or_else(|| bad("parentImage without an id attribute".into()))?;
        study.image_paths.push(
            options
                .image_prefix
                .join(format!("{id}.{}", options.image_extension)),
        );
        study.view_names.push(String::new());
    }
    Ok(study)
}

/// Which CheXpert label (index into [`CHEXPERT_LABELS`]) a MeSH major term names, by its
/// heading (the part before the first `/`, lower-cased) and, for a few headings, its
/// qualifiers. Terms about bones' degeneration, calcified granulomas, scars and the like
/// have no CheXpert label.
fn mesh_label(term: &str) -> Option<&'static str> {
    let lower = term.to_lowercase();
    let mut parts = lower.split('/').map(str::trim);
    let heading = parts.next().unwrap_or("");
    let qualifiers: Vec<&str> = parts.collect();
    let about = |word: &str| qualifiers.iter().any(|q| q.contains(word));
    Some(match heading {
        "normal" => "No Finding",
        "cardiomegaly" => "Cardiomegaly",
        "mediastinum" | "cardiac shadow" if about("enlarged") || about("wide") => {
            "Enlarged Cardiomediastinum"
        }
        "nodule" | "mass" | "lung neoplasms" => "Lung Lesion",
        "opacity" | "airspace disease" | "infiltrate" | "density" | "pulmonary fibrosis" => {
            "Lung Opacity"
        }
        "pulmonary edema" | "pulmonary congestion" => "Edema",
        "consolidation" => "Consolidation",
        "pneumonia" => "Pneumonia",
        "pulmonary atelectasis" => "Atelectasis",
        "pneumothorax" => "Pneumothorax",
        "pleural effusion" => "Pleural Effusion",
        "thickening" if about("pleura") => "Pleural Other",
        "fractures, bone" => "Fracture",
        "catheters, indwelling"
        | "implanted medical device"
        | "surgical instruments"
        | "tube, inserted"
        | "medical device"
        | "stents"
        | "pacemaker, artificial" => "Support Devices",
        _ => return None,
    })
}

/// CheXpert labels from a report's MeSH major terms: every label a term names is
/// positive, the others negative (the indexing lists what the report found); `None`
/// without indexing (no terms, or "No Indexing").
///
/// ```
/// use medprob_data::{iu::mesh_labels, Label, CHEXPERT_LABELS};
/// let l = mesh_labels(&["Cardiomegaly/mild", "Pleural Effusion/right"]).unwrap();
/// let at = |name| CHEXPERT_LABELS.iter().position(|&n| n == name).unwrap();
/// assert_eq!(l[at("Cardiomegaly")], Label::Positive);
/// assert_eq!(l[at("Pleural Effusion")], Label::Positive);
/// assert_eq!(l[at("No Finding")], Label::Negative);
/// assert_eq!(mesh_labels(&["No Indexing"]), None);
/// ```
pub fn mesh_labels(majors: &[&str]) -> Option<[Label; 14]> {
    let indexed: Vec<&str> = majors
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("no indexing"))
        .collect();
    if indexed.is_empty() {
        return None;
    }
    let mut labels = [Label::Negative; 14];
    for name in indexed.into_iter().filter_map(mesh_label) {
        let c = CHEXPERT_LABELS
            .iter()
            .position(|&l| l == name)
            .expect("mesh_label names CheXpert labels");
        labels[c] = Label::Positive;
    }
    Some(labels)
}

/// Convert a directory of report XML files, or a `.tgz`/`.tar.gz` archive of them.
/// Studies come out sorted by their numeric id; the counts describe them.
pub fn convert(reports: &Path, options: &IuOptions) -> Result<(Vec<StudyRecord>, IuCounts)> {
    let mut studies = Vec::new();
    let name = reports.to_string_lossy();
    if name.ends_with(".tgz") || name.ends_with(".tar.gz") {
        let file = std::fs::File::open(reports).map_err(|e| DataError::io(reports, e))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let entries = archive.entries().map_err(|e| DataError::io(reports, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| DataError::io(reports, e))?;
            let path = entry
                .path()
                .map_err(|e| DataError::io(reports, e))?
                .into_owned();
            if path.extension().is_some_and(|e| e == "xml") {
                let mut xml = String::new();
                let inner = reports.join(&path);
                entry
                    .read_to_string(&mut xml)
                    .map_err(|e| DataError::io(&inner, e))?;
                studies.push(parse_report_xml(&xml, &inner, options)?);
            }
        }
    } else {
        let dir = std::fs::read_dir(reports).map_err(|e| DataError::io(reports, e))?;
        for entry in dir {
            let path = entry.map_err(|e| DataError::io(reports, e))?.path();
            if path.extension().is_some_and(|e| e == "xml") {
                let xml = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
                studies.push(parse_report_xml(&xml, &path, options)?);
            }
        }
    }
    studies.sort_by_key(|s| (numeric_id(&s.study_id), s.study_id.clone()));
    let counts = IuCounts::of(&studies);
    Ok((studies, counts))
}

fn numeric_id(id: &str) -> u64 {
    id.trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(u64::MAX)
}

/// Fill in view names from a projections CSV with a file-name column (`filename`, `uid` or
/// `image`) and a view column (`projection` or `view`); `Frontal` becomes `PA` only when
/// the CSV says nothing finer. Returns how many images got a view.
pub fn apply_projections(studies: &mut [StudyRecord], csv_path: &Path) -> Result<usize> {
    let table = crate::table::Table::open(csv_path)?;
    let c_file = table.any_column(&["filename", "image", "uid_filename"])?;
    let c_view = table.any_column(&["projection", "view"])?;
    let mut views: HashMap<String, String> = HashMap::new();
    table.for_each(|row| {
        let stem = Path::new(row.get(c_file))
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // "1_IM-0001-4001.dcm.png" → "…-4001"; keep the part before the first dot.
        let stem = stem.split('.').next().unwrap_or("").to_string();
        let view = match row.get(c_view) {
            "Frontal" | "frontal" => "PA".to_string(),
            "Lateral" | "lateral" => "LATERAL".to_string(),
            other => other.to_string(),
        };
        views.insert(stem, view);
        Ok(())
    })?;
    let mut n = 0;
    for s in studies.iter_mut() {
        for (path, view) in s.image_paths.iter().zip(s.view_names.iter_mut()) {
            let stem = path
                .file_stem()
                .map(|x| x.to_string_lossy().into_owned())
                .unwrap_or_default();
            let key = stem.trim_start_matches("CXR").to_string();
            if let Some(v) = views.get(&stem).or_else(|| views.get(&key)) {
                *view = v.clone();
                n += 1;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR7"/><MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">XXXX, XXXX</AbstractText>
<AbstractText Label="FINDINGS">The cardiac contours are normal.
   The lungs are clear.</AbstractText>
<AbstractText Label="IMPRESSION">Basilar atelectasis.</AbstractText>
</Abstract></Article></MedlineCitation>
<parentImage id="CXR7_IM-2263-1001"><figureId>F1</figureId></parentImage>
<parentImage id="CXR7_IM-2263-2001"><figureId>F2</figureId></parentImage>
</eCitation>"#;

    #[test]
    fn parses_sections_and_images() {
        let opts = IuOptions {
            image_prefix: "images".into(),
            ..Default::default()
        };
        let s = parse_report_xml(XML, Path::new("7.xml"), &opts).unwrap();
        assert_eq!(s.study_id, "CXR7");
        assert_eq!(
            s.findings,
            "The cardiac contours are normal. The lungs are clear."
        );
        assert_eq!(s.impression, "Basilar atelectasis.");
        assert_eq!(
            s.image_paths,
            vec![
                PathBuf::from("images/CXR7_IM-2263-1001.png"),
                PathBuf::from("images/CXR7_IM-2263-2001.png")
            ]
        );
        assert_eq!(s.view_names, vec!["", ""]);
    }

    #[test]
    fn empty_sections_and_no_images_are_kept() {
        let xml = r#"<eCitation><uId id="CXR9"/><AbstractText Label="FINDINGS"/><AbstractText Label="IMPRESSION">Normal chest.</AbstractText></eCitation>"#;
        let s = parse_report_xml(xml, Path::new("9.xml"), &IuOptions::default()).unwrap();
        assert_eq!(
            (s.findings.as_str(), s.impression.as_str()),
            ("", "Normal chest.")
        );
        assert!(s.image_paths.is_empty());
        let counts = IuCounts::of(&[s]);
        assert_eq!(
            (
                counts.with_impression,
                counts.with_neither,
                counts.without_image
            ),
            (1, 0, 1)
        );
    }

    #[test]
    fn mesh_major_terms_become_chexpert_labels() {
        let xml = r#"<eCitation><uId id="CXR5"/>
            <MeSH><major>Pleural Effusion/left/small</major><major>Catheters, Indwelling</major>
            <major>Thickening/pleura/apex</major><major>Calcified Granuloma/lung</major>
            <automatic>Pneumothorax</automatic></MeSH></eCitation>"#;
        let s = parse_report_xml(xml, Path::new("5.xml"), &IuOptions::default()).unwrap();
        let l = s.labels.unwrap();
        let positive: Vec<&str> = CHEXPERT_LABELS
            .iter()
            .zip(l)
            .filter(|(_, v)| *v == Label::Positive)
            .map(|(n, _)| *n)
            .collect();
        // Automatic (machine) terms are not used; granulomas have no CheXpert label.
        assert_eq!(
            positive,
            ["Pleural Effusion", "Pleural Other", "Support Devices"]
        );
        assert_eq!(l.iter().filter(|v| **v == Label::Negative).count(), 11);
        let none =
            r#"<eCitation><uId id="CXR6"/><MeSH><major>No Indexing</major></MeSH></eCitation>"#;
        let s = parse_report_xml(none, Path::new("6.xml"), &IuOptions::default()).unwrap();
        assert_eq!(s.labels, None);
        // Enlarged mediastinum needs the qualifier.
        assert_eq!(
            mesh_labels(&["Mediastinum/enlarged"]).unwrap()[4],
            Label::Positive
        );
        assert_eq!(mesh_labels(&["Mediastinum"]).unwrap()[4], Label::Negative);
    }

    #[test]
    fn malformed_xml_names_the_file() {
        let e = parse_report_xml(
            "<eCitation>",
            Path::new("ecgen-radiology/12.xml"),
            &IuOptions::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("ecgen-radiology/12.xml: invalid XML"),
            "{e}"
        );
    }

    #[test]
    fn directory_and_archive_give_the_same_studies() {
        let dir = tempfile::tempdir().unwrap();
        let reports = dir.path().join("ecgen-radiology");
        std::fs::create_dir(&reports).unwrap();
        std::fs::write(reports.join("7.xml"), XML).unwrap();
        std::fs::write(reports.join("10.xml"), XML.replace("CXR7", "CXR10")).unwrap();
        std::fs::write(reports.join("readme.txt"), "not a report").unwrap();
        let (a, counts) = convert(&reports, &IuOptions::default()).unwrap();
        assert_eq!(
            a.iter().map(|s| s.study_id.as_str()).collect::<Vec<_>>(),
            ["CXR7", "CXR10"]
        );
        assert_eq!(counts.studies, 2);
        assert_eq!(counts.with_both, 2);

        let tgz = dir.path().join("NLMCXR_reports.tgz");
        let file = std::fs::File::create(&tgz).unwrap();
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ));
        tar.append_dir_all("ecgen-radiology", &reports).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        let (b, _) = convert(&tgz, &IuOptions::default()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn projections_fill_view_names() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("indiana_projections.csv");
        std::fs::write(&csv, "uid,filename,projection\n7,7_IM-2263-1001.dcm.png,Frontal\n7,7_IM-2263-2001.dcm.png,Lateral\n").unwrap();
        let mut s = vec![parse_report_xml(XML, Path::new("7.xml"), &IuOptions::default()).unwrap()];
        assert_eq!(apply_projections(&mut s, &csv).unwrap(), 2);
        assert_eq!(s[0].view_names, vec!["PA", "LATERAL"]);
    }
}
