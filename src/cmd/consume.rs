//! `spate consume TOPIC`: print records, one per line, alone or as a group member.

use std::io::Write;
use std::time::{Duration, Instant};

use spate_client::{GroupConsumer, StartAt};

use super::Conn;

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start at the oldest record instead of the end (when the group has no committed offset)
    #[arg(long)]
    pub from_beginning: bool,
    /// Consume as a member of this group, resuming from and committing its offsets
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Print keys before values, separated by SEP
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Stop after this many records
    #[arg(long, short = 'n')]
    pub max_messages: Option<u64>,
    /// Stop when no record arrives for this many milliseconds [default: never stop]
    #[arg(long)]
    pub idle_exit_ms: Option<u64>,
}

pub fn run(conn: &Conn, args: ConsumeArgs) -> Result<(), String> {
    let mut client = conn.client()?;
    let start = if args.from_beginning {
        StartAt::Earliest
    } else {
        StartAt::Latest
    };
    let mut consumer = GroupConsumer::new(&args.topic, args.group.as_deref(), start);
    consumer.start(&mut client).map_err(|e| e.to_string())?;
    let mut seen = 0u64;
    let mut last = Instant::now();
    let stdout = std::io::stdout();
    let result = loop {
        if args.max_messages.is_some_and(|m| seen >= m) {
            break Ok(());
        }
        if args
            .idle_exit_ms
            .is_some_and(|ms| last.elapsed() >= Duration::from_millis(ms))
        {
            break Ok(());
        }
        let records = match consumer.poll(&mut client, Duration::from_millis(500)) {
            Ok(r) => r,
            Err(e) => break Err(e.to_string()),
        };
        if !records.is_empty() {
            last = Instant::now();
        }
        let mut out = stdout.lock();
        for r in records {
            if args.max_messages.is_some_and(|m| seen >= m) {
                // Not printed: the group's position goes back to it.
                consumer.rewind(r.partition, r.offset);
                continue;
            }
            let value = r
                .value
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let line = match &args.key_separator {
                Some(sep) => {
                    let key = r
                        .key
                        .as_deref()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default();
                    format!("{key}{sep}{value}")
                }
                None => value.into_owned(),
            };
            if writeln!(out, "{line}").is_err() {
                return Ok(()); // stdout closed (e.g. piped into head)
            }
            seen += 1;
        }
        let _ = out.flush();
        if let Err(e) = consumer.commit(&mut client) {
            break Err(e.to_string());
        }
    };
    let _ = consumer.leave(&mut client);
    result
}
