//! What the fuzz targets (`fuzz/`) and their corpus replay (`net/tests/fuzz_corpus.rs`)
//! check, kept here so both run the same assertions. Not part of spate-net's API: nothing in
//! the broker calls it.
//!
//! Each `check_*` function takes arbitrary bytes and panics if a decoder panics, disagrees
//! with itself on a round trip, or holds more than a bounded multiple of its input while
//! decoding (measured by `spate_engine::fuzzing::CountingAlloc`, which the calling binary
//! installs as its global allocator).

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::records::Compression;
use spate_client::decompress::{self, DecompressError};
use spate_client::{self as client, OutRecord};
use spate_engine::fuzzing::{assert_alloc_bound, measure};

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::codec::{self, RequestPrefix};
use crate::commit_log;
use crate::groups::Committed;
use crate::versions;

/// How many bytes a request may hold in memory while it decodes, per byte of the request.
///
/// A decoded element costs its Rust struct, whatever its wire size: strings and byte fields
/// are slices of the request (`Bytes`, no copy), so what grows with the input is the vectors
/// of structs. The patched decoder refuses a count larger than the bytes left, so `n`
/// elements take at least `n` bytes; the densest arrays (net/tests/fuzz_corpus.rs builds
/// them: LeaveGroup v4 members of 3 bytes, Metadata topics of 2, ListGroups states of 1)
/// hold 33 to 54 times their size, a vector's doubling included. 128 leaves room for the
/// allocator's rounding; a decoder reserving from a count on the wire before reading it
/// (issue 14: 154 GB for 19 bytes) exceeds it by orders of magnitude.
pub const REQUEST_ALLOC_MULTIPLE: usize = 128;

/// Records decoded into `Record`s: a minimal record (7 bytes) becomes a `Record` of about 150
/// bytes, a minimal header (4 bytes with a distinct key) an index-map entry; the densest
/// batches hold 26 (records) and 37 (headers) times their size. 96 leaves room for growth.
pub const RECORDS_ALLOC_MULTIPLE: usize = 96;

/// The decompression limit the record checks use: small, so a bomb shows as `TooLarge`
/// quickly; the code path is the broker's, only the limit differs.
pub const FUZZ_DECOMPRESS_LIMIT: usize = 64 * 1024;

/// Checks one request frame (without its size prefix) as `handlers::dispatch` decodes it: the
/// prefix, the header for the API and version, then the body with kafka-protocol's type for
/// that API. A body that decodes must encode, at the same version, to bytes that decode to
/// the same value, and `compute_size` must say how many.
pub fn check_request(frame: &[u8]) {
    let Some(prefix) = RequestPrefix::parse(frame) else {
        return;
    };
    let (api_key, min, max) = if prefix.api_key == ApiKey::ApiVersions as i16 {
        (ApiKey::ApiVersions, 0, 3)
    } else {
        match versions::supported(prefix.api_key) {
            Some(s) => s,
            None => return,
        }
    };
    if prefix.api_version < min || prefix.api_version > max {
        return;
    }
    let version = prefix.api_version;
    let mut body = Bytes::copy_from_slice(frame);
    let (ctx, peak) = measure(|| codec::decode_header(api_key, version, &mut body));
    assert_alloc_bound("request header", peak, frame.len(), REQUEST_ALLOC_MULTIPLE);
    let Ok(ctx) = ctx else {
        return;
    };
    assert_eq!(
        (ctx.api_key, ctx.version, ctx.correlation_id),
        (api_key, prefix.api_version, prefix.correlation_id)
    );
    check_header_round_trip(frame, api_key, version);
    if !check_body(api_key, body, version, frame.len()) {
        panic!("{api_key:?} is supported but the fuzz check has no decoder for it");
    }
}

/// The request header alone: decode, encode, decode.
fn check_header_round_trip(frame: &[u8], api_key: ApiKey, version: i16) {
    let header_version = api_key.request_header_version(version);
    let mut buf = Bytes::copy_from_slice(frame);
    if let Ok(h) = RequestHeader::decode(&mut buf, header_version) {
        round_trip(&h, header_version, "RequestHeader");
    }
}

