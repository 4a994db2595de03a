//! Sandboxed stores for test suites: a [`TempStore`] is a store root in a
//! fresh temporary directory, with its own [`Runtime`], removed with
//! everything in it when the value is dropped.
//!
//! Every `TempStore` of a process shares one engine and one compiled
//! chunker (compiling it is the slow part of opening a runtime), so a
//! test that makes its own store pays only for the directory and the
//! tenants it opens. Tenants inside one `TempStore` are as isolated as
//! tenants anywhere: a test that wants many can share one store and take
//! a [`TempStore::fresh_tenant`] each.
//!
//! Background GC is off ([`Runtime::with_gc`]): what a test measures
//! changes only by what it does; call `Store::gc` to collect.
//!
//! Stores are opened with [`Durability::None`] by default: a test suite's
//! store never outlives a power cut, and fsyncs would make it many times
//! slower. Use [`TempStore::with_options`] to test durable behaviour.
//!
//! ```
//! use tensor_blob_host::testing::TempStore;
//!
//! let sandbox = TempStore::new().unwrap();
//! let mut chunker = sandbox.chunker("default").unwrap();
//! let id = chunker.put(b"hello", &Default::default()).unwrap();
//! assert_eq!(chunker.get(&id).unwrap(), b"hello");
//! let path = sandbox.path().to_path_buf();
//! drop(chunker);
//! drop(sandbox);
//! assert!(!path.exists(), "the sandbox removes itself");
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::error::StoreError;
use crate::runtime::{self, Chunker, ChunkerComponent, Runtime};
use crate::store::{Durability, Store, StoreOptions};

/// A store root in a temporary directory that removes itself on drop.
pub struct TempStore {
    // Field order matters: the runtime (and every store it opened) closes
    // before the directory is removed.
    runtime: Runtime,
    dir: tempfile::TempDir,
}

/// The chunker compiled once per process, for every [`TempStore`] (and
/// for tests that build a [`Runtime`] of their own).
pub fn shared_chunker() -> wasmtime::Result<ChunkerComponent> {
    static SHARED: OnceLock<ChunkerComponent> = OnceLock::new();
    if let Some(chunker) = SHARED.get() {
        return Ok(chunker.clone());
    }
    // The per-user compile cache: each test process compiles the chunker
    // only if no earlier one did.
    let engine = runtime::new_engine(&runtime::EngineOptions::default())?.engine;
    let chunker = ChunkerComponent::new(&engine, tensor_blob_artifacts::CHUNKER_WASM)?;
    // Two tests racing here compile twice; both results work, one is kept.
    Ok(SHARED.get_or_init(|| chunker).clone())
}

