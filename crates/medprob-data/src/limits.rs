//! Bounds on untrusted input: image size, report length, CSV line length.
//!
//! A hostile or broken file must fail with an error that names it — never exhaust memory.
//! A PNG header can claim 100 000 × 100 000 pixels (40 GB as `f32`) in a few dozen bytes;
//! a CSV without newlines can be one line of gigabytes. Every reader in this crate checks
//! these limits before it allocates for the input; all are configurable (a `[data.limits]`
//! table in a training config) and the defaults are far above any real chest X-ray study.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// Input limits; each error names the limit to raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputLimits {
    /// Largest image, in pixels (width × height), checked from the header before decoding.
    pub max_image_pixels: u64,
    /// Largest image file, in bytes.
    pub max_image_bytes: u64,
    /// Longest report (findings plus impression), in characters.
    pub max_report_chars: usize,
    /// Longest physical line of a CSV file, in bytes.
    pub max_csv_line_bytes: usize,
}

impl Default for InputLimits {
    /// 64 megapixels (MIMIC-CXR's largest DICOM is about 4 300 × 3 500), 256 MiB image
    /// files, 100 000-character reports, 4 MiB CSV lines.
    fn default() -> Self {
        Self {
            max_image_pixels: 64 << 20,
            max_image_bytes: 256 << 20,
            max_report_chars: 100_000,
            max_csv_line_bytes: 4 << 20,
        }
    }
}

/// The error a [`LineLimited`] reader raises, inside an [`io::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong {
    /// 1-based number of the offending line.
    pub line: u64,
    /// The limit in force.
    pub max: usize,
}

impl std::fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} is longer than {} bytes (limits.max_csv_line_bytes)",
            self.line, self.max
        )
    }
}

impl std::error::Error for LineTooLong {}

impl LineTooLong {
    /// The `LineTooLong` inside an I/O error, if that is what it carries.
    pub fn from_io(e: &io::Error) -> Option<Self> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<LineTooLong>())
            .copied()
    }
}

/// A reader that fails as soon as a physical line exceeds `max` bytes, before a parser
/// buffers it.
pub struct LineLimited<R> {
    inner: R,
    max: usize,
    current: usize,
    line: u64,
}

impl<R> LineLimited<R> {
    /// Wrap `inner`.
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            max,
            current: 0,
            line: 1,
        }
    }
}

impl<R: Read> Read for LineLimited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            if b == b'\n' {
                self.line += 1;
                self.current = 0;
            } else {
                self.current += 1;
                if self.current > self.max {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        LineTooLong {
                            line: self.line,
                            max: self.max,
                        },
                    ));
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_limit_names_the_line() {
        let text = b"short\nalso short\nthis one is far too long\nok\n";
        let mut r = LineLimited::new(&text[..], 12);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(
            LineTooLong::from_io(&e),
            Some(LineTooLong { line: 3, max: 12 })
        );
        let mut r = LineLimited::new(&text[..], 24);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, text);
    }
}
