//! `reel transcode`: a directory of videos → safetensors shards + a JSONL manifest.
//!
//! Videos are processed by `--jobs` workers; one writer collects their tensors into
//! shards of bounded size. A shard is written to a temporary file, synced and renamed
//! before its manifest rows are appended (and synced), so a crash never leaves a row that
//! points at a partial shard (an unfinished last row is cut on the next run). A rerun skips
//! videos whose content hash is already in the manifest with status "ok" and the same
//! settings (`--what`, sampling, model, dtype); other settings redo them, and readers take
//! the last row of each source.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use super::sampling::SamplingArgs;
use crate::engine::{self, Input, Want};
use crate::engine::{Device, Pixels};
use crate::output::{bf16_bytes, f32_bytes, f64_bytes, i64_bytes, write_safetensors, NamedTensor};

/// File extensions picked up when a directory is given.
const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "m4v", "mov", "mkv", "webm", "h264", "264", "h265", "265", "hevc",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum What {
    Frames,
    Embeddings,
    Both,
}

#[derive(Debug, Args)]
pub struct TranscodeArgs {
    /// Videos, folders (searched recursively for video extensions) or list files
    /// (`@list.txt`: one path per line).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Output folder for shards and the manifest.
    #[arg(long, short)]
    pub output: PathBuf,
    /// What to store per video.
    #[arg(long, value_enum, default_value_t = What::Frames)]
    pub what: What,
    /// A Hugging Face Qwen2.5-VL model folder (for embeddings).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub encoder: super::encoder::EncoderArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Where to run: auto (every GPU, else the CPU), cpu, cuda (every GPU, a copy of the
    /// model on each; jobs take them in turn), cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: crate::engine::DeviceChoice,
    /// Videos processed at once [default: 2 per GPU, else 1 (each uses all threads)].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// CPU threads per video [default: cores / jobs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Largest shard, e.g. 1GiB, 256MiB, 10000000.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub shard_size: u64,
    /// Take a deterministic 1/N of the inputs: `--shard 3/8` is worker 3 of 8 (0-based),
    /// for arrays of jobs (Kubernetes indexed Jobs, Slurm arrays, Ray).
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(u64, u64)>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    Ok(n * mult)
}

fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let (i, n) = s.split_once('/').ok_or("expected i/N, e.g. 0/4")?;
    let (i, n): (u64, u64) = (
        i.parse().map_err(|_| "bad i")?,
        n.parse().map_err(|_| "bad N")?,
    );
    if n == 0 || i >= n {
        return Err(format!("shard {i}/{n}: need 0 <= i < N"));
    }
    Ok((i, n))
}

/// One row of the manifest.
#[derive(Debug, Serialize, Deserialize)]
pub struct Row {
    pub source: String,
    pub size: u64,
    /// BLAKE3 of the file's bytes.
    pub hash: String,
    /// What the run was asked for (see [`settings_id`]): a rerun with other settings
    /// redoes the video.
    #[serde(default)]
    pub settings: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frame_indices: Vec<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timestamps: Vec<f64>,
    /// One time per temporal patch (Qwen3-VL's timestamps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grid_timestamps: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_grid_thw: Option<[usize; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_per_grid_t: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Tensor names in the shard, by role.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub tensors: HashMap<String, String>,
}

