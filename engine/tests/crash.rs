//! Crash safety for real: a child process appends durable batches through the engine and is
//! killed with SIGKILL at a random point, 24 rounds over the same log. After each kill the log
//! is recovered and every acknowledged batch must be there, intact, in order, with contiguous
//! offsets, and nothing corrupt may be served.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

const ROUNDS: u64 = 24;

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn torture() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spate-engine-torture"))
}

#[test]
fn acknowledged_batches_survive_sigkill_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("p0");
    let mut acked: HashMap<u64, (u64, u64, u64)> = HashMap::new(); // offset -> (round, seq, len)
    let mut seed: u64 = 0x5eed_1234;
    let mut kills_with_acks = 0;
    for round in 0..ROUNDS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay_ms = 30 + seed % 400;
        let child = torture()
            .args(["append", log_dir.to_str().unwrap(), &round.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SIGKILL: no chance to flush or close.
        unsafe { libc::kill(child.0.id() as i32, libc::SIGKILL) };
        let _ = child.0.wait();
        let mut out = String::new();
        child
            .0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut round_acks = 0;
        for line in out.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() == 5 && f[0] == "ack" {
                let offset: u64 = f[1].parse().unwrap();
                let v = (
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                    f[4].parse().unwrap(),
                );
                assert!(
                    acked.insert(offset, v).is_none(),
                    "offset {offset} acknowledged twice"
                );
                round_acks += 1;
            }
        }
        if round_acks > 0 {
            kills_with_acks += 1;
        }

        let dump = torture()
            .args(["dump", log_dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            dump.status.success(),
            "dump failed: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        let text = String::from_utf8(dump.stdout).unwrap();
        let mut next = 0u64;
        let mut present: HashMap<u64, (u64, u64, u64)> = HashMap::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f[0] {
                "batch" => {
                    let offset: u64 = f[1].parse().unwrap();
                    let count: u64 = f[2].parse().unwrap();
                    assert_eq!(offset, next, "round {round}: offsets not contiguous");
                    assert_eq!(
                        f[6], "ok",
                        "round {round}: corrupt batch served at {offset}"
                    );
                    present.insert(
                        offset,
                        (
                            f[3].parse().unwrap(),
                            f[4].parse().unwrap(),
                            f[5].parse().unwrap(),
                        ),
                    );
                    next = offset + count;
                }
                "end" => assert_eq!(f[1].parse::<u64>().unwrap(), next),
                other => panic!("round {round}: unexpected dump line {other}: {line}"),
            }
        }
        for (offset, v) in &acked {
            assert_eq!(
                present.get(offset),
                Some(v),
                "round {round}: acknowledged batch at {offset} lost or changed"
            );
        }
    }
    assert!(
        kills_with_acks >= ROUNDS / 2,
        "too few rounds acknowledged anything ({kills_with_acks}); the test would prove little"
    );
    assert!(acked.len() > 100);
}
