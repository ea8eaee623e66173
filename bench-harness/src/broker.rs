//! An embedded broker for `spate bench` / `spate-bench --with-broker`: a `spate serve` child
//! process on a temporary data directory and a free loopback port, stopped (SIGTERM, then
//! SIGKILL) when dropped, and sent SIGTERM by the kernel if this process dies first. A run
//! interrupted by a signal stops it through `cleanup.rs`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Broker warnings shown per window; a failing partition (a full disk) repeats one warning
/// per request, which would bury the progress lines.
const WARNINGS_SHOWN: u32 = 10;
const WARNING_WINDOW: Duration = Duration::from_secs(10);

/// At most `shown` lines per `window`; counts the others.
struct LineLimit {
    shown: u32,
    window: Duration,
    started: Option<Instant>,
    in_window: u32,
    hidden: u64,
}

impl LineLimit {
    fn new(shown: u32, window: Duration) -> Self {
        Self {
            shown,
            window,
            started: None,
            in_window: 0,
            hidden: 0,
        }
    }

    /// Whether to show a line arriving at `now`, and how many lines were hidden in the
    /// window that just ended (reported once, when a new window starts).
    fn admit(&mut self, now: Instant) -> (bool, u64) {
        let mut ended_hidden = 0;
        match self.started {
            Some(t) if now.duration_since(t) < self.window => {}
            _ => {
                ended_hidden = std::mem::take(&mut self.hidden);
                self.started = Some(now);
                self.in_window = 0;
            }
        }
        if self.in_window < self.shown {
            self.in_window += 1;
            (true, ended_hidden)
        } else {
            self.hidden += 1;
            (false, ended_hidden)
        }
    }

    /// Lines hidden in the last window.
    fn finish(&mut self) -> u64 {
        std::mem::take(&mut self.hidden)
    }
}

pub struct EmbeddedBroker {
    child: Child,
    pub bootstrap: String,
    pub data_dir: PathBuf,
    /// What makes its acks=all appends durable, as its start-up log says.
    pub durability: Option<String>,
}

impl EmbeddedBroker {
    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `spate serve` from `spate` (the binary) on `data_dir`, with `config` if given.
    pub fn start(spate: &Path, data_dir: &Path, config: Option<&Path>) -> Result<Self, String> {
        let mut command = Command::new(spate);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        crate::cleanup::die_with_parent(&mut command);
        let mut child = command
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
                            let mut limit = LineLimit::new(WARNINGS_SHOWN, WARNING_WINDOW);
                            while let Ok(line) = rx.recv() {
                                if line.contains(" WARN ") || line.contains(" ERROR ") {
                                    let (show, hidden) = limit.admit(Instant::now());
                                    if hidden > 0 {
                                        eprintln!(
                                            "broker: ({hidden} more warnings not shown in the last {} s)",
                                            WARNING_WINDOW.as_secs()
                                        );
                                    }
                                    if show {
                                        eprintln!("broker: {line}");
                                    }
                                }
                            }
                            let hidden = limit.finish();
                            if hidden > 0 {
                                eprintln!("broker: ({hidden} more warnings not shown)");
                            }
                        });
                        let durability = seen.iter().find_map(|l: &String| {
                            l.split_once("durable appends: ")
                                .map(|(_, d)| d.to_string())
                        });
                        return Ok(Self {
                            child,
                            bootstrap: addr.to_string(),
                            data_dir: data_dir.to_path_buf(),
                            durability,
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
        crate::cleanup::stop_broker(self.child.id(), crate::cleanup::STOP_GRACE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_limit_shows_the_first_lines_of_each_window_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut l = LineLimit::new(2, Duration::from_secs(10));
        assert_eq!(l.admit(t0), (true, 0));
        assert_eq!(l.admit(t0 + Duration::from_secs(1)), (true, 0));
        assert_eq!(l.admit(t0 + Duration::from_secs(2)), (false, 0));
        assert_eq!(l.admit(t0 + Duration::from_secs(3)), (false, 0));
        // A new window: shown again, and the 2 hidden lines reported once.
        assert_eq!(l.admit(t0 + Duration::from_secs(11)), (true, 2));
        assert_eq!(l.admit(t0 + Duration::from_secs(12)), (true, 0));
        assert_eq!(l.admit(t0 + Duration::from_secs(13)), (false, 0));
        assert_eq!(l.finish(), 1);
        assert_eq!(l.finish(), 0);
    }
}
