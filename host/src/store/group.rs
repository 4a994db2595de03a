//! Group commit (`Durability::Batch`): concurrent commits share fsyncs.
//!
//! A committer queues its commit record and waits. Whichever waiter finds
//! no leader at work becomes the leader: it takes the whole queue, fsyncs
//! every segment with unsynced bytes (which covers the chunks of every
//! queued commit, since they were written before their commit queued),
//! then, under the log lock, checks each record's links and the tenant's
//! quota (artifact count and bytes, counting the records of the batch so
//! far: commits racing for the last room are decided here, one at a time),
//! gives it a fresh id, writes all of them to `meta.log` in one append, fdatasyncs it once,
//! publishes them in queue order, and wakes everyone. Commits that queued
//! meanwhile form the next batch. A committer returns only once its own
//! record's fsync completed (or failed), so acknowledged means durable.
//!
//! Records are queued rather than written to `meta.log` before the segment
//! fsync: if a manifest reached the log first, the kernel could write it
//! back before the chunks it names and a crash would leave a manifest
//! pointing at missing chunks.
//!
//! Mutex and condition variables only: no sleeps, no timers. Each waiter
//! sleeps on a condition variable of its own, woken when its result is in
//! or when it is the oldest waiter and the leader is done (it leads the
//! next batch): a batch wakes its own committers and one more, not every
//! thread queued. The group lock is never held while another lock is
//! taken or an fsync runs. Never used
//! for deletes and updates, which run as under `Durability::Sync`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};

use super::format::{self, MetaRecord};
use super::{apply, check_links, lock, ArtifactId, Durability, Store, StoreError};

/// The queue of commits waiting for a shared fsync.
#[derive(Default)]
pub struct Group {
    state: Mutex<GroupState>,
}

#[derive(Default)]
struct GroupState {
    queue: Vec<Queued>,
    next_ticket: u64,
    /// Results of finished batches not yet collected by their committer.
    results: HashMap<u64, Result<ArtifactId, StoreError>>,
    /// Whether a leader is running a batch.
    leading: bool,
    /// The condition variable each committer waits on, by ticket, from
    /// its queueing to its return.
    waiters: HashMap<u64, Arc<Condvar>>,
}

impl GroupState {
    /// Wakes the committer of `ticket`, if it is still waiting.
    fn wake(&self, ticket: u64) {
        if let Some(waiter) = self.waiters.get(&ticket) {
            waiter.notify_one();
        }
    }
}

struct Queued {
    ticket: u64,
    /// A commit record whose id is assigned by the leader.
    record: MetaRecord,
    links: Vec<ArtifactId>,
}

/// Commits `record` (a [`MetaRecord::Commit`] with a placeholder id)
/// together with whatever else is queued; returns its id once durable.
pub fn commit(
    store: &Store,
    record: MetaRecord,
    links: Vec<ArtifactId>,
) -> Result<ArtifactId, StoreError> {
    let group = &store.inner.group;
    let mut state = lock(&group.state);
    let ticket = state.next_ticket;
    state.next_ticket += 1;
    state.queue.push(Queued {
        ticket,
        record,
        links,
    });
    let waiter = Arc::new(Condvar::new());
    state.waiters.insert(ticket, Arc::clone(&waiter));
    loop {
        if let Some(result) = state.results.remove(&ticket) {
            state.waiters.remove(&ticket);
            return result;
        }
        if !state.leading {
            state.leading = true;
            // `Sync`: a batch of one, the oldest waiting; otherwise all.
            let batch = if store.inner.options.durability == Durability::Sync {
                vec![state.queue.remove(0)]
            } else {
                std::mem::take(&mut state.queue)
            };
            drop(state);
            let mut leader = Leader {
                store,
                tickets: batch.iter().map(|queued| queued.ticket).collect(),
                results: Vec::new(),
            };
            leader.results = run(store, batch);
            drop(leader);
            state = lock(&group.state);
            continue;
        }
        state = waiter
            .wait(state)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    }
}

/// Hands a batch's results over when the leader is done, even if it
/// panicked (then every commit of the batch fails), so no waiter waits
/// forever.
struct Leader<'a> {
    store: &'a Store,
    tickets: Vec<u64>,
    results: Vec<(u64, Result<ArtifactId, StoreError>)>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let group = &self.store.inner.group;
        let mut state = lock(&group.state);
        let mut answered = HashSet::new();
        for (ticket, result) in self.results.drain(..) {
            answered.insert(ticket);
            state.results.insert(ticket, result);
        }
        for &ticket in &self.tickets {
            if !answered.contains(&ticket) {
                state.results.insert(
                    ticket,
                    Err(StoreError::io(
                        "group commit",
                        std::io::Error::other("the commit leader panicked"),
                    )),
                );
            }
        }
        state.leading = false;
        // The batch's committers (the leader's own finds nobody waiting:
        // it is running this), and the oldest queued one, which leads the
        // next batch.
        for &ticket in &self.tickets {
            state.wake(ticket);
        }
        if let Some(next) = state.queue.first() {
            state.wake(next.ticket);
        }
    }
}