/// Whether `frame` is a request the broker would decode whole (prefix, header and body).
pub fn request_decodes(frame: &[u8]) -> bool {
    let Some(prefix) = RequestPrefix::parse(frame) else {
        return false;
    };
    let Some((api_key, min, max)) = versions::supported(prefix.api_key) else {
        return false;
    };
    if prefix.api_version < min || prefix.api_version > max {
        return false;
    }
    let mut body = Bytes::copy_from_slice(frame);
    if codec::decode_header(api_key, prefix.api_version, &mut body).is_err() {
        return false;
    }
    decodes_as(api_key, body, prefix.api_version)
}

macro_rules! for_each_api {
    ($api_key:expr, $f:ident ( $($arg:expr),* )) => {
        match $api_key {
            ApiKey::Produce => $f::<ProduceRequest>($($arg),*),
            ApiKey::Fetch => $f::<FetchRequest>($($arg),*),
            ApiKey::ListOffsets => $f::<ListOffsetsRequest>($($arg),*),
            ApiKey::Metadata => $f::<MetadataRequest>($($arg),*),
            ApiKey::OffsetCommit => $f::<OffsetCommitRequest>($($arg),*),
            ApiKey::OffsetFetch => $f::<OffsetFetchRequest>($($arg),*),
            ApiKey::FindCoordinator => $f::<FindCoordinatorRequest>($($arg),*),
            ApiKey::JoinGroup => $f::<JoinGroupRequest>($($arg),*),
            ApiKey::Heartbeat => $f::<HeartbeatRequest>($($arg),*),
            ApiKey::LeaveGroup => $f::<LeaveGroupRequest>($($arg),*),
            ApiKey::SyncGroup => $f::<SyncGroupRequest>($($arg),*),
            ApiKey::DescribeGroups => $f::<DescribeGroupsRequest>($($arg),*),
            ApiKey::ListGroups => $f::<ListGroupsRequest>($($arg),*),
            ApiKey::ApiVersions => $f::<ApiVersionsRequest>($($arg),*),
            ApiKey::CreateTopics => $f::<CreateTopicsRequest>($($arg),*),
            ApiKey::DeleteTopics => $f::<DeleteTopicsRequest>($($arg),*),
            ApiKey::DeleteRecords => $f::<DeleteRecordsRequest>($($arg),*),
            ApiKey::InitProducerId => $f::<InitProducerIdRequest>($($arg),*),
            ApiKey::DescribeConfigs => $f::<DescribeConfigsRequest>($($arg),*),
            ApiKey::AlterConfigs => $f::<AlterConfigsRequest>($($arg),*),
            ApiKey::CreatePartitions => $f::<CreatePartitionsRequest>($($arg),*),
            ApiKey::DeleteGroups => $f::<DeleteGroupsRequest>($($arg),*),
            ApiKey::ElectLeaders => $f::<ElectLeadersRequest>($($arg),*),
            ApiKey::IncrementalAlterConfigs => $f::<IncrementalAlterConfigsRequest>($($arg),*),
            ApiKey::DescribeCluster => $f::<DescribeClusterRequest>($($arg),*),
            ApiKey::OffsetDelete => $f::<OffsetDeleteRequest>($($arg),*),
            ApiKey::DescribeLogDirs => $f::<DescribeLogDirsRequest>($($arg),*),
            ApiKey::OffsetForLeaderEpoch => $f::<OffsetForLeaderEpochRequest>($($arg),*),
            ApiKey::AlterPartitionReassignments => {
                $f::<AlterPartitionReassignmentsRequest>($($arg),*)
            }
            ApiKey::ListPartitionReassignments => {
                $f::<ListPartitionReassignmentsRequest>($($arg),*)
            }
            ApiKey::DescribeProducers => $f::<DescribeProducersRequest>($($arg),*),
            ApiKey::DescribeTopicPartitions => $f::<DescribeTopicPartitionsRequest>($($arg),*),
            ApiKey::ConsumerGroupHeartbeat => $f::<ConsumerGroupHeartbeatRequest>($($arg),*),
            ApiKey::ConsumerGroupDescribe => $f::<ConsumerGroupDescribeRequest>($($arg),*),
            _ => return false,
        }
    };
}

