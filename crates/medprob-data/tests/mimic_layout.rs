//! The MIMIC-CXR-JPG converter on small files written in the documented PhysioNet layout.

use std::io::Write;
use std::path::{Path, PathBuf};

use medprob_data::mimic::{convert, write_split_csvs, MimicInputs};
use medprob_data::{read_studies, Label, Split};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn write_gz(path: &Path, text: &str) {
    let f = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
}

struct Layout {
    _dir: tempfile::TempDir,
    root: PathBuf,
    inputs: MimicInputs,
}

fn layout() -> Layout {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    write_gz(
        &root.join("mimic-cxr-2.0.0-metadata.csv.gz"),
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns\n\
         d1,10000032,50000001,CHEST (PA AND LAT),PA,3056,2544\n\
         d2,10000032,50000001,CHEST (PA AND LAT),LATERAL,3056,2544\n\
         d3,10000032,50000002,CHEST (PORTABLE AP),AP,2544,3056\n\
         d4,11000011,50000003,CHEST (PA AND LAT),PA,3056,2544\n\
         d5,11000011,50000004,CHEST (PA AND LAT),LL,3056,2544\n",
    );
    write(
        &root.join("mimic-cxr-2.0.0-split.csv"),
        "dicom_id,study_id,subject_id,split\n\
         d1,50000001,10000032,train\nd2,50000001,10000032,train\nd3,50000002,10000032,validate\n\
         d4,50000003,11000011,test\nd5,50000004,11000011,train\n",
    );
    write(
        &root.join("mimic-cxr-2.0.0-chexpert.csv"),
        "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices\n\
         10000032,50000001,,,,,,,,,1.0,,,,,\n\
         10000032,50000002,,1.0,,-1.0,,,,,,0.0,,,,1.0\n",
    );
    let reports = root.join("reports");
    write(
        &reports.join("files/p10/p10000032/s50000001.txt"),
        "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  ___ with cough\n \n FINDINGS:  \n \n The lungs are clear.  No pleural effusion.\n \n IMPRESSION:  \n \n No acute cardiopulmonary process.\n",
    );
    write(
        &reports.join("files/p10/p10000032/s50000002.txt"),
        " FINAL REPORT\n INDICATION: line placement\n\n IMPRESSION: Right internal jugular line ends in the SVC.\n",
    );
    write(
        &reports.join("files/p11/p11000011/s50000003.txt"),
        " FINAL REPORT\n FINDINGS AND IMPRESSION:  Mild cardiomegaly.  Small left effusion.\n",
    );
    let inputs = MimicInputs {
        metadata: root.join("mimic-cxr-2.0.0-metadata.csv.gz"),
        split: root.join("mimic-cxr-2.0.0-split.csv"),
        chexpert: Some(root.join("mimic-cxr-2.0.0-chexpert.csv")),
        reports_root: reports,
    };
    Layout {
        _dir: dir,
        root,
        inputs,
    }
}

#[test]
fn converts_the_official_layout_into_split_csvs() {
    let l = layout();
    let (by_split, counts) = convert(&l.inputs).unwrap();
    assert_eq!(counts.per_split.get("train"), Some(&2));
    assert_eq!(counts.per_split.get("validate"), Some(&1));
    assert_eq!(counts.per_split.get("test"), Some(&1));
    assert_eq!(counts.images, 5);
    assert_eq!(counts.missing_reports, vec!["50000004".to_string()]);

    let train = &by_split[&Split::Train];
    let s1 = &train[0];
    assert_eq!(s1.study_id, "50000001");
    assert_eq!(s1.patient_id.as_deref(), Some("10000032"));
    assert_eq!(
        s1.image_paths,
        vec![
            PathBuf::from("files/p10/p10000032/s50000001/d1.jpg"),
            PathBuf::from("files/p10/p10000032/s50000001/d2.jpg")
        ]
    );
    assert_eq!(s1.view_names, vec!["PA", "LATERAL"]);
    assert_eq!(s1.findings, "The lungs are clear. No pleural effusion.");
    assert_eq!(s1.impression, "No acute cardiopulmonary process.");
    assert_eq!(s1.labels.unwrap()[8], Label::Positive, "No Finding");

    // Impression only.
    let s2 = &by_split[&Split::Validate][0];
    assert_eq!(
        (s2.findings.as_str(), s2.impression.as_str()),
        ("", "Right internal jugular line ends in the SVC.")
    );
    let l2 = s2.labels.unwrap();
    assert_eq!(
        (l2[1], l2[3], l2[9], l2[13], l2[0]),
        (
            Label::Positive,
            Label::Uncertain,
            Label::Negative,
            Label::Positive,
            Label::Blank
        )
    );

    // Combined header variant, and a study absent from the label file.
    let s3 = &by_split[&Split::Test][0];
    assert_eq!(s3.impression, "Mild cardiomegaly. Small left effusion.");
    assert_eq!(s3.labels, Some([Label::Blank; 14]));

    // Missing report: kept, with empty sections, for the loader to judge.
    let s4 = &train[1];
    assert_eq!(
        (
            s4.study_id.as_str(),
            s4.findings.as_str(),
            s4.impression.as_str()
        ),
        ("50000004", "", "")
    );

    let out = l.root.join("csv");
    let files = write_split_csvs(&out, &by_split).unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(&read_studies(&out.join("train.csv")).unwrap(), train);
    assert_eq!(
        &read_studies(&out.join("test.csv")).unwrap(),
        &by_split[&Split::Test]
    );
}

#[test]
fn bad_tables_name_file_line_and_column() {
    let l = layout();
    write(&l.inputs.split, "dicom_id,study_id,subject_id,split\nd1,50000001,10000032,train\nd3,50000002,10000032,dev\n");
    let e = convert(&l.inputs).unwrap_err().to_string();
    assert!(
        e.contains("mimic-cxr-2.0.0-split.csv:3: column \"split\": unknown split \"dev\""),
        "{e}"
    );

    write(&l.inputs.split, "dicom_id,study_id,subject_id,split\nd1,50000001,10000032,train\nd2,50000001,10000032,test\n");
    let e = convert(&l.inputs).unwrap_err().to_string();
    assert!(
        e.contains("study 50000001 is in both train and test"),
        "{e}"
    );

    write(
        &l.inputs.split,
        "dicom_id,study_id,subject_id,split\nd1,50000001,10000032,train\n",
    );
    let e = convert(&l.inputs).unwrap_err().to_string();
    assert!(e.starts_with("study 50000002: not listed in"), "{e}");

    write_gz(
        &l.inputs.metadata,
        "dicom_id,subject_id,study_id,ViewPosition\nd1,abc,50000001,PA\n",
    );
    let e = convert(&l.inputs).unwrap_err().to_string();
    assert!(
        e.contains("metadata.csv.gz:2: column \"subject_id\": \"abc\" is not a numeric id"),
        "{e}"
    );

    write_gz(&l.inputs.metadata, "dicom_id,subject_id,study_id\nd1,1,2\n");
    let e = convert(&l.inputs).unwrap_err().to_string();
    assert!(e.contains("missing column \"ViewPosition\""), "{e}");
}
