//! The on-disk frame: a fixed-size header followed by an opaque payload.
//!
//! A frame is the unit the log appends, indexes, checks and returns. The header is an
//! rkyv-archived [`FrameHeader`] (little-endian, unaligned, so it can be read in place at any
//! file position); the payload is whatever the caller appended (for Kafka, a v2 RecordBatch),
//! stored verbatim. Two CRC32s protect a frame: one over the header fields, one over the
//! payload. Nothing here does I/O; a frame that fails any check is reported, never returned.

use rkyv::{Archive, Serialize};

/// First four bytes of every frame: "SPF1" read as little-endian u32.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"SPF1");
/// Version of the header layout written by this build.
pub const FRAME_VERSION: u16 = 1;
/// `flags` bit: offsets between the previous frame's end and this frame's base were removed
/// by compaction (a compacted log has gaps; every other frame starts where the last ended).
pub const FLAG_AFTER_GAP: u16 = 1;
/// Size of an encoded header in bytes.
pub const FRAME_HEADER_LEN: usize = std::mem::size_of::<ArchivedFrameHeader>();
/// Largest payload a frame may carry. Bounds every read-side allocation driven by a header.
pub const FRAME_PAYLOAD_MAX_BYTES: u32 = 256 * 1024 * 1024;

/// Header of one frame, as archived on disk.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub magic: u32,
    pub version: u16,
    pub flags: u16,
    /// Offset of the first record in the payload.
    pub base_offset: u64,
    /// Number of records (offsets) the frame covers; at least 1.
    pub record_count: u32,
    pub payload_len: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub leader_epoch: i32,
    /// CRC32 of the payload bytes.
    pub payload_crc: u32,
    /// CRC32 of every header byte before this field.
    pub header_crc: u32,
}

/// What the caller knows about a payload when it appends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    pub base_offset: u64,
    pub record_count: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub leader_epoch: i32,
}

/// Why bytes at a frame position are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("need {needed} bytes, have {available}")]
    Short { needed: usize, available: usize },
    #[error("all-zero header (end of written data)")]
    Zero,
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    #[error("unsupported frame version {0}")]
    BadVersion(u16),
    #[error("header checksum mismatch")]
    HeaderCrc,
    #[error("payload checksum mismatch")]
    PayloadCrc,
    #[error("invalid header field: {0}")]
    Invalid(&'static str),
}

impl FrameHeader {
    /// Builds the header for `payload`, computing both checksums.
    pub fn new(meta: FrameMeta, payload: &[u8]) -> Self {
        Self::new_chunks(meta, &[payload])
    }

    /// Builds the header for a payload given as consecutive slices.
    pub fn new_chunks(meta: FrameMeta, chunks: &[&[u8]]) -> Self {
        Self::with_flags(meta, 0, chunks)
    }

