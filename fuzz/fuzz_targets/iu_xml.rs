//! The IU X-ray (Open-i) report XML reader.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medprob_data::iu::{parse_report_xml, IuOptions};

fuzz_target!(|data: &[u8]| {
    if let Ok(xml) = std::str::from_utf8(data) {
        let _ = parse_report_xml(xml, std::path::Path::new("fuzz.xml"), &IuOptions::default());
    }
});
