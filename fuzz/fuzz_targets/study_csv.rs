//! The study CSV reader: any bytes give studies or a `DataError`, never a panic, under
//! small limits so that the limit paths are reached too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medprob_data::{read_studies_from_limited, InputLimits};

fuzz_target!(|data: &[u8]| {
    let limits = InputLimits {
        max_report_chars: 256,
        max_csv_line_bytes: 512,
        ..InputLimits::default()
    };
    let path = std::path::Path::new("fuzz.csv");
    let _ = read_studies_from_limited(data, path, &limits);
    let _ = medprob_data::read_studies_from(data, path);
});