/// Expands inputs into a sorted, de-duplicated list of files.
fn collect_inputs(inputs: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if let Some(list) = input.strip_prefix('@') {
            let file =
                std::fs::File::open(list).with_context(|| format!("cannot read list {list}"))?;
            for line in std::io::BufReader::new(file).lines() {
                let line = line?;
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    out.push(PathBuf::from(line));
                }
            }
            continue;
        }
        let path = PathBuf::from(input);
        if path.is_dir() {
            walk(&path, &mut out)?;
        } else {
            out.push(path);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// FNV-1a of a path: the stable key `--shard` partitions by.
fn shard_key(path: &Path) -> u64 {
    path.to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The sampling flags, with the model folder's processor when a model is given (its
/// frames are preprocessed as that model's processor does, whatever `--what`).
fn sampling_options(args: &TranscodeArgs) -> anyhow::Result<reel_codec::SamplingOptions> {
    let processor = match &args.model {
        Some(dir) => crate::engine::video_processor(&reel_encoder::ModelSpec::read(dir)?)?,
        None => Default::default(),
    };
    Ok(args.sampling.options_for(&processor))
}

/// Identifies what a run stores per video: `--what`, the sampling options, the model and
/// its dtype (BLAKE3 of their JSON, 16 hex digits).
fn settings_id(args: &TranscodeArgs) -> String {
    let model = args
        .model
        .as_ref()
        .map(|m| m.canonicalize().unwrap_or_else(|_| m.clone()));
    let settings = serde_json::json!({
        "what": args.what,
        "sampling": sampling_options(args).unwrap_or_else(|_| args.sampling.options()),
        "model": model,
        "dtype": model.as_ref().map(|_| &args.encoder.dtype),
    });
    blake3::hash(settings.to_string().as_bytes()).to_hex()[..16].to_string()
}

/// Cuts a manifest's last line when a crash left it unfinished (no newline), so that
/// the rows appended next start on a line of their own; the video of the cut row is
/// redone. Returns whether anything was cut.
fn cut_torn_row(path: &Path) -> anyhow::Result<bool> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(false);
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(false);
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(keep as u64)?;
    file.sync_data()?;
    Ok(true)
}

fn hash_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let size = file.metadata()?.len();
    hasher.update_reader(file)?;
    Ok((hasher.finalize().to_hex().to_string(), size))
}

/// What a worker hands the writer.
struct Done {
    source: PathBuf,
    hash: String,
    size: u64,
    result: anyhow::Result<Produced>,
}

struct Produced {
    outcome_plan: reel_codec::SamplePlan,
    stream: serde_json::Value,
    pixel_values: Option<(Vec<f32>, [usize; 2])>,
    embeddings: Option<(Vec<f32>, [usize; 2])>,
    sampled: usize,
}

/// Accumulates tensors of several videos until the shard is full.
struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    limit: u64,
    seq: usize,
    bytes: u64,
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    rows: Vec<Row>,
    manifest: std::fs::File,
}

impl ShardWriter {
    fn next_name(&self) -> String {
        format!("{}-{:05}.safetensors", self.prefix, self.seq)
    }

    fn add(
        &mut self,
        mut row: Row,
        tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let size: u64 = tensors.iter().map(|t| t.3.len() as u64).sum();
        if !self.tensors.is_empty() && self.bytes + size > self.limit {
            self.flush()?;
        }
        row.shard = Some(self.next_name());
        self.bytes += size;
        self.tensors.extend(tensors);
        self.rows.push(row);
        Ok(())
    }

    /// Records a video without tensors (failed) right away.
    fn add_row_only(&mut self, row: Row) -> anyhow::Result<()> {
        self.append_rows(&[row])
    }

    fn append_rows(&mut self, rows: &[Row]) -> anyhow::Result<()> {
        let mut text = String::new();
        for row in rows {
            text.push_str(&serde_json::to_string(row)?);
            text.push('\n');
        }
        self.manifest.write_all(text.as_bytes())?;
        self.manifest.sync_data()?;
        Ok(())
    }

    /// Writes the shard (atomically), then its manifest rows.
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(self.next_name());
        let tensors: Vec<NamedTensor> = self
            .tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| NamedTensor::new(name, *dtype, shape.clone(), bytes))
            .collect();
        let metadata = HashMap::from([("format".to_string(), "reel.transcode.v1".to_string())]);
        write_safetensors(&path, &tensors, metadata)?;
        let rows = std::mem::take(&mut self.rows);
        self.append_rows(&rows)?;
        self.tensors.clear();
        self.bytes = 0;
        self.seq += 1;
        Ok(())
    }
}

