//! The reel.v1.Reel gRPC service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reel_codec::plan::VideoProcessor;
use reel_codec::{Cancel, SamplingOptions};
use reel_proto::v1 as pb;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::conn::ConnId;
use super::ipc::DevicePool;
use super::leases::{write_shm, Held, Leases};
use super::media::MediaRoots;
use super::metrics::Metrics;
use super::replica::Replicas;
use super::status::status;
use super::ServeConfig;
use crate::engine::Device;
use crate::engine::{self, ErrorKind, Input, Values, Want};

/// Inline payloads are streamed in chunks of this size.
const CHUNK: usize = 4 << 20;

/// Shared server state.
pub struct State {
    pub config: ServeConfig,
    /// The devices requests run on, with their models, result pools and caches.
    pub replicas: Replicas,
    pub media: MediaRoots,
    pub leases: Arc<Leases>,
    pub metrics: Arc<Metrics>,
    /// Requests admitted (queued or running); full means RESOURCE_EXHAUSTED.
    pub admitted: Arc<Semaphore>,
    /// Requests running at once.
    pub running: Arc<Semaphore>,
}

pub struct ReelService {
    pub state: Arc<State>,
}

/// Cancels the job when the request future is dropped (client gone, deadline).
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Counts a gauge up for as long as it lives.
struct Gauge<'a>(&'a std::sync::atomic::AtomicI64);

