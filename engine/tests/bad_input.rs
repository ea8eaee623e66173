//! A data directory with bad files in it: foreign files, files that are not segments, garbage
//! in and truncation of segments, corrupt checkpoints and indexes. Each gives a clear error or
//! a clean cut at the first bad frame, never a panic, and damaged bytes are never served.

mod common;

use std::cell::RefCell;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use common::*;
use spate_engine::cache::BatchCache;
use spate_engine::frame::FRAME_HEADER_LEN;
use spate_engine::io::dma::DmaStorage;
use spate_engine::{Durability, EngineError, LogConfig, PartitionLog, ReadBatch, RecoveryReport};

/// One appended batch: its offset, content, segment and position in that segment's file.
#[derive(Debug, Clone, Copy)]
struct Sent {
    offset: u64,
    seq: u64,
    len: usize,
    segment: u64,
    position: u64,
}

impl Sent {
    fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + self.len as u64
    }
}

fn check_batch(b: &ReadBatch, s: &Sent) {
    assert_eq!(
        b.base_offset, s.offset,
        "batch seq {} is at the wrong offset",
        s.seq
    );
    assert_eq!(b.record_count, 1 + (s.seq % 3) as u32);
    assert!(
        b.payload[..] == payload(s.seq, s.len)[..],
        "payload of the batch at {} is damaged",
        s.offset
    );
}

fn check_all(got: &[ReadBatch], sent: &[Sent]) {
    assert_eq!(
        got.len(),
        sent.len(),
        "served {} batches, expected {}",
        got.len(),
        sent.len()
    );
    for (b, s) in got.iter().zip(sent) {
        check_batch(b, s);
    }
}

fn segment_path(root: &Path, base: u64) -> PathBuf {
    partition_dir(root).join(format!("{base:020}.log"))
}

/// Appends `count` durable batches of `len` bytes, tracking where each frame lands (segments
/// roll when the next frame would not fit, as the log does).
async fn fill(log: &PartitionLog, config: &LogConfig, count: u64, len: usize) -> Vec<Sent> {
    let mut out: Vec<Sent> = Vec::new();
    for seq in 0..count {
        let r = log
            .append(
                vec![batch(seq, len, 1_000 + seq as i64)],
                Durability::Durable,
            )
            .await
            .unwrap();
        let frame = FRAME_HEADER_LEN as u64 + len as u64;
        let (segment, position) = match out.last() {
            None => (0, 0),
            Some(p) if p.position + p.frame_len() + frame > config.segment_bytes => {
                (r.base_offset, 0)
            }
            Some(p) => (p.segment, p.position + p.frame_len()),
        };
        out.push(Sent {
            offset: r.base_offset,
            seq,
            len,
            segment,
            position,
        });
    }
    out
}

/// Opens the log directly, for the cases where opening may fail.
async fn try_open(
    root: &Path,
    config: LogConfig,
) -> Result<(PartitionLog, RecoveryReport), EngineError> {
    let cache = Rc::new(RefCell::new(BatchCache::new(1024)));
    PartitionLog::open(
        Rc::new(DmaStorage),
        &partition_dir(root),
        "t-0",
        config,
        cache,
        1,
    )
    .await
}

/// Overwrites bytes of a file at `position` (buffered std I/O, the log being closed).
fn overwrite(path: &Path, position: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(position)).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

/// Deterministic pseudo-random bytes (xorshift64 from `seed | 1`: use odd seeds).
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Reads every offset of `sent` one batch at a time: each read is the intact batch or a
/// `Corrupt` error, never other bytes. Returns which reads failed.
async fn read_each(log: &PartitionLog, sent: &[Sent]) -> Vec<bool> {
    let mut failed = Vec::new();
    for s in sent {
        match log.read(s.offset, 1).await {
            Ok(batches) => {
                check_batch(&batches[0], s);
                failed.push(false);
            }
            Err(EngineError::Corrupt { .. }) => failed.push(true),
            Err(e) => panic!("read at {}: unexpected error {e:?}", s.offset),
        }
    }
    failed
}

