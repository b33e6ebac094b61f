//! What the robustness harnesses do with each input: the fuzz targets (`fuzz/`) and
//! the mutation test (`codec/tests/mutation.rs`) both call [`exercise`]. Not part of
//! the API.
//!
//! [`exercise`] opens the bytes as a video and, if that works, touches everything a
//! caller would: the stream info, the packet index, the packets themselves and
//! sampling plans. Bad input must give a typed [`Error`]: any panic, including the
//! invariant checks here (presentation order is a permutation of decode order, plans
//! stay inside the index), is a bug.

use crate::{Error, SamplePlan, SamplingOptions, Video};

/// How far [`exercise`] walks an opened input: an input can claim millions of samples.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Frames whose index entries are checked.
    pub frames: usize,
    /// Packets read through `decoder_packet` and `read_packet`.
    pub packets: usize,
}

/// How far an input got.
#[derive(Debug)]
pub enum Outcome {
    /// `Video::from_bytes` refused it with this error.
    Rejected(Error),
    /// It opened; `planned`: the default sampling plan was built too.
    Opened { planned: bool },
}

/// Opens `bytes` (with `name` as the file-name hint) and exercises the result.
pub fn exercise(bytes: Vec<u8>, name: Option<&str>, limits: Limits) -> Outcome {
    let video = match Video::from_bytes(bytes, name) {
        Ok(video) => video,
        Err(e) => {
            // Errors must at least format.
            let _ = e.to_string();
            return Outcome::Rejected(e);
        }
    };
    let info = video.info();
    let _ = format!("{info:?}");
    let _ = video.config().parameter_sets().len();
    let index = video.index();
    let n = index.len();
    assert!(n > 0, "an opened video has packets");
    for f in 0..n.min(limits.frames) {
        let p = index.frame_packet(f);
        assert_eq!(
            index.packet_frame(p),
            f,
            "presentation order is a permutation of decode order: frame {f} <-> packet {p}"
        );
        let _ = index.is_leading(p);
        let _ = index.gop_start(index.gop_of(p));
        let _ = index.frame_time(f, info.time_base);
    }
    let _ = index.gop_count();
    let _ = index.gop_starts().count();
    let _ = video.missing_packets();
    let (mut scratch, mut out) = (Vec::new(), Vec::new());
    for i in 0..n.min(limits.packets) {
        let _ = video.decoder_packet(i, &mut scratch, &mut out);
        let _ = video.read_packet(i, &mut out);
    }
    let mut planned = false;
    if let Ok(plan) = SamplePlan::new(info, index, &SamplingOptions::default()) {
        planned = true;
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
    Outcome::Opened { planned }
}
