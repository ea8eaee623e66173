//! How a run talks to the broker and how long it lasts ([`RunOptions`], with the defaults the
//! command line starts from), and how a run fails ([`RunError`]).

use std::time::Duration;

use kafka_protocol::records::Compression;
use spate_client::Acks;

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
