//! Broker-to-broker frames of the cluster listener: a length (u32, little-endian) and an
//! rkyv-encoded [`Frame`] naming the cluster and the sender. A length above
//! [`MAX_FRAME_BYTES`] closes the connection before anything is allocated for it; a frame
//! that does not decode, or names another cluster, is refused and logged, never applied.

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rkyv::{Archive, Deserialize, Serialize};

use super::requests::{Reply, Request};
use crate::metadata::{BrokerId, BrokerRegistration};

pub const MAX_FRAME_BYTES: usize = 16 << 20;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A quorum message (`quorum::wire`'s envelope).
    Raft(Vec<u8>),
    /// A broker registers with the controller.
    Register(BrokerRegistration),
    /// A broker's heartbeat to the controller.
    Heartbeat {
        broker_id: BrokerId,
        broker_epoch: u64,
        applied: u64,
    },
    /// A request for the controller, forwarded by the broker it reached.
    Request { id: u64, request: Request },
    /// The controller's answer to a forwarded request.
    Reply { id: u64, reply: Reply },
    /// An observer (a broker that is not a voter) asks a voter for the committed metadata
    /// records from `from_index` on; the answer goes to `reply_addr`.
    FetchMetadata { from_index: u64, reply_addr: String },
    /// A voter's answer: committed entries (index, data), the controller it knows, and the
    /// commit index (the observer is caught up when it has applied that far).
    MetadataEntries {
        entries: Vec<(u64, Vec<u8>)>,
        controller: Option<BrokerId>,
        commit: u64,
    },
    /// A voter's answer when the entries asked for are no longer in its log: its latest
    /// snapshot, the encoded cluster image as of `index`.
    MetadataSnapshot {
        index: u64,
        image: Vec<u8>,
        controller: Option<BrokerId>,
    },
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub cluster_id: [u8; 16],
    pub from: BrokerId,
    pub body: Body,
}

impl Frame {
    /// The bytes on the wire, length first.
    pub fn encode(&self) -> Vec<u8> {
        let body = match rkyv::to_bytes::<rkyv::rancor::Error>(self) {
            Ok(b) => b,
            Err(e) => unreachable!("rkyv serialization of a cluster frame: {e}"),
        };
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<Frame, rkyv::rancor::Error>(&aligned).map_err(|e| e.to_string())
    }
}

/// Reads one frame's bytes; `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    read_bounded(r, MAX_FRAME_BYTES, "cluster frame").await
}

/// Reads a `u32` little-endian length and that many bytes, refusing (before allocating) a
/// length above `max`; `Ok(None)` at a clean end of stream. `what` names the frame in the
/// error.
pub(crate) async fn read_bounded<R: futures_lite::AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    what: &str,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {what} of {len} bytes is larger than {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

pub async fn write_frame<W: futures_lite::AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_or_garbage_ones_are_refused() {
        let f = Frame {
            cluster_id: [3; 16],
            from: 2,
            body: Body::Heartbeat {
                broker_id: 2,
                broker_epoch: 9,
                applied: 11,
            },
        };
        let bytes = f.encode();
        let got = futures_lite::future::block_on(read_frame(&mut &bytes[..]))
            .unwrap()
            .unwrap();
        assert_eq!(Frame::decode(&got), Ok(f));
        assert!(Frame::decode(&[9; 20]).is_err());
        let mut huge = (MAX_FRAME_BYTES as u32 + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        let err = futures_lite::future::block_on(read_frame(&mut &huge[..])).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        let empty: &[u8] = &[];
        assert!(futures_lite::future::block_on(read_frame(&mut &empty[..]))
            .unwrap()
            .is_none());
    }
}
