//! `reel serve`: the gRPC video-to-embedding service.

mod conn;
mod ipc;
mod leases;
mod media;
mod metrics;
mod replica;
mod service;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;

use crate::engine::Device;
use conn::Tracked;
use leases::Leases;
use media::MediaRoots;
use metrics::Metrics;
use replica::{Replica, Replicas};
use service::{ReelService, State};

/// Flags of `reel serve`; every one can also be set in the TOML file given by --config.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file (keys as the long flags, with underscores; flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// TCP address to serve gRPC on [default: 127.0.0.1:50051].
    #[arg(long)]
    pub listen: Option<String>,
    /// Also serve on this unix socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Permissions of the unix socket, octal [default: 660].
    #[arg(long)]
    pub socket_mode: Option<String>,
    /// Folders clients may name videos in (repeatable). Without any, only inline bytes.
    #[arg(long = "media-root")]
    pub media_roots: Vec<PathBuf>,
    /// A model: NAME=DIR or DIR (a Hugging Face folder); repeatable, the first is the default.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Where to run: auto (every GPU, else the CPU), cpu, cuda (every GPU), cuda:N (that
    /// one). Each GPU gets a copy of every model and takes requests in turn (the least
    /// busy first); a video's GOP segments decode on every GPU with a free session
    /// [default: auto].
    #[arg(long)]
    pub device: Option<String>,
    /// Largest inline video upload, bytes [default: 256 MiB].
    #[arg(long)]
    pub max_inline_bytes: Option<u64>,
    /// Requests admitted at once (running + queued); more get RESOURCE_EXHAUSTED [default: 64].
    #[arg(long)]
    pub max_queue: Option<usize>,
    /// Requests processed at once [default: 4].
    #[arg(long)]
    pub workers: Option<usize>,
    /// CPU threads per request [default: cores / workers].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds before an unreleased lease is freed [default: 60].
    #[arg(long)]
    pub lease_ttl: Option<f64>,
    /// Require `authorization: Bearer <token>` (or set REEL_TOKEN).
    #[arg(long, env = "REEL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Address of the Prometheus /metrics endpoint [default: 127.0.0.1:9464].
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Folder for shared-memory results [default: /dev/shm].
    #[arg(long)]
    pub shm_dir: Option<PathBuf>,
    /// Precision of the vision towers: auto (bf16 on a GPU, f32 on the CPU), f32, bf16.
    #[arg(long)]
    pub model_dtype: Option<String>,
    /// Size of the CUDA IPC result pool on a GPU, MiB [default: 4096].
    #[arg(long)]
    pub ipc_pool_mib: Option<u64>,
    /// Device memory one GPU forward of a vision tower may take for its activations, MiB;
    /// the batcher fills forwards with slices of many requests up to it [default: 4096].
    #[arg(long)]
    pub encoder_memory_mib: Option<u64>,
    /// Take each temporal slice to the GPU tower as soon as it is decoded, true or false
    /// [default: true].
    #[arg(long)]
    pub stream_slices: Option<bool>,
    /// Embeddings of recent videos kept for repeated requests (in GPU memory for a GPU
    /// model), MiB; 0 turns the cache off [default: 2048].
    #[arg(long)]
    pub cache_mib: Option<u64>,
    /// With several GPUs, let every GPU work on each video: each encodes the temporal
    /// slices it decoded and the embeddings are joined on the request's GPU, true or false.
    /// Lowers one long video's latency; by default each request encodes on one GPU (a
    /// replica per GPU), which already keeps every GPU busy under load [default: false].
    #[arg(long)]
    pub split_encode: Option<bool>,
}

/// Effective configuration: file values overridden by flags, then defaults.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Option<String>,
    pub socket: Option<PathBuf>,
    pub socket_mode: Option<String>,
    #[serde(default)]
    pub media_roots: Vec<PathBuf>,
    #[serde(default)]
    pub models: Vec<String>,
    pub device: Option<String>,
    #[serde(default = "defaults::max_inline_bytes")]
    pub max_inline_bytes: u64,
    #[serde(default = "defaults::max_queue")]
    pub max_queue: usize,
    #[serde(default = "defaults::workers")]
    pub workers: usize,
    #[serde(default)]
    pub threads: usize,
    #[serde(default = "defaults::lease_ttl")]
    pub lease_ttl: f64,
    pub token: Option<String>,
    pub metrics_listen: Option<String>,
    #[serde(default = "defaults::shm_dir")]
    pub shm_dir: PathBuf,
    #[serde(default = "defaults::ipc_pool_mib")]
    pub ipc_pool_mib: u64,
    #[serde(default = "defaults::model_dtype")]
    pub model_dtype: String,
    #[serde(default = "defaults::encoder_memory_mib")]
    pub encoder_memory_mib: u64,
    #[serde(default = "defaults::stream_slices")]
    pub stream_slices: bool,
    #[serde(default = "defaults::cache_mib")]
    pub cache_mib: u64,
    #[serde(default)]
    pub split_encode: bool,
}