/// Distinguishes the tenants [`TempStore::fresh_tenant`] hands out.
static TENANT_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TempStore {
    /// A new, empty store root, opened without fsyncs.
    pub fn new() -> wasmtime::Result<TempStore> {
        TempStore::with_options(StoreOptions {
            durability: Durability::None,
            ..StoreOptions::default()
        })
    }

    /// A new, empty store root whose tenants are opened with `options`.
    pub fn with_options(options: StoreOptions) -> wasmtime::Result<TempStore> {
        let dir = tempfile::Builder::new().prefix("tblob-test-").tempdir()?;
        let root = cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority())?;
        // No background GC: a test's disk figures must not change under it.
        let runtime = Runtime::with_chunker(shared_chunker()?, root, options).with_gc(None);
        Ok(TempStore { runtime, dir })
    }

    /// Where the store root is (for a `tblob --store` in a test).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The runtime serving this store root, for plugins and contexts.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The store of `tenant`, created on first use.
    pub fn store(&self, tenant: &str) -> Result<Store, StoreError> {
        self.runtime.tenant_store(tenant)
    }

    /// A chunker instance serving `tenant`, for puts and gets that go
    /// through the guest exactly as a plugin's do.
    pub fn chunker(&self, tenant: &str) -> wasmtime::Result<Chunker> {
        self.runtime.chunker(tenant)
    }

    /// A tenant name no other call in this process has returned, for tests
    /// that share one `TempStore` but want a tenant of their own.
    pub fn fresh_tenant(&self) -> String {
        format!("test-{}", TENANT_COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

/// A real S3-compatible server (`s3s-fs`, from the crates registry: `.ci/run`
/// installs it) on a free port of 127.0.0.1, serving a temporary
/// directory; killed and removed on drop. `TBLOB_S3S_FS` names the binary
/// if it is not on `PATH`.
pub struct S3Server {
    child: std::process::Child,
    port: u16,
    root: tempfile::TempDir,
}

/// The bucket every [`S3Server`] starts with.
pub const S3_BUCKET: &str = "tblob-test";
const S3_KEY: &str = "tblob-test-key";
const S3_SECRET: &str = "tblob-test-secret";

impl S3Server {
    /// Starts a server and waits until it answers on its port.
    pub fn start() -> std::io::Result<S3Server> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir(root.path().join(S3_BUCKET))?;
        S3Server::start_in(root)
    }

    fn start_in(root: tempfile::TempDir) -> std::io::Result<S3Server> {
        // A port the kernel says is free; another process could take it
        // before the server binds it, which the wait below then reports.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = S3Server::spawn(root.path(), port)?;
        let mut server = S3Server { child, port, root };
        server.wait_ready()?;
        Ok(server)
    }

    fn spawn(root: &Path, port: u16) -> std::io::Result<std::process::Child> {
        let binary = s3s_fs_binary()?;
        std::process::Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
            .arg(root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "starting {} (install it: cargo install s3s-fs --version 0.14.1 --features binary): {e}",
                        binary.to_string_lossy()
                    ),
                )
            })
    }

    /// Polls the port until the server accepts a connection (it has no
    /// other way to say it is up), for at most 30 s.
    fn wait_ready(&mut self) -> std::io::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "s3s-fs exited at start: {status}"
                )));
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::other("s3s-fs did not listen within 30 s"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Kills the server and starts it again on the same data and port (a
    /// server restart: what it had stored is still there).
    pub fn restart(&mut self) -> std::io::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = S3Server::spawn(self.root.path(), self.port)?;
        self.wait_ready()
    }

    /// The server's URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment variables that give a client (a `tblob` process)
    /// this server's credentials.
    pub fn credentials_env(&self) -> [(&'static str, &'static str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", S3_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
        ]
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory it keeps objects in (`<bucket>/<key>` files).
    pub fn data_dir(&self) -> &Path {
        self.root.path()
    }

    /// A config for `prefix` in the test bucket on this server, with
    /// quick retries (tests inject faults and should not wait long).
    pub fn config(&self, prefix: &str) -> crate::store::backend::object::ObjectConfig {
        let mut config = crate::store::backend::object::ObjectConfig::from_url(&format!(
            "s3://{S3_BUCKET}/{prefix}"
        ))
        .expect("an s3 URL");
        config.endpoint = Some(self.endpoint());
        config.credentials = Some((S3_KEY.into(), S3_SECRET.into()));
        config.retry_timeout = std::time::Duration::from_secs(10);
        config
    }
}

/// The `s3s-fs` to run: `TBLOB_S3S_FS`, else one on `PATH`, else one this
/// function installs from the crates registry (once, under the target
/// directory, `tools/`; concurrent test processes wait for the first).
fn s3s_fs_binary() -> std::io::Result<std::ffi::OsString> {
    if let Some(binary) = std::env::var_os("TBLOB_S3S_FS") {
        return Ok(binary);
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("s3s-fs").is_file()));
    if on_path {
        return Ok("s3s-fs".into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let tools = target.join("tools");
    let binary = tools.join("bin/s3s-fs");
    std::fs::create_dir_all(&tools)?;
    let lock = std::fs::File::create(tools.join("install.lock"))?;
    lock.lock()?;
    if !binary.is_file() {
        let status =
            std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args([
                    "install",
                    "--quiet",
                    "--locked",
                    "s3s-fs",
                    "--version",
                    "0.14.1",
                ])
                .args(["--features", "binary", "--root"])
                .arg(&tools)
                .env("CARGO_TARGET_DIR", tools.join("build"))
                .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "cargo install s3s-fs 0.14.1 failed: {status}"
            )));
        }
    }
    Ok(binary.into_os_string())
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a [`FaultProxy`] does to the connections it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward to the server.
    Pass,
    /// Read the next `n` requests and close their connections unanswered
    /// (a connection reset), then pass.
    Reset(u32),
    /// Answer the next `n` requests `503 SlowDown` (S3's throttling), then
    /// pass.
    SlowDown(u32),
    /// Close every connection unanswered until told otherwise (a network
    /// partition between the client and the bucket).
    Down,
    /// Forward the next `n` requests to the server, which carries them
    /// out, and close their connections before the answer (the client
    /// cannot know whether they landed), then pass.
    LoseAnswer(u32),
}

