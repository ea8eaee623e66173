//! The host as files: every `/proc` and `/sys` path is read under a root (`/` for real, a
//! fake tree in tests), and a file that is missing or unreadable is a reason, not a panic.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Host {
    pub fn real() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }

    pub fn at(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn is_real(&self) -> bool {
        self.root == Path::new("/")
    }

    /// `abs` (an absolute host path) under the root.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// The trimmed contents of `abs`, or why it could not be read.
    pub fn read(&self, abs: &str) -> Result<String, String> {
        let p = self.path(abs);
        std::fs::read_to_string(&p)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("cannot read {abs}: {e}"))
    }

    /// Names in directory `abs`, sorted; empty if it does not exist.
    pub fn list(&self, abs: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path(abs))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn exists(&self, abs: &str) -> bool {
        self.path(abs).exists()
    }
}
