//! Message values: each starts with its send time (µs since the epoch) and the producer's
//! sequence, then filler, so a consumer can measure end-to-end latency from the value alone.
//! A request's values are cut from one buffer.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

pub(super) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Message values for one request, cut from one buffer: `count` values of `size` bytes, each
/// starting with the send time (µs since the epoch) and a sequence number.
pub(super) fn payloads(template: &[u8], count: usize, first_seq: u64, stamp: u64) -> Vec<Bytes> {
    let size = template.len();
    let mut buf = BytesMut::with_capacity(size * count);
    for i in 0..count as u64 {
        let at = buf.len();
        buf.put_slice(template);
        if size >= 16 {
            buf[at..at + 8].copy_from_slice(&stamp.to_be_bytes());
            buf[at + 8..at + 16].copy_from_slice(&(first_seq + i).to_be_bytes());
        }
    }
    // One buffer, one slice per message (a reference count each, no copy).
    let all = buf.freeze();
    (0..count)
        .map(|i| all.slice(i * size..(i + 1) * size))
        .collect()
}
