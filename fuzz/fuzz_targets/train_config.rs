//! The training-config loader: TOML and JSON text → `TrainConfig` → `validate()`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medprob_train::TrainConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = toml::from_str::<TrainConfig>(text) {
            let _ = c.validate();
        }
        if let Ok(c) = serde_json::from_str::<TrainConfig>(text) {
            let _ = c.validate();
        }
    }
});
