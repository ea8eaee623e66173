//! The APIs Spate implements and the versions of each: what ApiVersions advertises, and what
//! the dispatcher accepts. Nothing else is answered.

use kafka_protocol::messages::ApiKey;

/// (api, min version, max version), as advertised.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// The supported version range of an API key, if Spate implements it.
pub fn supported(api_key: i16) -> Option<(ApiKey, i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k as i16 == api_key)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/COMPATIBILITY.md has a row for every API key the codec knows, starting with its
    /// served range here and Kafka's (the codec is generated from Kafka 4.1.0's message specs).
    #[test]
    fn the_compatibility_table_says_what_is_served() {
        let doc = include_str!("../../docs/COMPATIBILITY.md");
        let mut missing = Vec::new();
        for key in 0..=200i16 {
            let Ok(api) = ApiKey::try_from(key) else {
                continue;
            };
            let known = api.valid_versions();
            let served = supported(key).map_or("-".to_string(), |(_, a, b)| format!("{a}-{b}"));
            let row = format!(
                "| {key} | {api:?} | {served} | {}-{} |",
                known.min, known.max
            );
            if !doc.contains(&row) {
                missing.push(row);
            }
        }
        assert!(
            missing.is_empty(),
            "docs/COMPATIBILITY.md lacks these rows (or their start differs):\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn every_range_is_within_what_the_codec_knows() {
        for (key, min, max) in SUPPORTED {
            let known = key.valid_versions();
            assert!(
                *min >= known.min && *max <= known.max && min <= max,
                "{key:?} {min}..={max} vs {known:?}"
            );
        }
    }
}
