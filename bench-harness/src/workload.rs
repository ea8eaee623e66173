//! OpenMessaging Benchmark workloads: the YAML format OMB uses, so its workload files run
//! unchanged, plus `key=value` overrides from the command line.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One OMB workload. Field names are OMB's; every field OMB defines is accepted, and any
/// other is an error naming it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workload {
    #[serde(default = "default_name")]
    pub name: String,
    pub topics: u32,
    pub partitions_per_topic: u32,
    /// NO_KEY, KEY_ROUND_ROBIN or RANDOM_NANO.
    #[serde(default = "default_key_distributor")]
    pub key_distributor: String,
    pub message_size: usize,
    /// OMB reads the payload from this file; spate-bench generates payloads of
    /// `message_size` bytes (the first 8 carry the send time) and ignores it.
    #[serde(default)]
    pub payload_file: Option<String>,
    #[serde(default)]
    pub use_randomized_payloads: bool,
    #[serde(default)]
    pub random_bytes_ratio: f64,
    #[serde(default)]
    pub randomized_payload_pool_size: usize,
    pub subscriptions_per_topic: u32,
    pub consumer_per_subscription: u32,
    pub producers_per_topic: u32,
    /// Messages per second over all producers; OMB's 0 is not accepted (say `max_rate`).
    pub producer_rate: f64,
    #[serde(default, rename = "consumerBacklogSizeGB")]
    pub consumer_backlog_size_gb: f64,
    pub test_duration_minutes: f64,
    #[serde(default)]
    pub warmup_duration_minutes: f64,
}

fn default_name() -> String {
    "workload".into()
}

fn default_key_distributor() -> String {
    "NO_KEY".into()
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot read workload {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("workload {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Workload {
    pub fn load(path: &Path) -> Result<Self, WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| WorkloadError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies `field=value` overrides (OMB field names), checking each against the format.
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<(), WorkloadError> {
        if overrides.is_empty() {
            return Ok(());
        }
        let mut value = serde_yaml::to_value(&*self)
            .map_err(|e| WorkloadError::Invalid(format!("workload: {e}")))?;
        for o in overrides {
            let (k, v) = o.split_once('=').ok_or_else(|| {
                WorkloadError::Invalid(format!(
                    "--set {o:?}: expected field=value, e.g. producerRate=10000"
                ))
            })?;
            let parsed: serde_yaml::Value = serde_yaml::from_str(v)
                .map_err(|e| WorkloadError::Invalid(format!("--set {o:?}: {e}")))?;
            let map = value
                .as_mapping_mut()
                .ok_or_else(|| WorkloadError::Invalid("workload is not a mapping".into()))?;
            map.insert(serde_yaml::Value::String(k.to_string()), parsed);
        }
        *self = serde_yaml::from_value(value)
            .map_err(|e| WorkloadError::Invalid(format!("after --set: {e}")))?;
        Ok(())
    }

    /// Checks what the format cannot: counts, sizes, rates and durations that can run.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let bad = |m: String| Err(WorkloadError::Invalid(m));
        if self.topics == 0 || self.partitions_per_topic == 0 {
            return bad("topics and partitionsPerTopic must be at least 1".into());
        }
        if self.producers_per_topic == 0 {
            return bad("producersPerTopic must be at least 1".into());
        }
        if self.message_size < 16 {
            return bad(format!(
                "messageSize {} is too small: the payload carries a 16-byte send stamp",
                self.message_size
            ));
        }
        if self.producer_rate.is_nan()
            || self.producer_rate <= 0.0
            || !self.producer_rate.is_finite()
        {
            return bad(format!(
                "producerRate {} must be a positive number of messages per second (use --max-rate for as fast as possible)",
                self.producer_rate
            ));
        }
        if self.test_duration_minutes.is_nan() || self.test_duration_minutes <= 0.0 {
            return bad("testDurationMinutes must be positive".into());
        }
        if self.warmup_duration_minutes.is_nan() || self.warmup_duration_minutes < 0.0 {
            return bad("warmupDurationMinutes must be zero or more".into());
        }
        if self.consumer_backlog_size_gb.is_nan() || self.consumer_backlog_size_gb < 0.0 {
            return bad("consumerBacklogSizeGB must be zero or more".into());
        }
        if !["NO_KEY", "KEY_ROUND_ROBIN", "RANDOM_NANO"].contains(&self.key_distributor.as_str()) {
            return bad(format!(
                "keyDistributor {:?}: one of NO_KEY, KEY_ROUND_ROBIN, RANDOM_NANO",
                self.key_distributor
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OMB: &str = r#"
name: 1 topic / 16 partitions / 1Kb
topics: 1
partitionsPerTopic: 16
keyDistributor: "NO_KEY"
messageSize: 1024
payloadFile: "payload/payload-1Kb.data"
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 50000
consumerBacklogSizeGB: 0
testDurationMinutes: 15
"#;

    #[test]
    fn reads_omb_files_and_overrides() {
        let mut w = Workload::parse(OMB).unwrap();
        assert_eq!(w.partitions_per_topic, 16);
        w.validate().unwrap();
        w.apply_overrides(&["producerRate=1000".into(), "testDurationMinutes=0.1".into()])
            .unwrap();
        assert_eq!(w.producer_rate, 1000.0);
        assert!(w.apply_overrides(&["noSuchField=1".into()]).is_err());
        assert!(w.apply_overrides(&["producerRate".into()]).is_err());
    }

    #[test]
    fn refuses_unknown_fields_and_bad_values() {
        let err = Workload::parse(&format!("{OMB}\nproducerRat: 3\n")).unwrap_err();
        assert!(err.contains("producerRat"), "{err}");
        let mut w = Workload::parse(OMB).unwrap();
        w.producer_rate = 0.0;
        assert!(w
            .validate()
            .unwrap_err()
            .to_string()
            .contains("producerRate"));
        let mut w = Workload::parse(OMB).unwrap();
        w.key_distributor = "SOMETIMES".into();
        assert!(w.validate().is_err());
    }
}
