//! A topic's configs applied to the batches produced to it, where the request arrived and
//! before they go to the partition's owner: `max.message.bytes` (MESSAGE_TOO_LARGE),
//! `message.timestamp.before.max.ms` / `after.max.ms` (INVALID_TIMESTAMP for a CreateTime
//! batch outside the window), `compression.type` (a codec other than `producer`: batches in
//! another codec are decompressed and re-encoded in it), and `message.timestamp.type=
//! LogAppendTime` (the broker's time written into the batch header, as Kafka's
//! `setMaxTimestamp` does: the timestamp-type bit, the max timestamp, and the CRC32C), and
//! `cleanup.policy=compact` (a record without a key is INVALID_RECORD).
//!
//! A batch that needs none of this stays the slice of the request it arrived as (zero-copy);
//! only a recompressed or stamped batch is copied.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};

use crate::batch::{Batch, BatchHeader};
use crate::topic_configs::{TopicCompression, TopicSettings};

/// Kafka's INVALID_TIMESTAMP.
pub const INVALID_TIMESTAMP: i16 = 32;
/// Kafka's MESSAGE_TOO_LARGE (RecordBatchTooLargeException).
pub const MESSAGE_TOO_LARGE: i16 = 10;
/// Kafka's CORRUPT_MESSAGE.
const CORRUPT_MESSAGE: i16 = 2;
/// Kafka's INVALID_RECORD.
const INVALID_RECORD: i16 = 87;

/// The attributes bit of LogAppendTime.
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
/// The attributes bit of a control batch.
const CONTROL_BIT: i16 = 1 << 5;
/// Kafka's "no timestamp".
const NO_TIMESTAMP: i64 = -1;

/// Where the header fields rewritten here are.
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;

/// Batches as they go to the log, and the append time the Produce response gives (-1 unless
/// the topic uses LogAppendTime).
#[derive(Debug)]
pub struct Applied {
    pub batches: Vec<Batch>,
    pub log_append_time_ms: i64,
}

/// Why a partition's batches were refused: a Kafka error code and a message naming the
/// config.
pub type Refused = (i16, String);

/// The codec of a batch (attributes bits 0-2).
pub fn codec_of(header: &BatchHeader) -> Option<Compression> {
    Some(match header.attributes & 0x7 {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => return None,
    })
}

/// Applies `settings` to one partition's checked batches at `now_ms`. Records decompress
/// within `decompress_limit` bytes per batch. All batches pass or the partition is refused.
pub fn apply(
    settings: &TopicSettings,
    batches: Vec<Batch>,
    now_ms: i64,
    decompress_limit: usize,
) -> Result<Applied, Refused> {
    let max = settings.max_message_bytes as usize;
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        if batch.bytes.len() > max {
            return Err((
                MESSAGE_TOO_LARGE,
                format!(
                    "a record batch of {} bytes is larger than the topic's max.message.bytes = {max}",
                    batch.bytes.len()
                ),
            ));
        }
        if !settings.log_append_time {
            check_timestamps(settings, &batch.header, now_ms)?;
        }
        if settings.compact && batch.header.attributes & CONTROL_BIT == 0 {
            check_keys(&batch, decompress_limit)?;
        }
        let batch = match settings.compression {
            TopicCompression::Codec(target)
                if batch.header.attributes & CONTROL_BIT == 0
                    && codec_of(&batch.header) != Some(target) =>
            {
                let again = recompress(&batch, target, decompress_limit)?;
                if again.bytes.len() > max {
                    return Err((
                        MESSAGE_TOO_LARGE,
                        format!(
                            "a record batch is {} bytes after recompression to the topic's compression.type, larger than its max.message.bytes = {max}",
                            again.bytes.len()
                        ),
                    ));
                }
                again
            }
            _ => batch,
        };
        out.push(if settings.log_append_time {
            stamp_append_time(&batch, now_ms)
        } else {
            batch
        });
    }
    Ok(Applied {
        batches: out,
        log_append_time_ms: if settings.log_append_time { now_ms } else { -1 },
    })
}

/// A CreateTime batch whose first or max timestamp lies outside [now - before, now + after]
/// is refused, as Kafka refuses a record outside it (Kafka checks every record; the header's
/// two timestamps are what can be checked without decoding them).
fn check_timestamps(s: &TopicSettings, h: &BatchHeader, now_ms: i64) -> Result<(), Refused> {
    let earliest = now_ms.saturating_sub(s.timestamp_before_max_ms);
    let latest = now_ms.saturating_add(s.timestamp_after_max_ms);
    for ts in [h.first_timestamp, h.max_timestamp] {
        if ts == NO_TIMESTAMP {
            continue;
        }
        if ts < earliest {
            return Err((
                INVALID_TIMESTAMP,
                format!(
                    "timestamp {ts} is more than message.timestamp.before.max.ms = {} before the broker's time {now_ms}",
                    s.timestamp_before_max_ms
                ),
            ));
        }
        if ts > latest {
            return Err((
                INVALID_TIMESTAMP,
                format!(
                    "timestamp {ts} is more than message.timestamp.after.max.ms = {} after the broker's time {now_ms}",
                    s.timestamp_after_max_ms
                ),
            ));
        }
    }
    Ok(())
}

