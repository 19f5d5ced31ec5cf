//! [`SocketSystem`]: sockets spread over one arbiter (thread) per core.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, ThreadId};

use actix::{Addr, Arbiter, ArbiterHandle, System};
use tokio::sync::{oneshot, Mutex};

use crate::actors::socket::{Socket, SocketBuilder};
use crate::error::{SocketError, TransportError};
use crate::messages::functions::Address;

/// An error from a [`SocketSystem`].
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketSystemError {
    /// The socket was placed on an arbiter but could not be started there.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// [`SocketSystem::start`] was called outside a running actix system.
    #[error("no actix system is running on this thread")]
    NoSystem,
    /// An arbiter thread could not be started.
    #[error("could not start arbiter {index}: {source}")]
    Start {
        /// Which arbiter.
        index: usize,
        /// Why.
        #[source]
        source: Arc<io::Error>,
    },
    /// The arbiter is gone (stopped, or its system stopped) and took nothing more; when
    /// placing a socket, every arbiter is gone.
    #[error("arbiter {index} is gone")]
    ArbiterGone {
        /// Which arbiter.
        index: usize,
    },
    /// There is no arbiter with this index.
    #[error("no arbiter {index}: the system has {arbiters}")]
    NoSuchArbiter {
        /// The index asked for.
        index: usize,
        /// How many arbiters there are.
        arbiters: usize,
    },
    /// The system has been shut down.
    #[error("the socket system has shut down")]
    ShutDown,
    /// [`SocketSystem::shutdown`] was called on one of the system's own arbiters, which
    /// cannot wait for its own thread to end.
    #[error("shutdown called on one of the socket system's own arbiters")]
    OnOwnArbiter,
    /// An arbiter thread panicked, or could not be joined.
    #[error("arbiter {index} did not end cleanly")]
    NotJoined {
        /// Which arbiter.
        index: usize,
    },
}

/// Configures and starts a [`SocketSystem`].
#[derive(Clone, Debug, Default)]
pub struct SocketSystemBuilder {
    arbiters: Option<usize>,
}

impl SocketSystemBuilder {
    /// How many arbiters (threads) to start; at least one (0 counts as 1). Default:
    /// [`std::thread::available_parallelism`], or 1 when that is unknown.
    pub fn arbiters(mut self, count: usize) -> Self {
        self.arbiters = Some(count.max(1));
        self
    }

    /// Starts the arbiters. Must be called inside a running actix system; blocks until
    /// each arbiter thread is up. If one cannot start, those already started are stopped.
    pub fn start(self) -> Result<SocketSystem, SocketSystemError> {
        if System::try_current().is_none() {
            return Err(SocketSystemError::NoSystem);
        }
        let count = self.arbiters.unwrap_or_else(default_arbiters);
        let mut arbiters = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            match start_arbiter(index) {
                Ok((arbiter, thread)) => {
                    arbiters.push(arbiter);
                    threads.push(thread);
                }
                Err(e) => {
                    for arbiter in &arbiters {
                        arbiter.stop();
                    }
                    return Err(e);
                }
            }
        }
        tracing::debug!(arbiters = count, "socket system started");
        Ok(SocketSystem {
            inner: Arc::new(Inner {
                handles: arbiters.iter().map(Arbiter::handle).collect(),
                threads,
                next: AtomicUsize::new(0),
                shut: AtomicBool::new(false),
                arbiters: Mutex::new(arbiters),
            }),
        })
    }
}

fn default_arbiters() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Starts one arbiter and learns its thread's id.
fn start_arbiter(index: usize) -> Result<(Arbiter, ThreadId), SocketSystemError> {
    let arbiter = Arbiter::try_new().map_err(|e| SocketSystemError::Start {
        index,
        source: Arc::new(e),
    })?;
    let (tx, rx) = std::sync::mpsc::channel();
    let asked = arbiter.spawn_fn(move || {
        let _ = tx.send(thread::current().id());
    });
    // A fresh arbiter answers at once; if it died instead, its sender is dropped.
    match rx.recv() {
        Ok(thread) if asked => Ok((arbiter, thread)),
        _ => {
            arbiter.stop();
            Err(SocketSystemError::ArbiterGone { index })
        }
    }
}

