//! The IU X-ray converter on the real 3,955 Open-i reports (fetched from the PyPI wheel
//! torchxrayvision==1.5.7 by scripts/fetch_iu_reports.sh; never committed). Outside CI the
//! test is skipped, with a notice, when the archive cannot be fetched; in CI it must run.

use std::path::PathBuf;

use medprob_data::iu::{convert, IuCounts, IuOptions};

fn archive() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("MEDPROB_IU_REPORTS") {
        return Some(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("testdata/external/NLMCXR_reports.tgz");
    if !path.exists() {
        let status = std::process::Command::new("bash")
            .arg(root.join("scripts/fetch_iu_reports.sh"))
            .stdout(std::process::Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            return None;
        }
    }
    path.exists().then_some(path)
}

#[test]
fn converter_keeps_every_iu_report() {
    let Some(path) = archive() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to fetch the IU reports (scripts/fetch_iu_reports.sh)"
        );
        eprintln!("skipped: IU reports not available (run scripts/fetch_iu_reports.sh)");
        return;
    };
    let (studies, counts) = convert(&path, &IuOptions::default()).unwrap();
    eprintln!("{counts}");
    assert_eq!(
        counts,
        IuCounts {
            studies: 3955,
            with_findings: 3425,
            with_impression: 3921,
            with_both: 3419,
            with_neither: 28,
            without_image: 104,
        }
    );
    assert_eq!(studies.len(), 3955);
    assert_eq!(studies[0].study_id, "CXR1");
    let ids: std::collections::HashSet<_> = studies.iter().map(|s| &s.study_id).collect();
    assert_eq!(ids.len(), 3955, "study ids are unique");
    // A study whose text is known (CXR7, also in the project's shared fixtures).
    let s7 = studies.iter().find(|s| s.study_id == "CXR7").unwrap();
    assert_eq!(
        s7.impression,
        "Basilar atelectasis. No confluent lobar consolidation or pleural effusion."
    );
    assert_eq!(s7.image_paths.len(), 2);

    // CheXpert labels from the MeSH major terms. The expected counts were taken from the
    // XML with a separate script (a regular expression over <major>, headings compared
    // lower-case); 95 reports say "No Indexing" and have no labels.
    let at = |name: &str| {
        medprob_data::CHEXPERT_LABELS
            .iter()
            .position(|&l| l == name)
            .unwrap()
    };
    let positive = |name: &str| {
        let c = at(name);
        studies
            .iter()
            .filter(|s| {
                s.labels
                    .is_some_and(|l| l[c] == medprob_data::Label::Positive)
            })
            .count()
    };
    assert_eq!(studies.iter().filter(|s| s.labels.is_some()).count(), 3860);
    assert_eq!(positive("No Finding"), 1391);
    assert_eq!(positive("Cardiomegaly"), 375);
    assert_eq!(positive("Pleural Effusion"), 161);
    assert_eq!(positive("Support Devices"), 379);

    // A WordPiece vocabulary trained on the real reports keeps the field's words whole.
    let corpus = studies
        .iter()
        .flat_map(|s| [s.findings.as_str(), s.impression.as_str()])
        .filter(|t| !t.is_empty());
    let tok =
        medprob_data::tokenize::ReportTokenizer::train_wordpiece(corpus, 3000, 2, 256).unwrap();
    assert_eq!(
        tok.tokens("No pneumothorax or pleural effusion. Mild cardiomegaly.")
            .unwrap(),
        [
            "[CLS]",
            "no",
            "pneumothorax",
            "or",
            "pleural",
            "effusion",
            ".",
            "mild",
            "cardiomegaly",
            ".",
            "[SEP]"
        ]
    );

    // The converted table survives a CSV round trip unchanged, except that a study
    // without labels in a table with label columns reads back with 14 blanks (the CSV
    // has no other way to say "unknown"; indexed studies never have a blank).
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("iu.csv");
    medprob_data::write_studies(&csv, &studies).unwrap();
    let mut expected = studies.clone();
    for s in &mut expected {
        s.labels.get_or_insert([medprob_data::Label::Blank; 14]);
    }
    assert_eq!(medprob_data::read_studies(&csv).unwrap(), expected);
}
