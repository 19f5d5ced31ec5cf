//! [`SystemFunctions`]: real non-blocking sockets on the actix-rt (tokio) reactor.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io::{self, IoSlice};
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Poll, Waker};

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, ResponseActFuture,
    SpawnHandle, WeakRecipient, WrapFuture,
};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
#[cfg(unix)]
use tokio::net::{UnixListener, UnixSocket, UnixStream};

use super::system_datagram::SystemDatagram;
use crate::actors::polled_set::{self, PolledSet, SetPoller};
use crate::error::TransportError;
use crate::messages::functions::{
    Accept, Accepted, Address, Bind, CloseSocket, Connect, Family, Handle, Listen, OpenSocket,
    Readiness, Ready, Received, RecvFrom, SendV, Sent, ShutdownWrite, SocketKind,
};
use crate::types::SocketBuffers;

/// The built-in transport: non-blocking TCP, Unix domain stream sockets and UDP through
/// tokio.
///
/// Opening, connecting, binding, listening, accepting and closing always go through this
/// actor. When a stream socket's `sendv` and `recvfrom` are still the system ones, the
/// socket borrows the stream and calls `writev`/`read` in place (same semantics, no
/// message per call); once either is replaced, that operation goes through messages to
/// whatever replaced it. Datagram sockets do the same with their socket, batching sends
/// and receives (`sendmmsg`/`recvmmsg`) where the OS has them.
///
/// Would-block answers arm a readiness wait on the reactor; when the handle becomes
/// ready the socket's `events` recipient gets one [`Ready`]. New TCP connections (made
/// or accepted) have `TCP_NODELAY` set: sockets coalesce their writes themselves.
///
/// Listeners: [`Bind`] sets `SO_REUSEADDR` on TCP handles, and `SO_REUSEPORT` when asked
/// (Unix-like systems only). A Unix domain path this transport bound is removed when its
/// handle closes, if the path still names the file the bind made. [`CloseSocket`] of a
/// TCP stream whose sending half was shut down (a graceful close) and whose last bytes
/// the peer has not acknowledged keeps the descriptor open, reading and dropping what
/// arrives, until the peer has them (at most 10 s): a late byte would otherwise make the
/// kernel reset the connection and lose them. Datagrams: one [`SendV`] is one datagram
/// (several segments are copied into one buffer first); [`RecvFrom`] answers a datagram
/// longer than `max_len` with [`Received::Truncated`] (and takes at most 16 MiB). Unix domain datagram sockets work like UDP ones, with paths
/// for addresses (an unbound sender is an unnamed peer: an empty path).
#[derive(Debug, Default)]
pub struct SystemFunctions {
    next: u64,
    handles: HashMap<Handle, Entry>,
    /// The readiness waits armed for handles reached by message, polled only when woken.
    waiting: Waiting,
    /// Datagrams are received here and copied out at their exact length, so a small
    /// datagram does not pin a `max_len` allocation.
    scratch: Vec<u8>,
}

#[derive(Debug)]
struct Entry {
    state: State,
    /// Readiness owed to the socket, and the waits for it; boxed, and gone once the
    /// socket does its own readiness waits (a connected stream or datagram socket called
    /// in place: most entries).
    waits: Option<Box<Waits>>,
}

/// A handle's readiness waits on the transport's side.
#[derive(Debug, Default)]
struct Waits {
    /// Who gets `Ready`. Weak: the transport keeps no socket alive.
    events: Option<WeakRecipient<Ready>>,
    write: Option<AbortHandle>,
    /// The read wait, or on a listening handle the accept wait.
    read: Option<AbortHandle>,
}

/// What an armed wait ends with (`None` from the wait: it was cancelled).
enum Woken {
    Ready(Handle, Readiness),
    /// A listener's accept wait took a connection (or an error).
    Accepted(Handle, io::Result<(SystemStream, Address)>),
}

type Wait = std::pin::Pin<Box<dyn Future<Output = Option<Woken>>>>;

/// Every readiness wait of the transport, in one set that polls only the waits woken
/// since it was last polled (one future in the actor's context for all of them, see
/// [`polled_set`](crate::actors::polled_set)).
#[derive(Default)]
struct Waiting {
    waits: FuturesUnordered<Wait>,
    poller: SetPoller,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("waits", &self.waits.len())
            .finish()
    }
}

impl Entry {
    fn new(state: State, events: WeakRecipient<Ready>) -> Self {
        let waits = Waits {
            events: Some(events),
            ..Waits::default()
        };
        Entry {
            state,
            waits: Some(Box::new(waits)),
        }
    }

    fn notify(&self, handle: Handle, readiness: Readiness) {
        let events = self.waits.as_ref().and_then(|w| w.events.as_ref());
        if let Some(events) = events.and_then(WeakRecipient::upgrade) {
            events.do_send(Ready { handle, readiness });
        }
    }

    /// The socket waits for readiness itself from now on: nothing is owed to it.
    fn lend(&mut self) {
        if let Some(waits) = &mut self.waits {
            waits.events = None;
            if waits.write.is_none() && waits.read.is_none() {
                self.waits = None;
            }
        }
    }

    /// The wait armed for `readiness`.
    fn wait(&self, readiness: Readiness) -> Option<&AbortHandle> {
        let waits = self.waits.as_deref()?;
        match readiness {
            Readiness::Writable => waits.write.as_ref(),
            Readiness::Readable => waits.read.as_ref(),
        }
    }

    /// Sets (or clears) the wait for `readiness`.
    fn set_wait(&mut self, readiness: Readiness, wait: Option<AbortHandle>) {
        let waits = self.waits.get_or_insert_with(Box::default);
        match readiness {
            Readiness::Writable => waits.write = wait,
            Readiness::Readable => waits.read = wait,
        }
    }
}

/// What a handle is. Variants with more than a word behind them are boxed: entries of
/// connected streams (most of them) stay small.
#[derive(Debug)]
enum State {
    /// A TCP socket, opened (and perhaps bound), not yet connected or listening.
    Tcp(TcpSocket),
    /// A Unix domain stream socket, opened (and perhaps bound).
    #[cfg(unix)]
    Unix(Box<UnixEntry>),
    /// A datagram socket (UDP, or Unix domain), neither bound nor connected yet.
    Udp(socket2::Socket),
    /// A connect is under way: the spawned attempt owns the operating system's socket,
    /// and closing the handle cancels it (the descriptor closes at once).
    Connecting(SpawnHandle),
    /// A failed operation consumed the operating system's object (a failed `listen`).
    Spent,
    /// A connected stream: lent to the socket actor by `ShareStream`.
    Stream(Arc<SystemStream>),
    /// A listener.
    Listening(Box<Listening>),
    /// A bound (and perhaps connected) datagram socket.
    Datagram(Arc<SystemDatagram>),
}

