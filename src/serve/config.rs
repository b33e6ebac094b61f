//! The configuration of `reel serve`, declared once: every field is a flag (clap) and a
//! key of the optional TOML file (serde), with one default for both. The file is read
//! first; flags given on the command line (or through their environment variable) win.
//! `reel serve --print-config` shows the result.

use std::path::PathBuf;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches, Parser};
use serde::{Deserialize, Serialize};

/// Serve videos-to-embeddings over gRPC (reel.v1), with results handed over through
/// CUDA IPC or shared memory. Every option can also be set in the TOML file of
/// `--config` (keys as the long flags with underscores: `cache_mib = 1024`,
/// `models = ["tiny=/models/tiny"]`); a flag given on the command line wins over the file.
#[derive(Clone, Debug, Parser, Serialize, Deserialize)]
#[command(name = "serve")]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// TOML configuration file (keys as the long flags, with underscores; flags win).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (file + flags + defaults) as TOML and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
    /// TCP address to serve gRPC on [default: 127.0.0.1:50051, unless --socket is given].
    #[arg(long)]
    pub listen: Option<String>,
    /// Also serve on this unix socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Permissions of the unix socket, octal.
    #[arg(long, default_value_t = defaults::socket_mode())]
    pub socket_mode: String,
    /// Folders clients may name videos in (repeatable). Without any, only inline bytes.
    #[arg(long = "media-root", id = "media_roots")]
    pub media_roots: Vec<PathBuf>,
    /// A model: NAME=DIR or DIR (a Hugging Face folder); repeatable, the first is the default.
    #[arg(long = "model", id = "models")]
    pub models: Vec<String>,
    /// Where to run: auto (every GPU, else the CPU), cpu, cuda (every GPU), cuda:N (that
    /// one). Each GPU gets a copy of every model and takes requests in turn (the least
    /// busy first); a video's GOP segments decode on every GPU with a free session.
    #[arg(long, default_value_t = defaults::device())]
    pub device: String,
    /// Largest inline video upload, bytes.
    #[arg(long, default_value_t = defaults::max_inline_bytes())]
    pub max_inline_bytes: u64,
    /// Requests admitted at once (running + queued); more get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = defaults::max_queue())]
    pub max_queue: usize,
    /// Requests processed at once.
    #[arg(long, default_value_t = defaults::workers())]
    pub workers: usize,
    /// CPU threads per request [default: cores / workers].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds before an unreleased lease is freed.
    #[arg(long, default_value_t = defaults::lease_ttl())]
    pub lease_ttl: f64,
    /// Require `authorization: Bearer <token>`.
    #[arg(long, env = "REEL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long, default_value_t = defaults::metrics_listen())]
    pub metrics_listen: String,
    /// Folder for shared-memory results.
    #[arg(long, default_value_os_t = defaults::shm_dir())]
    pub shm_dir: PathBuf,
    /// Precision of the vision towers: auto (bf16 on a GPU, f32 on the CPU), f32, bf16.
    #[arg(long, default_value_t = defaults::model_dtype())]
    pub model_dtype: String,
    /// Size of the CUDA IPC result pool on a GPU, MiB.
    #[arg(long, default_value_t = defaults::ipc_pool_mib())]
    pub ipc_pool_mib: u64,
    /// Device memory one GPU forward of a vision tower may take for its activations, MiB;
    /// the batcher fills forwards with slices of many requests up to it.
    #[arg(long, default_value_t = defaults::encoder_memory_mib())]
    pub encoder_memory_mib: u64,
    /// Take each temporal slice to the GPU tower as soon as it is decoded, true or false.
    #[arg(long, default_value_t = defaults::stream_slices(), action = clap::ArgAction::Set)]
    pub stream_slices: bool,
    /// Embeddings of recent videos kept for repeated requests (in GPU memory for a GPU
    /// model), MiB; 0 turns the cache off.
    #[arg(long, default_value_t = defaults::cache_mib())]
    pub cache_mib: u64,
    /// With several GPUs, let every GPU work on each video: each encodes the temporal
    /// slices it decoded and the embeddings are joined on the request's GPU, true or false.
    /// Lowers one long video's latency; by default each request encodes on one GPU (a
    /// replica per GPU), which already keeps every GPU busy under load.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub split_encode: bool,
}

