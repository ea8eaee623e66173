//! Decoding fetched records: a fetched record set (whole batches and perhaps a partial one at
//! the end) into [`Consumed`] records, each batch decompressed within a bound, and the offset
//! after its last whole batch read from the batch headers alone. Pure functions of the bytes:
//! no connection, no state; a broker's answer (or a corrupt one) can make them fail, never
//! panic or allocate past the bound.

use bytes::{Buf, Bytes};

use crate::decompress;
use crate::ClientError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// The most bytes one fetched record batch may decompress to: a broker (or a corrupt batch)
/// cannot make the client allocate more for one batch.
pub const MAX_DECOMPRESSED_BATCH: usize = 256 << 20;

/// Decodes a fetched record set, ignoring a partial batch at its end and records before `from`.
pub fn decode_records(
    partition: i32,
    records: &Bytes,
    from: i64,
) -> Result<Vec<Consumed>, ClientError> {
    let mut out = Vec::new();
    let mut rest = records.clone();
    while rest.len() >= 12 {
        let len = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if len < 0 || rest.len() < 12 + len as usize {
            break; // partial batch: the next fetch starts there
        }
        let mut batch = rest.split_to(12 + len as usize);
        let set = decompress::decode_batch(&mut batch, MAX_DECOMPRESSED_BATCH).map_err(|e| {
            ClientError::Protocol(format!(
                "decoding a record batch of partition {partition}: {e}"
            ))
        })?;
        for r in set.records {
            if r.control || r.offset < from {
                continue;
            }
            out.push(Consumed {
                partition,
                offset: r.offset,
                timestamp_ms: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_string(), v))
                    .collect(),
            });
        }
    }
    let _ = rest.remaining();
    Ok(out)
}

/// The offset after the last whole batch of a fetched record set, read from the batch
/// headers alone (base offset and last offset delta); `None` if it holds no whole batch.
pub fn next_offset_after(records: &[u8]) -> Option<i64> {
    let mut rest = records;
    let mut next = None;
    while rest.len() >= 27 {
        let base = i64::from_be_bytes(rest[..8].try_into().ok()?);
        let len = i32::from_be_bytes(rest[8..12].try_into().ok()?);
        if len < 15 || rest.len() < 12 + len as usize {
            break; // partial batch: the next fetch starts there
        }
        let delta = i32::from_be_bytes(rest[23..27].try_into().ok()?);
        next = Some(base.checked_add(i64::from(delta) + 1)?);
        rest = &rest[12 + len as usize..];
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record batch header (v2) with `base` and `last_delta`, and `body` bytes after it.
    fn batch(base: i64, last_delta: i32, body: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&base.to_be_bytes());
        b.extend_from_slice(&((49 + body) as i32).to_be_bytes());
        b.extend_from_slice(&[0; 4]); // partition leader epoch
        b.push(2); // magic
        b.extend_from_slice(&[0; 4]); // crc
        b.extend_from_slice(&[0; 2]); // attributes
        b.extend_from_slice(&last_delta.to_be_bytes());
        b.resize(12 + 49 + body, 0);
        b
    }

    #[test]
    fn next_offset_comes_from_the_last_whole_batch() {
        assert_eq!(next_offset_after(&[]), None);
        let mut set = batch(100, 9, 30);
        assert_eq!(next_offset_after(&set), Some(110));
        set.extend(batch(110, 0, 5));
        assert_eq!(next_offset_after(&set), Some(111));
        // A batch cut by the fetch's byte limit is not counted.
        let whole = set.len();
        set.extend(batch(111, 4, 100));
        set.truncate(whole + 40);
        assert_eq!(next_offset_after(&set), Some(111));
        assert_eq!(next_offset_after(&set[whole..]), None);
    }
}
