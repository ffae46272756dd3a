//! Procedural frontal chest radiographs rendered from a study's hidden state.
//!
//! Radiological convention, as on real PA/AP films: the patient's left is on the image's
//! right. The anatomy is a small set of shapes in normalised coordinates (`x`, `y` in
//! `[0, 1]`, `y` down): torso, two lungs whose bases are cut by the diaphragm domes (sharp
//! costophrenic angles at their lateral lower corners), mediastinum and heart (wider with
//! cardiomegaly), spine, ribs, and faint lung markings. Findings change exactly these
//! shapes: an effusion fills a lung base with fluid and blunts its angle, a pneumothorax
//! removes markings lateral to a thin pleural line, a fracture breaks a rib, devices draw
//! tubes and lines, opacities add blobs at their lung zone. Patient size, rotation, exposure
//! and noise vary per study.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::state::{Finding, Present, Severity, Side, StudyState, Zone};
use crate::image::GreyImage;

/// Rendering knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderOptions {
    /// Image side in pixels.
    pub size: u32,
    /// Standard deviation of the pixel noise.
    pub noise: f32,
    /// Apply the state's patient rotation and exposure (off gives canonical images for tests).
    pub vary_pose: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            size: 256,
            noise: 0.02,
            vary_pose: true,
        }
    }
}

/// Where the lung of a side lies (image coordinates).
#[derive(Debug, Clone, Copy)]
struct Lung {
    cx: f32,
    /// Image-side sign: −1 for the patient's right (image left), +1 for the left.
    sign: f32,
    hw: f32,
}

const LUNG_CY: f32 = 0.43;
const LUNG_HH: f32 = 0.27;

impl Lung {
    fn of(side: Side, body: f32) -> Lung {
        let sign = if side == Side::Left { 1.0 } else { -1.0 };
        Lung {
            cx: 0.5 + sign * 0.17 * body,
            sign,
            hw: 0.13 * body,
        }
    }

    /// Diaphragm dome height under this lung at `x`: highest mid-lung, lowest laterally.
    fn dome(&self, x: f32) -> f32 {
        let t = ((x - self.cx) / self.hw).clamp(-1.0, 1.0);
        0.64 + 0.06 * t * t
    }

    /// A rounded apex above the lung's centre line; below it, side walls that taper a little
    /// down to the diaphragm, which they meet at a sharp costophrenic angle.
    fn inside(&self, x: f32, y: f32) -> bool {
        let dx = (x - self.cx) / self.hw;
        if y < LUNG_CY {
            let dy = (y - LUNG_CY) / LUNG_HH;
            dx * dx + dy * dy <= 1.0
        } else {
            dx.abs() <= 1.0 - 0.15 * (y - LUNG_CY) / 0.25 && y <= self.dome(x)
        }
    }

    /// The lateral lower corner (costophrenic angle), where effusions show first.
    #[cfg(test)]
    fn angle(&self) -> (f32, f32) {
        let x = self.cx + self.sign * 0.8 * self.hw;
        (x, self.dome(x) - 0.01)
    }
}

fn zone_y(z: Option<Zone>) -> f32 {
    match z {
        Some(Zone::Upper) => 0.28,
        Some(Zone::Middle) => 0.42,
        Some(Zone::Lower) | None => 0.56,
    }
}

fn strength(p: &Present) -> f32 {
    let s = match p.severity {
        Severity::Mild => 0.6,
        Severity::Moderate => 0.8,
        Severity::Severe => 1.0,
    };
    if p.subtle {
        s * 0.4
    } else {
        s
    }
}

fn sides(p: &Present) -> Vec<Side> {
    match p.side {
        Some(Side::Bilateral) => vec![Side::Right, Side::Left],
        Some(s) => vec![s],
        None => vec![],
    }
}

