//! Transports: the [`SocketFunctions`] table, the [`SystemFunctions`] actor (real,
//! non-blocking sockets), the scripted [`MockTransport`] and the seeded [`SimNetwork`].

mod mock;
mod sim;
mod system;
mod system_datagram;

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Recipient};

pub use mock::{MockDatagram, MockFunctions, MockTransport, SendRecord, SendStep};
pub use sim::{SimConfig, SimCounts, SimNetwork};
pub(crate) use system::{sendfile_unsupported, ShareDatagram, ShareStream, SystemStream, SENDFILE};
pub use system::{Adopt, AdoptedStream, SystemFunctions};
pub(crate) use system_datagram::{SystemDatagram, MAX_BATCH};

use crate::error::TransportError;
use crate::messages::functions::{
    Accept, Bind, CloseSocket, Connect, Listen, OpenSocket, RecvFrom, SendV, ShutdownWrite,
};
use crate::proto::Layer;
use crate::types::Handle;

/// The transport of a socket: one recipient per operation, like c-ares'
/// `struct ares_socket_functions` (and, with `bind`, `listen` and `accept`, its newer
/// `ares_socket_functions_ex`).
///
/// The five stream and datagram operations (`open`, `connect`, `sendv`, `recvfrom`,
/// `close`) are always there. `bind`, `listen` and `accept` are optional: a table made
/// with [`SocketFunctions::from_actor`] has none of them (a
/// [`Listener`](crate::Listener) or a bound [`DatagramSocket`](crate::DatagramSocket) on it
/// fails with [`TransportError::Unsupported`]); [`SocketFunctions::system`],
/// [`SocketFunctions::from_actor_ex`] and the `with_*` methods provide them.
///
/// [`SocketFunctions::system`] gives real non-blocking sockets. Any subset of the
/// operations can be replaced, and the rest stay the system ones, as c-ares allows by
/// leaving callbacks NULL:
///
/// ```no_run
/// use actix::prelude::*;
/// use sockactor::messages::{SendV, Sent};
/// use sockactor::{start_unbudgeted, SocketFunctions, TransportError};
///
/// /// Counts sendv calls, then lets the system transport do the work.
/// struct Counting { inner: Recipient<SendV>, calls: u64 }
/// impl Actor for Counting { type Context = Context<Self>; }
/// impl Handler<SendV> for Counting {
///     type Result = ResponseFuture<Result<Sent, TransportError>>;
///     fn handle(&mut self, msg: SendV, _: &mut Context<Self>) -> Self::Result {
///         self.calls += 1;
///         let inner = self.inner.clone();
///         Box::pin(async move { inner.send(msg).await? })
///     }
/// }
///
/// # async fn demo() {
/// let system = SocketFunctions::system();
/// // An actor that serves many sockets starts outside tokio's cooperative budget.
/// let counting = start_unbudgeted(Counting { inner: system.sendv().clone(), calls: 0 });
/// let functions = system.with_sendv(counting.recipient());
/// # }
/// ```
///
/// A handle is only meaningful to the transport that opened it: replacing `open` while
/// keeping the system `sendv` gives handles the system transport does not know
/// ([`TransportError::UnknownHandle`]).
#[derive(Clone, Debug)]
pub struct SocketFunctions {
    /// Shared: every socket of a table holds it by reference count, not by copies of the
    /// five recipients.
    table: Arc<Table>,
}

#[derive(Clone, Debug)]
struct Table {
    open: Recipient<OpenSocket>,
    connect: Recipient<Connect>,
    sendv: Recipient<SendV>,
    recvfrom: Recipient<RecvFrom>,
    close: Recipient<CloseSocket>,
    bind: Option<Recipient<Bind>>,
    listen: Option<Recipient<Listen>>,
    accept: Option<Recipient<Accept>>,
    shutdown: Option<Recipient<ShutdownWrite>>,
    system: Option<Addr<SystemFunctions>>,
    /// The data path (`open`, `sendv`, `recvfrom`, `accept`) is still the system's own:
    /// a socket may then call `writev`/`read` on the stream in place (see
    /// [`SystemFunctions`]). Replacing any of those operations clears it.
    in_place: bool,
    /// Byte layers every stream socket of the table runs in place, plaintext side first.
    layers: Vec<LayerSpec>,
}