/// A compacted topic keeps each key's last record, so a record without a key has no place in
/// it: refused with INVALID_RECORD, as Kafka refuses it (the batch's records are decoded,
/// decompressed if they must be, which only a compacted topic pays for).
fn check_keys(batch: &Batch, limit: usize) -> Result<(), Refused> {
    let mut input = batch.bytes.clone();
    let set = crate::decompress::decode_batch(&mut input, limit).map_err(|e| {
        (
            CORRUPT_MESSAGE,
            format!("the batch's records do not decode to check their keys: {e}"),
        )
    })?;
    match set.records.iter().position(|r| r.key.is_none()) {
        None => Ok(()),
        Some(i) => Err((
            INVALID_RECORD,
            format!(
                "record {i} of the batch has no key: a compacted topic (cleanup.policy=compact) cannot take a record without a key"
            ),
        )),
    }
}

/// The batch's records re-encoded as one batch in `target` (producer id, epoch, sequences,
/// timestamps, headers and the leader epoch kept).
fn recompress(batch: &Batch, target: Compression, limit: usize) -> Result<Batch, Refused> {
    let corrupt = |e: &dyn std::fmt::Display| {
        (
            CORRUPT_MESSAGE,
            format!("the batch's records do not decode for recompression: {e}"),
        )
    };
    let mut input = batch.bytes.clone();
    let set = crate::decompress::decode_batch(&mut input, limit).map_err(|e| corrupt(&e))?;
    if set.records.is_empty() {
        return Ok(batch.clone());
    }
    let mut buf = BytesMut::with_capacity(batch.bytes.len() + 64);
    RecordBatchEncoder::encode(
        &mut buf,
        set.records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: target,
        },
    )
    .map_err(|e| corrupt(&e))?;
    let bytes = buf.freeze();
    let header = BatchHeader::parse(&bytes).ok_or_else(|| corrupt(&"no header"))?;
    if header.offset_count() != batch.header.offset_count() {
        // The encoder split the records (they were not one producer's contiguous run).
        return Err(corrupt(&"the records do not make one batch"));
    }
    Ok(Batch { header, bytes })
}