/// Smooth value noise in `[0, 1]` from an integer lattice hash (for lung markings).
fn value_noise(x: f32, y: f32, seed: u32) -> f32 {
    let hash = |i: i32, j: i32| -> f32 {
        let mut h =
            (i as u32).wrapping_mul(0x85eb_ca6b) ^ (j as u32).wrapping_mul(0xc2b2_ae35) ^ seed;
        h ^= h >> 15;
        h = h.wrapping_mul(0x2c1b_3c6d);
        h ^= h >> 12;
        (h & 0xffff) as f32 / 65535.0
    };
    let (i, j) = (x.floor() as i32, y.floor() as i32);
    let (fx, fy) = (x - x.floor(), y - y.floor());
    let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
    let a = hash(i, j) + (hash(i + 1, j) - hash(i, j)) * sx;
    let b = hash(i, j + 1) + (hash(i + 1, j + 1) - hash(i, j + 1)) * sx;
    a + (b - a) * sy
}

fn gauss(dx: f32, dy: f32, r: f32) -> f32 {
    (-(dx * dx + dy * dy) / (2.0 * r * r)).exp()
}

/// Distance from `(x, y)` to the segment `a–b`.
fn segment_distance(x: f32, y: f32, a: (f32, f32), b: (f32, f32)) -> f32 {
    let (vx, vy) = (b.0 - a.0, b.1 - a.1);
    let t = (((x - a.0) * vx + (y - a.1) * vy) / (vx * vx + vy * vy)).clamp(0.0, 1.0);
    ((x - a.0 - t * vx).powi(2) + (y - a.1 - t * vy).powi(2)).sqrt()
}