/// Whether the fuzz checks know the body type of `api_key` (every supported API must).
pub fn knows_api(api_key: ApiKey) -> bool {
    fn known<T: Decodable>() -> bool {
        !std::any::type_name::<T>().is_empty()
    }
    for_each_api!(api_key, known())
}

fn decodes_as(api_key: ApiKey, mut body: Bytes, version: i16) -> bool {
    fn decode<T: Decodable>(body: &mut Bytes, version: i16) -> bool {
        codec::decode_body::<T>(body, version).is_ok()
    }
    for_each_api!(api_key, decode(&mut body, version))
}

/// Decodes `body` as the request type of `api_key`; `false` if there is none.
fn check_body(api_key: ApiKey, body: Bytes, version: i16, frame_len: usize) -> bool {
    fn check<T: Decodable + Encodable + PartialEq + Debug>(
        body: Bytes,
        version: i16,
        frame_len: usize,
    ) -> bool {
        let mut body = body;
        let (decoded, peak) = measure(|| codec::decode_body::<T>(&mut body, version));
        assert_alloc_bound(
            std::any::type_name::<T>(),
            peak,
            frame_len,
            REQUEST_ALLOC_MULTIPLE,
        );
        if let Ok(req) = decoded {
            round_trip(&req, version, std::any::type_name::<T>());
        }
        true
    }
    for_each_api!(api_key, check(body, version, frame_len))
}

/// Encodes `value` at `version` and decodes it again: the same value, of the announced size,
/// and encoding that again gives the same bytes.
///
/// One known kafka-protocol 0.18 bug is recognised and skipped (docs/TESTING.md): an unknown
/// tagged field whose tag is 2^31 or more on the wire is kept by the decoder under a negative
/// key, but the encoder writes only the fields with keys from 0 while still counting them
/// all in the field count, and `compute_size` counts them too; so such a value's encoding
/// does not decode. Spate never re-encodes a request, so the broker is not affected. Such a
/// value (its `compute_size` disagrees with its encoding, and it holds a negative tag) is
/// only encoded, not compared.
fn round_trip<T: Decodable + Encodable + PartialEq + Debug>(value: &T, version: i16, what: &str) {
    let encode = |v: &T| {
        let mut buf = BytesMut::new();
        if let Err(e) = v.encode(&mut buf, version) {
            panic!("{what} v{version}: a decoded value does not encode: {e}");
        }
        buf.freeze()
    };
    let first = encode(value);
    let size = match value.compute_size(version) {
        Ok(n) => n,
        Err(e) => panic!("{what} v{version}: compute_size fails after encode succeeded: {e}"),
    };
    if size != first.len() {
        assert!(
            format!("{value:?}").contains("unknown_tagged_fields: {-"),
            "{what} v{version}: compute_size says {size}, the encoding has {} bytes",
            first.len()
        );
        return;
    }
    let mut bytes = first.clone();
    let back = match T::decode(&mut bytes, version) {
        Ok(back) => back,
        Err(e) => panic!("{what} v{version}: its own encoding does not decode: {e}"),
    };
    assert!(
        bytes.is_empty(),
        "{what} v{version}: decode left bytes of its own encoding"
    );
    assert_eq!(
        &back, value,
        "{what} v{version}: decode-encode-decode differs"
    );
    assert_eq!(
        encode(&back),
        first,
        "{what} v{version}: encode-decode-encode differs"
    );
}

// ---------------------------------------------------------------------------------------------
// Record batches as the broker sees them: split, header parse

