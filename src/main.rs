//! reel: videos to vision-encoder embeddings for multimodal LLM servers.

mod cli;
mod engine;
mod output;
mod serve;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    use tracing_subscriber::prelude::*;
    let matches = cli::Cli::command().get_matches();
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
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
    let result = cli.run(&matches);
    drop(flush);
    match result {
        Ok(code) => code,
        Err(err) if err.is::<output::ClosedStdout>() => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