#[cfg(unix)]
#[derive(Debug)]
struct UnixEntry {
    socket: UnixSocket,
    /// The path this transport bound, removed when the handle closes.
    bound: Option<BoundPath>,
}

/// A Unix domain path this transport bound, with the file the bind made: removed when
/// its handle closes only if the path still names that file (unlinked and bound again by
/// another socket meanwhile, it is the newcomer's).
#[cfg(unix)]
#[derive(Debug)]
pub(crate) struct BoundPath {
    path: PathBuf,
    /// The device and inode of the socket file the bind made.
    file: Option<(u64, u64)>,
}

#[cfg(unix)]
impl BoundPath {
    /// The path just bound.
    pub(crate) fn new(path: PathBuf) -> Self {
        let file = file_id(&path);
        BoundPath { path, file }
    }

    /// Removes the file the bind made, if the path still names it.
    fn remove(&self) {
        let path = &self.path;
        if self.file.is_none() || file_id(path) != self.file {
            tracing::debug!(path = %path.display(), "socket path not removed: no longer ours");
            return;
        }
        if let Err(error) = std::fs::remove_file(path) {
            tracing::debug!(path = %path.display(), %error, "could not remove socket path");
        }
    }
}

/// The device and inode of the file at `path` (not following a symbolic link).
#[cfg(unix)]
fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

#[derive(Debug)]
struct Listening {
    listener: Arc<SystemListener>,
    /// A connection (or error) the accept wait took, for the next `Accept`.
    ready: Option<io::Result<(SystemStream, Address)>>,
    /// The Unix domain path this transport bound, removed when the handle closes.
    #[cfg(unix)]
    bound: Option<BoundPath>,
}

/// A connected stream of the system transport, shared (as `Arc<SystemStream>`) by the
/// transport's entry and, for the in-place path, the socket actor.
///
/// The Unix stream is boxed so the enum keeps the size of a `TcpStream` (its tag lives in
/// the descriptor's niche): every idle TCP connection holds one of these, and an unboxed
/// variant cost 15 bytes per idle connection (`docs/performance.md`, workload e).
#[derive(Debug)]
pub(crate) enum SystemStream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix domain stream.
    #[cfg(unix)]
    Unix(Box<UnixStream>),
}

/// Whether the system transport sends file ranges with `sendfile(2)` (Linux and
/// Android); elsewhere it reads them in chunks and writes those.
pub(crate) const SENDFILE: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// A `sendfile` error that says this file (or file system) cannot be sent from, rather
/// than that the socket failed: the range is then read and written instead.
pub(crate) fn sendfile_unsupported(error: &io::Error) -> bool {
    // EINVAL (the file cannot be mapped for sending) and ENOSYS.
    matches!(
        error.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
    )
}

