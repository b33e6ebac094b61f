//! Cross-request batching on a GPU tower.
//!
//! Every temporal slice (two frames) of a Qwen2.5-VL video is encoded independently of
//! the others: full attention runs per slice and every attention window lies inside one.
//! So a request is a set of slices that may be encoded in any grouping — as soon as
//! decoding delivers them (streamed), and together with slices of other requests in one
//! varlen forward — and the result is that of encoding the whole video at once.
//!
//! One worker thread per [`Batcher`] takes the slices waiting in the queue, round-robin
//! over the requests (a long video does not starve short ones), up to the patch budget
//! that the memory budget allows, runs one forward, and copies each request's token rows
//! into that request's own output buffer.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use cudarc::driver::{CudaSlice, DevicePtr};

use super::{cuda, CudaTower, DeviceEmbeddings, InputDtype};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::VisionTower;

/// Counters of a batcher since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Forwards run.
    pub forwards: u64,
    /// Temporal slices encoded.
    pub slices: u64,
    /// Patches encoded.
    pub patches: u64,
    /// Forwards that held slices of more than one request.
    pub shared_forwards: u64,
}

/// Encodes the temporal slices of many requests in shared forwards on one GPU tower.
pub struct Batcher {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    tower: Arc<VisionTower>,
    /// Most patches in one forward (from the memory budget).
    max_patches: usize,
    budget_bytes: u64,
    queue: Mutex<Queue>,
    /// Wakes the worker: work arrived or shutdown.
    work: Condvar,
    /// Wakes requests: slices finished.
    done: Condvar,
}

#[derive(Default)]
struct Queue {
    /// Open requests by id (ids grow: the map iterates in arrival order).
    requests: BTreeMap<u64, Pending>,
    next_id: u64,
    shutdown: bool,
    stats: BatchStats,
}

/// A request's state inside the queue.
struct Pending {
    /// `(h, w)` of every slice, in patches.
    slice_hw: (usize, usize),
    out: Arc<CudaSlice<u8>>,
    /// Slices submitted and not yet taken by a forward, as contiguous runs.
    runs: VecDeque<Run>,
    submitted: Vec<bool>,
    /// Slices not yet encoded.
    remaining: usize,
    /// Why a forward holding its slices failed (out of memory stays out of memory).
    error: Option<Error>,
}

/// Contiguous slices of one request whose pixel rows start `offset` bytes into `pixels`.
#[derive(Clone)]
struct Run {
    pixels: Arc<CudaSlice<u8>>,
    offset: usize,
    dtype: InputDtype,
    first: usize,
    count: usize,
}

/// What one forward takes from one request.
struct Take {
    id: u64,
    out: Arc<CudaSlice<u8>>,
    slice_hw: (usize, usize),
    run: Run,
}