impl<'a> Gauge<'a> {
    fn new(g: &'a std::sync::atomic::AtomicI64) -> Self {
        g.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(g)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The request's sampling for `processor`: the processor's defaults where the request
/// leaves a field unset.
fn sampling(s: Option<pb::Sampling>, processor: &VideoProcessor) -> SamplingOptions {
    let mut o = SamplingOptions::for_processor(processor);
    let Some(s) = s else { return o };
    if let Some(v) = s.fps {
        o.fps = v;
    }
    if let Some(v) = s.min_frames {
        o.min_frames = v as usize;
    }
    if let Some(v) = s.max_frames {
        o.max_frames = Some(v as usize);
    }
    o.nframes = s.nframes.map(|v| v as usize);
    if !s.frames.is_empty() {
        o.frames = Some(s.frames.iter().map(|&f| f as usize).collect());
    }
    if !s.timestamps.is_empty() {
        o.timestamps = Some(s.timestamps);
    }
    o.start = s.start;
    o.end = s.end;
    if let Some(v) = s.min_pixels {
        o.min_pixels = v;
    }
    o.max_pixels = s.max_pixels;
    if let Some(v) = s.total_pixels {
        o.total_pixels = v;
    }
    if let (Some(h), Some(w)) = (s.resized_height, s.resized_width) {
        o.resized = Some((h, w));
    }
    o.color = match pb::ColorConversion::try_from(s.color) {
        Ok(pb::ColorConversion::Accurate) => reel_codec::preprocess::ColorMode::Accurate,
        _ => reel_codec::preprocess::ColorMode::Reference,
    };
    o
}

/// The deadline a client sent in `grpc-timeout` (e.g. "500m", "2S").
fn deadline<T>(request: &Request<T>) -> Option<Duration> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A result's own dtype, and its device buffer when it lives on the GPU.
fn native_dtype(tensor: &Values) -> (pb::Dtype, Option<&cudarc::driver::CudaSlice<u8>>) {
    match tensor {
        Values::Host { .. } => (pb::Dtype::F32, None),
        Values::DevicePixels(p) => (
            match p.dtype {
                reel_codec::gpu::PixelDtype::F32 => pb::Dtype::F32,
                reel_codec::gpu::PixelDtype::Bf16 => pb::Dtype::Bf16,
            },
            Some(&p.buffer),
        ),
        Values::DeviceEmbeddings(e) => (
            match e.dtype {
                reel_encoder::DType::BF16 => pb::Dtype::Bf16,
                reel_encoder::DType::F16 => pb::Dtype::F16,
                reel_encoder::DType::F32 => pb::Dtype::F32,
            },
            Some(&e.buffer),
        ),
    }
}

fn dtype_bytes(values: &[f32], dtype: pb::Dtype) -> (Vec<u8>, pb::Dtype) {
    match dtype {
        pb::Dtype::Bf16 => (
            values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            pb::Dtype::Bf16,
        ),
        pb::Dtype::F16 => (
            values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            pb::Dtype::F16,
        ),
        _ => (
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            pb::Dtype::F32,
        ),
    }
}

impl ReelService {
    /// The position of the model `name` asks for (empty: the first) in every replica's
    /// list.
    fn model(&self, name: &str) -> Result<usize, Status> {
        let models = &self.state.replicas.first().models;
        let found = if name.is_empty() {
            (!models.is_empty()).then_some(0)
        } else {
            models.iter().position(|(n, _)| n == name)
        };
        found.ok_or_else(|| {
            if models.is_empty() {
                status(
                    ErrorKind::FailedPrecondition,
                    "this server has no model loaded (start it with --model)",
                )
            } else {
                status(
                    ErrorKind::NotFound,
                    format!("no model named {name:?}; see Info for the loaded models"),
                )
            }
        })
    }

    fn input(&self, source: Option<pb::Source>) -> Result<Input, Status> {
        let source =
            source.ok_or_else(|| status(ErrorKind::InvalidArgument, "request has no source"))?;
        match source.kind {
            Some(pb::source::Kind::Path(p)) => {
                let path = self
                    .state
                    .media
                    .resolve(&p)
                    .map_err(|e| status(ErrorKind::PermissionDenied, e.to_string()))?;
                Ok(Input::Path(path))
            }
            Some(pb::source::Kind::Data(data)) => {
                let max = self.state.config.max_inline_bytes;
                if data.len() as u64 > max {
                    return Err(status(
                        ErrorKind::InvalidArgument,
                        format!(
                            "inline video of {} bytes exceeds the server's limit of {max} bytes",
                            data.len()
                        ),
                    ));
                }
                let name = (!source.filename_hint.is_empty()).then_some(source.filename_hint);
                Ok(Input::Bytes {
                    data: data.to_vec(),
                    name,
                })
            }
            None => Err(status(
                ErrorKind::InvalidArgument,
                "source has neither path nor data",
            )),
        }
    }

    /// Admission, the job on a blocking thread, publication; the response messages.
    async fn handle(
        &self,
        request: Request<pb::EmbedRequest>,
        frames: bool,
    ) -> Result<Vec<pb::EmbedResponse>, Status> {
        let state = self.state.clone();
        let timeout = deadline(&request);
        let conn = request.extensions().get::<ConnId>().copied();
        let req = request.into_inner();
        // Frames are preprocessed for the named model (empty: the default one, if any);
        // embeddings for their model.
        let (model, processor) = if frames {
            let named = if req.model.is_empty() {
                self.model("").ok()
            } else {
                Some(self.model(&req.model)?)
            };
            (None, named)
        } else {
            let i = self.model(&req.model)?;
            (Some(i), Some(i))
        };
        let processor = processor
            .map(|i| self.state.replicas.first().models[i].1.processor.clone())
            .unwrap_or_default();
        let input = self.input(req.source)?;
        let options = sampling(req.sampling, &processor);
        let Ok(admitted) = state.admitted.clone().try_acquire_owned() else {
            state
                .metrics
                .rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(status(
                ErrorKind::ResourceExhausted,
                "the server's queue is full; retry later",
            ));
        };
        let t0 = Instant::now();
        let queued = Gauge::new(&state.metrics.queued);
        let running = state
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| status(ErrorKind::Unavailable, "shutting down"))?;
        drop(queued);
        let queue_s = t0.elapsed().as_secs_f64();
        state.metrics.stage("queue", queue_s);
        let _in_flight = Gauge::new(&state.metrics.in_flight);
        let cancel = Cancel::new();
        let _guard = CancelOnDrop(cancel.clone());
        let threads = state.config.threads();
        let replica = Arc::new(state.replicas.pick());
        let want = match model {
            None => Want::Frames,
            Some(i) => match replica.split.get(i) {
                Some(models) => Want::SplitEmbeddings(models.clone()),
                None => Want::Embeddings(replica.models[i].1.clone()),
            },
        };
        let task_cancel = cancel.clone();
        let task_replica = replica.clone();
        let work = tokio::task::spawn_blocking(move || {
            let _slots = (admitted, running);
            engine::run(
                &task_replica.device,
                input,
                &options,
                &want,
                threads,
                &task_cancel,
                task_replica.cache.as_ref(),
            )
        });
        let outcome = match timeout {
            Some(t) => match tokio::time::timeout(t, work).await {
                Ok(r) => r,
                Err(_) => {
                    cancel.cancel();
                    return Err(status(
                        ErrorKind::DeadlineExceeded,
                        "deadline passed before the embedding was ready",
                    ));
                }
            },
            None => work.await,
        }
        .map_err(|e| status(ErrorKind::Internal, format!("worker failed: {e}")))?
        .map_err(|e| super::status::from_error(&e))?;
        let t_publish = Instant::now();
        let mode = pb::OutputMode::try_from(req.output).unwrap_or(pb::OutputMode::Unspecified);
        let dtype = pb::Dtype::try_from(req.dtype).unwrap_or(pb::Dtype::Unspecified);
        let mut first = pb::EmbedResponse {
            video_grid_thw: outcome.plan.grid_thw.iter().map(|&v| v as i64).collect(),
            second_per_grid_ts: vec![outcome.plan.second_per_grid_t],
            grid_timestamps: outcome.plan.group_timestamps.clone(),
            frame_indices: outcome.plan.frames.iter().map(|&f| f as i64).collect(),
            timestamps: outcome.plan.timestamps.clone(),
            decoded_on: outcome.decoded_on.clone(),
            ..Default::default()
        };
        let shape = outcome.values.shape();
        let pool = replica.pool.clone();
        drop(replica);
        let (descriptor, chunks) = self
            .publish(outcome.values, shape, mode, dtype, pool, conn)
            .await?;
        first.tensor = Some(descriptor);
        let publish = t_publish.elapsed().as_secs_f64();
        let timings = outcome.timings;
        first.timings = Some(pb::Timings {
            demux_s: timings.demux,
            decode_preprocess_s: timings.decode_preprocess,
            encode_s: timings.encode,
            publish_s: publish,
            queue_s,
            total_s: t0.elapsed().as_secs_f64(),
        });
        let m = &state.metrics;
        m.stage("demux", timings.demux);
        m.stage("decode_preprocess", timings.decode_preprocess);
        if !frames {
            m.stage("encode", timings.encode);
        }
        m.stage("publish", publish);
        m.stage("total", t0.elapsed().as_secs_f64());
        let mut out = vec![first];
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            if i == 0 {
                out[0].inline_chunk = chunk;
                out[0].last = n == 1;
            } else {
                out.push(pb::EmbedResponse {
                    inline_chunk: chunk,
                    last: i + 1 == n,
                    ..Default::default()
                });
            }
        }
        if n == 0 {
            out[0].last = true;
        }
        Ok(out)
    }