impl SystemStream {
    /// `writev` without waiting.
    pub(crate) fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            SystemStream::Tcp(s) => s.try_write_vectored(bufs),
            #[cfg(unix)]
            SystemStream::Unix(s) => s.try_write_vectored(bufs),
        }
    }

    /// `sendfile(2)` of up to `len` bytes of `file` from `offset`, without waiting: the
    /// kernel copies from the page cache to the socket. `Ok(0)` means the file ended.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) fn try_sendfile(
        &self,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        use std::os::fd::{AsRawFd, RawFd};
        let mut off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset out of range"))?;
        let in_fd = file.as_raw_fd();
        let send = |out_fd: RawFd| {
            move || {
                // SAFETY: both descriptors are open for the whole call (the stream and the
                // file are borrowed), `off` is a valid, exclusive `off_t`, and the kernel
                // copies between the descriptors without touching our memory.
                let n = unsafe { libc::sendfile(out_fd, in_fd, &mut off, len) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }
        };
        match self {
            SystemStream::Tcp(s) => s.try_io(Interest::WRITABLE, send(s.as_raw_fd())),
            SystemStream::Unix(s) => s.try_io(Interest::WRITABLE, send(s.as_raw_fd())),
        }
    }

    /// Without `sendfile` (see [`SENDFILE`]) file ranges are read and written instead;
    /// this is never called.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(crate) fn try_sendfile(
        &self,
        _file: &std::fs::File,
        _offset: u64,
        _len: usize,
    ) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// `writev` without waiting, telling a TCP stack that more follows at once
    /// (`MSG_MORE`, Linux), so these bytes may wait to share a packet with the next
    /// send. Elsewhere, and on Unix streams, a plain `writev`.
    pub(crate) fn try_write_vectored_more(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            SystemStream::Tcp(s) => s.try_io(Interest::WRITABLE, || {
                socket2::SockRef::from(s).send_vectored_with_flags(bufs, libc::MSG_MORE)
            }),
            _ => self.try_write_vectored(bufs),
        }
    }

    /// `read` into `buf`'s spare capacity without waiting. A read that came short of
    /// the spare capacity emptied the socket: its readiness is cleared (as tokio's own
    /// `poll_read` does), so the next read answers would-block without a call and the
    /// socket waits for new bytes. Readiness from the peer's close is kept, so its EOF
    /// is still read.
    pub(crate) fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        let n = {
            let remaining = buf.remaining_mut();
            let chunk = buf.chunk_mut();
            let spare = remaining.min(chunk.len());
            // SAFETY: `recv` only writes into the slice; only the `n` bytes it reports
            // are marked initialized (`advance_mut` below).
            let dst = unsafe { &mut chunk.as_uninit_slice_mut()[..spare] };
            // The read and the clearing of readiness after a short one are one `try_io`:
            // tokio clears only the readiness it saw before the read, so an event that
            // came during it (the reactor may run on another thread) still wakes us.
            let mut read = None;
            let mut recv = |sock: socket2::SockRef<'_>| {
                let n = sock.recv(dst)?;
                read = Some(n);
                if n > 0 && n < spare {
                    Err(io::Error::from(io::ErrorKind::WouldBlock))
                } else {
                    Ok(n)
                }
            };
            let result = match self {
                SystemStream::Tcp(s) => {
                    s.try_io(Interest::READABLE, || recv(socket2::SockRef::from(s)))
                }
                #[cfg(unix)]
                SystemStream::Unix(s) => {
                    s.try_io(Interest::READABLE, || recv(socket2::SockRef::from(&**s)))
                }
            };
            match (result, read) {
                (Ok(n), _) => n,
                (Err(e), Some(n)) if e.kind() == io::ErrorKind::WouldBlock => n,
                (Err(e), _) => return Err(e),
            }
        };
        // SAFETY: the kernel initialized the first `n` bytes of the spare capacity.
        unsafe { buf.advance_mut(n) };
        Ok(n)
    }

    /// Readiness for reading; the waker is kept in the stream's own slot (one waiter).
    pub(crate) fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        match self {
            SystemStream::Tcp(s) => s.poll_read_ready(cx),
            #[cfg(unix)]
            SystemStream::Unix(s) => s.poll_read_ready(cx),
        }
    }

    /// Readiness for writing; the waker is kept in the stream's own slot (one waiter).
    pub(crate) fn poll_write_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        match self {
            SystemStream::Tcp(s) => s.poll_write_ready(cx),
            #[cfg(unix)]
            SystemStream::Unix(s) => s.poll_write_ready(cx),
        }
    }

    /// Shuts down the sending half (`shutdown(SHUT_WR)`): the peer reads EOF after the
    /// bytes already sent, and the stream can still be read.
    /// Reads and drops, without waiting, what the peer sent that nobody read (at most
    /// `limit` bytes): a kernel answers the close of a socket with unread bytes with a
    /// reset, which throws away what it had not sent yet, the end of a graceful close
    /// included.
    pub(crate) fn discard_unread(&self, limit: usize) {
        let sock = match self {
            SystemStream::Tcp(s) => socket2::SockRef::from(s),
            #[cfg(unix)]
            SystemStream::Unix(s) => socket2::SockRef::from(&**s),
        };
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
        let mut left = limit;
        while left > 0 {
            // The descriptor is non-blocking: nothing more there is `WouldBlock`.
            match sock.recv(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }

    /// Bytes the kernel holds for the peer, sent or not, not acknowledged yet (TCP on
    /// Linux and Android; 0 elsewhere, where nothing waits for them).
    pub(crate) fn unsent(&self) -> usize {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let SystemStream::Tcp(s) = self {
            use std::os::fd::AsRawFd;
            let mut queued: libc::c_int = 0;
            // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int through the pointer, which outlives
            // the call.
            let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
            if rc == 0 {
                return usize::try_from(queued).unwrap_or(0);
            }
        }
        0
    }

    /// Whether this side's sending half was shut down (a TCP state past `ESTABLISHED` and
    /// `CLOSE_WAIT` on our side: Linux and Android; `false` elsewhere).
    fn ended_its_side(&self) -> bool {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let SystemStream::Tcp(s) = self {
            use std::os::fd::AsRawFd;
            // Linux's TCP states after a shutdown of the sending half.
            const FIN_WAIT1: u8 = 4;
            const FIN_WAIT2: u8 = 5;
            const LAST_ACK: u8 = 9;
            const CLOSING: u8 = 11;
            // The first byte of `struct tcp_info` is the state; the kernel copies as
            // much of the struct as asked for.
            let mut info = [0u8; 8];
            let mut len = info.len() as libc::socklen_t;
            // SAFETY: the buffer and its length outlive the call, which writes at most
            // `len` bytes and updates `len`.
            let rc = unsafe {
                libc::getsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_INFO,
                    info.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            return rc == 0 && matches!(info[0], FIN_WAIT1 | FIN_WAIT2 | LAST_ACK | CLOSING);
        }
        false
    }

    /// Reads and drops what the peer sent, through the reactor (which clears the
    /// readiness at would-block). `true` once the peer's side has ended (EOF or an
    /// error): nothing more will arrive.
    fn drain_readable(&self) -> bool {
        let mut buf = [0u8; 8192];
        loop {
            let read = match self {
                SystemStream::Tcp(s) => s.try_read(&mut buf),
                #[cfg(unix)]
                SystemStream::Unix(s) => s.try_read(&mut buf),
            };
            match read {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }

    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        let sock = match self {
            SystemStream::Tcp(s) => socket2::SockRef::from(s),
            #[cfg(unix)]
            SystemStream::Unix(s) => socket2::SockRef::from(&**s),
        };
        sock.shutdown(std::net::Shutdown::Write)
    }

    /// Waits for `readiness` with a waiter node of its own (so it does not take the
    /// slot an in-place socket may be using for the other direction).
    async fn ready(&self, readiness: Readiness) -> io::Result<()> {
        match (self, readiness) {
            (SystemStream::Tcp(s), Readiness::Readable) => s.readable().await,
            (SystemStream::Tcp(s), Readiness::Writable) => s.writable().await,
            #[cfg(unix)]
            (SystemStream::Unix(s), Readiness::Readable) => s.readable().await,
            #[cfg(unix)]
            (SystemStream::Unix(s), Readiness::Writable) => s.writable().await,
        }
    }

    /// A TCP stream with `TCP_NODELAY` set; a Unix stream as it is.
    fn tcp(stream: TcpStream) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        Ok(SystemStream::Tcp(stream))
    }
}

/// A listening socket of the system transport.
#[derive(Debug)]
enum SystemListener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(UnixListener),
}

impl SystemListener {
    fn poll_accept(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<(SystemStream, Address)>> {
        match self {
            SystemListener::Tcp(l) => l.poll_accept(cx).map(|r| {
                let (stream, peer) = r?;
                Ok((SystemStream::tcp(stream)?, Address::Inet(peer)))
            }),
            #[cfg(unix)]
            SystemListener::Unix(l) => l.poll_accept(cx).map(|r| {
                let (stream, peer) = r?;
                Ok((
                    SystemStream::Unix(Box::new(stream)),
                    super::tokio_unix_address(&peer),
                ))
            }),
        }
    }
}

/// A connected stream made elsewhere (a listener's `accept`, `UnixStream::pair`…), tokio's
/// or std's (made non-blocking when adopted), to hand to the system transport with
/// [`Adopt`] or [`SocketBuilder::adopt`](crate::SocketBuilder::adopt).
#[derive(Debug)]
#[non_exhaustive]
pub enum AdoptedStream {
    /// A TCP stream (`TCP_NODELAY` is set on it, as on every system TCP stream).
    Tcp(TcpStream),
    /// A Unix domain stream.
    #[cfg(unix)]
    Unix(UnixStream),
    /// A std TCP stream: made non-blocking and registered with the reactor when adopted.
    StdTcp(std::net::TcpStream),
    /// A std Unix domain stream: made non-blocking and registered when adopted.
    #[cfg(unix)]
    StdUnix(std::os::unix::net::UnixStream),
}

impl From<std::net::TcpStream> for AdoptedStream {
    fn from(stream: std::net::TcpStream) -> Self {
        AdoptedStream::StdTcp(stream)
    }
}

#[cfg(unix)]
impl From<std::os::unix::net::UnixStream> for AdoptedStream {
    fn from(stream: std::os::unix::net::UnixStream) -> Self {
        AdoptedStream::StdUnix(stream)
    }
}

impl From<TcpStream> for AdoptedStream {
    fn from(stream: TcpStream) -> Self {
        AdoptedStream::Tcp(stream)
    }
}

#[cfg(unix)]
impl From<UnixStream> for AdoptedStream {
    fn from(stream: UnixStream) -> Self {
        AdoptedStream::Unix(stream)
    }
}

impl AdoptedStream {
    /// The peer's address, where the stream knows it (an unnamed Unix peer is an empty
    /// path).
    pub fn peer(&self) -> Option<Address> {
        match self {
            AdoptedStream::Tcp(s) => s.peer_addr().ok().map(Address::Inet),
            #[cfg(unix)]
            AdoptedStream::Unix(s) => s
                .peer_addr()
                .ok()
                .map(|peer| super::tokio_unix_address(&peer)),
            AdoptedStream::StdTcp(s) => s.peer_addr().ok().map(Address::Inet),
            #[cfg(unix)]
            AdoptedStream::StdUnix(s) => s
                .peer_addr()
                .ok()
                .map(|peer| super::std_unix_address(&peer)),
        }
    }
}

/// Hand an already connected stream (TCP or Unix, from a listener's `accept` or a
/// `pair`) to the system transport. Answered with its handle. Handled by
/// [`SystemFunctions`].
#[derive(Debug)]
pub struct Adopt {
    /// The stream.
    pub stream: AdoptedStream,
    /// Where [`Ready`] notices go (weak, as in [`OpenSocket`]).
    pub events: WeakRecipient<Ready>,
}

impl Message for Adopt {
    type Result = Result<Handle, TransportError>;
}

/// Lend a socket actor the stream behind a handle, so it can call `writev`/`read` in
/// place instead of sending [`SendV`]/[`RecvFrom`] (crate-internal: only for tables whose
/// data path is still the system's). The socket then waits for readiness itself, so the
/// transport lets go of its `Ready` recipient.
#[derive(Debug)]
pub(crate) struct ShareStream {
    pub(crate) handle: Handle,
}

impl Message for ShareStream {
    type Result = Option<Arc<SystemStream>>;
}

impl Handler<ShareStream> for SystemFunctions {
    type Result = Option<Arc<SystemStream>>;

    fn handle(&mut self, msg: ShareStream, _: &mut Context<Self>) -> Self::Result {
        let stream = self.stream(msg.handle).ok()?;
        if let Some(entry) = self.handles.get_mut(&msg.handle) {
            entry.lend();
        }
        Some(stream)
    }
}

/// Lend a datagram socket actor the socket behind a handle, so it can send and receive
/// in place (batched, where the OS can) instead of by [`SendV`]/[`RecvFrom`]
/// (crate-internal: only for tables whose data path is still the system's). The actor
/// then waits for readiness itself, so the transport lets go of its `Ready` recipient.
#[derive(Debug)]
pub(crate) struct ShareDatagram {
    pub(crate) handle: Handle,
}

impl Message for ShareDatagram {
    type Result = Option<Arc<SystemDatagram>>;
}

impl Handler<ShareDatagram> for SystemFunctions {
    type Result = Option<Arc<SystemDatagram>>;

    fn handle(&mut self, msg: ShareDatagram, _: &mut Context<Self>) -> Self::Result {
        let entry = self.handles.get_mut(&msg.handle)?;
        let State::Datagram(datagram) = &entry.state else {
            return None;
        };
        let datagram = datagram.clone();
        entry.lend();
        Some(datagram)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Addr<SystemFunctions>>> = const { RefCell::new(None) };
}

/// The error for an operation the handle's state does not allow.
fn invalid(what: &'static str) -> TransportError {
    io::Error::new(io::ErrorKind::InvalidInput, what).into()
}

/// An already answered `ResponseActFuture`.
fn answer<T: 'static>(
    result: Result<T, TransportError>,
) -> ResponseActFuture<SystemFunctions, Result<T, TransportError>> {
    Box::pin(actix::fut::ready(result))
}

impl SystemFunctions {
    /// A new system transport (start it with [`start_unbudgeted`](crate::start_unbudgeted),
    /// as [`current`](Self::current) does).
    pub fn new() -> Self {
        Self::default()
    }

    /// This thread's system transport, started on first use. Must be called inside a
    /// running actix system.
    pub fn current() -> Addr<SystemFunctions> {
        CURRENT.with(|cell| {
            let mut slot = cell.borrow_mut();
            match slot.as_ref() {
                Some(addr) if addr.connected() => addr.clone(),
                _ => {
                    let addr = crate::actors::start_unbudgeted(SystemFunctions::new());
                    *slot = Some(addr.clone());
                    addr
                }
            }
        })
    }

    fn insert(&mut self, state: State, events: WeakRecipient<Ready>) -> Handle {
        self.next += 1;
        let handle = Handle(self.next);
        self.handles.insert(handle, Entry::new(state, events));
        handle
    }

    fn entry(&mut self, handle: Handle) -> Result<&mut Entry, TransportError> {
        self.handles
            .get_mut(&handle)
            .ok_or(TransportError::UnknownHandle(handle))
    }

    fn stream(&self, handle: Handle) -> Result<Arc<SystemStream>, TransportError> {
        match self.handles.get(&handle) {
            Some(Entry {
                state: State::Stream(s),
                ..
            }) => Ok(s.clone()),
            Some(_) => Err(io::Error::from(io::ErrorKind::NotConnected).into()),
            None => Err(TransportError::UnknownHandle(handle)),
        }
    }

    /// Runs `wait`, then sends one `Ready` for `readiness`, unless a wait is already
    /// armed for that direction.
    fn arm(
        &mut self,
        handle: Handle,
        readiness: Readiness,
        wait: impl Future<Output = ()> + 'static,
        ctx: &mut Context<Self>,
    ) {
        let Some(entry) = self.handles.get_mut(&handle) else {
            return;
        };
        if entry.wait(readiness).is_some() {
            return;
        }
        let (abort, registration) = AbortHandle::new_pair();
        entry.set_wait(readiness, Some(abort));
        let wait = Abortable::new(wait, registration);
        self.add_wait(
            Box::pin(async move { wait.await.ok().map(|()| Woken::Ready(handle, readiness)) }),
            ctx,
        );
    }

    /// Adds an armed wait to the set (and makes sure the set is polled).
    fn add_wait(&mut self, wait: Wait, ctx: &mut Context<Self>) {
        self.waiting.waits.push(wait);
        polled_set::added(self, ctx);
    }

    /// Polls the waits woken since the last poll; each that ended tells its socket.
    fn poll_waits(&mut self, task: &mut std::task::Context<'_>) {
        while let Poll::Ready(Some(woken)) = self.waiting.waits.poll_next_unpin(task) {
            match woken {
                // Cancelled: its handle closed.
                None => {}
                Some(Woken::Ready(handle, readiness)) => {
                    if let Some(e) = self.handles.get_mut(&handle) {
                        e.set_wait(readiness, None);
                        e.notify(handle, readiness);
                    }
                }
                Some(Woken::Accepted(handle, taken)) => {
                    // A handle closed meanwhile drops what was taken: the stream closes.
                    if let Some(e) = self.handles.get_mut(&handle) {
                        e.set_wait(Readiness::Readable, None);
                        if let State::Listening(l) = &mut e.state {
                            l.ready = Some(taken);
                        }
                        e.notify(handle, Readiness::Readable);
                    }
                }
            }
        }
    }

    /// Waits for a connection on a listener; the wait takes it (tokio's listeners have
    /// no readiness call of their own) and keeps it for the next `Accept`, then sends
    /// one `Ready(Readable)`.
    fn arm_accept(
        &mut self,
        handle: Handle,
        listener: Arc<SystemListener>,
        ctx: &mut Context<Self>,
    ) {
        let Some(entry) = self.handles.get_mut(&handle) else {
            return;
        };
        if entry.wait(Readiness::Readable).is_some() {
            return;
        }
        let (abort, registration) = AbortHandle::new_pair();
        entry.set_wait(Readiness::Readable, Some(abort));
        let wait = Abortable::new(
            std::future::poll_fn(move |cx| listener.poll_accept(cx)),
            registration,
        );
        self.add_wait(
            Box::pin(async move { wait.await.ok().map(|taken| Woken::Accepted(handle, taken)) }),
            ctx,
        );
    }

    /// Receives one datagram: whole, or its first `max_len` bytes flagged truncated.
    fn recv_datagram(
        &mut self,
        handle: Handle,
        udp: Arc<SystemDatagram>,
        max_len: usize,
        ctx: &mut Context<Self>,
    ) -> Result<Received, TransportError> {
        let max_len = max_len.min(super::system_datagram::MAX_RECEIVE);
        // One byte more than asked: a datagram that fills it was longer than `max_len`.
        let room = max_len.saturating_add(1);
        if self.scratch.len() < room {
            self.scratch.resize(room, 0);
        }
        match udp.try_recv_from(&mut self.scratch[..room]) {
            Ok((n, from)) => {
                let from = Some(from);
                let bytes = Bytes::copy_from_slice(&self.scratch[..n.min(max_len)]);
                if n > max_len {
                    Ok(Received::Truncated { bytes, from })
                } else {
                    Ok(Received::Data { bytes, from })
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let wait = async move { udp.ready(Readiness::Readable).await };
                self.arm(handle, Readiness::Readable, wait, ctx);
                Ok(Received::WouldBlock)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends one datagram (the segments joined).
    fn send_datagram(
        &mut self,
        msg: SendV,
        udp: Arc<SystemDatagram>,
        ctx: &mut Context<Self>,
    ) -> Result<Sent, TransportError> {
        let joined;
        let payload: &[u8] = match msg.segments.as_slice() {
            [] => &[],
            [one] => one,
            many => {
                joined = many.concat();
                &joined
            }
        };
        let result = match &msg.to {
            None => udp.try_send(payload),
            Some(to) => udp.try_send_to(payload, to),
        };
        match result {
            Ok(n) => Ok(Sent::Accepted(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let wait = async move { udp.ready(Readiness::Writable).await };
                self.arm(msg.handle, Readiness::Writable, wait, ctx);
                Ok(Sent::WouldBlock)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A new, non-blocking UDP socket of `family`.
fn udp_socket(family: Family) -> io::Result<socket2::Socket> {
    let domain = match family {
        Family::Ipv6 => socket2::Domain::IPV6,
        _ => socket2::Domain::IPV4,
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Registers a bound UDP socket with tokio's reactor.
fn into_tokio_udp(socket: socket2::Socket) -> io::Result<Arc<SystemDatagram>> {
    Ok(Arc::new(SystemDatagram::Udp(UdpSocket::from_std(
        socket.into(),
    )?)))
}

/// A bound or connected Unix datagram socket, as tokio's.
#[cfg(unix)]
fn into_tokio_unix_datagram(
    socket: socket2::Socket,
    bound: Option<BoundPath>,
) -> io::Result<Arc<SystemDatagram>> {
    let std_socket = std::os::unix::net::UnixDatagram::from(std::os::fd::OwnedFd::from(socket));
    std_socket.set_nonblocking(true)?;
    Ok(Arc::new(SystemDatagram::Unix {
        socket: tokio::net::UnixDatagram::from_std(std_socket)?,
        bound,
    }))
}

/// `SO_REUSEPORT`, where the platform has it.
#[cfg(all(
    unix,
    not(any(
        target_os = "solaris",
        target_os = "illumos",
        target_os = "cygwin",
        target_os = "nuttx"
    ))
))]
mod reuse_port {
    use super::{TcpSocket, TransportError};

    pub(super) fn tcp(socket: &TcpSocket) -> Result<(), TransportError> {
        Ok(socket.set_reuseport(true)?)
    }

    pub(super) fn udp(socket: &socket2::Socket) -> Result<(), TransportError> {
        Ok(socket.set_reuse_port(true)?)
    }
}

/// `SO_REUSEPORT`, where the platform has it: not here.
#[cfg(not(all(
    unix,
    not(any(
        target_os = "solaris",
        target_os = "illumos",
        target_os = "cygwin",
        target_os = "nuttx"
    ))
)))]
mod reuse_port {
    use super::{TcpSocket, TransportError};

    pub(super) fn tcp(_: &TcpSocket) -> Result<(), TransportError> {
        Err(TransportError::Unsupported("SO_REUSEPORT on this platform"))
    }

    pub(super) fn udp(_: &socket2::Socket) -> Result<(), TransportError> {
        Err(TransportError::Unsupported("SO_REUSEPORT on this platform"))
    }
}

impl Actor for SystemFunctions {
    type Context = Context<Self>;
}

impl PolledSet for SystemFunctions {
    fn poller(&mut self) -> &mut SetPoller {
        &mut self.waiting.poller
    }

    fn poll_set(&mut self, task: &mut std::task::Context<'_>) -> bool {
        self.poll_waits(task);
        self.waiting.waits.is_empty()
    }
}

impl Handler<OpenSocket> for SystemFunctions {
    type Result = Result<Handle, TransportError>;

    fn handle(&mut self, msg: OpenSocket, _: &mut Context<Self>) -> Self::Result {
        let state = match (msg.family, msg.kind) {
            (Family::Ipv4, SocketKind::Stream) => State::Tcp(TcpSocket::new_v4()?),
            (Family::Ipv6, SocketKind::Stream) => State::Tcp(TcpSocket::new_v6()?),
            #[cfg(unix)]
            (Family::Unix, SocketKind::Stream) => State::Unix(Box::new(UnixEntry {
                socket: UnixSocket::new_stream()?,
                bound: None,
            })),
            #[cfg(unix)]
            (Family::Unix, SocketKind::Datagram) => {
                let socket =
                    socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::DGRAM, None)?;
                socket.set_nonblocking(true)?;
                State::Udp(socket)
            }
            #[cfg(not(unix))]
            (Family::Unix, _) => {
                return Err(TransportError::Unsupported(
                    "Unix domain sockets on this platform",
                ))
            }
            (family, SocketKind::Datagram) => State::Udp(udp_socket(family)?),
        };
        let sock = match &state {
            State::Tcp(s) => Some(socket2::SockRef::from(s)),
            #[cfg(unix)]
            State::Unix(entry) => Some(socket2::SockRef::from(&entry.socket)),
            State::Udp(s) => Some(socket2::SockRef::from(s)),
            _ => None,
        };
        if let Some(sock) = sock {
            set_buffers(&sock, msg.buffers)?;
        }
        Ok(self.insert(state, msg.events))
    }
}

/// Sets the kernel buffer sizes asked for (`SO_SNDBUF`, `SO_RCVBUF`); a size the
/// system call cannot take (past `i32::MAX`) is an `InvalidInput` error.
fn set_buffers(socket: &socket2::SockRef<'_>, buffers: SocketBuffers) -> io::Result<()> {
    let fits = |n: usize| {
        i32::try_from(n).map(|_| n).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a socket buffer of {n} bytes is past what the system takes (i32::MAX)"),
            )
        })
    };
    if let Some(n) = buffers.send {
        socket.set_send_buffer_size(fits(n)?)?;
    }
    if let Some(n) = buffers.recv {
        socket.set_recv_buffer_size(fits(n)?)?;
    }
    Ok(())
}

impl Handler<Bind> for SystemFunctions {
    type Result = Result<Address, TransportError>;

    fn handle(&mut self, msg: Bind, _: &mut Context<Self>) -> Self::Result {
        let entry = self.entry(msg.handle)?;
        match (&mut entry.state, msg.addr) {
            (State::Tcp(socket), Address::Inet(addr)) => {
                socket.set_reuseaddr(true)?;
                if msg.reuse_port {
                    reuse_port::tcp(socket)?;
                }
                socket.bind(addr)?;
                Ok(Address::Inet(socket.local_addr()?))
            }
            #[cfg(unix)]
            (State::Unix(_) | State::Udp(_), Address::Unix(path)) if path.as_os_str().is_empty() => {
                Err(invalid(
                    "bind: an empty Unix path (the kernel would pick a hidden name nobody can reach)",
                ))
            }
            (State::Unix(unix), Address::Unix(path)) => {
                if msg.reuse_port {
                    return Err(TransportError::Unsupported("SO_REUSEPORT on a Unix socket"));
                }
                unix.socket.bind(&path)?;
                unix.bound = Some(BoundPath::new(path.clone()));
                Ok(Address::Unix(path))
            }
            (State::Udp(socket), Address::Inet(addr)) => {
                if msg.reuse_port {
                    reuse_port::udp(socket)?;
                }
                socket.bind(&addr.into())?;
                let local = socket.local_addr()?.as_socket();
                let State::Udp(socket) = std::mem::replace(&mut entry.state, State::Spent) else {
                    return Err(invalid("not a UDP socket"));
                };
                entry.state = State::Datagram(into_tokio_udp(socket)?);
                local
                    .map(Address::Inet)
                    .ok_or_else(|| invalid("no local address"))
            }
            #[cfg(unix)]
            (State::Udp(socket), Address::Unix(path)) => {
                if msg.reuse_port {
                    return Err(TransportError::Unsupported("SO_REUSEPORT on a Unix socket"));
                }
                socket.bind(&socket2::SockAddr::unix(&path)?)?;
                let State::Udp(socket) = std::mem::replace(&mut entry.state, State::Spent) else {
                    return Err(invalid("not a datagram socket"));
                };
                let bound = BoundPath::new(path.clone());
                entry.state = State::Datagram(into_tokio_unix_datagram(socket, Some(bound))?);
                Ok(Address::Unix(path))
            }
            _ => Err(invalid(
                "bind: handle and address do not match, or already bound",
            )),
        }
    }
}

impl Handler<Listen> for SystemFunctions {
    type Result = Result<(), TransportError>;

    fn handle(&mut self, msg: Listen, _: &mut Context<Self>) -> Self::Result {
        let entry = self.entry(msg.handle)?;
        let listening = match std::mem::replace(&mut entry.state, State::Spent) {
            State::Tcp(socket) => Listening {
                listener: Arc::new(SystemListener::Tcp(socket.listen(msg.backlog)?)),
                ready: None,
                #[cfg(unix)]
                bound: None,
            },
            #[cfg(unix)]
            State::Unix(unix) => {
                let UnixEntry { socket, bound } = *unix;
                Listening {
                    listener: Arc::new(SystemListener::Unix(socket.listen(msg.backlog)?)),
                    ready: None,
                    bound,
                }
            }
            other => {
                entry.state = other;
                return Err(invalid("listen: not an unconnected stream socket"));
            }
        };
        entry.state = State::Listening(Box::new(listening));
        Ok(())
    }
}

impl Handler<Accept> for SystemFunctions {
    type Result = Result<Accepted, TransportError>;

    fn handle(&mut self, msg: Accept, ctx: &mut Context<Self>) -> Self::Result {
        let entry = self.entry(msg.handle)?;
        let State::Listening(listening) = &mut entry.state else {
            return Err(invalid("accept: not a listening socket"));
        };
        let found = match listening.ready.take() {
            Some(taken) => Poll::Ready(taken),
            // Without waiting: the noop waker is replaced by the accept wait's own.
            None => listening
                .listener
                .poll_accept(&mut std::task::Context::from_waker(Waker::noop())),
        };
        match found {
            Poll::Ready(Ok((stream, peer))) => {
                let handle = self.insert(State::Stream(Arc::new(stream)), msg.events);
                Ok(Accepted::Connection { handle, peer })
            }
            Poll::Ready(Err(e)) => Err(e.into()),
            Poll::Pending => {
                let listener = listening.listener.clone();
                self.arm_accept(msg.handle, listener, ctx);
                Ok(Accepted::WouldBlock)
            }
        }
    }
}

/// A stream connect under way.
type Connecting = std::pin::Pin<Box<dyn Future<Output = io::Result<SystemStream>>>>;

impl Handler<Connect> for SystemFunctions {
    type Result = ResponseActFuture<Self, Result<(), TransportError>>;

    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) -> Self::Result {
        let handle = msg.handle;
        let entry = match self.entry(handle) {
            Ok(entry) => entry,
            Err(e) => return answer(Err(e)),
        };
        let state = std::mem::replace(&mut entry.state, State::Spent);
        let connecting: Connecting = match (state, msg.addr) {
            (State::Tcp(socket), Address::Inet(addr)) => {
                Box::pin(async move { SystemStream::tcp(socket.connect(addr).await?) })
            }
            #[cfg(unix)]
            (State::Unix(unix), Address::Unix(path)) => Box::pin(async move {
                Ok(SystemStream::Unix(Box::new(
                    unix.socket.connect(path).await?,
                )))
            }),
            (State::Udp(socket), Address::Inet(addr)) => {
                // Connecting a UDP socket does not wait; the system binds it first.
                let connected = socket
                    .connect(&addr.into())
                    .and_then(|()| into_tokio_udp(socket));
                entry.state = match connected {
                    Ok(udp) => State::Datagram(udp),
                    Err(e) => return answer(Err(e.into())),
                };
                return answer(Ok(()));
            }
            (State::Datagram(udp), addr) => {
                let connected = udp.connect(&addr);
                entry.state = State::Datagram(udp);
                return answer(connected.map_err(TransportError::from));
            }
            #[cfg(unix)]
            (State::Udp(socket), Address::Unix(path)) => {
                // A Unix datagram socket connects at once, and needs no name of its own
                // to send (it can then not be answered, unless it is bound).
                let connected = socket2::SockAddr::unix(&path)
                    .and_then(|to| socket.connect(&to))
                    .and_then(|()| into_tokio_unix_datagram(socket, None));
                entry.state = match connected {
                    Ok(datagram) => State::Datagram(datagram),
                    Err(e) => return answer(Err(e.into())),
                };
                return answer(Ok(()));
            }
            (other, _) => {
                entry.state = other;
                return answer(Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "connect: handle not connectable",
                )
                .into()));
            }
        };
        // The attempt runs on its own, not as this message's response: closing the handle
        // (a timed-out or abandoned connect) cancels it, and dropping it closes the
        // descriptor at once instead of when the system gives up on the SYN.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let attempt = ctx.spawn(connecting.into_actor(self).map(move |res, act, _| {
            let result = match res {
                Ok(stream) => match act.handles.get_mut(&handle) {
                    Some(entry) => {
                        entry.state = State::Stream(Arc::new(stream));
                        Ok(())
                    }
                    None => Err(TransportError::UnknownHandle(handle)),
                },
                Err(e) => {
                    if let Some(entry) = act.handles.get_mut(&handle) {
                        entry.state = State::Spent;
                    }
                    Err(e.into())
                }
            };
            let _ = tx.send(result);
        }));
        if let Some(entry) = self.handles.get_mut(&handle) {
            entry.state = State::Connecting(attempt);
        }
        Box::pin(actix::fut::wrap_future(async move {
            // A dropped sender: the handle was closed while connecting.
            rx.await
                .unwrap_or(Err(TransportError::UnknownHandle(handle)))
        }))
    }
}

