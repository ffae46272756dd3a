//! Radiographs: decoding to greyscale, the evaluation transform, and seeded training
//! augmentation (SPEC §5).
//!
//! Decoding (PNG and JPEG, 8- or 16-bit, greyscale or RGB) is the `image` crate's; the
//! result is a greyscale `f32` image in `[0, 1]`. An unreadable image is an error naming
//! the file — never a black placeholder.
//!
//! * Evaluation: resize the shorter side to `size` (area-aware triangle filter), centre crop.
//! * Training: the same resize, then one affine warp (random resized crop of 80–100 % of the
//!   area, aspect 3/4–4/3, rotation ±5°, bilinear, zero fill), brightness/contrast jitter
//!   and, sometimes, a light Gaussian blur. **No horizontal flip unless asked for**: a flip
//!   swaps laterality, so a left effusion would become a right one while its report still
//!   says "left".
//!
//! Output is `[C, size, size]` row-major, normalised `(x − mean)/std` (default 0.5/0.25, the
//! reference's), with the grey channel replicated when `C = 3`.

use std::path::Path;

use image::{imageops, ImageBuffer, Luma};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::limits::InputLimits;

/// A greyscale image with values in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GreyImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major pixels.
    pub pixels: Vec<f32>,
}

impl GreyImage {
    /// Bilinear sample at continuous pixel coordinates (pixel centres at `i + 0.5`); `0`
    /// outside the image.
    #[inline]
    fn bilinear(&self, x: f32, y: f32) -> f32 {
        let (w, h) = (self.width as i64, self.height as i64);
        let (fx, fy) = (x - 0.5, y - 0.5);
        let (x0, y0) = (fx.floor(), fy.floor());
        let (ax, ay) = (fx - x0, fy - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let at = |xi: i64, yi: i64| -> f32 {
            if xi < 0 || yi < 0 || xi >= w || yi >= h {
                0.0
            } else {
                self.pixels[(yi * w + xi) as usize]
            }
        };
        let top = at(x0, y0) * (1.0 - ax) + at(x0 + 1, y0) * ax;
        let bottom = at(x0, y0 + 1) * (1.0 - ax) + at(x0 + 1, y0 + 1) * ax;
        top * (1.0 - ay) + bottom * ay
    }

    /// Bilinear sample with coordinates clamped to the image (edge pixels repeat).
    pub fn sample_clamped(&self, x: f32, y: f32) -> f32 {
        let x = x.clamp(0.5, self.width as f32 - 0.5);
        let y = y.clamp(0.5, self.height as f32 - 0.5);
        self.bilinear(x, y)
    }

    /// Resize so that the shorter side is `side`, keeping the aspect ratio.
    pub fn resize_shorter_side(&self, side: u32) -> GreyImage {
        let (w, h) = (self.width, self.height);
        let scale = side as f64 / w.min(h) as f64;
        let nw = ((w as f64 * scale).round() as u32).max(side);
        let nh = ((h as f64 * scale).round() as u32).max(side);
        if (nw, nh) == (w, h) {
            return self.clone();
        }
        let buf: ImageBuffer<Luma<f32>, Vec<f32>> =
            ImageBuffer::from_raw(w, h, self.pixels.clone()).expect("w·h pixels");
        let out = imageops::resize(&buf, nw, nh, imageops::FilterType::Triangle);
        GreyImage {
            width: nw,
            height: nh,
            pixels: out.into_raw(),
        }
    }
}

/// Decode a PNG or JPEG file to greyscale `[0, 1]` under the default [`InputLimits`].
/// Errors name the file.
pub fn decode(path: &Path) -> Result<GreyImage> {
    decode_limited(path, &InputLimits::default())
}

/// [`decode`] under explicit limits: the file size is checked before it is read, the
/// pixel count from the header before any pixel is decoded.
pub fn decode_limited(path: &Path, limits: &InputLimits) -> Result<GreyImage> {
    let size = std::fs::metadata(path)
        .map_err(|e| DataError::io(path, e))?
        .len();
    if size > limits.max_image_bytes {
        return Err(DataError::Report {
            path: path.to_path_buf(),
            reason: format!(
                "image file of {size} bytes exceeds limits.max_image_bytes = {}",
                limits.max_image_bytes
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_bytes_limited(&bytes, path, limits)
}

/// Decode image bytes under the default limits; `source` names them in errors.
pub fn decode_bytes(bytes: &[u8], source: &Path) -> Result<GreyImage> {
    decode_bytes_limited(bytes, source, &InputLimits::default())
}

/// Decode image bytes under explicit limits; `source` names them in errors.
pub fn decode_bytes_limited(
    bytes: &[u8],
    source: &Path,
    limits: &InputLimits,
) -> Result<GreyImage> {
    let bad = |reason: String| DataError::Report {
        path: source.to_path_buf(),
        reason,
    };
    if bytes.len() as u64 > limits.max_image_bytes {
        return Err(bad(format!(
            "image of {} bytes exceeds limits.max_image_bytes = {}",
            bytes.len(),
            limits.max_image_bytes
        )));
    }
    // One decoder: the header is parsed once, the size checked, then the pixels decoded.
    let mut decoder = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("cannot read image: {e}")))?
        .into_decoder()
        .map_err(|e| bad(format!("cannot decode image: {e}")))?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    if w as u64 * h as u64 > limits.max_image_pixels {
        return Err(bad(format!(
            "image of {w} × {h} pixels exceeds limits.max_image_pixels = {}",
            limits.max_image_pixels
        )));
    }
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(w);
    decoder_limits.max_image_height = Some(h);
    // The decoded buffer (up to 16-bit RGBA) and the decoder's own working memory.
    decoder_limits.max_alloc = Some((w as u64 * h as u64).saturating_mul(8) + (64 << 20));
    image::ImageDecoder::set_limits(&mut decoder, decoder_limits)
        .map_err(|e| bad(format!("cannot decode image: {e}")))?;
    let img = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| bad(format!("cannot decode image: {e}")))?;
    let grey = img.to_luma32f();
    let (width, height) = grey.dimensions();
    if width == 0 || height == 0 {
        return Err(DataError::Report {
            path: source.to_path_buf(),
            reason: "image has no pixels".into(),
        });
    }
    Ok(GreyImage {
        width,
        height,
        pixels: grey.into_raw(),
    })
}

/// Output geometry and normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageTransform {
    /// Output side length.
    pub size: u32,
    /// 1 (grey) or 3 (grey replicated, for RGB backbones).
    pub channels: usize,
    /// Normalisation mean.
    pub mean: f32,
    /// Normalisation standard deviation.
    pub std: f32,
}

impl Default for ImageTransform {
    fn default() -> Self {
        Self {
            size: 224,
            channels: 3,
            mean: 0.5,
            std: 0.25,
        }
    }
}

/// Training augmentation; defaults follow SPEC §5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Area fraction range of the random resized crop.
    pub crop_scale: (f32, f32),
    /// Aspect-ratio range of the crop.
    pub crop_ratio: (f32, f32),
    /// Maximum rotation in degrees (uniform in ±).
    pub rotation_degrees: f32,
    /// Brightness factor range is `1 ± brightness`.
    pub brightness: f32,
    /// Contrast factor range is `1 ± contrast`.
    pub contrast: f32,
    /// Probability of a light blur.
    pub blur_probability: f32,
    /// Range of the blur's Gaussian σ, in output pixels.
    pub blur_sigma: (f32, f32),
    /// Horizontal flip with probability ½. Off by default: it swaps laterality.
    pub horizontal_flip: bool,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            crop_scale: (0.8, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            rotation_degrees: 5.0,
            brightness: 0.1,
            contrast: 0.1,
            blur_probability: 0.3,
            blur_sigma: (0.1, 1.0),
            horizontal_flip: false,
        }
    }
}

