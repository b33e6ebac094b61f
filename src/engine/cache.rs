//! The embedding cache: a repeated video skips decoding and encoding.
//!
//! Keyed by a BLAKE3 hash of the model id, the stream's parameters, the sampling plan and
//! the compressed bytes of every packet the plan decodes: a renamed copy or a re-upload of
//! the same video hits, a re-encoded or edited one misses. Bounded by bytes (the
//! embeddings' own size, in GPU memory for a GPU model); the least recently used entries
//! go first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use reel_codec::{SamplePlan, Video};

/// A cache key: a BLAKE3 hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

impl Key {
    /// Hashes what determines a video's embeddings.
    pub fn new(model_id: &str, video: &Video, plan: &SamplePlan) -> reel_codec::Result<Key> {
        let mut h = blake3::Hasher::new();
        for part in [
            model_id.to_string(),
            format!("{:?}", video.info()),
            format!("{:?}", video.config()),
            format!("{plan:?}"),
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        let mut packet = Vec::new();
        for range in &plan.decode {
            for p in range.packets.clone() {
                video.read_packet(p, &mut packet)?;
                h.update(&(packet.len() as u64).to_le_bytes());
                h.update(&packet);
            }
        }
        Ok(Key(*h.finalize().as_bytes()))
    }
}

/// Something the cache can hold.
pub trait Footprint {
    /// Bytes it occupies.
    fn bytes(&self) -> u64;
}

/// An LRU map from [`Key`] to shared values, bounded by their total [`Footprint::bytes`].
pub struct Cache<V> {
    budget: u64,
    inner: Mutex<Entries<V>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Entries<V> {
    map: HashMap<Key, (Arc<V>, u64)>,
    clock: u64,
    bytes: u64,
}

impl<V: Footprint> Cache<V> {
    /// A cache of at most `budget` bytes (0 keeps nothing).
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            inner: Mutex::new(Entries {
                map: HashMap::new(),
                clock: 0,
                bytes: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<V>> {
        self.inner.lock().expect("no panics while holding the lock")
    }

    /// The value under `key`, now the most recently used; counts a hit or a miss.
    pub fn get(&self, key: &Key) -> Option<Arc<V>> {
        let mut e = self.lock();
        e.clock += 1;
        let clock = e.clock;
        let found = e.map.get_mut(key).map(|(v, used)| {
            *used = clock;
            v.clone()
        });
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores `value`, evicting the least recently used entries to stay within budget.
    /// A value larger than the whole budget is not kept.
    pub fn insert(&self, key: Key, value: Arc<V>) {
        let size = value.bytes();
        if size > self.budget {
            return;
        }
        let mut e = self.lock();
        e.clock += 1;
        let clock = e.clock;
        if let Some((old, _)) = e.map.insert(key, (value, clock)) {
            e.bytes -= old.bytes();
        }
        e.bytes += size;
        while e.bytes > self.budget {
            let Some(oldest) = e
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some((v, _)) = e.map.remove(&oldest) {
                e.bytes -= v.bytes();
            }
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Lookups that found their key.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that did not.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Footprint for Vec<u8> {
        fn bytes(&self) -> u64 {
            self.len() as u64
        }
    }

    fn key(n: u8) -> Key {
        Key([n; 32])
    }

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let cache = Cache::new(100);
        cache.insert(key(1), Arc::new(vec![0u8; 40]));
        cache.insert(key(2), Arc::new(vec![0u8; 40]));
        assert!(cache.get(&key(1)).is_some()); // 1 is now newer than 2
        cache.insert(key(3), Arc::new(vec![0u8; 40]));
        assert!(
            cache.get(&key(2)).is_none(),
            "the least recently used goes first"
        );
        assert!(cache.get(&key(1)).is_some());
        assert!(cache.get(&key(3)).is_some());
        assert_eq!((cache.len(), cache.bytes()), (2, 80));
        assert_eq!((cache.hits(), cache.misses()), (3, 1));
    }

    #[test]
    fn never_holds_more_than_the_budget() {
        let cache = Cache::new(100);
        cache.insert(key(1), Arc::new(vec![0u8; 101]));
        assert_eq!(cache.len(), 0, "a value over the budget is not kept");
        for i in 0..50u8 {
            cache.insert(key(i), Arc::new(vec![0u8; 7 + usize::from(i % 13)]));
            assert!(cache.bytes() <= 100);
        }
        cache.insert(key(200), Arc::new(vec![0u8; 100]));
        assert_eq!((cache.len(), cache.bytes()), (1, 100));
    }

    #[test]
    fn replacing_a_key_counts_its_bytes_once() {
        let cache = Cache::new(100);
        cache.insert(key(1), Arc::new(vec![0u8; 60]));
        cache.insert(key(1), Arc::new(vec![0u8; 30]));
        assert_eq!((cache.len(), cache.bytes()), (1, 30));
    }

    #[test]
    fn keys_follow_the_bitstream_and_the_plan() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/video");
        let open = |name: &str| Video::open(dir.join(name)).unwrap();
        let plan = |v: &Video, fps: f64| {
            let options = reel_codec::SamplingOptions {
                fps,
                ..Default::default()
            };
            SamplePlan::new(v.info(), v.index(), &options).unwrap()
        };
        let a = open("h264_main_bframes.mp4");
        let b = open("hevc_main.mp4");
        let k = |v: &Video, fps: f64, model: &str| Key::new(model, v, &plan(v, fps)).unwrap();
        assert_eq!(k(&a, 2.0, "m"), k(&a, 2.0, "m"));
        let bytes = std::fs::read(dir.join("h264_main_bframes.mp4")).unwrap();
        let copy = Video::from_bytes(bytes, None).unwrap();
        assert_eq!(
            k(&a, 2.0, "m"),
            k(&copy, 2.0, "m"),
            "same bytes, other source"
        );
        assert_ne!(k(&a, 2.0, "m"), k(&b, 2.0, "m"), "other video");
        assert_ne!(k(&a, 2.0, "m"), k(&a, 1.0, "m"), "other sampling");
        assert_ne!(k(&a, 2.0, "m"), k(&a, 2.0, "other model"), "other model");
    }
}
