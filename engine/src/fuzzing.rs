//! What the fuzz targets (`fuzz/`) and their corpus replay (`engine/tests/fuzz_corpus.rs`)
//! check, kept here so both run the same assertions. Not part of the engine's API: nothing in
//! the broker calls it.
//!
//! Each `check_*` function takes arbitrary bytes and panics if a decoder panics, accepts
//! something it should refuse, disagrees with a plain reference, or allocates more than a
//! bounded multiple of its input while decoding. Allocation is measured by [`CountingAlloc`],
//! which the calling binary must install as its global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use crate::atomic_file;
use crate::frame::{decode_frame, FrameError, FrameHeader, FrameMeta, FRAME_HEADER_LEN};
use crate::io::{IoBuffer, IoFuture, StorageFile};
use crate::log::checkpoint::RecoveryCheckpoint;
use crate::log::scan::{scan_frames, ScanOutcome, SCAN_CHUNK_BYTES};

// ---------------------------------------------------------------------------------------------
// Allocation accounting

thread_local! {
    /// Bytes this thread holds (allocated minus freed), and the most it held since the last
    /// [`measure`] began. Const-initialised `Cell`s: no lazy initialisation and no destructor,
    /// so the allocator may touch them at any time, thread teardown included.
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting what each thread holds. Install it in the binary that runs
/// the checks: `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
pub struct CountingAlloc;

fn note(delta: isize) {
    let _ = LIVE_BYTES.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK_BYTES.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are thread-local cells
// that never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            INSTALLED.store(true, Ordering::Relaxed);
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            INSTALLED.store(true, Ordering::Relaxed);
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Both blocks exist for a moment inside realloc; count the larger.
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Whether [`CountingAlloc`] is the global allocator of this process.
pub fn counting_installed() -> bool {
    let probe = std::hint::black_box(vec![0u8; 64]);
    drop(probe);
    INSTALLED.load(Ordering::Relaxed)
}

/// Runs `f` and returns its result with the most bytes the thread held at once during it,
/// beyond what it held before.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    assert!(
        counting_installed(),
        "the fuzz checks need CountingAlloc as the global allocator"
    );
    let start = LIVE_BYTES.with(Cell::get);
    PEAK_BYTES.with(|p| p.set(start));
    let r = f();
    let peak = PEAK_BYTES.with(Cell::get);
    (r, (peak - start).max(0) as usize)
}

/// Fixed allowance on top of the per-byte multiple: a decoder's own small structures (one
/// request header, an error message with a path, an empty map) cost the same for any input.
pub const ALLOC_FIXED_BYTES: usize = 64 * 1024;

/// Panics if `peak` exceeds `multiple` times `input_len` plus [`ALLOC_FIXED_BYTES`].
pub fn assert_alloc_bound(what: &str, peak: usize, input_len: usize, multiple: usize) {
    let bound = input_len
        .saturating_mul(multiple)
        .saturating_add(ALLOC_FIXED_BYTES);
    assert!(
        peak <= bound,
        "{what}: decoding {input_len} bytes held {peak} bytes at once \
         (bound: {multiple} x input + {ALLOC_FIXED_BYTES})"
    );
}

// ---------------------------------------------------------------------------------------------
// Frames and the recovery scan

/// The frame decoders copy nothing: a header is a fixed struct, a payload a slice.
const FRAME_ALLOC_MULTIPLE: usize = 1;

/// A read-only in-memory file for the scan. Reads return slices of the image, as the real
/// storage returns slices of one DMA read.
struct ImageFile {
    path: PathBuf,
    image: Bytes,
}

impl StorageFile for ImageFile {
    fn path(&self) -> &Path {
        &self.path
    }
    fn alloc_buffer(&self, _len: usize) -> IoBuffer {
        panic!("the scan only reads; it asked for a write buffer")
    }
    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Bytes> {
        let start = (pos as usize).min(self.image.len());
        let end = start.saturating_add(len).min(self.image.len());
        let b = self.image.slice(start..end);
        Box::pin(async move { Ok(b) })
    }
    fn write_at(&self, _buf: IoBuffer, _pos: u64) -> IoFuture<'_, usize> {
        Box::pin(async { Err(io::Error::other("read-only image")) })
    }
    fn fdatasync(&self) -> IoFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn sync_filesystem(&self) -> IoFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn allocate(&self, _size: u64) -> IoFuture<'_, ()> {
        Box::pin(async { Err(io::Error::other("read-only image")) })
    }
    fn truncate(&self, _size: u64) -> IoFuture<'_, ()> {
        Box::pin(async { Err(io::Error::other("read-only image")) })
    }
    fn size(&self) -> IoFuture<'_, u64> {
        let n = self.image.len() as u64;
        Box::pin(async move { Ok(n) })
    }
}

