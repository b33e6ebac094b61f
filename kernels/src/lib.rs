//! reel-kernels: reel's CUDA C++ kernels.
//!
//! The `.cu` sources are embedded in the binary and compiled by NVRTC for the device's
//! architecture the first time a process needs them; the PTX is cached on disk (keyed by
//! a hash of the source, the options and the architecture), so later runs skip NVRTC. No
//! CUDA toolkit is needed to build reel.

use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaModule, DriverError};
use cudarc::nvrtc::{CompileOptions, Ptx};

/// One kernel source file.
#[derive(Debug)]
pub struct Source {
    pub name: &'static str,
    pub code: &'static str,
    /// Allow the compiler to contract multiply-adds. Off for kernels that must match
    /// the CPU reference bit for bit.
    pub fmad: bool,
}

/// Every kernel source reel ships.
pub const SOURCES: &[Source] = &[
    Source {
        name: "preprocess",
        code: include_str!("../preprocess.cu"),
        fmad: false,
    },
    Source {
        name: "vision",
        code: include_str!("../vision.cu"),
        fmad: true,
    },
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("libnvrtc (CUDA's run-time compiler) was not found; install the CUDA runtime or set LD_LIBRARY_PATH")]
    NvrtcMissing,
    #[error("no kernel source named {0}")]
    UnknownSource(String),
    #[error("NVRTC failed to compile {name} for {arch}:\n{log}")]
    Compile {
        name: &'static str,
        arch: String,
        log: String,
    },
    #[error("CUDA driver: {0}")]
    Driver(#[from] DriverError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True when libnvrtc can be loaded.
pub fn nvrtc_available() -> bool {
    // SAFETY: FFI boundary: only tries to dlopen the library; loads nothing into use.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The NVRTC virtual architecture for a compute capability, e.g. `compute_90`.
pub fn arch(major: i32, minor: i32) -> String {
    format!("compute_{major}{minor}")
}

fn find(name: &str) -> Result<&'static Source> {
    SOURCES
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Error::UnknownSource(name.to_string()))
}

fn options(source: &Source, arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        format!("--fmad={}", source.fmad),
        "--std=c++17".into(),
    ]
}

/// FNV-1a, for cache keys (stable across builds and platforms).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("REEL_KERNEL_CACHE") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("reel").join("kernels"))
}

/// Compiles a kernel source to PTX for `arch` with NVRTC, without any cache.
pub fn compile(name: &str, arch: &str) -> Result<String> {
    if !nvrtc_available() {
        return Err(Error::NvrtcMissing);
    }
    let source = find(name)?;
    let opts = CompileOptions {
        options: options(source, arch),
        name: Some(format!("{}.cu", source.name)),
        ..Default::default()
    };
    let ptx =
        cudarc::nvrtc::compile_ptx_with_opts(source.code, opts).map_err(|e| Error::Compile {
            name: source.name,
            arch: arch.to_string(),
            log: match e {
                cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                    log.to_string_lossy().into_owned()
                }
                other => other.to_string(),
            },
        })?;
    Ok(ptx.to_src())
}

/// PTX for a kernel source, from the disk cache or compiled (and then cached).
pub fn ptx(name: &str, arch: &str) -> Result<String> {
    let source = find(name)?;
    let key = fnv1a(&[
        source.code.as_bytes(),
        options(source, arch).join(" ").as_bytes(),
    ]);
    let path = cache_dir().map(|d| d.join(format!("{}-{key:016x}.ptx", source.name)));
    if let Some(cached) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        return Ok(cached);
    }
    let ptx = compile(name, arch)?;
    if let Some(path) = path {
        // A cache that cannot be written only costs compile time.
        let written = path
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .and_then(|_| {
                let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
                std::fs::write(&tmp, &ptx)?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(e) = written {
            tracing::debug!("kernel cache not written ({}): {e}", path.display());
        }
    }
    Ok(ptx)
}

/// Loads a kernel module into `ctx`, compiling it for the device if needed.
pub fn load(ctx: &Arc<CudaContext>, name: &str) -> Result<Arc<CudaModule>> {
    let (major, minor) = ctx.compute_capability()?;
    let ptx = ptx(name, &arch(major, minor))?;
    Ok(ctx.load_module(Ptx::from_src(ptx))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel compiles for Ampere and Hopper. Needs only libnvrtc (no GPU): CI
    /// installs it from the nvidia-cuda-nvrtc wheel and sets REEL_REQUIRE_NVRTC=1 so a
    /// missing library fails instead of skipping.
    #[test]
    fn every_kernel_compiles_with_nvrtc() {
        if !nvrtc_available() {
            assert!(
                std::env::var_os("REEL_REQUIRE_NVRTC").is_none(),
                "REEL_REQUIRE_NVRTC is set but libnvrtc cannot be loaded"
            );
            eprintln!("libnvrtc not found: kernel compile check skipped");
            return;
        }
        for source in SOURCES {
            for arch in ["compute_80", "compute_90"] {
                let ptx = compile(source.name, arch).unwrap_or_else(|e| panic!("{e}"));
                assert!(
                    ptx.contains(".entry"),
                    "{} for {arch}: no kernel entry",
                    source.name
                );
            }
        }
    }

    #[test]
    fn cache_keys_depend_on_source_and_options() {
        assert_ne!(fnv1a(&[b"a", b"b"]), fnv1a(&[b"ab"]));
        assert_ne!(fnv1a(&[b"x"]), fnv1a(&[b"y"]));
    }
}