/// Exit code 2 when some videos failed (they are in the manifest).
pub fn run(args: TranscodeArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.what != What::Frames && args.model.is_none() {
        bail!("--what {:?} needs --model", args.what);
    }
    let t0 = Instant::now();
    let mut inputs = collect_inputs(&args.inputs)?;
    if let Some((i, n)) = args.shard {
        inputs.retain(|p| shard_key(p) % n == i);
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let prefix = match args.shard {
        Some((i, n)) => format!("part-{i:05}-of-{n:05}"),
        None => "part".into(),
    };
    let manifest_path = args.output.join(format!(
        "manifest{}.jsonl",
        prefix.strip_prefix("part").unwrap_or("")
    ));
    // Resume: videos already done (same content hash and settings, status ok), and the
    // next shard number.
    if cut_torn_row(&manifest_path)? {
        tracing::warn!(
            "{}: cut an unfinished last row (an interrupted run); its video is redone",
            manifest_path.display()
        );
    }
    let settings = settings_id(&args);
    let mut done: HashSet<String> = HashSet::new();
    let mut seq = 0;
    if let Ok(file) = std::fs::File::open(&manifest_path) {
        for line in std::io::BufReader::new(file).lines() {
            let Ok(row) = serde_json::from_str::<Row>(&line?) else {
                continue;
            };
            if row.status == "ok" && row.settings == settings {
                done.insert(row.hash.clone());
            }
            if let Some(n) = row
                .shard
                .as_deref()
                .and_then(|s| s.rsplit('-').next())
                .and_then(|s| s.strip_suffix(".safetensors"))
                .and_then(|s| s.parse::<usize>().ok())
            {
                seq = seq.max(n + 1);
            }
        }
    }
    // One replica per device (every GPU for `cuda` and `auto`), each with its own tower;
    // jobs take the replicas in turn.
    let replicas = crate::engine::Devices::open(args.device)?
        .all()
        .into_iter()
        .map(
            |device| -> anyhow::Result<(Device, Option<Arc<crate::engine::Model>>)> {
                let tower = match &args.model {
                    Some(dir) => Some(Arc::new(
                        crate::engine::Model::load(dir, &args.encoder.options(), &device)
                            .with_context(|| {
                                format!("cannot load {} on {}", dir.display(), device.name())
                            })?,
                    )),
                    None => None,
                };
                Ok((device, tower))
            },
        )
        .collect::<anyhow::Result<Vec<_>>>()?;
    let on_gpu = matches!(replicas[0].0, Device::Cuda(_));
    let jobs = args
        .jobs
        .unwrap_or(if on_gpu { 2 * replicas.len() } else { 1 })
        .max(1);
    let threads = args
        .threads
        .unwrap_or_else(|| (crate::engine::threads(None) / jobs).max(1));
    let device_names = replicas
        .iter()
        .map(|(d, _)| d.name())
        .collect::<Vec<_>>()
        .join(",");
    let embedding_dtype = replicas[0].1.as_ref().map(|m| m.tower.dtype());
    let manifest = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&manifest_path)?;
    let mut writer = ShardWriter {
        dir: args.output.clone(),
        prefix,
        limit: args.shard_size,
        seq,
        bytes: 0,
        tensors: Vec::new(),
        rows: Vec::new(),
        manifest,
    };
    let progress = if args.quiet || args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(inputs.len() as u64)
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} videos  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    let options = sampling_options(&args)?;
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::sync_channel::<Done>(jobs * 2);
    let (mut ok, mut failed, mut skipped, mut frames_sampled, mut video_frames) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        for job in 0..jobs {
            let tx = tx.clone();
            let (device, tower) = &replicas[job % replicas.len()];
            let (inputs, next, done, options, what) = (&inputs, &next, &done, &options, args.what);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = inputs.get(i) else { break };
                let (hash, size) = match hash_file(path) {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = tx.send(Done {
                            source: path.clone(),
                            hash: String::new(),
                            size: 0,
                            result: Err(e),
                        });
                        continue;
                    }
                };
                if done.contains(&hash) {
                    let _ = tx.send(Done {
                        source: path.clone(),
                        hash,
                        size,
                        result: Err(anyhow::anyhow!(Skipped)),
                    });
                    continue;
                }
                let result = produce(device, path, options, what, tower.as_ref(), threads);
                if tx
                    .send(Done {
                        source: path.clone(),
                        hash,
                        size,
                        result,
                    })
                    .is_err()
                {
                    break;
                }
            });
        }
        drop(tx);
        for item in rx {
            progress.inc(1);
            let source = item.source.display().to_string();
            match item.result {
                Err(e) if e.is::<Skipped>() => skipped += 1,
                Err(e) => {
                    failed += 1;
                    failures.push((source.clone(), format!("{e:#}")));
                    writer.add_row_only(Row {
                        source,
                        size: item.size,
                        hash: item.hash,
                        settings: settings.clone(),
                        status: "error".into(),
                        error: Some(format!("{e:#}")),
                        stream: None,
                        frame_indices: Vec::new(),
                        timestamps: Vec::new(),
                        grid_timestamps: Vec::new(),
                        video_grid_thw: None,
                        second_per_grid_t: None,
                        shard: None,
                        tensors: HashMap::new(),
                    })?;
                }
                Ok(p) => {
                    ok += 1;
                    frames_sampled += p.sampled;
                    video_frames += p.stream["frame_count"].as_u64().unwrap_or(0) as usize;
                    // Content hash + this run's ordinal: files with equal content (copies)
                    // still get distinct tensor names in a shard.
                    let key = format!("{}-{ok}", &item.hash[..16]);
                    let plan = &p.outcome_plan;
                    let mut tensors = Vec::new();
                    let mut names = HashMap::new();
                    let mut add = |role: &str, dtype, shape: Vec<usize>, bytes| {
                        let name = format!("{key}.{role}");
                        names.insert(role.to_string(), name.clone());
                        tensors.push((name, dtype, shape, bytes));
                    };
                    if let Some((values, shape)) = &p.pixel_values {
                        add(
                            "pixel_values",
                            Dtype::F32,
                            shape.to_vec(),
                            f32_bytes(values),
                        );
                    }
                    // Embeddings keep the tower's precision: a bf16 tower's values are bf16.
                    if let Some((values, shape)) = &p.embeddings {
                        let (dtype, bytes) = match embedding_dtype {
                            Some(reel_encoder::DType::BF16) => (Dtype::BF16, bf16_bytes(values)),
                            _ => (Dtype::F32, f32_bytes(values)),
                        };
                        add("embeddings", dtype, shape.to_vec(), bytes);
                    }
                    add(
                        "video_grid_thw",
                        Dtype::I64,
                        vec![1, 3],
                        i64_bytes(&plan.grid_thw.map(|v| v as i64)),
                    );
                    add(
                        "timestamps",
                        Dtype::F64,
                        vec![plan.timestamps.len()],
                        f64_bytes(&plan.timestamps),
                    );
                    add(
                        "grid_timestamps",
                        Dtype::F64,
                        vec![plan.group_timestamps.len()],
                        f64_bytes(&plan.group_timestamps),
                    );
                    writer.add(
                        Row {
                            source,
                            size: item.size,
                            hash: item.hash,
                            settings: settings.clone(),
                            status: "ok".into(),
                            error: None,
                            stream: Some(p.stream),
                            frame_indices: plan.frames.clone(),
                            timestamps: plan.timestamps.clone(),
                            grid_timestamps: plan.group_timestamps.clone(),
                            video_grid_thw: Some(plan.grid_thw),
                            second_per_grid_t: Some(plan.second_per_grid_t),
                            shard: None,
                            tensors: names,
                        },
                        tensors,
                    )?;
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            progress.set_message(format!(
                "{:.0} frames/s  {failed} failed  {skipped} skipped",
                video_frames as f64 / secs
            ));
        }
        writer.flush()
    })?;
    progress.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "output": args.output,
        "manifest": manifest_path,
        "videos": inputs.len(),
        "ok": ok,
        "failed": failed,
        "skipped": skipped,
        "sampled_frames": frames_sampled,
        "video_frames": video_frames,
        "seconds": secs,
        "videos_per_s": ok as f64 / secs,
        "device": device_names,
        "failures": failures.iter().map(|(s, e)| serde_json::json!({"source": s, "error": e})).collect::<Vec<_>>(),
    });
    if args.json {
        crate::output::print(serde_json::to_string_pretty(&summary)?)?;
    } else if !args.quiet {
        crate::output::print(format_args!(
            "{:<10} {}\n{:<10} {ok} ok, {failed} failed, {skipped} skipped (of {})\n{:<10} {:.1} s, {:.2} videos/s, {:.0} video frames/s on {}\n{:<10} {}",
            "output",
            args.output.display(),
            "videos",
            inputs.len(),
            "time",
            secs,
            ok as f64 / secs,
            video_frames as f64 / secs,
            device_names,
            "manifest",
            manifest_path.display()
        ))?;
        for (source, error) in &failures {
            crate::output::print(format_args!("failed     {source}: {error}"))?;
        }
    }
    Ok(match failed {
        0 => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::from(2),
    })
}