    /// Puts the tensor where the client asked; returns its descriptor and inline chunks.
    async fn publish(
        &self,
        tensor: Values,
        shape: [usize; 2],
        mode: pb::OutputMode,
        dtype: pb::Dtype,
        pool: Option<Arc<DevicePool>>,
        conn: Option<ConnId>,
    ) -> Result<(pb::TensorDescriptor, Vec<Vec<u8>>), Status> {
        let state = self.state.clone();
        let mode = match mode {
            pb::OutputMode::Unspecified if pool.is_some() => pb::OutputMode::CudaIpc,
            pb::OutputMode::Unspecified => pb::OutputMode::Shm,
            m => m,
        };
        tokio::task::spawn_blocking(
            move || -> Result<(pb::TensorDescriptor, Vec<Vec<u8>>), Status> {
                let internal = |e: anyhow::Error| super::status::from_error(&e);
                let mut d = pb::TensorDescriptor {
                    mode: mode as i32,
                    shape: shape.iter().map(|&v| v as u64).collect(),
                    ..Default::default()
                };
                // Unspecified means the result's own dtype, whatever the output mode.
                let (native, device) = native_dtype(&tensor);
                let dtype = match dtype {
                    pb::Dtype::Unspecified => native,
                    d => d,
                };
                // Device results in their own dtype go to the IPC pool without leaving the GPU.
                if let (pb::OutputMode::CudaIpc, Some(buffer)) = (mode, device) {
                    if dtype == native {
                        let pool = pool.as_ref().ok_or_else(|| {
                            status(ErrorKind::FailedPrecondition, "no CUDA IPC pool")
                        })?;
                        let len = buffer.len();
                        let slot = pool.alloc(len as u64).ok_or_else(|| {
                            status(
                                ErrorKind::ResourceExhausted,
                                "the CUDA IPC pool is full; release leases",
                            )
                        })?;
                        let stream = buffer.stream().clone();
                        let (ptr, _sync) = cudarc::driver::DevicePtr::device_ptr(buffer, &stream);
                        stream.synchronize().map_err(|e| internal(e.into()))?;
                        pool.fill(&slot, ptr, len).map_err(internal)?;
                        d.dtype = native as i32;
                        d.nbytes = len as u64;
                        return Ok(ipc_descriptor(d, pool, slot, &state, conn));
                    }
                }
                let values = tensor.into_host_f32().map_err(internal)?;
                let (bytes, dtype) = dtype_bytes(&values, dtype);
                d.dtype = dtype as i32;
                d.nbytes = bytes.len() as u64;
                match mode {
                    pb::OutputMode::CudaIpc => {
                        let pool = pool.as_ref().ok_or_else(|| {
                            status(
                                ErrorKind::FailedPrecondition,
                                "CUDA IPC needs a server running on a GPU",
                            )
                        })?;
                        let slot = pool.alloc(bytes.len() as u64).ok_or_else(|| {
                            status(
                                ErrorKind::ResourceExhausted,
                                "the CUDA IPC pool is full; release leases",
                            )
                        })?;
                        pool.upload(&slot, &bytes).map_err(internal)?;
                        Ok(ipc_descriptor(d, pool, slot, &state, conn))
                    }
                    pb::OutputMode::Shm => {
                        let id = super::leases::new_id();
                        let (name, path) =
                            write_shm(&state.config.shm_dir, &id, &bytes).map_err(|e| {
                                status(ErrorKind::Internal, format!("shared memory: {e}"))
                            })?;
                        d.shm_name = name;
                        d.lease_id = state.leases.add(Held::Shm(path), conn);
                        d.lease_expires_in_s = state.leases.ttl().as_secs_f64();
                        Ok((d, Vec::new()))
                    }
                    _ => Ok((d, bytes.chunks(CHUNK).map(<[u8]>::to_vec).collect())),
                }
            },
        )
        .await
        .map_err(|e| status(ErrorKind::Internal, format!("publisher failed: {e}")))?
    }
}

