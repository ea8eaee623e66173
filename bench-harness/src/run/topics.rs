//! The run's fresh topics: created with CreateTopics (the broker's default replication), then
//! waited for until Metadata gives every partition a leader.

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use spate_client::{error_name, Client};

use super::RunError;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(super) fn create_topics(
    client: &mut Client,
    names: &[String],
    partitions: u32,
) -> Result<(), RunError> {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(
            names
                .iter()
                .map(|n| {
                    CreatableTopic::default()
                        .with_name(TopicName(sb(n)))
                        .with_num_partitions(partitions as i32)
                        .with_replication_factor(-1)
                })
                .collect(),
        );
    let resp: CreateTopicsResponse = client
        .any()
        .and_then(|c| c.call(req, 2, 7))
        .map_err(|e| RunError::Broker(e.to_string()))?;
    for t in resp.topics {
        if t.error_code != 0 {
            return Err(RunError::Broker(format!(
                "cannot create topic {}: {}",
                t.name.0.as_str(),
                error_name(t.error_code)
            )));
        }
    }
    for n in names {
        client
            .topic(n, false)
            .map_err(|e| RunError::Broker(e.to_string()))?;
    }
    Ok(())
}
