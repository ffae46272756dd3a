//! Splitting a free-text radiology report into its FINDINGS and IMPRESSION sections.
//!
//! MIMIC-CXR reports are plain text with upper-case headers ending in a colon
//! (`FINDINGS:`, `IMPRESSION:`, `INDICATION:` …), written with many variants. A header is an
//! upper-case phrase at the start of a line followed by `:`; text after the colon on the same
//! line belongs to it. Header variants recognised:
//!
//! | section | headers |
//! |---|---|
//! | findings | `FINDINGS`, `FINDING`, `FINDINGS/COMMENTS`, `REPORT`, `FINDINGS ON CHEST` |
//! | impression | `IMPRESSION`, `IMPRESSIONS`, `CONCLUSION`, `CONCLUSIONS`, `SUMMARY`, `OPINION` |
//! | both (combined) | `FINDINGS AND IMPRESSION`, `FINDINGS/IMPRESSION`, `IMPRESSION AND FINDINGS`, `FINDINGS AND IMPRESSIONS` → impression |
//!
//! Matching ignores case of the header text only through normalisation (extra spaces,
//! trailing `S`), never inside sentences. When a report has neither section, its last
//! paragraph becomes the impression, as the MIMIC-CXR authors' own section script does.
//! Whitespace inside a section is collapsed to single spaces.

/// The two sections of a report (either may be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sections {
    /// FINDINGS text.
    pub findings: String,
    /// IMPRESSION text.
    pub impression: String,
    /// `true` when the impression was taken from the last paragraph for lack of headers.
    pub from_last_paragraph: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Findings,
    Impression,
    Other,
}

fn classify(header: &str) -> Kind {
    let h: String = header.split_whitespace().collect::<Vec<_>>().join(" ");
    match h.as_str() {
        "FINDINGS" | "FINDING" | "FINDINGS/COMMENTS" | "REPORT" | "FINDINGS ON CHEST" => {
            Kind::Findings
        }
        "IMPRESSION"
        | "IMPRESSIONS"
        | "CONCLUSION"
        | "CONCLUSIONS"
        | "SUMMARY"
        | "OPINION"
        | "FINDINGS AND IMPRESSION"
        | "FINDINGS AND IMPRESSIONS"
        | "FINDINGS/IMPRESSION"
        | "IMPRESSION AND FINDINGS"
        | "FINDINGS & IMPRESSION" => Kind::Impression,
        _ => Kind::Other,
    }
}

/// If `line` starts with a header, its name and the rest of the line.
fn header(line: &str) -> Option<(&str, &str)> {
    let t = line.trim_start();
    let colon = t.find(':')?;
    let name = t[..colon].trim();
    let ok = name.len() >= 3
        && name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || " /&()-,".contains(c));
    ok.then(|| (name, &t[colon + 1..]))
}

fn collapse(parts: &[&str]) -> String {
    parts
        .iter()
        .flat_map(|p| p.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parse a report into FINDINGS and IMPRESSION.
///
/// ```
/// let s = medprob_data::sections::parse_report(
///     "EXAMINATION: CHEST (PA AND LAT)\n\nFINDINGS:\n The lungs are clear.\n\n IMPRESSION: No acute process.\n",
/// );
/// assert_eq!(s.findings, "The lungs are clear.");
/// assert_eq!(s.impression, "No acute process.");
/// ```
pub fn parse_report(text: &str) -> Sections {
    let mut findings: Vec<&str> = Vec::new();
    let mut impression: Vec<&str> = Vec::new();
    let mut current = Kind::Other;
    let mut saw = false;
    for line in text.lines() {
        let rest = match header(line) {
            Some((name, rest)) => {
                current = classify(name);
                saw |= current != Kind::Other;
                rest
            }
            None => line,
        };
        match current {
            Kind::Findings => findings.push(rest),
            Kind::Impression => impression.push(rest),
            Kind::Other => {}
        }
    }
    if saw {
        return Sections {
            findings: collapse(&findings),
            impression: collapse(&impression),
            from_last_paragraph: false,
        };
    }
    // No section headers: the last non-empty paragraph (blank-line separated).
    let mut paragraphs: Vec<Vec<&str>> = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            if !paragraphs.last().is_some_and(|p| p.is_empty()) {
                paragraphs.push(Vec::new());
            }
        } else {
            paragraphs.last_mut().expect("never empty").push(line);
        }
    }
    let last = paragraphs
        .iter()
        .rev()
        .find(|p| !p.is_empty())
        .map(|p| collapse(p))
        .unwrap_or_default();
    Sections {
        findings: String::new(),
        from_last_paragraph: !last.is_empty(),
        impression: last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mimic_layout_with_both_sections() {
        let r = "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  ___F with cough\n \n COMPARISON:  None.\n \n FINDINGS:  \n \n PA and lateral views of the chest.  The lungs are clear\n without consolidation.\n \n IMPRESSION:  \n \n No acute cardiopulmonary process.\n";
        let s = parse_report(r);
        assert_eq!(
            s.findings,
            "PA and lateral views of the chest. The lungs are clear without consolidation."
        );
        assert_eq!(s.impression, "No acute cardiopulmonary process.");
        assert!(!s.from_last_paragraph);
    }

    #[test]
    fn header_variants() {
        for (h, kind) in [
            ("FINDINGS", "f"),
            ("FINDING", "f"),
            ("FINDINGS/COMMENTS", "f"),
            ("REPORT", "f"),
            ("IMPRESSION", "i"),
            ("IMPRESSIONS", "i"),
            ("CONCLUSION", "i"),
            ("CONCLUSIONS", "i"),
            ("SUMMARY", "i"),
            ("OPINION", "i"),
            ("FINDINGS AND IMPRESSION", "i"),
            ("FINDINGS  AND  IMPRESSION", "i"),
            ("FINDINGS/IMPRESSION", "i"),
            ("IMPRESSION AND FINDINGS", "i"),
            ("FINDINGS & IMPRESSION", "i"),
        ] {
            let s = parse_report(&format!(
                "INDICATION: pain.\n{h}: Text here.\nCOMPARISON: none.\n"
            ));
            let (f, i) = if kind == "f" {
                ("Text here.", "")
            } else {
                ("", "Text here.")
            };
            assert_eq!((s.findings.as_str(), s.impression.as_str()), (f, i), "{h}");
        }
    }

    #[test]
    fn impression_only_and_no_headers() {
        let s = parse_report("EXAM: CHEST\nIMPRESSION: Stable cardiomegaly.\n");
        assert_eq!(
            (s.findings.as_str(), s.impression.as_str()),
            ("", "Stable cardiomegaly.")
        );
        let s = parse_report("Portable chest.\n\nLines and tubes unchanged.\nNo pneumothorax.\n\n");
        assert_eq!(s.impression, "Lines and tubes unchanged. No pneumothorax.");
        assert!(s.from_last_paragraph);
        assert_eq!(parse_report("  \n"), Sections::default());
    }

    #[test]
    fn colons_inside_sentences_are_not_headers() {
        let s =
            parse_report("FINDINGS: Lines: unchanged. Heart: normal.\nImpression of: nothing\n");
        assert_eq!(
            s.findings,
            "Lines: unchanged. Heart: normal. Impression of: nothing"
        );
    }
}