/// The defaults, shared by the flags and the file.
mod defaults {
    pub fn socket_mode() -> String {
        "660".into()
    }
    pub fn device() -> String {
        "auto".into()
    }
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
    pub fn metrics_listen() -> String {
        "127.0.0.1:9464".into()
    }
    pub fn shm_dir() -> std::path::PathBuf {
        "/dev/shm".into()
    }
    pub fn model_dtype() -> String {
        "auto".into()
    }
    pub fn ipc_pool_mib() -> u64 {
        4096
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

impl Default for ServeConfig {
    /// Every option at its default (the token from REEL_TOKEN when set).
    fn default() -> Self {
        ServeConfig::try_parse_from(["serve"]).expect("the defaults of every option parse")
    }
}

impl ServeConfig {
    /// The effective configuration from `serve`'s matches: the file of `--config` (if
    /// any), then every flag the user set on the command line or through its
    /// environment variable; then derived values (threads per request).
    pub fn from_matches(matches: &ArgMatches) -> anyhow::Result<ServeConfig> {
        let flags = ServeConfig::from_arg_matches(matches)?;
        let mut config = match &flags.config {
            None => flags.clone(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let file: toml::Value = toml::from_str(&text)
                    .with_context(|| format!("invalid configuration {}", path.display()))?;
                let mut merged = serde_json::to_value(&file)?;
                let given = serde_json::to_value(&flags)?;
                for id in matches.ids().map(|id| id.as_str()) {
                    let set = matches!(
                        matches.value_source(id),
                        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                    );
                    if let (true, Some(value)) = (set, given.get(id)) {
                        merged[id] = value.clone();
                    }
                }
                let mut config: ServeConfig = serde_json::from_value(merged)
                    .with_context(|| format!("invalid configuration {}", path.display()))?;
                config.config = flags.config.clone();
                config.print_config = flags.print_config;
                config
            }
        };
        config.workers = config.workers.max(1);
        config.max_queue = config.max_queue.max(config.workers);
        if config.threads.is_none_or(|t| t == 0) {
            config.threads = Some((crate::engine::threads(None) / config.workers).max(1));
        }
        Ok(config)
    }

    /// CPU threads per request (set by [`ServeConfig::from_matches`]).
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or(1)
    }

    /// The configuration as TOML, the token hidden.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        let mut shown = self.clone();
        if shown.token.is_some() {
            shown.token = Some("<hidden>".into());
        }
        Ok(toml::to_string(&shown)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> anyhow::Result<ServeConfig> {
        let matches = ServeConfig::command().try_get_matches_from(args)?;
        ServeConfig::from_matches(&matches)
    }

    #[test]
    fn defaults_flags_and_file_merge_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("reel.toml");
        std::fs::write(
            &file,
            "cache_mib = 1\nworkers = 3\nmodels = [\"a=/m/a\"]\nstream_slices = false\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let c = parse(&["serve", "--config", path, "--workers", "5"]).unwrap();
        assert_eq!(c.workers, 5, "a flag wins over the file");
        assert_eq!(c.cache_mib, 1, "the file wins over the default");
        assert!(!c.stream_slices);
        assert_eq!(c.models, ["a=/m/a"]);
        assert_eq!(c.max_queue, 64, "untouched keys keep their default");
        let c = parse(&["serve", "--config", path, "--model", "b=/m/b"]).unwrap();
        assert_eq!(
            c.models,
            ["b=/m/b"],
            "a repeated flag replaces the file's list"
        );
        let c = parse(&["serve"]).unwrap();
        assert_eq!((c.cache_mib, c.workers), (2048, 4));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("reel.toml");
        std::fs::write(&file, "cache_mb = 1\n").unwrap();
        let err = parse(&["serve", "--config", file.to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("cache_mb"), "{err:#}");
        std::fs::write(&file, "workers = \"many\"\n").unwrap();
        assert!(parse(&["serve", "--config", file.to_str().unwrap()]).is_err());
        assert!(parse(&["serve", "--config", "/nonexistent/reel.toml"]).is_err());
    }

    #[test]
    fn the_printed_config_reads_back_the_same() {
        let c = parse(&["serve", "--cache-mib", "7", "--token", "secret"]).unwrap();
        let text = c.to_toml().unwrap();
        assert!(!text.contains("secret"), "{text}");
        let back: ServeConfig = toml::from_str(&text).unwrap();
        assert_eq!(back.cache_mib, 7);
        assert_eq!(back.workers, c.workers);
    }
}
