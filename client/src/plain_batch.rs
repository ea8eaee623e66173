//! Encoding an uncompressed v2 record batch in one pass: each key, value and header copied
//! once into a buffer sized up front, the CRC32C computed over it at the end. The general
//! encoder (kafka_protocol's, used for compressed batches) builds a record structure per
//! record and sizes each one twice; at a million records a second that was a visible part of
//! a producer's CPU.
//!
//! Layout (Kafka's `RecordBatch`, magic 2): base offset, batch length, partition leader
//! epoch, magic, CRC32C (of everything after it), attributes, last offset delta, base and max
//! timestamps, producer id, epoch and base sequence (-1: no idempotence), record count, then
//! each record: length, attributes, timestamp delta, offset delta, key, value, headers, with
//! zigzag varints for lengths and deltas.

use bytes::{BufMut, Bytes, BytesMut};

use crate::OutRecord;

/// Bytes of the batch header before the first record.
const HEADER_LEN: usize = 61;
/// Where the CRC32C goes, and where the bytes it covers start.
const CRC_AT: usize = 17;
const CRC_FROM: usize = 21;

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn varint_len(v: i64) -> usize {
    let mut z = zigzag(v);
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = zigzag(v);
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        Some(b) => varint_len(b.len() as i64) + b.len(),
        None => varint_len(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.put_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

/// A record's body (everything after its length) and the whole record's size.
fn record_body_len(r: &OutRecord, i: usize, base_ts: i64) -> usize {
    1 + varint_len(r.timestamp_ms - base_ts)
        + varint_len(i as i64)
        + bytes_len(r.key.as_deref())
        + bytes_len(r.value.as_deref())
        + varint_len(r.headers.len() as i64)
        + r.headers
            .iter()
            .map(|(k, v)| bytes_len(Some(k.as_bytes())) + bytes_len(v.as_deref()))
            .sum::<usize>()
}

/// Encodes `records` (at least one) as one uncompressed v2 batch with base offset 0.
pub fn encode_plain(records: &[OutRecord]) -> Bytes {
    let base_ts = records.iter().map(|r| r.timestamp_ms).min().unwrap_or(0);
    let max_ts = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(0);
    let bodies: Vec<usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| record_body_len(r, i, base_ts))
        .collect();
    let total = HEADER_LEN
        + bodies
            .iter()
            .map(|b| varint_len(*b as i64) + b)
            .sum::<usize>();
    let mut buf = BytesMut::with_capacity(total);
    buf.put_i64(0); // base offset: the broker assigns it
    buf.put_i32((total - 12) as i32);
    buf.put_i32(-1); // partition leader epoch
    buf.put_i8(2); // magic
    buf.put_u32(0); // CRC32C, below
    buf.put_i16(0); // attributes: no compression, create time, not transactional
    buf.put_i32(records.len().saturating_sub(1) as i32); // last offset delta
    buf.put_i64(base_ts);
    buf.put_i64(max_ts);
    buf.put_i64(-1); // producer id
    buf.put_i16(-1); // producer epoch
    buf.put_i32(-1); // base sequence
    buf.put_i32(records.len() as i32);
    for (i, (r, body)) in records.iter().zip(&bodies).enumerate() {
        put_varint(&mut buf, *body as i64);
        buf.put_i8(0); // record attributes
        put_varint(&mut buf, r.timestamp_ms - base_ts);
        put_varint(&mut buf, i as i64);
        put_bytes(&mut buf, r.key.as_deref());
        put_bytes(&mut buf, r.value.as_deref());
        put_varint(&mut buf, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes(&mut buf, Some(k.as_bytes()));
            put_bytes(&mut buf, v.as_deref());
        }
    }
    debug_assert_eq!(buf.len(), total);
    let crc = crc32c::crc32c(&buf[CRC_FROM..]);
    buf[CRC_AT..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{Compression, RecordBatchDecoder};

    fn rec(key: Option<&str>, value: Option<&[u8]>, ts: i64) -> OutRecord {
        OutRecord {
            key: key.map(|k| Bytes::from(k.to_string())),
            value: value.map(Bytes::copy_from_slice),
            headers: Vec::new(),
            timestamp_ms: ts,
        }
    }

    #[test]
    fn same_bytes_as_the_general_encoder_and_decodes_back() {
        let big = vec![7u8; 300];
        let mut with_headers = rec(Some("k"), Some(b"v"), 1_700_000_000_100);
        with_headers.headers = vec![
            ("h1".into(), Some(Bytes::from_static(b"x"))),
            ("h2".into(), None),
        ];
        let records = vec![
            rec(None, Some(b"first"), 1_700_000_000_000),
            rec(Some("key"), None, 1_700_000_000_050),
            rec(Some(""), Some(&big), 1_699_999_999_990),
            with_headers,
        ];
        let plain = encode_plain(&records);
        let general = crate::encode_general(&records, Compression::None).unwrap();
        assert_eq!(plain, general, "byte for byte what kafka_protocol encodes");

        let mut b = plain.clone();
        let set = RecordBatchDecoder::decode(&mut b).unwrap();
        assert_eq!(set.records.len(), 4);
        for (i, (got, want)) in set.records.iter().zip(&records).enumerate() {
            assert_eq!(got.offset, i as i64);
            assert_eq!(got.timestamp, want.timestamp_ms);
            assert_eq!(got.key, want.key);
            assert_eq!(got.value, want.value);
            assert_eq!(got.headers.len(), want.headers.len());
        }
    }
}