/// Makes one socket's [`Layer`] for its handle.
pub(crate) type MakeLayer = dyn Fn(Handle) -> io::Result<Box<dyn Layer>> + Send + Sync;

/// A byte layer a table puts on each of its stream sockets, with its bounds.
#[derive(Clone)]
pub(crate) struct LayerSpec {
    pub(crate) name: &'static str,
    pub(crate) make: Arc<MakeLayer>,
    pub(crate) bounds: LayerBounds,
}

impl fmt::Debug for LayerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerSpec")
            .field("name", &self.name)
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

/// What a layered socket holds to: the bounds each layer brings (a stack keeps the
/// tightest of each), and what [`Tls`](crate::filters::Tls) and
/// [`Compress`](crate::filters::Compress) set with their builders. Each setter keeps its
/// value usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LayerBounds {
    /// Bound on the bytes for the transport the socket holds (its outbox).
    pub(crate) max_buffered: usize,
    /// Bound on the plaintext one decode returns.
    pub(crate) max_output: usize,
    /// Bound on the bytes handed to (or read from) a transport reached by message, per
    /// call.
    pub(crate) max_per_call: usize,
    /// The longest wait, at a graceful close, for the layers' bytes left to go out.
    pub(crate) close_timeout: std::time::Duration,
}

impl Default for LayerBounds {
    /// A 128 KiB outbox, 64 KiB per decode and per call, 10 s to close.
    fn default() -> Self {
        LayerBounds {
            max_buffered: 128 * 1024,
            max_output: 64 * 1024,
            max_per_call: 64 * 1024,
            close_timeout: std::time::Duration::from_secs(10),
        }
    }
}

impl LayerBounds {
    /// The smallest outbox: room for some plaintext's worst case (a TLS record's
    /// framing four times over).
    const MIN_BUFFERED: usize = 256;

    /// At most `n` bytes (at least 1) per call to a transport reached by message.
    pub(crate) fn max_per_call(self, n: usize) -> Self {
        LayerBounds {
            max_per_call: n.max(1),
            ..self
        }
    }

    /// An outbox of at most `n` bytes (at least [`MIN_BUFFERED`](Self::MIN_BUFFERED)).
    pub(crate) fn max_buffered(self, n: usize) -> Self {
        LayerBounds {
            max_buffered: n.max(Self::MIN_BUFFERED),
            ..self
        }
    }

    /// At most `n` plaintext bytes (at least 1) per decode.
    pub(crate) fn max_output(self, n: usize) -> Self {
        LayerBounds {
            max_output: n.max(1),
            ..self
        }
    }

    /// Waits at most `timeout` at a graceful close.
    pub(crate) fn close_timeout(self, timeout: std::time::Duration) -> Self {
        LayerBounds {
            close_timeout: timeout,
            ..self
        }
    }
}

thread_local! {
    /// The system table of this thread, shared by every socket built without a table of
    /// its own (one reference count each, not five boxed recipients each).
    static SYSTEM: RefCell<Option<SocketFunctions>> = const { RefCell::new(None) };
}

impl SocketFunctions {
    /// The real transport of this thread ([`SystemFunctions::current`]); every call on a
    /// thread returns the same shared table. Must be called inside a running actix
    /// system.
    pub fn system() -> Self {
        SYSTEM.with(|cell| {
            let mut slot = cell.borrow_mut();
            match slot.as_ref() {
                Some(f) if f.table.system.as_ref().is_some_and(|a| a.connected()) => f.clone(),
                _ => {
                    let f = Self::new_system();
                    *slot = Some(f.clone());
                    f
                }
            }
        })
    }

