#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reel_codec_fuzz::exercise(data, Some("x.h264"));
});
