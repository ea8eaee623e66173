//! Append and read benchmark of the partition log against the raw disk, in one run.
//!
//! `cargo bench -p spate-engine --bench append` (set SPATE_BENCH_DIR to a directory on the
//! disk to measure; default: a directory under target/). It measures, on the same file system:
//! 1. fio: O_DIRECT io_uring sequential 1 MiB writes with an fdatasync after each (the
//!    durable-write limit of the disk for that pattern), pinned to the shard's CPU
//!    (`SPATE_BENCH_CPU`, default 0), and once unpinned for reference;
//! 2. one partition, one appender, 1 MiB batches, durable acks (each waits for its fdatasync);
//! 3. one partition, 64 concurrent appenders of 16 KiB batches, durable acks (group commit);
//! 4. tail reads from the batch cache: payload bytes copied per read (pointer identity).
//!
//! It prints each as a ratio of the fio figure. No figure here is asserted: the results go to
//! docs/BENCHMARKS.md.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use spate_engine::cache::BatchCache;
use spate_engine::io::dma::DmaStorage;
use spate_engine::{AppendBatch, Durability, LogConfig, PartitionLog};

const MIB: usize = 1024 * 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("SPATE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data"));
    remove_dirs_of_killed_runs(&base);
    let dir = base.join(format!("append-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create bench dir");
    dir
}

/// A run removes its directory when it ends; one that was killed leaves gigabytes behind.
/// Removes the `append-<pid>` directories whose process is gone.
fn remove_dirs_of_killed_runs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("append-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => println!("removed {} (left by a killed run)", entry.path().display()),
            Err(e) => println!("cannot remove {}: {e}", entry.path().display()),
        }
    }
}

/// The CPU the Spate shard runs on (`SPATE_BENCH_CPU`, default 0: the first shard's core).
/// fio is pinned to the same CPU, so that both pay the same for where the disk's interrupts
/// land (on a VM with one disk queue, a thread on another CPU waits for a cross-CPU wakeup
/// on every completion, and io_uring's workers inherit the thread's pinning).
fn bench_cpu() -> usize {
    env_usize("SPATE_BENCH_CPU", 0)
}