/// What a scan should find, computed by walking the whole image at once with
/// [`decode_frame`], without chunks.
fn reference_scan(image: &[u8], expected_offset: u64) -> (ScanOutcome, Vec<u64>) {
    let mut out = ScanOutcome {
        end_position: 0,
        next_offset: expected_offset,
        max_timestamp_ms: i64::MIN,
        frames: 0,
        stop: None,
    };
    let mut positions = Vec::new();
    let mut at = 0usize;
    while at < image.len() {
        let rest = &image[at..];
        if rest.len() < FRAME_HEADER_LEN {
            if rest.iter().any(|b| *b != 0) {
                out.stop = Some((
                    at as u64,
                    FrameError::Short {
                        needed: FRAME_HEADER_LEN,
                        available: rest.len(),
                    },
                ));
            }
            break;
        }
        let header = match FrameHeader::decode(rest) {
            Ok(h) => h,
            Err(FrameError::Zero) => break,
            Err(e) => {
                out.stop = Some((at as u64, e));
                break;
            }
        };
        if header.base_offset != out.next_offset {
            out.stop = Some((
                at as u64,
                FrameError::Invalid("offset does not follow the previous frame"),
            ));
            break;
        }
        let frame_len = header.frame_len() as usize;
        if rest.len() < frame_len {
            out.stop = Some((
                at as u64,
                FrameError::Short {
                    needed: frame_len,
                    available: rest.len(),
                },
            ));
            break;
        }
        if let Err(e) = header.check_payload(&rest[FRAME_HEADER_LEN..frame_len]) {
            out.stop = Some((at as u64, e));
            break;
        }
        positions.push(at as u64);
        out.frames += 1;
        out.next_offset = header.next_offset();
        out.max_timestamp_ms = out.max_timestamp_ms.max(header.max_timestamp_ms);
        at += frame_len;
        out.end_position = at as u64;
    }
    (out, positions)
}

/// A valid frame of `len` bytes (at least a header) holding one record at `base_offset`.
fn filler_frame(len: usize, base_offset: u64) -> Vec<u8> {
    let payload = vec![0u8; len.saturating_sub(FRAME_HEADER_LEN)];
    let header = FrameHeader::new(
        FrameMeta {
            base_offset,
            record_count: 1,
            first_timestamp_ms: 0,
            max_timestamp_ms: 0,
            leader_epoch: 0,
        },
        &payload,
    );
    let mut out = header.encode().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Replays a fuzz target's committed inputs as a test: runs `check` on every file under
/// `fuzz_dir/corpus/<target>` and `fuzz_dir/regressions/<target>`, failing with the name of
/// the file whose check panicked, and failing if there are no files at all (a replay of
/// nothing would pass for nothing). Used by the corpus tests of spate-engine and spate-net.
pub fn replay_corpus(fuzz_dir: &Path, target: &str, check: fn(&[u8])) {
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let dir = fuzz_dir.join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e
                .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
                .path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    assert!(
        !files.is_empty(),
        "no corpus files for fuzz target {target} under {}",
        fuzz_dir.display()
    );
    files.sort();
    for path in &files {
        let data =
            std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{} fails the {target} check", path.display());
        }
    }
    eprintln!("{target}: {} inputs replayed", files.len());
}