#[test]
fn foreign_files_in_the_partition_dir_are_ignored_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let pdir = partition_dir(&root);
        std::fs::create_dir_all(&pdir).unwrap();
        // Foreign files before the log is ever created, and some that look almost like its own.
        let foreign: [(&str, &[u8]); 4] = [
            ("notes.txt", b"remember to rotate the disks\n"),
            ("00000000000000000000.log.bak", b"a backup someone made"),
            ("42.log", b"not twenty digits"),
            ("README", b""),
        ];
        for (name, content) in foreign {
            std::fs::write(pdir.join(name), content).unwrap();
        }
        std::fs::create_dir(pdir.join("lost+found")).unwrap();

        let cfg = small_config();
        let (log, report) = open(&root, cfg.clone()).await;
        assert_eq!(report.next_offset, 0);
        let sent = fill(&log, &cfg, 30, 3_000).await;
        log.close().await.unwrap();
        drop(log);

        std::fs::write(pdir.join("notes2.txt"), b"added while the broker was down").unwrap();
        let (log, report) = open(&root, cfg.clone()).await;
        assert_eq!(report.next_offset, sent.last().unwrap().offset + 1 + 29 % 3);
        assert_eq!(report.bytes_cut, 0);
        check_all(&read_all(&log, 0).await, &sent);
        log.close().await.unwrap();
        for (name, content) in foreign {
            assert_eq!(
                std::fs::read(pdir.join(name)).unwrap(),
                content,
                "{name} was changed"
            );
        }
        assert!(pdir.join("notes2.txt").exists() && pdir.join("lost+found").is_dir());
    });
}

#[test]
fn segment_named_file_with_foreign_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let text: Vec<u8> = b"This is a text file, not a log segment.\n"
            .iter()
            .copied()
            .cycle()
            .take(10_000)
            .collect();
        for (case, content) in [("text", text), ("random", random_bytes(7, 20_000))] {
            let case_root = root.join(case);
            std::fs::create_dir_all(partition_dir(&case_root)).unwrap();
            let path = segment_path(&case_root, 0);
            std::fs::write(&path, &content).unwrap();
            match try_open(&case_root, small_config()).await {
                Err(err @ EngineError::Corrupt { .. }) => {
                    let msg = err.to_string();
                    assert!(msg.contains("not a Spate segment"), "{case}: {msg}");
                    assert!(
                        msg.contains(&path.display().to_string()),
                        "{case}: the error should name the file: {msg}"
                    );
                }
                Err(e) => panic!("{case}: expected a Corrupt error, got {e:?}"),
                Ok((_, report)) => {
                    panic!("{case}: a foreign file was opened as a segment: {report:?}")
                }
            }
            assert_eq!(
                std::fs::read(&path).unwrap(),
                content,
                "{case}: the foreign file must be left as it was"
            );
        }
    });
}

#[test]
fn garbage_in_the_active_segment_after_a_crash_is_cut_at_the_first_bad_frame() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let cfg = small_config();
        let (log, _) = open(&root, cfg.clone()).await;
        let sent = fill(&log, &cfg, 40, 3_000).await;
        drop(log); // no close: recovery validates the active segment frame by frame

        let damaged = 17;
        let at = sent[damaged].position + FRAME_HEADER_LEN as u64 + 1_000;
        overwrite(&segment_path(&root, 0), at, b"GARBAGE GARBAGE GARBAGE");

        let (log, report) = open(&root, cfg.clone()).await;
        assert!(report.cut_reason.is_some(), "{report:?}");
        assert!(report.bytes_cut > 0, "{report:?}");
        assert_eq!(report.next_offset, sent[damaged].offset, "{report:?}");
        check_all(&read_all(&log, 0).await, &sent[..damaged]);
        // Nothing at or after the damage is served, and it is gone from the file.
        assert!(log.read(sent[damaged].offset, 1).await.unwrap().is_empty());
        assert!(matches!(
            log.read(sent[damaged + 1].offset, 1).await,
            Err(EngineError::OffsetOutOfRange { .. })
        ));
        assert_eq!(
            std::fs::metadata(segment_path(&root, 0)).unwrap().len(),
            sent[damaged].position
        );

        // The log goes on from the cut, and that survives a restart.
        let r = log
            .append(vec![batch(1_000, 500, 5)], Durability::Durable)
            .await
            .unwrap();
        assert_eq!(r.base_offset, sent[damaged].offset);
        log.close().await.unwrap();
        drop(log);
        let (log, report) = open(&root, cfg).await;
        assert_eq!(report.next_offset, r.last_offset + 1);
        let got = read_all(&log, 0).await;
        check_all(&got[..damaged], &sent[..damaged]);
        assert_eq!(got.len(), damaged + 1);
        assert_eq!(&got[damaged].payload[..], &payload(1_000, 500)[..]);
    });
}