    /// Builds a header with `flags` (see [`FLAG_AFTER_GAP`]) for a payload given as slices.
    pub fn with_flags(meta: FrameMeta, flags: u16, chunks: &[&[u8]]) -> Self {
        let mut crc = crc32fast::Hasher::new();
        for c in chunks {
            crc.update(c);
        }
        let payload_len: usize = chunks.iter().map(|c| c.len()).sum();
        let mut header = FrameHeader {
            magic: FRAME_MAGIC,
            version: FRAME_VERSION,
            flags,
            base_offset: meta.base_offset,
            record_count: meta.record_count,
            payload_len: payload_len as u32,
            first_timestamp_ms: meta.first_timestamp_ms,
            max_timestamp_ms: meta.max_timestamp_ms,
            leader_epoch: meta.leader_epoch,
            payload_crc: crc.finalize(),
            header_crc: 0,
        };
        let encoded = header.encode_raw();
        header.header_crc = crc32fast::hash(&encoded[..FRAME_HEADER_LEN - 4]);
        header
    }

    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + u64::from(self.payload_len)
    }

    /// Whether this frame may come where a frame holding `expected` was due: there, or
    /// past it after a gap that compaction left (see [`FLAG_AFTER_GAP`]).
    pub fn follows(&self, expected: u64) -> bool {
        self.base_offset == expected
            || (self.flags & FLAG_AFTER_GAP != 0 && self.base_offset > expected)
    }

    /// Offset one past the last record of the frame.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    fn encode_raw(&self) -> [u8; FRAME_HEADER_LEN] {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .expect("serializing a fixed-size header cannot fail");
        let mut out = [0u8; FRAME_HEADER_LEN];
        out.copy_from_slice(&bytes[..FRAME_HEADER_LEN]);
        out
    }

    /// The header as written on disk.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        self.encode_raw()
    }

    /// Reads and checks a header (not the payload) from the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
        if bytes.len() < FRAME_HEADER_LEN {
            return Err(FrameError::Short {
                needed: FRAME_HEADER_LEN,
                available: bytes.len(),
            });
        }
        let raw = &bytes[..FRAME_HEADER_LEN];
        if raw.iter().all(|b| *b == 0) {
            return Err(FrameError::Zero);
        }
        let archived = rkyv::access::<ArchivedFrameHeader, rkyv::rancor::Error>(raw)
            .map_err(|_| FrameError::Invalid("layout"))?;
        let magic = archived.magic.to_native();
        if magic != FRAME_MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let version = archived.version.to_native();
        if version != FRAME_VERSION {
            return Err(FrameError::BadVersion(version));
        }
        if crc32fast::hash(&raw[..FRAME_HEADER_LEN - 4]) != archived.header_crc.to_native() {
            return Err(FrameError::HeaderCrc);
        }
        let header = FrameHeader {
            magic,
            version,
            flags: archived.flags.to_native(),
            base_offset: archived.base_offset.to_native(),
            record_count: archived.record_count.to_native(),
            payload_len: archived.payload_len.to_native(),
            first_timestamp_ms: archived.first_timestamp_ms.to_native(),
            max_timestamp_ms: archived.max_timestamp_ms.to_native(),
            leader_epoch: archived.leader_epoch.to_native(),
            payload_crc: archived.payload_crc.to_native(),
            header_crc: archived.header_crc.to_native(),
        };
        if header.record_count == 0 {
            return Err(FrameError::Invalid("record_count is 0"));
        }
        if header.payload_len > FRAME_PAYLOAD_MAX_BYTES {
            return Err(FrameError::Invalid("payload_len over the maximum"));
        }
        if header
            .base_offset
            .checked_add(u64::from(header.record_count))
            .is_none()
        {
            return Err(FrameError::Invalid("offset overflow"));
        }
        Ok(header)
    }

    /// Checks `payload` against the header's length and checksum.
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), FrameError> {
        if payload.len() != self.payload_len as usize {
            return Err(FrameError::Short {
                needed: self.payload_len as usize,
                available: payload.len(),
            });
        }
        if crc32fast::hash(payload) != self.payload_crc {
            return Err(FrameError::PayloadCrc);
        }
        Ok(())
    }
}

/// Decodes a whole frame (header and payload) at the start of `bytes`.
pub fn decode_frame(bytes: &[u8]) -> Result<(FrameHeader, &[u8]), FrameError> {
    let header = FrameHeader::decode(bytes)?;
    let end = FRAME_HEADER_LEN + header.payload_len as usize;
    if bytes.len() < end {
        return Err(FrameError::Short {
            needed: end,
            available: bytes.len(),
        });
    }
    let payload = &bytes[FRAME_HEADER_LEN..end];
    header.check_payload(payload)?;
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(base_offset: u64, record_count: u32, ts: i64) -> FrameMeta {
        FrameMeta {
            base_offset,
            record_count,
            first_timestamp_ms: ts,
            max_timestamp_ms: ts.saturating_add(7),
            leader_epoch: 3,
        }
    }

    #[test]
    fn header_is_fixed_size() {
        assert_eq!(FRAME_HEADER_LEN, 52);
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            base in 0u64..u64::MAX / 2,
            count in 1u32..100_000,
            ts in any::<i64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let header = FrameHeader::new(meta(base, count, ts), &payload);
            let mut bytes = header.encode().to_vec();
            bytes.extend_from_slice(&payload);
            let (decoded, body) = decode_frame(&bytes).unwrap();
            prop_assert_eq!(decoded, header);
            prop_assert_eq!(body, &payload[..]);
            prop_assert_eq!(decoded.frame_len() as usize, bytes.len());
        }

        #[test]
        fn any_single_bit_flip_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 1..512),
            bit in any::<usize>(),
        ) {
            let header = FrameHeader::new(meta(42, 3, 1_700_000_000_000), &payload);
            let mut bytes = header.encode().to_vec();
            bytes.extend_from_slice(&payload);
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_frame(&bytes).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame(&bytes);
        }

        #[test]
        fn truncation_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 1..512),
            cut in any::<usize>(),
        ) {
            let header = FrameHeader::new(meta(0, 1, 0), &payload);
            let mut bytes = header.encode().to_vec();
            bytes.extend_from_slice(&payload);
            let cut = cut % bytes.len();
            bytes.truncate(cut);
            prop_assert!(decode_frame(&bytes).is_err());
        }
    }

    #[test]
    fn zero_header_is_end_of_data() {
        assert_eq!(FrameHeader::decode(&[0u8; 64]), Err(FrameError::Zero));
    }
}
