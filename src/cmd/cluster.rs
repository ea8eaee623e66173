//! `spate cluster status`: the brokers, the controller and the partitions short of replicas,
//! as any Kafka-compatible broker describes them (DescribeCluster and Metadata).

use kafka_protocol::messages::*;
use spate_client::error_name;

use super::Conn;

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show the brokers, the controller, and the under-replicated and offline partitions
    Status,
}

pub fn run(conn: &Conn, cmd: ClusterCommand) -> Result<(), String> {
    let ClusterCommand::Status = cmd;
    let mut client = conn.client()?;
    let resp: DescribeClusterResponse = client
        .any()
        .and_then(|c| c.call(DescribeClusterRequest::default(), 0, 1))
        .map_err(|e| e.to_string())?;
    if resp.error_code != 0 {
        return Err(format!(
            "cannot describe the cluster: {}{}",
            error_name(resp.error_code),
            resp.error_message
                .as_ref()
                .map(|m| format!(" ({})", m.as_str()))
                .unwrap_or_default()
        ));
    }
    println!("cluster {}", resp.cluster_id.as_str());
    let controller = resp.controller_id.0;
    if controller < 0 {
        println!("controller: none (the metadata quorum has no leader)");
    } else {
        println!("controller: broker {controller}");
    }
    println!("brokers: {}", resp.brokers.len());
    for b in &resp.brokers {
        println!(
            "  {}\t{}:{}{}",
            b.broker_id.0,
            b.host.as_str(),
            b.port,
            if b.broker_id.0 == controller {
                "\tcontroller"
            } else {
                ""
            }
        );
    }
    let md: MetadataResponse = client
        .any()
        .and_then(|c| c.call(MetadataRequest::default().with_topics(None), 1, 12))
        .map_err(|e| e.to_string())?;
    let mut short = Vec::new();
    let mut partitions = 0;
    for t in &md.topics {
        let name = t.name.as_ref().map_or("?", |n| n.0.as_str());
        for p in &t.partitions {
            partitions += 1;
            let offline = p.leader_id.0 < 0;
            if offline || p.isr_nodes.len() < p.replica_nodes.len() {
                short.push(format!(
                    "  {name}-{}\tleader {}\treplicas {:?}\tisr {:?}{}",
                    p.partition_index,
                    p.leader_id.0,
                    p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                    p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                    if offline { "\toffline" } else { "" }
                ));
            }
        }
    }
    println!(
        "partitions: {partitions}, under-replicated or offline: {}",
        short.len()
    );
    for line in short {
        println!("{line}");
    }
    Ok(())
}
