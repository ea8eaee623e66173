//! Shared by the end-to-end tests: a real `spate serve` process on a free port and a temp
//! data directory, killed by pid when the test ends however it ends.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running broker, killed by pid when the test ends, however it ends.
pub struct Broker {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spate"));
    c.env("SPATE_LOG", "info");
    c
}

pub fn start(data_dir: &Path, extra: &[&str]) -> Broker {
    let mut child = spate()
        .args([
            "serve",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Broker {
        child,
        lines: rx,
        seen: Vec::new(),
    }
}

impl Broker {
    /// Waits (bounded) for a log line containing `needle`.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    pub fn listen_addr(&mut self) -> String {
        let line = self.wait_for("spate is ready");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .unwrap()
            .to_string()
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

pub fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap()
        .parse()
        .unwrap()
}

impl Broker {
    /// SIGTERM, and a clean exit; on failure, shows the broker's log.
    pub fn stop_cleanly(&mut self) {
        let status = self.terminate();
        if !status.success() {
            let lines = self.drain_lines();
            panic!(
                "broker exited with {status}; its log:\n{}",
                lines.join("\n")
            );
        }
    }

    /// Every log line so far (waiting briefly for the ones in flight).
    pub fn drain_lines(&mut self) -> Vec<String> {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        self.seen.clone()
    }
}
