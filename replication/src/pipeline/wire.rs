//! The messages of a replication session (shard s of a follower to shard s of a leader):
//! a frame is `u32` total length, `u32` header length (both little-endian), an rkyv-encoded
//! [`Message`], then a raw tail: the record batches of a [`Message::Fetched`], exactly as the
//! leader's log returned them, back to back. The leader writes each batch's `Bytes` to the
//! socket as they are (no re-encoding, no copy); the follower slices them out of the frame
//! it read. A length above [`MAX_FRAME_BYTES`] closes the session before anything is
//! allocated for it; a header that does not decode, or batch lengths that do not add up to
//! the tail, are an error, never data.

use bytes::{BufMut, Bytes, BytesMut};
use futures_lite::AsyncWriteExt;
use rkyv::{Archive, Deserialize, Serialize};

use crate::metadata::{BrokerId, TopicId};
use spate_engine::ReadBatch;

/// A fetch answer is bounded by the fetch's `max_bytes` (at most [`MAX_FETCH_BYTES`]) plus
/// one batch beyond it: 64 MiB covers both with room.
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// The most a follower asks for in one fetch.
pub const MAX_FETCH_BYTES: u32 = 16 << 20;

/// Kafka's error codes, as a leader answers a partition.
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    /// The offset is below the leader's local log, in the cold tier: the answer's log start
    /// is the leader's local start, where a follower starts its copy (KIP-405).
    pub const OFFSET_MOVED_TO_TIERED_STORAGE: i16 = 109;
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    pub topic_id: TopicId,
    pub partition: u32,
    /// The leader epoch the follower follows: another epoch is refused.
    pub leader_epoch: i32,
    /// The follower's log end: it fetches from there.
    pub fetch_offset: u64,
    /// How much of its log the follower has made durable.
    pub durable: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BatchMeta {
    pub base_offset: u64,
    pub record_count: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub leader_epoch: i32,
    /// The payload's length in the frame's tail.
    pub len: u32,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub topic_id: TopicId,
    pub partition: u32,
    pub error: i16,
    pub high_watermark: u64,
    pub log_start: u64,
    pub log_end: u64,
    pub batches: Vec<BatchMeta>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The session's first message: who asks, of whom. The leader refuses another cluster's
    /// follower, or a session meant for another broker or shard.
    Hello {
        cluster_id: [u8; 16],
        follower: BrokerId,
        leader: BrokerId,
        shard: u32,
    },
    /// The leader's answer to a hello it refuses, then it closes the session.
    Refused { reason: String },
    /// Fetch from each partition's `fetch_offset`, waiting up to `max_wait_ms` for data if
    /// there is none.
    Fetch {
        id: u64,
        max_wait_ms: u32,
        max_bytes: u32,
        partitions: Vec<FetchPartition>,
    },
    /// The answer to fetch `id`; the batches' payloads are the frame's tail, in order.
    Fetched {
        id: u64,
        partitions: Vec<FetchedPartition>,
    },
    /// The follower's log end and durable end moved (a sync completed): no answer.
    Progress { partitions: Vec<FetchPartition> },
    /// OffsetsForLeaderEpoch: where does `epoch` end in the leader's log.
    EpochQuery {
        id: u64,
        topic_id: TopicId,
        partition: u32,
        current_leader_epoch: i32,
        epoch: i32,
    },
    /// `end_offset` -1 (and `epoch` -1): the leader has no epoch at or below the one asked.
    EpochAnswer {
        id: u64,
        error: i16,
        epoch: i32,
        end_offset: i64,
    },
}

impl Message {
    /// The frame for this message, without a tail.
    pub fn frame(&self) -> Bytes {
        frame_head(self, 0)
    }
}

fn encode_header(m: &Message) -> Vec<u8> {
    match rkyv::to_bytes::<rkyv::rancor::Error>(m) {
        Ok(b) => b.to_vec(),
        Err(e) => unreachable!("rkyv serialization of a replication message: {e}"),
    }
}

