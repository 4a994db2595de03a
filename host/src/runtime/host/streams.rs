//! `tensor:blob/stream-blobs`: put and get over WASI 0.3 `stream<u8>`.
//!
//! # Overlap
//! Each operation runs on a worker thread of its own, which owns a chunker
//! instance of the tenant ([`Runtime::chunker`]) and drives its writer or
//! reader synchronously. Between the worker and the plugin's stream sits a
//! [`Pipe`]: a queue of at most [`STREAM_QUEUE_PIECES`] pieces of at most
//! [`STREAM_PIECE_BYTES`], guarded by a mutex, with a condition variable for
//! the worker and a waker for the store's side. So the plugin producing (or
//! consuming) bytes on its thread and the chunker cutting and hashing (or
//! reading and verifying) on the worker's run at the same time, and memory
//! per operation is that queue plus one piece in hand on each side, plus the
//! chunker's buffers.
//!
//! - put: [`PutConsumer`] (a `StreamConsumer` piped from the plugin's
//!   stream) copies each guest write (at most a piece at a time) into the
//!   queue, and waits (backpressure: the guest's write stays pending) while
//!   the queue is full. The worker writes each piece to its chunker writer.
//!   Dropping the plugin's writer end drops the consumer, which closes the
//!   queue: the worker checks `expected-size`, reports the end to the call,
//!   and commits only when the call, still alive, asks it to.
//! - get: the worker reads verified pieces from its chunker reader into the
//!   queue (read-ahead); [`GetProducer`] (a `StreamProducer`) hands them to
//!   the plugin's reads. The final result goes through a oneshot channel
//!   behind the WIT future, sent after the queue is closed, so it follows
//!   the last byte. A failed read sends no byte of the failing chunk.
//!
//! # Cancellation and clean-up
//! Whatever ends an operation early, its worker notices within one chunker
//! call and releases everything (writer aborted, reader released, chunker
//! instance dropped):
//! - a put's call cancelled (or its store dropped at the end of the run):
//!   the call's [`CancelOnDrop`] marks the queue cancelled and drops the
//!   commit channel; the worker aborts the upload, so nothing is visible
//!   and its chunks are left for GC;
//! - a get's stream dropped by the plugin: the producer's drop closes the
//!   queue from the reading side; the worker stops and the future says
//!   `closed`;
//! - an error in the worker: the queue refuses further pieces, so the
//!   plugin's next write sees the stream dropped.
//!
//! [`StreamCtx::workers`] lets the runner join every worker after the
//! plugin's store is dropped, so a run leaves no thread behind.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::oneshot;
use wasmtime::component::{
    Accessor, Destination, FutureReader, HasData, Source, StreamConsumer, StreamProducer,
    StreamReader, StreamResult, VecBuffer,
};
use wasmtime::StoreContextMut;

use crate::runtime::bindings::streams::tensor::blob::stream_blobs;
use crate::runtime::bindings::{PutOptions, WitError};
use crate::runtime::check;
use crate::runtime::error::BlobError;
use crate::runtime::limits::{STREAM_OPERATIONS_MAX, STREAM_PIECE_BYTES, STREAM_QUEUE_PIECES};
use crate::runtime::Runtime;

/// What a plugin's `stream-blobs` imports act on: the runtime and tenant
/// (each operation instantiates a chunker of its own for the tenant) and
/// the plugin's workers. Make one with
/// [`Runtime::stream_context`] and reach it through
/// [`StreamView`](crate::runtime::StreamView).
pub struct StreamCtx {
    runtime: Runtime,
    tenant: String,
    workers: Arc<Workers>,
}

impl StreamCtx {
    pub(crate) fn new(runtime: Runtime, tenant: String) -> Self {
        StreamCtx {
            runtime,
            tenant,
            workers: Arc::new(Workers::default()),
        }
    }

    /// The worker threads of this context's operations, to join once the
    /// store holding the context is dropped (see [`StreamWorkers::join`]).
    pub fn workers(&self) -> StreamWorkers {
        StreamWorkers(Arc::clone(&self.workers))
    }
}

