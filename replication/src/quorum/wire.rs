//! Quorum messages between brokers: raft-rs's protobuf `Message` inside Spate's envelope,
//! which names the cluster. A message from another cluster, or for another node, is refused
//! before raft-rs sees it (and an older term is refused by raft-rs: that is Raft).
//!
//! ```text
//! "SPQM" | version u8 (1) | cluster id [16] | protobuf Message
//! ```

use protobuf::Message as _;
use raft::eraftpb::Message;

const MAGIC: &[u8; 4] = b"SPQM";
const VERSION: u8 = 1;
const HEADER: usize = 4 + 1 + 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a quorum message (bad magic or too short)")]
    NotAQuorumMessage,
    #[error("quorum message version {0} is not understood (this broker speaks {VERSION})")]
    Version(u8),
    #[error("message from cluster {} (this is cluster {})", hex(got), hex(ours))]
    WrongCluster { got: [u8; 16], ours: [u8; 16] },
    #[error("message for node {to}, this is node {me}")]
    WrongNode { to: u64, me: u64 },
    #[error("quorum message does not decode: {0}")]
    Decode(String),
}

pub fn encode(cluster_id: &[u8; 16], msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + msg.compute_size() as usize);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(cluster_id);
    // Writing a message into a Vec cannot fail (no I/O, no size limit hit).
    let _ = msg.write_to_vec(&mut out);
    out
}

/// Decodes a message for node `me` of cluster `ours`.
pub fn decode(bytes: &[u8], ours: &[u8; 16], me: u64) -> Result<Message, WireError> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return Err(WireError::NotAQuorumMessage);
    }
    if bytes[4] != VERSION {
        return Err(WireError::Version(bytes[4]));
    }
    let mut got = [0u8; 16];
    got.copy_from_slice(&bytes[5..HEADER]);
    if &got != ours {
        return Err(WireError::WrongCluster { got, ours: *ours });
    }
    let msg: Message =
        parse_bounded(&bytes[HEADER..]).map_err(|e| WireError::Decode(e.to_string()))?;
    if msg.to != me {
        return Err(WireError::WrongNode { to: msg.to, me });
    }
    Ok(msg)
}

/// Parses a protobuf message from `bytes` as one shared buffer with the input's length as the
/// stream's limit. rust-protobuf reading a slice reserves what a length field says (up to
/// 10 MB) before finding the input shorter; from a `Bytes` buffer it checks the length against
/// what is left and slices bytes fields without copying (the cluster_frame fuzz target found
/// 36 and 51 bytes holding 8 and 10 MB the other way).
pub fn parse_bounded<M: protobuf::Message>(bytes: &[u8]) -> protobuf::ProtobufResult<M> {
    let shared = bytes::Bytes::copy_from_slice(bytes);
    let mut is = protobuf::CodedInputStream::from_carllerche_bytes(&shared);
    is.push_limit(shared.len() as u64)?;
    let mut m = M::new();
    m.merge_from(&mut is)?;
    is.check_eof()?;
    Ok(m)
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::MessageType;

    #[test]
    fn messages_of_another_cluster_or_node_are_refused() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.to = 2;
        m.from = 1;
        m.term = 7;
        let bytes = encode(&[1; 16], &m);
        assert_eq!(decode(&bytes, &[1; 16], 2), Ok(m));
        assert!(matches!(
            decode(&bytes, &[2; 16], 2),
            Err(WireError::WrongCluster { .. })
        ));
        assert_eq!(
            decode(&bytes, &[1; 16], 3),
            Err(WireError::WrongNode { to: 2, me: 3 })
        );
        assert_eq!(
            decode(&bytes[..10], &[1; 16], 2),
            Err(WireError::NotAQuorumMessage)
        );
        let mut old = bytes.clone();
        old[4] = 9;
        assert_eq!(decode(&old, &[1; 16], 2), Err(WireError::Version(9)));
        let mut garbage = bytes[..HEADER].to_vec();
        garbage.extend_from_slice(&[0xff; 9]);
        assert!(matches!(
            decode(&garbage, &[1; 16], 2),
            Err(WireError::Decode(_))
        ));
    }
}
