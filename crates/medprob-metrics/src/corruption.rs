//! Clinically plausible image corruptions at five severities (SPEC §7), for robustness
//! reports: acquisition noise, motion/defocus blur, under- and over-exposure, lossy
//! archiving, patient rotation and low-resolution scanners.
//!
//! Images are single-channel, row-major, with intensities in `[0, 1]` (what
//! `medprob-data` decodes). Severity parameters follow the spirit of ImageNet-C
//! (Hendrycks & Dietterich 2019) scaled down for radiographs, whose diagnostic detail is
//! low-contrast; [`Corruption::parameter`] gives the value behind each level so reports
//! can state it. Noise is drawn from a seeded generator: the same seed gives the same image.

use image::{ImageBuffer, Luma};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};

/// One corruption type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    /// Additive Gaussian noise, standard deviation in intensity units.
    GaussianNoise,
    /// Gaussian blur, σ in pixels of a 224-pixel-wide image (scaled with the width).
    GaussianBlur,
    /// Contrast loss: intensities pulled towards the image mean by a factor.
    Contrast,
    /// Brightness shift: a constant added to every intensity (clipped to `[0, 1]`).
    Brightness,
    /// JPEG compression at a quality setting.
    Jpeg,
    /// In-plane rotation by degrees (bilinear, the corners filled with black).
    Rotation,
    /// Down-sampling by a factor and back up (triangle filter).
    Downsample,
}

/// The severities every corruption has.
pub const SEVERITIES: [u8; 5] = [1, 2, 3, 4, 5];

impl Corruption {
    /// All seven, in report order.
    pub const ALL: [Corruption; 7] = [
        Self::GaussianNoise,
        Self::GaussianBlur,
        Self::Contrast,
        Self::Brightness,
        Self::Jpeg,
        Self::Rotation,
        Self::Downsample,
    ];

    /// The name used in reports and plots.
    pub fn name(&self) -> &'static str {
        match self {
            Self::GaussianNoise => "gaussian noise",
            Self::GaussianBlur => "gaussian blur",
            Self::Contrast => "contrast loss",
            Self::Brightness => "brightness shift",
            Self::Jpeg => "jpeg compression",
            Self::Rotation => "rotation",
            Self::Downsample => "down-sampling",
        }
    }

    /// The parameter at severity 1–5: noise σ, blur σ (pixels at width 224), contrast
    /// factor, brightness shift, JPEG quality, degrees, down-sampling factor.
    pub fn parameter(&self, severity: u8) -> Result<f64> {
        let table: [f64; 5] = match self {
            Self::GaussianNoise => [0.02, 0.04, 0.08, 0.12, 0.16],
            Self::GaussianBlur => [0.5, 1.0, 1.5, 2.0, 3.0],
            Self::Contrast => [0.8, 0.6, 0.4, 0.3, 0.2],
            Self::Brightness => [0.05, 0.1, 0.2, 0.3, 0.4],
            Self::Jpeg => [50.0, 30.0, 20.0, 10.0, 5.0],
            Self::Rotation => [2.0, 5.0, 10.0, 15.0, 20.0],
            Self::Downsample => [1.5, 2.0, 3.0, 4.0, 6.0],
        };
        if !(1..=5).contains(&severity) {
            return Err(MetricsError::InvalidParameter {
                name: "corruption severity",
                value: severity as f64,
                reason: "severities run from 1 to 5",
            });
        }
        Ok(table[severity as usize - 1])
    }

    /// The corrupted copy of a `width × height` image. `seed` drives the noise only.
    pub fn apply(
        &self,
        severity: u8,
        pixels: &[f32],
        width: u32,
        height: u32,
        seed: u64,
    ) -> Result<Vec<f32>> {
        let p = self.parameter(severity)?;
        if width == 0 || height == 0 || pixels.len() != width as usize * height as usize {
            return Err(MetricsError::Length {
                what: "Corruption::apply",
                detail: format!("{} pixels for a {width}×{height} image", pixels.len()),
            });
        }
        let clip = |v: f32| v.clamp(0.0, 1.0);
        Ok(match self {
            Self::GaussianNoise => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let normal = Normal::new(0.0f32, p as f32).expect("σ is positive");
                pixels
                    .iter()
                    .map(|&v| clip(v + normal.sample(&mut rng)))
                    .collect()
            }
            Self::GaussianBlur => {
                let sigma = (p * width as f64 / 224.0) as f32;
                image::imageops::blur(&buffer(pixels, width, height), sigma).into_raw()
            }
            Self::Contrast => {
                let mean = pixels.iter().map(|&v| v as f64).sum::<f64>() / pixels.len() as f64;
                let (m, c) = (mean as f32, p as f32);
                pixels.iter().map(|&v| clip((v - m) * c + m)).collect()
            }
            Self::Brightness => pixels.iter().map(|&v| clip(v + p as f32)).collect(),
            Self::Jpeg => jpeg_round_trip(pixels, width, height, p as u8)?,
            Self::Rotation => rotate(pixels, width, height, p.to_radians()),
            Self::Downsample => {
                let small = (
                    ((width as f64 / p).round() as u32).max(1),
                    ((height as f64 / p).round() as u32).max(1),
                );
                let filter = image::imageops::FilterType::Triangle;
                let down = image::imageops::resize(
                    &buffer(pixels, width, height),
                    small.0,
                    small.1,
                    filter,
                );
                image::imageops::resize(&down, width, height, filter)
                    .into_raw()
                    .into_iter()
                    .map(clip)
                    .collect()
            }
        })
    }
}

