//! The process's memory allocator settings, for the broker and the load generator alike.
//!
//! Both allocate and free megabytes many times a second: the broker a DMA buffer and a
//! shareable copy for every disk read of a fetch (4 MiB each for a consumer that is behind),
//! the load generator a request of up to a megabyte per produce. glibc serves blocks above
//! its mmap threshold with fresh mappings and gives freed space at the top of an arena back to
//! the kernel, so each such buffer was built in newly faulted pages: page faults and munmap
//! were an eighth of a shard's CPU while it served a lagging consumer, and a sixth of the
//! client's CPU at 800 MB/s. Raising the trim and mmap thresholds keeps that memory for the
//! next buffer; the price is that the process keeps its peak heap (bounded by the batch
//! cache, read-ahead and in-flight limits). mimalloc was tried instead: in the broker it
//! raised the p99 publish latency from 9.5 to 27 ms.

/// Keeps freed memory in the process for reuse. Call before threads start allocating.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before the threads that
    // allocate start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
