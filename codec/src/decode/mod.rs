//! Decoders: planned packet ranges in, planned frames out.
//!
//! A decoder is handed the packet ranges of a [`SamplePlan`](crate::SamplePlan) and
//! the frames the plan samples; it decodes each range from its key frame, skips
//! packets nothing needs (unsampled pictures no other picture references), and calls
//! back with every sampled frame as a [`YuvImage`].

#[cfg(feature = "ffmpeg")]
pub mod cpu;
pub mod nvdec;
mod segments;

use std::collections::HashMap;

pub use segments::{partition, split_at_gops, Segment};

use crate::bitstream::{h264, hevc, nal};
use crate::preprocess::YuvImage;
use crate::stream::Codec;
use crate::Video;

/// A sampled frame as a decoder delivers it.
pub struct DecodedFrame<'a> {
    /// Presentation index of the frame.
    pub frame: usize,
    pub image: YuvImage<'a>,
    /// The decoder concealed bitstream errors in this frame.
    pub corrupt: bool,
    /// Full-range samples, as reported by the decoder (JPEG-range formats).
    pub full_range: Option<bool>,
}

/// What a decode run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecodeReport {
    /// Packets sent to a decoder.
    pub packets_decoded: usize,
    /// Packets skipped as unneeded, unreferenced pictures.
    pub packets_skipped: usize,
    /// Sampled frames delivered.
    pub frames_delivered: usize,
    /// Sampled frames the decoder marked as damaged (concealed errors).
    pub corrupt_frames: Vec<usize>,
    /// Decoder error messages, with the packet they came from.
    pub errors: Vec<String>,
}

impl DecodeReport {
    /// Adds another run's counts.
    pub fn merge(&mut self, other: DecodeReport) {
        self.packets_decoded += other.packets_decoded;
        self.packets_skipped += other.packets_skipped;
        self.frames_delivered += other.frames_delivered;
        self.corrupt_frames.extend(other.corrupt_frames);
        self.errors.extend(other.errors);
    }
}

/// Which frames of a video a decode run must deliver, by packet pts.
#[derive(Clone, Debug)]
pub struct Wanted {
    by_pts: HashMap<i64, usize>,
}

impl Wanted {
    pub fn new(video: &Video, frames: &[usize]) -> Self {
        let index = video.index();
        let by_pts = frames
            .iter()
            .map(|&f| (index.packets()[index.frame_packet(f)].pts, f))
            .collect();
        Self { by_pts }
    }

    /// The frame index for a decoded picture's pts, if it is wanted.
    pub fn frame_for_pts(&self, pts: i64) -> Option<usize> {
        self.by_pts.get(&pts).copied()
    }

    /// Whether packet `p` of `video` codes a wanted frame.
    pub fn wants_packet(&self, video: &Video, p: usize) -> bool {
        self.by_pts.contains_key(&video.index().packets()[p].pts)
    }

    pub fn len(&self) -> usize {
        self.by_pts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pts.is_empty()
    }
}

/// Decides whether an Annex-B access unit can be dropped when its frame is not
/// wanted: nothing references it.
#[derive(Clone, Copy, Debug)]
pub struct Disposability {
    codec: Codec,
    /// HEVC: the stream has a single temporal sub-layer, so `_N` pictures are unreferenced.
    single_sub_layer: bool,
}

impl Disposability {
    pub fn for_video(video: &Video) -> Self {
        let codec = video.info().codec;
        let single_sub_layer = codec == Codec::Hevc
            && nal::annexb_units(video.config().parameter_sets())
                .filter(|u| hevc::nal_unit_type(u) == Some(hevc::nal_type::SPS))
                .filter_map(|u| hevc::Sps::parse(u).ok())
                .all(|sps| sps.max_sub_layers == 1);
        Self {
            codec,
            single_sub_layer,
        }
    }

    /// True when every picture NAL unit of the access unit is unreferenced.
    pub fn is_disposable(&self, access_unit: &[u8]) -> bool {
        let mut vcl = 0;
        let all = nal::annexb_units(access_unit).all(|u| match self.codec {
            Codec::H264 => match h264::nal_unit_type(u) {
                Some(t) if h264::is_vcl(t) => {
                    vcl += 1;
                    h264::is_disposable(u)
                }
                _ => true,
            },
            Codec::Hevc => match hevc::nal_unit_type(u) {
                Some(t) if hevc::is_vcl(t) => {
                    vcl += 1;
                    self.single_sub_layer && hevc::is_sub_layer_non_reference(t)
                }
                _ => true,
            },
            Codec::Vp9 | Codec::Av1 => false,
        });
        all && vcl > 0
    }
}
