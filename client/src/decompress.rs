//! Decompression with a bound: a record batch's records, decompressed, may not exceed a
//! limit, so a small compressed batch (a zip bomb, or a snappy block whose header claims 4 GB)
//! cannot make this process allocate more than the limit. kafka-protocol's own decompressors
//! read to the end (gzip, lz4, zstd) or allocate what the snappy header claims; every decode of
//! records in Spate (the broker's ListOffsets by time and `__consumer_offsets` replay in
//! spate-net, this crate's consumer) goes through [`decode_batch`] or [`decode_all`] here
//! instead. It lives in the client because both need it and the client must build without the
//! broker; it holds no client state, only the codecs and the bound.
//!
//! The codecs themselves are the crates kafka-protocol uses (flate2, lz4, snap, zstd); what is
//! written here is the bound, and the xerial framing of Kafka's snappy (a 16-byte magic, then
//! blocks each prefixed with its big-endian u32 length), which snap does not know.

use std::io::Read;

use bytes::{Buf, Bytes};
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordSet};

/// Why a batch did not decompress.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("{codec:?} records expand beyond the limit of {limit} bytes")]
    TooLarge { codec: Compression, limit: usize },
    #[error("{codec:?} records do not decompress: {reason}")]
    Invalid { codec: Compression, reason: String },
}

/// The `magic` that starts Kafka's (xerial) framed snappy.
const SNAPPY_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// `input` decompressed with `codec`, or an error if it is invalid or would exceed `limit`
/// bytes. Memory used stays within about twice `limit` (a growing buffer) plus the codec's own
/// state.
pub fn decompress(
    codec: Compression,
    input: &[u8],
    limit: usize,
) -> Result<Bytes, DecompressError> {
    let invalid = |e: &dyn std::fmt::Display| DecompressError::Invalid {
        codec,
        reason: e.to_string(),
    };
    match codec {
        Compression::None => {
            if input.len() > limit {
                return Err(DecompressError::TooLarge { codec, limit });
            }
            Ok(Bytes::copy_from_slice(input))
        }
        Compression::Gzip => read_bounded(codec, flate2::read::GzDecoder::new(input), limit),
        Compression::Lz4 => {
            let decoder = lz4::Decoder::new(input).map_err(|e| invalid(&e))?;
            read_bounded(codec, decoder, limit)
        }
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(input).map_err(|e| invalid(&e))?;
            // zstd reserves the window a frame's header declares before it decodes a byte
            // (2^27 from 10 bytes): no more than the limit needs, or the 8 MiB that
            // producers' default levels use.
            decoder
                .window_log_max(zstd_window_log(limit))
                .map_err(|e| invalid(&e))?;
            read_bounded(codec, decoder, limit)
        }
        Compression::Snappy => snappy(input, limit),
    }
}

/// The largest zstd window (as a power of two) a decode within `limit` bytes allows: the
/// limit rounded up to a power of two, from 2^23 (what producers' default levels use) to 2^27
/// (zstd's own default ceiling).
fn zstd_window_log(limit: usize) -> u32 {
    let log = usize::BITS - limit.saturating_sub(1).leading_zeros();
    log.clamp(23, 27)
}

/// Reads `reader` to its end, failing once more than `limit` bytes came out.
fn read_bounded(
    codec: Compression,
    reader: impl Read,
    limit: usize,
) -> Result<Bytes, DecompressError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::Invalid {
            codec,
            reason: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { codec, limit });
    }
    Ok(out.into())
}

/// Kafka's snappy: xerial-framed blocks, or (as Kafka's Java client also accepts) one raw
/// snappy block. Each block's claimed length is checked against what is left of `limit`
/// before anything is allocated for it.
fn snappy(input: &[u8], limit: usize) -> Result<Bytes, DecompressError> {
    let codec = Compression::Snappy;
    let invalid = |e: &dyn std::fmt::Display| DecompressError::Invalid {
        codec,
        reason: e.to_string(),
    };
    let mut decoder = snap::raw::Decoder::new();
    let mut block = |out: &mut Vec<u8>, compressed: &[u8]| -> Result<(), DecompressError> {
        let len = snap::raw::decompress_len(compressed).map_err(|e| invalid(&e))?;
        let start = out.len();
        if len > limit - start {
            return Err(DecompressError::TooLarge { codec, limit });
        }
        out.resize(start + len, 0);
        let n = decoder
            .decompress(compressed, &mut out[start..])
            .map_err(|e| invalid(&e))?;
        out.truncate(start + n);
        Ok(())
    };
    let mut out = Vec::new();
    if input.len() < SNAPPY_MAGIC.len() || &input[..SNAPPY_MAGIC.len()] != SNAPPY_MAGIC {
        if input.is_empty() {
            return Err(invalid(&"no bytes"));
        }
        block(&mut out, input)?;
        return Ok(out.into());
    }
    let mut rest = &input[SNAPPY_MAGIC.len()..];
    while rest.has_remaining() {
        if rest.len() < 4 {
            return Err(invalid(&"a block length is cut short"));
        }
        let len = rest.get_u32() as usize;
        if len > rest.len() {
            return Err(invalid(&format!(
                "a block of {len} bytes in {} bytes",
                rest.len()
            )));
        }
        block(&mut out, &rest[..len])?;
        rest.advance(len);
    }
    Ok(out.into())
}