/// The header fields at their v2 offsets, as `BatchHeader::parse` reads them.
fn header_bytes(h: &BatchHeader, batch_len: i32) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&h.base_offset.to_be_bytes());
    b[8..12].copy_from_slice(&batch_len.to_be_bytes());
    b[12..16].copy_from_slice(&h.partition_leader_epoch.to_be_bytes());
    b[16] = h.magic as u8;
    b[17..21].copy_from_slice(&h.crc.to_be_bytes());
    b[21..23].copy_from_slice(&h.attributes.to_be_bytes());
    b[23..27].copy_from_slice(&h.last_offset_delta.to_be_bytes());
    b[27..35].copy_from_slice(&h.first_timestamp.to_be_bytes());
    b[35..43].copy_from_slice(&h.max_timestamp.to_be_bytes());
    b[43..51].copy_from_slice(&h.producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&h.producer_epoch.to_be_bytes());
    b[53..57].copy_from_slice(&h.base_sequence.to_be_bytes());
    b[57..61].copy_from_slice(&h.record_count.to_be_bytes());
    b
}

/// `batch::split` and `BatchHeader::parse`: accepted batches tile the input exactly, each
/// with a header that parses back to the bytes it came from, a CRC32C that matches and at
/// least one record; nothing is copied.
pub fn check_batches(data: &[u8]) {
    let records = Bytes::copy_from_slice(data);
    let (split, peak) = measure(|| batch::split(&records));
    // A `Batch` is a header and a `Bytes` slice (about 100 bytes) per batch of 61 bytes at
    // least, in a growing vector.
    assert_alloc_bound("batch::split", peak, data.len(), 4);
    if let Some(h) = BatchHeader::parse(data) {
        let batch_len = i32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        assert_eq!(&header_bytes(&h, batch_len)[..], &data[..HEADER_LEN]);
    }
    match split {
        Ok(batches) => {
            assert!(!batches.is_empty());
            let mut at = 0usize;
            for b in &batches {
                assert_eq!(&b.bytes[..], &data[at..at + b.bytes.len()]);
                assert_eq!(BatchHeader::parse(&b.bytes), Some(b.header));
                assert_eq!(b.header.magic, 2);
                assert!(b.header.record_count > 0 && b.header.last_offset_delta >= 0);
                assert_eq!(crc32c::crc32c(&b.bytes[21..]), b.header.crc);
                assert!(b.header.offset_count() >= 1);
                let _ = b.header.last_sequence();
                at += b.bytes.len();
            }
            assert_eq!(at, data.len(), "the batches do not cover the record set");
        }
        Err(e) => {
            // The error message names a position inside the input.
            let _ = e.to_string();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Record decoding and decompression

/// Whether every batch header in `data` says its records are uncompressed: only then is the
/// decoded size bounded by the input's (a compressed batch is bounded by the decompression
/// limit instead).
fn all_uncompressed(data: &[u8]) -> bool {
    let mut rest = data;
    while rest.len() >= 23 {
        if i16::from_be_bytes([rest[21], rest[22]]) & 0x7 != 0 {
            return false;
        }
        let len = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let Ok(len) = usize::try_from(len) else {
            return true;
        };
        rest = rest.get(12 + len..).unwrap_or_default();
    }
    true
}

/// The record decoder with bounded decompression (`decompress::decode_all`), as the broker
/// uses it for ListOffsets by time and the `__consumer_offsets` replay, and the client for
/// fetched records: no panic, uncompressed records held within [`RECORDS_ALLOC_MULTIPLE`] of
/// the input (compressed ones within the decompression limit), and a decoded set re-encodes
/// to records that decode the same.
pub fn check_record_batches(data: &[u8]) {
    let mut buf = Bytes::copy_from_slice(data);
    let (sets, peak) = measure(|| decompress::decode_all(&mut buf, FUZZ_DECOMPRESS_LIMIT));
    check_records_bound("decompress::decode_all", data, peak, FUZZ_DECOMPRESS_LIMIT);
    if let Ok(sets) = sets {
        for set in sets {
            check_records_round_trip(&set);
        }
    }
}

/// Uncompressed: [`RECORDS_ALLOC_MULTIPLE`] times the input; compressed: within the limit.
fn check_records_bound(what: &str, data: &[u8], peak: usize, limit: usize) {
    if all_uncompressed(data) {
        assert_alloc_bound(what, peak, data.len(), RECORDS_ALLOC_MULTIPLE);
    } else {
        // Each batch (61 bytes at least) may decompress to `limit` bytes, held twice while
        // its buffer grows, and decode into records at the same multiple.
        let batches = data.len() / 61 + 1;
        let bound = limit
            .saturating_mul(batches)
            .saturating_mul(RECORDS_ALLOC_MULTIPLE + 2)
            .saturating_add(data.len().saturating_mul(RECORDS_ALLOC_MULTIPLE));
        assert_alloc_bound(what, peak, 1, bound);
    }
}

fn check_records_round_trip(set: &kafka_protocol::records::RecordSet) {
    use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions};
    if set.records.is_empty() || set.version != 2 {
        return;
    }
    let mut buf = BytesMut::new();
    // The encoder refuses some inputs the decoder accepts (e.g. offsets that do not follow
    // one another within a batch); only what it encodes must come back the same.
    if RecordBatchEncoder::encode(
        &mut buf,
        &set.records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .is_err()
    {
        return;
    }
    let mut bytes = buf.freeze();
    match decompress::decode_all(&mut bytes, usize::MAX) {
        Ok(back) => {
            let records: Vec<_> = back.into_iter().flat_map(|s| s.records).collect();
            assert_eq!(records.len(), set.records.len());
            for (a, b) in records.iter().zip(&set.records) {
                assert_eq!(
                    (a.offset, a.timestamp, &a.key, &a.value, &a.headers),
                    (b.offset, b.timestamp, &b.key, &b.value, &b.headers),
                    "records differ after encode-decode"
                );
            }
        }
        Err(e) => panic!("records encoded by RecordBatchEncoder do not decode: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// `__consumer_offsets` records

/// The `__consumer_offsets` key and value decoders (`commit_log::decode_key`,
/// `decode_value`), on `data` split at the length in its first byte, and the whole input as
/// the batches a replay reads: no panic (a panic there is a crash loop at start), and whatever
/// decodes encodes to something that decodes the same.
pub fn check_offsets_record(data: &[u8]) {
    let Some((&split_at, rest)) = data.split_first() else {
        return;
    };
    let split_at = usize::from(split_at).min(rest.len());
    let key = Bytes::copy_from_slice(&rest[..split_at]);
    let value = Bytes::copy_from_slice(&rest[split_at..]);
    check_offsets_key_value(key, value);
    check_offsets_key_value(Bytes::copy_from_slice(data), Bytes::copy_from_slice(data));

    // As `commit_log::read_commits` reads a stored batch: every batch, every record.
    let mut payload = Bytes::copy_from_slice(data);
    let (sets, peak) = measure(|| decompress::decode_all(&mut payload, FUZZ_DECOMPRESS_LIMIT));
    check_records_bound("offsets replay", data, peak, FUZZ_DECOMPRESS_LIMIT);
    if let Ok(sets) = sets {
        for r in sets.into_iter().flat_map(|s| s.records) {
            if let Some(k) = r.key {
                check_offsets_key_value(k, r.value.unwrap_or_default());
            }
        }
    }
}

fn check_offsets_key_value(key: Bytes, value: Bytes) {
    let (k, peak) = measure(|| commit_log::decode_key(key.clone()));
    assert_alloc_bound("offsets key", peak, key.len(), 2);
    if let Some((group, topic, partition)) = k {
        let again = commit_log::encode_key(&group, &topic, partition);
        assert_eq!(
            commit_log::decode_key(again),
            Some((group, topic, partition)),
            "offsets key: decode-encode-decode differs"
        );
    }
    let (v, peak) = measure(|| commit_log::decode_value(value.clone()));
    assert_alloc_bound("offsets value", peak, value.len(), 2);
    if let Some(c) = v {
        let again = commit_log::encode_value(&c);
        let back: Option<Committed> = commit_log::decode_value(again);
        assert_eq!(
            back.as_ref(),
            Some(&c),
            "offsets value: decode-encode-decode differs"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The client's record decoder

/// Records built from fuzz bytes: each takes a flag byte, a key and a value length, then that
/// many bytes, and a timestamp step; at most 32 records.
fn records_from(data: &[u8]) -> Vec<OutRecord> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut ts = 1_700_000_000_000i64;
    while out.len() < 32 {
        let [flags, key_len, value_len, tail @ ..] = rest else {
            break;
        };
        let (key_len, value_len) = (usize::from(*key_len % 64), usize::from(*value_len));
        if tail.len() < key_len + value_len {
            break;
        }
        let key = (flags & 1 == 0).then(|| Bytes::copy_from_slice(&tail[..key_len]));
        let value =
            (flags & 2 == 0).then(|| Bytes::copy_from_slice(&tail[key_len..key_len + value_len]));
        let headers = if flags & 4 != 0 {
            vec![(
                format!("h{flags}"),
                (flags & 8 == 0).then(|| Bytes::from_static(b"x")),
            )]
        } else {
            Vec::new()
        };
        ts += i64::from(flags >> 4) - 4;
        out.push(OutRecord {
            key,
            value,
            headers,
            timestamp_ms: ts,
        });
        rest = &tail[key_len + value_len..];
    }
    out
}

/// The client's decoder of fetched records (`spate_client::decode_records`,
/// `next_offset_after`) on arbitrary bytes, and the round trip through the client's own
/// encoder (`spate_client::encode_batch`, plain or compressed): the records come back as written.
pub fn check_client_records(data: &[u8]) {
    let records = Bytes::copy_from_slice(data);
    let (decoded, peak) = measure(|| client::decode_records(0, &records, 0));
    check_records_bound("decode_records", data, peak, client::MAX_DECOMPRESSED_BATCH);
    if let Ok(consumed) = decoded {
        assert!(consumed.iter().all(|c| c.offset >= 0));
    }
    let _ = client::next_offset_after(data);

    let Some((&codec, rest)) = data.split_first() else {
        return;
    };
    let out = records_from(rest);
    if out.is_empty() {
        return;
    }
    let compression = match codec % 8 {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    };
    let batch = match client::encode_batch(&out, compression) {
        Ok(b) => b,
        Err(e) => panic!("the client cannot encode {} records: {e}", out.len()),
    };
    if compression == Compression::None {
        // The client's one-pass plain encoder writes what kafka-protocol's encoder writes.
        match client::encode_general(&out, Compression::None) {
            Ok(general) => assert_eq!(batch, general, "plain and general encoders differ"),
            Err(e) => panic!("the general encoder refuses what the plain one encodes: {e}"),
        }
    }
    let back = match client::decode_records(3, &batch, 0) {
        Ok(b) => b,
        Err(e) => panic!("the client cannot decode its own {compression:?} batch: {e}"),
    };
    assert_eq!(back.len(), out.len());
    for (i, (c, r)) in back.iter().zip(&out).enumerate() {
        assert_eq!(c.partition, 3);
        assert_eq!(c.offset, i as i64);
        assert_eq!(
            (c.timestamp_ms, &c.key, &c.value, &c.headers),
            (r.timestamp_ms, &r.key, &r.value, &r.headers),
            "record {i} differs after the client's encode and decode ({compression:?})"
        );
    }
    assert_eq!(client::next_offset_after(&batch), Some(out.len() as i64));
}

// ---------------------------------------------------------------------------------------------
// Decompression

/// The codec a fuzz input's selector byte picks.
pub fn codec_of(b: u8) -> Compression {
    match b % 5 {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Kafka's compressed form of `data` for `codec`, made with the codecs' own encoders
/// (snappy in Kafka's xerial framing, as Java clients write it).
pub fn compress(codec: Compression, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match codec {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let ok = e.write_all(data).is_ok();
            match e.finish() {
                Ok(v) if ok => v,
                _ => panic!("gzip into a Vec failed"),
            }
        }
        Compression::Snappy => {
            let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
            for chunk in data.chunks(32 * 1024) {
                let block = match snap::raw::Encoder::new().compress_vec(chunk) {
                    Ok(b) => b,
                    Err(e) => panic!("snappy failed: {e}"),
                };
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        Compression::Lz4 => {
            let mut e = match lz4::EncoderBuilder::new().build(Vec::new()) {
                Ok(e) => e,
                Err(e) => panic!("lz4 encoder: {e}"),
            };
            let ok = e.write_all(data).is_ok();
            let (v, r) = e.finish();
            assert!(ok && r.is_ok(), "lz4 into a Vec failed");
            v
        }
        Compression::Zstd => match zstd::encode_all(data, 1) {
            Ok(v) => v,
            Err(e) => panic!("zstd failed: {e}"),
        },
    }
}

/// The bounded decompressor (`decompress::decompress`): `data[0]` picks the codec, `data[1]`
/// the limit (up to 1 MiB), the rest is the compressed input. It never returns more than the
/// limit, never holds more than twice the limit plus a bounded multiple of its input and the
/// codec's state, and `TooLarge` is the only way it refuses a valid stream. Then the rest
/// compressed with that codec's encoder decompresses back to itself with a limit of exactly
/// its size, and is refused as `TooLarge` with one byte less.
pub fn check_decompress(data: &[u8]) {
    let [codec, limit, input @ ..] = data else {
        return;
    };
    let codec = codec_of(*codec);
    let limit = 1usize << (limit % 21);
    let (out, peak) = measure(|| decompress::decompress(codec, input, limit));
    // Twice the limit (a growing Vec), the input (a copy for None), and the codec's state
    // (flate2's inflater holds about 40 KiB plus its 32 KiB window).
    assert_alloc_bound(
        "decompress",
        peak,
        1,
        2 * limit + 4 * input.len() + 192 * 1024,
    );
    if let Ok(out) = &out {
        assert!(
            out.len() <= limit,
            "{codec:?}: {} bytes out, limit {limit}",
            out.len()
        );
    }

    let compressed = compress(codec, input);
    match decompress::decompress(codec, &compressed, input.len()) {
        Ok(back) => assert_eq!(&back[..], input, "{codec:?}: round trip differs"),
        Err(e) => panic!(
            "{codec:?}: {} bytes compressed do not decompress: {e}",
            input.len()
        ),
    }
    if !input.is_empty() {
        match decompress::decompress(codec, &compressed, input.len() - 1) {
            Err(DecompressError::TooLarge { .. }) => {}
            other => panic!(
                "{codec:?}: {} bytes with a limit one less: {other:?}",
                input.len()
            ),
        }
    }
}

/// The atomic-file envelope and the payloads it carries: the engine's (the recovery
/// checkpoint, `spate_engine::fuzzing::check_atomic_file`) and this crate's (the topic
/// metadata in both formats, `crate::metadata`: the archives bare, and the versioned decode
/// the broker runs at start, which must agree with them), each decoded from inside a valid
/// envelope and from the raw input.
pub fn check_atomic_file(data: &[u8]) {
    spate_engine::fuzzing::check_atomic_file_with(data, |payload| {
        spate_engine::check_archive!(
            spate_engine::log::checkpoint::RecoveryCheckpoint,
            "checkpoint",
            payload
        );
        spate_engine::check_archive!(crate::metadata::v1::Metadata, "metadata v1", payload);
        spate_engine::check_archive!(crate::metadata::Metadata, "metadata", payload);
        let (decoded, peak) = measure(|| crate::metadata::decode(payload));
        assert_alloc_bound(
            "metadata::decode",
            peak,
            payload.len(),
            spate_engine::fuzzing::ATOMIC_FILE_ALLOC_MULTIPLE,
        );
        if let Ok(m) = decoded {
            // What loads is saved in the current format and loads back the same.
            let again = match crate::metadata::encode(&m) {
                Ok(b) => b,
                Err(e) => panic!("metadata: a decoded value does not encode: {e}"),
            };
            assert_eq!(
                crate::metadata::decode(&again).as_ref(),
                Ok(&m),
                "metadata: decode-encode-decode differs"
            );
        }
    });
}
