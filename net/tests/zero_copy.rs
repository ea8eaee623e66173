//! Produce copies record bytes once in user space (into the aligned write buffer, plus the
//! rewrite of partial tail blocks); Fetch copies none between the engine and the socket.

#[path = "../benches/zero_copy_measure.rs"]
mod measure;

#[test]
fn record_bytes_are_copied_once_on_produce_and_never_on_fetch() {
    let f = measure::measure(200, 16, 1024);
    println!("{f:?}");
    // One copy of every record byte into the write buffer...
    let once = f.produce_copies_per_byte - f.produce_tail_copies_per_byte;
    assert!((once - 1.0).abs() < 1e-9, "{f:?}");
    // ...plus the rewrite of partial tail blocks (under 4 KiB twice per write).
    assert!(f.produce_tail_copies_per_byte < 0.5, "{f:?}");
    assert_eq!(f.fetch_cache_copies_per_byte, 0.0, "{f:?}");
    assert_eq!(f.fetch_disk_copies_per_byte, 0.0, "{f:?}");
    assert!(
        f.disk_read_copies_per_byte >= 1.0,
        "the disk read copies out of the DMA buffer: {f:?}"
    );
    assert!(f.record_bytes_fetched >= f.record_bytes_produced);
}
