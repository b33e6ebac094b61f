//! Preparing a video into one pixel-values tensor on this GPU ([`Gpu::prepare`],
//! [`Gpu::prepare_with`]), and the checks and GOP segments every way of preparing
//! starts from ([`Work`]).

use std::sync::Arc;

use super::output::{DeviceFrames, SliceReady};
use super::{job, peer, Gpu, PixelDtype};
use crate::decode::{partition, split_at_gops, DecodeReport, Segment};
use crate::pipeline::check_readable;
use crate::plan::SamplePlan;
use crate::{Cancel, Result, Video};

impl Gpu {
    /// Decodes and preprocesses the plan's frames on this GPU: the GOPs it needs are cut
    /// into up to `sessions` segments of balanced decode cost ([`partition`]), one NVDEC
    /// session each, which take their turns in the GPU's fair share of sessions.
    pub fn prepare(
        &self,
        video: &Video,
        plan: &SamplePlan,
        sessions: usize,
        dtype: PixelDtype,
        cancel: &Cancel,
    ) -> Result<DeviceFrames> {
        self.prepare_with(video, plan, &PrepareOptions::new(sessions, dtype), cancel)
    }

    /// [`Gpu::prepare`] with the segments spread over this GPU and `options.peers`, and
    /// slices announced as they complete: the output tensor is on this GPU either way.
    pub fn prepare_with(
        &self,
        video: &Video,
        plan: &SamplePlan,
        options: &PrepareOptions<'_>,
        cancel: &Cancel,
    ) -> Result<DeviceFrames> {
        let work = self.work(video, plan, options.sessions, options.peers)?;
        let slices = plan.grid_thw[0];
        let part = job::Part::alloc(self, 0..slices, plan, options.dtype)?;
        let buffer = part.buffer.clone();
        let output = job::Output {
            parts: vec![part],
            dtype: options.dtype,
            on_slice: options.on_slice,
        };
        let claims = job::Claims::Shared;
        let report = work.decode(video, plan, claims, output, cancel)?;
        Ok(DeviceFrames {
            buffer,
            dtype: options.dtype,
            grid_thw: plan.grid_thw,
            patch_dim: plan.patch_dim(),
            report,
        })
    }

    /// The checks and the work common to every way of preparing a video: the GPUs that
    /// decode it (this one first, then the peers that can) and its GOP segments.
    pub(super) fn work<'a>(
        &'a self,
        video: &Video,
        plan: &SamplePlan,
        sessions: usize,
        peers: &'a [Arc<Gpu>],
    ) -> Result<Work<'a>> {
        let info = video.info();
        check_readable(video, plan)?;
        self.check_stream(info)?;
        let mut decoders = vec![self];
        for peer in peers {
            if std::ptr::eq(&**peer, self) {
                continue;
            }
            match peer.check_stream(info) {
                Ok(_) => {
                    if !peer::enable_peer_access(&self.ctx, &peer.ctx)? {
                        tracing::debug!(
                            "cuda:{} and cuda:{} have no peer access: copies go through the host",
                            self.ctx.ordinal(),
                            peer.ctx.ordinal()
                        );
                    }
                    decoders.push(&**peer);
                }
                Err(e) => tracing::debug!("cuda:{} does not decode: {e}", peer.ctx.ordinal()),
            }
        }
        let segments = partition(
            video.index(),
            split_at_gops(video.index(), &plan.decode, &plan.frames),
            sessions,
        );
        Ok(Work { decoders, segments })
    }
}

/// The GPUs that decode a video and its GOP segments.
pub(super) struct Work<'a> {
    pub(super) decoders: Vec<&'a Gpu>,
    pub(super) segments: Vec<Segment>,
}

impl Work<'_> {
    /// Runs the decode workers on these GPUs and segments.
    pub(super) fn decode(
        &self,
        video: &Video,
        plan: &SamplePlan,
        claims: job::Claims<'_>,
        output: job::Output<'_>,
        cancel: &Cancel,
    ) -> Result<DecodeReport> {
        job::decode(
            video,
            plan,
            &self.segments,
            &self.decoders,
            claims,
            output,
            cancel,
        )
    }
}

/// How [`Gpu::prepare_with`] decodes a video and tells of its progress.
pub struct PrepareOptions<'a> {
    /// At most this many GOP segments, decoded at once when sessions are free.
    pub sessions: usize,
    pub dtype: PixelDtype,
    /// Other GPUs whose sessions decode segments too. Their frames reach the output by
    /// peer copies (through the host where the GPUs have no peer access), each frame's
    /// copy overlapping the decoding of the next.
    pub peers: &'a [Arc<Gpu>],
    /// Called once for every temporal slice (two frames) as soon as both of its frames
    /// are in the output buffer, from the decoding thread, while later slices still
    /// decode: a consumer can start on early slices.
    pub on_slice: Option<&'a SliceReady<'a>>,
}

impl PrepareOptions<'_> {
    /// Up to `sessions` segments on this GPU alone, no slice callback.
    pub fn new(sessions: usize, dtype: PixelDtype) -> Self {
        Self {
            sessions,
            dtype,
            peers: &[],
            on_slice: None,
        }
    }
}
