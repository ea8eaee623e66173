//! The client commands: they speak Kafka to any broker (Spate, Kafka, Redpanda).

pub mod cluster;
pub mod consume;
pub mod group;
pub mod produce;
pub mod tier;
pub mod topic;

use std::time::Duration;

use spate_client::Client;

/// Where to connect, shared by every client command.
#[derive(clap::Args, Debug, Clone)]
pub struct Conn {
    /// Broker to bootstrap from (host:port)
    #[arg(long, short = 'b', default_value = "127.0.0.1:9092", global = true)]
    pub bootstrap: String,
    /// How long to wait for the broker, in milliseconds
    #[arg(long, default_value_t = 10_000, global = true)]
    pub timeout_ms: u64,
}

impl Conn {
    pub fn client(&self) -> Result<Client, String> {
        Client::new(
            &self.bootstrap,
            "spate-cli",
            Duration::from_millis(self.timeout_ms),
        )
        .map_err(|e| e.to_string())
    }
}
