//! A shard cleaner's I/O rate: bytes read and written are counted, and the pass sleeps
//! whenever it is ahead of `bytes_per_second` since it started (Kafka's cleaner throttler).

use std::time::{Duration, Instant};

pub struct Throttle {
    bytes_per_second: u64,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    /// 0: unthrottled.
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// How long to wait after `bytes` more, to stay within the rate.
    pub fn charge(&mut self, bytes: u64) -> Option<Duration> {
        if self.bytes_per_second == 0 {
            return None;
        }
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_second as f64);
        due.checked_sub(self.started.elapsed())
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
    }
}
