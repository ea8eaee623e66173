//! A local cluster for `spate-bench --with-cluster N`: `spate cluster --nodes N` as a child
//! process on free loopback ports and a temporary data directory (its topics get
//! min(N, 3) replicas), waited for until every broker is registered, and stopped (SIGTERM to
//! the launcher, which stops its brokers) when dropped. The kernel sends the launcher SIGTERM
//! if this process dies first.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct LocalCluster {
    child: Child,
    pub bootstrap: String,
    pub data_dir: PathBuf,
}

impl LocalCluster {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(spate: &Path, data_dir: &Path, nodes: usize) -> Result<Self, String> {
        let mut command = Command::new(spate);
        command
            .args(["cluster", "--nodes", &nodes.to_string(), "--base-port", "0"])
            .arg("--data-dir")
            .arg(data_dir);
        crate::cleanup::die_with_parent(&mut command);
        let mut child = command
            .env("SPATE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {} cluster: {e}", spate.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout from spate cluster")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut cluster = LocalCluster {
            child,
            bootstrap: String::new(),
            data_dir: data_dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while cluster.bootstrap.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    // spate-client bootstraps from one address: the first broker's.
                    if let Some(b) = line.strip_prefix("bootstrap: ") {
                        cluster.bootstrap = b.trim().split(',').next().unwrap_or("").to_string();
                    }
                }
                Err(_) => return Err("spate cluster did not print its bootstrap list".into()),
            }
        }
        // Every broker registered and a controller elected.
        loop {
            let ready = spate_client::Client::new(
                &cluster.bootstrap,
                "spate-bench",
                Duration::from_secs(5),
            )
            .and_then(|mut c| c.broker_ids())
            .is_ok_and(|ids| ids.len() == nodes);
            if ready {
                return Ok(cluster);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the local cluster at {} did not register its {nodes} brokers within 60 s",
                    cluster.bootstrap
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        crate::cleanup::stop_broker(self.child.id(), Duration::from_secs(40));
    }
}
