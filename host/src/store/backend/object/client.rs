//! The bucket, as blocking calls: every request runs on the backend's own
//! runtime and the calling thread waits for it, as it would for a disk.
//! The seam is synchronous, and its callers may be threads of another
//! runtime (the wasmtime host's), where blocking on a future of this one
//! through a channel is safe and `block_on` would not be.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMode, PutOptions, PutPayload, RetryConfig, UpdateVersion,
};

/// Where the bucket is and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectConfig {
    /// The bucket's name.
    pub bucket: String,
    /// Key prefix of the store's root inside the bucket ("" for the whole
    /// bucket), without leading or trailing `/`.
    pub prefix: String,
    /// An S3-compatible server's URL (`http://127.0.0.1:9000`); `None`:
    /// AWS itself, or `AWS_ENDPOINT_URL` from the environment.
    pub endpoint: Option<String>,
    /// The region; `None`: `AWS_REGION` / `AWS_DEFAULT_REGION` from the
    /// environment, else `us-east-1`.
    pub region: Option<String>,
    /// Access key id and secret; `None`: `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (or the other usual sources) from the
    /// environment.
    pub credentials: Option<(String, String)>,
    /// How many times a failed request is tried again (connection errors,
    /// throttling such as 503 SlowDown, other 5xx), with backoff.
    pub retries: usize,
    /// The longest a request and its retries may take in all.
    pub retry_timeout: Duration,
    /// The longest one request may take.
    pub request_timeout: Duration,
    /// Keep idle connections for later requests (`false`: one connection
    /// per request, which a test's fault-injecting proxy relies on).
    pub reuse_connections: bool,
    /// How long a removed file's parts stay in the bucket after the
    /// manifest that removes it (for readers on other hosts that opened
    /// it before: a segment GC compacted away, say); zero deletes them at
    /// once. Judged by the writer's clock at its later syncs.
    pub removal_grace: Duration,
}

impl ObjectConfig {
    /// `s3://bucket/prefix` with the defaults; `None` for anything else.
    pub fn from_url(url: &str) -> Option<ObjectConfig> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        Some(ObjectConfig {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
            region: None,
            credentials: None,
            retries: 5,
            retry_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            reuse_connections: true,
            removal_grace: Duration::from_secs(600),
        })
    }
}

/// The bucket under the store's prefix.
pub(super) struct Client {
    store: Arc<AmazonS3>,
    runtime: tokio::runtime::Runtime,
    /// The bucket and prefix, for messages.
    name: String,
    /// How often a conditional put is tried again (see [`Client::put_if`]).
    retries: usize,
    /// Requests made, by kind (retries inside the client not counted).
    pub(super) counts: RequestCounts,
}

/// Requests a backend has made, by kind.
#[derive(Debug, Default)]
pub struct RequestCounts {
    pub puts: std::sync::atomic::AtomicU64,
    pub gets: std::sync::atomic::AtomicU64,
    pub lists: std::sync::atomic::AtomicU64,
    pub deletes: std::sync::atomic::AtomicU64,
    /// Bytes sent in puts.
    pub bytes_put: std::sync::atomic::AtomicU64,
}

