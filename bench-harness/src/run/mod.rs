//! Runs a workload: creates its topics, starts consumers (one pinned thread each, joined to
//! their subscription's group) and then producers (one pinned thread each, open loop at the
//! workload's rate), prints a progress line every second, stops producing after the test
//! duration, waits for the consumers to catch up, and returns every figure.
//!
//! This file is the run's timeline (setup, warm-up, measurement, drain, results); its parts,
//! one file each: options and errors (`options.rs`), the figures returned (`results.rs`), the
//! topics (`topics.rs`), message values (`payload.rs`), what the threads share (`shared.rs`),
//! the producer and consumer threads (`producer.rs`, `consumer.rs`), the backlog phase
//! (`backlog.rs`) and the per-second figures and progress line (`interval.rs`).

mod backlog;
mod consumer;
mod interval;
mod options;
mod payload;
mod producer;
mod results;
mod shared;
mod topics;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use spate_client::{Acks, Client};

pub use backlog::BacklogResult;
pub use options::{RunError, RunOptions};
pub use results::{Interval, Overall, Results};

use backlog::BacklogTracker;
use consumer::start_consumers;
use interval::{print_progress, take_interval};
use payload::now_micros;
use producer::start_producers;
use shared::Shared;
use topics::create_topics;

use crate::stats::{sum, Percentiles, Recorder};
use crate::workload::Workload;

/// A producer or consumer thread and the recorder it fills.
type Worker = (Arc<Recorder>, JoinHandle<()>);

/// Runs `w` with `o`. Fails fast (clear message) if the broker is unreachable.
pub fn run(w: &Workload, o: &RunOptions) -> Result<Results, RunError> {
    w.validate().map_err(|e| RunError::Setup(e.to_string()))?;
    let mut admin = Client::new(&o.bootstrap, "spate-bench", o.connect_timeout)
        .map_err(|e| RunError::Broker(e.to_string()))?;
    let tag = format!("{:x}", now_micros() & 0xff_ffff);
    let topics: Vec<String> = (0..w.topics).map(|i| format!("bench-{tag}-{i}")).collect();
    create_topics(&mut admin, &topics, w.partitions_per_topic)?;

    let shared = Arc::new(Shared::new(w.consumer_backlog_size_gb > 0.0));
    let mut cpu = 0usize;

    // Consumers first, so they are in their groups before the first message.
    let consumers = start_consumers(w, o, &topics, &shared, &mut cpu)?;

    let producer_count = (w.topics * w.producers_per_topic) as usize;
    let rate = (!o.max_rate).then(|| w.producer_rate / producer_count as f64);
    let start = Instant::now();
    let producers = start_producers(w, o, &topics, &shared, &mut cpu, rate, start)?;

    let duration = o
        .duration
        .unwrap_or_else(|| Duration::from_secs_f64(w.test_duration_minutes * 60.0));
    let mut intervals = Vec::new();
    let mut last = Instant::now();
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
        let i = take_interval(&producers, &consumers, start, &mut last);
        if o.progress {
            print_progress(&i);
        }
        intervals.push(i);
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
    if let Some(e) = shared.first_error() {
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
