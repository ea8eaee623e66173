//! Kafka v2 RecordBatch headers: split a produce request's record set into batches and check
//! each one (length, magic, CRC32C) without decoding or decompressing its records. The batch
//! is stored as sent; only its base offset field is rewritten, by the engine, on the way to disk.

use bytes::Bytes;

/// Size of the v2 batch header up to and including the record count.
pub const HEADER_LEN: usize = 61;
/// Bytes before the batch length field's end: base offset (8) and batch length (4).
const LOG_OVERHEAD: usize = 12;
/// The CRC covers everything from the attributes field to the end of the batch.
const CRC_START: usize = 21;

/// The fields of a batch header that the broker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Number of offsets the batch occupies.
    pub fn offset_count(&self) -> u32 {
        self.last_offset_delta as u32 + 1
    }

    /// Sequence number of the batch's last record (sequences wrap at i32::MAX).
    pub fn last_sequence(&self) -> i32 {
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if last > i64::from(i32::MAX) {
            (last - i64::from(i32::MAX) - 1) as i32
        } else {
            last as i32
        }
    }

    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }

    /// Parses the header at the start of `b` (at least `HEADER_LEN` bytes).
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < HEADER_LEN {
            return None;
        }
        let i16_at = |o: usize| i16::from_be_bytes([b[o], b[o + 1]]);
        let i32_at = |o: usize| i32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let i64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            i64::from_be_bytes(a)
        };
        Some(Self {
            base_offset: i64_at(0),
            partition_leader_epoch: i32_at(12),
            magic: b[16] as i8,
            crc: i32_at(17) as u32,
            attributes: i16_at(21),
            last_offset_delta: i32_at(23),
            first_timestamp: i64_at(27),
            max_timestamp: i64_at(35),
            producer_id: i64_at(43),
            producer_epoch: i16_at(51),
            base_sequence: i32_at(53),
            record_count: i32_at(57),
        })
    }
}

/// Why a record set was refused (answered with CORRUPT_MESSAGE or INVALID_RECORD).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record set is empty")]
    Empty,
    #[error(
        "record set truncated at byte {at}: a batch header says {needed} bytes, {available} remain"
    )]
    Truncated {
        at: usize,
        needed: usize,
        available: usize,
    },
    #[error("batch at byte {at} has magic {magic}; only v2 record batches (magic 2) are accepted")]
    Magic { at: usize, magic: i8 },
    #[error("batch at byte {at} fails its CRC32C check (stored {stored:#010x}, computed {computed:#010x})")]
    Crc {
        at: usize,
        stored: u32,
        computed: u32,
    },
    #[error("batch at byte {at} has an invalid header: {reason}")]
    Invalid { at: usize, reason: &'static str },
}

/// One checked batch: its header and its bytes (a slice of the request, not a copy).
#[derive(Debug, Clone)]
pub struct Batch {
    pub header: BatchHeader,
    pub bytes: Bytes,
}

/// Splits a record set into checked v2 batches.
pub fn split(records: &Bytes) -> Result<Vec<Batch>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < records.len() {
        let rest = &records[at..];
        if rest.len() < LOG_OVERHEAD + 5 {
            return Err(BatchError::Truncated {
                at,
                needed: LOG_OVERHEAD + 5,
                available: rest.len(),
            });
        }
        let magic = rest[16] as i8;
        if magic != 2 {
            return Err(BatchError::Magic { at, magic });
        }
        let batch_len = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if batch_len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::Invalid {
                at,
                reason: "batch length shorter than the header",
            });
        }
        let total = LOG_OVERHEAD + batch_len as usize;
        if rest.len() < total {
            return Err(BatchError::Truncated {
                at,
                needed: total,
                available: rest.len(),
            });
        }
        let header = BatchHeader::parse(rest).ok_or(BatchError::Truncated {
            at,
            needed: HEADER_LEN,
            available: rest.len(),
        })?;
        let computed = crc32c::crc32c(&rest[CRC_START..total]);
        if computed != header.crc {
            return Err(BatchError::Crc {
                at,
                stored: header.crc,
                computed,
            });
        }
        if header.last_offset_delta < 0 || header.record_count <= 0 {
            return Err(BatchError::Invalid {
                at,
                reason: "a batch must hold at least one record",
            });
        }
        out.push(Batch {
            header,
            bytes: records.slice(at..at + total),
        });
        at += total;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn encode(n: usize, compression: Compression) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: 7,
                producer_epoch: 1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: 5 + i as i32,
                timestamp: 1000 + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![b'v'; 100])),
                headers: Default::default(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn splits_and_reads_headers() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Snappy,
        ] {
            let one = encode(3, c);
            let two = [one.clone(), encode(2, c)].concat();
            let batches = split(&Bytes::from(two)).unwrap();
            assert_eq!(batches.len(), 2);
            let h = batches[0].header;
            assert_eq!((h.record_count, h.last_offset_delta), (3, 2));
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (7, 1, 5)
            );
            assert_eq!(h.last_sequence(), 7);
            assert_eq!((h.first_timestamp, h.max_timestamp), (1000, 1002));
            assert_eq!(batches[0].bytes, one);
        }
    }

    #[test]
    fn refuses_bad_crc_magic_and_truncation() {
        let good = encode(2, Compression::None);
        let mut bad = good.to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(matches!(
            split(&Bytes::from(bad)),
            Err(BatchError::Crc { .. })
        ));
        let mut old = good.to_vec();
        old[16] = 1;
        assert!(matches!(
            split(&Bytes::from(old)),
            Err(BatchError::Magic { magic: 1, .. })
        ));
        let cut = good.slice(..good.len() - 3);
        assert!(matches!(split(&cut), Err(BatchError::Truncated { .. })));
        assert!(matches!(split(&Bytes::new()), Err(BatchError::Empty)));
        assert!(split(&good.slice(..5)).is_err());
    }

    #[test]
    fn sequences_wrap() {
        let mut h = BatchHeader::parse(&encode(1, Compression::None)).unwrap();
        h.base_sequence = i32::MAX;
        h.last_offset_delta = 2;
        assert_eq!(h.last_sequence(), 1);
    }

    #[test]
    fn accepts_the_clients_batches() {
        // The client's one-pass plain encoder and its compressed batches pass the broker's
        // own check (lengths, magic, CRC32C).
        let records: Vec<spate_client::OutRecord> = (0..4)
            .map(|i| spate_client::OutRecord {
                key: (i % 2 == 0).then(|| Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![b'v'; 50 * i])),
                headers: vec![("h".into(), Some(Bytes::from_static(b"x")))],
                timestamp_ms: 1_700_000_000_000 + i as i64,
            })
            .collect();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let batch = spate_client::encode_batch(&records, c).unwrap();
            let split = split(&batch).unwrap();
            assert_eq!(split.len(), 1, "{c:?}");
            assert_eq!(split[0].header.record_count, 4, "{c:?}");
        }
    }
}
