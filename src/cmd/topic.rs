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
    /// Show a topic's partitions, offsets and settings
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