mod defaults {
    pub fn max_inline_bytes() -> u64 {
        256 << 20
    }
    pub fn max_queue() -> usize {
        64
    }
    pub fn workers() -> usize {
        4
    }
    pub fn lease_ttl() -> f64 {
        60.0
    }
    pub fn shm_dir() -> std::path::PathBuf {
        "/dev/shm".into()
    }
    pub fn ipc_pool_mib() -> u64 {
        4096
    }
    pub fn model_dtype() -> String {
        "auto".into()
    }
    pub fn encoder_memory_mib() -> u64 {
        4096
    }
    pub fn stream_slices() -> bool {
        true
    }
    pub fn cache_mib() -> u64 {
        2048
    }
}

impl Config {
    fn load(args: ServeArgs) -> anyhow::Result<Self> {
        let mut c: Config = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid configuration {}", path.display()))?
            }
            None => toml::from_str("")?,
        };
        macro_rules! flag {
            ($field:ident) => {
                if let Some(v) = args.$field {
                    c.$field = v;
                }
            };
            (opt $field:ident) => {
                if args.$field.is_some() {
                    c.$field = args.$field;
                }
            };
        }
        flag!(opt listen);
        flag!(opt socket);
        flag!(opt socket_mode);
        flag!(opt token);
        flag!(opt device);
        flag!(opt metrics_listen);
        flag!(max_inline_bytes);
        flag!(max_queue);
        flag!(workers);
        flag!(threads);
        flag!(lease_ttl);
        flag!(shm_dir);
        flag!(ipc_pool_mib);
        flag!(model_dtype);
        flag!(encoder_memory_mib);
        flag!(stream_slices);
        flag!(cache_mib);
        flag!(split_encode);
        c.media_roots.extend(args.media_roots);
        c.models.extend(args.models);
        c.workers = c.workers.max(1);
        c.max_queue = c.max_queue.max(c.workers);
        if c.threads == 0 {
            c.threads = (crate::engine::threads(None) / c.workers).max(1);
        }
        Ok(c)
    }
}

/// Runs the server until SIGINT/SIGTERM, then finishes in-flight requests.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args)?;
    let replicas = Replicas::load(&config, config.device.as_deref().unwrap_or("auto"))?;
    let media = MediaRoots::new(&config.media_roots)?;
    let leases = Arc::new(Leases::new(Duration::from_secs_f64(config.lease_ttl)));
    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(State {
        admitted: Arc::new(Semaphore::new(config.max_queue)),
        running: Arc::new(Semaphore::new(config.workers)),
        config,
        replicas,
        media,
        leases,
        metrics,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(state))
}

async fn serve(state: Arc<State>) -> anyhow::Result<()> {
    let config = state.config.clone();
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<reel_proto::v1::reel_server::ReelServer<ReelService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(reel_proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let token = config.token.clone().map(Arc::new);
    let router = |state: &Arc<State>| {
        // Inline uploads up to --max-inline-bytes, plus room for the rest of the message.
        let max_message = usize::try_from(config.max_inline_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(1 << 20);
        let reel = tonic::service::interceptor::InterceptedService::new(
            reel_proto::v1::reel_server::ReelServer::new(ReelService {
                state: state.clone(),
            })
            .max_decoding_message_size(max_message),
            service::check_token(token.clone()),
        );
        tonic::transport::Server::builder()
            .add_service(health.clone())
            .add_service(reflection.clone())
            .add_service(reel)
    };

    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down: finishing in-flight requests");
    };

    // Lease expiry.
    let sweeper = {
        let leases = state.leases.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                leases.sweep();
            }
        })
    };

    // Metrics endpoint.
    let metrics_addr = config
        .metrics_listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:9464".into());
    let metrics_listener = tokio::net::TcpListener::bind(&metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {metrics_addr} for metrics"))?;
    let metrics_state = state.clone();
    let metrics_app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let s = metrics_state.clone();
            async move { render_metrics(&s) }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(metrics_listener, metrics_app).await;
    });

    let leases = state.leases.clone();
    let result = if let Some(socket) = &config.socket {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket)
            .with_context(|| format!("cannot bind {}", socket.display()))?;
        let mode = u32::from_str_radix(config.socket_mode.as_deref().unwrap_or("660"), 8)
            .context("socket_mode must be octal")?;
        std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        eprintln!(
            "reel: serving gRPC on unix:{} ({})",
            socket.display(),
            state.replicas.names()
        );
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener)
            .map(move |s| s.map(|s| Tracked::new(s, leases.clone())));
        if let Some(addr) = &config.listen {
            let tcp = tcp_incoming(addr, state.leases.clone()).await?;
            eprintln!("reel: serving gRPC on {addr}");
            let tcp_router = router(&state);
            tokio::spawn(async move { tcp_router.serve_with_incoming(tcp).await });
        }
        router(&state)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    } else {
        let addr = config
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:50051".into());
        let incoming = tcp_incoming(&addr, leases).await?;
        eprintln!(
            "reel: serving gRPC on {addr} ({}), metrics on http://{metrics_addr}/metrics",
            state.replicas.names()
        );
        router(&state)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    };
    sweeper.abort();
    result.map_err(Into::into)
}