/// The batch with the broker's time as its max timestamp and the LogAppendTime bit set, its
/// CRC32C recomputed (Kafka's `DefaultRecordBatch.setMaxTimestamp`).
fn stamp_append_time(batch: &Batch, now_ms: i64) -> Batch {
    let mut b = BytesMut::with_capacity(batch.bytes.len());
    b.put_slice(&batch.bytes);
    let attributes = batch.header.attributes | TIMESTAMP_TYPE_BIT;
    b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    b[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    let mut header = batch.header;
    header.attributes = attributes;
    header.max_timestamp = now_ms;
    header.crc = crc;
    Batch {
        header,
        bytes: Bytes::from(b),
    }
}

/// Whether a stored batch's records carry the append time (LogAppendTime).
pub fn is_log_append_time(header: &BatchHeader) -> bool {
    header.attributes & TIMESTAMP_TYPE_BIT != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TopicConfigs;
    use crate::topic_configs::BrokerDefaults;

    fn settings(pairs: &[(&str, &str)]) -> TopicSettings {
        let c = TopicConfigs::from_pairs(pairs.iter().map(|(k, v)| (*k, v.to_string())));
        TopicSettings::new(&c, &BrokerDefaults::default())
    }

    fn batch(compression: Compression, timestamp_ms: i64, values: usize) -> Batch {
        let records: Vec<spate_client::OutRecord> = (0..values)
            .map(|i| spate_client::OutRecord {
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![b'x'; 100])),
                headers: vec![("h".into(), Some(Bytes::from_static(b"v")))],
                timestamp_ms: timestamp_ms + i as i64,
            })
            .collect();
        let bytes = spate_client::encode_batch(&records, compression).unwrap();
        crate::batch::split(&bytes).unwrap().remove(0)
    }

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn a_compacted_topic_refuses_a_record_without_a_key_in_any_codec() {
        let compact = settings(&[("cleanup.policy", "compact,delete")]);
        for codec in [Compression::None, Compression::Zstd] {
            let keyed = batch(codec, NOW, 3);
            let ptr = keyed.bytes.as_ptr();
            let out = apply(&compact, vec![keyed], NOW, 1 << 20).unwrap();
            assert_eq!(
                out.batches[0].bytes.as_ptr(),
                ptr,
                "a keyed batch is not copied"
            );
            let records: Vec<spate_client::OutRecord> = (0..3)
                .map(|i| spate_client::OutRecord {
                    key: (i != 1).then(|| Bytes::from_static(b"k")),
                    value: Some(Bytes::from_static(b"v")),
                    headers: vec![],
                    timestamp_ms: NOW,
                })
                .collect();
            let bytes = spate_client::encode_batch(&records, codec).unwrap();
            let keyless = crate::batch::split(&bytes).unwrap().remove(0);
            let (code, message) = apply(&compact, vec![keyless.clone()], NOW, 1 << 20).unwrap_err();
            assert_eq!(code, INVALID_RECORD);
            assert!(
                message.contains("record 1") && message.contains("compact"),
                "{message}"
            );
            // A topic that is not compacted takes it.
            assert!(apply(&settings(&[]), vec![keyless], NOW, 1 << 20).is_ok());
        }
    }

    #[test]
    fn untouched_batches_stay_the_request_slice() {
        let b = batch(Compression::Lz4, NOW, 3);
        let ptr = b.bytes.as_ptr();
        let out = apply(&settings(&[]), vec![b], NOW, 1 << 20).unwrap();
        assert_eq!(out.batches[0].bytes.as_ptr(), ptr);
        assert_eq!(out.log_append_time_ms, -1);
        let out = apply(
            &settings(&[("compression.type", "lz4")]),
            vec![batch(Compression::Lz4, NOW, 3)],
            NOW,
            1 << 20,
        )
        .unwrap();
        assert_eq!(codec_of(&out.batches[0].header), Some(Compression::Lz4));
    }

    #[test]
    fn recompressed_and_stamped_batches_pass_the_broker_checks_and_keep_their_records() {
        for (target, codec) in [
            ("gzip", Compression::Gzip),
            ("zstd", Compression::Zstd),
            ("snappy", Compression::Snappy),
            ("uncompressed", Compression::None),
        ] {
            let s = settings(&[
                ("compression.type", target),
                ("message.timestamp.type", "LogAppendTime"),
            ]);
            let out = apply(
                &s,
                vec![batch(Compression::Lz4, NOW - 5000, 4)],
                NOW,
                1 << 20,
            )
            .unwrap();
            let b = &out.batches[0];
            assert_eq!(codec_of(&b.header), Some(codec), "{target}");
            assert!(is_log_append_time(&b.header));
            assert_eq!(b.header.max_timestamp, NOW);
            assert_eq!(out.log_append_time_ms, NOW);
            // CRC32C and layout hold: the broker's own split accepts it.
            let again = crate::batch::split(&b.bytes).unwrap();
            assert_eq!(again.len(), 1);
            let mut input = b.bytes.clone();
            let set = crate::decompress::decode_batch(&mut input, 1 << 20).unwrap();
            assert_eq!(set.records.len(), 4);
            assert_eq!(set.records[3].key.as_deref(), Some(&b"k3"[..]));
        }
    }

    #[test]
    fn size_and_timestamp_limits() {
        let s = settings(&[("max.message.bytes", "200")]);
        let (code, msg) =
            apply(&s, vec![batch(Compression::None, NOW, 3)], NOW, 1 << 20).unwrap_err();
        assert_eq!(code, MESSAGE_TOO_LARGE);
        assert!(msg.contains("max.message.bytes = 200"), "{msg}");
        let s = settings(&[("message.timestamp.before.max.ms", "60000")]);
        assert_eq!(
            apply(
                &s,
                vec![batch(Compression::None, NOW - 120_000, 1)],
                NOW,
                1 << 20
            )
            .unwrap_err()
            .0,
            INVALID_TIMESTAMP
        );
        assert!(apply(
            &s,
            vec![batch(Compression::None, NOW - 30_000, 1)],
            NOW,
            1 << 20
        )
        .is_ok());
        // Kafka 4's default: at most an hour ahead.
        let s = settings(&[]);
        assert_eq!(
            apply(
                &s,
                vec![batch(Compression::None, NOW + 7_200_000, 1)],
                NOW,
                1 << 20
            )
            .unwrap_err()
            .0,
            INVALID_TIMESTAMP
        );
        // LogAppendTime topics ignore the window.
        let s = settings(&[("message.timestamp.type", "LogAppendTime")]);
        assert!(apply(
            &s,
            vec![batch(Compression::None, NOW + 7_200_000, 1)],
            NOW,
            1 << 20
        )
        .is_ok());
    }
}
