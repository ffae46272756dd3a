//! Reports written from a study's hidden state: FINDINGS and IMPRESSION with varied
//! phrasing, synonyms, severity and laterality words, negations of absent key findings,
//! shuffled sentence order, and minor findings sometimes left out.

use rand::seq::SliceRandom;
use rand::Rng;

use super::state::{Finding, Present, Severity, Side, StudyState, Zone};
use crate::record::Label;

/// A written report and the CheXpert labels a labeller would read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenReport {
    /// FINDINGS (empty for impression-only reports).
    pub findings: String,
    /// IMPRESSION.
    pub impression: String,
    /// Labels in [`crate::CHEXPERT_LABELS`] order: 1 mentioned, 0 negated, blank otherwise.
    pub labels: [Label; 14],
    /// Present findings the report leaves out.
    pub omitted: Vec<Finding>,
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
    let mut labels = [Label::Blank; 14];
    let idx = |f: Finding| {
        crate::record::CHEXPERT_LABELS
            .iter()
            .position(|n| *n == f.chexpert_name())
            .expect("CheXpert name")
    };
    let mut omitted = Vec::new();
    let mut sentences: Vec<String> = Vec::new();
    for p in &state.findings {
        if p.finding.minor() && rng.random_bool(omission_rate.clamp(0.0, 1.0)) {
            omitted.push(p.finding);
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
        .filter(|p| !p.finding.minor() && p.finding != Finding::SupportDevices)
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
    if state.no_finding() {
        labels[idx_no_finding()] = Label::Positive;
    }
    let findings = if rng.random_bool(impression_only_rate.clamp(0.0, 1.0)) {
        String::new()
    } else {
        sentences.join(" ")
    };
    WrittenReport {
        findings,
        impression,
        labels,
        omitted,
    }
}

fn idx_no_finding() -> usize {
    crate::record::CHEXPERT_LABELS
        .iter()
        .position(|n| *n == "No Finding")
        .expect("No Finding")
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
