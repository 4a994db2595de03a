//! The seam's lock in a bucket: a lease object, taken with a conditional
//! create (or, once its holder's term is over, a conditional overwrite of
//! the version read), renewed by its holder with `If-Match` on its own last
//! version, deleted when released. See ARCHITECTURE.md, "The object-store
//! backend", for what a partition does.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::client::{Client, PutOutcome};

/// How long a lease lasts and how much clock skew between hosts a taker
/// allows for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseOptions {
    /// A lease's term: renewed every third of it; its holder counts it
    /// from when it sent the renewal, less a quarter for safety.
    pub term: Duration,
    /// Added to a holder's stated expiry (its wall clock) before another
    /// host takes the lease over.
    pub skew: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            term: Duration::from_secs(10),
            skew: Duration::from_secs(2),
        }
    }
}

impl LeaseOptions {
    /// The longest a taker may have to wait for a lease a crashed holder
    /// left: its term and the skew allowance.
    pub fn takeover_wait(&self) -> Duration {
        self.term + self.skew
    }
}

/// What a lease object says.
#[derive(Serialize, Deserialize)]
struct Body {
    /// Who holds it: unique per backend instance.
    holder: String,
    /// The holder's process id (for messages: `tblob` reports it).
    pid: u32,
    /// Unix milliseconds after which the holder no longer counts on it.
    expires_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Held {
    /// The version of the lease object last written by us.
    etag: Option<String>,
    /// Until when (our monotonic clock) we may act on it.
    valid_until: Instant,
}

/// A lease this process holds.
pub(super) struct Lease {
    client: Arc<Client>,
    key: String,
    holder: String,
    options: LeaseOptions,
    held: Mutex<Held>,
    lost: AtomicBool,
    stop: (Mutex<bool>, Condvar),
}

impl Lease {
    /// Whether we may still act on the lease; `Err` once it lapsed.
    pub(super) fn check(&self) -> io::Result<()> {
        let valid = !self.lost.load(Ordering::Acquire)
            && Instant::now()
                < self
                    .held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .valid_until;
        if valid {
            Ok(())
        } else {
            self.lost.store(true, Ordering::Release);
            Err(io::Error::other(format!(
                "object store: lease {} lost: this host no longer holds the store",
                self.key
            )))
        }
    }

    fn body(&self) -> Bytes {
        let body = Body {
            holder: self.holder.clone(),
            pid: std::process::id(),
            expires_ms: now_ms() + self.options.term.as_millis() as u64,
        };
        Bytes::from(serde_json::to_vec(&body).expect("a lease body serialises"))
    }

    fn safe_term(&self) -> Duration {
        self.options.term * 3 / 4
    }

    /// The lease object's version if it says we hold it (our own write
    /// whose answer was lost), else `None`.
    fn ours(&self) -> Option<Option<String>> {
        let (bytes, etag) = self.client.get(&self.key).ok()?;
        let body: Body = serde_json::from_slice(&bytes).ok()?;
        (body.holder == self.holder).then_some(etag)
    }

    /// Renews until told to stop or the lease is lost.
    fn renew_loop(self: Arc<Lease>) {
        let period = self.options.term / 3;
        let mut wait = period;
        loop {
            {
                let stop = self.stop.0.lock().unwrap_or_else(|p| p.into_inner());
                let (stop, _) = self
                    .stop
                    .1
                    .wait_timeout_while(stop, wait, |stop| !*stop)
                    .unwrap_or_else(|p| p.into_inner());
                if *stop {
                    return;
                }
            }
            if self.check().is_err() {
                return;
            }
            let sent = Instant::now();
            let etag = self
                .held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .etag
                .clone();
            match self.client.put_if(&self.key, self.body(), etag) {
                Ok(PutOutcome::Put(etag)) => {
                    let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                    held.etag = etag;
                    held.valid_until = sent + self.safe_term();
                    wait = period;
                }
                Ok(PutOutcome::Conflict) => match self.ours() {
                    // An earlier try of this renewal had landed.
                    Some(etag) => {
                        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                        held.etag = etag;
                        held.valid_until = sent + self.safe_term();
                        wait = period;
                    }
                    None => {
                        self.lost.store(true, Ordering::Release);
                        return;
                    }
                },
                // Tried again soon, until the term runs out.
                Err(_) => wait = (period / 4).max(Duration::from_millis(50)),
            }
        }
    }
}

/// Holds a lease until dropped: stops its renewal and deletes it.
pub(super) struct LeaseGuard {
    lease: Arc<Lease>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl LeaseGuard {
    pub(super) fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        *self.lease.stop.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.lease.stop.1.notify_all();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        if self.lease.check().is_ok() {
            // Best effort: if this fails, the lease ends with its term.
            let _ = self.lease.client.delete(&self.lease.key);
        }
        self.lease.lost.store(true, Ordering::Release);
    }
}

/// Takes the lease at `key`, or `WouldBlock` if someone holds it.
pub(super) fn take(
    client: &Arc<Client>,
    key: String,
    holder: String,
    options: LeaseOptions,
) -> io::Result<LeaseGuard> {
    let lease = Arc::new(Lease {
        client: Arc::clone(client),
        key,
        holder,
        options,
        held: Mutex::new(Held {
            etag: None,
            valid_until: Instant::now(),
        }),
        lost: AtomicBool::new(false),
        stop: (Mutex::new(false), Condvar::new()),
    });
    // Create the lease, or overwrite the version read if it has expired;
    // a conflict is read back: our own put whose answer was lost (the
    // client tries a conditional put again), a live holder, or a lease
    // released or taken over meanwhile (tried again, a few times).
    let mut expected = None;
    for _ in 0..3 {
        // Before the put and its retries: the term is counted from the
        // earliest moment it could have started.
        let sent = Instant::now();
        let found = match client.put_if(&lease.key, lease.body(), expected.take())? {
            PutOutcome::Put(etag) => return start(lease, etag, sent),
            PutOutcome::Conflict => match client.get(&lease.key) {
                Ok(found) => found,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            },
        };
        let (bytes, etag) = found;
        let body = serde_json::from_slice::<Body>(&bytes).ok();
        if body.as_ref().is_some_and(|b| b.holder == lease.holder) {
            return start(lease, etag, sent);
        }
        // A lease we cannot read says nothing about a live holder: treated
        // as over.
        let expires = body.map_or(0, |b| b.expires_ms);
        if expires.saturating_add(options.skew.as_millis() as u64) >= now_ms() {
            break;
        }
        match etag {
            Some(etag) => expected = Some(etag),
            // No version to make the overwrite conditional on.
            None => break,
        }
    }
    Err(held_by_another(&lease.key))
}

fn start(lease: Arc<Lease>, etag: Option<String>, sent: Instant) -> io::Result<LeaseGuard> {
    {
        let mut held = lease.held.lock().unwrap_or_else(|p| p.into_inner());
        held.etag = etag;
        held.valid_until = sent + lease.safe_term();
    }
    let renewing = Arc::clone(&lease);
    let renewer = std::thread::Builder::new()
        .name("tblob-lease".into())
        .spawn(move || renewing.renew_loop())?;
    Ok(LeaseGuard {
        lease,
        renewer: Some(renewer),
    })
}

fn held_by_another(key: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::WouldBlock,
        format!("object store: lease {key} is held by another host"),
    )
}
