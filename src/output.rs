//! Writing results: safetensors files, written whole or not at all.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use anyhow::Context;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Prints a line to stdout. A closed pipe (`reel probe x | head`) is a [`ClosedStdout`]
/// error, which `main` ends the process on quietly (exit code 0).
pub fn print(text: impl std::fmt::Display) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|_| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => anyhow::Error::new(ClosedStdout),
            _ => anyhow::Error::new(e).context("cannot write to stdout"),
        })
}

/// Whoever reads stdout has gone: nothing more to say, and nothing went wrong.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct ClosedStdout;

/// A named tensor to write.
pub struct NamedTensor<'a> {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
}

impl<'a> NamedTensor<'a> {
    pub fn f32(name: &str, shape: Vec<usize>, data: &'a [f32]) -> Self {
        Self::new(name, Dtype::F32, shape, bytemuck_f32(data))
    }

    pub fn new(name: &str, dtype: Dtype, shape: Vec<usize>, bytes: &'a [u8]) -> Self {
        Self {
            name: name.to_string(),
            dtype,
            shape,
            bytes,
        }
    }
}

fn bytemuck_f32(data: &[f32]) -> &[u8] {
    bytemuck::cast_slice(data)
}

/// Little-endian bytes of f32 values (an owned copy).
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    bytemuck_f32(values).to_vec()
}

/// Little-endian bf16 bytes of f32 values that are bf16 values widened (what a bf16 tower
/// returns), so the conversion is exact.
pub fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect()
}

/// Little-endian bytes of i64 values.
pub fn i64_bytes(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes of f64 values.
pub fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The sampling plan's tensors, written beside pixel values or embeddings:
/// `video_grid_thw` [1, 3] i64, `frame_indices` [frames] i64, `timestamps` [frames] f64,
/// `grid_timestamps` [t] f64 (one per temporal patch: Qwen3-VL's timestamps) and
/// `second_per_grid_ts` [1] f64.
pub struct PlanTensors {
    grid: Vec<u8>,
    frame_indices: Vec<u8>,
    timestamps: Vec<u8>,
    second_per_grid: Vec<u8>,
    grid_timestamps: Vec<u8>,
    frames: usize,
    groups: usize,
}

impl PlanTensors {
    pub fn new(plan: &reel_codec::SamplePlan) -> Self {
        let indices: Vec<i64> = plan.frames.iter().map(|&f| f as i64).collect();
        Self {
            grid: i64_bytes(&plan.grid_thw.map(|v| v as i64)),
            frame_indices: i64_bytes(&indices),
            timestamps: f64_bytes(&plan.timestamps),
            second_per_grid: f64_bytes(&[plan.second_per_grid_t]),
            grid_timestamps: f64_bytes(&plan.group_timestamps),
            frames: indices.len(),
            groups: plan.group_timestamps.len(),
        }
    }

    /// `video_grid_thw`, `frame_indices`, `timestamps` and `grid_timestamps`, plus
    /// `second_per_grid_ts` when `with_second_per_grid`.
    pub fn tensors(&self, with_second_per_grid: bool) -> Vec<NamedTensor<'_>> {
        let mut out = vec![
            NamedTensor::new("video_grid_thw", Dtype::I64, vec![1, 3], &self.grid),
            NamedTensor::new(
                "frame_indices",
                Dtype::I64,
                vec![self.frames],
                &self.frame_indices,
            ),
            NamedTensor::new(
                "timestamps",
                Dtype::F64,
                vec![self.frames],
                &self.timestamps,
            ),
            NamedTensor::new(
                "grid_timestamps",
                Dtype::F64,
                vec![self.groups],
                &self.grid_timestamps,
            ),
        ];
        if with_second_per_grid {
            out.push(NamedTensor::new(
                "second_per_grid_ts",
                Dtype::F64,
                vec![1],
                &self.second_per_grid,
            ));
        }
        out
    }
}

/// Writes a safetensors file atomically: to a temporary file in the same folder,
/// synced, then renamed over `path`. An interrupted run leaves no file that looks
/// complete.
pub fn write_safetensors(
    path: &Path,
    tensors: &[NamedTensor],
    metadata: HashMap<String, String>,
) -> anyhow::Result<()> {
    let views = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.clone(), t.bytes)
                .map(|v| (t.name.clone(), v))
                .with_context(|| format!("tensor {}", t.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().context("output path has no file name")?;
    let tmp = dir.join(format!(
        ".{}.{}.partial",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        safetensors::serialize_to_file(views, Some(metadata), &tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move the output to {}", path.display()))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
