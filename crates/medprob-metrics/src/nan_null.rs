//! Serde for `f64` figures that may be NaN (no data: a clean image has no corruption
//! parameter, a deterministic model no variance). JSON has no NaN, so NaN is written as
//! `null` and read back as NaN: a report survives a round trip through `metrics.json`.

use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}
