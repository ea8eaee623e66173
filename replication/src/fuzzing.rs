//! What the `cluster_frame` fuzz target checks (fuzz/fuzz_targets/cluster_frame.rs), and
//! what `tests/fuzz_corpus.rs` replays: bytes from another broker (a cluster frame, or the
//! quorum envelope inside one, or a replication session's frame) decode or are refused, never
//! panic, and hold memory bounded by their size; what decodes encodes back to what decodes
//! the same.

use spate_engine::fuzzing::{assert_alloc_bound, measure};

use crate::metadata::decode_batch;
use crate::node::Frame;
use crate::pipeline::wire as replication_wire;
use crate::quorum::wire;

/// Decoders copy what they keep (rkyv into owned values, protobuf into owned messages):
/// a few times the input at most.
const ALLOC_MULTIPLE: usize = 8;

const CLUSTER: [u8; 16] = [0x5a; 16];

pub fn check_cluster_frame(data: &[u8]) {
    let (frame, peak) = measure(|| Frame::decode(data));
    assert_alloc_bound("cluster frame", peak, data.len(), ALLOC_MULTIPLE);
    if let Ok(f) = frame {
        let again = Frame::decode(&f.encode()[4..]).expect("an encoded frame decodes");
        assert_eq!(again, f);
    }
    // The same bytes as a quorum message (behind a valid envelope header), for any node.
    let mut enveloped = b"SPQM\x01".to_vec();
    enveloped.extend_from_slice(&CLUSTER);
    enveloped.extend_from_slice(data);
    let (msg, peak) = measure(|| wire::decode(&enveloped, &CLUSTER, 2));
    assert_alloc_bound("quorum message", peak, enveloped.len(), ALLOC_MULTIPLE);
    if let Ok(m) = msg {
        let bytes = wire::encode(&CLUSTER, &m);
        assert_eq!(wire::decode(&bytes, &CLUSTER, 2).expect("re-encoded"), m);
    }
    let (batch, peak) = measure(|| decode_batch(data));
    assert_alloc_bound("metadata records", peak, data.len(), ALLOC_MULTIPLE);
    if let Ok(b) = batch {
        assert_eq!(
            decode_batch(&crate::metadata::encode_batch(&b)).expect("re-encoded"),
            b
        );
    }
    // The same bytes as a replication session's frame (after its length): a header that does
    // not decode, or batches that do not add up to the tail, are errors; the batches of a
    // fetch answer slice the tail exactly.
    let bytes = bytes::Bytes::copy_from_slice(data);
    let (received, peak) = measure(|| replication_wire::decode(bytes.clone()));
    assert_alloc_bound("replication frame", peak, data.len(), ALLOC_MULTIPLE);
    if let Ok(r) = received {
        if let replication_wire::Message::Fetched { partitions, .. } = &r.message {
            let mut at = 0;
            for p in partitions {
                let batches = r
                    .batches(p, &mut at)
                    .expect("declared lengths fit the tail");
                assert_eq!(batches.len(), p.batches.len());
            }
            assert_eq!(at, r.tail.len());
        } else {
            let again = r.message.frame();
            let back = replication_wire::decode(again.slice(4..)).expect("re-encoded");
            assert_eq!(back.message, r.message);
        }
    }
}