/// Render the frontal view of `state`.
pub fn render_frontal<R: Rng + ?Sized>(
    state: &StudyState,
    options: &RenderOptions,
    rng: &mut R,
) -> GreyImage {
    let n = options.size as usize;
    let body = state.body_scale;
    let lungs = [Lung::of(Side::Right, body), Lung::of(Side::Left, body)];
    let lung_of = |s: Side| if s == Side::Left { lungs[1] } else { lungs[0] };
    let get = |f: Finding| state.get(f);
    let heart_scale = 1.0 + get(Finding::Cardiomegaly).map_or(0.0, |p| 0.45 * strength(p) + 0.1);
    let (heart_cx, heart_cy, heart_hh) = (0.5 + 0.035, 0.55, 0.11);
    let heart_hw = 0.105 * body * heart_scale;
    let media_hw = 0.045
        * body
        * get(Finding::EnlargedCardiomediastinum).map_or(1.0, |p| 1.0 + 0.7 * strength(p));
    let seed: u32 = rng.random();
    let fracture: Option<(Side, usize)> =
        get(Finding::Fracture).map(|p| (sides(p)[0], 3 + (seed % 3) as usize));
    let pneumo: Vec<(Lung, f32)> = get(Finding::Pneumothorax)
        .map(|p| {
            sides(p)
                .into_iter()
                .map(|s| (lung_of(s), 0.25 + 0.35 * strength(p)))
                .collect()
        })
        .unwrap_or_default();
    let mut px = canvas(n, |x, y| {
        // Torso: soft tissue inside an ellipse, air outside.
        let (tx, ty) = ((x - 0.5) / (0.40 * body), (y - 0.55) / 0.52);
        let torso = tx * tx + ty * ty <= 1.0;
        let mut v = if torso { 0.46 } else { 0.06 };
        let mut lung_here: Option<&Lung> = None;
        for l in &lungs {
            if l.inside(x, y) {
                lung_here = Some(l);
            }
        }
        if let Some(l) = lung_here {
            // Aerated lung, with faint branching markings.
            let mut markings = 0.05 * value_noise(x * 40.0, y * 40.0, seed)
                + 0.03 * value_noise(x * 90.0, y * 90.0, seed ^ 7);
            if let Some((_, width)) = pneumo.iter().find(|(pl, _)| pl.cx == l.cx) {
                // Lateral to the pleural line: no markings, darker.
                let edge = l.cx + l.sign * l.hw * (1.0 - width);
                let lateral = (x - edge) * l.sign > 0.0 && y < LUNG_CY + 0.1;
                if lateral {
                    markings = -0.05;
                }
            }
            v = 0.16 + markings;
        } else if torso && y > 0.62 {
            // Below the domes: abdomen.
            v = 0.58;
        }
        // Spine and mediastinum.
        if (x - 0.5).abs() < 0.035 && y > 0.1 {
            v = v.max(0.55);
        }
        if (x - 0.5).abs() < media_hw && y > 0.1 && y < 0.48 {
            v = v.max(0.66);
        }
        // Heart.
        let (hx, hy) = ((x - heart_cx) / heart_hw, (y - heart_cy) / heart_hh);
        if hx * hx + hy * hy <= 1.0 {
            v = v.max(0.72);
        }
        // Ribs: arcs across each lung, brighter where over lung.
        if torso && y < 0.68 {
            for (side, l) in [(Side::Right, lungs[0]), (Side::Left, lungs[1])] {
                let t = (x - l.cx) / (l.hw * 1.3);
                if t.abs() > 1.0 {
                    continue;
                }
                for k in 0..8 {
                    let ry = 0.17 + 0.06 * k as f32 + 0.05 * t * t - 0.02 * t * l.sign;
                    if (y - ry).abs() < 0.006 {
                        let broken = fracture == Some((side, k)) && (t * l.sign - 0.6).abs() < 0.06;
                        if !broken {
                            v += 0.10;
                        }
                    }
                }
            }
        }
        v
    });
    // Findings drawn on top, each limited to where it lives.
    for p in &state.findings {
        let s = strength(p);
        for side in sides(p) {
            let l = lung_of(side);
            match p.finding {
                Finding::PleuralEffusion => {
                    // Fluid fills the base up to a level, rising laterally (meniscus).
                    let depth = 0.05 + 0.12 * s;
                    paint(&mut px, n, |x, y, _| {
                        if !l.inside(x, y) {
                            return None;
                        }
                        let lateral = ((x - l.cx) * l.sign / l.hw).clamp(0.0, 1.0);
                        let level = l.dome(x) - depth - 0.05 * lateral;
                        (y > level).then_some(0.62 * s + 0.16 * (1.0 - s))
                    });
                }
                Finding::Consolidation
                | Finding::Pneumonia
                | Finding::LungOpacity
                | Finding::Atelectasis
                | Finding::LungLesion => {
                    let (cy, cx) = (zone_y(p.zone), l.cx + 0.3 * l.sign * l.hw);
                    let (r, gain, flat) = match p.finding {
                        Finding::Consolidation => (0.06, 0.40, 1.0),
                        Finding::Pneumonia => (0.07, 0.32, 1.0),
                        Finding::LungOpacity => (0.08, 0.22, 1.0),
                        Finding::Atelectasis => (0.05, 0.30, 3.0),
                        _ => (0.018, 0.45, 1.0),
                    };
                    paint(&mut px, n, |x, y, cur| {
                        if !l.inside(x, y) {
                            return None;
                        }
                        let patchy = if p.finding == Finding::Pneumonia {
                            0.6 + 0.4 * value_noise(x * 50.0, y * 50.0, seed ^ 3)
                        } else {
                            1.0
                        };
                        let g =
                            gauss((x - cx) / flat, (y - cy) * flat.sqrt(), r) * gain * s * patchy;
                        (g > 0.005).then_some(cur + g)
                    });
                }
                Finding::Pneumothorax => {
                    // The visceral pleural line.
                    let width = 0.25 + 0.35 * s;
                    let edge = l.cx + l.sign * l.hw * (1.0 - width);
                    paint(&mut px, n, |x, y, _| {
                        (l.inside(x, y) && (x - edge).abs() < 0.003 && y < LUNG_CY + 0.1)
                            .then_some(0.45)
                    });
                }
                Finding::PleuralOther => {
                    paint(&mut px, n, |x, y, _| {
                        let (dx, dy) = ((x - l.cx) / l.hw, (y - LUNG_CY) / LUNG_HH);
                        let rim = (dx * dx + dy * dy).sqrt();
                        (l.inside(x, y) && rim > 0.9 && y < 0.35).then_some(0.5 * s + 0.16)
                    });
                }
                _ => {}
            }
        }
        match p.finding {
            Finding::Edema => {
                let gain = 0.25 * s;
                paint(&mut px, n, |x, y, cur| {
                    let in_lung = lungs.iter().any(|l| l.inside(x, y));
                    let g =
                        gain * (gauss(x - 0.38, y - 0.45, 0.09) + gauss(x - 0.62, y - 0.45, 0.09));
                    (in_lung && g > 0.005).then_some(cur + g)
                });
            }
            Finding::SupportDevices => {
                let lines = [
                    ((0.5, 0.0), (0.5, 0.3)),
                    ((0.28, 0.08), (0.47, 0.33)),
                    ((0.52, 0.0), (0.55, 0.8)),
                ];
                paint(&mut px, n, |x, y, _| {
                    lines
                        .iter()
                        .any(|(a, b)| segment_distance(x, y, *a, *b) < 0.004)
                        .then_some(0.95)
                });
            }
            _ => {}
        }
    }
    finish(px, n, state, options, rng)
}

