//! The controller requests a node serves (as controller) or forwards (to it), and their
//! answers: see `node/requests.rs`.

use std::time::{Duration, Instant};

use super::{random_u64, Node};
use crate::controller::CreateTopic;
use crate::metadata::{BrokerId, MetadataRecord, TopicId};
use crate::node::frame::Body;
use crate::node::requests::{Reply, Request, RequestError};

/// Where a request's answer goes.
pub(super) enum ReplyTo {
    Local(futures_channel::oneshot::Sender<Reply>),
    Remote { node: BrokerId, id: u64 },
}

/// What an accepted request waits to see applied.
pub(super) enum Awaiting {
    Created {
        name: String,
        topic_id: TopicId,
    },
    Deleted {
        topic_id: TopicId,
    },
    /// The partition's epoch to move past.
    PartitionChanged {
        topic_id: TopicId,
        partition: u32,
        from_epoch: i32,
    },
    /// An ElectLeaders election: the partition's epoch to move past with `leader` leading.
    /// If another change moved it first, the request is decided again on the new state.
    Elected {
        topic_id: TopicId,
        partition: u32,
        from_epoch: i32,
        leader: BrokerId,
        request: Request,
    },
    /// A topic's configs to become `configs`, or to move away from `before` (a later change
    /// replaced them: the last one wins, as in Kafka).
    Configs {
        topic_id: TopicId,
        configs: Vec<(String, String)>,
        before: Vec<(String, String)>,
    },
    /// CreatePartitions: the topic to grow from `from` partitions to `total` (if another
    /// change grew it first, this one was refused at apply).
    Partitions {
        topic_id: TopicId,
        from: u32,
        total: u32,
    },
    /// A block of producer ids proposed for `broker_id`: answered once a block starting at
    /// `start` is applied, if it went to this broker (a raced proposal for another broker may
    /// have taken it: the request is decided again).
    ProducerIds {
        broker_id: BrokerId,
        start: i64,
        len: i64,
        request: Request,
    },
    /// On a node that forwarded the request: the controller's answer came once it had
    /// applied up to this index; this node answers once it has too.
    Applied {
        index: u64,
        reply: Reply,
    },
}

/// A request this node, as controller, proposed records for.
pub(super) struct Serving {
    reply_to: ReplyTo,
    awaiting: Awaiting,
    deadline: Instant,
    /// This node proposed the records (as controller); otherwise the controller answered
    /// and this node waits to apply them itself before answering its own client.
    proposed_here: bool,
}

