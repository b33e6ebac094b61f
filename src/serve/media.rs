//! Resolving client-supplied paths: only regular files under a configured media root,
//! with `..`, absolute-path tricks and symlinks that leave the root refused.

use std::path::{Path, PathBuf};

/// Why a path was refused. Deliberately says nothing about what exists on the server.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("the server has no media roots configured; send the video's bytes instead")]
    NoRoots,
    #[error("path {0:?} is not under a media root")]
    OutsideRoots(String),
    #[error("path {0:?} does not name a readable regular file under a media root")]
    NotFound(String),
}

/// The folders clients may read videos from.
#[derive(Clone, Debug, Default)]
pub struct MediaRoots {
    roots: Vec<PathBuf>,
}

impl MediaRoots {
    /// Canonicalizes the roots; a root that does not exist is an error at start-up.
    pub fn new(roots: &[PathBuf]) -> std::io::Result<Self> {
        let roots = roots
            .iter()
            .map(|r| {
                std::fs::canonicalize(r).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("media root {}: {e}", r.display()))
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self { roots })
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Resolves `requested` (absolute, or relative to the first root) to a canonical
    /// path inside a root. Symlinks are followed and the result must stay inside.
    pub fn resolve(&self, requested: &str) -> Result<PathBuf, PathError> {
        if self.roots.is_empty() {
            return Err(PathError::NoRoots);
        }
        let path = Path::new(requested);
        if requested.is_empty() || requested.contains('\0') {
            return Err(PathError::NotFound(requested.to_string()));
        }
        let candidates: Vec<PathBuf> = if path.is_absolute() {
            vec![path.to_path_buf()]
        } else {
            self.roots.iter().map(|r| r.join(path)).collect()
        };
        let mut outside = false;
        for candidate in candidates {
            let Ok(real) = std::fs::canonicalize(&candidate) else {
                continue;
            };
            if !self.roots.iter().any(|r| real.starts_with(r)) {
                outside = true;
                continue;
            }
            if std::fs::metadata(&real).is_ok_and(|m| m.is_file()) {
                return Ok(real);
            }
        }
        Err(if outside {
            PathError::OutsideRoots(requested.to_string())
        } else {
            PathError::NotFound(requested.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_every_way_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("media");
        let secret = dir.path().join("secret.mp4");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/ok.mp4"), b"x").unwrap();
        std::fs::write(&secret, b"s").unwrap();
        std::os::unix::fs::symlink(&secret, root.join("link.mp4")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
        let roots = MediaRoots::new(std::slice::from_ref(&root)).unwrap();

        assert!(roots.resolve("sub/ok.mp4").is_ok());
        assert!(roots
            .resolve(root.join("sub/ok.mp4").to_str().unwrap())
            .is_ok());
        for attack in [
            "../secret.mp4",
            "sub/../../secret.mp4",
            "link.mp4",
            "up/secret.mp4",
        ] {
            assert_eq!(
                roots.resolve(attack),
                Err(PathError::OutsideRoots(attack.into())),
                "{attack}"
            );
        }
        assert!(matches!(
            roots.resolve(secret.to_str().unwrap()),
            Err(PathError::OutsideRoots(_))
        ));
        assert!(matches!(
            roots.resolve("/etc/passwd"),
            Err(PathError::OutsideRoots(_))
        ));
        assert!(matches!(roots.resolve("sub"), Err(PathError::NotFound(_))));
        assert!(matches!(
            roots.resolve("missing.mp4"),
            Err(PathError::NotFound(_))
        ));
        assert!(matches!(roots.resolve("a\0b"), Err(PathError::NotFound(_))));
        assert_eq!(MediaRoots::default().resolve("x"), Err(PathError::NoRoots));
    }
}
