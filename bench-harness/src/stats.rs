//! Latency and throughput recording: each producer and consumer thread records into its own
//! `Recorder` (an HdrHistogram per interval and one overall, in microseconds); the run's main
//! thread takes the interval figures once a second.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded exactly (microseconds); above it values are clamped.
const MAX_US: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    // 3 significant digits from 1 µs to an hour: always constructible.
    Histogram::new_with_bounds(1, MAX_US, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits"))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub p9999_ms: f64,
    pub max_ms: f64,
    pub samples: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            p9999_ms: ms(h.value_at_quantile(0.9999)),
            max_ms: ms(h.max()),
            samples: h.len(),
        }
    }
}

struct Inner {
    interval: Histogram<u64>,
    total: Histogram<u64>,
    interval_msgs: u64,
    interval_bytes: u64,
    interval_errors: u64,
    msgs: u64,
    bytes: u64,
    errors: u64,
    /// Messages and bytes when the measurement started (after the warm-up).
    measured_from: (u64, u64),
}

/// One thread's figures.
pub struct Recorder {
    inner: Mutex<Inner>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                interval: histogram(),
                total: histogram(),
                interval_msgs: 0,
                interval_bytes: 0,
                interval_errors: 0,
                msgs: 0,
                bytes: 0,
                errors: 0,
                measured_from: (0, 0),
            }),
        }
    }
}

/// What an interval (or the whole run) of one or more recorders adds up to.
pub struct Taken {
    pub latency: Histogram<u64>,
    pub msgs: u64,
    pub bytes: u64,
    pub errors: u64,
}

impl Taken {
    pub fn empty() -> Self {
        Self {
            latency: histogram(),
            msgs: 0,
            bytes: 0,
            errors: 0,
        }
    }

    pub fn add(&mut self, other: &Taken) {
        let _ = self.latency.add(&other.latency);
        self.msgs += other.msgs;
        self.bytes += other.bytes;
        self.errors += other.errors;
    }
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `n` messages of `bytes` bytes in all, each with latency `latency_us`.
    pub fn record(&self, latency_us: u64, n: u64, bytes: u64) {
        let v = latency_us.clamp(1, MAX_US);
        let mut g = self.lock();
        let _ = g.interval.record_n(v, n);
        let _ = g.total.record_n(v, n);
        g.interval_msgs += n;
        g.interval_bytes += bytes;
        g.msgs += n;
        g.bytes += bytes;
    }

    pub fn error(&self, n: u64) {
        let mut g = self.lock();
        g.interval_errors += n;
        g.errors += n;
    }

    /// The interval's figures, starting a new interval.
    pub fn take_interval(&self) -> Taken {
        let mut g = self.lock();
        let latency = std::mem::replace(&mut g.interval, histogram());
        let t = Taken {
            latency,
            msgs: g.interval_msgs,
            bytes: g.interval_bytes,
            errors: g.interval_errors,
        };
        g.interval_msgs = 0;
        g.interval_bytes = 0;
        g.interval_errors = 0;
        t
    }

    /// Ends the warm-up: the overall latency histogram starts again, and [`Recorder::measured`]
    /// counts messages from here.
    pub fn start_measuring(&self) {
        let mut g = self.lock();
        g.total = histogram();
        g.measured_from = (g.msgs, g.bytes);
    }

    /// Latencies, messages and bytes since the measurement started; errors of the whole run.
    pub fn measured(&self) -> Taken {
        let g = self.lock();
        Taken {
            latency: g.total.clone(),
            msgs: g.msgs - g.measured_from.0,
            bytes: g.bytes - g.measured_from.1,
            errors: g.errors,
        }
    }

    /// The counts of the whole run so far (warm-up included), with the measured latencies.
    pub fn total(&self) -> Taken {
        let g = self.lock();
        Taken {
            latency: g.total.clone(),
            msgs: g.msgs,
            bytes: g.bytes,
            errors: g.errors,
        }
    }
}

/// Sums recorders' interval or total figures.
pub fn sum(takes: impl IntoIterator<Item = Taken>) -> Taken {
    let mut out = Taken::empty();
    for t in takes {
        out.add(&t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_reset_and_totals_accumulate() {
        let r = Recorder::default();
        r.record(1000, 10, 100);
        r.record(5000, 1, 10);
        let i = r.take_interval();
        assert_eq!((i.msgs, i.bytes), (11, 110));
        let p = Percentiles::of(&i.latency);
        assert!(
            (p.p50_ms - 1.0).abs() < 0.01 && (p.max_ms - 5.0).abs() < 0.01,
            "{p:?}"
        );
        r.record(2000, 1, 10);
        r.error(2);
        let i = r.take_interval();
        assert_eq!((i.msgs, i.errors), (1, 2));
        let t = r.total();
        assert_eq!((t.msgs, t.errors, t.latency.len()), (12, 2, 12));
        // After the warm-up: latencies and measured counts start again, totals go on.
        r.start_measuring();
        r.record(3000, 4, 40);
        let m = r.measured();
        assert_eq!((m.msgs, m.bytes, m.latency.len()), (4, 40, 4));
        assert_eq!(r.total().msgs, 16);
    }
}
