//! `spate topic create|list|describe|delete`.

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use spate_client::{error_name, Client};

use super::Conn;

#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic
    Create {
        name: String,
        /// Number of partitions [default: the broker's default]
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Replicas of each partition, on as many brokers of a cluster [default: the
        /// broker's default.replication.factor]
        #[arg(long, short = 'r')]
        replication_factor: Option<i16>,
        /// Topic config as key=value (any Kafka topic config: retention.ms, cleanup.policy, ...); repeatable
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topics
    List {
        /// Include internal topics such as __consumer_offsets
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic's partitions, offsets and settings (and, for a compacted topic, each
    /// partition's dirty ratio and last compaction)
    Describe { name: String },
    /// Delete a topic and all its data
    Delete { name: String },
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn check(code: i16, msg: Option<&StrBytes>, what: &str) -> Result<(), String> {
    if code == 0 {
        return Ok(());
    }
    let detail = msg.map(|m| format!(": {}", m.as_str())).unwrap_or_default();
    Err(format!("{what}: {}{detail}", error_name(code)))
}

pub fn run(conn: &Conn, cmd: TopicCommand) -> Result<(), String> {
    let mut client = conn.client()?;
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let mut cfgs = Vec::new();
            for c in &configs {
                let (k, v) = c.split_once('=').ok_or_else(|| {
                    format!("--config {c:?}: expected KEY=VALUE, e.g. retention.ms=86400000")
                })?;
                cfgs.push(
                    CreatableTopicConfig::default()
                        .with_name(sb(k))
                        .with_value(Some(sb(v))),
                );
            }
            let req = CreateTopicsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(sb(&name)))
                    .with_num_partitions(partitions.unwrap_or(-1))
                    .with_replication_factor(replication_factor.unwrap_or(-1))
                    .with_configs(cfgs)]);
            let resp: CreateTopicsResponse = client
                .any()
                .and_then(|c| c.call(req, 4, 7))
                .map_err(|e| e.to_string())?;
            for t in &resp.topics {
                check(
                    t.error_code,
                    t.error_message.as_ref(),
                    &format!("cannot create topic {name}"),
                )?;
            }
            println!("created topic {name}");
        }
        TopicCommand::List { internal } => {
            let mut topics = client.metadata(None).map_err(|e| e.to_string())?;
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            for t in topics.iter().filter(|t| internal || !t.internal) {
                println!("{}\t{} partitions", t.name, t.partitions.len());
            }
        }
        TopicCommand::Describe { name } => describe(&mut client, &name)?,
        TopicCommand::Delete { name } => {
            let req = DeleteTopicsRequest::default()
                .with_timeout_ms(30_000)
                .with_topic_names(vec![TopicName(sb(&name))])
                .with_topics(vec![
                    DeleteTopicState::default().with_name(Some(TopicName(sb(&name))))
                ]);
            let conn = client.any().map_err(|e| e.to_string())?;
            let v = conn
                .version_for::<DeleteTopicsRequest>(1, 6)
                .map_err(|e| e.to_string())?;
            let req = if v >= 6 {
                req.with_topic_names(Vec::new())
            } else {
                req.with_topics(Vec::new())
            };
            let resp: DeleteTopicsResponse = conn.call_at(req, v).map_err(|e| e.to_string())?;
            for r in &resp.responses {
                check(
                    r.error_code,
                    r.error_message.as_ref(),
                    &format!("cannot delete topic {name}"),
                )?;
            }
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

fn describe(client: &mut Client, name: &str) -> Result<(), String> {
    let info = client.topic(name, false).map_err(|e| e.to_string())?;
    println!(
        "topic {}: {} partitions{}",
        info.name,
        info.partitions.len(),
        if info.internal { " (internal)" } else { "" }
    );
    println!("partition\tleader\tepoch\treplicas\tisr\tstart\tend");
    let ids = |v: &[i32]| {
        v.iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    for (i, (p, leader)) in info.partitions.iter().enumerate() {
        let (start, end) = if *leader >= 0 {
            (
                client
                    .list_offset(name, *p, *leader, -2)
                    .map_err(|e| e.to_string())?
                    .to_string(),
                client
                    .list_offset(name, *p, *leader, -1)
                    .map_err(|e| e.to_string())?
                    .to_string(),
            )
        } else {
            ("-".to_string(), "-".to_string())
        };
        let (epoch, replicas, isr) = info
            .replicas
            .get(i)
            .map(|r| (r.leader_epoch, ids(&r.replicas), ids(&r.isr)))
            .unwrap_or((-1, String::new(), String::new()));
        println!("{p}\t{leader}\t{epoch}\t{replicas}\t{isr}\t{start}\t{end}");
    }
    print_cleaner(client, name, &info.partitions)?;
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(sb(name))
            .with_configuration_keys(None)]);
    let resp: DescribeConfigsResponse = client
        .any()
        .and_then(|c| c.call(req, 1, 4))
        .map_err(|e| e.to_string())?;
    for r in &resp.results {
        check(
            r.error_code,
            r.error_message.as_ref(),
            &format!("settings of {name}"),
        )?;
        for c in &r.configs {
            let source = if c.config_source == 1 {
                ""
            } else {
                " (default)"
            };
            println!(
                "{} = {}{source}",
                c.name.as_str(),
                c.value.as_ref().map_or("", |v| v.as_str())
            );
        }
    }
    Ok(())
}

/// A compacted topic's partitions as their leaders' cleaners see them: the dirty ratio (dirty
/// bytes over closed bytes) and when the last pass ended. From DescribeLogDirs, whose last
/// entry Spate fills with its cleaner's state (`spate_net::handlers::CLEANER_DIR`).
fn print_cleaner(client: &mut Client, name: &str, partitions: &[(i32, i32)]) -> Result<(), String> {
    let mut by_leader: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
    for (p, leader) in partitions {
        if *leader >= 0 {
            by_leader.entry(*leader).or_default().push(*p);
        }
    }
    let mut rows = Vec::new();
    for (leader, parts) in by_leader {
        let req = DescribeLogDirsRequest::default().with_topics(Some(vec![
            describe_log_dirs_request::DescribableLogDirTopic::default()
                .with_topic(sb(name).into())
                .with_partitions(parts),
        ]));
        let resp: DescribeLogDirsResponse = client
            .broker(leader)
            .and_then(|c| c.call(req, 1, 4))
            .map_err(|e| e.to_string())?;
        for dir in resp
            .results
            .iter()
            .filter(|d| d.log_dir.as_str() == spate_net::handlers::CLEANER_DIR)
        {
            for t in &dir.topics {
                for p in &t.partitions {
                    rows.push((p.partition_index, p.partition_size, p.offset_lag));
                }
            }
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    rows.sort_unstable();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    println!("partition\tdirty ratio\tlast compaction");
    for (p, ppm, last_ms) in rows {
        let last = if last_ms <= 0 {
            "none since the broker started".to_string()
        } else {
            format!("{:.1} s ago", (now_ms - last_ms).max(0) as f64 / 1000.0)
        };
        println!("{p}\t{:.3}\t{last}", ppm as f64 / 1e6);
    }
    Ok(())
}
