//! How many times record bytes are copied in user space on the produce and fetch paths.
//! `cargo bench -p spate-net --bench zero_copy` (env SPATE_BENCH_MIB: data per case, default 64).

#[path = "zero_copy_measure.rs"]
mod measure;

fn main() {
    let mib: usize = std::env::var("SPATE_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    println!("| batch | produced MiB | fetched MiB | produce copies/byte (of which tail rewrites) | fetch from cache: copies/byte | fetch from disk: engine to socket copies/byte | disk read copies/byte |");
    println!("|---|---|---|---|---|---|---|");
    for (records, value_len) in [(1usize, 100usize), (16, 1024), (64, 16 * 1024)] {
        // One produce request at a time (acks=1 waits for its write): the small-batch case
        // is capped at 20000 requests to stay quick.
        let requests = ((mib << 20) / (records * value_len)).min(20_000);
        let f = measure::measure(requests.max(1), records, value_len);
        println!(
            "| {records} x {value_len} B | {:.1} | {:.1} | {:.3} ({:.3}) | {:.3} | {:.3} | {:.3} |",
            f.record_bytes_produced as f64 / 1048576.0,
            f.record_bytes_fetched as f64 / 1048576.0,
            f.produce_copies_per_byte,
            f.produce_tail_copies_per_byte,
            f.fetch_cache_copies_per_byte,
            f.fetch_disk_copies_per_byte,
            f.disk_read_copies_per_byte,
        );
    }
}
