//! Two segment settings Kafka topics have: a roll when the offset index is full
//! (`segment_index_bytes`, Kafka's `segment.index.bytes`), and deleted segments' files kept
//! for a while (`file_delete_delay_ms`, Kafka's `file.delete.delay.ms`).

mod common;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use common::*;
use spate_engine::io::mem::MemStorage;
use spate_engine::io::Storage;
use spate_engine::{Durability, LogConfig, PartitionLog};

async fn open_mem(mem: &MemStorage, config: LogConfig) -> PartitionLog {
    let storage: Rc<dyn Storage> = Rc::new(mem.clone());
    open_with(storage, &PathBuf::from("/data"), config, 1 << 20)
        .await
        .0
}

async fn names(mem: &MemStorage) -> Vec<String> {
    let mut n = mem
        .list_dir(&partition_dir(Path::new("/data")))
        .await
        .unwrap();
    n.sort();
    n
}

#[test]
fn a_full_offset_index_rolls_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), || async move {
        let mem = MemStorage::new();
        // An index entry per batch, three entries (24 bytes) per segment at most.
        let config = LogConfig {
            index_interval_bytes: 1,
            segment_index_bytes: 24,
            ..small_config()
        };
        let log = open_mem(&mem, config).await;
        for seq in 0..10 {
            log.append(vec![batch(seq, 500, 1)], Durability::Appended)
                .await
                .unwrap();
        }
        // 10 batches of 500 bytes in a 1 MiB segment: only the index limit rolls them.
        let bases = log.segment_bases();
        assert!(bases.len() >= 3, "{bases:?}");
        assert_eq!(read_all(&log, 0).await.len(), 10);
    });
}

#[test]
fn deleted_segments_files_wait_for_the_delay_and_a_restart_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), || async move {
        let mem = MemStorage::new();
        let config = LogConfig {
            segment_bytes: 8 * 1024,
            file_delete_delay_ms: 300,
            ..small_config()
        };
        let log = open_mem(&mem, config.clone()).await;
        for seq in 0..12 {
            log.append(vec![batch(seq, 3_000, 1)], Durability::Durable)
                .await
                .unwrap();
        }
        let first = log.segment_bases()[0];
        let start = log.delete_records(log.segment_bases()[2]).await.unwrap();
        assert!(start > first);
        // Out of the log at once, the files still there under another name.
        assert!(log.segment_bases()[0] >= start);
        let after_delete = names(&mem).await;
        let marked = format!("{first:020}.log.deleted");
        assert!(after_delete.contains(&marked), "{after_delete:?}");
        assert!(!after_delete.contains(&format!("{first:020}.log")));
        glommio::timer::sleep(Duration::from_millis(600)).await;
        let later = names(&mem).await;
        assert!(
            !later.iter().any(|n| n.ends_with(".deleted")),
            "removed after the delay: {later:?}"
        );

        // A stop before the delay ends: the next start removes what was marked.
        let second = log.segment_bases()[0];
        log.delete_records(log.segment_bases()[1]).await.unwrap();
        assert!(names(&mem)
            .await
            .contains(&format!("{second:020}.log.deleted")));
        log.close().await.unwrap();
        drop(log);
        let log = open_mem(&mem, config).await;
        let reopened = names(&mem).await;
        assert!(
            !reopened.iter().any(|n| n.ends_with(".deleted")),
            "{reopened:?}"
        );
        assert_eq!(log.offsets().log_start, log.segment_bases()[0].max(start));
    });
}