/// Runs one batch; returns each ticket's result.
fn run(store: &Store, batch: Vec<Queued>) -> Vec<(u64, Result<ArtifactId, StoreError>)> {
    let inner = &store.inner;
    let fail_all = |batch: Vec<Queued>, error: &StoreError| {
        batch
            .into_iter()
            .map(|queued| (queued.ticket, Err(error.duplicate())))
            .collect()
    };
    // Chunks first: every segment with unsynced bytes.
    let plans = lock(&inner.state).segments.sync_plans_all();
    if let Err(error) = store.inner.run_sync_plans(plans) {
        return fail_all(batch, &error);
    }
    let mut meta_log = lock(&inner.meta_log);
    if let Err(error) = store.check_writable() {
        return fail_all(batch, &error);
    }
    let mut results = Vec::with_capacity(batch.len());
    let mut records = Vec::with_capacity(batch.len());
    let mut accepted = Vec::with_capacity(batch.len());
    let quota = inner.quota();
    let mut batch_bytes = 0u64;
    {
        let mut state = lock(&inner.state);
        let mut assigned = HashSet::new();
        // Creation times never decrease in commit order (a commit that
        // took its time before an earlier one committed takes that one's),
        // so a creation-time range is a range of commit positions.
        let mut created_floor = match state.db.created_max() {
            Ok(floor) => floor,
            Err(error) => return fail_all(batch, &StoreError::from(error)),
        };
        for mut queued in batch {
            // Checked again under the log lock: a link may have gone since
            // the committer checked it.
            if let Err(error) = check_links(&state.db, &queued.links) {
                results.push((queued.ticket, Err(error)));
                continue;
            }
            // A log still in format version 1 (damaged, so not upgraded at
            // open) has no place for external links.
            if !format::fields_fit_version(meta_log.version(), &queued.record) {
                results.push((
                    queued.ticket,
                    Err(StoreError::InvalidArgument(format!(
                        "external links cannot be stored yet: meta.log is still format version {} (replay found damage there, so it was not upgraded; see tblob verify)",
                        meta_log.version()
                    ))),
                ));
                continue;
            }
            // The container too: it may have been deleted since.
            if let MetaRecord::Commit {
                bound: Some((container, _)),
                ..
            } = &queued.record
            {
                if let Err(error) = state.db.names.check_container(container) {
                    results.push((queued.ticket, Err(error)));
                    continue;
                }
            }
            // The id is a placeholder of the same length: the record's
            // length is final.
            let record_bytes = format::meta_record_len_in(meta_log.version(), &queued.record);
            if let Err(error) = inner.check_commit_quota(
                &state,
                &quota,
                records.len() as u64,
                batch_bytes,
                record_bytes,
            ) {
                results.push((queued.ticket, Err(error)));
                continue;
            }
            let id = loop {
                let id = ArtifactId::generate();
                match state.db.ever_committed(&id) {
                    Ok(false) if assigned.insert(id) => break Ok(id),
                    Ok(_) => {}
                    Err(error) => break Err(StoreError::from(error)),
                }
            };
            let id = match id {
                Ok(id) => id,
                Err(error) => {
                    results.push((queued.ticket, Err(error)));
                    continue;
                }
            };
            batch_bytes += record_bytes;
            if let MetaRecord::Commit {
                id: slot,
                created_ms,
                ..
            } = &mut queued.record
            {
                *slot = *id.as_bytes();
                *created_ms = (*created_ms).max(created_floor);
                created_floor = *created_ms;
            } else {
                unreachable!("only commits are queued");
            }
            records.push(queued.record);
            accepted.push((queued.ticket, id));
        }
        // Counted as used until `log_append` counts them in the log.
        state.log_bytes_pending += batch_bytes;
    }
    if records.is_empty() {
        return results;
    }
    if let Err(error) = store.log_append(&mut meta_log, &records, batch_bytes) {
        results.extend(
            accepted
                .into_iter()
                .map(|(ticket, _)| (ticket, Err(error.duplicate()))),
        );
        return results;
    }
    let mut state = lock(&inner.state);
    let mut failure: Option<StoreError> = None;
    for (record, (ticket, id)) in records.into_iter().zip(accepted) {
        // Durable already: a failure here fails the store (read-only),
        // not the commit, which a reopen replays.
        if failure.is_none() {
            if let Err(error) = inner.applied(apply(&mut state.db, record)) {
                failure = Some(error);
            }
        }
        results.push((ticket, Ok(id)));
    }
    drop(state);
    if failure.is_none() {
        inner.maybe_checkpoint(&meta_log);
    }
    drop(meta_log);
    results
}
