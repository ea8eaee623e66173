//! Request dispatch: the prefix picks the API and version; anything Spate does not implement
//! is refused (UNSUPPORTED_VERSION for ApiVersions, a logged close otherwise). Each API has
//! its handler in a module of its own area.

mod admin;
mod consumer_groups;
mod describe;
pub use describe::CLEANER_DIR;
mod elect_leaders;
mod fetch;
mod groups;
mod leader_epochs;
pub(crate) mod leader_hints;
mod list_offsets;
mod meta;
mod produce;
mod reassign;

use std::rc::Rc;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::codec::{self, decode_body, encode_response, CodecError, RequestPrefix, ResponseChunks};
use crate::shard::Shard;
use crate::versions;

/// What the connection does after a request.
pub enum Outcome {
    Respond(ResponseChunks),
    /// acks=0 produce: no response at all.
    Silent,
    /// Close the connection, logging why.
    Close(String),
}

impl From<Result<ResponseChunks, CodecError>> for Outcome {
    fn from(r: Result<ResponseChunks, CodecError>) -> Self {
        match r {
            Ok(c) => Outcome::Respond(c),
            Err(e) => Outcome::Close(e.to_string()),
        }
    }
}

pub(crate) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(sb(s))
}

/// Fired (or dropped) once a request no longer needs to hold back the next one on its
/// connection: for a Produce, when its batches are queued in their partitions' logs (so they
/// have their offsets, in request order); for anything else, when it is done.
pub type Queued = futures_channel::oneshot::Sender<()>;

/// Handles one request frame (without its size prefix).
pub async fn dispatch(shard: &Rc<Shard>, frame: bytes::Bytes, peer: &str) -> Outcome {
    let (queued, _) = futures_channel::oneshot::channel();
    dispatch_ordered(shard, frame, peer, queued).await
}