/// The worker threads of one [`StreamCtx`].
pub struct StreamWorkers(Arc<Workers>);

impl StreamWorkers {
    /// Waits for every worker started so far to end. Call it after the
    /// store holding the context was dropped: dropping the store drops
    /// every stream end and call the workers wait on, which makes them
    /// release their chunker and end. (Before that, a worker may be
    /// waiting for the plugin.)
    pub fn join(self) {
        let handles = std::mem::take(&mut lock(&self.0.state).handles);
        for handle in handles {
            // A worker that panicked has already released what it held by
            // unwinding; nothing more to do for it.
            let _ = handle.join();
        }
    }

    /// Workers still running.
    pub fn running(&self) -> usize {
        lock(&self.0.state).running
    }
}

#[derive(Default)]
struct Workers {
    state: Mutex<WorkersState>,
}

#[derive(Default)]
struct WorkersState {
    running: usize,
    handles: Vec<std::thread::JoinHandle<()>>,
}

/// Decrements the running count when a worker ends, even by panicking.
struct RunningGuard(Arc<Workers>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.running = state.running.saturating_sub(1);
    }
}

impl Workers {
    /// Starts `work` on a thread of its own, if fewer than
    /// [`STREAM_OPERATIONS_MAX`] are running.
    fn start(
        self: &Arc<Self>,
        name: &str,
        work: impl FnOnce() + Send + 'static,
    ) -> Result<(), BlobError> {
        let mut state = lock(&self.state);
        state.handles.retain(|handle| !handle.is_finished());
        if state.running >= STREAM_OPERATIONS_MAX {
            return Err(BlobError::invalid(format!(
                "at most {STREAM_OPERATIONS_MAX} stream puts and gets may be in progress at once"
            )));
        }
        let guard = RunningGuard(Arc::clone(self));
        let handle = std::thread::Builder::new()
            .name(format!("tblob-stream-{name}"))
            .spawn(move || {
                let _guard = guard;
                work();
            })
            .map_err(|e| BlobError::Blob(WitError::Io(format!("starting a stream worker: {e}"))))?;
        state.running += 1;
        state.handles.push(handle);
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Our own state is consistent at every unlock; a panic elsewhere must
    // not make every later call panic too.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The bounded queue between a stream end in the plugin's store and a
/// worker thread.
struct Pipe {
    state: Mutex<PipeState>,
    /// The worker waits on this.
    worker: Condvar,
}

#[derive(Default)]
struct PipeState {
    pieces: VecDeque<Vec<u8>>,
    /// The writing side is done: no more pieces will come.
    ended: bool,
    /// The reading side is gone or refuses more: pieces are not wanted.
    refused: bool,
    /// A put's call was cancelled: the worker must not commit.
    cancelled: bool,
    /// The store side's task, to wake when the worker made room or data.
    waker: Option<Waker>,
}

enum Pop {
    Piece(Vec<u8>),
    Ended,
    Cancelled,
}

impl Pipe {
    fn new() -> Arc<Self> {
        Arc::new(Pipe {
            state: Mutex::new(PipeState::default()),
            worker: Condvar::new(),
        })
    }

    fn wake_both(&self, mut state: MutexGuard<'_, PipeState>) {
        let waker = state.waker.take();
        drop(state);
        self.worker.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The writing side ends the data.
    fn end(&self) {
        let mut state = lock(&self.state);
        state.ended = true;
        self.wake_both(state);
    }

    /// The reading side wants no more.
    fn refuse(&self) {
        let mut state = lock(&self.state);
        state.refused = true;
        state.pieces.clear();
        self.wake_both(state);
    }

    fn cancel(&self) {
        let mut state = lock(&self.state);
        state.cancelled = true;
        state.pieces.clear();
        self.wake_both(state);
    }

    /// Worker side of a put: the next piece, or why there is none.
    fn pop_blocking(&self) -> Pop {
        let mut state = lock(&self.state);
        loop {
            if state.cancelled {
                return Pop::Cancelled;
            }
            if let Some(piece) = state.pieces.pop_front() {
                let waker = state.waker.take();
                drop(state);
                if let Some(waker) = waker {
                    waker.wake();
                }
                return Pop::Piece(piece);
            }
            if state.ended {
                return Pop::Ended;
            }
            state = self
                .worker
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Worker side of a get: queues `piece`, waiting for room; `false` if
    /// the reading side is gone.
    fn push_blocking(&self, piece: Vec<u8>) -> bool {
        let mut state = lock(&self.state);
        loop {
            if state.refused {
                return false;
            }
            if state.pieces.len() < STREAM_QUEUE_PIECES {
                state.pieces.push_back(piece);
                let waker = state.waker.take();
                drop(state);
                if let Some(waker) = waker {
                    waker.wake();
                }
                return true;
            }
            state = self
                .worker
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// Takes the plugin's bytes of a put into the [`Pipe`]. Its drop (the
/// plugin dropped its writer end, or the store is going away) ends the data.
struct PutConsumer {
    pipe: Arc<Pipe>,
}

impl Drop for PutConsumer {
    fn drop(&mut self) {
        self.pipe.end();
    }
}

impl<D> StreamConsumer<D> for PutConsumer {
    type Item = u8;

    fn poll_consume(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        store: StoreContextMut<D>,
        source: Source<'_, Self::Item>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        {
            let mut state = lock(&self.pipe.state);
            if state.refused || state.cancelled {
                return Poll::Ready(Ok(StreamResult::Dropped));
            }
            if state.pieces.len() >= STREAM_QUEUE_PIECES {
                if finish {
                    return Poll::Ready(Ok(StreamResult::Cancelled));
                }
                state.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        // Only this side adds pieces, so the room seen above is still there;
        // copy outside the lock so the worker is not held up meanwhile.
        let mut source = source.as_direct(store);
        let available = source.remaining();
        if available.is_empty() {
            // A zero-length write asks whether we can take bytes: we can.
            return Poll::Ready(Ok(StreamResult::Completed));
        }
        let taken = available.len().min(STREAM_PIECE_BYTES);
        let piece = available[..taken].to_vec();
        source.mark_read(taken);
        let mut state = lock(&self.pipe.state);
        state.pieces.push_back(piece);
        drop(state);
        self.pipe.worker.notify_all();
        Poll::Ready(Ok(StreamResult::Completed))
    }
}

/// Hands a get's verified pieces from the [`Pipe`] to the plugin's reads.
/// Its drop (the plugin dropped the stream) stops the worker.
struct GetProducer {
    pipe: Arc<Pipe>,
    /// The piece being delivered and how much of it was.
    current: Option<(Vec<u8>, usize)>,
}

impl Drop for GetProducer {
    fn drop(&mut self) {
        self.pipe.refuse();
    }
}

impl<D> StreamProducer<D> for GetProducer {
    type Item = u8;
    type Buffer = VecBuffer<u8>;

    fn poll_produce<'a>(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        store: StoreContextMut<'a, D>,
        destination: Destination<'a, Self::Item, Self::Buffer>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        let me = &mut *self;
        if me.current.is_none() {
            let mut state = lock(&me.pipe.state);
            match state.pieces.pop_front() {
                Some(piece) => {
                    drop(state);
                    me.pipe.worker.notify_all();
                    me.current = Some((piece, 0));
                }
                None if state.ended => return Poll::Ready(Ok(StreamResult::Dropped)),
                None if finish => return Poll::Ready(Ok(StreamResult::Cancelled)),
                None => {
                    state.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
        let Some((piece, delivered)) = me.current.as_mut() else {
            unreachable!("filled above");
        };
        let mut destination = destination.as_direct(store, piece.len() - *delivered);
        let room = destination.remaining();
        let n = room.len().min(piece.len() - *delivered);
        room[..n].copy_from_slice(&piece[*delivered..*delivered + n]);
        destination.mark_written(n);
        *delivered += n;
        if *delivered == piece.len() {
            me.current = None;
        }
        Poll::Ready(Ok(StreamResult::Completed))
    }
}

/// Held by a put's call while it runs: dropping it (the call cancelled, or
/// its store dropped) tells the worker to abort.
struct CancelOnDrop(Arc<Pipe>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// What a worker that cannot get a chunker reports.
fn chunker_unavailable(error: wasmtime::Error) -> BlobError {
    BlobError::Blob(WitError::Io(format!(
        "no chunker for the stream: {error:#}"
    )))
}

/// A worker's failure as the WIT error the plugin sees (a chunker trap
/// cannot trap the plugin from another thread: it is an `io` error).
fn to_wit(error: BlobError) -> WitError {
    match error {
        BlobError::Blob(error) => error,
        BlobError::Trap(trap) => WitError::Io(format!("the chunker failed: {trap:#}")),
    }
}

/// The put worker: pieces from `pipe` into a chunker writer; commits only
/// when asked through `commit`.
fn put_worker(
    runtime: Runtime,
    tenant: String,
    options: PutOptions,
    expected_size: Option<u64>,
    pipe: Arc<Pipe>,
    ended: oneshot::Sender<Result<(), WitError>>,
    commit: oneshot::Receiver<oneshot::Sender<Result<String, WitError>>>,
) {
    let refuse = |error: WitError, ended: oneshot::Sender<Result<(), WitError>>| {
        pipe.refuse();
        let _ = ended.send(Err(error));
    };
    let mut chunker = match runtime.chunker(&tenant) {
        Ok(chunker) => chunker,
        Err(error) => return refuse(to_wit(chunker_unavailable(error)), ended),
    };
    let writer = match chunker.create_writer(&options) {
        Ok(writer) => writer,
        Err(error) => return refuse(to_wit(error), ended),
    };
    let mut received: u64 = 0;
    let outcome = loop {
        match pipe.pop_blocking() {
            Pop::Piece(piece) => {
                // A piece is at most STREAM_PIECE_BYTES: no overflow.
                received += piece.len() as u64;
                if let Some(expected) = expected_size.filter(|&expected| received > expected) {
                    break Err(Some(WitError::InvalidArgument(format!(
                        "the stream ran past its expected size of {expected} bytes"
                    ))));
                }
                if let Err(error) = chunker.writer_write(&writer, &piece) {
                    break Err(Some(to_wit(error)));
                }
            }
            Pop::Ended => match expected_size {
                Some(expected) if received != expected => {
                    break Err(Some(WitError::InvalidArgument(format!(
                        "the stream ended after {received} of its expected {expected} bytes"
                    ))));
                }
                _ => break Ok(()),
            },
            Pop::Cancelled => break Err(None),
        }
    };
    let committed = match outcome {
        Ok(()) => {
            let _ = ended.send(Ok(()));
            // The call is alive as long as `commit`'s sender is.
            match commit.blocking_recv() {
                Ok(reply) => {
                    let _ = reply.send(chunker.writer_finish(&writer).map_err(to_wit));
                    true
                }
                Err(_) => false,
            }
        }
        Err(error) => {
            pipe.refuse();
            if let Some(error) = error {
                let _ = ended.send(Err(error));
            }
            false
        }
    };
    if !committed {
        let _ = chunker.writer_abort(&writer);
    }
    let _ = chunker.release(writer);
}

/// The get worker: verified pieces from a chunker reader into `pipe`.
#[allow(clippy::too_many_arguments)]
fn get_worker(
    runtime: Runtime,
    tenant: String,
    id: String,
    offset: u64,
    len: u64,
    pipe: Arc<Pipe>,
    opened: oneshot::Sender<Result<(), WitError>>,
    result: oneshot::Sender<Result<(), WitError>>,
) {
    let mut chunker = match runtime.chunker(&tenant) {
        Ok(chunker) => chunker,
        Err(error) => {
            let _ = opened.send(Err(to_wit(chunker_unavailable(error))));
            return;
        }
    };
    let reader = match chunker.open_reader(&id, offset) {
        Ok(reader) => reader,
        Err(error) => {
            let _ = opened.send(Err(to_wit(error)));
            return;
        }
    };
    if opened.send(Ok(())).is_err() {
        // The call is gone (cancelled): nobody will read.
        let _ = chunker.release(reader);
        return;
    }
    let mut left = len;
    let outcome = loop {
        if left == 0 {
            break Ok(());
        }
        // At most a piece (<= IO_BYTES_MAX), so the cast is exact.
        let want = left.min(STREAM_PIECE_BYTES as u64) as u32;
        match chunker.reader_read(&reader, want) {
            Ok(bytes) if bytes.is_empty() => break Ok(()),
            Ok(bytes) => {
                // `reader_read` returns at most `want` bytes.
                left -= (bytes.len() as u64).min(left);
                if !pipe.push_blocking(bytes) {
                    break Err(WitError::Closed);
                }
            }
            Err(error) => break Err(to_wit(error)),
        }
    };
    // The stream's end comes before the result, so the result follows the
    // last byte; on an error no byte of the failing piece was queued.
    pipe.end();
    let _ = chunker.release(reader);
    drop(chunker);
    let _ = result.send(outcome);
}

/// [`HasData`] for `stream-blobs`: its host functions reach the
/// [`StreamCtx`] through an [`Accessor`].
pub struct HasStreams;

impl HasData for HasStreams {
    type Data<'a> = &'a mut StreamCtx;
}

impl stream_blobs::Host for StreamCtx {}

/// `stream-blobs` returns the `types.error` of `blobs`, converted as there.
impl crate::runtime::bindings::chunker::tensor::blob::types::Host for StreamCtx {
    fn convert_error(&mut self, error: BlobError) -> wasmtime::Result<WitError> {
        match error {
            BlobError::Blob(error) => Ok(error),
            BlobError::Trap(error) => Err(error),
        }
    }
}

/// Takes what a worker needs from the context.
fn worker_inputs<T>(accessor: &Accessor<T, HasStreams>) -> (Runtime, String, Arc<Workers>) {
    accessor.with(|mut access| {
        let context = access.get();
        (
            context.runtime.clone(),
            context.tenant.clone(),
            Arc::clone(&context.workers),
        )
    })
}

type GetPair = (StreamReader<u8>, FutureReader<Result<(), WitError>>);

impl HasStreams {
    async fn open_get<T>(
        accessor: &Accessor<T, Self>,
        id: String,
        offset: u64,
        len: u64,
    ) -> Result<GetPair, BlobError> {
        check::artifact_id(&id)?;
        let (runtime, tenant, workers) = worker_inputs(accessor);
        let pipe = Pipe::new();
        let (opened_tx, opened_rx) = oneshot::channel();
        let (result_tx, result_rx) = oneshot::channel();
        let worker_pipe = Arc::clone(&pipe);
        workers.start("get", move || {
            get_worker(
                runtime,
                tenant,
                id,
                offset,
                len,
                worker_pipe,
                opened_tx,
                result_tx,
            )
        })?;
        // Made before the wait: if this call is cancelled during it, the
        // producer's drop refuses the pipe, so a worker that opened its
        // reader meanwhile stops instead of waiting for room forever.
        let producer = GetProducer {
            pipe,
            current: None,
        };
        match opened_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(BlobError::Blob(error)),
            Err(_) => {
                return Err(BlobError::Blob(WitError::Io(
                    "the stream worker failed".into(),
                )))
            }
        }
        accessor.with(|mut access| {
            let stream = StreamReader::new(&mut access, producer)?;
            let result = FutureReader::new(&mut access, async move {
                // A worker that ended without a result (it panicked) is an
                // `io` error, not a trap.
                Ok::<_, wasmtime::Error>(
                    result_rx
                        .await
                        .unwrap_or_else(|_| Err(WitError::Io("the stream worker failed".into()))),
                )
            })?;
            Ok((stream, result))
        })
    }
}

impl<T> stream_blobs::HostWithStore<T> for HasStreams {
    async fn put(
        accessor: &Accessor<T, Self>,
        mut data: StreamReader<u8>,
        options: PutOptions,
        expected_size: Option<u64>,
    ) -> Result<String, BlobError> {
        let checked = check::put_options(&options);
        let started = checked.and_then(|()| {
            let (runtime, tenant, workers) = worker_inputs(accessor);
            let pipe = Pipe::new();
            let (ended_tx, ended_rx) = oneshot::channel();
            let (commit_tx, commit_rx) = oneshot::channel();
            let worker_pipe = Arc::clone(&pipe);
            workers.start("put", move || {
                put_worker(
                    runtime,
                    tenant,
                    options,
                    expected_size,
                    worker_pipe,
                    ended_tx,
                    commit_rx,
                )
            })?;
            Ok((pipe, ended_rx, commit_tx))
        });
        let (pipe, ended_rx, commit_tx) = match started {
            Ok(started) => started,
            Err(error) => {
                // Nobody will read the stream: close it so the plugin's
                // writes see it dropped instead of hanging.
                accessor.with(|mut access| data.close(&mut access))?;
                return Err(error);
            }
        };
        let cancel = CancelOnDrop(Arc::clone(&pipe));
        accessor.with(|mut access| data.pipe(&mut access, PutConsumer { pipe }))?;
        let worker_failed = || BlobError::Blob(WitError::Io("the stream worker failed".into()));
        match ended_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(BlobError::Blob(error)),
            Err(_) => return Err(worker_failed()),
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        if commit_tx.send(reply_tx).is_err() {
            return Err(worker_failed());
        }
        let id = reply_rx.await.map_err(|_| worker_failed())?;
        drop(cancel);
        id.map_err(BlobError::Blob)
    }

    async fn get(accessor: &Accessor<T, Self>, id: String) -> Result<GetPair, BlobError> {
        Self::open_get(accessor, id, 0, u64::MAX).await
    }

    async fn get_range(
        accessor: &Accessor<T, Self>,
        id: String,
        offset: u64,
        len: u64,
    ) -> Result<GetPair, BlobError> {
        Self::open_get(accessor, id, offset, len).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wakes (unparks) the thread that made it.
    struct Unpark(std::thread::Thread);

    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Goal: the queue never holds more than its bound, and the reading
    /// side going away releases a worker waiting for room.
    /// Method: a worker pushes one piece past the bound; once the queue is
    /// full (observed under the lock) the reading side refuses: the
    /// waiting push returns `false` and the queue is emptied.
    #[test]
    fn a_full_queue_holds_the_worker_until_the_reader_refuses() {
        let pipe = Pipe::new();
        let worker_pipe = Arc::clone(&pipe);
        let worker = std::thread::spawn(move || {
            (0..=STREAM_QUEUE_PIECES)
                .map(|i| worker_pipe.push_blocking(vec![i as u8; 16]))
                .collect::<Vec<bool>>()
        });
        // Wait as the store side does: register a waker, which each push
        // wakes.
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        loop {
            let mut state = lock(&pipe.state);
            assert!(state.pieces.len() <= STREAM_QUEUE_PIECES);
            if state.pieces.len() == STREAM_QUEUE_PIECES {
                break;
            }
            state.waker = Some(waker.clone());
            drop(state);
            std::thread::park();
        }
        pipe.refuse();
        let pushed = worker.join().unwrap();
        assert_eq!(pushed.iter().filter(|&&ok| ok).count(), STREAM_QUEUE_PIECES);
        assert!(
            !pushed[STREAM_QUEUE_PIECES],
            "the piece past the bound was refused"
        );
        assert!(lock(&pipe.state).pieces.is_empty());
    }

    /// Goal: a put's worker sees the data's end only after every piece,
    /// and a cancel wins over queued pieces (they are never committed).
    #[test]
    fn pieces_come_before_the_end_and_cancel_discards_them() {
        let pipe = Pipe::new();
        lock(&pipe.state).pieces.push_back(vec![1]);
        pipe.end();
        assert!(matches!(pipe.pop_blocking(), Pop::Piece(piece) if piece == vec![1]));
        assert!(matches!(pipe.pop_blocking(), Pop::Ended));

        let pipe = Pipe::new();
        lock(&pipe.state).pieces.push_back(vec![2]);
        pipe.cancel();
        assert!(matches!(pipe.pop_blocking(), Pop::Cancelled));
    }
}