    /// A fresh table over this thread's system transport.
    fn new_system() -> Self {
        let addr = SystemFunctions::current();
        let mut functions =
            Self::from_actor_ex(addr.clone()).with_shutdown(addr.clone().recipient());
        let table = Arc::make_mut(&mut functions.table);
        table.system = Some(addr);
        table.in_place = true;
        functions
    }

    /// Every operation handled by one actor (a mock, a filter, a transport of your own).
    pub fn from_actor<A>(addr: Addr<A>) -> Self
    where
        A: Actor
            + Handler<OpenSocket>
            + Handler<Connect>
            + Handler<SendV>
            + Handler<RecvFrom>
            + Handler<CloseSocket>,
        A::Context: ToEnvelope<A, OpenSocket>
            + ToEnvelope<A, Connect>
            + ToEnvelope<A, SendV>
            + ToEnvelope<A, RecvFrom>
            + ToEnvelope<A, CloseSocket>,
    {
        SocketFunctions {
            table: Arc::new(Table {
                open: addr.clone().recipient(),
                connect: addr.clone().recipient(),
                sendv: addr.clone().recipient(),
                recvfrom: addr.clone().recipient(),
                close: addr.recipient(),
                bind: None,
                listen: None,
                accept: None,
                shutdown: None,
                system: None,
                in_place: false,
                layers: Vec::new(),
            }),
        }
    }

    /// Every operation, `bind`, `listen` and `accept` included, handled by one actor
    /// (c-ares' `ares_set_socket_functions_ex`).
    pub fn from_actor_ex<A>(addr: Addr<A>) -> Self
    where
        A: Actor
            + Handler<OpenSocket>
            + Handler<Connect>
            + Handler<SendV>
            + Handler<RecvFrom>
            + Handler<CloseSocket>
            + Handler<Bind>
            + Handler<Listen>
            + Handler<Accept>,
        A::Context: ToEnvelope<A, OpenSocket>
            + ToEnvelope<A, Connect>
            + ToEnvelope<A, SendV>
            + ToEnvelope<A, RecvFrom>
            + ToEnvelope<A, CloseSocket>
            + ToEnvelope<A, Bind>
            + ToEnvelope<A, Listen>
            + ToEnvelope<A, Accept>,
    {
        Self::from_actor(addr.clone())
            .with_bind(addr.clone().recipient())
            .with_listen(addr.clone().recipient())
            .with_accept(addr.recipient())
    }

    /// Replaces `open` (`asocket`).
    pub fn with_open(mut self, open: Recipient<OpenSocket>) -> Self {
        let table = Arc::make_mut(&mut self.table);
        table.open = open;
        // Handles are no longer the system's own.
        table.in_place = false;
        self
    }

    /// Replaces `connect` (`aconnect`).
    pub fn with_connect(mut self, connect: Recipient<Connect>) -> Self {
        let table = Arc::make_mut(&mut self.table);
        table.connect = connect;
        self
    }

    /// Replaces `sendv` (`asendv`).
    pub fn with_sendv(mut self, sendv: Recipient<SendV>) -> Self {
        let table = Arc::make_mut(&mut self.table);
        table.sendv = sendv;
        table.in_place = false;
        self
    }

    /// Replaces `recvfrom` (`arecvfrom`).
    pub fn with_recvfrom(mut self, recvfrom: Recipient<RecvFrom>) -> Self {
        let table = Arc::make_mut(&mut self.table);
        table.recvfrom = recvfrom;
        table.in_place = false;
        self
    }

    /// Replaces `close` (`aclose`). For handles the system transport opened, the
    /// replacement must pass `CloseSocket` on to the system `close` (keep
    /// `SocketFunctions::system().close().clone()`): the system transport holds the
    /// stream until then.
    pub fn with_close(mut self, close: Recipient<CloseSocket>) -> Self {
        let table = Arc::make_mut(&mut self.table);
        table.close = close;
        self
    }

    /// Replaces (or adds) `bind` (`abind`).
    pub fn with_bind(mut self, bind: Recipient<Bind>) -> Self {
        Arc::make_mut(&mut self.table).bind = Some(bind);
        self
    }

