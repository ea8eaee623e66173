//! A frame's records as the cleaner looks at them, copied out of the payload: the hook walks
//! a frame in one call, and a frame can hold thousands of records (a 1 MiB batch of 1 KiB
//! records); with the keys copied out (a few bytes each) the pass maps or judges them in
//! slices of [`SLICE_RECORDS`], giving its shard's other work the core between two slices
//! instead of holding it for the whole frame (docs/BENCHMARKS.md, seventeenth session).

use crate::compaction::{KeyedRecord, RecordKeys};

/// Records looked up in the key map between two chances for the shard's other work.
pub const SLICE_RECORDS: usize = 128;

#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    timestamp_ms: i64,
    /// Where the key is in `FrameKeys::keys` (`None`: no key).
    key: Option<(u32, u32)>,
    tombstone: bool,
}

/// The records of one frame; reused from frame to frame (its buffers stay allocated).
#[derive(Debug, Default)]
pub struct FrameKeys {
    keys: Vec<u8>,
    records: Vec<Entry>,
}

impl FrameKeys {
    /// Replaces the contents with the records of the frame at `base_offset`.
    pub fn load(
        &mut self,
        hook: &dyn RecordKeys,
        base_offset: u64,
        payload: &[u8],
    ) -> Result<(), String> {
        self.keys.clear();
        self.records.clear();
        let (keys, records) = (&mut self.keys, &mut self.records);
        let mut too_big = false;
        hook.records(base_offset, payload, &mut |r| {
            let key = r.key.and_then(|k| {
                let at = u32::try_from(keys.len()).ok()?;
                let len = u32::try_from(k.len()).ok()?;
                keys.extend_from_slice(k);
                Some((at, len))
            });
            too_big |= r.key.is_some() && key.is_none();
            records.push(Entry {
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                key,
                tombstone: r.tombstone,
            });
        })?;
        if too_big {
            return Err("keys of more than 4 GiB in one batch".into());
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The `i`th record (in offset order).
    pub fn get(&self, i: usize) -> Option<KeyedRecord<'_>> {
        let e = self.records.get(i)?;
        Some(KeyedRecord {
            offset: e.offset,
            key: e
                .key
                .map(|(at, len)| &self.keys[at as usize..at as usize + len as usize]),
            tombstone: e.tombstone,
            timestamp_ms: e.timestamp_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compaction::Retained;
    use bytes::Bytes;

    /// Payload: one record per byte; the byte is the key (0: no key, 0xff: a tombstone of 1).
    struct ByteKeys;

    impl RecordKeys for ByteKeys {
        fn records(
            &self,
            base_offset: u64,
            payload: &[u8],
            each: &mut dyn FnMut(KeyedRecord<'_>),
        ) -> Result<(), String> {
            for (i, b) in payload.iter().enumerate() {
                let key = [if *b == 0xff { 1 } else { *b }];
                each(KeyedRecord {
                    offset: base_offset + i as u64,
                    key: (*b != 0).then_some(&key[..]),
                    tombstone: *b == 0xff,
                    timestamp_ms: i as i64,
                });
            }
            Ok(())
        }

        fn retain(
            &self,
            _: u64,
            _: &Bytes,
            _: &mut dyn FnMut(KeyedRecord<'_>) -> bool,
        ) -> Result<Retained, String> {
            Ok(Retained::All)
        }
    }

    #[test]
    fn holds_what_the_hook_said_of_each_record_and_forgets_the_previous_frame() {
        let mut f = FrameKeys::default();
        f.load(&ByteKeys, 10, &[7, 0, 0xff, 9]).unwrap();
        f.load(&ByteKeys, 20, &[3, 0, 0xff]).unwrap();
        assert_eq!(f.len(), 3);
        let got: Vec<_> = (0..f.len()).map(|i| f.get(i).unwrap()).collect();
        assert_eq!(
            got,
            vec![
                KeyedRecord {
                    offset: 20,
                    key: Some(&[3][..]),
                    tombstone: false,
                    timestamp_ms: 0
                },
                KeyedRecord {
                    offset: 21,
                    key: None,
                    tombstone: false,
                    timestamp_ms: 1
                },
                KeyedRecord {
                    offset: 22,
                    key: Some(&[1][..]),
                    tombstone: true,
                    timestamp_ms: 2
                },
            ]
        );
        assert_eq!(f.get(3), None);
    }
}
