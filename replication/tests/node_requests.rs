//! Three cluster nodes in one process (each on its own thread, real TCP on 127.0.0.1, real
//! files): they elect a controller and register; a topic created through any node is in every
//! node's image with its replicas spread; the controller's refusals come back as errors;
//! producer id blocks asked for by every node at once never overlap; a stopped node is
//! fenced and a topic's leadership moves off it.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use spate_replication::metadata::NO_LEADER;
use spate_replication::node::{self, NodeConfig, NodeHandle, Reply, Request, RequestError};
use spate_replication::voters::Voter;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn call(h: &NodeHandle, r: Request) -> Reply {
    // Retried while no controller is known, as a Kafka client retries NOT_CONTROLLER.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = futures_lite::future::block_on(h.call(r.clone()));
        match reply {
            Reply::Refused(RequestError::NotController) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            other => return other,
        }
    }
}

#[test]
fn topics_go_through_the_controller_and_leadership_leaves_a_stopped_node() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters: Vec<Voter> = (0..3)
        .map(|i| Voter {
            id: i as i32 + 1,
            host: "127.0.0.1".into(),
            port: ports[i],
        })
        .collect();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let config = NodeConfig {
            node_id: i as i32 + 1,
            cluster_listen: format!("127.0.0.1:{}", ports[i]).parse().unwrap(),
            voters: voters.clone(),
            data_dir: dirs[i].path().to_path_buf(),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092 + i as u16,
            shards: 2,
            replication_ports: vec![],
            replica_lag_time_max_ms: 30_000,
            broker_session_timeout_ms: 3_000,
            broker_heartbeat_interval_ms: 500,
            tick_ms: 50,
            metadata_snapshot_entries: 16,
        };
        nodes.push(node::start(config).expect("node starts"));
    }
    let handles: Vec<NodeHandle> = nodes.iter().map(|(h, _)| h.clone()).collect();
    wait_until(
        "three live brokers everywhere",
        Duration::from_secs(30),
        || {
            handles.iter().all(|h| {
                h.view().image.live_brokers().count() == 3 && h.view().controller.is_some()
            })
        },
    );

    // Created through a node that is not the controller: forwarded to it.
    let controller = handles[0].view().controller.unwrap();
    let via = handles
        .iter()
        .find(|h| h.view().node_id != controller)
        .unwrap();
    let reply = call(
        via,
        Request::CreateTopic {
            name: "orders".into(),
            partitions: 6,
            replication_factor: 3,
            assignment: None,
            configs: vec![("retention.ms".into(), "1000".into())],
        },
    );
    let Reply::TopicCreated { topic_id } = reply else {
        panic!("not created: {reply:?}");
    };
    assert_eq!(topic_id[6] >> 4, 4, "a version-4 UUID");
    // The node that answered, and the controller, have applied it; the third soon does.
    let via_id = via.view().node_id;
    for h in handles
        .iter()
        .filter(|h| [controller, via_id].contains(&h.view().node_id))
    {
        let v = h.view();
        let t = v
            .image
            .topic_by_name("orders")
            .expect("applied where answered");
        assert_eq!(t.id, topic_id);
        assert_eq!(t.partitions.len(), 6);
        for p in &t.partitions {
            let mut r = p.assignment.replicas.clone();
            r.sort_unstable();
            assert_eq!(r, vec![1, 2, 3]);
            assert!(p.assignment.shard < 2);
        }
    }
    wait_until("the topic in every image", Duration::from_secs(10), || {
        handles.iter().all(|h| {
            h.view()
                .image
                .topic_by_name("orders")
                .is_some_and(|t| t.id == topic_id)
        })
    });
    // The controller's refusals.
    let again = call(
        &handles[2],
        Request::CreateTopic {
            name: "orders".into(),
            partitions: 1,
            replication_factor: 1,
            assignment: None,
            configs: vec![],
        },
    );
    assert_eq!(
        again,
        Reply::Refused(RequestError::TopicExists("orders".into()))
    );
    let too_many = call(
        &handles[1],
        Request::CreateTopic {
            name: "big".into(),
            partitions: 1,
            replication_factor: 4,
            assignment: None,
            configs: vec![],
        },
    );
    assert!(
        matches!(
            too_many,
            Reply::Refused(RequestError::InvalidReplicationFactor(_))
        ),
        "{too_many:?}"
    );
    let unknown = call(
        &handles[0],
        Request::DeleteTopic {
            name: "nope".into(),
        },
    );
    assert!(matches!(
        unknown,
        Reply::Refused(RequestError::UnknownTopic(_))
    ));

    // Producer id blocks, asked for by every node at once (so that proposals race at the
    // controller): each a whole block, none overlapping another.
    let asks: Vec<_> = handles
        .iter()
        .flat_map(|h| (0..3).map(move |_| h.clone()))
        .map(|h| {
            std::thread::spawn(move || {
                call(
                    &h,
                    Request::AllocateProducerIds {
                        // Filled in by the node: a forged id is not passed on.
                        broker_id: 99,
                    },
                )
            })
        })
        .collect();
    let mut blocks: Vec<(i64, i64)> = asks
        .into_iter()
        .map(|t| match t.join().unwrap() {
            Reply::ProducerIds { start, len } if len > 0 && start >= 0 => (start, start + len),
            other => panic!("no producer ids: {other:?}"),
        })
        .collect();
    blocks.sort_unstable();
    assert_eq!(blocks.len(), 9);
    assert!(
        blocks.windows(2).all(|w| w[0].1 <= w[1].0),
        "overlapping producer id blocks: {blocks:?}"
    );

    // A stopped broker is fenced; the partitions it led get other leaders.
    let (victim, join) = nodes.remove(0);
    let victim_id = victim.view().node_id;
    victim.stop();
    let _ = join.join();
    let others: Vec<NodeHandle> = nodes.iter().map(|(h, _)| h.clone()).collect();
    wait_until(
        "the stopped broker fenced and replaced",
        Duration::from_secs(20),
        || {
            others.iter().all(|h| {
                let v = h.view();
                !v.image.is_live(victim_id)
                    && v.image.topic_by_name("orders").is_some_and(|t| {
                        t.partitions.iter().all(|p| {
                            p.state.leader != victim_id
                                && p.state.leader != NO_LEADER
                                && !p.state.isr.contains(&victim_id)
                        })
                    })
            })
        },
    );
    let deleted = call(
        &others[0],
        Request::DeleteTopic {
            name: "orders".into(),
        },
    );
    assert_eq!(deleted, Reply::TopicDeleted { topic_id });
    for (h, join) in nodes {
        h.stop();
        let _ = join.join();
    }
}
