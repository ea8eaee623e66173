//! spate-engine-torture: a process for crash tests. `append DIR ROUND` appends durable
//! batches to the partition log in DIR from several concurrent tasks and prints one
//! `ack OFFSET ROUND SEQ LEN` line per acknowledged batch, until killed or done. `dump DIR`
//! recovers the log and prints `batch OFFSET COUNT ROUND SEQ LEN ok|bad` for every batch.
//! Payloads describe themselves, so `dump` can tell an intact batch from a damaged one.

use std::cell::RefCell;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::BytesMut;
use glommio::{LocalExecutorBuilder, Placement};
use spate_engine::cache::BatchCache;
use spate_engine::io::dma::DmaStorage;
use spate_engine::{AppendBatch, Durability, LogConfig, PartitionLog};

const APPENDERS: u64 = 8;
const MAX_APPENDS_PER_TASK: u64 = 5_000;

fn make_payload(round: u64, seq: u64, len: usize) -> BytesMut {
    let mut b = BytesMut::with_capacity(len.max(24));
    b.extend_from_slice(&round.to_le_bytes());
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&(len as u64).to_le_bytes());
    let mut x = round.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq;
    while b.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.extend_from_slice(&[x as u8]);
    }
    b
}

/// (round, seq, len, intact) of a payload.
fn check_payload(p: &[u8]) -> Option<(u64, u64, usize, bool)> {
    if p.len() < 24 {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(p[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let (round, seq, len) = (word(0), word(1), word(2) as usize);
    let intact = len == p.len() && make_payload(round, seq, len)[..] == *p;
    Some((round, seq, len, intact))
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024 * 1024,
        preallocate_bytes: 256 * 1024,
        ..LogConfig::default()
    }
}

async fn open(dir: &std::path::Path) -> PartitionLog {
    spate_engine::shard::read_probe_file(&DmaStorage, dir.parent().unwrap_or(dir))
        .await
        .expect("probe file");
    let cache = Rc::new(RefCell::new(BatchCache::new(4 * 1024 * 1024)));
    let (log, report) =
        PartitionLog::open(Rc::new(DmaStorage), dir, "torture-0", config(), cache, 0)
            .await
            .expect("open log");
    eprintln!("recovered: {report:?}");
    log
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: spate-engine-torture append DIR ROUND | dump DIR");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[2]);
    let round: u64 = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(0);
    let mode = args[1].clone();
    let parent = dir.parent().unwrap_or(&dir).to_path_buf();
    spate_engine::shard::write_probe_file(&parent).expect("write probe file");
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(512 * 1024)
        .spawn(move || async move {
            let log = open(&dir).await;
            match mode.as_str() {
                "append" => append(log, round).await,
                "dump" => dump(log).await,
                other => {
                    eprintln!("unknown mode {other}");
                    std::process::exit(2);
                }
            }
        })
        .expect("start executor")
        .join()
        .expect("executor");
}

async fn append(log: PartitionLog, round: u64) {
    let out = Rc::new(RefCell::new(std::io::stdout()));
    let tasks: Vec<_> = (0..APPENDERS)
        .map(|task| {
            let log = log.clone();
            let out = out.clone();
            glommio::spawn_local(async move {
                for i in 0..MAX_APPENDS_PER_TASK {
                    let seq = i * APPENDERS + task;
                    let len = 24 + ((seq * 7919) % 20_000) as usize;
                    let batch = AppendBatch::opaque(
                        make_payload(round, seq, len).freeze(),
                        1 + (seq % 4) as u32,
                    );
                    match log.append(vec![batch], Durability::Durable).await {
                        Ok(r) => {
                            let mut o = out.borrow_mut();
                            let _ = writeln!(o, "ack {} {round} {seq} {len}", r.base_offset);
                            let _ = o.flush();
                        }
                        Err(e) => {
                            eprintln!("append failed: {e}");
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    log.close().await.expect("close");
}

async fn dump(log: PartitionLog) {
    let mut offset = log.stats().log_start_offset;
    let mut out = std::io::stdout().lock();
    loop {
        let batches = match log.read(offset, 1024 * 1024).await {
            Ok(b) => b,
            Err(e) => {
                let _ = writeln!(out, "error {offset} {e}");
                break;
            }
        };
        if batches.is_empty() {
            break;
        }
        for b in batches {
            let (round, seq, len, intact) = check_payload(&b.payload).unwrap_or((0, 0, 0, false));
            let _ = writeln!(
                out,
                "batch {} {} {round} {seq} {len} {}",
                b.base_offset,
                b.record_count,
                if intact { "ok" } else { "bad" }
            );
            offset = b.next_offset();
        }
    }
    let _ = writeln!(out, "end {offset}");
}
