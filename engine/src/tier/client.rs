//! A shard's handle on the cold tier. The store's calls block (a disk, or an object store's
//! client on a runtime of its own), so they run on a few threads of the tier's; a shard sends
//! each call through a channel and awaits its answer, and its other work goes on meanwhile.
//! A call that fails in a way worth retrying is retried a bounded number of times with a
//! growing pause; a call still unanswered at its deadline fails with `TimedOut` (the thread
//! drops it if it has not started it by then).

use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use super::cache::ChunkCache;
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
    traffic: Traffic,
    /// Remote chunks kept on local disk (`tier.cache_bytes`), if any.
    cache: Option<Arc<ChunkCache>>,
}

/// What the tier moved since the last summary ([`Tier::log_traffic`]).
#[derive(Default)]
struct Traffic {
    /// Bytes put: log objects, indexes, manifests.
    uploaded: AtomicU64,
    /// Bytes of ranged reads: the log objects consumers read.
    read: AtomicU64,
    /// Of those, the bytes the local chunk cache had.
    cached: AtomicU64,
    failed: AtomicU64,
    /// When the last summary was logged (`None`: never; the first counts from the start).
    since: Mutex<Option<Instant>>,
}

/// One summary of the tier's traffic: bytes put and read, calls failed, over `secs`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrafficSummary {
    pub uploaded_bytes: u64,
    pub read_bytes: u64,
    /// Of `read_bytes`, those read from the local chunk cache.
    pub cached_bytes: u64,
    pub failed_calls: u64,
    pub secs: f64,
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
        Self::start_with_cache(store, settings, None)
    }

    /// [`Tier::start`], ranged reads going through `cache`.
    pub fn start_with_cache(
        store: Arc<dyn ColdStore>,
        settings: TierSettings,
        cache: Option<ChunkCache>,
    ) -> io::Result<Tier> {
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
                traffic: Traffic {
                    since: Mutex::new(Some(Instant::now())),
                    ..Traffic::default()
                },
                cache: cache.map(Arc::new),
            }),
        })
    }

    /// What the tier moved since the last call, if `every` has passed since then (whichever
    /// shard asks first takes it; the others get `None`).
    pub fn take_traffic(&self, every: Duration) -> Option<TrafficSummary> {
        let t = &self.shared.traffic;
        let mut since = t.since.lock().ok()?;
        let last = (*since)?;
        let secs = last.elapsed();
        if secs < every {
            return None;
        }
        *since = Some(Instant::now());
        Some(TrafficSummary {
            uploaded_bytes: t.uploaded.swap(0, Ordering::Relaxed),
            read_bytes: t.read.swap(0, Ordering::Relaxed),
            cached_bytes: t.cached.swap(0, Ordering::Relaxed),
            failed_calls: t.failed.swap(0, Ordering::Relaxed),
            secs: secs.as_secs_f64(),
        })
    }

    /// Logs the upload and remote-read rates and the failed calls once per `every`, if the
    /// tier did anything: one line a minute at most, whatever the traffic.
    pub fn log_traffic(&self, every: Duration) {
        let Some(t) = self.take_traffic(every) else {
            return;
        };
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let rate = |b: u64| mib(b) / t.secs.max(0.001);
        if t.failed_calls > 0 {
            let last = self.last_error().map(|(e, _)| e).unwrap_or_default();
            tracing::warn!(
                tier = self.describe(),
                uploaded_mib = format!("{:.1}", mib(t.uploaded_bytes)),
                read_mib = format!("{:.1}", mib(t.read_bytes)),
                failed_calls = t.failed_calls,
                "cold tier over the last {:.0} s: uploads {:.1} MiB/s, remote reads {:.1} MiB/s, {} calls failed (the last: {last})",
                t.secs,
                rate(t.uploaded_bytes),
                rate(t.read_bytes),
                t.failed_calls
            );
        } else if t.uploaded_bytes > 0 || t.read_bytes > 0 {
            tracing::info!(
                tier = self.describe(),
                uploaded_mib = format!("{:.1}", mib(t.uploaded_bytes)),
                read_mib = format!("{:.1}", mib(t.read_bytes)),
                cached_mib = format!("{:.1}", mib(t.cached_bytes)),
                "cold tier over the last {:.0} s: uploads {:.1} MiB/s, remote reads {:.1} MiB/s ({:.0}% from the local chunk cache)",
                t.secs,
                rate(t.uploaded_bytes),
                rate(t.read_bytes),
                100.0 * t.cached_bytes as f64 / t.read_bytes.max(1) as f64
            );
        }
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
            self.shared.traffic.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.shared.last_error.lock() {
                *last = Some((format!("{what}: {e}"), std::time::SystemTime::now()));
            }
        }
        result
    }

    fn count(&self, counter: fn(&Traffic) -> &AtomicU64, bytes: u64) {
        counter(&self.shared.traffic).fetch_add(bytes, Ordering::Relaxed);
    }

    pub async fn put(&self, key: String, data: Bytes) -> io::Result<()> {
        let len = data.len() as u64;
        self.call(format!("put {key}"), move |s| s.put(&key, &data))
            .await?;
        self.count(|t| &t.uploaded, len);
        Ok(())
    }

    /// Copies the first `len` bytes of a local file; returns their CRC32.
    pub async fn put_file(&self, key: String, path: PathBuf, len: u64) -> io::Result<u32> {
        let crc = self
            .call(format!("put {key}"), move |s| s.put_file(&key, &path, len))
            .await?;
        self.count(|t| &t.uploaded, len);
        Ok(crc)
    }

    pub async fn get_range(&self, key: String, range: Range<u64>) -> io::Result<Bytes> {
        let cache = self.shared.cache.clone();
        let (got, fetched) = self
            .call(format!("get {key}"), move |s| match &cache {
                Some(c) => c
                    .get_range(s, &key, range.clone())
                    .map(|r| (r.bytes, r.fetched)),
                None => s.get_range(&key, range.clone()).map(|b| {
                    let n = b.len() as u64;
                    (b, n)
                }),
            })
            .await?;
        self.count(|t| &t.read, got.len() as u64);
        self.count(|t| &t.cached, (got.len() as u64).saturating_sub(fetched));
        Ok(got)
    }

    pub async fn get(&self, key: String) -> io::Result<Bytes> {
        // Manifests and indexes: not counted as remote reads (a follower reads the manifest
        // every pass, which would make an idle tier look busy).
        self.call(format!("get {key}"), move |s| s.get(&key)).await
    }

    pub async fn list(&self, prefix: String) -> io::Result<Vec<String>> {
        self.call(format!("list {prefix}"), move |s| s.list(&prefix))
            .await
    }

    pub async fn delete(&self, key: String) -> io::Result<()> {
        let cache = self.shared.cache.clone();
        self.call(format!("delete {key}"), move |s| {
            if let Some(c) = &cache {
                c.forget(&key);
            }
            s.delete(&key)
        })
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
