//! An embedded broker for `spate bench` / `spate-bench --with-broker`: a `spate serve` child
//! process on a temporary data directory and a free loopback port, stopped (SIGTERM, then
//! SIGKILL) when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct EmbeddedBroker {
    child: Child,
    pub bootstrap: String,
    pub data_dir: PathBuf,
}

impl EmbeddedBroker {
    /// Starts `spate serve` from `spate` (the binary) on `data_dir`.
    pub fn start(spate: &Path, data_dir: &Path) -> Result<Self, String> {
        let mut child = Command::new(spate)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("SPATE_LOG", "warn,spate::serve=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {} serve: {e}", spate.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr from the broker")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line
                        .contains("spate is ready")
                        .then(|| {
                            line.split_whitespace()
                                .find_map(|w| w.strip_prefix("listen="))
                        })
                        .flatten()
                    {
                        // Keep draining its log so the broker never blocks on a full pipe;
                        // its warnings and errors show (a closed connection says why).
                        std::thread::spawn(move || {
                            while let Ok(line) = rx.recv() {
                                if line.contains(" WARN ") || line.contains(" ERROR ") {
                                    eprintln!("broker: {line}");
                                }
                            }
                        });
                        return Ok(Self {
                            child,
                            bootstrap: addr.to_string(),
                            data_dir: data_dir.to_path_buf(),
                        });
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "the embedded broker did not start:\n{}",
                        seen.join("\n")
                    ));
                }
            }
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
