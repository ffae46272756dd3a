//! Memory figures of the running process from Linux's `/proc/self/status`, shared by the
//! benchmark examples (`None` where the file or the field is missing, e.g. not on Linux).

/// A `/proc/self/status` field such as `VmHWM:` (peak resident set), in MiB.
pub fn status_mib(field: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = s
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
