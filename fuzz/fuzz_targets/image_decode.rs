//! PNG/JPEG decoding under limits small enough for a fuzzer (1 megapixel, 1 MiB): hostile
//! headers, truncated and corrupted files must give errors, not panics or huge allocations.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medprob_data::image::decode_bytes_limited;
use medprob_data::InputLimits;

fuzz_target!(|data: &[u8]| {
    let limits = InputLimits {
        max_image_pixels: 1 << 20,
        max_image_bytes: 1 << 20,
        ..InputLimits::default()
    };
    if let Ok(img) = decode_bytes_limited(data, std::path::Path::new("fuzz.png"), &limits) {
        assert!(img.width as u64 * img.height as u64 <= limits.max_image_pixels);
        assert_eq!(img.pixels.len(), (img.width * img.height) as usize);
    }
});
