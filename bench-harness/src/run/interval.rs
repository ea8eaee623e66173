//! The per-second figures: every thread's interval histograms taken and summed into one
//! [`Interval`], and the progress line printed from it.

use std::time::Instant;

use super::{Interval, Worker};
use crate::stats::{sum, Percentiles};

/// Takes the interval since `*last` from every producer and consumer (and restarts it).
pub(super) fn take_interval(
    producers: &[Worker],
    consumers: &[Worker],
    start: Instant,
    last: &mut Instant,
) -> Interval {
    let pubs = sum(producers.iter().map(|(r, _)| r.take_interval()));
    let cons = sum(consumers.iter().map(|(r, _)| r.take_interval()));
    let dt = last.elapsed().as_secs_f64().max(1e-6);
    *last = Instant::now();
    Interval {
        t_s: start.elapsed().as_secs_f64(),
        publish_msgs_per_s: pubs.msgs as f64 / dt,
        publish_mb_per_s: pubs.bytes as f64 / dt / 1e6,
        consume_msgs_per_s: cons.msgs as f64 / dt,
        consume_mb_per_s: cons.bytes as f64 / dt / 1e6,
        publish_errors: pubs.errors,
        publish_latency: Percentiles::of(&pubs.latency),
        end_to_end_latency: Percentiles::of(&cons.latency),
    }
}

/// The live progress line, on stderr.
pub(super) fn print_progress(i: &Interval) {
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
