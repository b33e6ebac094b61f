//! reel: videos to vision-encoder embeddings for multimodal LLM servers.

mod cache;
mod cli;
mod engine;
mod job;
mod output;
mod serve;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("REEL_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if cli.verbose { "debug" } else { "warn" })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(err) = cli.run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