/// An `n × n` image whose pixel at normalised `(x, y)` (pixel centres) is `f(x, y)`.
fn canvas(n: usize, f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    let mut px = Vec::with_capacity(n * n);
    for row in 0..n {
        let y = (row as f32 + 0.5) / n as f32;
        for col in 0..n {
            px.push(f((col as f32 + 0.5) / n as f32, y));
        }
    }
    px
}

/// Replace every pixel where `f(x, y, current value)` gives a new value.
fn paint(px: &mut [f32], n: usize, f: impl Fn(f32, f32, f32) -> Option<f32>) {
    for row in 0..n {
        let y = (row as f32 + 0.5) / n as f32;
        for col in 0..n {
            let x = (col as f32 + 0.5) / n as f32;
            let p = &mut px[row * n + col];
            if let Some(v) = f(x, y, *p) {
                *p = v;
            }
        }
    }
}

/// Render the lateral view of `state` (patient facing the image's left): one lung field
/// over the other, the heart anterior and low, the spine posterior, the diaphragm below.
/// Effusions fill the posterior costophrenic sulcus; devices and dense opacities project.
pub fn render_lateral<R: Rng + ?Sized>(
    state: &StudyState,
    options: &RenderOptions,
    rng: &mut R,
) -> GreyImage {
    let n = options.size as usize;
    let body = state.body_scale;
    let heart_scale = 1.0
        + state
            .get(Finding::Cardiomegaly)
            .map_or(0.0, |p| 0.35 * strength(p) + 0.05);
    let seed: u32 = rng.random();
    let effusion = state.get(Finding::PleuralEffusion).map(strength);
    let dome = |x: f32| 0.66 + 0.08 * ((x - 0.5) / 0.3).powi(2);
    let mut px = canvas(n, |x, y| {
        let (tx, ty) = ((x - 0.5) / (0.36 * body), (y - 0.55) / 0.52);
        let torso = tx * tx + ty * ty <= 1.0;
        let mut v = if torso { 0.48 } else { 0.06 };
        let (lx, ly) = ((x - 0.5) / (0.27 * body), (y - 0.44) / 0.3);
        let lung = lx * lx + ly * ly <= 1.0 && y < dome(x);
        if lung {
            v = 0.2 + 0.05 * value_noise(x * 40.0, y * 40.0, seed);
            // Posterior sulcus (image right, low): fluid blunts it.
            if let Some(s) = effusion {
                let depth = 0.04 + 0.1 * s;
                let posterior = ((x - 0.5) / (0.27 * body)).clamp(0.0, 1.0);
                if y > dome(x) - depth * (0.3 + posterior) {
                    v = 0.62 * s + 0.2 * (1.0 - s);
                }
            }
        } else if torso && y > 0.6 {
            v = 0.58;
        }
        // Spine (posterior), sternum (anterior).
        if torso && (x - (0.5 + 0.3 * body)).abs() < 0.04 && y > 0.12 {
            v = v.max(0.68);
        }
        if torso && (x - (0.5 - 0.32 * body)).abs() < 0.012 && y > 0.2 && y < 0.6 {
            v = v.max(0.62);
        }
        // Heart: anterior and low.
        let (hx, hy) = (
            (x - (0.42 - 0.03 * heart_scale)) / (0.14 * body * heart_scale),
            (y - 0.55) / 0.13,
        );
        if hx * hx + hy * hy <= 1.0 {
            v = v.max(0.66);
        }
        v
    });
    for p in &state.findings {
        let s = strength(p);
        match p.finding {
            Finding::Consolidation
            | Finding::Pneumonia
            | Finding::LungOpacity
            | Finding::LungLesion => {
                let (cy, r) = (
                    zone_y(p.zone),
                    if p.finding == Finding::LungLesion {
                        0.02
                    } else {
                        0.07
                    },
                );
                paint(&mut px, n, |x, y, cur| {
                    let g = gauss(x - 0.55, y - cy, r) * 0.3 * s;
                    (g > 0.005).then_some(cur + g)
                });
            }
            Finding::SupportDevices => {
                paint(&mut px, n, |x, y, _| {
                    (segment_distance(x, y, (0.45, 0.0), (0.43, 0.3)) < 0.004).then_some(0.95)
                });
            }
            _ => {}
        }
    }
    finish(px, n, state, options, rng)
}

