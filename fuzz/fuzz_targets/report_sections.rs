//! The MIMIC-CXR free-text report section parser (FINDINGS / IMPRESSION / …).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = medprob_data::sections::parse_report(text);
    }
});