#[test]
fn garbage_in_the_active_segment_after_a_clean_close_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let cfg = small_config();
        let (log, _) = open(&root, cfg.clone()).await;
        let sent = fill(&log, &cfg, 40, 3_000).await;
        let end = log.stats().log_end_offset;
        log.close().await.unwrap();
        drop(log);

        let damaged = 17;
        let at = sent[damaged].position + FRAME_HEADER_LEN as u64 + 1_000;
        overwrite(&segment_path(&root, 0), at, b"GARBAGE GARBAGE GARBAGE");

        // A clean close left a checkpoint: the frames below it are not validated again at open
        // (that is what makes a clean restart fast), so the damage is found by the reads.
        let (log, report) = open(&root, cfg.clone()).await;
        assert!(report.from_checkpoint, "{report:?}");
        assert_eq!(report.next_offset, end);
        match log.read(sent[damaged].offset, 1).await {
            Err(EngineError::Corrupt { path, .. }) => assert_eq!(path, segment_path(&root, 0)),
            other => panic!("the damaged batch must not be served: {other:?}"),
        }
        // Every batch before the damage is still served, one at a time; no read returns
        // anything but intact batches.
        let failed = read_each(&log, &sent).await;
        assert!(failed[damaged]);
        let unreadable: Vec<usize> = failed[..damaged]
            .iter()
            .enumerate()
            .filter(|(_, f)| **f)
            .map(|(i, _)| i)
            .collect();
        assert!(
            unreadable.is_empty(),
            "intact batches before the damage cannot be read: {unreadable:?}"
        );
        // Appends continue at the end.
        let r = log
            .append(vec![batch(1_000, 500, 5)], Durability::Durable)
            .await
            .unwrap();
        assert_eq!(r.base_offset, end);
        log.close().await.unwrap();
    });
}

#[test]
fn truncated_segment_loses_only_the_partial_frame() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let cfg = small_config();
        // Cut the last frame inside its payload, and inside its header.
        for (case, cut_into_last) in [("payload", 2_500u64), ("header", 10)] {
            let case_root = root.join(case);
            let (log, _) = open(&case_root, cfg.clone()).await;
            let sent = fill(&log, &cfg, 20, 5_000).await;
            drop(log); // no close: like a crash
            let last = sent.last().unwrap();
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(segment_path(&case_root, 0))
                .unwrap();
            file.set_len(last.position + cut_into_last).unwrap();
            drop(file);

            let (log, report) = open(&case_root, cfg.clone()).await;
            assert!(report.cut_reason.is_some(), "{case}: {report:?}");
            assert!(
                report.bytes_cut > 0 && report.bytes_cut <= cut_into_last,
                "{case}: {report:?}"
            );
            assert_eq!(report.next_offset, last.offset, "{case}: {report:?}");
            check_all(&read_all(&log, 0).await, &sent[..sent.len() - 1]);
            let r = log
                .append(vec![batch(last.seq, last.len, 5)], Durability::Durable)
                .await
                .unwrap();
            assert_eq!(r.base_offset, last.offset);
            log.close().await.unwrap();
            drop(log);
            let (log, report) = open(&case_root, cfg.clone()).await;
            assert_eq!(report.bytes_cut, 0, "{case}: {report:?}");
            check_all(&read_all(&log, 0).await, &sent);
        }
    });
}

#[test]
fn corrupt_checkpoint_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let cfg = small_config();
        let checkpoint = partition_dir(&root).join("recovery.checkpoint");
        for (case, garbage) in [
            ("random", random_bytes(3, 200)),
            ("empty", Vec::new()),
            ("text", b"SPAF but not really".to_vec()),
        ] {
            std::fs::remove_dir_all(root.join("topics")).ok();
            let (log, _) = open(&root, cfg.clone()).await;
            let sent = fill(&log, &cfg, 60, 2_000).await;
            log.close().await.unwrap();
            drop(log);
            assert!(checkpoint.exists());
            std::fs::write(&checkpoint, &garbage).unwrap();

            let (log, report) = open(&root, cfg.clone()).await;
            assert!(!report.from_checkpoint, "{case}: {report:?}");
            assert_eq!(report.bytes_cut, 0, "{case}: {report:?}");
            assert_eq!(
                report.next_offset,
                sent.last().unwrap().offset + 1 + 59 % 3,
                "{case}"
            );
            check_all(&read_all(&log, 0).await, &sent);
            log.close().await.unwrap();
        }
    });
}

