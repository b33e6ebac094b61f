//! What every fuzz target does with its input: open it as a video, and if that works,
//! touch everything a caller would (index, packets, sampling plan). Any panic is a bug:
//! bad input must give a typed `reel_codec::Error`.

use reel_codec::{SamplePlan, SamplingOptions, Video};

/// Packets read through `decoder_packet` per input.
const MAX_PACKETS: usize = 256;
/// Frames walked in the index (an input can claim millions of samples).
const MAX_FRAMES: usize = 1 << 16;

/// Demuxes `data` with `name` as the file-name hint and exercises the result.
pub fn exercise(data: &[u8], name: Option<&str>) {
    let video = match Video::from_bytes(data.to_vec(), name) {
        Ok(video) => video,
        Err(e) => {
            // Errors must at least format.
            let _ = e.to_string();
            return;
        }
    };
    let info = video.info();
    let _ = format!("{info:?}");
    let _ = video.config().parameter_sets().len();
    let index = video.index();
    let n = index.len();
    assert!(n > 0, "an opened video has packets");
    for f in 0..n.min(MAX_FRAMES) {
        let p = index.frame_packet(f);
        assert_eq!(
            index.packet_frame(p),
            f,
            "presentation order is a permutation"
        );
        let _ = index.is_leading(p);
        let _ = index.gop_start(index.gop_of(p));
        let _ = index.frame_time(f, info.time_base);
    }
    let _ = index.gop_count();
    let _ = video.missing_packets();
    let (mut scratch, mut out) = (Vec::new(), Vec::new());
    for i in 0..n.min(MAX_PACKETS) {
        let _ = video.decoder_packet(i, &mut scratch, &mut out);
    }
    if let Ok(plan) = SamplePlan::new(info, index, &SamplingOptions::default()) {
        assert!(
            plan.frames.iter().all(|&f| f < n),
            "planned frame past the end"
        );
        assert!(
            plan.decode.iter().all(|r| r.packets.end <= n),
            "decode range past the end"
        );
        let _ = (plan.tokens(), plan.decoded_packets());
    }
    let at_times = SamplingOptions {
        timestamps: Some(vec![0.0, info.duration / 2.0, info.duration]),
        ..SamplingOptions::default()
    };
    let _ = SamplePlan::new(info, index, &at_times);
}
