//! A shard cleaner's I/O rate: bytes read and written are counted, and the pass sleeps
//! whenever it is ahead of `bytes_per_second` (Kafka's cleaner throttler).
//!
//! A pacer, not an average since the pass began: time the cleaner spends elsewhere (its CPU
//! work, a yield to produce) banks at most `BURST` of credit, so that it never catches up
//! in a burst at the disk's full rate: the rate holds over every window of `BURST`, which is
//! what the produce and fetch beside it see.

use std::time::{Duration, Instant};

/// The most idle time a pass may spend later at full speed.
const BURST: Duration = Duration::from_millis(50);

pub struct Throttle {
    bytes_per_second: u64,
    /// When the bytes charged so far are paid for at the rate.
    paid_until: Instant,
}

impl Throttle {
    /// 0: unthrottled.
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second,
            paid_until: Instant::now(),
        }
    }

    /// How long to wait after `bytes` more, to stay within the rate.
    pub fn charge(&mut self, bytes: u64) -> Option<Duration> {
        self.charge_at(bytes, Instant::now())
    }

    fn charge_at(&mut self, bytes: u64, now: Instant) -> Option<Duration> {
        if self.bytes_per_second == 0 {
            return None;
        }
        let earliest = now.checked_sub(BURST).unwrap_or(now);
        let from = self.paid_until.max(earliest);
        self.paid_until =
            from + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
        self.paid_until
            .checked_duration_since(now)
            .filter(|d| *d > Duration::from_millis(1))
    }

    /// Counts `bytes` and sleeps as long as the rate asks.
    pub async fn pace(&mut self, bytes: u64) {
        if let Some(d) = self.charge(bytes) {
            glommio::timer::sleep(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_for_a_wait_only_when_ahead_of_the_rate() {
        assert_eq!(Throttle::new(0).charge(1 << 30), None);
        let mut t = Throttle::new(1_000_000);
        let wait = t.charge(2_000_000).expect("two seconds of bytes at once");
        assert!(wait <= Duration::from_secs(2), "{wait:?}");
        assert!(wait > Duration::from_millis(1900), "{wait:?}");
        // A small charge well within the rate waits for nothing.
        let mut t = Throttle::new(1_000_000);
        let t0 = Instant::now();
        assert_eq!(t.charge_at(500, t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn an_idle_spell_banks_at_most_the_burst() {
        let mut t = Throttle::new(1_000_000);
        let t0 = Instant::now();
        assert!(t.charge_at(1_000_000, t0).is_some());
        // Ten seconds later, an average since the start would allow 9 MB at once; the pacer
        // allows the burst's 50 KB and asks to wait for the rest of the second.
        let later = t0 + Duration::from_secs(10);
        let wait = t
            .charge_at(1_000_000, later)
            .expect("a second's bytes at once");
        assert_eq!(wait, Duration::from_secs(1) - BURST);
        // Paced back to back: each further second of bytes waits one second more.
        let wait = t
            .charge_at(1_000_000, later)
            .expect("another second's bytes");
        assert_eq!(wait, Duration::from_secs(2) - BURST);
    }
}
