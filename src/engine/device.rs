//! Which devices the work runs on: `--device` parsed ([`DeviceChoice`]), the GPUs opened
//! once per process ([`Devices`]), and the device one job runs on ([`Device`]).

use std::str::FromStr;
use std::sync::Arc;

use reel_codec::gpu::Gpu;

use super::error::{Error, ErrorKind};

/// What `--device` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// Every GPU when one with NVDEC is present, else the CPU.
    Auto,
    Cpu,
    /// Every GPU (`cuda`).
    Gpus,
    /// One GPU (`cuda:N`).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Gpus),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    format!("unknown device '{s}' (expected auto, cpu, cuda or cuda:N)")
                }),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Gpus => f.write_str("cuda"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The devices of this process, opened once from a [`DeviceChoice`] and passed down:
/// every GPU that opens (each decodes segments of every other GPU's videos), or none.
pub struct Devices {
    choice: DeviceChoice,
    /// Logical GPUs in order (`cuda:N` is `gpus[N]`), each opened or why not.
    gpus: Vec<Result<Arc<Gpu>, Error>>,
    /// Why there is no GPU at all, when the machine has none.
    none: Option<Error>,
}

impl Devices {
    /// Opens what `choice` needs: nothing for `cpu`; otherwise every GPU of the machine
    /// (a GPU that does not open is left out with a warning). Fails when the choice
    /// names GPUs and none it needs opened (`auto` falls back to the CPU instead).
    pub fn open(choice: DeviceChoice) -> Result<Devices, Error> {
        let mut devices = Devices {
            choice,
            gpus: Vec::new(),
            none: None,
        };
        if choice == DeviceChoice::Cpu {
            return Ok(devices);
        }
        let per_device = gpus_per_device();
        let count = reel_codec::gpu::device_count() * per_device;
        if count == 0 {
            devices.none = Some(match Gpu::open(0) {
                Err(e) => Error::from_codec("no usable GPU", e),
                Ok(_) => Error::new(ErrorKind::Unavailable, "no CUDA device found"),
            });
        }
        for n in 0..count {
            devices.gpus.push(Gpu::open(n / per_device).map_err(|e| {
                tracing::warn!("cuda:{n} left out: {e}");
                Error::from_codec(&format!("cannot use cuda:{n}"), e)
            }));
        }
        // Surface the failure now when the choice cannot be met.
        match choice {
            DeviceChoice::Cuda(n) if devices.gpu(n).is_none() => Err(devices.missing(n)),
            DeviceChoice::Gpus if devices.opened().next().is_none() => Err(devices.missing(0)),
            DeviceChoice::Auto if devices.opened().next().is_none() => {
                tracing::info!("device auto: using the CPU ({})", devices.missing(0));
                Ok(devices)
            }
            _ => Ok(devices),
        }
    }

    /// The device one job runs on: `cuda:N` that GPU, `cuda` and `auto` the first GPU
    /// that opened (its videos still decode on every GPU), else the CPU.
    pub fn primary(&self) -> Device {
        let gpu = match self.choice {
            DeviceChoice::Cpu => None,
            DeviceChoice::Cuda(n) => self.gpu(n).cloned(),
            DeviceChoice::Gpus | DeviceChoice::Auto => self.opened().next().cloned(),
        };
        match gpu {
            Some(gpu) => self.cuda(gpu),
            None => Device::Cpu,
        }
    }

    /// The devices parallel jobs run on, each with its own copy of the models: every GPU
    /// for `cuda` and `auto`, the one GPU of `cuda:N`, else the CPU.
    pub fn all(&self) -> Vec<Device> {
        match self.choice {
            DeviceChoice::Gpus | DeviceChoice::Auto if self.opened().next().is_some() => {
                self.opened().map(|gpu| self.cuda(gpu.clone())).collect()
            }
            _ => vec![self.primary()],
        }
    }

    fn gpu(&self, n: usize) -> Option<&Arc<Gpu>> {
        self.gpus.get(n)?.as_ref().ok()
    }

    fn opened(&self) -> impl Iterator<Item = &Arc<Gpu>> {
        self.gpus.iter().flatten()
    }

    /// `gpu` with every other opened GPU as its decode peer.
    fn cuda(&self, gpu: Arc<Gpu>) -> Device {
        let peers = self
            .opened()
            .filter(|peer| !Arc::ptr_eq(peer, &gpu))
            .cloned()
            .collect();
        Device::Cuda(CudaDevice {
            gpu,
            peers: Arc::new(peers),
        })
    }

    /// Why GPU `n` is not there: its own failure, a number past the last GPU, or no GPU
    /// at all.
    fn missing(&self, n: usize) -> Error {
        match self.gpus.get(n) {
            Some(Err(e)) => e.clone(),
            Some(Ok(_)) => Error::new(ErrorKind::Internal, format!("cuda:{n} is open")),
            None if !self.gpus.is_empty() => Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "cuda:{n} does not exist ({} GPUs{})",
                    self.gpus.len(),
                    match gpus_per_device() {
                        1 => String::new(),
                        k => format!(": REEL_GPUS_PER_DEVICE={k}"),
                    }
                ),
            ),
            None => self
                .none
                .clone()
                .unwrap_or_else(|| Error::new(ErrorKind::Unavailable, "no CUDA device found")),
        }
    }
}

/// How many GPUs each CUDA device stands for: `REEL_GPUS_PER_DEVICE` (default 1). With
/// more, every device is opened that many times — each with its own decoder pool, session
/// share, models and result pool, as on a machine with that many times the GPUs — so the
/// multi-GPU paths (decode peers, split encoding, a replica per GPU) run on a one-GPU
/// machine. For testing those paths: it oversubscribes the device's decoders and memory.
fn gpus_per_device() -> usize {
    std::env::var("REEL_GPUS_PER_DEVICE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}

/// A device the pipeline runs on.
#[derive(Clone)]
pub enum Device {
    Cpu,
    Cuda(CudaDevice),
}

/// A GPU and the other GPUs that decode segments of its videos (their frames are
/// peer-copied into this GPU's output).
#[derive(Clone)]
pub struct CudaDevice {
    pub gpu: Arc<Gpu>,
    pub peers: Arc<Vec<Arc<Gpu>>>,
}

impl std::ops::Deref for CudaDevice {
    type Target = Gpu;

    fn deref(&self) -> &Gpu {
        &self.gpu
    }
}

impl Device {
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(gpu) => gpu_name(gpu),
        }
    }

    /// The GPU, for a CUDA device.
    pub fn gpu(&self) -> Option<&CudaDevice> {
        match self {
            Device::Cuda(gpu) => Some(gpu),
            Device::Cpu => None,
        }
    }
}

/// "cuda:N" of a GPU's CUDA device.
fn gpu_name(gpu: &Gpu) -> String {
    format!("cuda:{}", gpu.context().ordinal())
}

/// Worker threads: the requested number, else all cores.
pub fn threads(requested: Option<usize>) -> usize {
    requested.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}
