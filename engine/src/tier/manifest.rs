//! A partition's manifest: the segments it has in the cold tier, and where its log starts.
//! Each change writes a new version under a new key
//! (`manifests/{writer epoch:010}-{version:020}`); the highest (epoch, version) whose
//! checksum holds is the manifest, older ones are removed after it is written. A segment's
//! objects are put before the version naming them, so whatever the manifest names is in the
//! tier.
//!
//! The writer's leader epoch leads the key: on a cluster only the partition's leader writes
//! the manifest, and a leader that lost the leadership without knowing it yet writes under
//! an older epoch, which every reader ranks below the new leader's versions (and which the
//! writer sees, and stops at, before it writes again).
//!
//! A segment's objects are named by its base and next offset (`{base:020}-{next:020}.log`):
//! replicas roll their segments at their own sizes and times, so a new leader's segment may
//! start inside one the tier has; two uploads of one range hold the same bytes (replicas
//! hold the leader's frames verbatim), and two different ranges never share a key. Remote
//! segments may thus overlap, in base and next offset order.
//!
//! Encoding (little-endian): magic `SPTM`, format u16 (2), version u64, writer epoch i32,
//! log start u64, count u32, then per segment base offset u64, next offset u64, size u64,
//! first and max timestamp i64, leader epoch i32, CRC32 of the log object u32 (48 bytes);
//! last, the CRC32 of everything before it.

use std::collections::BTreeMap;

const MAGIC: &[u8; 4] = b"SPTM";
const FORMAT: u16 = 2;
const HEAD: usize = 4 + 2 + 8 + 4 + 8 + 4;
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
    /// The leader epoch of the replica that wrote it (0 on a single broker).
    pub epoch: i32,
    /// The first offset served (DeleteRecords and retention move it); segments wholly below
    /// it are not listed.
    pub log_start: u64,
    pub segments: BTreeMap<u64, RemoteSegment>,
}

/// Which manifest a key holds: the writer's epoch, then the version (the order readers rank
/// them in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManifestId {
    pub epoch: i32,
    pub version: u64,
}

/// The directory of a partition's manifests.
pub fn manifests_dir(prefix: &str) -> String {
    format!("{prefix}/manifests/")
}

/// The key of a manifest version under a partition's prefix.
pub fn manifest_key(prefix: &str, id: ManifestId) -> String {
    format!(
        "{}{:010}-{:020}",
        manifests_dir(prefix),
        id.epoch.max(0),
        id.version
    )
}

/// The manifest a key names (`.../manifests/0000000003-00000000000000000007` -> epoch 3,
/// version 7).
pub fn manifest_id(key: &str) -> Option<ManifestId> {
    let mut parts = key.rsplit('/');
    let name = parts.next()?;
    if parts.next()? != "manifests" {
        return None;
    }
    let (epoch, version) = name.split_once('-')?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(epoch, 10) || !digits(version, 20) {
        return None;
    }
    Some(ManifestId {
        epoch: epoch.parse().ok()?,
        version: version.parse().ok()?,
    })
}

/// The keys of a remote segment's objects: log, offset index, time index.
pub fn segment_keys(prefix: &str, seg: &RemoteSegment) -> [String; 3] {
    let stem = format!("{prefix}/{:020}-{:020}", seg.base_offset, seg.next_offset);
    [
        format!("{stem}.log"),
        format!("{stem}.index"),
        format!("{stem}.timeindex"),
    ]
}

/// The (base, next) offsets a segment object's key names, if it is one.
pub fn segment_of_key(key: &str) -> Option<(u64, u64)> {
    let name = key.rsplit('/').next()?;
    let stem = name
        .strip_suffix(".log")
        .or_else(|| name.strip_suffix(".index"))
        .or_else(|| name.strip_suffix(".timeindex"))?;
    let (base, next) = stem.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(base) || !digits(next) {
        return None;
    }
    Some((base.parse().ok()?, next.parse().ok()?))
}

impl Manifest {
    pub fn id(&self) -> ManifestId {
        ManifestId {
            epoch: self.epoch,
            version: self.version,
        }
    }

    /// Whether the manifest names exactly this segment (the same offsets).
    pub fn names(&self, base: u64, next: u64) -> bool {
        self.segments
            .get(&base)
            .is_some_and(|s| s.next_offset == next)
    }