/// The lengths and header of a frame whose tail is `tail_len` bytes.
fn frame_head(m: &Message, tail_len: usize) -> Bytes {
    let header = encode_header(m);
    let mut out = BytesMut::with_capacity(8 + header.len());
    out.put_u32_le((4 + header.len() + tail_len) as u32);
    out.put_u32_le(header.len() as u32);
    out.put_slice(&header);
    out.freeze()
}

/// A `Fetched` frame: the head, then each batch's payload as the log returned it.
pub fn fetched_frame(id: u64, partitions: Vec<(FetchedPartition, Vec<ReadBatch>)>) -> Vec<Bytes> {
    let mut tail = Vec::new();
    let mut metas = Vec::with_capacity(partitions.len());
    let mut tail_len = 0usize;
    for (mut p, batches) in partitions {
        p.batches = batches
            .iter()
            .map(|b| BatchMeta {
                base_offset: b.base_offset,
                record_count: b.record_count,
                first_timestamp_ms: b.first_timestamp_ms,
                max_timestamp_ms: b.max_timestamp_ms,
                leader_epoch: b.leader_epoch,
                len: b.payload.len() as u32,
            })
            .collect();
        for b in batches {
            tail_len += b.payload.len();
            tail.push(b.payload);
        }
        metas.push(p);
    }
    let mut chunks = Vec::with_capacity(1 + tail.len());
    chunks.push(frame_head(
        &Message::Fetched {
            id,
            partitions: metas,
        },
        tail_len,
    ));
    chunks.extend(tail.into_iter().filter(|c| !c.is_empty()));
    chunks
}

/// A frame as read: its message and its tail.
#[derive(Debug)]
pub struct Received {
    pub message: Message,
    pub tail: Bytes,
}

impl Received {
    /// The batches of a `Fetched` partition, sliced out of the tail in order; `at` is where
    /// this partition's batches start in the tail, moved past them.
    pub fn batches(&self, p: &FetchedPartition, at: &mut usize) -> Result<Vec<ReadBatch>, String> {
        let mut out = Vec::with_capacity(p.batches.len());
        for b in &p.batches {
            let end = at
                .checked_add(b.len as usize)
                .filter(|end| *end <= self.tail.len())
                .ok_or_else(|| {
                    format!(
                        "a batch of {} bytes at {} runs past the frame's {} bytes of records",
                        b.len,
                        at,
                        self.tail.len()
                    )
                })?;
            out.push(ReadBatch {
                base_offset: b.base_offset,
                record_count: b.record_count,
                first_timestamp_ms: b.first_timestamp_ms,
                max_timestamp_ms: b.max_timestamp_ms,
                leader_epoch: b.leader_epoch,
                payload: self.tail.slice(*at..end),
            });
            *at = end;
        }
        Ok(out)
    }
}

/// Decodes a frame's bytes (after its total length).
pub fn decode(frame: Bytes) -> Result<Received, String> {
    if frame.len() < 4 {
        return Err(format!(
            "a frame of {} bytes has no header length",
            frame.len()
        ));
    }
    let header_len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    let header_end = 4usize
        .checked_add(header_len)
        .filter(|e| *e <= frame.len())
        .ok_or_else(|| {
            format!(
                "a header of {header_len} bytes does not fit a frame of {} bytes",
                frame.len()
            )
        })?;
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(header_len);
    aligned.extend_from_slice(&frame[4..header_end]);
    let message = rkyv::from_bytes::<Message, rkyv::rancor::Error>(&aligned)
        .map_err(|e| format!("a replication message does not decode: {e}"))?;
    let tail = frame.slice(header_end..);
    let declared: u64 = match &message {
        Message::Fetched { partitions, .. } => partitions
            .iter()
            .flat_map(|p| p.batches.iter())
            .map(|b| u64::from(b.len))
            .sum(),
        _ => 0,
    };
    if declared != tail.len() as u64 {
        return Err(format!(
            "the batches declare {declared} bytes but the frame holds {}",
            tail.len()
        ));
    }
    Ok(Received { message, tail })
}

