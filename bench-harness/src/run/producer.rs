//! The producer threads: one per producer of the workload, pinned, each with its own client.
//! A producer paces messages open loop (message *i* is due at start + *i*/rate, or as fast as
//! acknowledged with `--max-rate`), sends what is due in one request (up to `--batch-bytes`,
//! after `--linger-ms`) with up to `--max-in-flight` requests unanswered, and records each
//! message's publish latency from when it was due, so a stall is charged to every message it
//! delayed.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use spate_client::{Client, InFlightProduce, OutRecord};

use super::payload::{now_micros, payloads};
use super::shared::Shared;
use super::{RunError, RunOptions, Worker};
use crate::pin::pin_to;
use crate::rate::Pacer;
use crate::stats::Recorder;
use crate::workload::Workload;

/// Starts one thread per producer of the workload, pinned from CPU `*cpu` on; `rate` is each
/// producer's share of the workload's rate (None: as fast as acknowledged), paced from `start`.
pub(super) fn start_producers(
    w: &Workload,
    o: &RunOptions,
    topics: &[String],
    shared: &Arc<Shared>,
    cpu: &mut usize,
    rate: Option<f64>,
    start: Instant,
) -> Result<Vec<Worker>, RunError> {
    let mut producers = Vec::new();
    for (ti, t) in topics.iter().enumerate() {
        for p in 0..w.producers_per_topic {
            let rec = Arc::new(Recorder::default());
            let (topic, shared, o2, w2, r) =
                (t.clone(), shared.clone(), o.clone(), w.clone(), rec.clone());
            let my_cpu = *cpu;
            *cpu += 1;
            let id = (ti as u64) << 32 | u64::from(p);
            let h = std::thread::Builder::new()
                .name("bench-producer".into())
                .spawn(move || produce(topic, id, my_cpu, rate, start, w2, r, shared, o2))
                .map_err(|e| RunError::Setup(format!("cannot start a producer thread: {e}")))?;
            producers.push((rec, h));
        }
    }
    Ok(producers)
}

#[allow(clippy::too_many_arguments)]
fn produce(
    topic: String,
    id: u64,
    cpu: usize,
    rate: Option<f64>,
    start: Instant,
    w: Workload,
    rec: Arc<Recorder>,
    shared: Arc<Shared>,
    o: RunOptions,
) {
    pin_to(cpu);
    let mut client = match Client::new(
        &o.bootstrap,
        &format!("spate-bench-p{id}"),
        o.connect_timeout,
    ) {
        Ok(c) => c,
        Err(e) => {
            shared.note_error(e.to_string());
            return;
        }
    };
    let per_request = (o.batch_bytes / w.message_size).max(1);
    let mut pacer = rate.map(|r| Pacer::new(r, start));
    let template = vec![0x5au8; w.message_size];
    let mut seq = 0u64;
    let mut rr = 0u32;
    // Requests sent and not yet acknowledged, oldest first, with when each message was due.
    let mut in_flight: VecDeque<(InFlightProduce, Vec<Instant>)> = VecDeque::new();
    let max_in_flight = o.max_in_flight.max(1);
    let finish_oldest = |client: &mut Client, in_flight: &mut VecDeque<_>| {
        let Some((sent, due)): Option<(InFlightProduce, Vec<Instant>)> = in_flight.pop_front()
        else {
            return;
        };
        let n = due.len() as u64;
        match client.produce_wait(sent) {
            Ok(_) => {
                let acked = Instant::now();
                // Messages due at the same instant (all of a request, at max rate) are one
                // histogram entry.
                for run in due.chunk_by(|a, b| a == b) {
                    let n = run.len() as u64;
                    rec.record(
                        acked.saturating_duration_since(run[0]).as_micros() as u64,
                        n,
                        n * w.message_size as u64,
                    );
                }
                shared.produced.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                // Everything in flight on the connection is lost with it.
                let lost: u64 = n + in_flight.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
                in_flight.clear();
                rec.error(lost);
                shared.note_error(format!("produce to {topic}: {e}"));
                client.reset();
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    while !shared.stop_producing.load(Ordering::Relaxed) {
        let now = Instant::now();
        let due: Vec<Instant> = match pacer.as_mut() {
            Some(p) => {
                let d = p.take_due(now, per_request);
                if d.is_empty() {
                    if !in_flight.is_empty() {
                        // Nothing due yet: collect an acknowledgement meanwhile.
                        finish_oldest(&mut client, &mut in_flight);
                        continue;
                    }
                    let wait = p.next_due().saturating_duration_since(now);
                    std::thread::sleep(wait.min(Duration::from_millis(5)));
                    continue;
                }
                if d.len() < per_request && !o.linger.is_zero() {
                    // Let a few more come due, then send them together.
                    std::thread::sleep(o.linger.min(p.next_due().saturating_duration_since(now)));
                    let mut d = d;
                    d.extend(p.take_due(Instant::now(), per_request - d.len()));
                    d
                } else {
                    d
                }
            }
            None => vec![now; per_request],
        };
        let stamp = now_micros();
        let values = payloads(&template, due.len(), id << 40 | (seq + 1), stamp);
        let records: Vec<OutRecord> = values
            .into_iter()
            .map(|value| {
                seq += 1;
                let key = match w.key_distributor.as_str() {
                    "KEY_ROUND_ROBIN" => Some(Bytes::from((seq % 1000).to_string())),
                    "RANDOM_NANO" => Some(Bytes::from(
                        SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.subsec_nanos())
                            .to_string(),
                    )),
                    _ => None,
                };
                OutRecord {
                    key,
                    value: Some(value),
                    headers: Vec::new(),
                    timestamp_ms: (stamp / 1000) as i64,
                }
            })
            .collect();
        match client.produce_send(&topic, records, o.acks, o.compression, &mut rr) {
            Ok(sent) => in_flight.push_back((sent, due)),
            Err(e) => {
                let lost: u64 =
                    due.len() as u64 + in_flight.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
                in_flight.clear();
                rec.error(lost);
                shared.note_error(format!("produce to {topic}: {e}"));
                // A connection error: the next call reconnects.
                client.reset();
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        while in_flight.len() >= max_in_flight {
            finish_oldest(&mut client, &mut in_flight);
        }
    }
    while !in_flight.is_empty() {
        finish_oldest(&mut client, &mut in_flight);
    }
}