fn ipc_descriptor(
    mut d: pb::TensorDescriptor,
    pool: &Arc<DevicePool>,
    slot: super::ipc::Slot,
    state: &State,
    conn: Option<ConnId>,
) -> (pb::TensorDescriptor, Vec<Vec<u8>>) {
    d.cuda_ipc_handle = pool.handle().to_vec();
    d.device = pool.ordinal() as i32;
    d.offset = slot.offset;
    d.pool_id = pool.id().to_string();
    d.lease_id = state.leases.add(Held::Device(Box::new(slot)), conn);
    d.lease_expires_in_s = state.leases.ttl().as_secs_f64();
    (d, Vec::new())
}

type ResponseStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::EmbedResponse, Status>>>;

impl ReelService {
    /// Counts an Embed/Frames call by its status and streams its messages.
    fn respond(
        &self,
        method: &str,
        result: Result<Vec<pb::EmbedResponse>, Status>,
    ) -> Result<Response<ResponseStream>, Status> {
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        self.state.metrics.request(method, &format!("{code:?}"));
        Ok(Response::new(tokio_stream::iter(
            result?.into_iter().map(Ok).collect::<Vec<_>>(),
        )))
    }
}

#[tonic::async_trait]
impl pb::reel_server::Reel for ReelService {
    type EmbedStream = ResponseStream;
    type FramesStream = ResponseStream;

    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<Self::EmbedStream>, Status> {
        self.respond("Embed", self.handle(request, false).await)
    }