fn buffer(pixels: &[f32], width: u32, height: u32) -> ImageBuffer<Luma<f32>, Vec<f32>> {
    ImageBuffer::from_raw(width, height, pixels.to_vec()).expect("length checked by the caller")
}

fn jpeg_round_trip(pixels: &[f32], width: u32, height: u32, quality: u8) -> Result<Vec<f32>> {
    let bytes: Vec<u8> = pixels
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let mut out = Vec::new();
    let fail = |e: image::ImageError| MetricsError::Codec {
        what: "JPEG corruption",
        message: e.to_string(),
    };
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode(&bytes, width, height, image::ExtendedColorType::L8)
        .map_err(fail)?;
    let decoded = image::load_from_memory_with_format(&out, image::ImageFormat::Jpeg)
        .map_err(fail)?
        .to_luma8();
    Ok(decoded
        .into_raw()
        .into_iter()
        .map(|v| v as f32 / 255.0)
        .collect())
}

/// Rotate about the centre by `angle` radians (counter-clockwise), bilinear sampling.
fn rotate(pixels: &[f32], width: u32, height: u32, angle: f64) -> Vec<f32> {
    let (w, h) = (width as usize, height as usize);
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let (sin, cos) = angle.sin_cos();
    let at = |x: isize, y: isize| -> f64 {
        if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
            0.0
        } else {
            pixels[y as usize * w + x as usize] as f64
        }
    };
    let mut out = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            // Inverse map: where in the source does this output pixel come from?
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            let sx = cos * dx - sin * dy + cx;
            let sy = sin * dx + cos * dy + cy;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            let v = at(x0, y0) * (1.0 - fx) * (1.0 - fy)
                + at(x0 + 1, y0) * fx * (1.0 - fy)
                + at(x0, y0 + 1) * (1.0 - fx) * fy
                + at(x0 + 1, y0 + 1) * fx * fy;
            out[y * w + x] = v as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 224×160 image: a bright square on a mid-grey, dark-edged background.
    fn test_image() -> (Vec<f32>, u32, u32) {
        let (w, h) = (224u32, 160u32);
        let mut p = vec![0.5f32; (w * h) as usize];
        for y in 0..h {
            for x in 0..w {
                if (60..120).contains(&x) && (50..110).contains(&y) {
                    p[(y * w + x) as usize] = 0.9;
                }
                if x == 0 || y == 0 {
                    p[(y * w + x) as usize] = 0.1;
                }
            }
        }
        (p, w, h)
    }

    fn mean_abs_diff(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() as f64)
            .sum::<f64>()
            / a.len() as f64
    }

    #[test]
    fn damage_grows_with_severity_and_stays_in_range() {
        let (img, w, h) = test_image();
        for c in Corruption::ALL {
            let mut last = -1.0;
            for s in SEVERITIES {
                let out = c.apply(s, &img, w, h, 7).unwrap();
                assert_eq!(out.len(), img.len(), "{c:?}");
                assert!(out.iter().all(|v| (0.0..=1.0).contains(v)), "{c:?} {s}");
                let d = mean_abs_diff(&img, &out);
                assert!(d > 0.0, "{c:?} severity {s} changed nothing");
                // JPEG damage on a flat synthetic image is not strictly monotone; the rest is.
                if c != Corruption::Jpeg {
                    assert!(
                        d >= last - 1e-6,
                        "{c:?}: severity {s} did less than {}",
                        s - 1
                    );
                }
                last = d;
            }
        }
    }

    #[test]
    fn hand_checked_values() {
        let img = vec![0.2f32, 0.4, 0.6, 0.8];
        // Contrast 0.8 about the mean 0.5.
        let c = Corruption::Contrast.apply(1, &img, 2, 2, 0).unwrap();
        for (o, i) in c.iter().zip(&img) {
            assert!((o - ((i - 0.5) * 0.8 + 0.5)).abs() < 1e-6);
        }
        let b = Corruption::Brightness.apply(5, &img, 2, 2, 0).unwrap();
        assert_eq!(b, vec![0.6, 0.8, 1.0, 1.0]);
        // A rotation by 0° would be the identity; by 20° the centre pixel of an odd image stays.
        let mut odd = vec![0.0f32; 9];
        odd[4] = 1.0;
        let r = Corruption::Rotation.apply(5, &odd, 3, 3, 0).unwrap();
        assert!((r[4] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn noise_is_seeded() {
        let (img, w, h) = test_image();
        let a = Corruption::GaussianNoise.apply(3, &img, w, h, 11).unwrap();
        let b = Corruption::GaussianNoise.apply(3, &img, w, h, 11).unwrap();
        let c = Corruption::GaussianNoise.apply(3, &img, w, h, 12).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn bad_input_is_named() {
        let e = Corruption::Jpeg.apply(6, &[0.0; 4], 2, 2, 0).unwrap_err();
        assert!(e.to_string().contains("severity"), "{e}");
        let e = Corruption::Rotation
            .apply(1, &[0.0; 3], 2, 2, 0)
            .unwrap_err();
        assert!(e.to_string().contains("3 pixels for a 2×2"), "{e}");
    }
}
