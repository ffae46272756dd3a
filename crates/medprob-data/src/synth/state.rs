//! The hidden state of a synthetic study: which findings are present, on which side, how
//! severe, and how the patient and the exposure look. Images and reports are both rendered
//! from this state, so their agreement is known exactly.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The 13 CheXpert findings of SPEC §8 (No Finding is derived: none of these but devices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// Widened mediastinum.
    EnlargedCardiomediastinum,
    /// Enlarged heart.
    Cardiomegaly,
    /// Nodule or mass.
    LungLesion,
    /// Airspace opacity.
    LungOpacity,
    /// Pulmonary oedema.
    Edema,
    /// Consolidation.
    Consolidation,
    /// Pneumonia.
    Pneumonia,
    /// Atelectasis.
    Atelectasis,
    /// Pneumothorax.
    Pneumothorax,
    /// Pleural effusion.
    PleuralEffusion,
    /// Pleural thickening and the like.
    PleuralOther,
    /// Rib fracture.
    Fracture,
    /// Tubes and lines.
    SupportDevices,
}

impl Finding {
    /// All 13, in SPEC §8 order.
    pub const ALL: [Finding; 13] = [
        Finding::EnlargedCardiomediastinum,
        Finding::Cardiomegaly,
        Finding::LungLesion,
        Finding::LungOpacity,
        Finding::Edema,
        Finding::Consolidation,
        Finding::Pneumonia,
        Finding::Atelectasis,
        Finding::Pneumothorax,
        Finding::PleuralEffusion,
        Finding::PleuralOther,
        Finding::Fracture,
        Finding::SupportDevices,
    ];

    /// The CheXpert column name.
    pub fn chexpert_name(self) -> &'static str {
        match self {
            Finding::EnlargedCardiomediastinum => "Enlarged Cardiomediastinum",
            Finding::Cardiomegaly => "Cardiomegaly",
            Finding::LungLesion => "Lung Lesion",
            Finding::LungOpacity => "Lung Opacity",
            Finding::Edema => "Edema",
            Finding::Consolidation => "Consolidation",
            Finding::Pneumonia => "Pneumonia",
            Finding::Atelectasis => "Atelectasis",
            Finding::Pneumothorax => "Pneumothorax",
            Finding::PleuralEffusion => "Pleural Effusion",
            Finding::PleuralOther => "Pleural Other",
            Finding::Fracture => "Fracture",
            Finding::SupportDevices => "Support Devices",
        }
    }

    /// Whether the finding has a side.
    pub fn lateralised(self) -> bool {
        matches!(
            self,
            Finding::LungLesion
                | Finding::LungOpacity
                | Finding::Consolidation
                | Finding::Pneumonia
                | Finding::Atelectasis
                | Finding::Pneumothorax
                | Finding::PleuralEffusion
                | Finding::PleuralOther
                | Finding::Fracture
        )
    }

    /// Base prevalence per study (roughly MIMIC-CXR's label frequencies).
    pub fn prevalence(self) -> f64 {
        match self {
            Finding::EnlargedCardiomediastinum => 0.03,
            Finding::Cardiomegaly => 0.17,
            Finding::LungLesion => 0.03,
            Finding::LungOpacity => 0.15,
            Finding::Edema => 0.10,
            Finding::Consolidation => 0.05,
            Finding::Pneumonia => 0.06,
            Finding::Atelectasis => 0.16,
            Finding::Pneumothorax => 0.04,
            Finding::PleuralEffusion => 0.18,
            Finding::PleuralOther => 0.01,
            Finding::Fracture => 0.02,
            Finding::SupportDevices => 0.25,
        }
    }

    /// Minor findings are the ones reports omit at the configured omission rate.
    pub fn minor(self) -> bool {
        matches!(
            self,
            Finding::PleuralOther | Finding::Fracture | Finding::LungLesion | Finding::Atelectasis
        )
    }
}

/// The patient's side. Images follow the radiological convention of real PA/AP films: the
/// patient's left appears on the image's right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Patient's left.
    Left,
    /// Patient's right.
    Right,
    /// Both.
    Bilateral,
}

impl Side {
    /// The report word.
    pub fn word(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
            Side::Bilateral => "bilateral",
        }
    }
}

/// Severity, for findings that have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Mild / small.
    Mild,
    /// Moderate.
    Moderate,
    /// Severe / large.
    Severe,
}

/// Lung zone, for focal findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Zone {
    /// Upper zone.
    Upper,
    /// Mid zone.
    Middle,
    /// Lower zone (base).
    Lower,
}

/// One present finding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Present {
    /// Which.
    pub finding: Finding,
    /// Side, for lateralised findings.
    pub side: Option<Side>,
    /// Severity.
    pub severity: Severity,
    /// Zone, for focal lung findings.
    pub zone: Option<Zone>,
    /// Drawn faintly (harder to see than the report suggests).
    pub subtle: bool,
}