/// Sockets spread over a fixed set of arbiters, one thread each.
///
/// # Threading model
///
/// ```text
///  caller (any thread of the running actix System)
///    │  SocketSystem::connect / adopt / run_on: a closure sent to one arbiter
///    ▼
///  arbiter 0 (OS thread, current-thread tokio runtime)   arbiter 1   …   arbiter N-1
///    Flusher::current()            ─┐ thread-locals,
///    SocketFunctions::system()      │ started by the first
///      (its SystemFunctions actor) ─┘ socket built there
///    Socket actors started there, their streams registered with this thread's reactor
/// ```
///
/// - [`SocketSystem::start`] (or [`SocketSystem::builder`]) must be called inside a
///   running actix [`System`]. It starts N [`Arbiter`]s, by default one per core
///   ([`std::thread::available_parallelism`]). Each arbiter is an OS thread with its own
///   current-thread tokio runtime.
/// - Each arbiter *owns* what is started on it: its [`Flusher`](crate::Flusher)
///   ([`Flusher::current`](crate::Flusher::current)) and its system transport
///   ([`SocketFunctions::system`](crate::SocketFunctions::system)) are thread-locals,
///   started on first use on that thread; and every [`Socket`] started there, with its
///   stream registered with that thread's reactor. A socket, its Flusher and its
///   transport share one thread, as they do on a single-threaded system.
/// - The `make_builder` closures of [`SocketSystem::connect`] and
///   [`SocketSystem::adopt`] run *on the chosen arbiter*, so the defaults they leave in
///   place (Flusher, transport) are that arbiter's. A builder given a Flusher or
///   transport from another thread uses those instead, across threads.
/// - Placement is round-robin over the arbiters that are still alive (a cheap atomic
///   counter); [`SocketSystem::run_on`] picks one explicitly.
/// - What comes back is `Send`: [`Addr<Socket>`], [`Writer`](crate::Writer)s from
///   [`GetWriter`](crate::messages::GetWriter), and subscribers may live on any thread.
///   Messages cross threads through the actors' mailboxes.
/// - [`SocketSystem`] is a cheap `Clone` handle (`Send + Sync`); clones share the
///   arbiters.
///
/// # Shutting down
///
/// [`SocketSystem::shutdown`] stops every arbiter and waits until each thread has ended.
/// An arbiter stops at once: the actors on it are dropped without draining, and each
/// socket answers its unfinished writes as it goes: [`WriteError::Closed`](crate::WriteError::Closed) with the bytes
/// that went out, or [`WriteError::Lost`](crate::WriteError::Lost) for a write whose transmit was still out to
/// its transport (whether the transport took it is unknown). A write whose socket could
/// not answer at all is `Lost` to a [`WriteFuture`](crate::WriteFuture) and a mailbox
/// error to a pending `send`. Each dropped socket (stream or datagram) still closes its
/// connection, even through a transport of another thread that lives on. To
/// drain first, close the sockets ([`Close::Graceful`](crate::messages::Close)) and wait
/// for [`SocketEventKind::Closed`](crate::messages::SocketEventKind::Closed). After
/// shutdown every call answers [`SocketSystemError::ShutDown`]. Dropping the last
/// handle without shutting down stops the arbiters without waiting for them.
///
/// ```no_run
/// use sockactor::{Socket, SocketSystem};
///
/// #[actix::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let system = SocketSystem::builder().arbiters(4).start()?;
///     let addr: std::net::SocketAddr = "127.0.0.1:7000".parse()?;
///     // The closure runs on the chosen arbiter, so the socket uses its Flusher.
///     let socket = system.connect(Socket::builder, addr).await?;
///     drop(socket);
///     system.shutdown().await?;
///     Ok(())
/// }
/// ```
#[derive(Clone, Debug)]
pub struct SocketSystem {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    handles: Vec<ArbiterHandle>,
    threads: Vec<ThreadId>,
    /// Round-robin position.
    next: AtomicUsize,
    shut: AtomicBool,
    /// The arbiters themselves (their join handles), until shutdown takes them. An async
    /// mutex: a second `shutdown` waits for the first to finish joining.
    arbiters: Mutex<Vec<Arbiter>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Last handle gone without a shutdown: stop the threads, do not wait for them.
        for arbiter in self.arbiters.get_mut().drain(..) {
            arbiter.stop();
        }
    }
}

impl SocketSystem {
    /// A builder (default: one arbiter per core).
    pub fn builder() -> SocketSystemBuilder {
        SocketSystemBuilder::default()
    }

    /// Starts one arbiter per core; see [`SocketSystemBuilder::start`].
    pub fn start() -> Result<SocketSystem, SocketSystemError> {
        Self::builder().start()
    }

    /// How many arbiters the system was started with (stopped ones included).
    pub fn arbiters(&self) -> usize {
        self.inner.handles.len()
    }

    /// The id of each arbiter's thread, by index.
    pub fn thread_ids(&self) -> &[ThreadId] {
        &self.inner.threads
    }

    /// Builds a socket with `make_builder` and connects it to `addr`, both on the next
    /// arbiter (round-robin over the live ones), and returns its address.
    pub async fn connect<F>(
        &self,
        make_builder: F,
        addr: impl Into<Address>,
    ) -> Result<Addr<Socket>, SocketSystemError>
    where
        F: FnOnce() -> SocketBuilder + Send + 'static,
    {
        let addr = addr.into();
        let index = self.pick()?;
        let started = self
            .run_on(
                index,
                move || async move { make_builder().connect(addr).await },
            )
            .await?;
        Ok(started?)
    }