    async fn frames(
        &self,
        request: Request<pb::FramesRequest>,
    ) -> Result<Response<Self::FramesStream>, Status> {
        // The same fields as Embed's request; `model` names whose preprocessing applies.
        let request = request.map(|r| pb::EmbedRequest {
            source: r.source,
            sampling: r.sampling,
            model: r.model,
            output: r.output,
            dtype: r.dtype,
        });
        self.respond("Frames", self.handle(request, true).await)
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let released = self.state.leases.release(&request.into_inner().lease_id);
        self.state.metrics.request("Release", "Ok");
        Ok(Response::new(pb::ReleaseResponse { released }))
    }

    async fn info(
        &self,
        _: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let state = &self.state;
        let mut gpus = Vec::new();
        for replica in state.replicas.iter() {
            if let Device::Cuda(gpu) = &replica.device {
                let ctx = gpu.context();
                gpus.push(pb::Gpu {
                    ordinal: ctx.ordinal() as i32,
                    name: ctx.name().unwrap_or_default(),
                    memory_bytes: ctx.total_mem().unwrap_or(0) as u64,
                    nvdec_engines: gpu.engines(),
                });
            }
        }
        let first = state.replicas.first();
        let models = first
            .models
            .iter()
            .map(|(name, m)| pb::Model {
                name: name.clone(),
                architecture: m.tower.spec().architecture.clone(),
                dtype: format!("{:?}", m.tower.dtype()),
                out_hidden_size: m.tower.config().out_hidden_size as u32,
                outputs: {
                    let layout = &m.tower.spec().outputs;
                    std::iter::once(("main".to_string(), layout.hidden))
                        .chain(layout.extra.iter().cloned())
                        .map(|(name, width)| pb::OutputPart {
                            name,
                            width: width as u32,
                        })
                        .collect()
                },
                device: if m.tower.is_cuda() {
                    state.replicas.names()
                } else {
                    "cpu".into()
                },
            })
            .collect();
        self.state.metrics.request("Info", "Ok");
        Ok(Response::new(pb::InfoResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            gpus,
            codecs: crate::engine::codecs(&first.device),
            models,
            max_inline_bytes: state.config.max_inline_bytes,
            max_queue: state.config.max_queue as u32,
            media_roots: state
                .media
                .roots()
                .iter()
                .map(|r| r.display().to_string())
                .collect(),
        }))
    }
}

/// Checks `authorization: Bearer <token>` when the server has a token.
pub fn check_token(
    token: Option<Arc<String>>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        let Some(expected) = &token else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Constant-time comparison: no early exit on the first differing byte.
        let same = given.len() == expected.len()
            && given
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(request)
        } else {
            Err(status(
                ErrorKind::Unauthenticated,
                "missing or wrong bearer token",
            ))
        }
    }
}
