//! The engine's compaction hook for Kafka: the keys of a v2 record batch's records, and the
//! batch rewritten without some of them, as Kafka's cleaner rewrites it.
//!
//! A kept batch keeps its base offset, its last offset delta (so the producer's last
//! sequence, and the offsets the batch stands for, do not change), its producer id, epoch and
//! base sequence, its timestamps, partition leader epoch and codec; its records are the kept
//! ones, byte for byte (their offset and timestamp deltas are relative to the unchanged base),
//! recompressed with the batch's codec if it had one; its length, record count and CRC32C
//! are recomputed. A control batch stays whole (transaction markers are not compaction's);
//! a batch left without records goes (Kafka keeps an empty one for a producer's last batch;
//! here the producers' state is rebuilt from the log's tail, which is the active segment,
//! never cleaned).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::records::Compression;
use spate_engine::compaction::{KeyedRecord, RecordKeys, Retained};

use crate::batch::{BatchHeader, HEADER_LEN};

/// Largest decompressed records section the cleaner decodes (a batch that decompressed
/// within the produce limit when it was stored is far below this).
const DECOMPRESS_LIMIT: usize = 256 * 1024 * 1024;

const CONTROL_BIT: i16 = 1 << 5;
const CODEC_MASK: i16 = 0x07;
const BATCH_LENGTH_AT: usize = 8;
const CRC_AT: usize = 17;
const CRC_FROM: usize = 21;
const RECORD_COUNT_AT: usize = 57;

/// Kafka v2 record batches, for the engine's cleaner.
pub struct KafkaRecordKeys;

/// One record of a batch: where its bytes are (length prefix included) and what it holds.
struct Located<'a> {
    range: std::ops::Range<usize>,
    record: KeyedRecord<'a>,
}

impl RecordKeys for KafkaRecordKeys {
    fn records(
        &self,
        base_offset: u64,
        payload: &[u8],
        each: &mut dyn FnMut(KeyedRecord<'_>),
    ) -> Result<(), String> {
        let (header, codec) = parse_header(payload)?;
        if header.attributes & CONTROL_BIT != 0 {
            return Ok(());
        }
        let records = Section::of(payload, codec)?;
        walk(&records, base_offset, &header, &mut |l| each(l.record))
    }

    fn retain(
        &self,
        base_offset: u64,
        payload: &Bytes,
        keep: &mut dyn FnMut(KeyedRecord<'_>) -> bool,
    ) -> Result<Retained, String> {
        let (header, codec) = parse_header(payload)?;
        if header.attributes & CONTROL_BIT != 0 {
            return Ok(Retained::Marker);
        }
        let records = Section::of(payload, codec)?;
        let mut kept = Vec::new();
        let mut kept_bytes = 0usize;
        let mut total = 0usize;
        walk(&records, base_offset, &header, &mut |l| {
            total += 1;
            if keep(l.record) {
                kept_bytes += l.range.len();
                kept.push(l.range);
            }
        })?;
        if kept.len() == total {
            return Ok(Retained::All);
        }
        if kept.is_empty() {
            return Ok(Retained::Nothing);
        }
        let mut out = BytesMut::with_capacity(HEADER_LEN + kept_bytes);
        out.put_slice(&payload[..HEADER_LEN]);
        if codec == Compression::None {
            // The kept records straight into the new batch: one copy of what stays.
            for r in &kept {
                out.put_slice(&records[r.clone()]);
            }
        } else {
            let mut body = BytesMut::with_capacity(kept_bytes);
            for r in &kept {
                body.put_slice(&records[r.clone()]);
            }
            compress(codec, &body, &mut out)?;
        }
        let batch_length = i32::try_from(out.len() - 12).map_err(|_| "batch too large")?;
        out[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
        out[RECORD_COUNT_AT..RECORD_COUNT_AT + 4]
            .copy_from_slice(&(kept.len() as i32).to_be_bytes());
        let crc = crc32c::crc32c(&out[CRC_FROM..]);
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(Retained::Some {
            payload: out.freeze(),
            first_timestamp_ms: header.first_timestamp,
            max_timestamp_ms: header.max_timestamp,
        })
    }
}

fn parse_header(payload: &[u8]) -> Result<(BatchHeader, Compression), String> {
    let header = BatchHeader::parse(payload).ok_or("shorter than a batch header")?;
    if header.magic != 2 {
        return Err(format!(
            "magic {} (only v2 batches are stored)",
            header.magic
        ));
    }
    let codec = match header.attributes & CODEC_MASK {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        c => return Err(format!("unknown codec {c}")),
    };
    Ok((header, codec))
}

/// A batch's records section: in place when the batch is not compressed (the cleaner's
/// hot path reads every dirty batch twice, and a copy of each was most of its memmove),
/// else decompressed.
enum Section<'a> {
    Raw(&'a [u8]),
    Decompressed(Bytes),
}

impl<'a> Section<'a> {
    /// `payload` must be longer than a batch header (`parse_header` said so).
    fn of(payload: &'a [u8], codec: Compression) -> Result<Self, String> {
        let raw = payload
            .get(HEADER_LEN..)
            .ok_or("shorter than a batch header")?;
        match codec {
            Compression::None => Ok(Section::Raw(raw)),
            c => spate_client::decompress::decompress(c, raw, DECOMPRESS_LIMIT)
                .map(Section::Decompressed)
                .map_err(|e| e.to_string()),
        }
    }
}

impl std::ops::Deref for Section<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Section::Raw(b) => b,
            Section::Decompressed(b) => b,
        }
    }
}

