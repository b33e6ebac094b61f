//! Leases on published results: a result's memory stays valid until the client releases
//! its lease, the lease expires, or the client's connection goes away.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a lease holds on to.
pub enum Held {
    /// A shared-memory segment (a file in the shm folder); unlinked on release if the
    /// client has not already done so.
    Shm(PathBuf),
    /// A slot of a GPU's exported pool; returned to the pool when dropped.
    Device(#[allow(dead_code)] Box<dyn Send>),
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Held::Shm(path) = self {
            // The client normally unlinks first; then this finds nothing.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Identifies the connection a request came in on (`conn` assigns them); a lease taken
/// on a connection is freed when it closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

struct Lease {
    /// Freed (by its Drop) when the lease goes.
    #[allow(dead_code)]
    held: Held,
    expires: Instant,
    connection: Option<ConnId>,
}

/// Outstanding leases, by id.
pub struct Leases {
    ttl: Duration,
    leases: Mutex<HashMap<String, Lease>>,
}

impl Leases {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            leases: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Registers `held` under a new id, tied to `connection` (freed when it closes).
    pub fn add(&self, held: Held, connection: Option<ConnId>) -> String {
        let id = new_id();
        let lease = Lease {
            held,
            expires: Instant::now() + self.ttl,
            connection,
        };
        self.leases
            .lock()
            .expect("lease lock")
            .insert(id.clone(), lease);
        id
    }

    /// Frees a lease now; false if it does not exist (released or expired).
    pub fn release(&self, id: &str) -> bool {
        let lease = self.leases.lock().expect("lease lock").remove(id);
        lease.is_some()
    }

    /// Frees the leases handed out on a connection that closed.
    pub fn release_connection(&self, connection: ConnId) {
        let gone: Vec<Lease> = {
            let mut leases = self.leases.lock().expect("lease lock");
            let ids: Vec<String> = leases
                .iter()
                .filter(|(_, l)| l.connection == Some(connection))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| leases.remove(id)).collect()
        };
        drop(gone);
    }

    /// Frees expired leases; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let expired: Vec<Lease> = {
            let mut leases = self.leases.lock().expect("lease lock");
            let ids: Vec<String> = leases
                .iter()
                .filter(|(_, l)| l.expires <= now)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| leases.remove(id)).collect()
        };
        expired.len()
    }

    pub fn len(&self) -> usize {
        self.leases.lock().expect("lease lock").len()
    }
}

/// A random 128-bit id, hex-encoded.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to a new shared-memory segment named `reel-<id>` in `dir` (normally
/// /dev/shm, where POSIX shm_open keeps its segments), readable only by this user.
pub fn write_shm(
    dir: &std::path::Path,
    id: &str,
    bytes: &[u8],
) -> std::io::Result<(String, PathBuf)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = format!("reel-{id}");
    let path = dir.join(&name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    if let Err(e) = file.write_all(bytes) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok((name, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_and_expiry_free_segments() {
        let dir = tempfile::tempdir().unwrap();
        let leases = Leases::new(Duration::from_millis(50));
        let (_, a) = write_shm(dir.path(), "a", b"hello").unwrap();
        let (_, b) = write_shm(dir.path(), "b", b"world").unwrap();
        let ida = leases.add(Held::Shm(a.clone()), None);
        let _idb = leases.add(Held::Shm(b.clone()), None);
        assert!(leases.release(&ida));
        assert!(!a.exists(), "released segment still exists");
        assert!(!leases.release(&ida), "a lease is released once");
        assert!(b.exists());
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(leases.sweep(), 1);
        assert!(!b.exists(), "expired segment still exists");
        assert_eq!(leases.len(), 0);
    }

    #[test]
    fn segments_are_private_and_never_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = write_shm(dir.path(), "x", b"1").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            write_shm(dir.path(), "x", b"2").is_err(),
            "an existing segment was overwritten"
        );
    }
}
