//! A partition's manifest: the segments it has in the cold tier, and where its log starts.
//! Each change writes a new version under a new key (`manifest.{version:020}`); the highest
//! version whose checksum holds is the manifest, older ones are removed after it is written.
//! A segment's objects are put before the version naming them, so whatever the manifest
//! names is in the tier.
//!
//! Encoding (little-endian): magic `SPTM`, format u16 (1), version u64, log start u64,
//! count u32, then per segment base offset u64, next offset u64, size u64, first and max
//! timestamp i64, leader epoch i32, CRC32 of the log object u32 (48 bytes); last, the CRC32
//! of everything before it.

use std::collections::BTreeMap;

const MAGIC: &[u8; 4] = b"SPTM";
const FORMAT: u16 = 1;
const HEAD: usize = 4 + 2 + 8 + 8 + 4;
const ENTRY: usize = 48;

/// One segment in the cold tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteSegment {
    pub base_offset: u64,
    /// The offset after its last record.
    pub next_offset: u64,
    pub size_bytes: u64,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    /// The leader epoch of its first batch.
    pub leader_epoch: i32,
    /// CRC32 (IEEE) of the log object's bytes.
    pub checksum: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub version: u64,
    /// The first offset served (DeleteRecords and retention move it); segments wholly below
    /// it are not listed.
    pub log_start: u64,
    pub segments: BTreeMap<u64, RemoteSegment>,
}

/// The key of a manifest version under a partition's prefix.
pub fn manifest_key(prefix: &str, version: u64) -> String {
    format!("{prefix}/manifest.{version:020}")
}

/// The version a manifest key names (`.../manifest.00000000000000000007` -> 7).
pub fn manifest_version(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?;
    let digits = name.strip_prefix("manifest.")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The keys of a remote segment's objects: log, offset index, time index.
pub fn segment_keys(prefix: &str, base: u64) -> [String; 3] {
    [
        format!("{prefix}/{base:020}.log"),
        format!("{prefix}/{base:020}.index"),
        format!("{prefix}/{base:020}.timeindex"),
    ]
}

/// The base offset a segment object's key names, if it is one.
pub fn segment_of_key(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?;
    let stem = name
        .strip_suffix(".log")
        .or_else(|| name.strip_suffix(".index"))
        .or_else(|| name.strip_suffix(".timeindex"))?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

impl Manifest {
    /// The offset after the last remote segment (the log start if there is none).
    pub fn next_offset(&self) -> u64 {
        self.segments
            .values()
            .next_back()
            .map_or(self.log_start, |s| s.next_offset)
    }

    /// The first offset in the tier, if it holds any segment.
    pub fn first_offset(&self) -> Option<u64> {
        self.segments
            .values()
            .next()
            .map(|s| s.base_offset.max(self.log_start))
    }

    /// The remote segment holding `offset`.
    pub fn segment_for(&self, offset: u64) -> Option<&RemoteSegment> {
        self.segments
            .range(..=offset)
            .next_back()
            .map(|(_, s)| s)
            .filter(|s| offset < s.next_offset)
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size_bytes).sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD + self.segments.len() * ENTRY + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.log_start.to_le_bytes());
        out.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        for s in self.segments.values() {
            out.extend_from_slice(&s.base_offset.to_le_bytes());
            out.extend_from_slice(&s.next_offset.to_le_bytes());
            out.extend_from_slice(&s.size_bytes.to_le_bytes());
            out.extend_from_slice(&s.first_timestamp_ms.to_le_bytes());
            out.extend_from_slice(&s.max_timestamp_ms.to_le_bytes());
            out.extend_from_slice(&s.leader_epoch.to_le_bytes());
            out.extend_from_slice(&s.checksum.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a manifest, checking its magic, format, length, checksum and that its
    /// segments follow one another.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        if bytes.len() < HEAD + 4 {
            return Err(format!("{} bytes: too short for a manifest", bytes.len()));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err("checksum mismatch".into());
        }
        if &body[..4] != MAGIC {
            return Err("not a manifest (bad magic)".into());
        }
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]));
        let format = u16::from_le_bytes([body[4], body[5]]);
        if format != FORMAT {
            return Err(format!("manifest format {format} is not {FORMAT}"));
        }
        let version = u64_at(6);
        let log_start = u64_at(14);
        let count = u32::from_le_bytes(body[22..26].try_into().unwrap_or([0; 4])) as usize;
        if body.len() != HEAD + count.saturating_mul(ENTRY) {
            return Err(format!(
                "{} bytes for {count} segments: the length does not match",
                bytes.len()
            ));
        }
        let mut segments = BTreeMap::new();
        let mut prev_next = None;
        for i in 0..count {
            let at = HEAD + i * ENTRY;
            let s = RemoteSegment {
                base_offset: u64_at(at),
                next_offset: u64_at(at + 8),
                size_bytes: u64_at(at + 16),
                first_timestamp_ms: u64_at(at + 24) as i64,
                max_timestamp_ms: u64_at(at + 32) as i64,
                leader_epoch: i32::from_le_bytes(
                    body[at + 40..at + 44].try_into().unwrap_or([0; 4]),
                ),
                checksum: u32::from_le_bytes(body[at + 44..at + 48].try_into().unwrap_or([0; 4])),
            };
            if s.next_offset <= s.base_offset || prev_next.is_some_and(|p| s.base_offset < p) {
                return Err(format!(
                    "segment {} to {} does not follow the one before",
                    s.base_offset, s.next_offset
                ));
            }
            prev_next = Some(s.next_offset);
            segments.insert(s.base_offset, s);
        }
        Ok(Manifest {
            version,
            log_start,
            segments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: u64, next: u64) -> RemoteSegment {
        RemoteSegment {
            base_offset: base,
            next_offset: next,
            size_bytes: 1000,
            first_timestamp_ms: 5,
            max_timestamp_ms: 9,
            leader_epoch: 2,
            checksum: 0xdead_beef,
        }
    }

    #[test]
    fn a_manifest_round_trips_and_damage_is_refused() {
        let mut m = Manifest {
            version: 7,
            log_start: 3,
            ..Manifest::default()
        };
        for (b, n) in [(0, 10), (10, 25), (25, 26)] {
            m.segments.insert(b, seg(b, n));
        }
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        assert_eq!(m.next_offset(), 26);
        assert_eq!(m.first_offset(), Some(3));
        assert_eq!(m.segment_for(12).map(|s| s.base_offset), Some(10));
        assert!(m.segment_for(26).is_none());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(Manifest::decode(&bad).is_err(), "byte {i}");
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Manifest::decode(&[]).is_err());
    }

    #[test]
    fn keys_name_their_version_and_segment() {
        assert_eq!(manifest_version(&manifest_key("t-ab/3", 42)), Some(42));
        assert_eq!(manifest_version("t-ab/3/manifest.7"), None);
        for k in segment_keys("t-ab/3", 1234) {
            assert_eq!(segment_of_key(&k), Some(1234));
        }
        assert_eq!(segment_of_key("t-ab/3/manifest.00000000000000000001"), None);
    }
}
