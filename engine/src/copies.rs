//! Bytes the engine copies in user space, counted per thread (that is, per shard), so a
//! benchmark can show where record bytes are copied and where they are not.

use std::cell::Cell;

/// Running totals for the current thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyCounts {
    /// New bytes (frame headers and payloads) copied into aligned write buffers.
    pub appended_bytes: u64,
    /// Bytes of partial tail blocks copied again, to rewrite a block that was not full.
    pub tail_bytes: u64,
    /// Bytes copied out of DMA read buffers into shareable `Bytes` (disk reads).
    pub read_bytes: u64,
}

thread_local! {
    static COUNTS: Cell<CopyCounts> = const { Cell::new(CopyCounts { appended_bytes: 0, tail_bytes: 0, read_bytes: 0 }) };
}

/// This thread's totals so far.
pub fn copy_counts() -> CopyCounts {
    COUNTS.with(Cell::get)
}

pub(crate) fn add(f: impl FnOnce(&mut CopyCounts)) {
    COUNTS.with(|c| {
        let mut v = c.get();
        f(&mut v);
        c.set(v);
    });
}
