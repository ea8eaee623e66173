//! A shard's handle on the cold tier. The store's calls block (a disk, or an object store's
//! client on a runtime of its own), so they run on a few threads of the tier's; a shard sends
//! each call through a channel and awaits its answer, and its other work goes on meanwhile.
//! A call that fails in a way worth retrying is retried a bounded number of times with a
//! growing pause; a call still unanswered at its deadline fails with `TimedOut` (the thread
//! drops it if it has not started it by then).

use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use super::store::{retriable, ColdStore};

/// How the tier's calls run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierSettings {
    /// Threads that run calls (so many calls are under way at once).
    pub threads: usize,
    /// How long a call may take, retries included.
    pub timeout: Duration,
    /// Further attempts after a failure worth retrying.
    pub retries: u32,
}

impl Default for TierSettings {
    fn default() -> Self {
        Self {
            threads: 4,
            timeout: Duration::from_secs(30),
            retries: 3,
        }
    }
}

type Job = Box<dyn FnOnce(&dyn ColdStore) + Send>;

struct Shared {
    jobs: flume::Sender<Job>,
    settings: TierSettings,
    describe: String,
    /// The last failed call: what it was, why, and when (for status and warnings).
    last_error: Mutex<Option<(String, std::time::SystemTime)>>,
}

/// The cold tier as a shard uses it; cheap to clone and shared by every shard.
#[derive(Clone)]
pub struct Tier {
    shared: Arc<Shared>,
}

impl Tier {
    /// Starts `settings.threads` threads running calls on `store`. They end once every
    /// handle is dropped.
    pub fn start(store: Arc<dyn ColdStore>, settings: TierSettings) -> io::Result<Tier> {
        let (tx, rx) = flume::bounded::<Job>(4096);
        for i in 0..settings.threads.max(1) {
            let rx = rx.clone();
            let store = store.clone();
            std::thread::Builder::new()
                .name(format!("spate-tier-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job(&*store);
                    }
                })?;
        }
        Ok(Tier {
            shared: Arc::new(Shared {
                jobs: tx,
                settings,
                describe: store.describe(),
                last_error: Mutex::new(None),
            }),
        })
    }

    /// What the tier is (`fs:/mnt/cold`).
    pub fn describe(&self) -> &str {
        &self.shared.describe
    }

    /// The last call that failed, and when.
    pub fn last_error(&self) -> Option<(String, std::time::SystemTime)> {
        self.shared.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Runs `op` on a tier thread, with retries, within the timeout.
    async fn call<T, F>(&self, what: String, op: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: Fn(&dyn ColdStore) -> io::Result<T> + Send + 'static,
    {
        let settings = self.shared.settings;
        let deadline = Instant::now() + settings.timeout;
        let (tx, rx) = oneshot::channel::<io::Result<T>>();
        let job: Job = Box::new(move |store| {
            let mut attempt = 0u32;
            let result = loop {
                if Instant::now() >= deadline {
                    break Err(timed_out(settings.timeout));
                }
                match op(store) {
                    Err(e) if retriable(&e) && attempt < settings.retries => {
                        attempt += 1;
                        let pause = Duration::from_millis(50 << (2 * attempt.min(4)));
                        let left = deadline.saturating_duration_since(Instant::now());
                        std::thread::sleep(pause.min(left));
                    }
                    other => break other,
                }
            };
            let _ = tx.send(result);
        });
        let result = match self.shared.jobs.send_async(job).await {
            Err(_) => Err(io::Error::other("the cold tier's threads are gone")),
            Ok(()) => {
                let timer = glommio::timer::sleep(settings.timeout + Duration::from_millis(100));
                match futures_util::future::select(rx, Box::pin(timer)).await {
                    futures_util::future::Either::Left((Ok(r), _)) => r,
                    futures_util::future::Either::Left((Err(_), _)) => {
                        Err(io::Error::other("a cold-tier call was dropped"))
                    }
                    futures_util::future::Either::Right(_) => Err(timed_out(settings.timeout)),
                }
            }
        };
        if let Err(e) = &result {
            if let Ok(mut last) = self.shared.last_error.lock() {
                *last = Some((format!("{what}: {e}"), std::time::SystemTime::now()));
            }
        }
        result
    }

    pub async fn put(&self, key: String, data: Bytes) -> io::Result<()> {
        self.call(format!("put {key}"), move |s| s.put(&key, &data))
            .await
    }

    /// Copies the first `len` bytes of a local file; returns their CRC32.
    pub async fn put_file(&self, key: String, path: PathBuf, len: u64) -> io::Result<u32> {
        self.call(format!("put {key}"), move |s| s.put_file(&key, &path, len))
            .await
    }

    pub async fn get_range(&self, key: String, range: Range<u64>) -> io::Result<Bytes> {
        self.call(format!("get {key}"), move |s| {
            s.get_range(&key, range.clone())
        })
        .await
    }

    pub async fn get(&self, key: String) -> io::Result<Bytes> {
        self.call(format!("get {key}"), move |s| s.get(&key)).await
    }

    pub async fn list(&self, prefix: String) -> io::Result<Vec<String>> {
        self.call(format!("list {prefix}"), move |s| s.list(&prefix))
            .await
    }

    pub async fn delete(&self, key: String) -> io::Result<()> {
        self.call(format!("delete {key}"), move |s| s.delete(&key))
            .await
    }
}

fn timed_out(after: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "the cold tier did not answer within {} ms",
            after.as_millis()
        ),
    )
}
