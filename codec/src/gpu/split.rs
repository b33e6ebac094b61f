//! Split planning: a video's decode divided over several GPUs ([`Gpu::split`]), each
//! keeping the temporal slices it decodes, so that each can encode its own.

use std::ops::Range;
use std::sync::Arc;

use super::output::{GpuPart, SliceReady, SplitFrames};
use super::prepare::Work;
use super::{job, Gpu, PixelDtype};
use crate::plan::SamplePlan;
use crate::{Cancel, Result, Video};

impl Gpu {
    /// Plans a video's decode for encoding on several GPUs: the GOP segments (at most
    /// `sessions`) are divided into contiguous blocks, one per GPU (this one and `peers`)
    /// in proportion to its sessions, and each GPU keeps the temporal slices it decodes
    /// ([`Split::parts`]). Only a frame of a slice whose other frame another GPU decodes
    /// is copied over.
    pub fn split<'a>(
        &'a self,
        video: &Video,
        plan: &SamplePlan,
        sessions: usize,
        peers: &'a [Arc<Gpu>],
    ) -> Result<Split<'a>> {
        let work = self.work(video, plan, sessions, peers)?;
        let packets: Vec<usize> = work.segments.iter().map(|s| s.packets()).collect();
        let shares: Vec<usize> = work.decoders.iter().map(|g| g.sessions()).collect();
        let blocks = blocks(&packets, &shares);
        let owner = |slice: usize| -> usize {
            let first = slice * plan.geometry.temporal_patch_size;
            let f = plan.frames[first.min(plan.frames.len() - 1)];
            let p = video.index().frame_packet(f);
            let segment = work
                .segments
                .partition_point(|s| s.ranges[0].packets.start <= p)
                .saturating_sub(1);
            blocks
                .iter()
                .position(|b| b.contains(&segment))
                .unwrap_or(0)
        };
        let mut parts: Vec<(usize, Range<usize>)> = Vec::new();
        for slice in 0..plan.grid_thw[0] {
            let g = owner(slice);
            match parts.last_mut() {
                Some((last, slices)) if *last == g => slices.end = slice + 1,
                _ => parts.push((g, slice..slice + 1)),
            }
        }
        Ok(Split {
            work,
            blocks,
            parts,
        })
    }
}

/// A video's decode planned over several GPUs by [`Gpu::split`], each keeping the
/// temporal slices it decodes, so that each can encode its own.
pub struct Split<'a> {
    work: Work<'a>,
    /// The segments each decoder takes.
    blocks: Vec<Range<usize>>,
    /// Runs of temporal slices and the decoder that holds each.
    parts: Vec<(usize, Range<usize>)>,
}

impl Split<'_> {
    /// The parts of the output, in order: the GPU holding each (this one or one of the
    /// peers), and its temporal slices. Together they cover the video's slices once.
    pub fn parts(&self) -> Vec<(&Gpu, Range<usize>)> {
        self.parts
            .iter()
            .map(|(g, slices)| (self.work.decoders[*g], slices.clone()))
            .collect()
    }

    /// Decodes and preprocesses the video (the one [`Gpu::split`] planned) into one
    /// buffer per part, on its GPU. `on_slice` hears of each slice as it completes, with
    /// its part and its index in the part.
    pub fn prepare(
        &self,
        video: &Video,
        plan: &SamplePlan,
        dtype: PixelDtype,
        on_slice: Option<&SliceReady<'_>>,
        cancel: &Cancel,
    ) -> Result<SplitFrames> {
        let parts = self
            .parts
            .iter()
            .map(|(g, slices)| {
                job::Part::alloc(self.work.decoders[*g], slices.clone(), plan, dtype)
            })
            .collect::<Result<Vec<_>>>()?;
        let kept: Vec<GpuPart> = parts
            .iter()
            .map(|p| GpuPart {
                ordinal: p.gpu.ctx.ordinal(),
                slices: p.slices.clone(),
                buffer: p.buffer.clone(),
            })
            .collect();
        let output = job::Output {
            parts,
            dtype,
            on_slice,
        };
        let claims = job::Claims::Blocks(&self.blocks);
        let report = self.work.decode(video, plan, claims, output, cancel)?;
        Ok(SplitFrames {
            parts: kept,
            dtype,
            grid_thw: plan.grid_thw,
            patch_dim: plan.patch_dim(),
            report,
        })
    }
}

/// Divides items of sizes `sizes`, in order, into one contiguous block per GPU, GPU `g`
/// getting about `shares[g] / Σ shares` of the total size (possibly none).
fn blocks(sizes: &[usize], shares: &[usize]) -> Vec<Range<usize>> {
    let total: usize = sizes.iter().sum();
    let all_shares: usize = shares.iter().sum::<usize>().max(1);
    let mut out = Vec::with_capacity(shares.len());
    let (mut start, mut before, mut share) = (0, 0, 0);
    for (g, &s) in shares.iter().enumerate() {
        share += s;
        let mut end = start;
        if g + 1 == shares.len() {
            end = sizes.len();
        } else {
            // Up to the item boundary nearest this GPU's cumulative share.
            let goal = (total * share) as f64 / all_shares as f64;
            while end < sizes.len()
                && (before + sizes[end]) as f64 <= goal + sizes[end] as f64 / 2.0
            {
                before += sizes[end];
                end += 1;
            }
        }
        out.push(start..end);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::blocks;

    #[test]
    fn blocks_follow_the_session_shares() {
        assert_eq!(blocks(&[10; 15], &[28]), vec![0..15usize]);
        assert_eq!(blocks(&[10; 15], &[28, 28]), [0..8, 8..15]);
        assert_eq!(blocks(&[10; 12], &[28, 14]), [0..8, 8..12]);
        // Sizes count, not items: the big first segment is a GPU's share alone.
        assert_eq!(blocks(&[30, 10, 10, 10], &[1, 1]), [0..1, 1..4]);
        // Fewer items than GPUs: some get none, every item is in exactly one block.
        assert_eq!(blocks(&[10; 2], &[1, 1, 1, 1]), [0..1, 1..1, 1..2, 2..2]);
        assert_eq!(blocks(&[], &[1, 1]), [0..0, 0..0]);
    }
}