/// Reads one frame (after its length, bounded by [`MAX_FRAME_BYTES`]); `Ok(None)` at a clean
/// end of stream.
pub async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Bytes>> {
    Ok(
        crate::node::frame::read_bounded(r, MAX_FRAME_BYTES, "replication frame")
            .await?
            .map(Bytes::from),
    )
}

/// Writes a frame's chunks in order.
pub async fn write_chunks<W: futures_lite::AsyncWrite + Unpin>(
    w: &mut W,
    chunks: &[Bytes],
) -> std::io::Result<()> {
    for c in chunks {
        w.write_all(c).await?;
    }
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: u64, payload: &'static [u8]) -> ReadBatch {
        ReadBatch {
            base_offset: base,
            record_count: 2,
            first_timestamp_ms: 5,
            max_timestamp_ms: 6,
            leader_epoch: 3,
            payload: Bytes::from_static(payload),
        }
    }

    fn read(chunks: &[Bytes]) -> Received {
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let frame = futures_lite::future::block_on(read_frame(&mut &all[..]))
            .unwrap()
            .unwrap();
        decode(frame).unwrap()
    }

    #[test]
    fn fetched_frames_carry_the_batches_verbatim() {
        let p = |partition| FetchedPartition {
            topic_id: [1; 16],
            partition,
            error: 0,
            high_watermark: 4,
            log_start: 0,
            log_end: 4,
            batches: Vec::new(),
        };
        let chunks = fetched_frame(
            9,
            vec![
                (p(0), vec![batch(0, b"abc"), batch(2, b"defg")]),
                (p(1), vec![]),
                (p(2), vec![batch(7, b"h")]),
            ],
        );
        let got = read(&chunks);
        let Message::Fetched { id, partitions } = &got.message else {
            panic!("{:?}", got.message)
        };
        assert_eq!(*id, 9);
        let mut at = 0;
        let b0 = got.batches(&partitions[0], &mut at).unwrap();
        assert_eq!(b0.len(), 2);
        assert_eq!(&b0[1].payload[..], b"defg");
        assert_eq!(b0[1].base_offset, 2);
        assert_eq!(b0[1].leader_epoch, 3);
        assert!(got.batches(&partitions[1], &mut at).unwrap().is_empty());
        assert_eq!(
            &got.batches(&partitions[2], &mut at).unwrap()[0].payload[..],
            b"h"
        );
        assert_eq!(at, got.tail.len());
    }

    #[test]
    fn bad_frames_are_errors() {
        let m = Message::Progress { partitions: vec![] };
        let f = m.frame();
        assert_eq!(read(std::slice::from_ref(&f)).message, m);
        // A tail the header does not declare.
        let mut extra = f[4..].to_vec();
        extra.push(1);
        assert!(decode(Bytes::from(extra)).is_err());
        // A header length past the frame, garbage, nothing.
        assert!(decode(Bytes::from_static(&[200, 0, 0, 0, 1])).is_err());
        assert!(decode(Bytes::from_static(&[4, 0, 0, 0, 1, 2, 3, 4])).is_err());
        assert!(decode(Bytes::new()).is_err());
        // A batch longer than the tail: the declared sum matches, the slicing still checks.
        let chunks = fetched_frame(
            1,
            vec![(
                FetchedPartition {
                    topic_id: [0; 16],
                    partition: 0,
                    error: 0,
                    high_watermark: 0,
                    log_start: 0,
                    log_end: 0,
                    batches: vec![],
                },
                vec![batch(0, b"xy")],
            )],
        );
        let got = read(&chunks);
        let Message::Fetched { partitions, .. } = &got.message else {
            panic!()
        };
        let mut at = 1;
        assert!(got.batches(&partitions[0], &mut at).is_err());
        let huge = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes();
        let err = futures_lite::future::block_on(read_frame(&mut &huge[..])).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
