//! Runs a workload: creates its topics, starts consumers (one pinned thread each, joined to
//! their subscription's group) and then producers (one pinned thread each, open loop at the
//! workload's rate), prints a progress line every second, stops producing after the test
//! duration, waits for the consumers to catch up, and returns every figure.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use serde::Serialize;
use spate_client::{
    error_name, Acks, Client, ClientError, GroupConsumer, InFlightProduce, OutRecord, StartAt,
};

use crate::pin::pin_to;
use crate::rate::Pacer;
use crate::stats::{sum, Percentiles, Recorder};
use crate::workload::Workload;

/// How a run talks to the broker and how long it lasts.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub bootstrap: String,
    pub acks: Acks,
    /// Most bytes of records per produce request.
    pub batch_bytes: usize,
    /// How long a producer waits for more due messages before sending a request.
    pub linger: Duration,
    /// Produce requests a producer has in flight at most (Kafka's
    /// `max.in.flight.requests.per.connection`).
    pub max_in_flight: usize,
    pub compression: Compression,
    /// Ignore the workload's rate: send as fast as the broker acknowledges.
    pub max_rate: bool,
    /// Overrides testDurationMinutes (for short runs and tests).
    pub duration: Option<Duration>,
    /// Overrides warmupDurationMinutes: run this long before measuring.
    pub warmup: Option<Duration>,
    /// How long consumers may take to catch up after producing stops.
    pub drain_timeout: Duration,
    /// Print the progress line every second.
    pub progress: bool,
    /// Broker connection timeout.
    pub connect_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            bootstrap: "127.0.0.1:9092".into(),
            acks: Acks::All,
            batch_bytes: 1 << 20,
            linger: Duration::from_millis(1),
            max_in_flight: 5,
            compression: Compression::None,
            max_rate: false,
            duration: None,
            warmup: None,
            drain_timeout: Duration::from_secs(30),
            progress: true,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Broker(String),
    #[error("{0}")]
    Setup(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    pub t_s: f64,
    pub publish_msgs_per_s: f64,
    pub publish_mb_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
    pub publish_errors: u64,
    pub publish_latency: Percentiles,
    pub end_to_end_latency: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overall {
    /// The measured time (after the warm-up); throughputs and latencies are over it.
    pub duration_s: f64,
    /// Messages produced and consumed over the whole run, warm-up included (every message
    /// produced must be consumed).
    pub produced: u64,
    pub consumed: u64,
    /// Messages each subscription should have read: produced x subscriptions per topic.
    pub expected_consumed: u64,
    pub publish_errors: u64,
    pub consume_errors: u64,
    /// Records consumed more than once (at-least-once redelivery, or a broker bug).
    pub duplicates: u64,
    pub publish_msgs_per_s: f64,
    pub publish_mb_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
    pub publish_latency: Percentiles,
    pub end_to_end_latency: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub workload: Workload,
    pub bootstrap: String,
    pub acks: String,
    pub compression: String,
    pub batch_bytes: usize,
    pub linger_ms: u64,
    pub max_in_flight: usize,
    pub max_rate: bool,
    pub target_rate_msgs_per_s: Option<f64>,
    /// Seconds run before measuring (their intervals are in `intervals` too).
    pub warmup_s: f64,
    /// With consumerBacklogSizeGB: when the backlog was built and how fast it drained.
    pub backlog: Option<BacklogResult>,
    pub topics: Vec<String>,
    pub intervals: Vec<Interval>,
    pub overall: Overall,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn create_topics(client: &mut Client, names: &[String], partitions: u32) -> Result<(), RunError> {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(
            names
                .iter()
                .map(|n| {
                    CreatableTopic::default()
                        .with_name(TopicName(sb(n)))
                        .with_num_partitions(partitions as i32)
                        .with_replication_factor(-1)
                })
                .collect(),
        );
    let resp: CreateTopicsResponse = client
        .any()
        .and_then(|c| c.call(req, 2, 7))
        .map_err(|e| RunError::Broker(e.to_string()))?;
    for t in resp.topics {
        if t.error_code != 0 {
            return Err(RunError::Broker(format!(
                "cannot create topic {}: {}",
                t.name.0.as_str(),
                error_name(t.error_code)
            )));
        }
    }
    for n in names {
        client
            .topic(n, false)
            .map_err(|e| RunError::Broker(e.to_string()))?;
    }
    Ok(())
}

/// A payload: the send time (µs since the epoch) and the producer's sequence, then filler.
/// Message values for one request, cut from one buffer: `count` values of `size` bytes, each
/// starting with the send time (µs since the epoch) and a sequence number.
fn payloads(template: &[u8], count: usize, first_seq: u64, stamp: u64) -> Vec<Bytes> {
    let size = template.len();
    let mut buf = BytesMut::with_capacity(size * count);
    for i in 0..count as u64 {
        let at = buf.len();
        buf.put_slice(template);
        if size >= 16 {
            buf[at..at + 8].copy_from_slice(&stamp.to_be_bytes());
            buf[at + 8..at + 16].copy_from_slice(&(first_seq + i).to_be_bytes());
        }
    }
    // One buffer, one slice per message (a reference count each, no copy).
    let all = buf.freeze();
    (0..count)
        .map(|i| all.slice(i * size..(i + 1) * size))
        .collect()
}

struct Shared {
    stop_producing: AtomicBool,
    stop_consuming: AtomicBool,
    first_error: std::sync::Mutex<Option<String>>,
    produced: AtomicU64,
    /// Messages consumed, all consumers together.
    consumed: AtomicU64,
    /// Records a consumer received again (an offset at or below one it had).
    duplicates: AtomicU64,
    /// Consumers hold off (keeping their group membership) while the backlog builds.
    consumers_paused: AtomicBool,
}

impl Shared {
    fn note_error(&self, e: String) {
        let mut g = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
    }
}

/// Runs `w` with `o`. Fails fast (clear message) if the broker is unreachable.
pub fn run(w: &Workload, o: &RunOptions) -> Result<Results, RunError> {
    w.validate().map_err(|e| RunError::Setup(e.to_string()))?;
    let mut admin = Client::new(&o.bootstrap, "spate-bench", o.connect_timeout)
        .map_err(|e| RunError::Broker(e.to_string()))?;
    let tag = format!("{:x}", now_micros() & 0xff_ffff);
    let topics: Vec<String> = (0..w.topics).map(|i| format!("bench-{tag}-{i}")).collect();
    create_topics(&mut admin, &topics, w.partitions_per_topic)?;

    let shared = Arc::new(Shared {
        stop_producing: AtomicBool::new(false),
        stop_consuming: AtomicBool::new(false),
        first_error: std::sync::Mutex::new(None),
        produced: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        consumers_paused: AtomicBool::new(w.consumer_backlog_size_gb > 0.0),
    });
    let mut cpu = 0usize;

    // Consumers first, so they are in their groups before the first message.
    let consumer_count =
        (w.topics * w.subscriptions_per_topic * w.consumer_per_subscription) as usize;
    let ready = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    for t in &topics {
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
                let my_cpu = cpu;
                cpu += 1;
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
    if let Some(e) = shared
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        shared.stop_consuming.store(true, Ordering::SeqCst);
        return Err(RunError::Broker(e));
    }

    let producer_count = (w.topics * w.producers_per_topic) as usize;
    let rate = (!o.max_rate).then(|| w.producer_rate / producer_count as f64);
    let start = Instant::now();
    let mut producers = Vec::new();
    for (ti, t) in topics.iter().enumerate() {
        for p in 0..w.producers_per_topic {
            let rec = Arc::new(Recorder::default());
            let (topic, shared, o2, w2, r) =
                (t.clone(), shared.clone(), o.clone(), w.clone(), rec.clone());
            let my_cpu = cpu;
            cpu += 1;
            let id = (ti as u64) << 32 | u64::from(p);
            let h = std::thread::Builder::new()
                .name("bench-producer".into())
                .spawn(move || produce(topic, id, my_cpu, rate, start, w2, r, shared, o2))
                .map_err(|e| RunError::Setup(format!("cannot start a producer thread: {e}")))?;
            producers.push((rec, h));
        }
    }

    let duration = o
        .duration
        .unwrap_or_else(|| Duration::from_secs_f64(w.test_duration_minutes * 60.0));
    let mut intervals = Vec::new();
    let mut last = Instant::now();
    let tick = |intervals: &mut Vec<Interval>, last: &mut Instant| {
        let pubs = sum(producers.iter().map(|(r, _)| r.take_interval()));
        let cons = sum(consumers.iter().map(|(r, _)| r.take_interval()));
        let dt = last.elapsed().as_secs_f64().max(1e-6);
        *last = Instant::now();
        let i = Interval {
            t_s: start.elapsed().as_secs_f64(),
            publish_msgs_per_s: pubs.msgs as f64 / dt,
            publish_mb_per_s: pubs.bytes as f64 / dt / 1e6,
            consume_msgs_per_s: cons.msgs as f64 / dt,
            consume_mb_per_s: cons.bytes as f64 / dt / 1e6,
            publish_errors: pubs.errors,
            publish_latency: Percentiles::of(&pubs.latency),
            end_to_end_latency: Percentiles::of(&cons.latency),
        };
        if o.progress {
            eprintln!(
                "{:6.1}s  pub {:9.0} msg/s {:7.1} MB/s  cons {:9.0} msg/s {:7.1} MB/s  pub p50 {:7.2} p99 {:7.2} ms  e2e p99 {:7.2} ms  errors {}",
                i.t_s,
                i.publish_msgs_per_s,
                i.publish_mb_per_s,
                i.consume_msgs_per_s,
                i.consume_mb_per_s,
                i.publish_latency.p50_ms,
                i.publish_latency.p99_ms,
                i.end_to_end_latency.p99_ms,
                i.publish_errors
            );
        }
        intervals.push(i);
    };
    let mut backlog = (w.consumer_backlog_size_gb > 0.0).then(|| BacklogTracker::new(w));
    // The warm-up runs like the test; at its end the overall figures start again.
    let warmup = o
        .warmup
        .unwrap_or_else(|| Duration::from_secs_f64(w.warmup_duration_minutes * 60.0));
    let mut measure_start = (warmup.is_zero()).then_some(start);
    let duration = duration + warmup;
    while start.elapsed() < duration {
        if measure_start.is_none() && start.elapsed() >= warmup {
            for (r, _) in producers.iter().chain(consumers.iter()) {
                r.start_measuring();
            }
            measure_start = Some(Instant::now());
            if o.progress {
                eprintln!("warm-up done: measuring from here");
            }
        }
        let next_tick = last + Duration::from_secs(1);
        let tick_end = if measure_start.is_none() {
            warmup
        } else {
            duration
        };
        while Instant::now() < next_tick && start.elapsed() < tick_end {
            std::thread::sleep(Duration::from_millis(50));
            if let Some(b) = backlog.as_mut() {
                b.check(&shared, start);
            }
        }
        tick(&mut intervals, &mut last);
    }
    shared.stop_producing.store(true, Ordering::SeqCst);
    if let Some(b) = backlog.as_mut() {
        if shared.consumers_paused.swap(false, Ordering::SeqCst) {
            eprintln!(
                "spate-bench: the backlog of {:.3} GB was not reached in the test duration; consumers resume now",
                w.consumer_backlog_size_gb
            );
        }
        b.check(&shared, start);
    }
    let (producer_recs, producer_handles): (Vec<_>, Vec<_>) = producers.into_iter().unzip();
    for h in producer_handles {
        let _ = h.join();
    }
    let measure_start = measure_start.unwrap_or(start);
    let produce_secs = measure_start.elapsed().as_secs_f64();
    let produced = shared.produced.load(Ordering::SeqCst);
    let expected = produced * u64::from(w.subscriptions_per_topic);
    let drain_start = Instant::now();
    while drain_start.elapsed() < o.drain_timeout && o.acks != Acks::None {
        if let Some(b) = backlog.as_mut() {
            b.check(&shared, start);
        }
        if shared.consumed.load(Ordering::SeqCst) >= expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(b) = backlog.as_mut() {
        b.check(&shared, start);
    }
    shared.stop_consuming.store(true, Ordering::SeqCst);
    let (consumer_recs, consumer_handles): (Vec<_>, Vec<_>) = consumers.into_iter().unzip();
    for h in consumer_handles {
        let _ = h.join();
    }
    let pubs = sum(producer_recs.iter().map(|r| r.total()));
    let cons = sum(consumer_recs.iter().map(|r| r.total()));
    let pubs_measured = sum(producer_recs.iter().map(|r| r.measured()));
    let cons_measured = sum(consumer_recs.iter().map(|r| r.measured()));
    let consume_secs = measure_start.elapsed().as_secs_f64();
    if let Some(e) = shared
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        eprintln!("spate-bench: first error: {e}");
    }
    Ok(Results {
        workload: w.clone(),
        bootstrap: o.bootstrap.clone(),
        acks: match o.acks {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
        .into(),
        compression: format!("{:?}", o.compression).to_lowercase(),
        batch_bytes: o.batch_bytes,
        linger_ms: o.linger.as_millis() as u64,
        max_in_flight: o.max_in_flight,
        max_rate: o.max_rate,
        target_rate_msgs_per_s: (!o.max_rate).then_some(w.producer_rate),
        warmup_s: warmup.as_secs_f64(),
        backlog: backlog.map(|b| b.result()),
        topics,
        intervals,
        overall: Overall {
            duration_s: produce_secs,
            produced,
            consumed: cons.msgs,
            expected_consumed: expected,
            publish_errors: pubs.errors,
            consume_errors: cons.errors,
            duplicates: shared.duplicates.load(Ordering::SeqCst),
            publish_msgs_per_s: pubs_measured.msgs as f64 / produce_secs,
            publish_mb_per_s: pubs_measured.bytes as f64 / produce_secs / 1e6,
            consume_msgs_per_s: cons_measured.msgs as f64 / consume_secs,
            consume_mb_per_s: cons_measured.bytes as f64 / consume_secs / 1e6,
            publish_latency: Percentiles::of(&pubs_measured.latency),
            end_to_end_latency: Percentiles::of(&cons_measured.latency),
        },
    })
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

/// OpenMessaging's backlog phase: consumers stay paused until the backlog (messages produced
/// for every subscription and not consumed) reaches consumerBacklogSizeGB, then resume and
/// drain it while producers go on.
struct BacklogTracker {
    requested_bytes: f64,
    message_size: f64,
    subscriptions: u64,
    reached: Option<(f64, u64)>,
    /// The backlog reached its size (rather than the run ending first).
    built: bool,
    drained: Option<(f64, u64)>,
}

/// When the backlog was built and drained, and the consume rate while it drained.
#[derive(Debug, Clone, Serialize)]
pub struct BacklogResult {
    pub requested_bytes: f64,
    /// Whether the backlog reached its size before the producers stopped.
    pub built: bool,
    /// Seconds from the start until the consumers resumed (the backlog built, or the
    /// producers stopped first).
    pub reached_after_s: Option<f64>,
    /// Seconds from the start until the consumers had caught up.
    pub drained_after_s: Option<f64>,
    /// Consume throughput from resuming until caught up (MB/s, 10^6 bytes).
    pub drain_consume_mb_per_s: Option<f64>,
}

impl BacklogTracker {
    fn new(w: &Workload) -> Self {
        Self {
            requested_bytes: w.consumer_backlog_size_gb * 1e9,
            message_size: w.message_size as f64,
            subscriptions: u64::from(w.subscriptions_per_topic),
            reached: None,
            built: false,
            drained: None,
        }
    }

    fn check(&mut self, shared: &Shared, start: Instant) {
        let produced = shared.produced.load(Ordering::SeqCst) * self.subscriptions;
        let consumed = shared.consumed.load(Ordering::SeqCst);
        let t = start.elapsed().as_secs_f64();
        if self.reached.is_none() {
            let backlog = produced.saturating_sub(consumed) as f64 * self.message_size;
            self.built = backlog >= self.requested_bytes;
            if self.built || !shared.consumers_paused.load(Ordering::SeqCst) {
                self.reached = Some((t, consumed));
                shared.consumers_paused.store(false, Ordering::SeqCst);
            }
        } else if self.drained.is_none() && consumed >= produced {
            self.drained = Some((t, consumed));
        }
    }

    fn result(&self) -> BacklogResult {
        let rate = match (self.reached, self.drained) {
            (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
                Some((c1 - c0) as f64 * self.message_size / (t1 - t0) / 1e6)
            }
            _ => None,
        };
        BacklogResult {
            requested_bytes: self.requested_bytes,
            built: self.built,
            reached_after_s: self.reached.map(|r| r.0),
            drained_after_s: self.drained.map(|d| d.0),
            drain_consume_mb_per_s: rate,
        }
    }
}

/// How often a consumer commits its offsets.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
