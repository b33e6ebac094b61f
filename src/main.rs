//! reel: videos to vision-encoder embeddings for multimodal LLM servers.

mod cli;
mod engine;
mod output;
mod serve;

use clap::Parser;

fn main() {
    use tracing_subscriber::prelude::*;
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("REEL_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if cli.verbose { "debug" } else { "warn" })
    });
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    // The timeline of --trace: reel's own spans (demux, segments, frames, forwards).
    let (timeline, flush) = match &cli.trace {
        Some(path) => {
            let (layer, guard) = tracing_chrome::ChromeLayerBuilder::new()
                .file(path)
                .include_args(true)
                .build();
            let spans = tracing_subscriber::filter::Targets::new()
                .with_target("reel", tracing::Level::INFO)
                .with_target("reel_codec", tracing::Level::INFO)
                .with_target("reel_encoder", tracing::Level::INFO);
            (Some(layer.with_filter(spans)), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(log)
        .with(timeline)
        .init();
    let result = cli.run();
    drop(flush);
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
