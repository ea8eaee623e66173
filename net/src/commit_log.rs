//! Committed offsets as records of `__consumer_offsets`, in Kafka's own layout (key v1:
//! group, topic, partition; value v3: offset, leader epoch, metadata, commit time; a null
//! value deletes), so any Kafka tool can read the topic. A group's records go to partition
//! `hash(group) % partitions`, whose owner shard is the group's coordinator. At start each
//! shard replays the partitions it owns.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use spate_engine::{AppendBatch, Durability, EngineError, PartitionLog};

use crate::decompress;
use crate::groups::{Committed, Coordinator};

/// The most bytes one `__consumer_offsets` batch may decompress to on replay. The broker
/// writes these batches itself, uncompressed and far smaller; a batch over this is skipped
/// with a warning, like any other batch that does not decode.
const MAX_OFFSETS_BATCH_BYTES: usize = 64 << 20;

/// The `__consumer_offsets` partition of a group.
pub fn partition_for(group: &str, partitions: u32) -> u32 {
    crc32fast::hash(group.as_bytes()) % partitions.max(1)
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn get_str(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_i16();
    if n < 0 || b.remaining() < n as usize {
        return None;
    }
    String::from_utf8(b.split_to(n as usize).to_vec()).ok()
}

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(1);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn encode_value(c: &Committed) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    b.put_i64(c.offset);
    b.put_i32(c.leader_epoch);
    put_str(&mut b, &c.metadata);
    b.put_i64(c.commit_timestamp);
    b.freeze()
}

pub fn decode_key(mut b: Bytes) -> Option<(String, String, i32)> {
    if b.remaining() < 2 {
        return None;
    }
    let version = b.get_i16();
    if version > 1 {
        return None; // group metadata records: not offsets
    }
    let group = get_str(&mut b)?;
    let topic = get_str(&mut b)?;
    if b.remaining() < 4 {
        return None;
    }
    Some((group, topic, b.get_i32()))
}

pub fn decode_value(mut b: Bytes) -> Option<Committed> {
    if b.remaining() < 10 {
        return None;
    }
    let version = b.get_i16();
    let offset = b.get_i64();
    let leader_epoch = if version >= 3 && b.remaining() >= 4 {
        b.get_i32()
    } else {
        -1
    };
    let metadata = get_str(&mut b)?;
    let commit_timestamp = if b.remaining() >= 8 { b.get_i64() } else { -1 };
    Some(Committed {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Stores commits (a `None` value deletes) as one Kafka record batch. The commit is answered
/// once the batch is written to the log file, not after an fdatasync: as in Kafka (which never
/// waits for a sync), a commit survives a broker crash, and a power loss can take back at most
/// the last `flush_interval_ms` of commits, which consumers then read again. Waiting for the
/// sync made commits slow enough that clients committing inside a rebalance timed out.
///
/// The partition is compacted by its shard's log cleaner like any compacted topic (a
/// deletion's tombstones stay `delete.retention.ms`, a day).
/// `leader_epoch`: the epoch of the partition's leader (0 on a single broker). Returns the
/// offset after the batch, or `None` if there was nothing to store.
pub async fn append(
    log: &PartitionLog,
    group: &str,
    entries: &[(String, i32, Option<Committed>)],
    leader_epoch: i32,
) -> Result<Option<u64>, EngineError> {
    if entries.is_empty() {
        return Ok(None);
    }
    let mut batch =
        encode_batch(entries.iter().map(|(topic, partition, value)| {
            (encode_key(group, topic, *partition), value.as_ref())
        }))?;
    batch.leader_epoch = leader_epoch;
    log.append(vec![batch], Durability::Appended)
        .await
        .map(|r| Some(r.last_offset + 1))
}

/// One Kafka record batch of `(key, value)` records (a `None` value is a tombstone).
pub fn encode_batch<'a>(
    entries: impl Iterator<Item = (Bytes, Option<&'a Committed>)>,
) -> Result<AppendBatch, EngineError> {
    let now = now_ms();
    let records: Vec<Record> = entries
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence must be the same for every record, or the encoder
            // starts a new batch; base sequence -1 (no producer id) then follows.
            sequence: i as i32 - 1,
            timestamp: now,
            key: Some(key),
            value: value.map(encode_value),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| EngineError::InvalidAppend(format!("offset commit batch: {e}")))?;
    Ok(AppendBatch {
        payload: buf.freeze(),
        record_count: records.len() as u32,
        first_timestamp_ms: now,
        max_timestamp_ms: now,
        leader_epoch: 0,
        base_offset_field: Some(0),
    })
}

/// One stored commit: group, topic, partition, and the offset (`None`: deleted).
pub type CommitRecord = (String, String, i32, Option<Committed>);

/// Reads the commits stored in `[from, to)` of a `__consumer_offsets` partition, in log
/// order, into `apply`. Returns how many it read and the offset it stopped at (`to`, or the
/// log end if that came first). Batches that do not decode are skipped with a warning.
pub async fn read_commits(
    log: &PartitionLog,
    from: u64,
    to: u64,
    mut apply: impl FnMut(CommitRecord),
) -> Result<(u64, u64), EngineError> {
    let mut offset = from;
    let mut read = 0;
    while offset < to {
        // Up to the log end: a new leader of the partition replays what it holds, whose high
        // watermark starts low.
        let batches = log
            .read_to(offset, 4 << 20, spate_engine::ReadBound::LogEnd)
            .await?;
        if batches.is_empty() {
            break;
        }
        for b in batches {
            if b.base_offset >= to {
                return Ok((read, offset));
            }
            offset = b.next_offset();
            let mut payload = b.payload.clone();
            let sets = match decompress::decode_all(&mut payload, MAX_OFFSETS_BATCH_BYTES) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(
                        partition = log.name(),
                        offset = b.base_offset,
                        "skipping an undecodable offsets batch: {e}"
                    );
                    continue;
                }
            };
            for r in sets.into_iter().flat_map(|s| s.records) {
                let Some((group, topic, partition)) = r.key.and_then(decode_key) else {
                    continue;
                };
                apply((group, topic, partition, r.value.and_then(decode_value)));
                read += 1;
            }
        }
    }
    Ok((read, offset))
}

/// Replays a `__consumer_offsets` partition into the coordinator. Returns records applied.
pub async fn replay(log: &PartitionLog, coordinator: &Coordinator) -> Result<u64, EngineError> {
    let stats = log.stats();
    let (applied, _) = read_commits(
        log,
        stats.log_start_offset,
        stats.log_end_offset,
        |(group, topic, partition, value)| {
            coordinator.apply_commit(&group, &topic, partition, value)
        },
    )
    .await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_round_trip() {
        let k = encode_key("g", "orders", 3);
        assert_eq!(decode_key(k), Some(("g".into(), "orders".into(), 3)));
        let c = Committed {
            offset: 42,
            leader_epoch: -1,
            metadata: "m".into(),
            commit_timestamp: 7,
        };
        assert_eq!(decode_value(encode_value(&c)), Some(c));
        assert_eq!(decode_key(Bytes::from_static(&[0, 1, 0])), None);
        assert_eq!(decode_value(Bytes::from_static(&[0, 3])), None);
    }
}
