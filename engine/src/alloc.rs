//! The client's memory allocator settings.
//!
//! Producer threads build a request of up to a megabyte, send it and free it, many times a
//! second. glibc gives each thread its own arena and hands freed space at the top of it back
//! to the kernel, so every request was built in freshly mapped pages: page faults were a
//! sixth of the client's CPU at 800 MB/s. Raising the trim and mmap thresholds keeps that
//! memory for the next request. Only the load generator does this (the broker runs in its
//! own process, with glibc's defaults, which measured better for its latency than mimalloc).

/// Keeps freed memory in the process for reuse.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before the client threads
    // start allocating.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