/// Everything the renderers need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyState {
    /// Present findings, sorted by finding.
    pub findings: Vec<Present>,
    /// Body width relative to average.
    pub body_scale: f32,
    /// Rotation of the patient in degrees.
    pub rotation: f32,
    /// Exposure (brightness) factor.
    pub exposure: f32,
    /// Portable AP film rather than PA.
    pub ap: bool,
    /// A lateral view exists.
    pub has_lateral: bool,
}

impl StudyState {
    /// The present finding of a kind, if any.
    pub fn get(&self, f: Finding) -> Option<&Present> {
        self.findings.iter().find(|p| p.finding == f)
    }

    /// `true` when no pathology (support devices allowed), CheXpert's "No Finding".
    pub fn no_finding(&self) -> bool {
        self.findings
            .iter()
            .all(|p| p.finding == Finding::SupportDevices)
    }
}

fn pick<R: Rng + ?Sized, T: Copy>(rng: &mut R, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn present<R: Rng + ?Sized>(rng: &mut R, finding: Finding, subtlety: f64) -> Present {
    let side = finding.lateralised().then(|| {
        pick(
            rng,
            &[
                Side::Left,
                Side::Left,
                Side::Right,
                Side::Right,
                Side::Bilateral,
            ],
        )
    });
    let side = match (finding, side) {
        // Edema is bilateral by nature; effusions with edema are mostly bilateral.
        (
            Finding::Pneumothorax | Finding::Fracture | Finding::LungLesion,
            Some(Side::Bilateral),
        ) => Some(pick(rng, &[Side::Left, Side::Right])),
        (_, s) => s,
    };
    let zone = matches!(
        finding,
        Finding::LungLesion
            | Finding::LungOpacity
            | Finding::Consolidation
            | Finding::Pneumonia
            | Finding::Atelectasis
    )
    .then(|| match finding {
        Finding::Atelectasis => pick(rng, &[Zone::Lower, Zone::Lower, Zone::Middle]),
        _ => pick(rng, &[Zone::Upper, Zone::Middle, Zone::Lower, Zone::Lower]),
    });
    Present {
        finding,
        side,
        severity: pick(
            rng,
            &[
                Severity::Mild,
                Severity::Mild,
                Severity::Moderate,
                Severity::Severe,
            ],
        ),
        zone,
        subtle: rng.random_bool(subtlety.clamp(0.0, 1.0)),
    }
}

/// Draw a fresh study: findings with their prevalence and the co-occurrences of real
/// radiographs (oedema with cardiomegaly and effusions; pneumonia with consolidation).
pub fn sample_state<R: Rng + ?Sized>(rng: &mut R, subtlety: f64) -> StudyState {
    let mut chosen: Vec<Present> = Vec::new();
    let has = |v: &Vec<Present>, f: Finding| v.iter().any(|p| p.finding == f);
    for f in Finding::ALL {
        let mut p = f.prevalence();
        if has(&chosen, Finding::Edema) && matches!(f, Finding::PleuralEffusion) {
            p = 0.6;
        }
        if has(&chosen, Finding::Cardiomegaly) && matches!(f, Finding::Edema) {
            p = 0.3;
        }
        if has(&chosen, Finding::Pneumonia) && matches!(f, Finding::Consolidation) {
            p = 0.5;
        }
        if rng.random_bool(p) {
            let mut x = present(rng, f, subtlety);
            if f == Finding::PleuralEffusion && has(&chosen, Finding::Edema) {
                x.side = Some(Side::Bilateral);
            }
            chosen.push(x);
        }
    }
    // Oedema sampled after cardiomegaly: add cardiomegaly often when oedema is present.
    if has(&chosen, Finding::Edema) && !has(&chosen, Finding::Cardiomegaly) && rng.random_bool(0.5)
    {
        chosen.push(present(rng, Finding::Cardiomegaly, subtlety));
    }
    chosen.sort_by_key(|p| p.finding);
    let ap = has(&chosen, Finding::SupportDevices) && rng.random_bool(0.7) || rng.random_bool(0.15);
    StudyState {
        findings: chosen,
        body_scale: rng.random_range(0.85..1.15),
        rotation: rng.random_range(-4.0..4.0),
        exposure: rng.random_range(0.85..1.15),
        ap,
        has_lateral: !ap && rng.random_bool(0.85),
    }
}

/// The next study of the same patient: findings persist (0.7), resolve, or appear.
pub fn follow_up<R: Rng + ?Sized>(rng: &mut R, previous: &StudyState, subtlety: f64) -> StudyState {
    let fresh = sample_state(rng, subtlety);
    let mut findings: Vec<Present> = previous
        .findings
        .iter()
        .filter(|_| rng.random_bool(0.7))
        .copied()
        .collect();
    for p in fresh.findings {
        if findings.iter().all(|q| q.finding != p.finding) && rng.random_bool(0.5) {
            findings.push(p);
        }
    }
    findings.sort_by_key(|p| p.finding);
    StudyState {
        findings,
        body_scale: previous.body_scale,
        ..fresh
    }
}