/// The recovery scan (`log::scan::scan_frames`) over a segment image built from `data`.
///
/// `data[0]`, if odd, puts the image behind a valid frame that ends `data[1..3]` bytes
/// before the scan's first chunk boundary, so the image's frames straddle it (the path where
/// the scan re-reads a header or a whole frame). The scan must agree, frame for frame and
/// on where and why it stopped, with a plain walk of the whole image.
pub fn check_scan(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (image_start, body) = if mode & 1 == 1 && rest.len() >= 2 {
        let back = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        (SCAN_CHUNK_BYTES - FRAME_HEADER_LEN.max(back), &rest[2..])
    } else {
        (0, rest)
    };
    // The scan starts at the offset the image's first frame holds (as recovery starts at a
    // checkpoint that names it), or 0 when it holds no valid header.
    let first = FrameHeader::decode(body).map_or(0, |h| h.base_offset);
    let (expected, mut image) = if image_start == 0 {
        (first, Vec::new())
    } else {
        let base = first.saturating_sub(1);
        (base, filler_frame(image_start, base))
    };
    image.extend_from_slice(body);
    let (want, want_positions) = reference_scan(&image, expected);

    let image = Bytes::from(image);
    let file = ImageFile {
        path: PathBuf::from("fuzz.log"),
        image: image.clone(),
    };
    let mut positions = Vec::new();
    let (got, peak) = measure(|| {
        futures_lite::future::block_on(scan_frames(
            &file,
            0,
            expected,
            image.len() as u64,
            |h, pos| positions.push((*h, pos)),
        ))
    });
    let got = match got {
        Ok(g) => g,
        Err(e) => panic!("an in-memory scan failed with an I/O error: {e}"),
    };
    assert_eq!(
        (got.end_position, got.next_offset, got.frames),
        (want.end_position, want.next_offset, want.frames),
        "scan and reference disagree on where valid data ends"
    );
    assert_eq!(got.max_timestamp_ms, want.max_timestamp_ms);
    assert_eq!(
        got.stop, want.stop,
        "scan and reference disagree on the stop"
    );
    assert_eq!(
        positions.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
        want_positions
    );
    for (h, pos) in &positions {
        match decode_frame(&image[*pos as usize..]) {
            Ok((decoded, _)) => assert_eq!(decoded, *h),
            Err(e) => panic!("the scan passed a frame at {pos} that does not decode: {e}"),
        }
    }
    // The scan keeps one chunk (a slice of the image here) and the frame positions.
    assert_alloc_bound("scan_frames", peak, image.len(), FRAME_ALLOC_MULTIPLE + 1);
}

