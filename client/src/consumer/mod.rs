//! Consuming one topic, alone or as a member of a group: [`GroupConsumer`] holds the
//! assignment and the position of each assigned partition, and `poll` fetches from the
//! partitions' leaders and returns the records past those positions. Its parts, one file
//! each: the Fetch request (`fetch.rs`), the fetch ahead of a consumer that is behind
//! (`fetch_ahead.rs`), decoding the records (`records.rs`), group membership (`membership.rs`)
//! with the range assignor (`assignor.rs`), and committed offsets (`offsets.rs`).
//!
//! Blocking and single-threaded: one consumer drives one `Client` at a time.

mod assignor;
mod commits;
mod fetch;
mod fetch_ahead;
mod membership;
mod records;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::FetchResponse;

pub use fetch::{InFlightFetch, PartitionFetch};
pub use records::{decode_records, next_offset_after, Consumed, MAX_DECOMPRESSED_BATCH};

use fetch::decode_fetch;
use fetch_ahead::FETCH_AHEAD_BYTES;

use crate::{Client, ClientError};

/// Where a partition without a committed offset starts (Kafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
}

/// A consumer of one topic, alone or as a member of a group.
pub struct GroupConsumer {
    pub topic: String,
    pub group: Option<String>,
    start: StartAt,
    member_id: String,
    generation: i32,
    /// Assigned partitions and the next offset of each.
    positions: BTreeMap<i32, i64>,
    leaders: BTreeMap<i32, i32>,
    last_heartbeat: Instant,
    /// Fetches sent ahead (at most one per leader), and answers to them read early (before
    /// another request on the connection); their records are not returned yet.
    ahead: Vec<InFlightFetch>,
    answered: Vec<(InFlightFetch, FetchResponse)>,
    fetches_ahead: u64,
    /// Why positions were set again after the start (a rejoin, an out-of-range offset), the
    /// first few, for a caller that wants to say why records came again.
    resets: Vec<String>,
}

/// Reasons kept in `GroupConsumer::resets`, at most.
const RESETS_KEPT: usize = 8;

impl GroupConsumer {
    pub fn new(topic: &str, group: Option<&str>, start: StartAt) -> Self {
        Self {
            topic: topic.to_string(),
            group: group.map(str::to_string),
            start,
            member_id: String::new(),
            generation: -1,
            positions: BTreeMap::new(),
            leaders: BTreeMap::new(),
            last_heartbeat: Instant::now(),
            ahead: Vec::new(),
            answered: Vec::new(),
            fetches_ahead: 0,
            resets: Vec::new(),
        }
    }

    /// Moves a partition's position back to `offset` if it is past it.
    pub fn rewind(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.positions.get_mut(&partition) {
            if *p > offset {
                *p = offset;
            }
        }
    }

    /// How many fetches were sent ahead of the records being returned (see `poll`).
    pub fn fetches_ahead(&self) -> u64 {
        self.fetches_ahead
    }

    pub fn assignment(&self) -> Vec<i32> {
        self.positions.keys().copied().collect()
    }

    /// Joins (or, without a group, takes every partition) and sets start positions.
    pub fn start(&mut self, client: &mut Client) -> Result<(), ClientError> {
        self.settle(client)?;
        self.answered.clear();
        let info = client.topic(&self.topic, false)?;
        self.leaders = info.partitions.iter().copied().collect();
        let partitions: Vec<i32> = info.partitions.iter().map(|(p, _)| *p).collect();
        let assigned = match self.group.clone() {
            None => partitions,
            Some(g) => self.join(client, &g, &partitions)?,
        };
        let committed = match self.group.clone() {
            Some(g) => self.committed(client, &g, &assigned)?,
            None => BTreeMap::new(),
        };
        self.positions.clear();
        for p in assigned {
            let leader = self.leaders.get(&p).copied().unwrap_or(-1);
            let at = match committed.get(&p) {
                Some(o) if *o >= 0 => *o,
                _ => client.list_offset(
                    &self.topic,
                    p,
                    leader,
                    if self.start == StartAt::Earliest {
                        -2
                    } else {
                        -1
                    },
                )?,
            };
            self.positions.insert(p, at);
        }
        Ok(())
    }

