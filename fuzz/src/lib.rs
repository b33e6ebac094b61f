//! What every fuzz target does with its input: `reel_codec::robustness::exercise`, the
//! same walk the mutation test (`codec/tests/mutation.rs`) runs, with the fuzzers'
//! budget. Any panic is a bug: bad input must give a typed `reel_codec::Error`.

use reel_codec::robustness::{self, Limits};

/// Fewer frames than the mutation test walks (an input can claim millions of
/// samples: keep executions fast), more packets read.
const LIMITS: Limits = Limits {
    frames: 1 << 16,
    packets: 256,
};

/// Demuxes `data` with `name` as the file-name hint and exercises the result.
pub fn exercise(data: &[u8], name: Option<&str>) {
    robustness::exercise(data.to_vec(), name, LIMITS);
}