impl Handler<Adopt> for SystemFunctions {
    type Result = Result<Handle, TransportError>;

    fn handle(&mut self, msg: Adopt, _: &mut Context<Self>) -> Self::Result {
        let stream = match msg.stream {
            AdoptedStream::Tcp(tcp) => SystemStream::tcp(tcp)?,
            #[cfg(unix)]
            AdoptedStream::Unix(unix) => SystemStream::Unix(Box::new(unix)),
            AdoptedStream::StdTcp(tcp) => {
                tcp.set_nonblocking(true)?;
                SystemStream::tcp(TcpStream::from_std(tcp)?)?
            }
            #[cfg(unix)]
            AdoptedStream::StdUnix(unix) => {
                unix.set_nonblocking(true)?;
                SystemStream::Unix(Box::new(UnixStream::from_std(unix)?))
            }
        };
        Ok(self.insert(State::Stream(Arc::new(stream)), msg.events))
    }
}

impl Handler<SendV> for SystemFunctions {
    type Result = Result<Sent, TransportError>;

    fn handle(&mut self, msg: SendV, ctx: &mut Context<Self>) -> Self::Result {
        if let State::Datagram(udp) = &self.entry(msg.handle)?.state {
            let udp = udp.clone();
            return self.send_datagram(msg, udp, ctx);
        }
        if msg.to.is_some() {
            return Err(TransportError::Unsupported("sendto on a stream socket"));
        }
        let stream = self.stream(msg.handle)?;
        let slices: Vec<IoSlice<'_>> = msg.segments.iter().map(|b| IoSlice::new(b)).collect();
        match stream.try_write_vectored(&slices) {
            Ok(0) if !msg.is_empty() => Err(io::Error::from(io::ErrorKind::WriteZero).into()),
            Ok(n) => Ok(Sent::Accepted(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let wait = async move {
                    // An error here surfaces on the retry, so it is not reported twice.
                    let _ = stream.ready(Readiness::Writable).await;
                };
                self.arm(msg.handle, Readiness::Writable, wait, ctx);
                Ok(Sent::WouldBlock)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Handler<RecvFrom> for SystemFunctions {
    type Result = Result<Received, TransportError>;

    fn handle(&mut self, msg: RecvFrom, ctx: &mut Context<Self>) -> Self::Result {
        if let State::Datagram(udp) = &self.entry(msg.handle)?.state {
            let udp = udp.clone();
            return self.recv_datagram(msg.handle, udp, msg.max_len, ctx);
        }
        let stream = self.stream(msg.handle)?;
        // A stream read may bring less than asked: a huge `max_len` allocates no more
        // than the longest receive.
        let max_len = msg.max_len.clamp(1, super::system_datagram::MAX_RECEIVE);
        let mut buf = BytesMut::with_capacity(max_len);
        match stream.try_read_buf(&mut buf) {
            Ok(0) => Ok(Received::Eof),
            Ok(_) => Ok(Received::Data {
                bytes: buf.freeze(),
                from: None,
            }),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let wait = async move {
                    let _ = stream.ready(Readiness::Readable).await;
                };
                self.arm(msg.handle, Readiness::Readable, wait, ctx);
                Ok(Received::WouldBlock)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Handler<ShutdownWrite> for SystemFunctions {
    type Result = Result<(), TransportError>;

    fn handle(&mut self, msg: ShutdownWrite, _: &mut Context<Self>) -> Self::Result {
        Ok(self.stream(msg.handle)?.shutdown_write()?)
    }
}

impl Handler<CloseSocket> for SystemFunctions {
    type Result = Result<(), TransportError>;

    fn handle(&mut self, msg: CloseSocket, ctx: &mut Context<Self>) -> Self::Result {
        let entry = self
            .handles
            .remove(&msg.handle)
            .ok_or(TransportError::UnknownHandle(msg.handle))?;
        for readiness in [Readiness::Writable, Readiness::Readable] {
            if let Some(wait) = entry.wait(readiness) {
                // The wait (and the descriptor it holds) goes at the set's next poll.
                wait.abort();
            }
        }
        if let State::Connecting(attempt) = entry.state {
            // The attempt owns the descriptor: cancelling it closes the descriptor now.
            ctx.cancel_future(attempt);
            return Ok(());
        }
        if let State::Stream(stream) = &entry.state {
            stream.discard_unread(UNREAD_AT_CLOSE);
            if stream.unsent() > 0 && stream.ended_its_side() {
                // A graceful close (its sending half shut down) whose last bytes the
                // peer has not all taken: closed now, a byte arriving later (a TLS
                // server's session tickets after the client's last write) would make the
                // kernel reset the connection and throw away what it has not sent. The
                // descriptor stays open, read and dropped, until the peer has every byte
                // (or ends its side, or the bound passes). An abort before the sending
                // half was shut down closes at once; one after a graceful close began
                // lingers too (the bytes the kernel took still reach the peer).
                let stream = stream.clone();
                ctx.spawn(actix::fut::wrap_future(linger_at_close(stream)));
            }
        }
        entry.remove_bound_path();
        // Dropping the last reference closes the descriptor.
        Ok(())
    }
}

impl Entry {
    /// Removes the Unix domain path this transport bound for the handle, if any.
    fn remove_bound_path(&self) {
        #[cfg(unix)]
        {
            let bound = match &self.state {
                State::Unix(unix) => unix.bound.as_ref(),
                State::Listening(listening) => listening.bound.as_ref(),
                State::Datagram(datagram) => datagram.bound(),
                _ => None,
            };
            if let Some(bound) = bound {
                bound.remove();
            }
        }
    }
}

impl Drop for SystemFunctions {
    /// Dropped with handles still open (its arbiter stopped, its actors dropped without
    /// stopping): the descriptors close with it, and the paths it bound go too, so the
    /// next run can bind them again.
    fn drop(&mut self) {
        for entry in self.handles.values() {
            entry.remove_bound_path();
        }
    }
}

/// The most unread bytes a stream's close reads and drops first (see
/// [`SystemStream::discard_unread`]); past it, a peer still sending gets its reset.
const UNREAD_AT_CLOSE: usize = 1 << 20;

/// The longest a closed stream's descriptor stays open for the peer to take its last
/// bytes ([`linger_at_close`]).
const LINGER_AT_CLOSE: std::time::Duration = std::time::Duration::from_secs(10);

/// A closed stream whose kernel still holds bytes the peer has not acknowledged: reads and
/// drops what arrives (so no reset throws those bytes away) until the peer has them all,
/// it ends its side, or [`LINGER_AT_CLOSE`] has passed; then the descriptor closes.
async fn linger_at_close(stream: Arc<SystemStream>) {
    let give_up = tokio::time::Instant::now() + LINGER_AT_CLOSE;
    let check = std::time::Duration::from_millis(5);
    loop {
        if stream.drain_readable() || stream.unsent() == 0 {
            return;
        }
        let wait = tokio::time::timeout(check, stream.ready(Readiness::Readable));
        if tokio::time::timeout_at(give_up, wait).await.is_err() {
            tracing::debug!("a closed stream's peer took not all its bytes in time");
            return;
        }
    }
}

#[cfg(test)]
mod buffer_tests {
    use super::*;

    #[test]
    fn buffer_sizes_are_set_and_a_size_past_i32_is_refused() {
        let socket = TcpSocket::new_v4().expect("socket");
        let sock = socket2::SockRef::from(&socket);
        let default_recv = sock.recv_buffer_size().expect("SO_RCVBUF");
        set_buffers(
            &sock,
            SocketBuffers {
                send: Some(96 * 1024),
                recv: Some(48 * 1024),
            },
        )
        .expect("set");
        // Linux doubles what it is given (and caps it at wmem_max/rmem_max).
        let send = sock.send_buffer_size().expect("SO_SNDBUF");
        let recv = sock.recv_buffer_size().expect("SO_RCVBUF");
        assert!(send >= 96 * 1024, "SO_SNDBUF {send}");
        assert!(
            (48 * 1024..=2 * 48 * 1024).contains(&recv),
            "SO_RCVBUF {recv}"
        );
        assert_ne!(recv, default_recv);
        let past = set_buffers(
            &sock,
            SocketBuffers {
                send: None,
                recv: Some(usize::MAX),
            },
        )
        .expect_err("refused");
        assert_eq!(past.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            sock.recv_buffer_size().expect("SO_RCVBUF"),
            recv,
            "unchanged"
        );
    }
}
