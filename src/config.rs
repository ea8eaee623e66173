//! The broker's configuration: one TOML file, every key optional with a documented default
//! (docs/OPERATIONS.md), and command-line flags that override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use spate_engine::LogConfig;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Where topics, metadata and the lock file live.
    pub data_dir: PathBuf,
    /// Address every shard listens on (SO_REUSEPORT).
    pub listen: SocketAddr,
    /// Number of shards (one per core); 0: every core this process may run on.
    pub shards: usize,
    /// Size of each shard's batch cache for tail reads.
    pub batch_cache_bytes: u64,
    pub log: LogConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./spate-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            shards: 0,
            batch_cache_bytes: 256 * 1024 * 1024,
            log: LogConfig::default(),
        }
    }
}

impl BrokerConfig {
    /// Reads a TOML file; unknown keys are errors that name the key.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    pub fn validate(&self) -> Result<(), String> {
        self.log.validate()?;
        if self.batch_cache_bytes < 1024 * 1024 {
            return Err("batch_cache_bytes must be at least 1048576".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: BrokerConfig = toml::from_str("").unwrap();
        assert_eq!(c, BrokerConfig::default());
        let c: BrokerConfig =
            toml::from_str("shards = 2\n[log]\nsegment_bytes = 1048576\n").unwrap();
        assert_eq!(c.shards, 2);
        assert_eq!(c.log.segment_bytes, 1 << 20);
        let err = toml::from_str::<BrokerConfig>("shardz = 2")
            .unwrap_err()
            .to_string();
        assert!(err.contains("shardz"), "{err}");
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../docs/OPERATIONS.md");
        let start = doc
            .find("```toml")
            .expect("OPERATIONS.md has a toml example")
            + 7;
        let end = start + doc[start..].find("```").unwrap();
        let c: BrokerConfig = toml::from_str(&doc[start..end]).expect("documented example parses");
        assert_eq!(
            c,
            BrokerConfig::default(),
            "the documented example lists the defaults"
        );
    }
}
