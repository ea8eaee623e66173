//! The leader's side of the replication sessions: this shard's replication listener, and per
//! connection the follower's hello (another cluster's, or a session meant for another broker
//! or shard, is refused and logged), then its fetches (each a task of its own, so that a long
//! poll does not hold back the progress reports behind it), progress reports and epoch
//! queries.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::StreamExt;
use glommio::net::{TcpListener, TcpStream};

use super::replicas::ShardReplicas;
use super::wire::{self, code, FetchPartition, Message, MAX_FETCH_BYTES};
use crate::metadata::BrokerId;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts followers' sessions until stopped.
pub async fn accept_loop(replicas: Rc<ShardReplicas>, listener: TcpListener) {
    while !replicas.stopped.get() {
        match listener.accept().await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                glommio::spawn_local(serve(replicas.clone(), stream)).detach();
            }
            Err(e) => {
                tracing::warn!(shard = replicas.shard, "replication accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve(replicas: Rc<ShardReplicas>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let hello = {
        let timer = glommio::timer::sleep(HELLO_TIMEOUT);
        match futures_util::future::select(Box::pin(wire::read_frame(&mut reader)), Box::pin(timer))
            .await
        {
            futures_util::future::Either::Left((Ok(Some(f)), _)) => wire::decode(f),
            futures_util::future::Either::Left((Ok(None), _)) => return,
            futures_util::future::Either::Left((Err(e), _)) => Err(e.to_string()),
            futures_util::future::Either::Right(_) => Err("no hello within 10 s".to_string()),
        }
    };
    let follower = match hello.map(|r| r.message) {
        Ok(Message::Hello {
            cluster_id,
            follower,
            leader,
            shard,
        }) => {
            let refusal = if cluster_id != replicas.cluster_id {
                Some("the session is from a broker of another cluster".to_string())
            } else if leader != replicas.me || shard != replicas.shard {
                Some(format!(
                    "the session is for broker {leader} shard {shard}, this is broker {} shard {}",
                    replicas.me, replicas.shard
                ))
            } else if !replicas.node.view().image.brokers.contains_key(&follower) {
                Some(format!(
                    "broker {follower} is not registered in this cluster"
                ))
            } else {
                None
            };
            if let Some(reason) = refusal {
                spate_engine::warn_limited!("replication session refused", peer = %peer, "refused a replication session: {reason}");
                let _ =
                    wire::write_chunks(&mut writer, &[Message::Refused { reason }.frame()]).await;
                return;
            }
            follower
        }
        Ok(other) => {
            spate_engine::warn_limited!("replication session refused", peer = %peer, "a replication session began with {other:?}, not a hello: closed");
            return;
        }
        Err(e) => {
            spate_engine::warn_limited!("replication session refused", peer = %peer, "a replication session's hello does not decode: {e}");
            return;
        }
    };
    let (out, mut out_rx) = mpsc::channel::<Vec<Bytes>>(256);
    let writing = glommio::spawn_local(async move {
        while let Some(chunks) = out_rx.next().await {
            if wire::write_chunks(&mut writer, &chunks).await.is_err() {
                break;
            }
        }
    });
    loop {
        let frame = match wire::read_frame(&mut reader).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                spate_engine::warn_limited!(
                    "replication session error",
                    follower,
                    "replication session with broker {follower} ({peer}) ended: {e}"
                );
                break;
            }
        };
        let message = match wire::decode(frame) {
            Ok(r) => r.message,
            Err(e) => {
                spate_engine::warn_limited!(
                    "replication session error",
                    follower,
                    "broker {follower} sent a replication frame that does not decode ({e}): closed"
                );
                break;
            }
        };
        match message {
            Message::Fetch {
                id,
                max_wait_ms,
                max_bytes,
                partitions,
            } => {
                let replicas = replicas.clone();
                let mut out = out.clone();
                glommio::spawn_local(async move {
                    let chunks =
                        fetch(&replicas, follower, max_wait_ms, max_bytes, partitions, id).await;
                    let _ = out.try_send(chunks);
                })
                .detach();
            }
            Message::Progress { partitions } => {
                for p in &partitions {
                    replicas.on_progress(follower, p);
                }
            }
            Message::EpochQuery {
                id,
                topic_id,
                partition,
                current_leader_epoch,
                epoch,
            } => {
                let (error, end) =
                    replicas.epoch_end(&(topic_id, partition), current_leader_epoch, epoch);
                let (epoch, end_offset) = end.map_or((-1, -1), |(e, o)| (e, o as i64));
                let answer = Message::EpochAnswer {
                    id,
                    error,
                    epoch,
                    end_offset,
                };
                let _ = out.clone().try_send(vec![answer.frame()]);
            }
            other => {
                spate_engine::warn_limited!(
                    "replication session error",
                    follower,
                    "broker {follower} sent {other:?} on a replication session: closed"
                );
                break;
            }
        }
    }
    drop(out);
    writing.cancel().await;
}

/// One fetch: every partition read from its offset; if none has data (and none an error),
/// waits up to `max_wait_ms` for any of them to get some, then reads again.
async fn fetch(
    replicas: &Rc<ShardReplicas>,
    follower: BrokerId,
    max_wait_ms: u32,
    max_bytes: u32,
    partitions: Vec<FetchPartition>,
    id: u64,
) -> Vec<Bytes> {
    let max_bytes = max_bytes.clamp(1, MAX_FETCH_BYTES) as usize;
    let mut first = true;
    loop {
        let mut answers = Vec::with_capacity(partitions.len());
        let mut budget = max_bytes;
        for p in &partitions {
            let (fetched, batches) = replicas.fetch_one(follower, p, budget.max(1), first).await;
            let size: usize = batches.iter().map(|b| b.payload.len()).sum();
            budget = budget.saturating_sub(size);
            answers.push((fetched, batches));
        }
        let idle = answers
            .iter()
            .all(|(f, b)| f.error == code::NONE && b.is_empty());
        if !idle || !first || max_wait_ms == 0 {
            return wire::fetched_frame(id, answers);
        }
        first = false;
        let waits: Vec<_> = partitions
            .iter()
            .filter_map(|p| {
                let log = replicas.leader_log(&(p.topic_id, p.partition))?;
                let offset = p.fetch_offset;
                Some(Box::pin(async move {
                    log.wait_for(offset, spate_engine::ReadBound::LogEnd).await
                }))
            })
            .collect();
        if waits.is_empty() {
            return wire::fetched_frame(id, answers);
        }
        let timer = glommio::timer::sleep(Duration::from_millis(u64::from(max_wait_ms)));
        futures_util::future::select(futures_util::future::select_all(waits), Box::pin(timer))
            .await;
    }
}
