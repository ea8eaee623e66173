//! Open-loop pacing: message i is due at `start + i / rate`, whatever happened to the ones
//! before it. A producer that falls behind sends what is due at once, and each message's
//! latency is measured from when it was due (coordinated-omission correction), so a stall
//! shows as the latency every waiting message would have seen.

use std::time::{Duration, Instant};

pub struct Pacer {
    start: Instant,
    interval: Duration,
    issued: u64,
}

impl Pacer {
    pub fn new(rate_per_s: f64, start: Instant) -> Self {
        Self {
            start,
            interval: Duration::from_secs_f64(1.0 / rate_per_s),
            issued: 0,
        }
    }

    /// When message `n` is due.
    pub fn due(&self, n: u64) -> Instant {
        self.start + self.interval.mul_f64(n as f64)
    }

    /// Takes up to `max` messages due by `now`; returns their due times (empty if none).
    pub fn take_due(&mut self, now: Instant, max: usize) -> Vec<Instant> {
        let mut out = Vec::new();
        while out.len() < max && self.due(self.issued) <= now {
            out.push(self.due(self.issued));
            self.issued += 1;
        }
        out
    }

    /// When the next message is due.
    pub fn next_due(&self) -> Instant {
        self.due(self.issued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_follow_the_rate_even_when_late() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000.0, t0);
        // 10 ms late: 11 messages are due (0 ms .. 10 ms), with their own due times.
        let due = p.take_due(t0 + Duration::from_millis(10), 100);
        assert_eq!(due.len(), 11);
        assert_eq!(due[5] - t0, Duration::from_millis(5));
        assert!(p.take_due(t0 + Duration::from_millis(10), 100).is_empty());
        assert_eq!(p.next_due() - t0, Duration::from_millis(11));
        assert_eq!(p.take_due(t0 + Duration::from_secs(1), 3).len(), 3);
    }
}