    /// Replaces (or adds) `listen`.
    pub fn with_listen(mut self, listen: Recipient<Listen>) -> Self {
        Arc::make_mut(&mut self.table).listen = Some(listen);
        self
    }

    /// Replaces (or adds) `accept`. Handles it returns are used with this table's
    /// `sendv`, `recvfrom` and `close`, so they must know them.
    pub fn with_accept(mut self, accept: Recipient<Accept>) -> Self {
        let table = Arc::make_mut(&mut self.table);
        table.accept = Some(accept);
        // Accepted handles are no longer the system's own.
        table.in_place = false;
        self
    }

    /// The `open` operation.
    pub fn open(&self) -> &Recipient<OpenSocket> {
        &self.table.open
    }

    /// The `connect` operation.
    pub fn connect(&self) -> &Recipient<Connect> {
        &self.table.connect
    }

    /// The `sendv` operation.
    pub fn sendv(&self) -> &Recipient<SendV> {
        &self.table.sendv
    }

    /// The `recvfrom` operation.
    pub fn recvfrom(&self) -> &Recipient<RecvFrom> {
        &self.table.recvfrom
    }

    /// The `close` operation.
    pub fn close(&self) -> &Recipient<CloseSocket> {
        &self.table.close
    }

    /// Replaces (or adds) the shutdown of a stream's sending half.
    pub fn with_shutdown(mut self, shutdown: Recipient<ShutdownWrite>) -> Self {
        Arc::make_mut(&mut self.table).shutdown = Some(shutdown);
        self
    }

    /// The shutdown of a stream's sending half, if the table has one.
    pub fn shutdown(&self) -> Option<&Recipient<ShutdownWrite>> {
        self.table.shutdown.as_ref()
    }

    /// The `bind` operation, if this table has one.
    pub fn bind(&self) -> Option<&Recipient<Bind>> {
        self.table.bind.as_ref()
    }

    /// The `listen` operation, if this table has one.
    pub fn listen(&self) -> Option<&Recipient<Listen>> {
        self.table.listen.as_ref()
    }

    /// The `accept` operation, if this table has one.
    pub fn accept(&self) -> Option<&Recipient<Accept>> {
        self.table.accept.as_ref()
    }

    /// The system transport behind this table, if it was made by
    /// [`SocketFunctions::system`] (needed to adopt accepted streams).
    pub fn system_actor(&self) -> Option<&Addr<SystemFunctions>> {
        self.table.system.as_ref()
    }

    /// Whether the data path is still the system's own (a socket then calls it in place,
    /// with no message per call).
    pub(crate) fn in_place(&self) -> bool {
        self.table.in_place
    }

    /// Puts a byte [`Layer`] over the streams of this table: every stream socket built
    /// on the returned table calls `make` with its handle and runs the layer in place,
    /// between its plaintext and the transport (the system transport keeps its in-place
    /// `writev` and `read`). Layers stack: the last one put on is nearest the plaintext,
    /// so `table.layer(compress).layer(cipher)` ciphers, then compresses. A socket holds
    /// at most 128 KiB of the layers' output for the transport, reads at most 64 KiB per
    /// call, and waits at most 10 s at a graceful close for that output to go out; an
    /// error from `make` fails the socket at its start (its subscriber hears why).
    ///
    /// ```no_run
    /// # use std::io::{self, IoSlice};
    /// # use bytes::BytesMut;
    /// # use sockactor::filters::{Decoded, Layer};
    /// # #[derive(Debug)]
    /// # struct Invert;
    /// # impl Layer for Invert {
    /// #     fn name(&self) -> &'static str { "invert" }
    /// #     fn worst_case(&self, n: usize) -> usize { n }
    /// #     fn encode(&mut self, input: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()> { Ok(()) }
    /// #     fn decode(&mut self, i: &mut BytesMut, o: &mut BytesMut, max: usize) -> io::Result<Decoded> { Ok(Decoded::NeedInput) }
    /// # }
    /// use sockactor::SocketFunctions;
    ///
    /// # fn demo() {
    /// let functions = SocketFunctions::system().layer(|_handle| Ok(Box::new(Invert)));
    /// # }
    /// ```
    pub fn layer<F>(self, make: F) -> Self
    where
        F: Fn(Handle) -> io::Result<Box<dyn Layer>> + Send + Sync + 'static,
    {
        self.with_layer(LayerSpec {
            name: "user",
            make: Arc::new(make),
            bounds: LayerBounds::default(),
        })
    }