/// fio's write bandwidth in MiB/s for sequential `bs` writes with fdatasync after each, on
/// `cpu` (or wherever the scheduler puts it).
fn fio_mib_per_s(dir: &Path, bs: &str, size_mib: usize, cpu: Option<usize>) -> Option<f64> {
    // A fresh file every run (removed before and after), as a log appends to new segments:
    // overwriting blocks written before skips the allocation work (~40% faster here).
    let file = dir.join("fio.dat");
    let _ = std::fs::remove_file(&file);
    let out = Command::new("fio")
        .args([
            "--name=durable-append",
            &format!("--filename={}", file.display()),
            "--ioengine=io_uring",
            "--direct=1",
            "--rw=write",
            &format!("--bs={bs}"),
            "--fdatasync=1",
            &format!("--size={size_mib}M"),
            "--iodepth=1",
            "--output-format=json",
        ])
        .args(cpu.map(|c| format!("--cpus_allowed={c}")))
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        eprintln!("fio failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // "bw_bytes" of the job's write section (first occurrence after "write").
    let write = text.find("\"write\" : {")?;
    let rest = &text[write..];
    let at = rest.find("\"bw_bytes\"")?;
    let num: String = rest[at + 10..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    num.parse::<f64>().ok().map(|b| b / MIB as f64)
}

/// `SPATE_BENCH_PREALLOC_MIB` overrides the preallocation step (0: none).
fn preallocate_bytes() -> u64 {
    std::env::var("SPATE_BENCH_PREALLOC_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(LogConfig::default().preallocate_bytes, |m| m * MIB as u64)
}

async fn open_log(dir: &Path, name: &str) -> PartitionLog {
    let cache = Rc::new(RefCell::new(BatchCache::new(256 * MIB)));
    let config = LogConfig {
        segment_bytes: 1024 * MIB as u64,
        preallocate_bytes: preallocate_bytes(),
        ..LogConfig::default()
    };
    PartitionLog::open(Rc::new(DmaStorage), &dir.join(name), name, config, cache, 0)
        .await
        .expect("open")
        .0
}

struct Results {
    single_mib_s: f64,
    concurrent_mib_s: f64,
    concurrent_syncs_per_append: f64,
    cache_read_bytes_copied: usize,
    cache_reads: usize,
}

fn run_engine(dir: PathBuf, total_mib: usize) -> Results {
    std::fs::create_dir_all(&dir).expect("create dir");
    spate_engine::shard::write_probe_file(&dir).expect("probe");
    LocalExecutorBuilder::new(Placement::Fixed(bench_cpu()))
        .spawn(move || async move {
            spate_engine::shard::read_probe_file(&DmaStorage, &dir)
                .await
                .expect("probe read");

            // 1 MiB batches, one at a time, durable.
            let log = open_log(&dir, "single").await;
            // Payloads made before the clock starts: fio does not generate data either.
            let payloads: Vec<Bytes> = (0..total_mib)
                .map(|i| Bytes::from(vec![i as u8; MIB]))
                .collect();
            let start = Instant::now();
            for payload in payloads {
                log.append(vec![AppendBatch::opaque(payload, 1)], Durability::Durable)
                    .await
                    .expect("append");
            }
            let single_mib_s = total_mib as f64 / start.elapsed().as_secs_f64();
            log.close().await.expect("close");

            // 64 appenders x 16 KiB, durable; count fdatasyncs through a counting storage.
            let plan = spate_engine::io::fault::FaultPlan::new();
            let storage: Rc<dyn spate_engine::io::Storage> = Rc::new(
                spate_engine::io::fault::FaultyStorage::new(Rc::new(DmaStorage), plan.clone()),
            );
            let cache = Rc::new(RefCell::new(BatchCache::new(256 * MIB)));
            let config = LogConfig {
                segment_bytes: 1024 * MIB as u64,
                preallocate_bytes: preallocate_bytes(),
                ..LogConfig::default()
            };
            let (log, _) = PartitionLog::open(
                storage,
                &dir.join("concurrent"),
                "concurrent",
                config,
                cache,
                1,
            )
            .await
            .expect("open");
            let batch_bytes = 16 * 1024;
            let appends_per_task = total_mib * MIB / batch_bytes / 64;
            let syncs_before = plan.syncs();
            let start = Instant::now();
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let log = log.clone();
                    glommio::spawn_local(async move {
                        let payload = Bytes::from(vec![0xcdu8; batch_bytes]);
                        for _ in 0..appends_per_task {
                            log.append(
                                vec![AppendBatch::opaque(payload.clone(), 1)],
                                Durability::Durable,
                            )
                            .await
                            .expect("append");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            let elapsed = start.elapsed().as_secs_f64();
            let appends = 64 * appends_per_task;
            let concurrent_mib_s = (appends * batch_bytes) as f64 / MIB as f64 / elapsed;
            let concurrent_syncs_per_append = (plan.syncs() - syncs_before) as f64 / appends as f64;

            // Tail reads from the cache: the payload handed out is the payload appended.
            let mut copied = 0usize;
            let reads = 1000;
            for i in 0..reads {
                let original = Bytes::from(vec![i as u8; 4096]);
                let appended_at = original.as_ptr();
                let r = log
                    .append(vec![AppendBatch::opaque(original, 1)], Durability::Appended)
                    .await
                    .expect("append");
                let got = log.read(r.base_offset, MIB).await.expect("read");
                // Zero copy means the reader gets the very memory the producer's payload
                // arrived in; anything else is a copy of the payload.
                if got[0].payload.as_ptr() != appended_at {
                    copied += got[0].payload.len();
                }
            }
            log.close().await.expect("close");
            Results {
                single_mib_s,
                concurrent_mib_s,
                concurrent_syncs_per_append,
                cache_read_bytes_copied: copied,
                cache_reads: reads,
            }
        })
        .expect("executor")
        .join()
        .expect("join")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // Shared cloud disks drift from second to second, so fio and Spate take turns, several
    // rounds, and the medians are compared.
    let total_mib = env_usize("SPATE_BENCH_MIB", 256);
    let rounds = env_usize("SPATE_BENCH_ROUNDS", 5).max(1);
    let dir = bench_dir();
    println!(
        "spate-engine append bench: {total_mib} MiB per measurement, {rounds} rounds, dir {}",
        dir.display()
    );
    let (mut fio, mut single, mut concurrent) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for round in 0..rounds {
        let f = fio_mib_per_s(&dir, "1M", total_mib, Some(bench_cpu()));
        let r = run_engine(dir.join(format!("round-{round}")), total_mib);
        println!(
            "round {round}: fio {:>7.1} MiB/s | spate 1 MiB x1 {:>7.1} MiB/s | spate 16 KiB x64 {:>7.1} MiB/s",
            f.unwrap_or(f64::NAN),
            r.single_mib_s,
            r.concurrent_mib_s
        );
        if let Some(f) = f {
            fio.push(f);
        }
        single.push(r.single_mib_s);
        concurrent.push(r.concurrent_mib_s);
        last = Some(r);
    }
    let fio16 = fio_mib_per_s(&dir, "16k", total_mib / 8, Some(bench_cpu()));
    let fio_unpinned = fio_mib_per_s(&dir, "1M", total_mib, None);
    let _ = std::fs::remove_dir_all(&dir);
    let Some(r) = last else { return };
    let fio = (!fio.is_empty()).then(|| median(fio));
    let (single, concurrent) = (median(single), median(concurrent));
    let ratio = |v: f64| {
        fio.map_or("n/a (fio not installed)".to_string(), |f| {
            format!("{:.0}%", 100.0 * v / f)
        })
    };
    println!();
    let cpu = bench_cpu();
    println!("| measurement (median of {rounds}; CPU {cpu}) | MiB/s | vs fio 1 MiB + fdatasync |");
    println!("|---|---|---|");
    match fio {
        Some(f) => println!(
            "| fio, O_DIRECT io_uring, 1 MiB writes, fdatasync each, on CPU {cpu} | {f:.1} | 100% |"
        ),
        None => println!("| fio | not installed (apt-get install fio) | |"),
    }
    if let Some(f) = fio_unpinned {
        println!(
            "| fio, the same, not pinned (reference, one run) | {f:.1} | {} |",
            ratio(f)
        );
    }
    if let Some(f) = fio16 {
        println!(
            "| fio, 16 KiB writes, fdatasync each (reference, one run) | {f:.1} | {} |",
            ratio(f)
        );
    }
    println!(
        "| spate, 1 partition, 1 MiB batches, durable, 1 appender | {single:.1} | {} |",
        ratio(single)
    );
    println!(
        "| spate, 1 partition, 16 KiB batches, durable, 64 appenders | {concurrent:.1} | {} |",
        ratio(concurrent)
    );
    println!();
    println!(
        "group commit: {:.4} fdatasyncs per append (64 appenders, last round)",
        r.concurrent_syncs_per_append
    );
    println!(
        "batch cache tail reads: {} payload bytes copied over {} reads",
        r.cache_read_bytes_copied, r.cache_reads
    );
}