#[test]
fn corrupt_index_files_are_ignored_or_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let cfg = small_config();
        // 30 KB batches in 1 MiB segments: several closed segments and an active one.
        // Cases: with the checkpoint intact, and with it broken too (recovery from the indexes).
        for (case, break_checkpoint) in [("with checkpoint", false), ("without checkpoint", true)] {
            std::fs::remove_dir_all(root.join("topics")).ok();
            let (log, _) = open(&root, cfg.clone()).await;
            let sent = fill(&log, &cfg, 100, 30_000).await;
            let end = log.stats().log_end_offset;
            log.close().await.unwrap();
            drop(log);
            let mut bases: Vec<u64> = sent.iter().map(|s| s.segment).collect();
            bases.dedup();
            assert!(bases.len() >= 3);
            for (i, base) in bases.iter().enumerate() {
                let pdir = partition_dir(&root);
                std::fs::write(
                    pdir.join(format!("{base:020}.index")),
                    random_bytes(11 + 2 * i as u64, 4096),
                )
                .unwrap();
                std::fs::write(
                    pdir.join(format!("{base:020}.timeindex")),
                    random_bytes(97 + 2 * i as u64, 1000),
                )
                .unwrap();
            }
            // And a plausible-looking offset index for the first segment: increasing entries
            // that point between frames.
            let mut plausible = Vec::new();
            for k in 1..20u32 {
                plausible.extend_from_slice(&k.to_le_bytes());
                plausible.extend_from_slice(&(k * 1000 + 3).to_le_bytes());
            }
            std::fs::write(
                partition_dir(&root).join(format!("{:020}.index", 0)),
                plausible,
            )
            .unwrap();
            if break_checkpoint {
                std::fs::write(
                    partition_dir(&root).join("recovery.checkpoint"),
                    random_bytes(5, 64),
                )
                .unwrap();
            }

            // After the restart the cache is empty: every read goes through the recovered indexes.
            let (log, report) = open(&root, cfg.clone()).await;
            assert_eq!(report.next_offset, end, "{case}: {report:?}");
            assert_eq!(report.bytes_cut, 0, "{case}: {report:?}");
            check_all(&read_all(&log, 0).await, &sent);
            assert!(read_each(&log, &sent).await.iter().all(|f| !f), "{case}");
            log.close().await.unwrap();
            drop(log);
            let (log, _) = open(&root, cfg.clone()).await;
            check_all(&read_all(&log, 0).await, &sent);
        }
    });
}

#[test]
fn corrupt_closed_segment_fails_reads_of_the_damage_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let cfg = small_config();
        let (log, _) = open(&root, cfg.clone()).await;
        let sent = fill(&log, &cfg, 100, 40_000).await;
        let end = log.stats().log_end_offset;
        assert!(log.stats().segments >= 3);
        log.close().await.unwrap();
        drop(log);

        // Flip bytes in the middle of the first segment.
        let path = segment_path(&root, 0);
        let at = 512 * 1024;
        let mut bytes = std::fs::read(&path).unwrap();
        for b in &mut bytes[at..at + 64] {
            *b ^= 0x5a;
        }
        overwrite(&path, at as u64, &bytes[at..at + 64]);
        let damaged = sent
            .iter()
            .position(|s| {
                s.segment == 0
                    && s.position <= at as u64
                    && (at as u64) < s.position + s.frame_len()
            })
            .unwrap();

        let (log, report) = open(&root, cfg.clone()).await;
        assert_eq!(report.next_offset, end, "{report:?}");
        match log.read(sent[damaged].offset, 1).await {
            Err(EngineError::Corrupt { path: p, .. }) => assert_eq!(p, path),
            other => panic!("the damaged batch must not be served: {other:?}"),
        }
        // A read spanning the damage fails, or stops before it; it never serves it.
        match log.read(sent[damaged - 1].offset, 10 * 1024 * 1024).await {
            Ok(batches) => {
                for b in &batches {
                    let s = sent.iter().find(|s| s.offset == b.base_offset).unwrap();
                    assert!(
                        s.offset != sent[damaged].offset,
                        "the damaged batch was served"
                    );
                    check_batch(b, s);
                }
            }
            Err(EngineError::Corrupt { .. }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
        let failed = read_each(&log, &sent).await;
        assert_eq!(
            failed.iter().filter(|f| **f).count(),
            1,
            "only the damaged batch is unreadable: {failed:?}"
        );
        // The later segments are served in full.
        let first_later = sent.iter().position(|s| s.segment != 0).unwrap();
        check_all(
            &read_all(&log, sent[first_later].offset).await,
            &sent[first_later..],
        );
        // And the partition keeps taking appends.
        let r = log
            .append(vec![batch(1_000, 100, 5)], Durability::Durable)
            .await
            .unwrap();
        assert_eq!(r.base_offset, end);
        log.close().await.unwrap();
    });
}

