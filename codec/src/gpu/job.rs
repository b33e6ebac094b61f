//! The decode workers of one `prepare` call: GOP segments decoded on the sessions of one
//! or more GPUs, every sampled picture converted into its slots of the output tensor.

use std::collections::HashMap;
use std::ffi::c_void;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaSlice, DevicePtr};

use super::convert::{FrameKernels, Target};
use super::{driver, Gpu, PixelDtype, SliceDone, SliceReady};
use crate::decode::nvdec::{Picture, Session};
use crate::decode::{DecodeReport, Disposability, Segment, Wanted};
use crate::fair::Permit;
use crate::pipeline::slots_by_frame;
use crate::plan::{DecodeRange, SamplePlan};
use crate::{Cancel, Error, Result, Video};

/// Gives out the ids that tell requests apart in the session shares.
static REQUESTS: AtomicUsize = AtomicUsize::new(0);

/// Where the workers write: the output in parts, each a run of temporal slices in a
/// buffer on one GPU.
pub(super) struct Output<'a> {
    pub parts: Vec<Part<'a>>,
    pub dtype: PixelDtype,
    pub on_slice: Option<&'a SliceReady<'a>>,
}

/// Slices `slices` of the output, in `buffer` (at `ptr`) on `gpu`.
pub(super) struct Part<'a> {
    pub gpu: &'a Gpu,
    pub slices: Range<usize>,
    pub buffer: Arc<CudaSlice<u8>>,
    pub ptr: u64,
}

impl<'a> Part<'a> {
    /// A zeroed buffer for `slices` of `plan`'s pixel values on `gpu`.
    pub fn alloc(
        gpu: &'a Gpu,
        slices: Range<usize>,
        plan: &SamplePlan,
        dtype: PixelDtype,
    ) -> Result<Self> {
        gpu.ctx.bind_to_thread().map_err(driver)?;
        let stream = gpu.ctx.default_stream();
        let rows = slices.len() * plan.grid_thw[1] * plan.grid_thw[2];
        let buffer = Arc::new(
            stream
                .alloc_zeros(rows * plan.patch_dim() * dtype.size())
                .map_err(driver)?,
        );
        let ptr = buffer.device_ptr(&stream).0;
        stream.synchronize().map_err(driver)?;
        Ok(Self {
            gpu,
            slices,
            buffer,
            ptr,
        })
    }
}

impl Output<'_> {
    /// The part holding temporal slice `slice`.
    fn part_of(&self, slice: usize) -> usize {
        self.parts
            .iter()
            .position(|p| p.slices.contains(&slice))
            .expect("the parts cover every slice")
    }
}

/// Which segments each decoder's workers take.
pub(super) enum Claims<'a> {
    /// Any: the next one not taken yet, so segments go to whichever GPU has a session
    /// free first.
    Shared,
    /// Decoder `g` only those of `blocks[g]`.
    Blocks(&'a [Range<usize>]),
}

