//! `spate produce TOPIC`: one record per line of standard input.

use std::io::BufRead;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use spate_client::{Acks, OutRecord};

use super::Conn;

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    /// Topic to write to (created if the broker auto-creates topics)
    pub topic: String,
    /// Split each line at the first SEP into key and value; lines without it have no key
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Acknowledgements: 0 (none), 1 (written by the leader) or all (durable)
    #[arg(long, default_value = "all", value_parser = ["0", "1", "all", "-1"])]
    pub acks: String,
    /// Compression: none, gzip, snappy, lz4, zstd
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    pub compression: String,
    /// Records per request
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

pub fn run(conn: &Conn, args: ProduceArgs) -> Result<(), String> {
    let acks = match args.acks.as_str() {
        "0" => Acks::None,
        "1" => Acks::Leader,
        _ => Acks::All,
    };
    let compression = match args.compression.as_str() {
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => Compression::None,
    };
    let mut client = conn.client()?;
    let mut pending = Vec::new();
    let mut next = 0u32;
    let mut sent = 0usize;
    let stdin = std::io::stdin();
    let flush = |client: &mut spate_client::Client,
                 pending: &mut Vec<OutRecord>,
                 next: &mut u32|
     -> Result<usize, String> {
        let n = pending.len();
        if n > 0 {
            client
                .produce(
                    &args.topic,
                    std::mem::take(pending),
                    acks,
                    compression,
                    next,
                )
                .map_err(|e| e.to_string())?;
        }
        Ok(n)
    };
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| format!("reading standard input: {e}"))?;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                None => (None, line),
            },
            None => (None, line),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        pending.push(OutRecord {
            key,
            value: Some(Bytes::from(value)),
            headers: Vec::new(),
            timestamp_ms: now,
        });
        if pending.len() >= args.batch.max(1) {
            sent += flush(&mut client, &mut pending, &mut next)?;
        }
    }
    sent += flush(&mut client, &mut pending, &mut next)?;
    eprintln!("produced {sent} records to {}", args.topic);
    Ok(())
}