/// A video already in the manifest.
#[derive(Debug)]
struct Skipped;

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("already transcoded")
    }
}

impl std::error::Error for Skipped {}

/// One video's tensors. Embeddings alone come straight from the GPU pipeline; with
/// frames too, the frames come to the host and are encoded from there.
fn produce(
    device: &Device,
    path: &Path,
    options: &reel_codec::SamplingOptions,
    what: What,
    model: Option<&Arc<crate::engine::Model>>,
    threads: usize,
) -> anyhow::Result<Produced> {
    let cancel = reel_codec::Cancel::new();
    let want = match (what, model) {
        (What::Embeddings, Some(model)) => Want::Embeddings(model.clone()),
        _ => Want::Frames,
    };
    let input = Input::Path(path.to_path_buf());
    let outcome = engine::run(device, input, options, &want, threads, &cancel, None)?;
    let stream = serde_json::to_value(&outcome.stream)?;
    let shape = outcome.values.shape();
    let sampled = outcome.plan.frames.len();
    let plan = outcome.plan;
    let values = outcome.values.into_host_f32()?;
    let (pixel_values, embeddings) = match (what, model) {
        (What::Embeddings, Some(_)) => (None, Some((values, shape))),
        (What::Both, Some(model)) => {
            let pixels = Pixels::Host(reel_codec::preprocess::PixelValues {
                data: values,
                grid_thw: plan.grid_thw,
            });
            let emb = model.encode(&pixels, None)?;
            let emb_shape = emb.shape();
            (
                Some((pixels.into_host()?.data, shape)),
                Some((emb.into_host_f32()?, emb_shape)),
            )
        }
        _ => (Some((values, shape)), None),
    };
    Ok(Produced {
        outcome_plan: plan,
        stream,
        pixel_values,
        embeddings,
        sampled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_shards_parse() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("1XB").is_err());
        assert_eq!(parse_shard("3/8"), Ok((3, 8)));
        assert!(parse_shard("8/8").is_err());
        assert!(parse_shard("1/0").is_err());
    }

    #[test]
    fn shards_partition_the_inputs() {
        let paths: Vec<PathBuf> = (0..500)
            .map(|i| PathBuf::from(format!("/data/v{i}.mp4")))
            .collect();
        let n = 7;
        let mut seen = 0;
        for i in 0..n {
            let part = paths.iter().filter(|p| shard_key(p) % n == i).count();
            assert!(part > 40, "unbalanced shard {i}: {part}");
            seen += part;
        }
        assert_eq!(seen, paths.len());
    }
}
