//! Replicas: one per GPU the server runs on (or one for the CPU), each with its own copy
//! of every model, CUDA IPC result pool and embedding cache. A request runs on the least
//! busy replica (its video's GOP segments still decode on every GPU with a free session),
//! so the vision towers encode data-parallel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;

use super::ipc::DevicePool;
use super::ServeConfig;
use crate::engine::EmbeddingCache;
use crate::engine::{Device, DeviceChoice, GpuModel, Model, ModelOptions};

/// One device with its models, result pool and cache.
pub struct Replica {
    pub device: Device,
    /// The server's models in `--model` order (the same on every replica).
    pub models: Vec<(String, Arc<Model>)>,
    /// CUDA IPC pool of a GPU replica.
    pub pool: Option<Arc<DevicePool>>,
    pub cache: Option<EmbeddingCache>,
    /// With `split_encode` and several GPUs: per model, its copy on every GPU, this
    /// replica's first (where split results land).
    pub split: Vec<Arc<Vec<GpuModel>>>,
    /// Requests running on it now.
    busy: AtomicUsize,
}

/// Every replica of the server (at least one).
pub struct Replicas(Vec<Arc<Replica>>);

/// A replica taken for one request; gives its turn back when dropped.
pub struct Busy(Arc<Replica>);

impl std::ops::Deref for Busy {
    type Target = Replica;

    fn deref(&self) -> &Replica {
        &self.0
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Replicas {
    /// Opens the devices `--device` names (`cuda` and `auto`: every GPU; `cuda:N`: that
    /// one) and loads every model on each.
    pub fn load(config: &ServeConfig) -> anyhow::Result<Self> {
        let choice: DeviceChoice = config
            .device
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        let devices = crate::engine::Devices::open(choice)?.all();
        let options = ModelOptions {
            dtype: config.model_dtype.clone(),
            memory_budget: config.encoder_memory_mib << 20,
            stream_slices: config.stream_slices,
        };
        let mut all: Vec<Replica> = Vec::new();
        for device in devices {
            let models = load_models(&config.models, &device, &options)?;
            let pool = match &device {
                Device::Cuda(gpu) => Some(DevicePool::new(
                    gpu.context().clone(),
                    config.ipc_pool_mib << 20,
                )?),
                Device::Cpu => None,
            };
            all.push(Replica {
                device,
                models,
                pool,
                cache: (config.cache_mib > 0).then(|| EmbeddingCache::new(config.cache_mib << 20)),
                split: Vec::new(),
                busy: AtomicUsize::new(0),
            });
        }
        if config.split_encode {
            let lists = split_lists(&all);
            for (replica, split) in all.iter_mut().zip(lists) {
                replica.split = split;
            }
        }
        Ok(Self(all.into_iter().map(Arc::new).collect()))
    }

    /// Takes the replica running the fewest requests (the first among equals).
    pub fn pick(&self) -> Busy {
        let replica = self
            .0
            .iter()
            .min_by_key(|r| r.busy.load(Ordering::Relaxed))
            .expect("at least one replica");
        replica.busy.fetch_add(1, Ordering::Relaxed);
        Busy(replica.clone())
    }

    /// The first replica: its models and device stand for all in listings.
    pub fn first(&self) -> &Replica {
        &self.0[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Replica> {
        self.0.iter().map(|r| &**r)
    }

    /// The devices, as "cuda:0,cuda:1" or "cpu".
    pub fn names(&self) -> String {
        self.iter()
            .map(|r| r.device.name())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// For every GPU replica and model: the model on every GPU replica, that replica's first.
/// Empty for all with fewer than two GPUs (nothing to split over).
fn split_lists(replicas: &[Replica]) -> Vec<Vec<Arc<Vec<GpuModel>>>> {
    let gpus: Vec<Option<&Arc<reel_codec::gpu::Gpu>>> = replicas
        .iter()
        .map(|r| match &r.device {
            Device::Cuda(gpu) => Some(&gpu.gpu),
            Device::Cpu => None,
        })
        .collect();
    let is_gpu: Vec<bool> = gpus.iter().map(Option::is_some).collect();
    (0..replicas.len())
        .map(|r| {
            let order = split_order(&is_gpu, r);
            if order.is_empty() {
                return Vec::new();
            }
            (0..replicas[r].models.len())
                .map(|m| {
                    Arc::new(
                        order
                            .iter()
                            .filter_map(|&g| {
                                Some(GpuModel {
                                    gpu: gpus[g]?.clone(),
                                    model: replicas[g].models[m].1.clone(),
                                })
                            })
                            .collect(),
                    )
                })
                .collect()
        })
        .collect()
}

/// The replicas a split request on replica `r` encodes on, `r` first: every GPU replica
/// (`is_gpu`), or none when `r` is not a GPU or there are fewer than two.
fn split_order(is_gpu: &[bool], r: usize) -> Vec<usize> {
    let gpus: Vec<usize> = (0..is_gpu.len()).filter(|&g| is_gpu[g]).collect();
    if gpus.len() < 2 || !is_gpu[r] {
        return Vec::new();
    }
    std::iter::once(r)
        .chain(gpus.into_iter().filter(|&g| g != r))
        .collect()
}

fn load_models(
    specs: &[String],
    device: &Device,
    options: &ModelOptions,
) -> anyhow::Result<Vec<(String, Arc<Model>)>> {
    specs
        .iter()
        .map(|spec| {
            let (name, dir) = match spec.split_once('=') {
                Some((n, d)) => (n.to_string(), std::path::PathBuf::from(d)),
                None => {
                    let dir = std::path::PathBuf::from(spec);
                    let name = dir
                        .file_name()
                        .map_or_else(|| spec.clone(), |n| n.to_string_lossy().into_owned());
                    (name, dir)
                }
            };
            let model = Model::load(&dir, options, device).with_context(|| {
                format!(
                    "cannot load model {name} from {} on {}",
                    dir.display(),
                    device.name()
                )
            })?;
            tracing::info!(
                "model {name}: {} loaded on {}",
                dir.display(),
                device.name()
            );
            Ok((name, Arc::new(model)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu_replica() -> Arc<Replica> {
        Arc::new(Replica {
            device: Device::Cpu,
            models: Vec::new(),
            pool: None,
            cache: None,
            split: Vec::new(),
            busy: AtomicUsize::new(0),
        })
    }

    #[test]
    fn split_requests_start_on_their_own_gpu() {
        assert_eq!(split_order(&[true, true, true], 1), [1, 0, 2]);
        assert_eq!(split_order(&[true, true, true], 0), [0, 1, 2]);
        // One GPU, or a CPU replica: nothing to split over.
        assert!(split_order(&[true], 0).is_empty());
        assert!(split_order(&[true, false], 0).is_empty());
        assert!(split_order(&[true, true, false], 2).is_empty());
        assert_eq!(split_order(&[false, true, true], 2), [2, 1]);
    }

    #[test]
    fn requests_go_to_the_least_busy_replica() {
        let replicas = Replicas(vec![cpu_replica(), cpu_replica()]);
        let on = |b: &Busy, i: usize| Arc::ptr_eq(&b.0, &replicas.0[i]);
        let a = replicas.pick();
        let b = replicas.pick();
        let c = replicas.pick();
        assert!(on(&a, 0) && on(&b, 1) && on(&c, 0));
        drop(b);
        let d = replicas.pick();
        assert!(on(&d, 1), "replica 1 had the fewest again");
        drop((a, c, d));
        assert!(replicas.iter().all(|r| r.busy.load(Ordering::Relaxed) == 0));
    }
}
