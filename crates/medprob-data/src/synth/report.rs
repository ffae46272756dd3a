//! Reports written from a study's hidden state: FINDINGS and IMPRESSION with varied
//! phrasing, synonyms, severity and laterality words, negations of absent key findings,
//! shuffled sentence order, and minor findings sometimes left out.
//!
//! The CheXpert labels describe exactly the text that is written, as a labeller reading the
//! report would: a finding the text does not name is not positive, even when the hidden
//! state has it, and an impression-only report negates nothing. What the state has but the
//! text hides is recorded per finding ([`Reported`]) for evaluation against the state.

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::state::{Finding, Present, Severity, Side, StudyState, Zone};
use crate::record::Label;

/// How the written report conveys one present finding of the hidden state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reported {
    /// A FINDINGS sentence affirms it (and, for a main finding, the IMPRESSION names it too).
    Stated,
    /// The report is impression-only and its IMPRESSION names the finding (main findings:
    /// neither minor nor support devices).
    Impression,
    /// The written text does not contain it: a minor finding left out at the omission rate,
    /// or, in an impression-only report, a finding only FINDINGS would have named (minor
    /// findings and support devices).
    Omitted,
}

/// A written report and the CheXpert labels a labeller would read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenReport {
    /// FINDINGS (empty for impression-only reports).
    pub findings: String,
    /// IMPRESSION.
    pub impression: String,
    /// Labels in [`crate::CHEXPERT_LABELS`] order, read from the written text: 1 named
    /// affirmatively, 0 negated, blank otherwise; "No Finding" is 1 exactly when no
    /// pathology (anything but support devices) is 1.
    pub labels: [Label; 14],
    /// Present findings the written text does not contain (those [`Reported::Omitted`]), in
    /// the state's order.
    pub omitted: Vec<Finding>,
    /// How the text conveys each present finding, in the order of the state's findings.
    pub reported: Vec<(Finding, Reported)>,
    /// Whether FINDINGS was dropped (drawn at the impression-only rate).
    pub impression_only: bool,
}

fn pick<'a, R: Rng + ?Sized>(rng: &mut R, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn size(s: Severity) -> &'static str {
    match s {
        Severity::Mild => "small",
        Severity::Moderate => "moderate",
        Severity::Severe => "large",
    }
}

fn degree(s: Severity) -> &'static str {
    match s {
        Severity::Mild => "mild",
        Severity::Moderate => "moderate",
        Severity::Severe => "severe",
    }
}

fn zone(z: Option<Zone>) -> &'static str {
    match z {
        Some(Zone::Upper) => "upper",
        Some(Zone::Middle) => "mid",
        Some(Zone::Lower) | None => "lower",
    }
}

fn side(p: &Present) -> &'static str {
    p.side.unwrap_or(Side::Bilateral).word()
}

/// One FINDINGS sentence for a present finding.
fn sentence<R: Rng + ?Sized>(p: &Present, rng: &mut R) -> String {
    let (s, z, sev) = (side(p), zone(p.zone), p.severity);
    let text = match p.finding {
        Finding::Cardiomegaly => match rng.random_range(0..3) {
            0 => format!("{} cardiomegaly.", degree(sev)),
            1 => format!(
                "The heart is {} enlarged.",
                match sev {
                    Severity::Mild => "mildly",
                    Severity::Moderate => "moderately",
                    Severity::Severe => "markedly",
                }
            ),
            _ => "Enlarged cardiac silhouette.".to_string(),
        },
        Finding::EnlargedCardiomediastinum => pick(
            rng,
            &[
                "The mediastinum is widened.",
                "Widened mediastinal contour.",
                "Enlarged cardiomediastinal silhouette.",
            ],
        )
        .to_string(),
        Finding::LungLesion => match rng.random_range(0..2) {
            0 => format!("{} nodule in the {s} {z} lung.", capitalise(size(sev))),
            _ => format!("{s} {z} lobe mass."),
        },
        Finding::LungOpacity => match rng.random_range(0..2) {
            0 => format!("{s} {z} zone opacity."),
            _ => format!("Patchy airspace opacity in the {s} {z} lung."),
        },
        Finding::Edema => match rng.random_range(0..3) {
            0 => format!("{} pulmonary edema.", degree(sev)),
            1 => "Interstitial edema.".to_string(),
            _ => "Vascular congestion with edema.".to_string(),
        },
        Finding::Consolidation => match rng.random_range(0..2) {
            0 => format!("{s} {z} lobe consolidation."),
            _ => format!("Consolidation in the {s} {z} lung."),
        },
        Finding::Pneumonia => match rng.random_range(0..2) {
            0 => format!("{s} {z} lobe pneumonia."),
            _ => format!("Findings in the {s} {z} lung consistent with pneumonia."),
        },
        Finding::Atelectasis => match (p.zone, rng.random_range(0..2)) {
            (Some(Zone::Lower), 0) => format!("{s} basilar atelectasis."),
            (Some(Zone::Lower), _) => format!("Atelectasis at the {s} lung base."),
            _ => format!("{s} {z} zone atelectasis."),
        },
        Finding::Pneumothorax => match rng.random_range(0..2) {
            0 => format!("{} {s} pneumothorax.", size(sev)),
            _ => format!("There is a {} {s} pneumothorax.", size(sev)),
        },
        Finding::PleuralEffusion => {
            let noun = if p.side == Some(Side::Bilateral) {
                "pleural effusions"
            } else {
                "pleural effusion"
            };
            match rng.random_range(0..2) {
                0 => format!("{} {s} {noun}.", size(sev)),
                _ => format!("{s} {noun}, {}.", size(sev)),
            }
        }
        Finding::PleuralOther => format!("{s} pleural thickening."),
        Finding::Fracture => match rng.random_range(0..2) {
            0 => format!("{s} rib fracture."),
            _ => format!("Fracture of a {s} rib."),
        },
        Finding::SupportDevices => pick(
            rng,
            &[
                "Endotracheal tube and right internal jugular catheter in place.",
                "Right internal jugular catheter ends in the SVC.",
                "Nasogastric tube courses below the diaphragm.",
                "Left chest wall pacemaker with leads in standard position.",
            ],
        )
        .to_string(),
    };
    capitalise(&text)
}