/// Producer ids handed to a broker at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// How long a request may wait for its records to commit, or for the controller to answer.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl Node {
    /// A request another node forwarded to this one as the controller.
    pub(super) fn on_remote_request(&mut self, from: BrokerId, id: u64, request: Request) {
        let reply_to = ReplyTo::Remote { node: from, id };
        if let Request::AlterPartition { broker_id, .. }
        | Request::AllocateProducerIds { broker_id } = &request
        {
            if *broker_id != from {
                tracing::warn!(
                    from,
                    broker_id,
                    "refused a request sent by one broker in the name of another"
                );
                return self.answer(
                    reply_to,
                    Reply::Refused(RequestError::Other(format!(
                        "broker {from} cannot ask in the name of broker {broker_id}"
                    ))),
                );
            }
        }
        if self.controller.is_some() {
            self.serve_request(request, reply_to);
        } else {
            self.answer(reply_to, Reply::Refused(RequestError::NotController));
        }
    }

    /// The controller's answer to a request this node forwarded: passed on once this node
    /// has applied the change too, so that its own Metadata shows what its client was told.
    pub(super) fn on_reply(&mut self, id: u64, reply: Reply) {
        let Some((tx, deadline, name, forwarded)) = self.forwarded.remove(&id) else {
            return;
        };
        let awaiting = match reply {
            Reply::TopicCreated { topic_id } => Awaiting::Created { name, topic_id },
            Reply::TopicDeleted { topic_id } => Awaiting::Deleted { topic_id },
            Reply::TopicConfigsSet { applied_index } | Reply::PartitionsAdded { applied_index } => {
                Awaiting::Applied {
                    index: applied_index,
                    reply,
                }
            }
            Reply::PartitionChanged { .. } => match forwarded {
                Some(Request::AlterPartition {
                    topic_id,
                    partition,
                    partition_epoch,
                    ..
                }) => Awaiting::PartitionChanged {
                    topic_id,
                    partition,
                    from_epoch: partition_epoch,
                },
                Some(
                    Request::Reassign {
                        topic, partition, ..
                    }
                    | Request::ElectLeader {
                        topic, partition, ..
                    },
                ) => match self.image.topic_by_name(&topic) {
                    // The controller's answer names the epoch it moved the partition to.
                    Some(t) => {
                        let Reply::PartitionChanged { partition_epoch } = reply else {
                            return;
                        };
                        Awaiting::PartitionChanged {
                            topic_id: t.id,
                            partition,
                            from_epoch: partition_epoch - 1,
                        }
                    }
                    None => {
                        let _ = tx.send(reply);
                        return;
                    }
                },
                _ => {
                    let _ = tx.send(reply);
                    return;
                }
            },
            // The ids are the controller's to give: nothing to apply here first.
            granted @ Reply::ProducerIds { .. } => {
                let _ = tx.send(granted);
                return;
            }
            refused => {
                let _ = tx.send(refused);
                return;
            }
        };
        self.serving.push(Serving {
            reply_to: ReplyTo::Local(tx),
            awaiting,
            deadline,
            proposed_here: false,
        });
        self.settle_requests();
    }

    /// A request from this broker's Kafka side.
    pub(super) fn on_local(
        &mut self,
        mut request: Request,
        reply: futures_channel::oneshot::Sender<Reply>,
    ) {
        if let Request::AlterPartition {
            broker_id,
            broker_epoch,
            ..
        } = &mut request
        {
            *broker_id = self.config.node_id;
            *broker_epoch = self
                .image
                .brokers
                .get(&self.config.node_id)
                .map_or(0, |b| b.epoch);
        }
        if let Request::AllocateProducerIds { broker_id } = &mut request {
            *broker_id = self.config.node_id;
        }
        if self.controller.is_some() {
            return self.serve_request(request, ReplyTo::Local(reply));
        }
        let leader = self.controller_id();
        let Some(leader) = leader.filter(|l| *l != self.config.node_id) else {
            // No leader, or this node just became it (its controller starts at the next
            // tick): the client retries.
            let _ = reply.send(Reply::Refused(RequestError::NotController));
            return;
        };
        let id = self.next_request_id;
        self.next_request_id += 1;
        let name = match &request {
            Request::CreateTopic { name, .. } | Request::DeleteTopic { name } => name.clone(),
            Request::AlterPartition { .. } | Request::AllocateProducerIds { .. } => String::new(),
            Request::Reassign { topic, .. }
            | Request::ElectLeader { topic, .. }
            | Request::SetTopicConfigs { topic, .. }
            | Request::AddPartitions { topic, .. } => topic.clone(),
        };
        let alter = matches!(
            request,
            Request::AlterPartition { .. } | Request::Reassign { .. } | Request::ElectLeader { .. }
        )
        .then(|| request.clone());
        self.forwarded
            .insert(id, (reply, Instant::now() + REQUEST_TIMEOUT, name, alter));
        self.transport.send(leader, Body::Request { id, request });
    }

    pub(super) fn answer(&mut self, to: ReplyTo, reply: Reply) {
        match to {
            ReplyTo::Local(tx) => {
                let _ = tx.send(reply);
            }
            ReplyTo::Remote { node, id } => {
                // A voter is a known peer; an observer is reached at its registered address.
                let addr = self
                    .image
                    .brokers
                    .get(&node)
                    .map(|b| b.registration.cluster_addr.clone())
                    .unwrap_or_default();
                self.transport
                    .send_to(node, &addr, Body::Reply { id, reply })
            }
        }
    }

    /// As the controller: propose what the request asks, or refuse it.
    pub(super) fn serve_request(&mut self, request: Request, reply_to: ReplyTo) {
        let Some(c) = self.controller.as_ref() else {
            return self.answer(reply_to, Reply::Refused(RequestError::NotController));
        };
        let decided = match request {
            Request::AllocateProducerIds { broker_id } => {
                // From where the last applied block ended: a block still in flight for
                // another request is raced, and the one applied second is refused.
                let start = self.image.producer_id_block_end;
                let record = MetadataRecord::ProducerIdBlock {
                    broker_id,
                    start,
                    len: PRODUCER_ID_BLOCK,
                };
                let awaiting = Awaiting::ProducerIds {
                    broker_id,
                    start,
                    len: PRODUCER_ID_BLOCK,
                    request: request.clone(),
                };
                Ok((vec![record], awaiting))
            }
            Request::CreateTopic {
                name,
                partitions,
                replication_factor,
                assignment,
                configs,
            } => {
                let mut topic_id = [0u8; 16];
                topic_id[..8].copy_from_slice(&random_u64().to_le_bytes());
                topic_id[8..].copy_from_slice(&random_u64().to_le_bytes());
                // A version-4 UUID, as Kafka's topic ids are.
                topic_id[6] = (topic_id[6] & 0x0f) | 0x40;
                topic_id[8] = (topic_id[8] & 0x3f) | 0x80;
                c.create_topic(
                    &self.image,
                    CreateTopic {
                        name: name.clone(),
                        topic_id,
                        partitions,
                        replication_factor,
                        assignment,
                        configs,
                    },
                )
                .map(|r| (r, Awaiting::Created { name, topic_id }))
                .map_err(|e| match e {
                    crate::controller::ControllerError::UnknownTopicOrPartition => {
                        RequestError::UnknownTopic(String::new())
                    }
                    e => e.into(),
                })
            }
            Request::DeleteTopic { name } => c
                .delete_topic(&self.image, &name)
                .map(|(topic_id, r)| (r, Awaiting::Deleted { topic_id }))
                .map_err(|_| RequestError::UnknownTopic(name)),
            Request::AlterPartition {
                broker_id,
                broker_epoch,
                topic_id,
                partition,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => c
                .alter_partition(
                    &self.image,
                    &crate::controller::AlterPartition {
                        broker_id,
                        broker_epoch,
                        topic_id,
                        partition,
                        leader_epoch,
                        partition_epoch,
                        new_isr,
                    },
                )
                .map(|r| {
                    (
                        r,
                        Awaiting::PartitionChanged {
                            topic_id,
                            partition,
                            from_epoch: partition_epoch,
                        },
                    )
                })
                .map_err(|e| RequestError::Other(e.to_string())),
            Request::Reassign {
                topic,
                partition,
                target,
            } => match self.image.topic_by_name(&topic) {
                None => Err(RequestError::UnknownTopic(topic)),
                Some(t) => {
                    let topic_id = t.id;
                    let from_epoch = t
                        .partitions
                        .get(partition as usize)
                        .map_or(0, |p| p.state.partition_epoch);
                    c.reassign(&self.image, topic_id, partition, target)
                        .map(|r| {
                            (
                                r,
                                Awaiting::PartitionChanged {
                                    topic_id,
                                    partition,
                                    from_epoch,
                                },
                            )
                        })
                        .map_err(|e| match e {
                            crate::controller::ControllerError::UnknownTopicOrPartition => {
                                RequestError::UnknownTopic(topic)
                            }
                            e => e.into(),
                        })
                }
            },
            Request::ElectLeader {
                ref topic,
                partition,
                unclean,
            } => match self.image.topic_by_name(topic) {
                None => Err(RequestError::UnknownTopic(topic.clone())),
                Some(t) => {
                    let topic_id = t.id;
                    c.elect_leader(&self.image, topic_id, partition, unclean)
                        .map_err(|e| match e {
                            crate::controller::ControllerError::UnknownTopicOrPartition => {
                                RequestError::UnknownTopic(format!("{topic}-{partition}"))
                            }
                            e => e.into(),
                        })
                        .and_then(|records| {
                            let Some(MetadataRecord::PartitionChange {
                                expected_partition_epoch,
                                state,
                                ..
                            }) = records.first()
                            else {
                                return Err(RequestError::Other(
                                    "the controller decided no partition change".into(),
                                ));
                            };
                            let awaiting = Awaiting::Elected {
                                topic_id,
                                partition,
                                from_epoch: *expected_partition_epoch,
                                leader: state.leader,
                                request: request.clone(),
                            };
                            Ok((records, awaiting))
                        })
                }
            },
            Request::SetTopicConfigs { topic, configs } => {
                let before = self
                    .image
                    .topic_by_name(&topic)
                    .map(|t| t.configs.clone())
                    .unwrap_or_default();
                if self.image.topic_by_name(&topic).is_some() && before == configs {
                    // Nothing changes: answered at once.
                    let applied_index = self.image.applied_index;
                    return self.answer(reply_to, Reply::TopicConfigsSet { applied_index });
                }
                c.set_topic_configs(&self.image, &topic, configs.clone())
                    .map(|(topic_id, r)| {
                        (
                            r,
                            Awaiting::Configs {
                                topic_id,
                                configs,
                                before,
                            },
                        )
                    })
                    .map_err(|_| RequestError::UnknownTopic(topic))
            }
            Request::AddPartitions {
                topic,
                total,
                assignment,
            } => c
                .add_partitions(&self.image, &topic, total, assignment)
                .map(|(topic_id, from, r)| {
                    (
                        r,
                        Awaiting::Partitions {
                            topic_id,
                            from,
                            total: total as u32,
                        },
                    )
                })
                .map_err(|e| match e {
                    crate::controller::ControllerError::UnknownTopicOrPartition => {
                        RequestError::UnknownTopic(topic)
                    }
                    crate::controller::ControllerError::Placement(
                        crate::controller::PlacementError::InvalidPartitions(n),
                    ) => RequestError::InvalidPartitions(format!(
                        "topic '{topic}' has {} partitions; the new count must be more, got {n}",
                        self.image
                            .topic_by_name(&topic)
                            .map_or(0, |t| t.partitions.len())
                    )),
                    e => e.into(),
                }),
        };
        match decided {
            Ok((records, Awaiting::PartitionChanged { .. })) if records.is_empty() => {
                // Nothing to change (a reassignment to the replicas it has).
                let epoch = 0;
                self.answer(
                    reply_to,
                    Reply::PartitionChanged {
                        partition_epoch: epoch,
                    },
                )
            }
            Ok((records, awaiting)) => {
                self.proposals.push(records);
                self.serving.push(Serving {
                    reply_to,
                    awaiting,
                    deadline: Instant::now() + REQUEST_TIMEOUT,
                    proposed_here: true,
                });
            }
            Err(e) => self.answer(reply_to, Reply::Refused(e)),
        }
    }

    /// Answers the requests whose records are applied (or refused, or too late).
    pub(super) fn settle_requests(&mut self) {
        let now = Instant::now();
        let leading = self.controller.is_some();
        let mut done = Vec::new();
        let mut keep = Vec::new();
        let mut decide_again = Vec::new();
        for s in std::mem::take(&mut self.serving) {
            let mut again = None;
            let reply = match &s.awaiting {
                Awaiting::Created { name, topic_id } => match self.image.topic_by_name(name) {
                    Some(t) if t.id == *topic_id => Some(Reply::TopicCreated {
                        topic_id: *topic_id,
                    }),
                    Some(_) => Some(Reply::Refused(RequestError::TopicExists(name.clone()))),
                    None => None,
                },
                Awaiting::Deleted { topic_id } => (!self.image.topics.contains_key(topic_id))
                    .then_some(Reply::TopicDeleted {
                        topic_id: *topic_id,
                    }),
                Awaiting::PartitionChanged {
                    topic_id,
                    partition,
                    from_epoch,
                } => match self.image.partition(topic_id, *partition) {
                    Some(p) if p.state.partition_epoch > *from_epoch => {
                        Some(Reply::PartitionChanged {
                            partition_epoch: p.state.partition_epoch,
                        })
                    }
                    Some(_) => None,
                    None => Some(Reply::Refused(RequestError::UnknownTopic(String::new()))),
                },
                Awaiting::Elected {
                    topic_id,
                    partition,
                    from_epoch,
                    leader,
                    request,
                } => match self.image.partition(topic_id, *partition) {
                    Some(p) if p.state.partition_epoch > *from_epoch => {
                        if p.state.leader == *leader {
                            Some(Reply::PartitionChanged {
                                partition_epoch: p.state.partition_epoch,
                            })
                        } else if leading {
                            // Another change won the race (this one was refused at apply).
                            again = Some(request.clone());
                            None
                        } else {
                            Some(Reply::Refused(RequestError::NotController))
                        }
                    }
                    Some(_) => None,
                    None => Some(Reply::Refused(RequestError::UnknownTopic(String::new()))),
                },
                Awaiting::Configs {
                    topic_id,
                    configs,
                    before,
                } => match self.image.topics.get(topic_id) {
                    Some(t) if t.configs == *configs || t.configs != *before => {
                        Some(Reply::TopicConfigsSet {
                            applied_index: self.image.applied_index,
                        })
                    }
                    Some(_) => None,
                    None => Some(Reply::Refused(RequestError::UnknownTopic(String::new()))),
                },
                Awaiting::Partitions {
                    topic_id,
                    from,
                    total,
                } => match self.image.topics.get(topic_id) {
                    Some(t) if t.partitions.len() as u32 == *total => {
                        Some(Reply::PartitionsAdded {
                            applied_index: self.image.applied_index,
                        })
                    }
                    Some(t) if t.partitions.len() as u32 != *from => {
                        Some(Reply::Refused(RequestError::InvalidPartitions(format!(
                            "the topic grew to {} partitions meanwhile",
                            t.partitions.len()
                        ))))
                    }
                    Some(_) => None,
                    None => Some(Reply::Refused(RequestError::UnknownTopic(String::new()))),
                },
                Awaiting::ProducerIds {
                    broker_id,
                    start,
                    len,
                    request,
                } => {
                    if self.image.producer_id_block_end <= *start {
                        None
                    } else if self.producer_id_blocks.get(start) == Some(broker_id) {
                        self.producer_id_blocks.remove(start);
                        Some(Reply::ProducerIds {
                            start: *start,
                            len: *len,
                        })
                    } else if leading {
                        again = Some(request.clone());
                        None
                    } else {
                        Some(Reply::Refused(RequestError::NotController))
                    }
                }
                Awaiting::Applied { index, reply } => {
                    (self.image.applied_index >= *index).then(|| reply.clone())
                }
            };
            if let Some(request) = again {
                decide_again.push((s.reply_to, request));
                continue;
            }
            match reply {
                Some(r) => done.push((s.reply_to, r)),
                // Leadership lost: the proposal may never commit; the client retries.
                None if s.proposed_here && !leading => {
                    done.push((s.reply_to, Reply::Refused(RequestError::NotController)))
                }
                None if now >= s.deadline => done.push((
                    s.reply_to,
                    Reply::Refused(RequestError::Timeout(REQUEST_TIMEOUT.as_millis() as u64)),
                )),
                None => keep.push(s),
            }
        }
        self.serving = keep;
        for (to, r) in done {
            self.answer(to, r);
        }
        for (to, request) in decide_again {
            self.serve_request(request, to);
        }
        let expired: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, (_, deadline, _, _))| now >= *deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((tx, _, _, _)) = self.forwarded.remove(&id) {
                let _ = tx.send(Reply::Refused(RequestError::Timeout(
                    REQUEST_TIMEOUT.as_millis() as u64,
                )));
            }
        }
    }
}