/// A TCP proxy on 127.0.0.1 in front of an [`S3Server`] that injects
/// [`Fault`]s, one decision per connection: give its client a config with
/// `reuse_connections: false`, so each request is a connection of its own.
pub struct FaultProxy {
    port: u16,
    fault: std::sync::Arc<std::sync::Mutex<(Fault, u64)>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FaultProxy {
    /// A proxy to `server`, passing everything until told otherwise.
    pub fn start(server: &S3Server) -> std::io::Result<FaultProxy> {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let upstream = server.port();
        let fault = Arc::new(Mutex::new((Fault::Pass, 0u64)));
        let stop = Arc::new(AtomicBool::new(false));
        let (fault_in, stop_in) = (Arc::clone(&fault), Arc::clone(&stop));
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                if stop_in.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = connection else { continue };
                let action = {
                    let mut state = fault_in.lock().unwrap_or_else(|p| p.into_inner());
                    let action = state.0;
                    state.0 = match state.0 {
                        Fault::Reset(n) if n > 1 => Fault::Reset(n - 1),
                        Fault::SlowDown(n) if n > 1 => Fault::SlowDown(n - 1),
                        Fault::LoseAnswer(n) if n > 1 => Fault::LoseAnswer(n - 1),
                        Fault::Reset(_) | Fault::SlowDown(_) | Fault::LoseAnswer(_) => Fault::Pass,
                        other => other,
                    };
                    if action != Fault::Pass {
                        state.1 += 1;
                    }
                    action
                };
                std::thread::spawn(move || {
                    let _ = proxy_connection(client, upstream, action);
                });
            }
        });
        Ok(FaultProxy { port, fault, stop })
    }

    /// Sets what the next connections meet.
    pub fn set(&self, fault: Fault) {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).0 = fault;
    }

    /// How many connections met a fault so far.
    pub fn injected(&self) -> u64 {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// The proxy's URL, for a config's endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop so it sees the stop.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one HTTP message (head, and a body of its `Content-Length`)
/// from `stream`, as it came.
fn read_message(stream: &mut std::net::TcpStream) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut message = Vec::new();
    let mut byte = [0u8; 1];
    while !message.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(message);
        }
        message.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&message).to_ascii_lowercase();
    let length: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    stream.take(length).read_to_end(&mut message)?;
    Ok(message)
}

fn proxy_connection(
    mut client: std::net::TcpStream,
    upstream: u16,
    action: Fault,
) -> std::io::Result<()> {
    use std::io::Write;
    match action {
        Fault::Pass => {
            let server = std::net::TcpStream::connect(("127.0.0.1", upstream))?;
            let (mut from_client, mut to_server) = (client.try_clone()?, server.try_clone()?);
            let up = std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_client, &mut to_server);
                let _ = to_server.shutdown(std::net::Shutdown::Write);
            });
            let (mut from_server, mut to_client) = (server, client);
            let _ = std::io::copy(&mut from_server, &mut to_client);
            let _ = to_client.shutdown(std::net::Shutdown::Both);
            let _ = up.join();
        }
        Fault::Reset(_) | Fault::Down => {
            read_message(&mut client)?;
            client.shutdown(std::net::Shutdown::Both)?;
        }
        Fault::LoseAnswer(_) => {
            let request = read_message(&mut client)?;
            let mut server = std::net::TcpStream::connect(("127.0.0.1", upstream))?;
            server.write_all(&request)?;
            // The server has answered, so it has done the request.
            read_message(&mut server)?;
            client.shutdown(std::net::Shutdown::Both)?;
        }
        Fault::SlowDown(_) => {
            read_message(&mut client)?;
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            write!(
                client,
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            client.flush()?;
            client.shutdown(std::net::Shutdown::Both)?;
        }
    }
    Ok(())
}