/// The evaluation transform: shorter side to `size`, centre crop, normalise.
pub fn eval_transform(img: &GreyImage, t: &ImageTransform) -> Vec<f32> {
    let base = img.resize_shorter_side(t.size);
    let s = t.size as f32;
    let (cx, cy) = (base.width as f32 / 2.0, base.height as f32 / 2.0);
    let grey = warp(&base, t.size, |u, v| (cx - s / 2.0 + u, cy - s / 2.0 + v));
    finish(grey, t)
}

/// The training transform with randomness from `rng` (seeded by the caller).
pub fn train_transform<R: Rng + ?Sized>(
    img: &GreyImage,
    t: &ImageTransform,
    a: &Augment,
    rng: &mut R,
) -> Vec<f32> {
    let base = img.resize_shorter_side(t.size);
    let (w, h) = (base.width as f32, base.height as f32);
    let area = w * h * uniform(rng, a.crop_scale);
    let ratio = (uniform(rng, (a.crop_ratio.0.ln(), a.crop_ratio.1.ln()))).exp();
    let cw = (area * ratio).sqrt().min(w);
    let ch = (area / ratio).sqrt().min(h);
    let x0 = rng.random_range(0.0..=(w - cw).max(0.0));
    let y0 = rng.random_range(0.0..=(h - ch).max(0.0));
    let (cx, cy) = (x0 + cw / 2.0, y0 + ch / 2.0);
    let theta = uniform(rng, (-a.rotation_degrees, a.rotation_degrees)).to_radians();
    let (sin, cos) = theta.sin_cos();
    let flip = a.horizontal_flip && rng.random_bool(0.5);
    let s = t.size as f32;
    let (sx, sy) = (cw / s, ch / s);
    let mut grey = warp(&base, t.size, |u, v| {
        let mut du = (u - s / 2.0) * sx;
        if flip {
            du = -du;
        }
        let dv = (v - s / 2.0) * sy;
        (cx + cos * du - sin * dv, cy + sin * du + cos * dv)
    });
    let bf = uniform(rng, (1.0 - a.brightness, 1.0 + a.brightness));
    let cf = uniform(rng, (1.0 - a.contrast, 1.0 + a.contrast));
    let mean = grey.iter().sum::<f32>() / grey.len() as f32 * bf;
    for p in grey.iter_mut() {
        *p = ((*p * bf - mean) * cf + mean).clamp(0.0, 1.0);
    }
    if rng.random::<f32>() < a.blur_probability {
        let sigma = uniform(rng, a.blur_sigma);
        grey = blur3(&grey, t.size as usize, sigma);
    }
    finish(grey, t)
}