/// Short impression phrase for a main finding.
fn phrase(p: &Present) -> String {
    let s = side(p);
    match p.finding {
        Finding::Cardiomegaly => format!("{} cardiomegaly", degree(p.severity)),
        Finding::EnlargedCardiomediastinum => "widened mediastinum".into(),
        Finding::LungOpacity => format!("{s} {} zone opacity", zone(p.zone)),
        Finding::Edema => "pulmonary edema".into(),
        Finding::Consolidation => format!("{s} consolidation"),
        Finding::Pneumonia => format!("{s} {} lobe pneumonia", zone(p.zone)),
        Finding::Pneumothorax => format!("{s} pneumothorax"),
        Finding::PleuralEffusion if p.side == Some(Side::Bilateral) => {
            "bilateral pleural effusions".into()
        }
        Finding::PleuralEffusion => format!("{s} pleural effusion"),
        Finding::LungLesion => format!("{s} lung nodule"),
        Finding::Atelectasis => format!("{s} atelectasis"),
        Finding::PleuralOther => format!("{s} pleural thickening"),
        Finding::Fracture => format!("{s} rib fracture"),
        Finding::SupportDevices => "support devices in place".into(),
    }
}

/// Negation sentences and the findings they negate, for absent key findings.
const NEGATIONS: [(&str, &[Finding]); 5] = [
    (
        "No pleural effusion or pneumothorax.",
        &[Finding::PleuralEffusion, Finding::Pneumothorax],
    ),
    ("No focal consolidation.", &[Finding::Consolidation]),
    ("No pulmonary edema.", &[Finding::Edema]),
    ("Heart size is normal.", &[Finding::Cardiomegaly]),
    ("No pneumothorax.", &[Finding::Pneumothorax]),
];

