//! The CPU path end to end: plan → decode → convert → resize → normalize → patchify.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::decode::{DecodeReport, DecodedFrame};
use crate::plan::PatchGeometry;
use crate::preprocess::{
    resize_bicubic_aa_u8, resize_planes, write_frame, ColorConverter, ColorMode, Normalization,
    PixelValues, Resize, RgbImage,
};
use crate::stream::{Range, StreamInfo};
use crate::{Error, Result, SamplePlan, Video};

/// Model-ready pixels of one video and how they were made.
#[derive(Clone, Debug)]
pub struct HostFrames {
    pub pixel_values: PixelValues,
    pub report: DecodeReport,
}

/// The colour conversion of a decoded frame: the stream's matrix, the frame's range (else
/// the stream's), its chroma siting and bit depth, in `mode`.
pub fn frame_converter(info: &StreamInfo, frame: &DecodedFrame, mode: ColorMode) -> ColorConverter {
    let range = match frame.full_range {
        Some(true) => Range::Full,
        Some(false) => Range::Limited,
        None => info.color.conversion_range(),
    };
    ColorConverter::new(info.color.conversion_matrix(), range, info.bit_depth, mode)
        .left_sited(info.chroma_left_sited())
}

/// Turns a decoded frame into display-oriented RGB at `height` × `width`, resized
/// with `resize`'s arithmetic.
pub fn frame_to_rgb(
    info: &StreamInfo,
    frame: &DecodedFrame,
    height: usize,
    width: usize,
    color: ColorMode,
    resize: Resize,
) -> RgbImage {
    let planes = frame_converter(info, frame, color)
        .convert_planar(&frame.image)
        .rotated(info.rotation);
    match resize {
        Resize::BicubicFloat => resize_planes(&planes, height, width),
        // The planes hold 8-bit levels: to_rgb is exact.
        Resize::BicubicUint8 => resize_bicubic_aa_u8(&planes.to_rgb(), height, width),
    }
}

/// Normalizes and patchifies resized frames (one per slot: a whole number of temporal
/// patches) into pixel values of `geometry`, one temporal slice per task.
pub fn patchify_frames(
    frames: &[RgbImage],
    grid_thw: [usize; 3],
    geometry: &PatchGeometry,
    norm: &Normalization,
) -> PixelValues {
    let mut pixel_values = PixelValues::new(grid_thw, geometry.patch_dim());
    let tps = geometry.temporal_patch_size;
    assert_eq!(frames.len(), grid_thw[0] * tps, "one frame per slot");
    let slice_len = grid_thw[1] * grid_thw[2] * geometry.patch_dim();
    let slice_grid = [1, grid_thw[1], grid_thw[2]];
    pixel_values
        .data
        .par_chunks_mut(slice_len)
        .enumerate()
        .for_each(|(t, chunk)| {
            for tp in 0..tps {
                write_frame(chunk, slice_grid, geometry, tp, &frames[t * tps + tp], norm);
            }
        });
    pixel_values
}

/// Output slots of each sampled frame; the last frame fills the slots up to whole
/// temporal patches.
pub(crate) fn slots_by_frame(plan: &SamplePlan) -> HashMap<usize, Vec<usize>> {
    let mut slots: HashMap<usize, Vec<usize>> = HashMap::new();
    for (slot, &f) in plan.frames.iter().enumerate() {
        slots.entry(f).or_default().push(slot);
    }
    let last = *plan.frames.last().expect("plans sample at least one frame");
    for slot in plan.frames.len()..plan.slots() {
        slots.entry(last).or_default().push(slot);
    }
    slots
}

/// Runs the plan on the CPU with FFmpeg decoders and `threads` worker threads.
///
/// Independent GOP segments decode in parallel; each delivered frame is converted
/// and resized on the decoding thread, and the frames are patchified per temporal
/// slice at the end. Frames the decoder concealed errors in are listed in the report.
#[cfg(feature = "ffmpeg")]
pub fn prepare_cpu(
    video: &Video,
    plan: &SamplePlan,
    threads: usize,
    cancel: &crate::Cancel,
) -> Result<HostFrames> {
    use crate::decode;
    use std::sync::Mutex;

    let info = video.info();
    if !decode::cpu::supports(info.codec) {
        return Err(Error::DecoderUnavailable(format!(
            "this FFmpeg build cannot decode {}",
            info.codec
        )));
    }
    check_readable(video, plan)?;
    let wanted = decode::Wanted::new(video, &plan.frames);
    let segments = decode::split_at_gops(video.index(), &plan.decode, &plan.frames);
    let slots = slots_by_frame(plan);
    let resized: Mutex<Vec<Option<RgbImage>>> = Mutex::new(vec![None; plan.slots()]);
    let threads = threads.max(1);
    let per_decoder = (threads / segments.len().max(1)).max(1);
    let (h, w) = (plan.resized_height as usize, plan.resized_width as usize);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::DecoderUnavailable(format!("thread pool: {e}")))?;
    let reports: Vec<Result<DecodeReport>> = pool.install(|| {
        segments
            .par_iter()
            .map(|segment| {
                let _span =
                    tracing::info_span!("segment", packets = segment.packets.len()).entered();
                decode::cpu::decode_range(
                    video,
                    segment,
                    &wanted,
                    per_decoder,
                    cancel,
                    &mut |frame| {
                        let _span = tracing::info_span!("convert", frame = frame.frame).entered();
                        let image = frame_to_rgb(info, &frame, h, w, plan.color, plan.resize);
                        let mut out = resized.lock().expect("no panics while holding the lock");
                        for &slot in &slots[&frame.frame] {
                            out[slot] = Some(image.clone());
                        }
                    },
                )
            })
            .collect()
    });
    let mut report = DecodeReport::default();
    for r in reports {
        report.merge(r?);
    }
    let frames = resized
        .into_inner()
        .expect("no panics while holding the lock");
    let missing: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.is_none())
        .map(|(slot, _)| plan.frames[slot.min(plan.frames.len() - 1)])
        .collect();
    if !missing.is_empty() {
        let reason = if report.errors.is_empty() {
            "the decoder produced no picture for them".to_string()
        } else {
            report.errors.join("; ")
        };
        return Err(Error::Decode {
            frames: missing,
            reason,
        });
    }
    let frames: Vec<RgbImage> = frames
        .into_iter()
        .map(|f| f.expect("checked above"))
        .collect();
    let pixel_values = {
        let _span = tracing::info_span!("patchify").entered();
        pool.install(|| {
            patchify_frames(&frames, plan.grid_thw, &plan.geometry, &plan.normalization)
        })
    };
    report.corrupt_frames.sort_unstable();
    report.corrupt_frames.dedup();
    Ok(HostFrames {
        pixel_values,
        report,
    })
}

/// Fails early when a planned packet lies past the end of a truncated file.
pub fn check_readable(video: &Video, plan: &SamplePlan) -> Result<()> {
    check_packets(video, plan.decode.iter().flat_map(|r| r.packets.clone()))
}

/// Fails when one of `packets` lies past the end of a truncated file
/// ([`Error::Truncated`]).
pub fn check_packets(video: &Video, packets: impl IntoIterator<Item = usize>) -> Result<()> {
    let len = video.source().len();
    let index = video.index().packets();
    for p in packets {
        let packet = &index[p];
        if packet.offset.saturating_add(u64::from(packet.size)) > len {
            return Err(Error::Truncated {
                index: p,
                offset: packet.offset,
                size: packet.size.into(),
                len,
            });
        }
    }
    Ok(())
}