/// Decodes one record batch from the start of `buf` (advancing it), its records decompressed
/// within `limit` bytes.
pub fn decode_batch(buf: &mut Bytes, limit: usize) -> anyhow::Result<RecordSet> {
    RecordBatchDecoder::decode_with_custom_compression(
        buf,
        Some(
            |records: &mut Bytes, codec: Compression| -> anyhow::Result<Bytes> {
                if codec == Compression::None {
                    // Uncompressed records are decoded where they lie, as kafka-protocol's
                    // own path does, not copied first. Their size is the batch's, bounded by
                    // what arrived.
                    if records.len() > limit {
                        return Err(DecompressError::TooLarge { codec, limit }.into());
                    }
                    return Ok(records.split_to(records.len()));
                }
                Ok(decompress(codec, records, limit)?)
            },
        ),
    )
}

/// Decodes every record batch in `buf`, as [`decode_batch`].
pub fn decode_all(buf: &mut Bytes, limit: usize) -> anyhow::Result<Vec<RecordSet>> {
    let mut sets = Vec::new();
    while buf.has_remaining() {
        sets.push(decode_batch(buf, limit)?);
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_batch, OutRecord};

    fn batch(codec: Compression, values: &[Vec<u8>]) -> Bytes {
        let records: Vec<OutRecord> = values
            .iter()
            .map(|v| OutRecord {
                key: None,
                value: Some(Bytes::from(v.clone())),
                headers: Vec::new(),
                timestamp_ms: 1,
            })
            .collect();
        encode_batch(&records, codec).unwrap()
    }

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_decodes_within_the_limit() {
        let values = vec![vec![7u8; 3000], b"hello".to_vec()];
        for codec in CODECS {
            let mut b = batch(codec, &values);
            let set = decode_batch(&mut b, 1 << 20).unwrap();
            assert_eq!(set.records.len(), 2, "{codec:?}");
            assert_eq!(set.records[0].value.as_deref(), Some(&values[0][..]));
            assert_eq!(set.records[1].value.as_deref(), Some(&b"hello"[..]));
            assert!(b.is_empty());
        }
    }

    #[test]
    fn a_batch_that_expands_past_the_limit_is_refused_for_every_codec() {
        // 4 MiB of zeros compress to a few KiB; a 1 MiB limit refuses them.
        let values = vec![vec![0u8; 4 << 20]];
        for codec in CODECS {
            let mut b = batch(codec, &values);
            let compressed = b.len();
            let e = decode_batch(&mut b, 1 << 20).unwrap_err().to_string();
            assert!(
                e.contains("beyond the limit"),
                "{codec:?} ({compressed} bytes): {e}"
            );
        }
    }

    #[test]
    fn a_snappy_header_claiming_gigabytes_is_refused_before_allocating() {
        // A raw snappy block whose varint length says 4 GiB - 1, followed by nothing.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f];
        let e = decompress(Compression::Snappy, &claim, 64 << 20).unwrap_err();
        assert!(matches!(e, DecompressError::TooLarge { .. }), "{e}");
        // The same inside xerial framing.
        let mut framed = SNAPPY_MAGIC.to_vec();
        framed.extend_from_slice(&(claim.len() as u32).to_be_bytes());
        framed.extend_from_slice(&claim);
        let e = decompress(Compression::Snappy, &framed, 64 << 20).unwrap_err();
        assert!(matches!(e, DecompressError::TooLarge { .. }), "{e}");
        // Blocks add up: two blocks of 600 KiB exceed a 1 MiB limit together.
        let block = snap::raw::Encoder::new()
            .compress_vec(&vec![1u8; 600 << 10])
            .unwrap();
        let mut two = SNAPPY_MAGIC.to_vec();
        for _ in 0..2 {
            two.extend_from_slice(&(block.len() as u32).to_be_bytes());
            two.extend_from_slice(&block);
        }
        assert_eq!(
            decompress(Compression::Snappy, &two, 2 << 20)
                .unwrap()
                .len(),
            1200 << 10
        );
        assert!(matches!(
            decompress(Compression::Snappy, &two, 1 << 20),
            Err(DecompressError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_zstd_window_beyond_the_limit_is_refused() {
        assert_eq!(zstd_window_log(1 << 20), 23);
        assert_eq!(zstd_window_log((16 << 20) + 1), 25);
        assert_eq!(zstd_window_log(100 << 20), 27);
        assert_eq!(zstd_window_log(usize::MAX), 27);
        // The fuzzer's input: a 10-byte frame declaring a 2^27-byte window.
        let input = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/regressions/decompress/zstd-window-128MiB"
        ))
        .unwrap();
        // Byte 0 is the codec, byte 1 the limit as a power of two (the target's layout).
        let frame = &input[2..];
        let e = decompress(Compression::Zstd, frame, 1 << 20).unwrap_err();
        assert!(matches!(e, DecompressError::Invalid { .. }), "{e}");
        // A frame made with a 16 MiB window decodes when the limit allows it.
        let data = vec![3u8; 20 << 20];
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        enc.window_log(24).unwrap();
        std::io::Write::write_all(&mut enc, &data).unwrap();
        let compressed = enc.finish().unwrap();
        assert_eq!(
            decompress(Compression::Zstd, &compressed, 32 << 20)
                .unwrap()
                .len(),
            data.len()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in CODECS {
            for input in [&b""[..], b"\x00", b"garbage that is not compressed at all"] {
                let _ = decompress(codec, input, 1 << 20);
            }
        }
    }
}
