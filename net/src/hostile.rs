//! Hostile requests, for the tests and as fuzzing seeds: for every API and version Spate
//! serves, the default request's body with a count or a length rewritten to claim far more
//! than the bytes that follow (the 19-byte Metadata request that used to abort the broker is
//! one of them). Nothing on the serving path uses this module.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Encodable;

use crate::versions::SUPPORTED;

/// The default request of `api`, or `None` for an API Spate does not serve.
pub fn default_request(api: ApiKey) -> Option<RequestKind> {
    Some(match api {
        ApiKey::Produce => RequestKind::Produce(Default::default()),
        ApiKey::Fetch => RequestKind::Fetch(Default::default()),
        ApiKey::ListOffsets => RequestKind::ListOffsets(Default::default()),
        ApiKey::Metadata => RequestKind::Metadata(Default::default()),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(Default::default()),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(Default::default()),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(Default::default()),
        ApiKey::JoinGroup => RequestKind::JoinGroup(Default::default()),
        ApiKey::Heartbeat => RequestKind::Heartbeat(Default::default()),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(Default::default()),
        ApiKey::SyncGroup => RequestKind::SyncGroup(Default::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(Default::default()),
        ApiKey::ListGroups => RequestKind::ListGroups(Default::default()),
        ApiKey::ApiVersions => RequestKind::ApiVersions(Default::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(Default::default()),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(Default::default()),
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(Default::default()),
        ApiKey::InitProducerId => RequestKind::InitProducerId(Default::default()),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(Default::default()),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(Default::default()),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(Default::default()),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(Default::default()),
        ApiKey::ElectLeaders => RequestKind::ElectLeaders(Default::default()),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(Default::default()),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(Default::default()),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(Default::default()),
        ApiKey::DescribeLogDirs => RequestKind::DescribeLogDirs(Default::default()),
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(Default::default()),
        ApiKey::AlterPartitionReassignments => {
            RequestKind::AlterPartitionReassignments(Default::default())
        }
        ApiKey::ListPartitionReassignments => {
            RequestKind::ListPartitionReassignments(Default::default())
        }
        ApiKey::DescribeProducers => RequestKind::DescribeProducers(Default::default()),
        ApiKey::DescribeTopicPartitions => RequestKind::DescribeTopicPartitions(Default::default()),
        ApiKey::ConsumerGroupHeartbeat => RequestKind::ConsumerGroupHeartbeat(Default::default()),
        ApiKey::ConsumerGroupDescribe => RequestKind::ConsumerGroupDescribe(Default::default()),
        _ => return None,
    })
}

/// Every (API, version) Spate serves.
pub fn served() -> impl Iterator<Item = (ApiKey, i16)> {
    SUPPORTED
        .iter()
        .flat_map(|&(api, min, max)| (min..=max).map(move |v| (api, v)))
}

/// The default request of `api` encoded at `version` (its body, without header).
pub fn default_body(api: ApiKey, version: i16) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    default_request(api)?.encode(&mut buf, version).ok()?;
    Some(buf.freeze())
}

/// An i32 count claiming 2 147 483 647 elements (a plain array) or bytes (a plain string or
/// bytes field: their i16/i32 lengths read the first bytes of it).
const HUGE_I32: [u8; 4] = [0x7f, 0xff, 0xff, 0xff];
/// An unsigned varint claiming 4 294 967 294 elements (a compact array's length + 1).
const HUGE_VARINT: [u8; 5] = [0xff, 0xff, 0xff, 0xff, 0x0f];

/// `body` with a huge count at every position: the i32 overwriting four bytes, and the varint
/// in place of one byte (a compact array's or string's length is one byte when small).
pub fn overclaims(body: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    for at in 0..body.len() {
        let mut v = body.to_vec();
        let end = (at + 4).min(v.len());
        v.splice(at..end, HUGE_I32);
        out.push(Bytes::from(v));
        let mut v = body.to_vec();
        v.splice(at..at + 1, HUGE_VARINT);
        out.push(Bytes::from(v));
    }
    // And past the end: a count where the body stops.
    let mut v = body.to_vec();
    v.extend_from_slice(&HUGE_I32);
    out.push(Bytes::from(v));
    out
}

/// The crafted request of `api`: at the highest version that has one, a body whose array
/// count claims more elements than there are bytes left (what aborted the broker before the
/// decoder was patched); for an API without arrays, one whose length claims more bytes than
/// are left. Returns the version and the body.
pub fn crafted(api: ApiKey) -> Option<(i16, Bytes)> {
    let (_, min, max) = SUPPORTED.iter().copied().find(|(k, _, _)| *k == api)?;
    let mut fallback = None;
    for version in (min..=max).rev() {
        let body = default_body(api, version)?;
        for bad in overclaims(&body) {
            let err = match RequestKind::decode(api, &mut bad.clone(), version) {
                Ok(_) => continue,
                Err(e) => format!("{e:#}"),
            };
            if err.contains("elements in") {
                return Some((version, bad));
            }
            if fallback.is_none() {
                fallback = Some((version, bad));
            }
        }
    }
    fallback
}

/// A whole request frame: size prefix, header (at the version `api` and `version` call for,
/// client id "hostile") and `body`.
pub fn frame(api: ApiKey, version: i16, correlation_id: i32, body: &[u8]) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_static_str(
            "hostile",
        )));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    // A request header of plain fields always encodes.
    let _ = header.encode(&mut buf, api.request_header_version(version));
    buf.extend_from_slice(body);
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_api_has_a_default_body_that_decodes() {
        for (api, v) in served() {
            let body = default_body(api, v).unwrap_or_else(|| panic!("{api:?} v{v}"));
            RequestKind::decode(api, &mut body.clone(), v)
                .unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
        }
    }

    #[test]
    fn every_served_api_has_a_crafted_request_that_does_not_decode() {
        let mut without_arrays = Vec::new();
        for &(api, _, _) in SUPPORTED {
            let (v, body) = crafted(api).unwrap_or_else(|| panic!("{api:?}"));
            let err = RequestKind::decode(api, &mut body.clone(), v).unwrap_err();
            if !format!("{err:#}").contains("elements in") {
                without_arrays.push(api);
            }
        }
        // Only the APIs whose requests hold no array fall back to an over-long length.
        assert_eq!(
            without_arrays,
            [
                ApiKey::Heartbeat,
                ApiKey::ApiVersions,
                ApiKey::InitProducerId,
                ApiKey::DescribeCluster
            ]
        );
    }

    #[test]
    fn the_metadata_v1_crafted_request_is_the_19_bytes_of_the_report() {
        // 0000000f 0003 0001 00000002 0001 78 7fffffff: Metadata v1, correlation id 2, client
        // id "x", a topic count of 2 147 483 647.
        let header = RequestHeader::default()
            .with_request_api_key(3)
            .with_request_api_version(1)
            .with_correlation_id(2)
            .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_static_str(
                "x",
            )));
        let mut buf = BytesMut::new();
        buf.put_i32(15);
        header.encode(&mut buf, 1).unwrap();
        buf.extend_from_slice(&HUGE_I32);
        assert_eq!(
            &buf[..],
            &[0, 0, 0, 0x0f, 0, 3, 0, 1, 0, 0, 0, 2, 0, 1, 0x78, 0x7f, 0xff, 0xff, 0xff]
        );
        assert!(overclaims(&default_body(ApiKey::Metadata, 1).unwrap())
            .iter()
            .any(|b| b[..] == HUGE_I32));
    }
}