/// Decodes `segments` on the sessions of `decoders` (the output's GPUs among them or
/// not) into `out`. Each GPU runs up to its session count of workers; a worker takes a
/// permit of its GPU's share and then the next segment of its `claims` not taken yet.
/// Fails if any slot stays unwritten.
pub(super) fn decode(
    video: &Video,
    plan: &SamplePlan,
    segments: &[Segment],
    decoders: &[&Gpu],
    claims: Claims<'_>,
    out: Output<'_>,
    cancel: &Cancel,
) -> Result<DecodeReport> {
    let wanted = Wanted::new(video, &plan.frames);
    let slots = slots_by_frame(plan);
    let slot_count = plan.slots();
    let temporal = plan.geometry.temporal_patch_size;
    let sessions: Vec<usize> = decoders.iter().map(|g| g.sessions()).collect();
    let (queues, queue_of, order) = match claims {
        Claims::Shared => (
            vec![Queue::new(0..segments.len())],
            vec![0; decoders.len()],
            worker_gpus(&sessions, segments.len()),
        ),
        Claims::Blocks(blocks) => {
            let caps: Vec<usize> = sessions
                .iter()
                .zip(blocks)
                .map(|(&s, b)| s.min(b.len()))
                .collect();
            (
                blocks.iter().cloned().map(Queue::new).collect(),
                (0..decoders.len()).collect(),
                worker_gpus(&caps, segments.len()),
            )
        }
    };
    let job = Job {
        request: REQUESTS.fetch_add(1, Ordering::Relaxed) as u64,
        video,
        plan,
        wanted: &wanted,
        slots: &slots,
        out,
        queues,
        queue_of,
        segments,
        failed: AtomicBool::new(false),
        cancel,
        report: Mutex::new(DecodeReport::default()),
        written: (0..slot_count).map(|_| AtomicBool::new(false)).collect(),
        temporal,
        slice_frames: (0..slot_count / temporal)
            .map(|_| AtomicUsize::new(0))
            .collect(),
    };
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let job = &job;
        let handles: Vec<_> = order
            .iter()
            .map(|&g| scope.spawn(move || job.work(decoders[g], g)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Internal("a decode worker panicked".into())))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    let missing: Vec<usize> = job
        .written
        .iter()
        .enumerate()
        .filter(|(_, w)| !w.load(Ordering::Relaxed))
        .map(|(slot, _)| plan.frames[slot.min(plan.frames.len() - 1)])
        .collect();
    if !missing.is_empty() {
        return Err(Error::Decode {
            frames: missing,
            reason: "NVDEC delivered no picture for them".into(),
        });
    }
    let mut report = job.report.into_inner().unwrap_or_default();
    report.corrupt_frames.sort_unstable();
    report.corrupt_frames.dedup();
    Ok(report)
}

/// The GPU of each decode worker to spawn, in spawn order: one worker per segment at most
/// (more could not run at once), GPU `g` up to `caps[g]` (its session count, or fewer
/// when it has fewer segments of its own), round-robin over the GPUs so that, when all
/// are idle, the first segments are claimed evenly.
fn worker_gpus(caps: &[usize], segments: usize) -> Vec<usize> {
    let mut order = Vec::new();
    for round in 0..caps.iter().copied().max().unwrap_or(0).min(segments) {
        order.extend((0..caps.len()).filter(|&g| round < caps[g]));
    }
    order.truncate(segments);
    order
}

/// Work shared by the decode workers of one `prepare` call.
struct Job<'a> {
    video: &'a Video,
    plan: &'a SamplePlan,
    wanted: &'a Wanted,
    slots: &'a HashMap<usize, Vec<usize>>,
    out: Output<'a>,
    segments: &'a [Segment],
    /// This request's id in the GPUs' session shares.
    request: u64,
    /// Segments to claim, and the queue of each decoder.
    queues: Vec<Queue>,
    queue_of: Vec<usize>,
    failed: AtomicBool,
    cancel: &'a Cancel,
    report: Mutex<DecodeReport>,
    /// Slots whose values are written (and synchronized).
    written: Vec<AtomicBool>,
    /// Frames per temporal slice (the plan's temporal patch size).
    temporal: usize,
    /// Frames written per temporal slice.
    slice_frames: Vec<AtomicUsize>,
}

/// Segments `segments`, claimed in order.
struct Queue {
    segments: Range<usize>,
    next: AtomicUsize,
}

impl Queue {
    fn new(segments: Range<usize>) -> Self {
        Self {
            next: AtomicUsize::new(segments.start),
            segments,
        }
    }

    fn is_empty(&self) -> bool {
        self.next.load(Ordering::Relaxed) >= self.segments.end
    }

    fn claim(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.segments.end).then_some(i)
    }
}

