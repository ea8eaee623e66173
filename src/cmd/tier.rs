//! `spate tier status [topic]`: each tiered partition's local and remote bytes and offsets,
//! what is not uploaded yet, and whether the tier answers. From DescribeLogDirs (Spate
//! describes its cold tier as a second log dir: remote bytes per partition, and as offset lag
//! the offsets not uploaded yet) and ListOffsets (earliest, earliest-local, latest-tiered,
//! latest).

use std::collections::BTreeMap;

use kafka_protocol::messages::*;
use spate_client::error_name;

use super::Conn;

#[derive(clap::Subcommand, Debug)]
pub enum TierCommand {
    /// Show each tiered partition's local and remote bytes and offsets and its upload lag
    Status {
        /// Only this topic
        topic: Option<String>,
    },
}

pub fn run(conn: &Conn, cmd: TierCommand) -> Result<(), String> {
    let TierCommand::Status { topic } = cmd;
    let mut client = conn.client()?;
    for broker in client.broker_ids().map_err(|e| e.to_string())? {
        let req = DescribeLogDirsRequest::default().with_topics(None);
        let resp: DescribeLogDirsResponse = client
            .broker(broker)
            .and_then(|c| c.call(req, 1, 4))
            .map_err(|e| e.to_string())?;
        let mut dirs = resp
            .results
            .iter()
            .filter(|d| d.log_dir.as_str() != spate_net::handlers::CLEANER_DIR);
        let Some(local) = dirs.next() else { continue };
        let Some(cold) = dirs.next() else {
            println!("broker {broker}: no cold tier");
            continue;
        };
        let health = if cold.error_code == 0 {
            "answering".to_string()
        } else {
            format!(
                "{} in the last minute (uploads wait and retry; the broker's log says why)",
                error_name(cold.error_code)
            )
        };
        println!(
            "broker {broker}: cold tier {}: {health}",
            cold.log_dir.as_str()
        );
        let sizes = |dir: &describe_log_dirs_response::DescribeLogDirsResult| {
            let mut out = BTreeMap::new();
            for t in &dir.topics {
                for p in &t.partitions {
                    out.insert(
                        (t.name.0.to_string(), p.partition_index),
                        (p.partition_size, p.offset_lag),
                    );
                }
            }
            out
        };
        let local_sizes = sizes(local);
        let remote = sizes(cold);
        println!("  partition\tlog start\tlocal start\ttier end\thigh watermark\tlocal bytes\tremote bytes\tnot uploaded");
        let mut shown = 0;
        for ((name, p), (remote_bytes, lag)) in &remote {
            if topic.as_ref().is_some_and(|t| t != name) {
                continue;
            }
            let mut at = |ts: i64| {
                client
                    .list_offset(name, *p, broker, ts)
                    .map_or_else(|e| format!("({e})"), |o| o.to_string())
            };
            let (start, local_start, tiered, hw) = (at(-2), at(-4), at(-5), at(-1));
            // latest-tiered is the last offset in the tier: the tier ends after it.
            let tier_end = tiered
                .parse::<i64>()
                .map_or(tiered.clone(), |o| (o + 1).max(0).to_string());
            let local_bytes = local_sizes.get(&(name.clone(), *p)).map_or(-1, |s| s.0);
            println!(
                "  {name}-{p}\t{start}\t{local_start}\t{tier_end}\t{hw}\t{local_bytes}\t{remote_bytes}\t{lag} offsets"
            );
            shown += 1;
        }
        if shown == 0 {
            match &topic {
                Some(t) => println!("  no tiered partition of {t} on this broker"),
                None => println!("  no tiered partition on this broker"),
            }
        }
    }
    Ok(())
}