    /// Starts a socket on an accepted stream, on the next arbiter (round-robin over the
    /// live ones): the stream is made non-blocking here and registered with the chosen
    /// arbiter's reactor there, and `make_builder` runs there. Convert a tokio stream
    /// with [`tokio::net::TcpStream::into_std`]. If the arbiter is gone, the stream is
    /// closed.
    pub async fn adopt<F>(
        &self,
        stream: std::net::TcpStream,
        make_builder: F,
    ) -> Result<Addr<Socket>, SocketSystemError>
    where
        F: FnOnce() -> SocketBuilder + Send + 'static,
    {
        stream.set_nonblocking(true).map_err(open_error)?;
        let index = self.pick()?;
        let started = self
            .run_on(index, move || async move {
                let stream = tokio::net::TcpStream::from_std(stream).map_err(open_error)?;
                make_builder().adopt(stream).await
            })
            .await?;
        Ok(started?)
    }

    /// Runs `make_future` on arbiter `index`, then the future it returns (which need not
    /// be `Send`) on that arbiter's thread, and returns its output.
    ///
    /// Errors: [`NoSuchArbiter`](SocketSystemError::NoSuchArbiter) for an index out of
    /// range, [`ShutDown`](SocketSystemError::ShutDown) after [`shutdown`](Self::shutdown),
    /// [`ArbiterGone`](SocketSystemError::ArbiterGone) if the arbiter is gone, or stops
    /// before the future finishes. The work goes on if this future is dropped; its
    /// output is then dropped on the arbiter.
    pub async fn run_on<F, Fut, R>(
        &self,
        index: usize,
        make_future: F,
    ) -> Result<R, SocketSystemError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        if self.inner.shut.load(Ordering::Acquire) {
            return Err(SocketSystemError::ShutDown);
        }
        let handle = self
            .inner
            .handles
            .get(index)
            .ok_or(SocketSystemError::NoSuchArbiter {
                index,
                arbiters: self.arbiters(),
            })?;
        let (tx, rx) = oneshot::channel();
        let sent = handle.spawn_fn(move || {
            let future = make_future();
            actix::spawn(async move {
                let _ = tx.send(future.await);
            });
        });
        if !sent {
            return Err(SocketSystemError::ArbiterGone { index });
        }
        // The arbiter stopping before the future finished drops the sender.
        rx.await
            .map_err(|_| SocketSystemError::ArbiterGone { index })
    }

    /// Stops every arbiter and waits until each thread has ended. Sockets still on them
    /// are dropped (see [shutting down](SocketSystem#shutting-down)). Afterwards every call
    /// answers [`SocketSystemError::ShutDown`]; a second `shutdown` waits for the first
    /// and then succeeds. Cannot be called from one of the system's own arbiters.
    pub async fn shutdown(&self) -> Result<(), SocketSystemError> {
        if self.inner.threads.contains(&thread::current().id()) {
            return Err(SocketSystemError::OnOwnArbiter);
        }
        self.inner.shut.store(true, Ordering::Release);
        let mut slot = self.inner.arbiters.lock().await;
        let arbiters = std::mem::take(&mut *slot);
        for arbiter in &arbiters {
            arbiter.stop();
        }
        let mut result = Ok(());
        for index in join_all(arbiters).await {
            tracing::warn!(index, "arbiter did not end cleanly");
            result = result.and(Err(SocketSystemError::NotJoined { index }));
        }
        tracing::debug!("socket system shut down");
        result
    }

    /// The next live arbiter, round-robin.
    fn pick(&self) -> Result<usize, SocketSystemError> {
        if self.inner.shut.load(Ordering::Acquire) {
            return Err(SocketSystemError::ShutDown);
        }
        let count = self.inner.handles.len();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed) % count;
        (0..count)
            .map(|k| (start + k) % count)
            .find(|&i| self.inner.handles[i].alive())
            .inspect(|&index| tracing::trace!(index, "placed on arbiter"))
            .ok_or(SocketSystemError::ArbiterGone { index: start })
    }
}

/// Joins the arbiter threads (they have been told to stop) without blocking the
/// caller's runtime, and returns the indices of those that did not end cleanly.
async fn join_all(arbiters: Vec<Arbiter>) -> Vec<usize> {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // No tokio runtime to keep responsive: join right here.
        return arbiters
            .into_iter()
            .enumerate()
            .filter_map(|(index, arbiter)| arbiter.join().is_err().then_some(index))
            .collect();
    };
    let joins: Vec<_> = arbiters
        .into_iter()
        .map(|arbiter| runtime.spawn_blocking(move || arbiter.join()))
        .collect();
    let mut failed = Vec::new();
    for (index, join) in joins.into_iter().enumerate() {
        if !matches!(join.await, Ok(Ok(()))) {
            failed.push(index);
        }
    }
    failed
}

fn open_error(e: io::Error) -> SocketError {
    SocketError::Open(TransportError::from(e))
}
