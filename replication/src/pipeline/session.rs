//! A follower shard's session to one leader's shard: one connection carrying every partition
//! this shard follows from there. Each partition first finds where its log parts from the
//! leader's (OffsetsForLeaderEpoch, then truncation), then is fetched from its log end in one
//! multi-partition long-poll fetch per round. The batches of an answer are appended at the
//! leader's offsets and epochs and synced by the shard's group commit; the next fetch goes out
//! at once, without waiting for that fdatasync, and each fdatasync that completes is reported
//! to the leader as it happens (`Progress`), so that the high watermark follows the follower's
//! durable end, not its fetches.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use glommio::net::TcpStream;

use super::replicas::{code_refusal, LogHistory, PartitionKey, Role, ShardReplicas};
use super::wire::{
    self, code, FetchPartition, FetchedPartition, Message, Received, MAX_FETCH_BYTES,
};
use crate::follower::Action;
use crate::metadata::BrokerId;
use spate_engine::Durability;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a fetch waits at the leader for data.
const MAX_WAIT_MS: u32 = 500;

type Pending = Rc<RefCell<HashMap<u64, oneshot::Sender<Received>>>>;

struct Connected {
    out: mpsc::Sender<Vec<Bytes>>,
    pending: Pending,
    next_id: u64,
}

impl Connected {
    async fn ask(&mut self, make: impl FnOnce(u64) -> Message) -> Result<Received, String> {
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let frame = make(id).frame();
        if self.out.try_send(vec![frame]).is_err() {
            return Err("the connection to the leader closed".into());
        }
        let timer = glommio::timer::sleep(ANSWER_TIMEOUT);
        match futures_util::future::select(rx, Box::pin(timer)).await {
            futures_util::future::Either::Left((Ok(r), _)) => Ok(r),
            futures_util::future::Either::Left((Err(_), _)) => {
                Err("the connection to the leader closed".into())
            }
            futures_util::future::Either::Right(_) => {
                self.pending.borrow_mut().remove(&id);
                Err(format!(
                    "the leader did not answer within {} s",
                    ANSWER_TIMEOUT.as_secs()
                ))
            }
        }
    }
}