/// The time index is only an accelerator: a corrupt one must not change the answers of time
/// lookups. (About half of all random files begin with an entry with a negative timestamp,
/// which decoding accepts as a first entry; the seeds below give such files.)
#[test]
fn corrupt_time_index_files_give_no_wrong_time_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let cfg = small_config();
        for (case, break_checkpoint, seed) in [
            ("with checkpoint", false, 91u64),
            ("without checkpoint", true, 101),
        ] {
            std::fs::remove_dir_all(root.join("topics")).ok();
            let (log, _) = open(&root, cfg.clone()).await;
            let sent = fill(&log, &cfg, 100, 30_000).await;
            log.close().await.unwrap();
            drop(log);
            let mut bases: Vec<u64> = sent.iter().map(|s| s.segment).collect();
            bases.dedup();
            for (i, base) in bases.iter().enumerate() {
                let path = partition_dir(&root).join(format!("{base:020}.timeindex"));
                std::fs::write(path, random_bytes(seed + 2 * i as u64, 1200)).unwrap();
            }
            if break_checkpoint {
                std::fs::write(
                    partition_dir(&root).join("recovery.checkpoint"),
                    random_bytes(5, 64),
                )
                .unwrap();
            }
            let (log, _) = open(&root, cfg.clone()).await;
            check_all(&read_all(&log, 0).await, &sent);
            let mut wrong = Vec::new();
            for s in &sent {
                let ts = 1_000 + s.seq as i64;
                let got = log.offset_for_timestamp(ts).await.unwrap();
                if got != Some((s.offset, ts)) {
                    wrong.push(format!(
                        "ts {ts} (offset {} in segment {}): {got:?}",
                        s.offset, s.segment
                    ));
                }
            }
            assert!(
                wrong.is_empty(),
                "{case}: {} wrong time lookups, e.g. {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(3)]
            );
        }
    });
}

/// A healthy batch followed by a corrupt one: reading the healthy one must work, whatever
/// the byte limit ("always at least one batch if any is readable"); only the corrupt batch
/// itself is refused.
#[test]
fn healthy_batch_just_before_a_corrupt_one_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let cfg = small_config();
        let (log, _) = open(&root, cfg.clone()).await;
        let sent = fill(&log, &cfg, 10, 1_000).await;
        log.close().await.unwrap();
        drop(log);
        // Damage the payload of batch 5.
        overwrite(
            &segment_path(&root, 0),
            sent[5].position + FRAME_HEADER_LEN as u64 + 100,
            b"XXXX",
        );

        let (log, _) = open(&root, cfg).await;
        assert!(matches!(
            log.read(sent[5].offset, 1).await,
            Err(EngineError::Corrupt { .. })
        ));
        for max_bytes in [1, 1024 * 1024] {
            for s in &sent[..5] {
                match log.read(s.offset, max_bytes).await {
                    Ok(batches) => {
                        check_batch(&batches[0], s);
                        assert!(
                            batches.iter().all(|b| b.base_offset < sent[5].offset),
                            "the corrupt batch was served"
                        );
                    }
                    Err(e) => panic!(
                        "read({}, {max_bytes}) of an intact batch failed: {e}",
                        s.offset
                    ),
                }
            }
        }
    });
}

/// A sequential reader behind the cache reads through read-ahead chunks, whose frames are
/// checked as they are read ahead: damage inside a chunk is still found, and the reader gets
/// every intact batch before it and never the damaged one.
#[test]
fn damage_inside_a_read_ahead_chunk_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let cfg = small_config();
        let (log, _) = open(&root, cfg.clone()).await;
        let sent = fill(&log, &cfg, 60, 40_000).await;
        log.close().await.unwrap();
        drop(log);
        // Damage the payload of a batch in the middle of the first segment: several reads
        // of 100 KB after the first, so it is in a chunk read ahead.
        let damaged = 12;
        assert_eq!(sent[damaged].segment, 0);
        overwrite(
            &segment_path(&root, 0),
            sent[damaged].position + FRAME_HEADER_LEN as u64 + 20_000,
            b"XXXX",
        );

        // A cache of 1 MiB (256 KiB of read-ahead): nothing is cached after the restart.
        let (log, _) = open_with(Rc::new(DmaStorage), &root, cfg, 1 << 20).await;
        let mut at = 0u64;
        let mut served = 0;
        loop {
            match log.read(at, 100 * 1024).await {
                Ok(batches) => {
                    assert!(!batches.is_empty(), "nothing read at {at}");
                    for b in &batches {
                        assert!(
                            b.base_offset < sent[damaged].offset,
                            "the damaged batch was served"
                        );
                        check_batch(b, &sent[served]);
                        served += 1;
                        at = b.next_offset();
                    }
                }
                Err(EngineError::Corrupt { .. }) => break,
                Err(e) => panic!("unexpected error at {at}: {e}"),
            }
        }
        assert_eq!(served, damaged, "every batch before the damage was served");
        assert_eq!(
            at, sent[damaged].offset,
            "the read that failed was the damaged one"
        );
    });
}

