//! The consumer's fetch ahead: a consumer that is behind sends its next fetch before decoding
//! the last answer, at most one per leader. Before any other request on those connections
//! (a commit, a heartbeat, a rejoin, a leave) the answers are read and kept for the next poll
//! (`settle`); an answer for positions that changed since (a rewind, a
//! rebalance) is read and dropped, never returned.

use kafka_protocol::messages::FetchResponse;

use super::GroupConsumer;
use crate::{Client, ClientError};

/// A response at least this large means the consumer is behind: it fetches ahead.
pub(super) const FETCH_AHEAD_BYTES: usize = 1 << 20;

impl GroupConsumer {
    /// The answer to a fetch sent ahead to `leader`, if it was sent for `positions` (a
    /// rewind or a rebalance since makes it useless: it is read and dropped).
    pub(super) fn answer_for(
        &mut self,
        client: &mut Client,
        leader: i32,
        positions: &[(i32, i64)],
    ) -> Result<Option<FetchResponse>, ClientError> {
        if let Some(i) = self.answered.iter().position(|(s, _)| s.leader == leader) {
            let (sent, resp) = self.answered.remove(i);
            return Ok((sent.positions == positions).then_some(resp));
        }
        let Some(i) = self.ahead.iter().position(|s| s.leader == leader) else {
            return Ok(None);
        };
        let sent = self.ahead.remove(i);
        if sent.epoch != client.epoch() {
            return Ok(None);
        }
        let resp = client.fetch_receive(&sent)?;
        Ok((sent.positions == positions).then_some(resp))
    }

    /// Reads the answers to fetches sent ahead, so the connections are free for another
    /// request; the answers are kept for the next poll.
    pub(super) fn settle(&mut self, client: &mut Client) -> Result<(), ClientError> {
        while let Some(sent) = self.ahead.pop() {
            if sent.epoch != client.epoch() {
                continue;
            }
            let resp = client.fetch_receive(&sent)?;
            self.answered.push((sent, resp));
        }
        Ok(())
    }

    /// Reads and drops the answer to a fetch sent ahead to `leader`.
    pub(super) fn discard_ahead(&mut self, client: &mut Client, leader: i32) {
        self.answered.retain(|(s, _)| s.leader != leader);
        if let Some(i) = self.ahead.iter().position(|s| s.leader == leader) {
            let sent = self.ahead.remove(i);
            let _ = client.fetch_receive(&sent);
        }
    }
}