    /// Fetches once (waiting up to `max_wait`), advancing positions past what it returns.
    ///
    /// A consumer that is behind (a large answer) sends its next fetch before decoding this
    /// one's records, as Kafka's consumers do, so the broker reads and sends while this
    /// client decodes. Other requests first read that answer and keep it for the next poll.
    pub fn poll(
        &mut self,
        client: &mut Client,
        max_wait: Duration,
    ) -> Result<Vec<Consumed>, ClientError> {
        self.heartbeat(client)?;
        let max_wait_ms = max_wait.as_millis().min(i32::MAX as u128) as i32;
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for (p, o) in &self.positions {
            by_leader
                .entry(self.leaders.get(p).copied().unwrap_or(-1))
                .or_default()
                .push((*p, *o));
        }
        let mut out = Vec::new();
        if by_leader.is_empty() {
            std::thread::sleep(max_wait);
        }
        for (leader, positions) in by_leader {
            let resp = match self.answer_for(client, leader, &positions)? {
                Some(resp) => resp,
                None => {
                    let sent = client.fetch_send(leader, &self.topic, &positions, max_wait_ms)?;
                    client.fetch_receive(&sent)?
                }
            };
            let mut errors = false;
            let mut bytes = 0usize;
            for p in resp.responses.iter().flat_map(|t| t.partitions.iter()) {
                if p.error_code != 0 {
                    errors = true;
                    continue;
                }
                let Some(records) = &p.records else { continue };
                bytes += records.len();
                if let Some(next) = next_offset_after(records) {
                    if let Some(at) = self.positions.get_mut(&p.partition_index) {
                        *at = (*at).max(next);
                    }
                }
            }
            if !errors && bytes >= FETCH_AHEAD_BYTES {
                let next: Vec<(i32, i64)> = positions
                    .iter()
                    .map(|(p, o)| (*p, self.positions.get(p).copied().unwrap_or(*o)))
                    .collect();
                self.ahead
                    .push(client.fetch_send(leader, &self.topic, &next, max_wait_ms)?);
                self.fetches_ahead += 1;
            }
            let decoded = match decode_fetch(resp, &positions) {
                Ok(d) => d,
                Err(e) => {
                    // Not returned, so not consumed: back to where this fetch started.
                    self.positions.extend(positions.iter().copied());
                    self.discard_ahead(client, leader);
                    return Err(e);
                }
            };
            for (p, result) in decoded {
                match result {
                    Ok(recs) => out.extend(recs),
                    Err(1) => {
                        // OFFSET_OUT_OF_RANGE: start over from the reset policy.
                        self.settle(client)?;
                        let at = client.list_offset(
                            &self.topic,
                            p,
                            leader,
                            if self.start == StartAt::Earliest {
                                -2
                            } else {
                                -1
                            },
                        )?;
                        self.positions.insert(p, at);
                        let asked = positions.iter().find(|(q, _)| *q == p).map(|(_, o)| *o);
                        self.note_reset(format!(
                            "partition {p}: offset {asked:?} out of range, restarted at {at}"
                        ));
                    }
                    Err(code) => {
                        return Err(ClientError::Kafka {
                            code,
                            context: format!("fetch {}-{p}", self.topic),
                        })
                    }
                }
            }
        }
        Ok(out)
    }

    /// Why positions were set again after the start, the first few (a rejoin of the group, an
    /// offset out of range): records read again after one are expected, at least once.
    pub fn resets(&self) -> &[String] {
        &self.resets
    }

    fn note_reset(&mut self, why: String) {
        if self.resets.len() < RESETS_KEPT {
            self.resets.push(why);
        }
    }
}