/// Runs the session to `leader`'s shard `leader_shard` for as long as this shard follows a
/// partition there; reconnects with a back-off while the leader is unreachable.
pub(crate) async fn run(replicas: Rc<ShardReplicas>, leader: BrokerId, leader_shard: u32) {
    let mut backoff = Duration::from_millis(50);
    let mut idle_rounds = 0u32;
    loop {
        if replicas.stopped.get() {
            break;
        }
        if followed(&replicas, leader, leader_shard).is_empty() {
            // Nothing followed there any more for a while: the session ends (the tick
            // starts a new one if a partition needs it).
            idle_rounds += 1;
            if idle_rounds > 100 {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(20)).await;
            continue;
        }
        idle_rounds = 0;
        let Some(addr) = address(&replicas, leader, leader_shard) else {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            continue;
        };
        match connect(&addr).await {
            Ok(stream) => {
                backoff = Duration::from_millis(50);
                if let Err(e) = session(&replicas, leader, leader_shard, stream).await {
                    spate_engine::warn_limited!("replication session ended", leader, shard = leader_shard, "replication from broker {leader} (shard {leader_shard}, {addr}) stopped: {e}; reconnecting");
                }
            }
            Err(e) => {
                spate_engine::warn_limited!("replication connect failed", leader, shard = leader_shard, "cannot reach broker {leader}'s shard {leader_shard} at {addr} to replicate from it: {e}; retrying");
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    replicas
        .state
        .borrow_mut()
        .sessions
        .remove(&(leader, leader_shard));
}

/// The partitions this shard follows from `leader`'s `leader_shard`.
fn followed(replicas: &ShardReplicas, leader: BrokerId, leader_shard: u32) -> Vec<PartitionKey> {
    let st = replicas.state.borrow();
    let mut keys: Vec<PartitionKey> = st
        .partitions
        .iter()
        .filter(|(_, r)| {
            r.leader == leader
                && matches!(r.role, Role::Follower { leader_shard: s, .. } if s == leader_shard)
        })
        .map(|(k, _)| *k)
        .collect();
    keys.sort_unstable();
    keys
}

fn address(replicas: &ShardReplicas, leader: BrokerId, leader_shard: u32) -> Option<String> {
    let view = replicas.node.view();
    let reg = &view.image.brokers.get(&leader)?.registration;
    let port = *reg.replication_ports.get(leader_shard as usize)?;
    let host = reg
        .cluster_addr
        .rsplit_once(':')
        .map_or(reg.cluster_addr.as_str(), |(h, _)| h);
    Some(format!("{host}:{port}"))
}

async fn connect(addr: &str) -> Result<TcpStream, String> {
    let timer = glommio::timer::sleep(CONNECT_TIMEOUT);
    match futures_util::future::select(Box::pin(TcpStream::connect(addr)), Box::pin(timer)).await {
        futures_util::future::Either::Left((Ok(s), _)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        futures_util::future::Either::Left((Err(e), _)) => Err(e.to_string()),
        futures_util::future::Either::Right(_) => Err("timed out".into()),
    }
}

async fn session(
    replicas: &Rc<ShardReplicas>,
    leader: BrokerId,
    leader_shard: u32,
    stream: TcpStream,
) -> Result<(), String> {
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (out, mut out_rx) = mpsc::channel::<Vec<Bytes>>(256);
    let pending: Pending = Rc::new(RefCell::new(HashMap::new()));
    let writing = glommio::spawn_local(async move {
        while let Some(chunks) = out_rx.next().await {
            if wire::write_chunks(&mut writer, &chunks).await.is_err() {
                break;
            }
        }
    });
    let reading = {
        let pending = pending.clone();
        glommio::spawn_local(async move {
            loop {
                let frame = match wire::read_frame(&mut reader).await {
                    Ok(Some(f)) => f,
                    Ok(None) => return "the leader closed the connection".to_string(),
                    Err(e) => return e.to_string(),
                };
                let received = match wire::decode(frame) {
                    Ok(r) => r,
                    Err(e) => return format!("the leader sent a frame that does not decode: {e}"),
                };
                let id = match &received.message {
                    Message::Fetched { id, .. } | Message::EpochAnswer { id, .. } => *id,
                    Message::Refused { reason } => {
                        return format!("the leader refused the session: {reason}")
                    }
                    other => return format!("unexpected message from the leader: {other:?}"),
                };
                if let Some(tx) = pending.borrow_mut().remove(&id) {
                    let _ = tx.send(received);
                }
            }
        })
    };
    let mut conn = Connected {
        out: out.clone(),
        pending,
        next_id: 1,
    };
    let hello = Message::Hello {
        cluster_id: replicas.cluster_id,
        follower: replicas.me,
        leader,
        shard: leader_shard,
    };
    conn.out
        .try_send(vec![hello.frame()])
        .map_err(|_| "cannot send the hello".to_string())?;
    let result = {
        let rounds = follow(replicas, leader, leader_shard, &mut conn);
        futures_util::pin_mut!(rounds);
        match futures_util::future::select(rounds, reading).await {
            futures_util::future::Either::Left((r, _)) => r,
            futures_util::future::Either::Right((why, _)) => Err(why),
        }
    };
    drop(conn);
    drop(out);
    writing.cancel().await;
    result
}

/// The session's rounds: divergence searches first, then one fetch of every partition that
/// is fetching, its answer appended, and again.
async fn follow(
    replicas: &Rc<ShardReplicas>,
    leader: BrokerId,
    leader_shard: u32,
    conn: &mut Connected,
) -> Result<(), String> {
    loop {
        if replicas.stopped.get() {
            return Ok(());
        }
        let keys = followed(replicas, leader, leader_shard);
        if keys.is_empty() {
            return Ok(());
        }
        for key in &keys {
            search(replicas, *key, conn).await?;
        }
        let fetch = fetch_list(replicas, &keys);
        if fetch.is_empty() {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let asked: HashMap<PartitionKey, FetchPartition> = fetch
            .iter()
            .map(|f| ((f.topic_id, f.partition), f.clone()))
            .collect();
        let answer = conn
            .ask(|id| Message::Fetch {
                id,
                max_wait_ms: MAX_WAIT_MS,
                max_bytes: MAX_FETCH_BYTES / 2,
                partitions: fetch,
            })
            .await?;
        let Message::Fetched { partitions, .. } = &answer.message else {
            return Err("the leader answered a fetch with something else".into());
        };
        let mut at = 0usize;
        let mut back_off = false;
        for p in partitions {
            let batches = answer.batches(p, &mut at)?;
            let Some(sent) = asked.get(&(p.topic_id, p.partition)) else {
                continue;
            };
            if !apply_fetched(replicas, sent, p, batches, conn).await {
                back_off = true;
            }
        }
        if back_off {
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs a partition's divergence search (and the truncations it asks for) until it fetches.
async fn search(
    replicas: &Rc<ShardReplicas>,
    key: PartitionKey,
    conn: &mut Connected,
) -> Result<(), String> {
    loop {
        let (log, next, leader_epoch) = {
            let st = replicas.state.borrow();
            let Some(r) = st.partitions.get(&key) else {
                return Ok(());
            };
            let Role::Follower { next, .. } = &r.role else {
                return Ok(());
            };
            (r.log.clone(), *next, r.leader_epoch)
        };
        if let Action::StartAt(offset) = next {
            if log.offsets().log_end < offset {
                if let Err(e) = log.truncate_fully(offset).await {
                    return Err(format!("cannot empty partition {}: {e}", key.1));
                }
                tracing::warn!(
                    partition = key.1,
                    offset,
                    "the leader's log starts past this log's end: started this log again there"
                );
            }
            set_next(replicas, key, leader_epoch, Action::Fetch);
            return Ok(());
        }
        let (truncate_to, ask) = match next {
            Action::AskEpochEnd { epoch, truncate_to } => (truncate_to, Some(epoch)),
            Action::Truncate(offset) => (Some(offset), None),
            Action::TruncateFully => (Some(log.offsets().log_start), None),
            Action::Fetch | Action::Idle | Action::StartAt(_) => return Ok(()),
        };
        if let Some(offset) = truncate_to {
            if offset < log.offsets().log_end {
                match log.truncate_suffix(offset).await {
                    Ok(at) => {
                        tracing::warn!(
                            partition = key.1,
                            offset = at,
                            "truncated the log's tail that the leader does not have"
                        )
                    }
                    Err(e) => return Err(format!("cannot truncate partition {}: {e}", key.1)),
                }
            }
        }
        let Some(epoch) = ask else {
            set_next(replicas, key, leader_epoch, Action::Fetch);
            return Ok(());
        };
        let answer = conn
            .ask(|id| Message::EpochQuery {
                id,
                topic_id: key.0,
                partition: key.1,
                current_leader_epoch: leader_epoch,
                epoch,
            })
            .await?;
        let Message::EpochAnswer {
            error,
            epoch: their_epoch,
            end_offset,
            ..
        } = answer.message
        else {
            return Err("the leader answered an epoch query with something else".into());
        };
        let back_off = {
            let mut st = replicas.state.borrow_mut();
            let Some(r) = st.partitions.get_mut(&key) else {
                return Ok(());
            };
            if r.leader_epoch != leader_epoch {
                continue;
            }
            let Role::Follower { follower, next, .. } = &mut r.role else {
                return Ok(());
            };
            let step = if error == code::NONE {
                let end = (end_offset >= 0 && their_epoch >= 0)
                    .then_some((their_epoch, end_offset as u64));
                follower.on_epoch_end(epoch, end, &LogHistory(&r.log))
            } else {
                code_refusal(error).and_then(|refusal| follower.on_refusal(refusal))
            };
            match step {
                Some(action) => {
                    *next = action;
                    false
                }
                None => error != code::NONE,
            }
        };
        if back_off {
            // The leader does not know its epoch yet: ask again shortly.
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn set_next(replicas: &ShardReplicas, key: PartitionKey, leader_epoch: i32, action: Action) {
    let mut st = replicas.state.borrow_mut();
    if let Some(r) = st.partitions.get_mut(&key) {
        if r.leader_epoch == leader_epoch {
            if let Role::Follower { next, .. } = &mut r.role {
                *next = action;
            }
        }
    }
}

/// What to fetch now: every partition whose search is over, from its log end.
fn fetch_list(replicas: &ShardReplicas, keys: &[PartitionKey]) -> Vec<FetchPartition> {
    let st = replicas.state.borrow();
    keys.iter()
        .filter_map(|k| {
            let r = st.partitions.get(k)?;
            let Role::Follower { next, .. } = &r.role else {
                return None;
            };
            if *next != Action::Fetch || r.log.failure().is_some() {
                return None;
            }
            Some(FetchPartition {
                topic_id: k.0,
                partition: k.1,
                leader_epoch: r.leader_epoch,
                fetch_offset: r.log.next_offset(),
                durable: r.log.offsets().durable,
            })
        })
        .collect()
}

/// Appends one partition's answer; `false` if the leader refused it for now (back off).
async fn apply_fetched(
    replicas: &Rc<ShardReplicas>,
    sent: &FetchPartition,
    p: &FetchedPartition,
    batches: Vec<spate_engine::ReadBatch>,
    conn: &Connected,
) -> bool {
    let key = (p.topic_id, p.partition);
    let log = {
        let mut st = replicas.state.borrow_mut();
        let Some(r) = st.partitions.get_mut(&key) else {
            return true;
        };
        // The leadership moved while the fetch was out: its answer is of no use.
        if r.leader_epoch != sent.leader_epoch {
            return true;
        }
        let Role::Follower { follower, next, .. } = &mut r.role else {
            return true;
        };
        if p.error != code::NONE {
            let action = if p.error == code::OFFSET_OUT_OF_RANGE
                || p.error == code::OFFSET_MOVED_TO_TIERED_STORAGE
            {
                follower.on_out_of_range(sent.fetch_offset, p.log_start)
            } else {
                code_refusal(p.error).and_then(|refusal| follower.on_refusal(refusal))
            };
            return match action {
                Some(action) => {
                    *next = action;
                    true
                }
                None => false,
            };
        }
        r.log.clone()
    };
    if let Some(first) = batches.first() {
        let o = log.offsets();
        if first.base_offset < o.log_end && o.log_start == o.log_end {
            // An empty log started at the leader's log start, which is inside this batch:
            // it starts at the batch instead (Kafka's follower does the same), and the log
            // start follows the leader's below.
            if let Err(e) = log.truncate_fully(first.base_offset).await {
                spate_engine::warn_limited!(
                    "replicated log restart refused",
                    partition = key.1,
                    "cannot start the log at the leader's batch: {e}"
                );
                return false;
            }
        }
        let end = log.next_offset();
        // Past the offset asked for: a gap the leader's compaction left, taken as it is.
        // Anything else means this log was truncated or appended meanwhile: the next fetch
        // asks again from the log end.
        if first.base_offset < end || (first.base_offset > end && sent.fetch_offset != end) {
            return true;
        }
        match log.enqueue_replicated(batches, Durability::Durable).await {
            Ok(appending) => {
                let out = conn.out.clone();
                let log = log.clone();
                let epoch = sent.leader_epoch;
                glommio::spawn_local(async move {
                    if appending.wait().await.is_ok() {
                        let progress = Message::Progress {
                            partitions: vec![FetchPartition {
                                topic_id: key.0,
                                partition: key.1,
                                leader_epoch: epoch,
                                fetch_offset: log.next_offset(),
                                durable: log.offsets().durable,
                            }],
                        };
                        let mut out = out;
                        let _ = out.try_send(vec![progress.frame()]);
                    }
                })
                .detach();
            }
            Err(e) => {
                spate_engine::warn_limited!(
                    "replicated append refused",
                    partition = key.1,
                    "cannot append the leader's batches: {e}"
                );
                return false;
            }
        }
    }
    // What the leader has committed, up to what this log holds.
    let end = log.offsets().log_end;
    let _ = log.advance_high_watermark(p.high_watermark.min(end));
    // The leader's log start (DeleteRecords, retention), as far as this log is committed:
    // what the leader no longer serves, a follower that becomes leader does not serve either.
    let o = log.offsets();
    let start = p.log_start.min(o.high_watermark);
    if start > o.log_start {
        if let Err(e) = log.delete_records(start).await {
            spate_engine::warn_limited!(
                "replicated log start refused",
                partition = key.1,
                "cannot move the log start to the leader's: {e}"
            );
        }
    }
    true
}