impl Job<'_> {
    /// A worker on `gpu`, decoder `g`: takes a session permit, then the next segment of
    /// its queue, until none are left; a parser per range on a pooled decoder.
    fn work(&self, gpu: &Gpu, g: usize) -> Result<()> {
        let result = self.work_inner(gpu, &self.queues[self.queue_of[g]]);
        if result.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        result
    }

    fn work_inner(&self, gpu: &Gpu, queue: &Queue) -> Result<()> {
        let disposability = Disposability::for_video(self.video);
        let mut kernels = None;
        let mut report = DecodeReport::default();
        while !self.failed.load(Ordering::Relaxed) && !queue.is_empty() {
            let _permit = self.permit(gpu);
            let Some(i) = queue.claim() else {
                break;
            };
            let segment = &self.segments[i];
            // The stream and the conversion buffers are made once a permit is held, so
            // that workers waiting for a session hold no device memory.
            let kernels = match &mut kernels {
                Some(k) => k,
                None => kernels.insert(FrameKernels::new(
                    gpu,
                    self.video.info(),
                    self.plan,
                    self.out.dtype,
                )?),
            };
            let _span = tracing::info_span!(
                "segment",
                segment = i,
                packets = segment.packets(),
                gpu = gpu.context().ordinal()
            )
            .entered();
            for range in &segment.ranges {
                self.decode_range(gpu, range, kernels, &disposability, &mut report)?;
            }
        }
        self.report.lock().expect("report lock").merge(report);
        Ok(())
    }

    /// Waits for a session of `gpu`'s share.
    fn permit<'g>(&self, gpu: &'g Gpu) -> Permit<'g> {
        let _wait = tracing::info_span!("wait_for_session").entered();
        gpu.sessions.acquire(self.request)
    }

    /// Decodes one independent range on a fresh parser (the decoder comes from the pool).
    fn decode_range(
        &self,
        gpu: &Gpu,
        range: &DecodeRange,
        kernels: &mut FrameKernels<'_>,
        disposability: &Disposability,
        report: &mut DecodeReport,
    ) -> Result<()> {
        let (mut scratch, mut data) = (Vec::new(), Vec::new());
        let (mut decoded, mut skipped) = (0, 0);
        let stream = kernels.stream().cu_stream() as *mut c_void;
        let mut on_picture = |p: &Picture| -> Result<()> {
            let slots = &self.slots[&p.frame];
            let _span = tracing::info_span!("convert", frame = p.frame).entered();
            let targets: Vec<Target<'_>> = slots
                .iter()
                .map(|&slot| {
                    let part = &self.out.parts[self.out.part_of(slot / self.temporal)];
                    Target {
                        gpu: part.gpu,
                        ptr: part.ptr,
                        slot: slot - part.slices.start * self.temporal,
                    }
                })
                .collect();
            kernels.write(p, &targets)?;
            report.frames_delivered += 1;
            if p.corrupt {
                report.corrupt_frames.push(p.frame);
            }
            for &slot in slots {
                self.slot_written(slot);
            }
            Ok(())
        };
        let mut session = Session::new(
            &gpu.pool,
            self.video.info().codec,
            stream,
            self.wanted,
            &mut on_picture,
        )?;
        for p in range.packets.clone() {
            self.cancel.check()?;
            self.video.decoder_packet(p, &mut scratch, &mut data)?;
            if !self.wanted.wants_packet(self.video, p) && disposability.is_disposable(&data) {
                skipped += 1;
                continue;
            }
            decoded += 1;
            session.decode(&data, self.video.index().packets()[p].pts)?;
        }
        session.finish()?;
        drop(session);
        report.packets_decoded += decoded;
        report.packets_skipped += skipped;
        Ok(())
    }

    /// Records a written slot; the last frame of a slice tells `on_slice`.
    fn slot_written(&self, slot: usize) {
        if self.written[slot].swap(true, Ordering::AcqRel) {
            return;
        }
        let slice = slot / self.temporal;
        let frames = self.slice_frames[slice].fetch_add(1, Ordering::AcqRel) + 1;
        if frames == self.temporal {
            if let Some(on_slice) = self.out.on_slice {
                let p = self.out.part_of(slice);
                let part = &self.out.parts[p];
                on_slice(SliceDone {
                    part: p,
                    buffer: &part.buffer,
                    slice: slice - part.slices.start,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::worker_gpus;

    #[test]
    fn workers_alternate_over_gpus_up_to_the_segments() {
        assert_eq!(worker_gpus(&[28], 15), vec![0; 15]);
        assert_eq!(worker_gpus(&[28, 28], 5), [0, 1, 0, 1, 0]);
        // A GPU with fewer sessions drops out of later rounds.
        assert_eq!(worker_gpus(&[1, 3], 8), [0, 1, 1, 1]);
        assert_eq!(worker_gpus(&[28, 28], 0), Vec::<usize>::new());
    }
}