fn uniform<R: Rng + ?Sized>(rng: &mut R, (lo, hi): (f32, f32)) -> f32 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

/// Output pixel `(u, v)` (continuous, centre at `+0.5`) sampled from `map(u, v)`.
fn warp(img: &GreyImage, size: u32, map: impl Fn(f32, f32) -> (f32, f32)) -> Vec<f32> {
    let n = size as usize;
    let mut out = Vec::with_capacity(n * n);
    for v in 0..n {
        for u in 0..n {
            let (x, y) = map(u as f32 + 0.5, v as f32 + 0.5);
            out.push(img.bilinear(x, y));
        }
    }
    out
}

/// Separable 3-tap Gaussian blur with edge clamping.
fn blur3(img: &[f32], n: usize, sigma: f32) -> Vec<f32> {
    let w1 = (-1.0 / (2.0 * sigma * sigma)).exp();
    let (k0, k1) = (1.0 / (1.0 + 2.0 * w1), w1 / (1.0 + 2.0 * w1));
    let mut tmp = vec![0.0; n * n];
    for y in 0..n {
        for x in 0..n {
            let l = img[y * n + x.saturating_sub(1)];
            let r = img[y * n + (x + 1).min(n - 1)];
            tmp[y * n + x] = k0 * img[y * n + x] + k1 * (l + r);
        }
    }
    let mut out = vec![0.0; n * n];
    for y in 0..n {
        for x in 0..n {
            let u = tmp[y.saturating_sub(1) * n + x];
            let d = tmp[(y + 1).min(n - 1) * n + x];
            out[y * n + x] = k0 * tmp[y * n + x] + k1 * (u + d);
        }
    }
    out
}