fn compress(codec: Compression, body: &[u8], out: &mut BytesMut) -> Result<(), String> {
    let fill = |tmp: &mut BytesMut| {
        tmp.put_slice(body);
        Ok(())
    };
    let r = match codec {
        Compression::None => {
            out.put_slice(body);
            Ok(())
        }
        Compression::Gzip => Gzip::compress(out, fill),
        Compression::Snappy => Snappy::compress(out, fill),
        Compression::Lz4 => Lz4::compress(out, fill),
        Compression::Zstd => Zstd::compress(out, fill),
    };
    r.map_err(|e| format!("recompression failed: {e}"))
}

/// Calls `each` for every record of a records section, in order; errors on any record that
/// does not decode, or a count that does not match the header's.
fn walk<'a>(
    records: &'a [u8],
    base_offset: u64,
    header: &BatchHeader,
    each: &mut dyn FnMut(Located<'a>),
) -> Result<(), String> {
    let mut at = 0usize;
    let mut count = 0i64;
    while at < records.len() {
        let start = at;
        let len = varint(records, &mut at)?;
        let len = usize::try_from(len).map_err(|_| "negative record length")?;
        let end = at
            .checked_add(len)
            .filter(|e| *e <= records.len())
            .ok_or("record past the batch end")?;
        let mut p = at;
        let body = &records[..end];
        p += 1; // attributes
        let ts_delta = varint(body, &mut p)?;
        let offset_delta = varint(body, &mut p)?;
        let key_len = varint(body, &mut p)?;
        let key = if key_len < 0 {
            None
        } else {
            let k = p..p + key_len as usize;
            if k.end > end {
                return Err("key past the record end".into());
            }
            p = k.end;
            Some(&records[k])
        };
        let value_len = varint(body, &mut p)?;
        if value_len > 0 && p + value_len as usize > end {
            return Err("value past the record end".into());
        }
        if offset_delta < 0 || offset_delta > i64::from(header.last_offset_delta) {
            return Err(format!("offset delta {offset_delta} outside the batch"));
        }
        each(Located {
            range: start..end,
            record: KeyedRecord {
                offset: base_offset + offset_delta as u64,
                key,
                tombstone: value_len < 0,
                timestamp_ms: header.first_timestamp.saturating_add(ts_delta),
            },
        });
        count += 1;
        at = end;
    }
    if count != i64::from(header.record_count) {
        return Err(format!(
            "{count} records where the header says {}",
            header.record_count
        ));
    }
    Ok(())
}

/// A zigzag varint (Kafka's varint and varlong) at `*at`, advancing it.
fn varint(b: &[u8], at: &mut usize) -> Result<i64, String> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*at).ok_or("varint past the end")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err("varint too long".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_client::OutRecord;

    fn batch(codec: Compression, records: &[(&str, Option<&str>)]) -> Bytes {
        let out: Vec<OutRecord> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v))| OutRecord {
                key: Some(Bytes::from(k.to_string())),
                value: v.map(|v| Bytes::from(v.to_string())),
                headers: vec![("h".into(), Some(Bytes::from_static(b"x")))],
                timestamp_ms: 1_000 + i as i64,
            })
            .collect();
        spate_client::encode_batch(&out, codec).unwrap()
    }

    #[test]
    fn a_rewritten_batch_keeps_its_offsets_and_header_and_decodes_in_every_codec() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch(
                codec,
                &[
                    ("a", Some("1")),
                    ("b", Some("2")),
                    ("a", None),
                    ("c", Some("3")),
                ],
            );
            let mut seen = Vec::new();
            KafkaRecordKeys
                .records(100, &b, &mut |r| {
                    seen.push((r.offset, r.key.map(<[u8]>::to_vec), r.tombstone))
                })
                .unwrap();
            assert_eq!(seen.len(), 4);
            assert_eq!(seen[2], (102, Some(b"a".to_vec()), true));
            // Keep offsets 101 and 102 only.
            let out = KafkaRecordKeys
                .retain(100, &b, &mut |r| r.offset == 101 || r.offset == 102)
                .unwrap();
            let Retained::Some { payload, .. } = out else {
                panic!("{codec:?}: {out:?}")
            };
            let before = BatchHeader::parse(&b).unwrap();
            let after = BatchHeader::parse(&payload).unwrap();
            assert_eq!(
                after.last_offset_delta, before.last_offset_delta,
                "span kept"
            );
            assert_eq!(after.record_count, 2);
            assert_eq!(after.first_timestamp, before.first_timestamp);
            assert_eq!(after.producer_id, before.producer_id);
            assert_eq!(after.attributes, before.attributes, "codec kept");
            // A Kafka decoder reads it (CRC, length, records), offsets as they were.
            let mut buf = payload.clone();
            let set = spate_client::decompress::decode_batch(&mut buf, 1 << 20).unwrap();
            let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
            assert_eq!(
                offsets,
                vec![1, 2],
                "{codec:?}: relative to base 0 as encoded"
            );
            assert!(set.records[1].value.is_none());
            assert_eq!(
                KafkaRecordKeys.retain(100, &b, &mut |_| true).unwrap(),
                Retained::All
            );
            assert_eq!(
                KafkaRecordKeys.retain(100, &b, &mut |_| false).unwrap(),
                Retained::Nothing
            );
        }
    }

    #[test]
    fn damaged_batches_are_errors_not_panics() {
        let b = batch(Compression::None, &[("a", Some("1")), ("b", Some("2"))]);
        for cut in [0, 10, HEADER_LEN, HEADER_LEN + 3, b.len() - 1] {
            let short = b.slice(..cut);
            assert!(
                KafkaRecordKeys.records(0, &short, &mut |_| {}).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad = BytesMut::from(&b[..]);
        bad[HEADER_LEN + 1] = 0xff;
        let _ = KafkaRecordKeys.records(0, &bad, &mut |_| {});
    }
}