async fn tcp_incoming(
    addr: &str,
    leases: Arc<Leases>,
) -> anyhow::Result<impl tokio_stream::Stream<Item = std::io::Result<Tracked<tokio::net::TcpStream>>>>
{
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    Ok(
        tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |s| {
            s.map(|s| {
                let _ = s.set_nodelay(true);
                Tracked::new(s, leases.clone())
            })
        }),
    )
}

fn render_metrics(state: &State) -> String {
    let replicas = || state.replicas.iter();
    let sum = |f: &dyn Fn(&Replica) -> Option<f64>| replicas().filter_map(f).sum::<f64>();
    let mut gauges = vec![(
        "reel_leases",
        "Outstanding result leases.",
        state.leases.len() as f64,
    )];
    if replicas().any(|r| r.cache.is_some()) {
        gauges.extend([
            (
                "reel_cache_hits",
                "Embed requests answered from the embedding cache.",
                sum(&|r| r.cache.as_ref().map(|c| c.hits() as f64)),
            ),
            (
                "reel_cache_misses",
                "Embed requests the embedding cache did not hold.",
                sum(&|r| r.cache.as_ref().map(|c| c.misses() as f64)),
            ),
            (
                "reel_cache_bytes",
                "Bytes of embeddings in the caches.",
                sum(&|r| r.cache.as_ref().map(|c| c.bytes() as f64)),
            ),
            (
                "reel_cache_entries",
                "Videos in the embedding caches.",
                sum(&|r| r.cache.as_ref().map(|c| c.len() as f64)),
            ),
        ]);
    }
    let stats = || {
        replicas()
            .flat_map(|r| r.models.iter())
            .filter_map(|(_, m)| m.batcher().map(|b| b.stats()))
    };
    gauges.extend([
        (
            "reel_encoder_forwards",
            "GPU vision-tower forwards run.",
            stats().map(|s| s.forwards as f64).sum(),
        ),
        (
            "reel_encoder_shared_forwards",
            "GPU vision-tower forwards that held slices of several requests.",
            stats().map(|s| s.shared_forwards as f64).sum(),
        ),
    ]);
    if replicas().any(|r| r.pool.is_some()) {
        gauges.push((
            "reel_ipc_pool_free_bytes",
            "Free bytes of the CUDA IPC result pools.",
            sum(&|r| r.pool.as_ref().map(|p| p.free_bytes() as f64)),
        ));
        gauges.push((
            "reel_ipc_pool_bytes",
            "Size of the CUDA IPC result pools.",
            sum(&|r| r.pool.as_ref().map(|p| p.size() as f64)),
        ));
    }
    let gpu = |r: &Replica| match &r.device {
        Device::Cuda(gpu) => Some(gpu.clone()),
        Device::Cpu => None,
    };
    if replicas().any(|r| gpu(r).is_some()) {
        gauges.push((
            "reel_decoders_created",
            "NVDEC decoders created.",
            sum(&|r| gpu(r).map(|g| g.decoder_pool().created() as f64)),
        ));
        gauges.push((
            "reel_decoders_idle",
            "NVDEC decoders idle in the pools.",
            sum(&|r| gpu(r).map(|g| g.decoder_pool().idle() as f64)),
        ));
        gauges.push((
            "reel_gpu_memory_free_bytes",
            "Free GPU memory, all GPUs.",
            sum(&|r| gpu(r).and_then(|g| g.context().mem_get_info().ok().map(|m| m.0 as f64))),
        ));
    }
    state.metrics.render(&gauges)
}