fn count(counter: &std::sync::atomic::AtomicU64, n: u64) {
    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

/// What a conditional put met.
pub(super) enum PutOutcome {
    /// Written; its entity tag (for a later `If-Match`).
    Put(Option<String>),
    /// `If-None-Match: *` found an object, or `If-Match` another version.
    Conflict,
}

impl Client {
    pub(super) fn new(config: &ObjectConfig) -> io::Result<Client> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: config.retries,
                retry_timeout: config.retry_timeout,
            })
            .with_client_options({
                let options = ClientOptions::new()
                    .with_timeout(config.request_timeout)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_allow_http(true);
                if config.reuse_connections {
                    options
                } else {
                    options.with_pool_max_idle_per_host(0)
                }
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some((id, secret)) = &config.credentials {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        } else if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        let store = builder.build().map_err(|e| to_io("configuring", "", e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tblob-s3")
            .enable_all()
            .build()?;
        Ok(Client {
            store: Arc::new(store),
            runtime,
            name: format!("s3://{}/{}", config.bucket, config.prefix),
            retries: config.retries,
            counts: RequestCounts::default(),
        })
    }

    /// Runs `future` on the client's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = T> + Send + 'static,
    ) -> io::Result<T> {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = done.send(future.await);
        });
        wait.recv()
            .map_err(|_| io::Error::other(format!("{}: request abandoned", self.name)))
    }

    /// Puts `data` at `key` unconditionally.
    pub(super) fn put(&self, key: &str, data: Bytes) -> io::Result<()> {
        count(&self.counts.puts, 1);
        count(&self.counts.bytes_put, data.len() as u64);
        let store = Arc::clone(&self.store);
        let path = path(key)?;
        self.run(async move { store.put(&path, PutPayload::from(data)).await })?
            .map(drop)
            .map_err(|e| to_io("PUT", key, e))
    }

    /// Puts every `(key, data)`, up to 8 at a time; the first error if any.
    pub(super) fn put_all(&self, parts: Vec<(String, Bytes)>) -> io::Result<()> {
        if parts.len() == 1 {
            let (key, data) = parts.into_iter().next().expect("one part");
            return self.put(&key, data);
        }
        count(&self.counts.puts, parts.len() as u64);
        count(
            &self.counts.bytes_put,
            parts.iter().map(|p| p.1.len() as u64).sum(),
        );
        let store = Arc::clone(&self.store);
        let requests = parts
            .into_iter()
            .map(|(key, data)| Ok((path(&key)?, key, data)))
            .collect::<io::Result<Vec<_>>>()?;
        self.run(async move {
            futures_util::stream::iter(requests)
                .map(|(path, key, data)| {
                    let store = Arc::clone(&store);
                    async move {
                        store
                            .put(&path, PutPayload::from(data))
                            .await
                            .map_err(|e| to_io("PUT", &key, e))
                    }
                })
                .buffer_unordered(8)
                .try_for_each(|_| async { Ok(()) })
                .await
        })?
    }

    /// Puts `data` at `key` only if no object is there (`If-None-Match:
    /// *`), or only if the object there is version `etag` (`If-Match`).
    pub(super) fn put_if(
        &self,
        key: &str,
        data: Bytes,
        etag: Option<String>,
    ) -> io::Result<PutOutcome> {
        let store = Arc::clone(&self.store);
        let path = path(key)?;
        let mode = match etag {
            None => PutMode::Create,
            Some(e_tag) => PutMode::Update(UpdateVersion {
                e_tag: Some(e_tag),
                version: None,
            }),
        };
        // The client does not retry a conditional put whose connection
        // broke after it was sent (it may have landed): tried again here,
        // so such a put that had landed comes back as `Conflict`, which
        // every caller tells from a rival's write by reading the object.
        let mut tries = 0;
        loop {
            count(&self.counts.puts, 1);
            let (store, path, data, mode) =
                (Arc::clone(&store), path.clone(), data.clone(), mode.clone());
            let result = self.run(async move {
                store
                    .put_opts(&path, PutPayload::from(data), PutOptions::from(mode))
                    .await
            })?;
            match result {
                Ok(put) => return Ok(PutOutcome::Put(put.e_tag)),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => return Ok(PutOutcome::Conflict),
                Err(e @ object_store::Error::NotImplemented { .. }) => {
                    return Err(to_io("conditional PUT", key, e))
                }
                Err(e) if tries >= self.retries => return Err(to_io("conditional PUT", key, e)),
                Err(_) => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50 << tries.min(6)));
                }
            }
        }
    }

    /// The whole object at `key` and its entity tag.
    pub(super) fn get(&self, key: &str) -> io::Result<(Bytes, Option<String>)> {
        count(&self.counts.gets, 1);
        let store = Arc::clone(&self.store);
        let path = path(key)?;
        let result = self.run(async move {
            let got = store.get_opts(&path, GetOptions::default()).await?;
            let etag = got.meta.e_tag.clone();
            Ok::<_, object_store::Error>((got.bytes().await?, etag))
        })?;
        result.map_err(|e| to_io("GET", key, e))
    }

    /// Starts a GET of bytes `range` of the object at `key` and returns at
    /// once; `then` gets the bytes (`UnexpectedEof` if the object is
    /// shorter) or the error, on a thread of the client's runtime.
    pub(super) fn get_range_then(
        &self,
        key: &str,
        range: Range<u64>,
        then: impl FnOnce(io::Result<Bytes>) + Send + 'static,
    ) {
        count(&self.counts.gets, 1);
        let path = match path(key) {
            Ok(path) => path,
            Err(e) => return then(Err(e)),
        };
        let store = Arc::clone(&self.store);
        let (name, key) = (self.name.clone(), key.to_string());
        let want = range.end - range.start;
        let options = GetOptions::default().with_range(Some(GetRange::Bounded(range)));
        // Called exactly once: with the outcome, or (the task dropped
        // unfinished, as at the runtime's shutdown) with an error.
        let mut then = Once(Some(Box::new(then)), self.name.clone());
        self.runtime.spawn(async move {
            let result = match store.get_opts(&path, options).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            };
            then.call(match result {
                Err(e) => Err(to_io("ranged GET", &key, e)),
                Ok(bytes) if bytes.len() as u64 != want => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{name}: ranged GET {key}: {} bytes, {want} asked for",
                        bytes.len()
                    ),
                )),
                Ok(bytes) => Ok(bytes),
            })
        });
    }

    /// Every object whose key starts with `prefix/`, in key order.
    pub(super) fn list(&self, prefix: &str) -> io::Result<Vec<ObjectMeta>> {
        count(&self.counts.lists, 1);
        let store = Arc::clone(&self.store);
        let path = path(prefix)?;
        let mut objects = self
            .run(async move { store.list(Some(&path)).try_collect::<Vec<_>>().await })?
            .map_err(|e| to_io("LIST", prefix, e))?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// The names of the "subdirectories" right under `prefix/`.
    pub(super) fn list_prefixes(&self, prefix: &str) -> io::Result<Vec<String>> {
        count(&self.counts.lists, 1);
        let store = Arc::clone(&self.store);
        let path = path(prefix)?;
        let listed = self
            .run(async move { store.list_with_delimiter(Some(&path)).await })?
            .map_err(|e| to_io("LIST", prefix, e))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// Deletes the object at `key` (no error if there is none).
    pub(super) fn delete(&self, key: &str) -> io::Result<()> {
        count(&self.counts.deletes, 1);
        let store = Arc::clone(&self.store);
        let path = path(key)?;
        match self.run(async move { store.delete(&path).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(to_io("DELETE", key, e)),
        }
    }

    /// Deletes every key in `keys`, up to 8 requests at a time.
    pub(super) fn delete_all(&self, keys: Vec<String>) -> io::Result<()> {
        count(&self.counts.deletes, keys.len() as u64);
        let store = Arc::clone(&self.store);
        let paths = keys
            .iter()
            .map(|k| path(k))
            .collect::<io::Result<Vec<_>>>()?;
        self.run(async move {
            futures_util::stream::iter(paths)
                .map(|path| {
                    let store = Arc::clone(&store);
                    async move {
                        match store.delete(&path).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                            Err(e) => Err(to_io("DELETE", path.as_ref(), e)),
                        }
                    }
                })
                .buffer_unordered(8)
                .try_for_each(|_| async { Ok(()) })
                .await
        })?
    }
}

/// A request's continuation, called once; if never called, it is called
/// with an error when dropped.
struct Once(Option<Box<dyn FnOnce(io::Result<Bytes>) + Send>>, String);

impl Once {
    fn call(&mut self, result: io::Result<Bytes>) {
        if let Some(then) = self.0.take() {
            then(result);
        }
    }
}

impl Drop for Once {
    fn drop(&mut self) {
        let abandoned = io::Error::other(format!("{}: request abandoned", self.1));
        self.call(Err(abandoned));
    }
}

/// A key as a path of the client; keys are made by this module from
/// checked names, so a refusal is a bug reported as `InvalidInput`.
fn path(key: &str) -> io::Result<Path> {
    Path::parse(key).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{key}: {e}")))
}

/// An error of the client as an I/O error of the seam: not-found stays
/// `NotFound`, everything else names the request and the key.
fn to_io(request: &str, key: &str, error: object_store::Error) -> io::Error {
    let kind = match &error {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
        object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented { .. } => {
            io::ErrorKind::Unsupported
        }
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("object store: {request} {key}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GET still unanswered when the client (and its runtime) goes is
    /// answered with an error, not dropped unanswered: a reader waiting on
    /// it would wait for ever.
    #[test]
    fn a_get_abandoned_at_shutdown_is_answered_with_an_error() {
        // A server that takes connections and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut config = ObjectConfig::from_url("s3://bucket/prefix").unwrap();
        config.endpoint = Some(format!("http://{}", silent.local_addr().unwrap()));
        config.credentials = Some(("key".into(), "secret".into()));
        let client = Client::new(&config).unwrap();
        let (done, answer) = std::sync::mpsc::channel();
        client.get_range_then("prefix/part", 0..10, move |result| {
            let _ = done.send(result.map(|_| ()).map_err(|e| e.to_string()));
        });
        drop(client);
        let answer = answer.recv().expect("the GET was answered");
        assert!(
            answer.as_ref().is_err_and(|e| e.contains("abandoned")),
            "{answer:?}"
        );
    }
}
