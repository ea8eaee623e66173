//! The consumer threads: one per member of each subscription, pinned, each joined to its
//! subscription's group through `GroupConsumer`. A consumer records end-to-end latency from
//! the send time in each value, counts records it receives again, commits its offsets once a
//! second, and while the backlog builds stays in its group (heartbeating) without fetching.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spate_client::{Client, ClientError, GroupConsumer, StartAt};

use super::payload::now_micros;
use super::shared::Shared;
use super::{RunError, RunOptions, Worker};
use crate::pin::pin_to;
use crate::stats::Recorder;
use crate::workload::Workload;

/// Starts one thread per subscription member of every topic, pinned from CPU `*cpu` on, and
/// waits until every one has joined its group (or failed), so none misses the first message.
pub(super) fn start_consumers(
    w: &Workload,
    o: &RunOptions,
    topics: &[String],
    shared: &Arc<Shared>,
    cpu: &mut usize,
) -> Result<Vec<Worker>, RunError> {
    let consumer_count =
        (w.topics * w.subscriptions_per_topic * w.consumer_per_subscription) as usize;
    let ready = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    for t in topics {
        for s in 0..w.subscriptions_per_topic {
            let group = format!("{t}-sub-{s}");
            for _ in 0..w.consumer_per_subscription {
                let rec = Arc::new(Recorder::default());
                let (topic, group, shared, ready, o2) = (
                    t.clone(),
                    group.clone(),
                    shared.clone(),
                    ready.clone(),
                    o.clone(),
                );
                let my_cpu = *cpu;
                *cpu += 1;
                let r = rec.clone();
                let h = std::thread::Builder::new()
                    .name("bench-consumer".into())
                    .spawn(move || consume(topic, group, my_cpu, r, shared, ready, o2))
                    .map_err(|e| RunError::Setup(format!("cannot start a consumer thread: {e}")))?;
                consumers.push((rec, h));
            }
        }
    }
    // Every consumer has joined its group (or failed) before the first message goes out.
    let deadline = Instant::now() + Duration::from_secs(90);
    while (ready.load(Ordering::SeqCst) as usize) < consumer_count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if (ready.load(Ordering::SeqCst) as usize) < consumer_count {
        shared.stop_consuming.store(true, Ordering::SeqCst);
        return Err(RunError::Broker(
            "consumers did not join their groups within 90 s".into(),
        ));
    }
    // Let groups with several members settle (a member notices a rebalance at its next
    // heartbeat).
    if w.consumer_per_subscription > 1 {
        std::thread::sleep(Duration::from_secs(4));
    }
    if let Some(e) = shared.first_error() {
        shared.stop_consuming.store(true, Ordering::SeqCst);
        return Err(RunError::Broker(e));
    }
    Ok(consumers)
}

fn consume(
    topic: String,
    group: String,
    cpu: usize,
    rec: Arc<Recorder>,
    shared: Arc<Shared>,
    ready: Arc<AtomicU64>,
    o: RunOptions,
) {
    pin_to(cpu);
    let started =
        Client::new(&o.bootstrap, "spate-bench-c", o.connect_timeout).and_then(|mut c| {
            let mut g = GroupConsumer::new(&topic, Some(&group), StartAt::Earliest);
            g.start(&mut c).map(|_| (c, g))
        });
    ready.fetch_add(1, Ordering::SeqCst);
    let (mut client, mut consumer) = match started {
        Ok(x) => x,
        Err(e) => {
            shared.note_error(format!("consumer of {topic}: {e}"));
            return;
        }
    };
    let mut last_commit = Instant::now();
    let mut next_offset: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    while !shared.stop_consuming.load(Ordering::Relaxed) {
        if shared.consumers_paused.load(Ordering::Relaxed) {
            // Building the backlog: stay in the group, fetch nothing.
            if let Err(e) = consumer.heartbeat(&mut client) {
                rec.error(1);
                shared.note_error(format!("consumer of {topic}: {e}"));
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match consumer.poll(&mut client, Duration::from_millis(100)) {
            Ok(records) => {
                shared
                    .consumed
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                let now = now_micros();
                for r in records {
                    // A record at or below one already seen is consumed twice.
                    let next = next_offset.entry(r.partition).or_insert(0);
                    if r.offset < *next {
                        shared.duplicates.fetch_add(1, Ordering::Relaxed);
                        shared.note_error(format!(
                            "consumer of {topic}: offset {} of partition {} again (next expected {})",
                            r.offset, r.partition, *next
                        ));
                    }
                    *next = (*next).max(r.offset + 1);
                    let Some(v) = r.value else { continue };
                    if v.len() >= 8 {
                        let mut stamp = [0u8; 8];
                        stamp.copy_from_slice(&v[..8]);
                        let sent = u64::from_be_bytes(stamp);
                        rec.record(now.saturating_sub(sent), 1, v.len() as u64);
                    }
                }
                // Offsets are committed once a second, as Kafka consumers auto-commit (every
                // 5 s by default), not after every fetch: a commit is a round trip and a write.
                if last_commit.elapsed() >= COMMIT_EVERY {
                    last_commit = Instant::now();
                    if let Err(e) = consumer.commit(&mut client) {
                        rec.error(1);
                        shared.note_error(format!("commit of {group}: {e}"));
                    }
                }
            }
            Err(e) => {
                rec.error(1);
                shared.note_error(format!("consumer of {topic}: {e}"));
                if matches!(e, ClientError::Io { .. } | ClientError::Protocol(_)) {
                    // The connection is gone or out of step: the next poll reconnects.
                    client.reset();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    if let Err(e) = consumer.commit(&mut client) {
        shared.note_error(format!("commit of {group}: {e}"));
    }
    // Why records may have come twice (Kafka's delivery is at least once).
    for why in consumer.resets() {
        eprintln!("spate-bench: consumer of {topic}: {why}");
    }
    let _ = consumer.leave(&mut client);
}

/// How often a consumer commits its offsets.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
