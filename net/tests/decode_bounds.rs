//! Decoding a request cannot be made to allocate more than a small multiple of the bytes a
//! client sent. Every (API, version) Spate serves is decoded with a huge count or length
//! written at every position of its default body (see `spate_net::hostile`), under an
//! allocator that counts the bytes live on this thread; the peak during a decode must stay
//! within `MULTIPLE` times the frame's length plus `SLACK`. Before kafka-protocol was patched,
//! the first of these (a Metadata v1 topic count of 2 147 483 647 in 19 bytes) asked for
//! 154 GB and aborted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind};
use kafka_protocol::records::Compression;
use spate_client::{encode_batch, OutRecord};
use spate_net::codec::{decode_header, RequestPrefix};
use spate_net::hostile;

/// Counts the bytes allocated and not yet freed by this thread, and their peak.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Far above anything a decode of these small inputs may need; refused (so the test fails
/// with an allocation error) rather than given.
const REFUSE_ABOVE: usize = 1 << 30;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSE_ABOVE {
            return std::ptr::null_mut();
        }
        let p = System.alloc(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        count(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        if new > REFUSE_ABOVE {
            return std::ptr::null_mut();
        }
        let q = System.realloc(p, layout, new);
        if !q.is_null() {
            count(new as isize - layout.size() as isize);
        }
        q
    }
}

fn count(delta: isize) {
    // try_with: the thread-locals may be gone while a thread exits.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most bytes live at once while `f` runs, above what was live when it started.
fn peak_during<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get);
    ((peak - base).max(0) as usize, r)
}

/// Decoded requests hold the client's strings and bytes as slices of the frame, but every
/// element of an array is a struct of its own (up to a few hundred bytes) that may take only
/// a few bytes on the wire; and a decode has a fixed cost of its own (the header's client id,
/// the request struct, the error).
const MULTIPLE: usize = 64;
const SLACK: usize = 8 << 10;

/// How the broker decodes a frame: prefix, header, body.
fn decode_frame(frame: Bytes) -> Result<RequestKind, String> {
    let mut frame = frame.slice(4..);
    let prefix = RequestPrefix::parse(&frame).ok_or("short")?;
    let api = ApiKey::try_from(prefix.api_key).map_err(|_| "api key")?;
    let ctx = decode_header(api, prefix.api_version, &mut frame).map_err(|e| e.to_string())?;
    RequestKind::decode(api, &mut frame, ctx.version).map_err(|e| format!("{e:#}"))
}

#[test]
fn no_request_decodes_into_more_than_a_small_multiple_of_its_bytes() {
    let mut cases = 0;
    let mut refused = 0;
    let mut worst = (0.0f64, String::new());
    for (api, version) in hostile::served() {
        let body = hostile::default_body(api, version).expect("a default body");
        for bad in hostile::overclaims(&body) {
            let frame = hostile::frame(api, version, 1, &bad);
            let len = frame.len();
            let (peak, result) = peak_during(|| decode_frame(frame));
            cases += 1;
            if result.is_err() {
                refused += 1;
            }
            assert!(
                peak <= MULTIPLE * len + SLACK,
                "{api:?} v{version}: decoding {len} bytes allocated {peak} bytes at peak ({:?})",
                result.map(|_| ())
            );
            let ratio = peak as f64 / len as f64;
            if ratio > worst.0 {
                worst = (
                    ratio,
                    format!("{api:?} v{version}, {len} bytes: {peak} bytes"),
                );
            }
        }
    }
    println!(
        "{cases} hostile frames decoded, {refused} refused; the largest peak per byte: {:.0}x ({})",
        worst.0, worst.1
    );
    // The sweep did reach the decoder's refusals, not only harmless rewrites.
    assert!(refused > cases / 2, "{refused} of {cases}");
}

#[test]
fn the_19_byte_metadata_request_is_refused_without_allocating_for_its_claim() {
    let frame = Bytes::from_static(&[
        0, 0, 0, 0x0f, 0, 3, 0, 1, 0, 0, 0, 2, 0, 1, 0x78, 0x7f, 0xff, 0xff, 0xff,
    ]);
    let (peak, result) = peak_during(|| decode_frame(frame));
    let err = result.map(|_| ()).unwrap_err();
    assert!(
        err.contains("2147483647 elements in 0 remaining bytes"),
        "{err}"
    );
    assert!(peak < 4096, "{peak} bytes");
}

/// One uncompressed batch of a record "v" per timestamp, as the client encodes it.
fn one_batch(timestamps: &[i64]) -> Bytes {
    let records: Vec<OutRecord> = timestamps
        .iter()
        .map(|&timestamp_ms| OutRecord {
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Vec::new(),
            timestamp_ms,
        })
        .collect();
    encode_batch(&records, Compression::None).unwrap()
}

#[test]
fn record_and_header_counts_larger_than_the_bytes_left_are_refused() {
    let good = one_batch(&[1]);
    // Record count (bytes 57..61) rewritten to 2^31 - 1, the CRC32C (17..21, over 21..)
    // recomputed so that only the count is wrong.
    let with_crc = |mut v: Vec<u8>| {
        let crc = crc32c::crc32c(&v[21..]);
        v[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(v)
    };
    let mut v = good.to_vec();
    v[57..61].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    let (peak, r) =
        peak_during(|| spate_client::decompress::decode_batch(&mut with_crc(v), 1 << 20));
    let err = format!("{:#}", r.unwrap_err());
    assert!(err.contains("claims 2147483647 records"), "{err}");
    assert!(peak < 64 << 10, "{peak} bytes");
    // The record's header count (its last byte, a varint 0) rewritten to a varint of
    // 2^31 - 1, four bytes longer: the record's length (byte 61, a one-byte zigzag varint)
    // and the batch's grow by four.
    let mut v = good.to_vec();
    let last = v.len() - 1;
    assert_eq!(v[last], 0);
    v.splice(last.., [0xfe, 0xff, 0xff, 0xff, 0x0f]);
    assert!(v[61] < 120 && v[61] % 2 == 0);
    v[61] += 8;
    let len = (v.len() - 12) as i32;
    v[8..12].copy_from_slice(&len.to_be_bytes());
    let (peak, r) =
        peak_during(|| spate_client::decompress::decode_batch(&mut with_crc(v), 1 << 20));
    let err = format!("{:#}", r.unwrap_err());
    assert!(err.contains("headers in"), "{err}");
    assert!(peak < 64 << 10, "{peak} bytes");
}

#[test]
fn record_deltas_past_the_ends_of_i64_wrap_instead_of_panicking() {
    let buf = one_batch(&[1, 2]);
    // Base offset (0..8) and first timestamp (27..35) at i64::MAX: the second record's
    // deltas of 1 go past it. The CRC32C (17..21, over 21..) is recomputed.
    let mut v = buf.to_vec();
    v[..8].copy_from_slice(&i64::MAX.to_be_bytes());
    v[27..35].copy_from_slice(&i64::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&v[21..]);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    let set = spate_client::decompress::decode_batch(&mut Bytes::from(v), 1 << 20).unwrap();
    assert_eq!(set.records[1].offset, i64::MIN);
    assert_eq!(set.records[1].timestamp, i64::MIN);
}