/// One frame: header decode, whole-frame decode, and the encode-decode round trip.
pub fn check_frame(data: &[u8]) {
    let (decoded, peak) = measure(|| decode_frame(data).map(|(h, p)| (h, p.len())));
    assert_alloc_bound("decode_frame", peak, data.len(), FRAME_ALLOC_MULTIPLE);
    let header = FrameHeader::decode(data);
    match (&decoded, &header) {
        (Ok((h, len)), Ok(h2)) => {
            assert_eq!(h, h2);
            assert_eq!(*len, h.payload_len as usize);
            assert!(h.record_count >= 1);
            assert_eq!(&h.encode()[..], &data[..FRAME_HEADER_LEN]);
        }
        (Ok(_), Err(e)) => panic!("decode_frame accepted a header that decode refuses: {e}"),
        (Err(_), _) => {}
    }
    if let Ok(h) = header {
        // Rebuilt from its fields, a valid header encodes to the same bytes.
        let meta = FrameMeta {
            base_offset: h.base_offset,
            record_count: h.record_count,
            first_timestamp_ms: h.first_timestamp_ms,
            max_timestamp_ms: h.max_timestamp_ms,
            leader_epoch: h.leader_epoch,
        };
        let payload = data.get(FRAME_HEADER_LEN..).unwrap_or_default();
        let rebuilt = FrameHeader::new(meta, payload);
        let mut frame = rebuilt.encode().to_vec();
        frame.extend_from_slice(payload);
        match decode_frame(&frame) {
            Ok((back, p)) => {
                assert_eq!(back, rebuilt);
                assert_eq!(p, payload);
            }
            Err(e) => panic!("a frame built by FrameHeader::new does not decode: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Atomic files and what they hold

/// rkyv's checked decode builds the native value from the archive, which is at least as
/// large: strings and vectors are copied out, each element about twice its archived size.
#[doc(hidden)]
pub const ATOMIC_FILE_ALLOC_MULTIPLE: usize = 4;
/// Magic, version, length and CRC32 before an atomic file's payload.
const ENVELOPE_HEADER_LEN: usize = 16;

/// rkyv's checked decode of one payload type, as the file's reader decodes it (copied into an
/// aligned buffer, then `from_bytes`), then encode-decode-compare. Exported for the crates
/// whose own types travel in atomic files (the network layer's topic metadata); the caller
/// needs `rkyv` as a dependency.
#[macro_export]
macro_rules! check_archive {
    ($ty:ty, $what:expr, $payload:expr) => {{
        let payload: &[u8] = $payload;
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(payload);
        let (decoded, peak) =
            $crate::fuzzing::measure(|| rkyv::from_bytes::<$ty, rkyv::rancor::Error>(&aligned));
        $crate::fuzzing::assert_alloc_bound(
            $what,
            peak,
            payload.len(),
            $crate::fuzzing::ATOMIC_FILE_ALLOC_MULTIPLE,
        );
        if let Ok(value) = decoded {
            let bytes = match rkyv::to_bytes::<rkyv::rancor::Error>(&value) {
                Ok(b) => b,
                Err(e) => panic!("{}: a decoded value does not encode: {e}", $what),
            };
            match rkyv::from_bytes::<$ty, rkyv::rancor::Error>(&bytes) {
                Ok(back) => assert_eq!(back, value, "{}: decode-encode-decode differs", $what),
                Err(e) => panic!("{}: an encoded value does not decode: {e}", $what),
            }
        }
    }};
}

/// The atomic-file envelope (`atomic_file::decode`) and the payload the engine puts in one
/// (the recovery checkpoint), decoded both from inside the envelope and from the raw input (a
/// fuzzer rarely gets a CRC32 right, so the payload decoders get it bare too).
pub fn check_atomic_file(data: &[u8]) {
    check_atomic_file_with(data, |payload| {
        check_archive!(RecoveryCheckpoint, "checkpoint", payload);
    });
}

/// The envelope checks of [`check_atomic_file`], with `check_payload` run on the payload
/// inside a valid envelope and on the raw input: a crate with payloads of its own (the
/// network layer's topic metadata) adds their checks here.
pub fn check_atomic_file_with(data: &[u8], check_payload: impl Fn(&[u8])) {
    let path = Path::new("fuzz/atomic.file");
    let (decoded, peak) = measure(|| atomic_file::decode(data, path).map(<[u8]>::len));
    assert_alloc_bound("atomic_file::decode", peak, data.len(), 1);
    if let Ok(len) = decoded {
        let payload = &data[ENVELOPE_HEADER_LEN..ENVELOPE_HEADER_LEN + len];
        let again = atomic_file::encode(payload);
        assert_eq!(
            &again[..],
            &data[..again.len()],
            "envelope re-encodes differently"
        );
        check_payload(payload);
    }
    let wrapped = atomic_file::encode(data);
    match atomic_file::decode(&wrapped, path) {
        Ok(p) => assert_eq!(p, data, "encode-decode differs"),
        Err(e) => {
            assert!(
                data.len() > atomic_file::MAX_PAYLOAD_BYTES,
                "an encoded payload does not decode: {e}"
            );
        }
    }
    check_payload(data);
}

// ---------------------------------------------------------------------------------------------
// The cold tier's manifest

/// A manifest's decode (`tier::Manifest::decode`, input from the tier or the local copy): no
/// panic, memory bounded by the input (the segment count is checked against the length before
/// anything is reserved), and a manifest that decodes encodes back to the same bytes.
pub fn check_manifest(data: &[u8]) {
    let (decoded, peak) = measure(|| crate::tier::Manifest::decode(data));
    // A map entry per 48-byte segment, a little larger than the segment's bytes.
    assert_alloc_bound("Manifest::decode", peak, data.len(), 4);
    if let Ok(m) = decoded {
        assert_eq!(m.encode(), data, "a decoded manifest encodes differently");
        // Segments may overlap (a new leader's), but base and next offsets both rise.
        let mut prev: Option<(u64, u64)> = None;
        for s in m.segments.values() {
            assert!(s.next_offset > s.base_offset);
            assert!(prev.is_none_or(|(b, n)| s.base_offset > b && s.next_offset > n));
            prev = Some((s.base_offset, s.next_offset));
        }
    }
}