    /// Puts `spec` nearest the plaintext.
    pub(crate) fn with_layer(mut self, spec: LayerSpec) -> Self {
        Arc::make_mut(&mut self.table).layers.insert(0, spec);
        self
    }

    /// The byte layers, plaintext side first.
    pub(crate) fn layers(&self) -> &[LayerSpec] {
        &self.table.layers
    }

    /// This table with its connection operations (`open`, `connect`, `close`, `bind`,
    /// `listen`, `accept`) taken from `hooks`, which passes them on to this table: the
    /// data path (`sendv`, `recvfrom`, shutdown) stays this table's, in place if it was.
    pub(crate) fn with_hooks(&self, hooks: &SocketFunctions) -> Self {
        let mut functions = self.clone();
        let table = Arc::make_mut(&mut functions.table);
        table.open = hooks.table.open.clone();
        table.connect = hooks.table.connect.clone();
        table.close = hooks.table.close.clone();
        table.bind = hooks.table.bind.clone();
        table.listen = hooks.table.listen.clone();
        table.accept = hooks.table.accept.clone();
        functions
    }
}

impl From<actix::MailboxError> for TransportError {
    fn from(_: actix::MailboxError) -> Self {
        TransportError::Unavailable
    }
}

/// A transport's answer, with a gone transport as [`TransportError::Unavailable`].
pub(crate) fn flatten<T>(
    answer: Result<Result<T, TransportError>, actix::MailboxError>,
) -> Result<T, TransportError> {
    answer?
}

/// Calls an operation of the table and flattens the answer; a missing (optional)
/// operation is [`TransportError::Unsupported`], a gone transport
/// [`TransportError::Unavailable`].
pub(crate) async fn call<M, T>(
    op: Option<&Recipient<M>>,
    name: &'static str,
    msg: M,
) -> Result<T, TransportError>
where
    M: actix::Message<Result = Result<T, TransportError>> + Send + 'static,
    T: Send + 'static,
{
    match op {
        Some(r) => r.send(msg).await?,
        None => Err(TransportError::Unsupported(name)),
    }
}

/// A Unix peer's address as this crate names it: its path; an abstract name (Linux) as a
/// path starting with a NUL byte, as binding takes it; an unnamed peer as the empty path.
#[cfg(unix)]
fn unix_address(
    path: Option<&std::path::Path>,
    abstract_name: Option<&[u8]>,
) -> crate::types::Address {
    use std::os::unix::ffi::OsStrExt;
    let path = match (path, abstract_name) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(name)) => {
            let mut bytes = Vec::with_capacity(name.len() + 1);
            bytes.push(0);
            bytes.extend_from_slice(name);
            std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&bytes))
        }
        (None, None) => std::path::PathBuf::new(),
    };
    crate::types::Address::Unix(path)
}

/// [`unix_address`] of a tokio Unix address.
#[cfg(unix)]
pub(crate) fn tokio_unix_address(addr: &tokio::net::unix::SocketAddr) -> crate::types::Address {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let name = addr.as_abstract_name();
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let name = None;
    unix_address(addr.as_pathname(), name)
}

/// [`unix_address`] of a std Unix address.
#[cfg(unix)]
pub(crate) fn std_unix_address(addr: &std::os::unix::net::SocketAddr) -> crate::types::Address {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let name = addr.as_abstract_name();
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let name = None;
    unix_address(addr.as_pathname(), name)
}

/// [`unix_address`] of a socket2 address.
#[cfg(unix)]
pub(crate) fn sockaddr_unix_address(addr: &socket2::SockAddr) -> crate::types::Address {
    unix_address(addr.as_pathname(), addr.as_abstract_namespace())
}
