//! One client connection: its negotiated dialect and msize, its fids, its requests in flight.
//!
//! Transport-agnostic: a transport hands whole frames to [`Session::dispatch`], writes out
//! whatever arrives on the reply channel and returns a [`Credits`] credit for each reply it has
//! delivered. Each request runs as its own task, so a read blocked on a stream (`head.live`)
//! holds up nothing else, and Tflush can cancel it. A reply is sent, and its tag released,
//! under the in-flight lock, so Rflush never overtakes the reply it flushes.
//!
//! Memory per connection is bounded by [`MAX_IN_FLIGHT`] requests: a request holds its credit
//! until its reply has left through the transport, not merely until the reply is queued, so a
//! client that sends without reading its replies stops being read instead of filling memory.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::codec::{Dialect, Fcall, Frame, HEADER};
use crate::fs::Fs;
use crate::handlers::handle;
use crate::state::{lock, State};
use crate::wire::DecodeError;

pub use crate::state::MAX_FIDS;

/// Largest msize we agree to: Linux's TCP and fd transports allow up to 1 MiB.
pub const MAX_MSIZE: u32 = 1 << 20;
/// Requests one connection may have in flight, counting replies not yet delivered; beyond
/// that the transport stops reading.
pub const MAX_IN_FLIGHT: usize = 256;

/// The transport's half of the in-flight bound: one credit comes back per reply delivered.
#[derive(Debug, Clone)]
pub struct Credits(Arc<Semaphore>);

impl Credits {
    /// A reply frame from the reply channel has been written to the client.
    pub fn delivered(&self) {
        self.0.add_permits(1);
    }
}

/// Ids of connections.
static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[derive(Debug)]
struct InFlight {
    generation: u64,
    task: JoinHandle<()>,
}

/// A connection's state and its requests in flight.
#[derive(Debug, Clone)]
pub struct Session {
    fs: Arc<Fs>,
    state: Arc<Mutex<State>>,
    inflight: Arc<Mutex<(u64, HashMap<u16, InFlight>)>>,
    replies: mpsc::UnboundedSender<Vec<u8>>,
    permits: Arc<Semaphore>,
}

