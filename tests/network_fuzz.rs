//! Network fuzzing: a real broker gets a few thousand mutated real requests (bit flips,
//! truncations, count and length fields set to huge values, inserted and deleted bytes, wrong
//! size prefixes) over many connections, and must stay up and still serve a real client
//! (produce a record, fetch it back) afterwards.
//!
//! The real requests are the request fuzz target's corpus (`fuzz/corpus/request/`) that
//! decode whole, so they cover every API the broker serves at many versions. The mutations are
//! drawn from a seeded xorshift; the seed is printed, and `SPATE_NETWORK_FUZZ_SEED=<seed>`
//! replays a run. `SPATE_NETWORK_FUZZ_REQUESTS` changes the count (default 3000).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::records::Compression;
use spate_client::{Acks, Client, OutRecord};

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Frames of the request corpus that the broker would decode whole (prefix, header, body).
fn real_requests() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request");
    let mut frames: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .filter(|f| spate_net::fuzzing::request_decodes(f))
        .collect();
    frames.sort();
    frames
}

/// One mutation of a real request, or a few stacked.
fn mutate(rng: &mut Rng, frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    for _ in 0..1 + rng.below(3) {
        if f.is_empty() {
            f.push(0);
        }
        let at = rng.below(f.len());
        match rng.below(8) {
            0 => f[at] ^= 1 << rng.below(8),
            1 => f.truncate(at),
            // A count or length field (i32 or i16) set to a huge or negative value. Positions
            // past the 8-byte prefix, where the header's and the body's fields are.
            2 | 3 => {
                let at = 8.min(f.len()) + rng.below(f.len().saturating_sub(8));
                let huge: &[u8] = match rng.below(5) {
                    0 => &[0x7f, 0xff, 0xff, 0xff],
                    1 => &[0xff, 0xff, 0xff, 0xff],
                    2 => &[0x7f, 0xff],
                    3 => &[0xff, 0xff, 0xff, 0xff, 0x0f], // an unsigned varint of 2^32 - 1
                    _ => &[0x80, 0x00, 0x00, 0x00],
                };
                for (i, b) in huge.iter().enumerate() {
                    if let Some(x) = f.get_mut(at + i) {
                        *x = *b;
                    }
                }
            }
            4 => {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                f.splice(at..at, bytes);
            }
            5 => {
                let n = 1 + rng.below(16);
                f.drain(at..(at + n).min(f.len()));
            }
            6 => f[at] = rng.next() as u8,
            _ => {
                // The API version: sometimes outside what the broker serves.
                if f.len() >= 4 {
                    f[3] = f[3].wrapping_add(1 + rng.below(3) as u8);
                }
            }
        }
    }
    f
}

/// The size prefix: right almost always, sometimes too small, too large, zero or negative.
fn size_prefix(rng: &mut Rng, len: usize) -> [u8; 4] {
    let size = match rng.below(40) {
        0 => 0,
        1 => -1,
        2 => i32::MAX,
        3 => len as i32 + 1 + rng.below(64) as i32,
        4 => (len as i32 - 1 - rng.below(8) as i32).max(1),
        _ => len as i32,
    };
    size.to_be_bytes()
}

/// Reads whatever the broker answers until it pauses or closes; the content is not checked.
fn drain(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return true
            }
            Err(_) => return false,
        }
    }
}

#[test]
fn mutated_requests_never_stop_the_broker() {
    let seed = std::env::var("SPATE_NETWORK_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let count: usize = std::env::var("SPATE_NETWORK_FUZZ_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    eprintln!(
        "network fuzz: seed {seed} (SPATE_NETWORK_FUZZ_SEED={seed} replays it), {count} requests"
    );
    let frames = real_requests();
    let apis: std::collections::BTreeSet<[u8; 2]> = frames.iter().map(|f| [f[0], f[1]]).collect();
    assert!(
        frames.len() >= 24 && apis.len() >= 20,
        "fuzz/corpus/request holds {} whole requests of {} APIs; expected real requests of every API",
        frames.len(),
        apis.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("spate.toml");
    std::fs::write(&cfg, "[kafka]\nmax_request_bytes = 1048576\n").unwrap();
    let mut broker = common::start(
        &dir.path().join("data"),
        &["--shards", "2", "--config", cfg.to_str().unwrap()],
    );
    let addr = broker.listen_addr();
    // A topic for the mutated requests to hit (the corpus names "orders").
    let mut client = Client::new(&addr, "network-fuzz", Duration::from_secs(10)).unwrap();
    client.topic("orders", true).unwrap();

    let mut rng = Rng(seed);
    let started = Instant::now();
    let budget = Duration::from_secs(90);
    let mut sent = 0usize;
    let mut connections = 0usize;
    let mut closed_by_broker = 0usize;
    while sent < count && started.elapsed() < budget {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(3))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        connections += 1;
        // A connection gets 1 to 16 requests, or fewer if the broker closes it.
        for _ in 0..1 + rng.below(16) {
            let base = &frames[rng.below(frames.len())];
            let frame = if rng.below(10) == 0 {
                base.clone() // an unmutated request now and then keeps the connection useful
            } else {
                mutate(&mut rng, base)
            };
            let mut wire = size_prefix(&mut rng, frame.len()).to_vec();
            wire.extend_from_slice(&frame);
            sent += 1;
            if s.write_all(&wire).is_err() || !drain(&mut s) {
                closed_by_broker += 1;
                break;
            }
        }
        if let Ok(Some(status)) = broker.child.try_wait() {
            let log = broker.drain_lines();
            panic!(
                "the broker exited ({status}) after {sent} requests (seed {seed}); its log:\n{}",
                log[log.len().saturating_sub(40)..].join("\n")
            );
        }
    }
    eprintln!(
        "network fuzz: {sent} requests over {connections} connections in {:.1} s; \
         the broker closed {closed_by_broker} of them",
        started.elapsed().as_secs_f64()
    );
    assert!(
        sent >= count.min(500),
        "only {sent} requests sent in {budget:?}"
    );

    // Still up, and still serving a real client: produce a record and read it back.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        broker.child.try_wait().unwrap().is_none(),
        "the broker exited (seed {seed})"
    );
    let mut client = Client::new(&addr, "after-fuzz", Duration::from_secs(10)).unwrap();
    let info = client.topic("after-network-fuzz", true).unwrap();
    let record = OutRecord {
        key: None,
        value: Some(Bytes::from_static(b"still serving")),
        headers: Vec::new(),
        timestamp_ms: 1_700_000_000_000,
    };
    let mut next = 0;
    let acked = client
        .produce(
            "after-network-fuzz",
            vec![record],
            Acks::All,
            Compression::None,
            &mut next,
        )
        .unwrap();
    let (partition, offset) = acked[0];
    let leader = info
        .partitions
        .iter()
        .find(|(p, _)| *p == partition)
        .map(|(_, l)| *l)
        .unwrap();
    let fetched = client
        .fetch(leader, "after-network-fuzz", &[(partition, offset)], 1000)
        .unwrap();
    let records = match &fetched[0].1 {
        Ok(r) => r,
        Err(code) => panic!("fetch after the fuzzing failed with error {code}"),
    };
    assert_eq!(records[0].value.as_deref(), Some(&b"still serving"[..]));
    // A panic in a connection's task would not stop the process, but it is a bug.
    let panics: Vec<String> = broker
        .drain_lines()
        .into_iter()
        .filter(|l| l.contains("panicked"))
        .collect();
    assert!(
        panics.is_empty(),
        "the broker panicked (seed {seed}):\n{}",
        panics.join("\n")
    );
    broker.stop_cleanly();
}