// Controls for the time lookups above: the same lookups, with intact files.

/// After a clean restart, time lookups find every batch of the active segment, including
/// those after its last time index entry.
#[test]
fn time_lookup_after_a_clean_restart_finds_the_newest_batches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let cfg = small_config();
        let (log, _) = open(&root, cfg.clone()).await;
        let sent = fill(&log, &cfg, 10, 100).await;
        for s in &sent {
            let ts = 1_000 + s.seq as i64;
            assert_eq!(
                log.offset_for_timestamp(ts).await.unwrap(),
                Some((s.offset, ts)),
                "before the restart"
            );
        }
        log.close().await.unwrap();
        drop(log);
        let (log, report) = open(&root, cfg).await;
        assert!(report.from_checkpoint);
        for s in &sent {
            let ts = 1_000 + s.seq as i64;
            assert_eq!(
                log.offset_for_timestamp(ts).await.unwrap(),
                Some((s.offset, ts)),
                "after a clean restart"
            );
        }
    });
}

/// Retention by age must not delete a segment holding a record newer than the cutoff, also
/// when that segment was the active one at a clean restart and then rolled.
#[test]
fn age_retention_after_a_clean_restart_keeps_segments_with_recent_records() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let cfg = LogConfig {
            segment_ms: 60_000,
            retention_ms: 10_000,
            ..small_config()
        };
        // Without a restart (the control), then with a clean restart before the roll.
        for (case, restart) in [("no restart", false), ("clean restart", true)] {
            let case_root = root.join(case);
            let (mut log, _) = open(&case_root, cfg.clone()).await;
            // Timestamps 1000, 1010, ..., 1110 in 3 KB batches: the time index has an entry
            // for every other batch, none for the last one.
            for seq in 0..12u64 {
                log.append(
                    vec![batch(seq, 3_000, 1_000 + seq as i64 * 10)],
                    Durability::Durable,
                )
                .await
                .unwrap();
            }
            if restart {
                log.close().await.unwrap();
                drop(log);
                log = open(&case_root, cfg.clone()).await.0;
            }
            // The segment is old: the next append rolls it.
            log.set_active_segment_created_at(
                std::time::Instant::now() - std::time::Duration::from_secs(120),
            );
            log.append(vec![batch(50, 100, 5_000)], Durability::Durable)
                .await
                .unwrap();
            assert_eq!(log.stats().segments, 2);
            // Cutoff 1105: the first segment holds a record at 1110, so it must stay.
            assert_eq!(
                log.apply_retention(1_105 + 10_000).await.unwrap(),
                0,
                "{case}: a segment with a record newer than the cutoff was deleted"
            );
            assert_eq!(log.stats().log_start_offset, 0, "{case}");
            log.close().await.unwrap();
        }
    });
}

/// A few foreign bytes under a segment name are refused, not cut to nothing.
#[test]
fn a_tiny_foreign_file_named_like_a_segment_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let pdir = partition_dir(&root);
    std::fs::create_dir_all(&pdir).unwrap();
    let seg = pdir.join("00000000000000000000.log");
    std::fs::write(&seg, b"hello, not a log").unwrap();
    run(&root.clone(), move || async move {
        let cache = std::rc::Rc::new(std::cell::RefCell::new(
            spate_engine::cache::BatchCache::new(1 << 20),
        ));
        let err = spate_engine::PartitionLog::open(
            std::rc::Rc::new(spate_engine::io::dma::DmaStorage),
            &partition_dir(&root),
            "t-0",
            small_config(),
            cache,
            1,
        )
        .await
        .err()
        .expect("must refuse");
        assert!(err.to_string().contains("not a Spate segment"), "{err}");
    });
    assert_eq!(std::fs::read(&seg).unwrap(), b"hello, not a log");
}