impl Session {
    /// A session whose replies, whole frames, go to `replies`.
    pub fn new(fs: Arc<Fs>, replies: mpsc::UnboundedSender<Vec<u8>>) -> Session {
        Session {
            fs,
            state: Arc::new(Mutex::new(State {
                dialect: Dialect::L,
                msize: MAX_MSIZE,
                fids: HashMap::new(),
                versioned: false,
                conn: CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            })),
            inflight: Arc::new(Mutex::new((0, HashMap::new()))),
            replies,
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// The largest frame the client may send now.
    pub fn msize(&self) -> u32 {
        lock(&self.state).msize
    }

    /// What the transport returns a credit to for each reply it delivers. It holds no reply
    /// sender, so the reply channel still closes when the session and its tasks are gone.
    pub fn credits(&self) -> Credits {
        Credits(self.permits.clone())
    }

    /// Waits for room for one more request in flight.
    pub async fn ready(&self) {
        // The semaphore is never closed, so acquiring only waits.
        if let Ok(permit) = self.permits.clone().acquire_owned().await {
            permit.forget();
        }
    }

    /// Handles one frame. A frame that does not decode is an error for the transport, which
    /// closes this connection; nothing else is affected.
    pub fn dispatch(&self, bytes: &[u8]) -> Result<(), DecodeError> {
        let dialect = lock(&self.state).dialect;
        let frame = match Frame::decode(bytes, dialect) {
            Ok(frame) => frame,
            Err(e) => {
                self.permits.add_permits(1);
                return Err(e);
            }
        };
        tracing::trace!(tag = frame.tag, message = frame.fcall.name(), "request");
        match frame.fcall {
            Fcall::Tversion { msize, version } => {
                self.version(frame.tag, msize, &version);
            }
            Fcall::Tflush { oldtag } => self.flush(frame.tag, oldtag),
            fcall => self.spawn(frame.tag, fcall),
        }
        Ok(())
    }

    /// The connection is gone: everything in flight is cancelled, and its transactions go.
    pub fn close(&self) {
        self.shutdown();
        let conn = lock(&self.state).conn;
        self.fs.drop_connection(conn);
    }

    /// Cancels everything in flight (the connection is gone, or Tversion starts over).
    pub fn shutdown(&self) {
        let mut inflight = lock(&self.inflight);
        for (_, entry) in inflight.1.drain() {
            entry.task.abort();
            let permits = self.permits.clone();
            tokio::spawn(async move {
                // A task that finished despite the abort released its own permit.
                if entry.task.await.is_err() {
                    permits.add_permits(1);
                }
            });
        }
    }

    /// Queues a reply; its request's credit comes back once the transport has delivered it.
    fn send(&self, tag: u16, fcall: Fcall, dialect: Dialect) {
        let _ = self.replies.send(Frame { tag, fcall }.encode(dialect));
    }

    /// Tversion: negotiate, and start afresh (every fid and request of the old session is gone).
    fn version(&self, tag: u16, msize: u32, version: &[u8]) {
        self.shutdown();
        let mut state = lock(&self.state);
        state.fids.clear();
        let msize = msize.min(MAX_MSIZE);
        // Prefixes such as "9P2000.L.extra" negotiate down to what we speak, as the spec says.
        let dialect = [Dialect::L, Dialect::U, Dialect::Plain]
            .into_iter()
            .find(|d| version.starts_with(d.version()));
        let reply = match dialect {
            Some(d) if msize as usize > HEADER + 4 => {
                state.dialect = d;
                state.msize = msize;
                state.versioned = true;
                Fcall::Rversion { msize, version: d.version().to_vec() }
            }
            _ => Fcall::Rversion { msize, version: b"unknown".to_vec() },
        };
        let dialect = state.dialect;
        drop(state);
        self.send(tag, reply, dialect);
    }

    /// Runs a request. Most requests finish without waiting (reads run inline), so the request
    /// is first polled right here and answered at once; only one that has to wait (a stream
    /// read, a commit on a blocking thread) becomes a task of its own, which Tflush can cancel.
    /// This saves a task hand-off per request, which dominated the latency of small reads.
    fn spawn(&self, tag: u16, fcall: Fcall) {
        let session = self.clone();
        let generation = {
            let mut inflight = lock(&self.inflight);
            inflight.0 += 1;
            inflight.0
        };
        let mut request = Box::pin(async move {
            let reply = handle(&session.fs, &session.state, fcall).await;
            let dialect = lock(&session.state).dialect;
            let reply = match reply {
                Ok(fcall) => fcall,
                Err(errno) if dialect == Dialect::L => Fcall::Rlerror { ecode: errno.wire() },
                Err(errno) => Fcall::Rerror {
                    ename: errno.describe().as_bytes().to_vec(),
                    errno: errno.wire(),
                },
            };
            let mut inflight = lock(&session.inflight);
            if inflight.1.get(&tag).is_some_and(|e| e.generation == generation) {
                inflight.1.remove(&tag);
            }
            session.send(tag, reply, dialect);
            drop(inflight);
        });
        // A future may be polled with one waker and then another: the task's poll registers
        // the waker that counts.
        let mut cx = Context::from_waker(Waker::noop());
        if request.as_mut().poll(&mut cx).is_ready() {
            return;
        }
        let mut inflight = lock(&self.inflight);
        let task = tokio::spawn(request);
        if let Some(old) = inflight.1.insert(tag, InFlight { generation, task }) {
            // A client reusing a tag still in flight broke the protocol; the old request's reply
            // is no longer distinguishable, so it is cancelled.
            old.task.abort();
        }
    }

    /// Tflush: cancel `oldtag` if it is still running, then answer, never before its reply.
    fn flush(&self, tag: u16, oldtag: u16) {
        let session = self.clone();
        let mut inflight = lock(&self.inflight);
        let dialect = lock(&self.state).dialect;
        match inflight.1.remove(&oldtag) {
            None => {
                // Already answered (answers go out under this lock), or never seen.
                self.send(tag, Fcall::Rflush {}, dialect);
                drop(inflight);
            }
            Some(entry) => {
                drop(inflight);
                entry.task.abort();
                tokio::spawn(async move {
                    let cancelled = entry.task.await.is_err();
                    if cancelled {
                        // The aborted task never released its permit.
                        session.permits.add_permits(1);
                    }
                    session.send(tag, Fcall::Rflush {}, dialect);
                });
            }
        }
    }
}
