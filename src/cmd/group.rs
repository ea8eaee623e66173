//! `spate group list|describe`.

use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use spate_client::error_name;

use super::Conn;

#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups
    List,
    /// Show a group's state, members, committed offsets and lag
    Describe { group: String },
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn run(conn: &Conn, cmd: GroupCommand) -> Result<(), String> {
    let mut client = conn.client()?;
    match cmd {
        GroupCommand::List => {
            let resp: ListGroupsResponse = client
                .any()
                .and_then(|c| c.call(ListGroupsRequest::default(), 0, 4))
                .map_err(|e| e.to_string())?;
            if resp.error_code != 0 {
                return Err(format!(
                    "cannot list groups: {}",
                    error_name(resp.error_code)
                ));
            }
            for g in &resp.groups {
                let state = if g.group_state.is_empty() {
                    ""
                } else {
                    g.group_state.as_str()
                };
                println!(
                    "{}\t{}\t{}",
                    g.group_id.0.as_str(),
                    g.protocol_type.as_str(),
                    state
                );
            }
        }
        GroupCommand::Describe { group } => {
            let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(sb(&group))]);
            let resp: DescribeGroupsResponse = client
                .coordinator(&group)
                .and_then(|c| c.call(req, 0, 5))
                .map_err(|e| e.to_string())?;
            for g in &resp.groups {
                if g.error_code != 0 {
                    return Err(format!(
                        "cannot describe group {group}: {}",
                        error_name(g.error_code)
                    ));
                }
                println!(
                    "group {}: {} (protocol {} {}), {} members",
                    group,
                    g.group_state.as_str(),
                    g.protocol_type.as_str(),
                    g.protocol_data.as_str(),
                    g.members.len()
                );
                for m in &g.members {
                    println!(
                        "  member {} client {} host {}",
                        m.member_id.as_str(),
                        m.client_id.as_str(),
                        m.client_host.as_str()
                    );
                }
            }
            let req = OffsetFetchRequest::default()
                .with_group_id(GroupId(sb(&group)))
                .with_topics(None::<Vec<OffsetFetchRequestTopic>>);
            let resp: OffsetFetchResponse = client
                .coordinator(&group)
                .and_then(|c| c.call(req, 2, 7))
                .map_err(|e| e.to_string())?;
            if resp.error_code != 0 {
                return Err(format!(
                    "committed offsets of {group}: {}",
                    error_name(resp.error_code)
                ));
            }
            println!("topic\tpartition\tcommitted\tend\tlag");
            for t in &resp.topics {
                let topic = t.name.0.as_str().to_string();
                let info = client.topic(&topic, false).map_err(|e| e.to_string())?;
                for p in &t.partitions {
                    let leader = info
                        .partitions
                        .iter()
                        .find(|(i, _)| *i == p.partition_index)
                        .map_or(-1, |(_, l)| *l);
                    let end = client
                        .list_offset(&topic, p.partition_index, leader, -1)
                        .map_err(|e| e.to_string())?;
                    println!(
                        "{topic}\t{}\t{}\t{end}\t{}",
                        p.partition_index,
                        p.committed_offset,
                        end - p.committed_offset.max(0)
                    );
                }
            }
        }
    }
    Ok(())
}