/// [`dispatch`], saying through `queued` when the connection may start the next request.
pub async fn dispatch_ordered(
    shard: &Rc<Shard>,
    mut frame: bytes::Bytes,
    peer: &str,
    queued: Queued,
) -> Outcome {
    let Some(prefix) = RequestPrefix::parse(&frame) else {
        return Outcome::Close(format!(
            "request of {} bytes is shorter than a request header",
            frame.len()
        ));
    };
    if prefix.api_key == ApiKey::ApiVersions as i16 {
        return meta::api_versions(prefix, frame).into();
    }
    let Some((api_key, min, max)) = versions::supported(prefix.api_key) else {
        return Outcome::Close(format!(
            "unsupported API key {} (correlation id {}): not offered by ApiVersions",
            prefix.api_key, prefix.correlation_id
        ));
    };
    if prefix.api_version < min || prefix.api_version > max {
        return Outcome::Close(format!(
            "{api_key:?} v{} is not supported (this broker serves v{min} to v{max}; ApiVersions says so)",
            prefix.api_version
        ));
    }
    let ctx = match codec::decode_header(api_key, prefix.api_version, &mut frame) {
        Ok(c) => c,
        Err(e) => return Outcome::Close(e.to_string()),
    };
    let v = ctx.version;
    macro_rules! simple {
        ($ty:ty, $handler:expr) => {{
            let req: $ty = match decode_body(&mut frame, v) {
                Ok(r) => r,
                Err(e) => return Outcome::Close(format!("{:?} v{v}: {e}", ctx.api_key)),
            };
            let resp = $handler(shard, &ctx, req).await;
            encode_response(&ctx, &resp).into()
        }};
    }
    match api_key {
        ApiKey::Produce => {
            let req: ProduceRequest = match decode_body(&mut frame, v) {
                Ok(r) => r,
                Err(e) => return Outcome::Close(format!("Produce v{v}: {e}")),
            };
            drop(frame);
            produce::produce(shard, &ctx, req, queued).await
        }
        ApiKey::Fetch => {
            let req: FetchRequest = match decode_body(&mut frame, v) {
                Ok(r) => r,
                Err(e) => return Outcome::Close(format!("Fetch v{v}: {e}")),
            };
            Outcome::Respond(fetch::fetch(shard, &ctx, req).await)
        }
        ApiKey::ListOffsets => simple!(ListOffsetsRequest, list_offsets::list_offsets),
        ApiKey::AlterPartitionReassignments => simple!(
            AlterPartitionReassignmentsRequest,
            reassign::alter_partition_reassignments
        ),
        ApiKey::ListPartitionReassignments => simple!(
            ListPartitionReassignmentsRequest,
            reassign::list_partition_reassignments
        ),
        ApiKey::ElectLeaders => simple!(ElectLeadersRequest, elect_leaders::elect_leaders),
        ApiKey::OffsetForLeaderEpoch => simple!(
            OffsetForLeaderEpochRequest,
            leader_epochs::offset_for_leader_epoch
        ),
        ApiKey::Metadata => simple!(MetadataRequest, meta::metadata),
        ApiKey::DescribeCluster => simple!(DescribeClusterRequest, meta::describe_cluster),
        ApiKey::FindCoordinator => simple!(FindCoordinatorRequest, meta::find_coordinator),
        ApiKey::InitProducerId => simple!(InitProducerIdRequest, produce::init_producer_id),
        ApiKey::OffsetCommit => simple!(OffsetCommitRequest, groups::offset_commit),
        ApiKey::OffsetFetch => simple!(OffsetFetchRequest, groups::offset_fetch),
        ApiKey::JoinGroup => {
            let req: JoinGroupRequest = match decode_body(&mut frame, v) {
                Ok(r) => r,
                Err(e) => return Outcome::Close(format!("JoinGroup v{v}: {e}")),
            };
            let resp = groups::join_group(shard, &ctx, req, peer).await;
            encode_response(&ctx, &resp).into()
        }
        ApiKey::SyncGroup => simple!(SyncGroupRequest, groups::sync_group),
        ApiKey::ConsumerGroupHeartbeat => {
            let req: ConsumerGroupHeartbeatRequest = match decode_body(&mut frame, v) {
                Ok(r) => r,
                Err(e) => return Outcome::Close(format!("ConsumerGroupHeartbeat v{v}: {e}")),
            };
            let resp = consumer_groups::consumer_group_heartbeat(shard, &ctx, req, peer).await;
            encode_response(&ctx, &resp).into()
        }
        ApiKey::ConsumerGroupDescribe => simple!(
            ConsumerGroupDescribeRequest,
            consumer_groups::consumer_group_describe
        ),
        ApiKey::Heartbeat => simple!(HeartbeatRequest, groups::heartbeat),
        ApiKey::LeaveGroup => simple!(LeaveGroupRequest, groups::leave_group),
        ApiKey::ListGroups => simple!(ListGroupsRequest, groups::list_groups),
        ApiKey::DescribeGroups => simple!(DescribeGroupsRequest, groups::describe_groups),
        ApiKey::DeleteGroups => simple!(DeleteGroupsRequest, groups::delete_groups),
        ApiKey::OffsetDelete => simple!(OffsetDeleteRequest, groups::offset_delete),
        ApiKey::DescribeTopicPartitions => {
            simple!(
                DescribeTopicPartitionsRequest,
                describe::describe_topic_partitions
            )
        }
        ApiKey::DescribeLogDirs => simple!(DescribeLogDirsRequest, describe::describe_log_dirs),
        ApiKey::DescribeProducers => {
            simple!(DescribeProducersRequest, describe::describe_producers)
        }
        ApiKey::CreateTopics => simple!(CreateTopicsRequest, admin::create_topics),
        ApiKey::DeleteTopics => simple!(DeleteTopicsRequest, admin::delete_topics),
        ApiKey::CreatePartitions => simple!(CreatePartitionsRequest, admin::create_partitions),
        ApiKey::DescribeConfigs => simple!(DescribeConfigsRequest, admin::describe_configs),
        ApiKey::AlterConfigs => simple!(AlterConfigsRequest, admin::alter_configs),
        ApiKey::IncrementalAlterConfigs => {
            simple!(
                IncrementalAlterConfigsRequest,
                admin::incremental_alter_configs
            )
        }
        ApiKey::DeleteRecords => simple!(DeleteRecordsRequest, admin::delete_records),
        other => Outcome::Close(format!(
            "{other:?} is listed as supported but has no handler"
        )),
    }
}

/// Kafka error codes used across handlers.
pub mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const REPLICA_NOT_AVAILABLE: i16 = 9;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REQUEST: i16 = 42;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_CONFIG: i16 = 40;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
    pub const INVALID_RECORD: i16 = 87;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
}

/// The Kafka error for an engine error.
pub(crate) fn engine_code(e: &spate_engine::EngineError) -> i16 {
    use spate_engine::EngineError as E;
    match e {
        E::OffsetOutOfRange { .. } => code::OFFSET_OUT_OF_RANGE,
        E::UnknownPartition(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
        E::TopicExists(_) => code::TOPIC_ALREADY_EXISTS,
        E::InvalidTopic(_) => code::INVALID_TOPIC_EXCEPTION,
        E::InvalidAppend(_) => code::MESSAGE_TOO_LARGE,
        E::NotContiguous { .. } => code::OFFSET_OUT_OF_RANGE,
        E::StaleEpoch { .. } => code::FENCED_LEADER_EPOCH,
        E::DiskFull { .. } | E::PartitionFailed { .. } | E::Corrupt { .. } | E::Tier(_) => {
            code::KAFKA_STORAGE_ERROR
        }
        _ => code::UNKNOWN_SERVER_ERROR,
    }
}

pub(crate) use crate::codec::RequestContext as Ctx;