impl Batcher {
    /// Starts a batcher on a GPU tower whose forwards keep their activations within
    /// `memory_budget` bytes of device memory.
    ///
    /// Fails with [`Error::InvalidInput`] for a CPU tower, or a budget too small for a
    /// forward of one merged 2×2 patch group.
    pub fn new(tower: Arc<VisionTower>, memory_budget: u64) -> Result<Batcher> {
        let cuda_tower = tower
            .cuda_backend()
            .ok_or_else(|| Error::InvalidInput("the batcher needs a GPU tower".into()))?;
        let max_patches = cuda_tower.max_patches(memory_budget);
        if max_patches < tower.config().merge_unit() {
            return Err(Error::InvalidInput(format!(
                "an encoder memory budget of {} MiB holds no forward at all",
                memory_budget >> 20
            )));
        }
        let shared = Arc::new(Shared {
            tower,
            max_patches,
            budget_bytes: memory_budget,
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let worker_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("reel-encoder".into())
            .spawn(move || worker_shared.run())
            .map_err(|e| Error::Cuda(format!("cannot start the encoder thread: {e}")))?;
        Ok(Batcher {
            shared,
            worker: Some(worker),
        })
    }

    /// The tower the batcher runs.
    pub fn tower(&self) -> &Arc<VisionTower> {
        &self.shared.tower
    }

    /// Most patches one forward takes under the memory budget.
    pub fn max_patches(&self) -> usize {
        self.shared.max_patches
    }

    /// Counters since the batcher started.
    pub fn stats(&self) -> BatchStats {
        self.shared.lock().stats
    }

    /// Opens a request for a video of `grid` = (t, h, w) patches: its output buffer
    /// (`t·h·w/4` rows in the model dtype) is allocated now, its slices are submitted with
    /// [`Request::submit`] as their pixels become ready.
    ///
    /// Fails with [`Error::InvalidInput`] for a malformed grid, or one whose single slice
    /// needs more activation memory than the budget.
    pub fn request(&self, grid: [usize; 3]) -> Result<Request> {
        let shared = &self.shared;
        let tower = shared.cuda();
        let [t, h, w] = grid;
        Plan::new(shared.tower.config(), &[grid])?;
        if h * w > shared.max_patches {
            return Err(Error::InvalidInput(format!(
                "one temporal slice of {h}x{w} patches needs {} MiB of activations, over the encoder memory budget of {} MiB",
                tower.activation_bytes(h * w).div_ceil(1 << 20),
                shared.budget_bytes >> 20
            )));
        }
        let tokens = t * h * w / shared.tower.config().merge_unit();
        let out = tower.alloc_output(tokens)?;
        let mut queue = shared.lock();
        let id = queue.next_id;
        queue.next_id += 1;
        queue.requests.insert(
            id,
            Pending {
                slice_hw: (h, w),
                out: Arc::new(out),
                runs: VecDeque::new(),
                submitted: vec![false; t],
                remaining: t,
                error: None,
            },
        );
        Ok(Request {
            shared: shared.clone(),
            id,
            tokens,
            done: false,
        })
    }

    /// Copies host pixel values (`[rows, patch_dim]` f32) to the tower's GPU, for
    /// [`Request::submit`].
    pub fn upload(&self, pixel_values: &[f32]) -> Result<Arc<CudaSlice<u8>>> {
        let stream = &self.shared.cuda().stream;
        let bytes: Vec<u8> = pixel_values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let buffer = stream.clone_htod(&bytes).map_err(cuda)?;
        stream.synchronize().map_err(cuda)?;
        Ok(Arc::new(buffer))
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        if let Some(worker) = self.worker.take() {
            // A worker that panicked has nothing left to clean up.
            let _ = worker.join();
        }
    }
}

/// One video's slices in a [`Batcher`]. Dropping it before [`Request::finish`] withdraws
/// the slices still queued.
pub struct Request {
    shared: Arc<Shared>,
    id: u64,
    tokens: usize,
    done: bool,
}

impl Request {
    /// Queues temporal slices `slices` of this request, whose pixel values
    /// (`[slices·h·w, patch_dim]` of `dtype`, in the Qwen2.5-VL patch layout) lie in
    /// `pixels` from the first row of slice `slices.start` on, the whole video's rows in
    /// order (slice `s` starts at row `s·h·w`). The batcher keeps `pixels` alive until
    /// they are encoded.
    ///
    /// A slice out of range, submitted twice, or a buffer too short makes the request
    /// fail at [`Request::finish`].
    pub fn submit(&self, pixels: &Arc<CudaSlice<u8>>, dtype: InputDtype, slices: Range<usize>) {
        let mut queue = self.shared.lock();
        let Some(p) = queue.requests.get_mut(&self.id) else {
            return;
        };
        let (h, w) = p.slice_hw;
        let slice_bytes = h * w * self.shared.tower.config().patch_dim() * dtype.size();
        let error = if slices.end > p.submitted.len() || slices.is_empty() {
            Some(format!(
                "slices {slices:?} of a request with {} slices",
                p.submitted.len()
            ))
        } else if p.submitted[slices.clone()].iter().any(|&s| s) {
            Some(format!("slices {slices:?} submitted twice"))
        } else if pixels.len() < slices.end * slice_bytes {
            Some(format!(
                "a pixel buffer of {} bytes cannot hold slices up to {}",
                pixels.len(),
                slices.end
            ))
        } else {
            None
        };
        if let Some(e) = error {
            p.error.get_or_insert(Error::InvalidInput(e));
            drop(queue);
            self.shared.done.notify_all();
            return;
        }
        p.submitted[slices.clone()].fill(true);
        p.runs.push_back(Run {
            pixels: pixels.clone(),
            offset: slices.start * slice_bytes,
            dtype,
            first: slices.start,
            count: slices.len(),
        });
        drop(queue);
        self.shared.work.notify_one();
    }

    /// Queues every slice not submitted yet, from `pixels` (the whole video's rows).
    pub fn submit_rest(&self, pixels: &Arc<CudaSlice<u8>>, dtype: InputDtype) {
        let missing: Vec<usize> = {
            let queue = self.shared.lock();
            let Some(p) = queue.requests.get(&self.id) else {
                return;
            };
            (0..p.submitted.len())
                .filter(|&s| !p.submitted[s])
                .collect()
        };
        let mut start = 0;
        while start < missing.len() {
            let mut end = start + 1;
            while end < missing.len() && missing[end] == missing[end - 1] + 1 {
                end += 1;
            }
            self.submit(pixels, dtype, missing[start]..missing[end - 1] + 1);
            start = end;
        }
    }

    /// Waits until every slice is encoded; the embeddings of the whole video,
    /// `[t·h·w/4, out_hidden]` in the model dtype, in device memory.
    pub fn finish(mut self) -> Result<DeviceEmbeddings> {
        let shared = self.shared.clone();
        let mut queue = shared.lock();
        while queue
            .requests
            .get(&self.id)
            .is_some_and(|p| p.error.is_none() && p.remaining > 0)
        {
            queue = shared
                .done
                .wait(queue)
                .expect("no panics while holding the lock");
        }
        let p = queue
            .requests
            .remove(&self.id)
            .ok_or_else(|| Error::Cuda("internal: request closed twice".into()))?;
        self.done = true;
        drop(queue);
        if let Some(e) = p.error {
            return Err(e);
        }
        // The worker drops its handles on a forward's buffers before it counts the slices
        // done, so the output is ours alone now.
        let buffer = Arc::try_unwrap(p.out)
            .map_err(|_| Error::Cuda("internal: output buffer still shared".into()))?;
        let tower = shared.tower.as_ref();
        Ok(DeviceEmbeddings {
            buffer,
            rows: self.tokens,
            hidden: tower.config().output_width(),
            dtype: tower.dtype(),
        })
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if !self.done {
            // Queued slices are withdrawn; a forward holding some of them keeps its own
            // handles on the buffers it reads and writes.
            self.shared.lock().requests.remove(&self.id);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().expect("no panics while holding the lock")
    }

    fn cuda(&self) -> &CudaTower {
        self.tower.cuda_backend().expect("checked in Batcher::new")
    }

    /// The worker: takes a batch, encodes it, counts it done, until shutdown.
    fn run(&self) {
        loop {
            let batch = {
                let mut queue = self.lock();
                loop {
                    let batch = self.take(&mut queue);
                    if !batch.is_empty() {
                        break batch;
                    }
                    if queue.shutdown {
                        return;
                    }
                    queue = self
                        .work
                        .wait(queue)
                        .expect("no panics while holding the lock");
                }
            };
            let span = tracing::info_span!(
                "forward",
                runs = batch.len(),
                slices = batch.iter().map(|t| t.run.count).sum::<usize>(),
            )
            .entered();
            let result = self.encode(&batch);
            drop(span);
            let counts: Vec<(u64, usize)> = batch.iter().map(|t| (t.id, t.run.count)).collect();
            let patches: usize = batch
                .iter()
                .map(|t| t.run.count * t.slice_hw.0 * t.slice_hw.1)
                .sum();
            let shared_forward = counts.iter().any(|&(id, _)| id != counts[0].0);
            drop(batch);
            let mut queue = self.lock();
            queue.stats.forwards += 1;
            queue.stats.shared_forwards += u64::from(shared_forward);
            if result.is_ok() {
                queue.stats.slices += counts.iter().map(|&(_, n)| n as u64).sum::<u64>();
                queue.stats.patches += patches as u64;
            }
            for (id, n) in counts {
                if let Some(p) = queue.requests.get_mut(&id) {
                    match &result {
                        Ok(()) => p.remaining -= n,
                        Err(e) => {
                            p.error.get_or_insert_with(|| match e {
                                Error::OutOfMemory(m) => Error::OutOfMemory(m.clone()),
                                other => Error::Cuda(other.to_string()),
                            });
                        }
                    }
                }
            }
            drop(queue);
            self.done.notify_all();
        }
    }

    /// Takes the next forward's slices: one slice per request in turn (arrival order)
    /// while the patch budget lasts, all of one input dtype; a request's consecutive
    /// slices merge into one run.
    fn take(&self, queue: &mut Queue) -> Vec<Take> {
        let patch_dim = self.tower.config().patch_dim();
        let mut budget = self.max_patches;
        let mut batch: Vec<Take> = Vec::new();
        let mut dtype = None;
        loop {
            let mut progress = false;
            for (&id, p) in queue.requests.iter_mut() {
                if p.error.is_some() {
                    continue;
                }
                let (h, w) = p.slice_hw;
                let Some(front) = p.runs.front_mut() else {
                    continue;
                };
                if h * w > budget || dtype.is_some_and(|d| d != front.dtype) {
                    continue;
                }
                dtype = Some(front.dtype);
                budget -= h * w;
                progress = true;
                let slice_bytes = h * w * patch_dim * front.dtype.size();
                let one = Run {
                    count: 1,
                    ..front.clone()
                };
                front.first += 1;
                front.offset += slice_bytes;
                front.count -= 1;
                if front.count == 0 {
                    p.runs.pop_front();
                }
                let contiguous = |t: &Take| {
                    t.id == id
                        && Arc::ptr_eq(&t.run.pixels, &one.pixels)
                        && t.run.first + t.run.count == one.first
                        && t.run.offset + t.run.count * slice_bytes == one.offset
                };
                match batch.iter_mut().rev().find(|t| t.id == id) {
                    Some(t) if contiguous(t) => t.run.count += 1,
                    _ => batch.push(Take {
                        id,
                        out: p.out.clone(),
                        slice_hw: p.slice_hw,
                        run: one,
                    }),
                }
            }
            if !progress {
                return batch;
            }
        }
    }

    /// One forward over the batch; each run's token rows go to its request's output.
    fn encode(&self, batch: &[Take]) -> Result<()> {
        let tower = self.cuda();
        let stream = &tower.stream;
        let cfg = self.tower.config();
        let grids: Vec<[usize; 3]> = batch
            .iter()
            .map(|t| [t.run.count, t.slice_hw.0, t.slice_hw.1])
            .collect();
        let plan = Plan::new(cfg, &grids)?;
        let dtype = batch[0].run.dtype;
        let row_bytes = cfg.patch_dim() * dtype.size();
        // One run is read in place; several are gathered into one staging buffer.
        let staging = match batch {
            [_] => None,
            _ => Some(gather(tower, batch, plan.patches * row_bytes, row_bytes)?),
        };
        let input = match &staging {
            Some(buffer) => buffer.device_ptr(stream).0,
            None => batch[0].run.pixels.device_ptr(stream).0 + batch[0].run.offset as u64,
        };
        // SAFETY: `input` is the staging buffer or the one run's pixel buffer, both alive
        // until this function returns (the batch holds the runs' Arcs), and holds
        // `plan.patches` rows of `dtype`: the plan was made from the same runs that sized it.
        let emb = unsafe { tower.forward(input, dtype, &plan) }?;
        let token_bytes = emb.hidden * tower.dtype.size_in_bytes();
        let src = emb.buffer.device_ptr(stream).0;
        let mut at = 0u64;
        for t in batch {
            let per_slice = t.slice_hw.0 * t.slice_hw.1 / cfg.merge_unit();
            let len = t.run.count * per_slice * token_bytes;
            let dst = t.out.device_ptr(stream).0;
            // SAFETY: `t.out` holds the request's whole output (every slice's tokens) and
            // `emb.buffer` this forward's; both live past the synchronization below, and
            // the offsets and length come from the shapes that sized them.
            unsafe {
                copy(
                    tower,
                    dst + (t.run.first * per_slice * token_bytes) as u64,
                    src + at,
                    len,
                )
            }?;
            at += len as u64;
        }
        stream.synchronize().map_err(cuda)
    }
}

/// Copies the batch's runs one after another into a new buffer of `len` bytes.
fn gather(
    tower: &CudaTower,
    batch: &[Take],
    len: usize,
    row_bytes: usize,
) -> Result<CudaSlice<u8>> {
    let stream = &tower.stream;
    let buffer = stream.alloc_zeros::<u8>(len).map_err(cuda)?;
    let dst = buffer.device_ptr(stream).0;
    let mut at = 0u64;
    for t in batch {
        let n = t.run.count * t.slice_hw.0 * t.slice_hw.1 * row_bytes;
        let src = t.run.pixels.device_ptr(stream).0 + t.run.offset as u64;
        // SAFETY: the new buffer holds every run (`len` is their sum) and the run's pixel
        // buffer holds its `n` bytes at `offset`; both outlive the copy, which the stream
        // orders before the forward that reads the buffer.
        unsafe { copy(tower, dst + at, src, n) }?;
        at += n as u64;
    }
    Ok(buffer)
}

/// Copies `len` bytes between device addresses on the tower's stream.
///
/// # Safety
/// `dst` and `src` must each start `len` bytes of live device memory of the tower's
/// context that stay allocated until the copy is done (the stream is synchronized or a
/// later operation on it is waited for).
unsafe fn copy(tower: &CudaTower, dst: u64, src: u64, len: usize) -> Result<()> {
    // SAFETY: the caller's contract: both ranges are live device memory of this context
    // for the duration of the asynchronous copy.
    unsafe { cudarc::driver::result::memcpy_dtod_async(dst, src, len, tower.stream.cu_stream()) }
        .map_err(cuda)
}