fn finish(grey: Vec<f32>, t: &ImageTransform) -> Vec<f32> {
    let norm: Vec<f32> = grey.iter().map(|&p| (p - t.mean) / t.std).collect();
    if t.channels <= 1 {
        return norm;
    }
    let mut out = Vec::with_capacity(norm.len() * t.channels);
    for _ in 0..t.channels {
        out.extend_from_slice(&norm);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn marker_image() -> GreyImage {
        // 300×260, dark, with a bright square in the left third (a "left-sided" finding
        // as seen on the image).
        let (w, h) = (300u32, 260u32);
        let mut pixels = vec![0.1f32; (w * h) as usize];
        for y in 100..160 {
            for x in 30..90 {
                pixels[(y * w + x) as usize] = 1.0;
            }
        }
        GreyImage {
            width: w,
            height: h,
            pixels,
        }
    }

    fn bright_centroid_x(t: &[f32], size: usize) -> f32 {
        let (mut sx, mut n) = (0.0, 0.0);
        for y in 0..size {
            for x in 0..size {
                if t[y * size + x] > 0.5 {
                    sx += x as f32;
                    n += 1.0;
                }
            }
        }
        sx / n
    }

    #[test]
    fn eval_transform_shape_and_normalisation() {
        let img = marker_image();
        let t = ImageTransform {
            size: 64,
            channels: 3,
            ..Default::default()
        };
        let out = eval_transform(&img, &t);
        assert_eq!(out.len(), 3 * 64 * 64);
        assert_eq!(out[..64 * 64], out[64 * 64..2 * 64 * 64], "grey replicated");
        // Background 0.1 → (0.1 − 0.5)/0.25 = −1.6 in a corner far from the marker.
        assert!(
            (out[64 * 63 + 63] + 1.6).abs() < 1e-4,
            "{}",
            out[64 * 63 + 63]
        );
        // Deterministic.
        assert_eq!(out, eval_transform(&img, &t));
    }

    /// A left-sided marker stays on the left under every training augmentation.
    #[test]
    fn training_augmentation_keeps_laterality() {
        let img = marker_image();
        let t = ImageTransform {
            size: 96,
            channels: 1,
            mean: 0.0,
            std: 1.0,
        };
        let a = Augment {
            blur_probability: 1.0,
            ..Default::default()
        };
        for seed in 0..200 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let out = train_transform(&img, &t, &a, &mut rng);
            let cx = bright_centroid_x(&out, 96);
            assert!(
                cx < 96.0 / 2.0 - 10.0,
                "seed {seed}: marker centroid at x = {cx}"
            );
        }
        // With flips asked for, some outputs do move it to the right: the test can fail.
        let flip = Augment {
            horizontal_flip: true,
            ..a
        };
        let moved = (0..50).any(|seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            bright_centroid_x(&train_transform(&img, &t, &flip, &mut rng), 96) > 48.0
        });
        assert!(moved);
    }

    #[test]
    fn training_augmentation_is_seeded_and_varies() {
        let img = marker_image();
        let t = ImageTransform::default();
        let a = Augment::default();
        let run =
            |seed| train_transform(&img, &t, &a, &mut rand::rngs::StdRng::seed_from_u64(seed));
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn decodes_8_and_16_bit_png_and_jpeg() {
        let dir = tempfile::tempdir().unwrap();
        let g8 = image::GrayImage::from_fn(40, 30, |x, _| image::Luma([(x * 6) as u8]));
        g8.save(dir.path().join("g8.png")).unwrap();
        let g16: ImageBuffer<Luma<u16>, Vec<u16>> =
            ImageBuffer::from_fn(40, 30, |x, _| Luma([(x * 1600) as u16]));
        g16.save(dir.path().join("g16.png")).unwrap();
        let rgb = image::RgbImage::from_fn(40, 30, |x, _| image::Rgb([(x * 6) as u8; 3]));
        rgb.save(dir.path().join("rgb.jpg")).unwrap();
        let a = decode(&dir.path().join("g8.png")).unwrap();
        let b = decode(&dir.path().join("g16.png")).unwrap();
        let c = decode(&dir.path().join("rgb.jpg")).unwrap();
        for img in [&a, &b, &c] {
            assert_eq!((img.width, img.height), (40, 30));
        }
        assert!((a.pixels[39] - 234.0 / 255.0).abs() < 1e-6);
        assert!((b.pixels[39] - 62400.0 / 65535.0).abs() < 1e-6);
        assert!(
            (c.pixels[39] - 234.0 / 255.0).abs() < 0.03,
            "jpeg {}",
            c.pixels[39]
        );
    }

    #[test]
    fn unreadable_images_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("broken.png");
        std::fs::write(&p, b"\x89PNG not really").unwrap();
        let e = decode(&p).unwrap_err().to_string();
        assert!(e.contains("broken.png: cannot decode image"), "{e}");
        let e = decode(&dir.path().join("missing.png"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.png"), "{e}");
    }

    /// A PNG with a header (`w × h`, 8-bit grey) and an empty image-data chunk.
    fn png_header_only(w: u32, h: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(data);
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            out.extend_from_slice(&crc.sum().to_be_bytes());
        };
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
        chunk(b"IHDR", &ihdr);
        chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(b"IEND", &[]);
        out
    }

    #[test]
    fn hostile_headers_and_limits_are_errors_not_allocations() {
        let src = Path::new("hostile.png");
        // 100 000 × 100 000 claimed in 45 bytes: refused from the header.
        let e = decode_bytes(&png_header_only(100_000, 100_000), src)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hostile.png")
                && e.contains("100000 × 100000")
                && e.contains("max_image_pixels"),
            "{e}"
        );
        // A small header with no image data: a decode error, not a panic.
        let e = decode_bytes(&png_header_only(4, 4), src)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hostile.png: cannot decode image"), "{e}");
        // A real image above a lowered pixel limit, and above a lowered byte limit.
        let g8 = image::GrayImage::from_fn(40, 30, |x, _| image::Luma([(x * 6) as u8]));
        let mut bytes = Vec::new();
        g8.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
        let small = InputLimits {
            max_image_pixels: 1000,
            ..InputLimits::default()
        };
        let e = decode_bytes_limited(&bytes, src, &small)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("40 × 30") && e.contains("max_image_pixels = 1000"),
            "{e}"
        );
        let tiny = InputLimits {
            max_image_bytes: 10,
            ..InputLimits::default()
        };
        let e = decode_bytes_limited(&bytes, src, &tiny)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_image_bytes = 10"), "{e}");
        // Every truncation of a valid file is an error or a decode, never a panic.
        for cut in 0..bytes.len() {
            let _ = decode_bytes(&bytes[..cut], src);
        }
        assert_eq!(decode_bytes(&bytes, src).unwrap().width, 40);
    }
}
