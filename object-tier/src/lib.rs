//! The object-store cold tier: [`ObjectTier`] implements the engine's
//! [`ColdStore`](spate_engine::tier::ColdStore) on the `object_store` crate (S3, and any store
//! that speaks S3's API: MinIO, Ceph, moto; Google Cloud Storage; Azure Blob Storage). object_store is async on tokio; a shard never
//! runs tokio, so the tier keeps a small runtime of its own and the engine's tier threads
//! (`spate_engine::tier::Tier`) drive each call to completion on it (`block_on`): a shard
//! only sends a request through a channel and awaits the answer.
//!
//! A segment's log object is uploaded in parts of 8 MiB (S3's multipart upload) from the
//! segment file, its CRC32 computed on the way, so memory stays bounded whatever the segment
//! size; an upload that fails is aborted. An upload cut by a crash leaves an incomplete
//! multipart upload in the bucket, which S3 keeps until a lifecycle rule
//! (AbortIncompleteMultipartUpload) removes it: docs/OPERATIONS.md says to set one.

use std::io::{self, Read};
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use spate_engine::tier::store::check_key;
use spate_engine::tier::ColdStore;

/// Parts of a multipart upload, and the largest object put in one request.
const PART: usize = 8 << 20;

/// Where an S3 tier is, as `[tier]` names it. Credentials come from the environment as AWS's
/// SDKs read them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, a web
/// identity token, or the instance's metadata service).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Keys are stored under this prefix of the bucket ("" for its root).
    pub prefix: String,
    /// Another endpoint than AWS's (MinIO, Ceph, a test server), e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// The region [default: AWS_REGION / AWS_DEFAULT_REGION from the environment].
    pub region: Option<String>,
    /// Plain HTTP to the endpoint (a local test server); off by default.
    pub allow_http: bool,
}

pub struct ObjectTier {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    describe: String,
}

fn io_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        object_store::Error::InvalidPath { .. } => io::Error::new(io::ErrorKind::InvalidInput, e),
        other => io::Error::other(other),
    }
}

fn path(key: &str) -> io::Result<Path> {
    check_key(key)?;
    Path::parse(key).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Which object store a tier is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    S3,
    /// Google Cloud Storage: credentials from GOOGLE_APPLICATION_CREDENTIALS or
    /// GOOGLE_SERVICE_ACCOUNT (a service account's key file), else the instance's metadata
    /// server; `endpoint` sets another base URL (an emulator).
    Gcs,
    /// Azure Blob Storage, the bucket being the container: the account from
    /// AZURE_STORAGE_ACCOUNT_NAME, credentials from AZURE_STORAGE_ACCOUNT_KEY, a SAS token,
    /// a service principal or a managed identity, as Azure's SDKs read them; `endpoint` sets
    /// the account's URL; AZURE_STORAGE_USE_EMULATOR=true uses Azurite.
    Azure,
}

impl ObjectTier {
    /// A tier on `cloud`; fails only if the settings cannot make a client (nothing is sent
    /// yet).
    pub fn open(cloud: Cloud, settings: &S3Settings) -> Result<ObjectTier, String> {
        match cloud {
            Cloud::S3 => Self::s3(settings),
            Cloud::Gcs => {
                let mut builder = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&settings.bucket);
                if let Some(endpoint) = &settings.endpoint {
                    builder = builder.with_base_url(endpoint);
                }
                let gcs = builder
                    .build()
                    .map_err(|e| format!("tier.kind = \"gcs\": {e}"))?;
                Self::finish(gcs, settings, format!("gs://{}", settings.bucket))
            }
            Cloud::Azure => {
                let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(&settings.bucket)
                    .with_allow_http(settings.allow_http);
                if let Some(endpoint) = &settings.endpoint {
                    builder = builder.with_endpoint(endpoint.clone());
                }
                let azure = builder
                    .build()
                    .map_err(|e| format!("tier.kind = \"azure\": {e}"))?;
                Self::finish(azure, settings, format!("azure://{}", settings.bucket))
            }
        }
    }

    /// An S3 tier; fails only if the settings cannot make a client (nothing is sent yet).
    pub fn s3(settings: &S3Settings) -> Result<ObjectTier, String> {
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_allow_http(settings.allow_http);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        }
        let s3 = builder
            .build()
            .map_err(|e| format!("tier.kind = \"s3\": {e}"))?;
        Self::finish(s3, settings, format!("s3://{}", settings.bucket))
    }

    /// The tier on `store`, under `settings.prefix`, with its runtime; `describe` names the
    /// bucket (`s3://bucket`), to which the prefix is added.
    fn finish(
        store: impl ObjectStore,
        settings: &S3Settings,
        describe: String,
    ) -> Result<ObjectTier, String> {
        let prefix = settings.prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(store)
        } else {
            let p = Path::parse(prefix)
                .map_err(|e| format!("tier.prefix = {:?}: {e}", settings.prefix))?;
            Arc::new(PrefixStore::new(store, p))
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("spate-object-tier")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the object tier's runtime: {e}"))?;
        Ok(ObjectTier {
            store,
            runtime,
            describe: format!("{describe}/{prefix}"),
        })
    }

    /// One listing, to say at start whether the store answers (the broker starts either way).
    pub fn probe(&self, timeout: std::time::Duration) -> Result<(), String> {
        let store = self.store.clone();
        self.runtime.block_on(async move {
            let list = async {
                let mut entries = store.list(None);
                match entries.next().await {
                    Some(Err(e)) => Err(e.to_string()),
                    _ => Ok(()),
                }
            };
            match tokio::time::timeout(timeout, list).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            }
        })
    }
}