    /// Bytes of the remote segments wholly below `offset` (the part of the log that is only
    /// in the tier when `offset` is the local start).
    pub fn bytes_below(&self, offset: u64) -> u64 {
        self.segments
            .values()
            .filter(|r| r.next_offset <= offset)
            .map(|r| r.size_bytes)
            .sum()
    }

    /// Whether every offset from `base` up to `next` is in a remote segment (those may
    /// overlap and start where a local one does not).
    pub fn covers(&self, base: u64, next: u64) -> bool {
        let mut at = base;
        while at < next {
            match self.segment_for(at) {
                Some(s) => at = s.next_offset,
                None => return false,
            }
        }
        true
    }

    /// Adds a segment; those it contains (the same base, or wholly inside it) leave the
    /// manifest and are returned, for their objects to be removed after it is written.
    pub fn add(&mut self, seg: RemoteSegment) -> Vec<RemoteSegment> {
        let inside: Vec<u64> = self
            .segments
            .range(seg.base_offset..)
            .take_while(|(_, s)| s.next_offset <= seg.next_offset)
            .map(|(b, _)| *b)
            .collect();
        let gone = inside
            .iter()
            .filter_map(|b| self.segments.remove(b))
            .collect();
        self.segments.insert(seg.base_offset, seg);
        gone
    }

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
        out.extend_from_slice(&self.epoch.to_le_bytes());
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
    /// segments are in order (base and next offsets both rising).
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
        let epoch = i32::from_le_bytes(body[14..18].try_into().unwrap_or([0; 4]));
        let log_start = u64_at(18);
        let count = u32::from_le_bytes(body[26..30].try_into().unwrap_or([0; 4])) as usize;
        if body.len() != HEAD + count.saturating_mul(ENTRY) {
            return Err(format!(
                "{} bytes for {count} segments: the length does not match",
                bytes.len()
            ));
        }
        let mut segments = BTreeMap::new();
        let mut prev: Option<(u64, u64)> = None;
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
            let out_of_order =
                prev.is_some_and(|(base, next)| s.base_offset <= base || s.next_offset <= next);
            if s.next_offset <= s.base_offset || out_of_order {
                return Err(format!(
                    "segment {} to {} does not follow the one before",
                    s.base_offset, s.next_offset
                ));
            }
            prev = Some((s.base_offset, s.next_offset));
            segments.insert(s.base_offset, s);
        }
        Ok(Manifest {
            version,
            epoch,
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
            epoch: 4,
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
        let id = ManifestId {
            epoch: 3,
            version: 42,
        };
        assert_eq!(manifest_id(&manifest_key("t-ab/3", id)), Some(id));
        assert_eq!(manifest_id("t-ab/3/manifests/7"), None);
        assert_eq!(manifest_id("t-ab/3/0000000003-00000000000000000042"), None);
        assert!(
            ManifestId {
                epoch: 4,
                version: 1
            } > id,
            "a later epoch ranks above every version of an earlier one"
        );
        for k in segment_keys("t-ab/3", &seg(1234, 2000)) {
            assert_eq!(segment_of_key(&k), Some((1234, 2000)));
        }
        assert_eq!(segment_of_key(&manifest_key("t-ab/3", id)), None);
    }

    #[test]
    fn overlapping_segments_cover_and_replace() {
        let mut m = Manifest::default();
        assert!(m.add(seg(0, 10)).is_empty());
        assert!(m.add(seg(10, 20)).is_empty());
        // A new leader's segment starting inside the last one.
        assert!(m.add(seg(15, 30)).is_empty());
        assert_eq!(m.segment_for(12).map(|s| s.base_offset), Some(10));
        assert_eq!(m.segment_for(17).map(|s| s.base_offset), Some(15));
        assert_eq!(m.next_offset(), 30);
        assert!(m.covers(5, 30));
        assert!(!m.covers(5, 31));
        // One that contains two: they leave the manifest.
        let gone = m.add(seg(10, 40));
        assert_eq!(
            gone.iter().map(|s| s.base_offset).collect::<Vec<_>>(),
            [10, 15]
        );
        assert!(m.names(10, 40) && !m.names(10, 20));
        let m2 = Manifest::decode(&m.encode()).unwrap();
        assert_eq!(m2, m);
        // Out of order is refused.
        let mut bad = Manifest::default();
        bad.segments.insert(0, seg(0, 10));
        bad.segments.insert(5, seg(5, 8));
        assert!(Manifest::decode(&bad.encode()).is_err());
    }
}