/// Write FINDINGS and IMPRESSION for `state`.
pub fn write_report<R: Rng + ?Sized>(
    state: &StudyState,
    omission_rate: f64,
    impression_only_rate: f64,
    rng: &mut R,
) -> WrittenReport {
    // Labels of the full report (FINDINGS + IMPRESSION); replaced below when FINDINGS is
    // dropped. They also steer which negations are written, so they must be built exactly as
    // before for the random stream (and every seed's texts and images) to stay the same.
    let mut labels = [Label::Blank; 14];
    let idx = label_index;
    let mut left_out = Vec::new();
    let mut sentences: Vec<String> = Vec::new();
    for p in &state.findings {
        if p.finding.minor() && rng.random_bool(omission_rate.clamp(0.0, 1.0)) {
            left_out.push(p.finding);
            continue;
        }
        sentences.push(sentence(p, rng));
        labels[idx(p.finding)] = Label::Positive;
    }
    for (text, negated) in NEGATIONS {
        let absent = negated.iter().all(|f| state.get(*f).is_none());
        // Never negate the same finding twice ("No pneumothorax." after "… or pneumothorax.").
        let fresh = negated.iter().all(|f| labels[idx(*f)] == Label::Blank);
        if absent && fresh && rng.random_bool(0.6) {
            sentences.push(text.to_string());
            for f in negated {
                labels[idx(*f)] = Label::Negative;
            }
        }
    }
    let lung = [
        Finding::LungOpacity,
        Finding::Consolidation,
        Finding::Pneumonia,
        Finding::Atelectasis,
        Finding::Edema,
        Finding::LungLesion,
    ];
    if lung.iter().all(|f| state.get(*f).is_none()) {
        sentences.push(
            pick(
                rng,
                &[
                    "The lungs are clear.",
                    "Lungs are clear bilaterally.",
                    "The lungs are well expanded and clear.",
                ],
            )
            .to_string(),
        );
    }
    sentences.shuffle(rng);
    let main: Vec<String> = state
        .findings
        .iter()
        .filter(|p| in_impression(p.finding))
        .map(phrase)
        .collect();
    let impression = if main.is_empty() {
        pick(
            rng,
            &[
                "No acute cardiopulmonary process.",
                "No acute intrathoracic abnormality.",
                "No acute cardiopulmonary abnormality.",
            ],
        )
        .to_string()
    } else {
        let joined = match main.len() {
            1 => main[0].clone(),
            n => format!("{} and {}", main[..n - 1].join(", "), main[n - 1]),
        };
        format!("{}.", capitalise(&joined))
    };
    let impression_only = rng.random_bool(impression_only_rate.clamp(0.0, 1.0));
    let reported: Vec<(Finding, Reported)> = state
        .findings
        .iter()
        .map(|p| {
            let how = if left_out.contains(&p.finding) {
                Reported::Omitted
            } else if !impression_only {
                Reported::Stated
            } else if in_impression(p.finding) {
                Reported::Impression
            } else {
                Reported::Omitted
            };
            (p.finding, how)
        })
        .collect();
    let findings = if impression_only {
        // What a labeller reads from the IMPRESSION alone: the main findings it names, no
        // negations (those were FINDINGS sentences), everything else blank.
        labels = [Label::Blank; 14];
        for (f, how) in &reported {
            if *how == Reported::Impression {
                labels[idx(*f)] = Label::Positive;
            }
        }
        String::new()
    } else {
        sentences.join(" ")
    };
    // "No Finding" follows the text too: a report that names no pathology (its only present
    // finding omitted, or devices hidden by an impression-only report) is a normal report.
    let pathology = Finding::ALL
        .iter()
        .any(|f| *f != Finding::SupportDevices && labels[idx(*f)] == Label::Positive);
    if !pathology {
        labels[label_index_of("No Finding")] = Label::Positive;
    }
    let omitted = reported
        .iter()
        .filter(|(_, how)| *how == Reported::Omitted)
        .map(|(f, _)| *f)
        .collect();
    WrittenReport {
        findings,
        impression,
        labels,
        omitted,
        reported,
        impression_only,
    }
}

/// Main findings: the ones the IMPRESSION names (neither minor nor support devices).
fn in_impression(f: Finding) -> bool {
    !f.minor() && f != Finding::SupportDevices
}

/// Column of a finding in [`crate::CHEXPERT_LABELS`].
fn label_index(f: Finding) -> usize {
    label_index_of(f.chexpert_name())
}

fn label_index_of(name: &str) -> usize {
    crate::record::CHEXPERT_LABELS
        .iter()
        .position(|n| *n == name)
        .expect("every finding and No Finding is a CheXpert label")
}

/// Words by which a reader recognises each finding in a sentence (used by tests and by the
/// dataset documentation to audit reports).
pub fn keywords(f: Finding) -> &'static [&'static str] {
    match f {
        Finding::Cardiomegaly => &["cardiomegaly", "heart is", "enlarged cardiac"],
        Finding::EnlargedCardiomediastinum => &["mediastin"],
        Finding::LungLesion => &["nodule", "mass"],
        Finding::LungOpacity => &["opacity"],
        Finding::Edema => &["edema"],
        Finding::Consolidation => &["consolidation"],
        Finding::Pneumonia => &["pneumonia"],
        Finding::Atelectasis => &["atelectasis"],
        Finding::Pneumothorax => &["pneumothorax"],
        Finding::PleuralEffusion => &["effusion"],
        Finding::PleuralOther => &["pleural thickening"],
        Finding::Fracture => &["fracture"],
        Finding::SupportDevices => &["tube", "catheter", "pacemaker"],
    }
}