impl ColdStore for ObjectTier {
    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let p = path(key)?;
        let payload = Bytes::copy_from_slice(data);
        self.runtime
            .block_on(self.store.put(&p, payload.into()))
            .map(|_| ())
            .map_err(io_error)
    }

    fn put_file(&self, key: &str, file: &FsPath, len: u64) -> io::Result<u32> {
        let p = path(key)?;
        let mut src = std::fs::File::open(file)?.take(len);
        let mut crc = crc32fast::Hasher::new();
        if len <= PART as u64 {
            let mut data = Vec::with_capacity(len as usize);
            src.read_to_end(&mut data)?;
            if data.len() as u64 != len {
                return Err(short(file, data.len() as u64, len));
            }
            crc.update(&data);
            self.runtime
                .block_on(self.store.put(&p, Bytes::from(data).into()))
                .map_err(io_error)?;
            return Ok(crc.finalize());
        }
        self.runtime.block_on(async {
            let upload = self.store.put_multipart(&p).await.map_err(io_error)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
            let mut buf = vec![0u8; 1 << 20];
            let mut copied = 0u64;
            let result: io::Result<()> = async {
                loop {
                    let n = src.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    crc.update(&buf[..n]);
                    writer.wait_for_capacity(4).await.map_err(io_error)?;
                    writer.write(&buf[..n]);
                    copied += n as u64;
                }
                if copied != len {
                    return Err(short(file, copied, len));
                }
                Ok(())
            }
            .await;
            match result {
                Ok(()) => writer.finish().await.map(|_| ()).map_err(io_error),
                Err(e) => {
                    let _ = writer.abort().await;
                    Err(e)
                }
            }
        })?;
        Ok(crc.finalize())
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> io::Result<Bytes> {
        // Callers ask within the object (a remote segment's size is in its manifest).
        let p = path(key)?;
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        self.runtime
            .block_on(self.store.get_range(&p, range))
            .map_err(io_error)
    }

    fn get(&self, key: &str) -> io::Result<Bytes> {
        let p = path(key)?;
        self.runtime.block_on(async {
            let got = self.store.get(&p).await.map_err(io_error)?;
            got.bytes().await.map_err(io_error)
        })
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        // Listing goes by whole path segments: the directory part of the prefix, filtered.
        let dir = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let under = if dir.is_empty() {
            None
        } else {
            Some(path(dir)?)
        };
        self.runtime.block_on(async {
            let mut out = Vec::new();
            let mut entries = self.store.list(under.as_ref());
            while let Some(entry) = entries.next().await {
                let key = entry.map_err(io_error)?.location.to_string();
                if key.starts_with(prefix) {
                    out.push(key);
                }
            }
            Ok(out)
        })
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        let p = path(key)?;
        match self.runtime.block_on(self.store.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_error(e)),
        }
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

fn short(file: &FsPath, got: u64, want: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("{} holds {got} bytes, {want} expected", file.display()),
    )
}
