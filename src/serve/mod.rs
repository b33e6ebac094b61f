//! `reel serve`: the gRPC video-to-embedding service.

mod config;
mod conn;
mod ipc;
mod leases;
mod media;
mod metrics;
mod replica;
mod service;
mod status;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;

use crate::engine::Device;
pub use config::ServeConfig;
use conn::Tracked;
use leases::Leases;
use media::MediaRoots;
use metrics::Metrics;
use replica::{Replica, Replicas};
use service::{ReelService, State};

/// Runs the server until SIGINT/SIGTERM, then finishes in-flight requests.
pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    if config.print_config {
        crate::output::print(config.to_toml()?.trim_end())?;
        return Ok(());
    }
    let replicas = Replicas::load(&config)?;
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
    let metrics_addr = config.metrics_listen.clone();
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
        let mode =
            u32::from_str_radix(&config.socket_mode, 8).context("socket_mode must be octal")?;
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