/// Patient rotation, exposure and noise; clamp to `[0, 1]`.
fn finish<R: Rng + ?Sized>(
    px: Vec<f32>,
    n: usize,
    state: &StudyState,
    options: &RenderOptions,
    rng: &mut R,
) -> GreyImage {
    let img = GreyImage {
        width: n as u32,
        height: n as u32,
        pixels: px,
    };
    let (theta, exposure) = if options.vary_pose {
        (state.rotation.to_radians(), state.exposure)
    } else {
        (0.0, 1.0)
    };
    let (sin, cos) = theta.sin_cos();
    let c = n as f32 / 2.0;
    let normal = rand_distr::Normal::new(0.0f32, options.noise.max(0.0)).expect("finite noise");
    let mut out = Vec::with_capacity(n * n);
    for row in 0..n {
        for col in 0..n {
            let (u, v) = (col as f32 + 0.5 - c, row as f32 + 0.5 - c);
            let (x, y) = (c + cos * u - sin * v, c + sin * u + cos * v);
            let s = img.sample_clamped(x, y);
            let noise = if options.noise > 0.0 {
                rng.sample(normal)
            } else {
                0.0
            };
            out.push((s * exposure + noise).clamp(0.0, 1.0));
        }
    }
    GreyImage {
        width: n as u32,
        height: n as u32,
        pixels: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn normal_state() -> StudyState {
        StudyState {
            findings: vec![],
            body_scale: 1.0,
            rotation: 0.0,
            exposure: 1.0,
            ap: false,
            has_lateral: true,
        }
    }

    fn with(f: Finding, side: Option<Side>, severity: Severity) -> StudyState {
        let mut s = normal_state();
        s.findings.push(Present {
            finding: f,
            side,
            severity,
            zone: Some(Zone::Lower),
            subtle: false,
        });
        s
    }

    fn render(s: &StudyState) -> GreyImage {
        let opts = RenderOptions {
            size: 256,
            noise: 0.0,
            vary_pose: false,
        };
        render_frontal(s, &opts, &mut rand::rngs::StdRng::seed_from_u64(1))
    }

    /// Width of the bright heart silhouette on the row through its centre.
    fn heart_width(img: &GreyImage) -> usize {
        let n = img.width as usize;
        let row = (0.55 * n as f32) as usize;
        let centre = (0.535 * n as f32) as usize;
        let bright = |c: usize| img.pixels[row * n + c] >= 0.7;
        let left = (0..centre).rev().take_while(|&c| bright(c)).count();
        let right = (centre..n).take_while(|&c| bright(c)).count();
        left + right
    }

    fn angle_brightness(img: &GreyImage, side: Side) -> f32 {
        let n = img.width as usize;
        let (x, y) = Lung::of(side, 1.0).angle();
        let (c, r) = ((x * n as f32) as usize, (y * n as f32) as usize);
        let mut sum = 0.0;
        for rr in r - 3..=r {
            for cc in c - 2..=c + 2 {
                sum += img.pixels[rr * n + cc];
            }
        }
        sum / 20.0
    }

    #[test]
    fn cardiomegaly_widens_the_heart_silhouette() {
        let normal = heart_width(&render(&normal_state()));
        let mild = heart_width(&render(&with(Finding::Cardiomegaly, None, Severity::Mild)));
        let severe = heart_width(&render(&with(
            Finding::Cardiomegaly,
            None,
            Severity::Severe,
        )));
        assert!(normal > 40, "{normal}");
        assert!(mild as f32 > normal as f32 * 1.25, "{normal} → {mild}");
        assert!(severe > mild, "{mild} → {severe}");
    }

    #[test]
    fn a_left_effusion_blunts_the_left_angle_only() {
        let normal = render(&normal_state());
        let left = render(&with(
            Finding::PleuralEffusion,
            Some(Side::Left),
            Severity::Moderate,
        ));
        let (nl, nr) = (
            angle_brightness(&normal, Side::Left),
            angle_brightness(&normal, Side::Right),
        );
        let (ll, lr) = (
            angle_brightness(&left, Side::Left),
            angle_brightness(&left, Side::Right),
        );
        assert!(nl < 0.3 && nr < 0.3, "sharp, aerated angles: {nl} {nr}");
        assert!(ll > nl + 0.25, "left angle blunted: {nl} → {ll}");
        assert!((lr - nr).abs() < 0.01, "right angle untouched: {nr} → {lr}");
        // Radiological convention: the patient's left is on the image's right.
        assert!(Lung::of(Side::Left, 1.0).angle().0 > 0.5);
    }

    #[test]
    fn a_fracture_breaks_a_rib_and_devices_draw_lines() {
        let normal = render(&normal_state());
        let broken = render(&with(Finding::Fracture, Some(Side::Right), Severity::Mild));
        let changed = normal
            .pixels
            .iter()
            .zip(&broken.pixels)
            .filter(|(a, b)| (*a - *b).abs() > 0.05)
            .count();
        assert!(
            changed > 5 && changed < 200,
            "a small gap: {changed} pixels"
        );
        let devices = render(&with(Finding::SupportDevices, None, Severity::Mild));
        let very_bright = devices.pixels.iter().filter(|&&p| p > 0.9).count();
        assert!(very_bright > 100, "{very_bright}");
        assert_eq!(normal.pixels.iter().filter(|&&p| p > 0.9).count(), 0);
    }

    /// Every finding changes the frontal image, and a lateralised one on its own side: the
    /// patient's left is the image's right half.
    #[test]
    fn every_finding_changes_the_image_on_its_side() {
        let normal = render(&normal_state());
        let n = normal.width as usize;
        for f in Finding::ALL {
            let sides: &[Option<Side>] = if f.lateralised() {
                &[Some(Side::Left), Some(Side::Right)]
            } else {
                &[None]
            };
            for &side in sides {
                let img = render(&with(f, side, Severity::Severe));
                let (mut left_half, mut right_half) = (0.0f32, 0.0f32);
                for (i, (a, b)) in normal.pixels.iter().zip(&img.pixels).enumerate() {
                    let d = (a - b).abs();
                    if i % n < n / 2 {
                        left_half += d;
                    } else {
                        right_half += d;
                    }
                }
                assert!(
                    left_half + right_half > 0.5,
                    "{f:?} {side:?} changes nothing"
                );
                match side {
                    Some(Side::Left) => assert!(
                        right_half > 3.0 * left_half,
                        "{f:?} left: {left_half} | {right_half}"
                    ),
                    Some(Side::Right) => assert!(
                        left_half > 3.0 * right_half,
                        "{f:?} right: {left_half} | {right_half}"
                    ),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn lateral_view_shows_effusion_and_heart_size() {
        let mean = |img: &GreyImage| img.pixels.iter().sum::<f32>() / img.pixels.len() as f32;
        let opts = RenderOptions {
            size: 128,
            noise: 0.0,
            vary_pose: false,
        };
        let r =
            |s: &StudyState| render_lateral(s, &opts, &mut rand::rngs::StdRng::seed_from_u64(1));
        let normal = r(&normal_state());
        let effusion = r(&with(
            Finding::PleuralEffusion,
            Some(Side::Left),
            Severity::Severe,
        ));
        let heart = r(&with(Finding::Cardiomegaly, None, Severity::Severe));
        assert!(mean(&effusion) > mean(&normal) + 0.002);
        assert!(mean(&heart) > mean(&normal) + 0.002);
    }

    #[test]
    fn rendering_is_seeded() {
        let s = with(Finding::Pneumonia, Some(Side::Right), Severity::Moderate);
        let opts = RenderOptions::default();
        let a = render_frontal(&s, &opts, &mut rand::rngs::StdRng::seed_from_u64(5));
        let b = render_frontal(&s, &opts, &mut rand::rngs::StdRng::seed_from_u64(5));
        assert_eq!(a, b);
    }
}
