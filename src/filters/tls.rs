//! [`Tls`]: TLS over any stream transport, on the rustls sans-I/O engine.
//!
//! Each handle has a session: the rustls connection, a bounded outbox of ciphertext the
//! inner transport has not taken, and the ciphertext read but not yet decrypted. The
//! handshake runs in the `connected` (client) or `accepted` (server) hook of
//! [`Filter`](super::Filter), so the socket hears of a connection only once it is
//! secured, and a failed handshake is the connect's (or accept's) error. A small writer
//! future per handle hands the outbox to the inner transport, at most the per-call bound
//! at a time, and waits for the inner `Ready(Writable)` when it blocks.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::{ActorFutureExt, AsyncContext, Context, Recipient, WeakRecipient};
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use tokio::sync::Notify;

use super::link::{take_front, Filter, FilterActor, FilterAnswer, Link};
use crate::error::TransportError;
use crate::messages::functions::{
    Address, Handle, Readiness, Ready, Received, RecvFrom, SendV, Sent, SocketKind,
};
use crate::SocketFunctions;

/// Default bound on the caller's plaintext taken, and on the ciphertext handed to the
/// inner transport, per `sendv`.
const DEFAULT_MAX_PER_CALL: usize = 64 * 1024;
/// Default bound on a handle's ciphertext the inner transport has not taken yet.
const DEFAULT_MAX_BUFFERED: usize = 128 * 1024;
/// Default bound on the plaintext one `recvfrom` returns.
const DEFAULT_MAX_OUTPUT_PER_CALL: usize = 64 * 1024;
/// Default time a handshake may take (tokio time).
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default wait, at close, for the inner transport to take the ciphertext left.
const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Server handshakes at once per listener.
const DEFAULT_MAX_HANDSHAKES: usize = 64;
/// Longest wait, after a failed handshake, for the alert to the peer to go out.
const ALERT_WAIT: Duration = Duration::from_secs(1);
/// The largest TLS record's plaintext.
const RECORD: usize = 16 * 1024;
/// More than any record's framing and tag (TLS 1.3: 22 bytes; TLS 1.2: at most 29).
const RECORD_OVERHEAD: usize = 64;
/// The smallest outbox: room for some plaintext's worst case.
const MIN_BUFFERED: usize = 4 * RECORD_OVERHEAD;
/// Ciphertext read per inner `recvfrom` during the handshake.
const HANDSHAKE_READ: usize = 16 * 1024 + 512;

/// The most ciphertext `n` plaintext bytes can become: the plaintext plus one record's
/// overhead per started record, plus one more record for good measure.
fn worst_case(n: usize) -> usize {
    n + (n / RECORD + 2) * RECORD_OVERHEAD
}

/// The most plaintext whose worst case fits in `room`.
fn input_fitting(room: usize) -> usize {
    let mut n = room.saturating_sub(2 * RECORD_OVERHEAD);
    while n > 0 && worst_case(n) > room {
        n -= 1.max((worst_case(n) - room) / 2);
    }
    n
}

/// The error a socket sees when TLS fails: [`TransportError::Io`] of kind
/// [`io::ErrorKind::InvalidData`] whose inner error is the [`rustls::Error`].
fn tls_error(e: rustls::Error) -> TransportError {
    io::Error::new(io::ErrorKind::InvalidData, e).into()
}

/// An I/O error with a message of ours.
fn io_error(kind: io::ErrorKind, message: &'static str) -> TransportError {
    io::Error::new(kind, message).into()
}

/// Which side of the handshake a [`Tls`] filter takes.
#[derive(Debug, Clone)]
enum Role {
    Client {
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    },
    Server {
        config: Arc<ServerConfig>,
    },
}

/// Everything a handle's futures share with the filter: the session's state and the
/// wake-ups between them.
#[derive(Debug)]
struct Session {
    handle: Handle,
    state: RefCell<State>,
    /// The outbox has something (or the handle closed): for the writer.
    wake: Notify,
    /// The inner transport's `Ready(Writable)`: for the writer.
    writable: Notify,
    /// The inner transport's `Ready(Readable)` during the handshake, or a write failure.
    readable: Notify,
    /// The outbox emptied, or the writes failed: for a waiting close.
    drained: Notify,
}

/// One handle's TLS state.
#[derive(Debug)]
struct State {
    conn: Connection,
    /// Ciphertext, oldest first.
    outbox: VecDeque<Bytes>,
    buffered: usize,
    /// Ciphertext read from the inner transport, not yet given to rustls.
    input: Bytes,
    /// Where the held input came from.
    from: Option<Address>,
    /// The handshake is running: the inner `Ready(Readable)` notices are the filter's.
    handshaking: bool,
    /// rustls held decrypted plaintext after the last packets it processed.
    plaintext_ready: bool,
    /// The socket was answered would-block and is owed a `Ready(Writable)`.
    owed: bool,
    /// The inner transport failed a write: every later write fails the same way.
    write_failed: Option<TransportError>,
    /// Reading failed (a TLS error, or a peer that left without close_notify).
    read_failed: Option<TransportError>,
    /// The handle is closed: the writer stops.
    closed: bool,
    /// The socket's readiness recipient (`None` while a server connection is finished
    /// ahead of its listener: no socket yet).
    events: Option<WeakRecipient<Ready>>,
}

impl State {
    /// Moves what rustls has to send into the outbox.
    fn seal(&mut self) {
        while self.conn.wants_write() {
            let mut sealed = Vec::new();
            match self.conn.write_tls(&mut sealed) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    self.buffered += sealed.len();
                    self.outbox.push_back(Bytes::from(sealed));
                }
            }
        }
    }

    /// Drops the first `n` ciphertext bytes: the inner transport took them.
    fn taken(&mut self, mut n: usize) {
        self.buffered -= n.min(self.buffered);
        while n > 0 {
            let Some(front) = self.outbox.front_mut() else {
                break;
            };
            if front.len() > n {
                let _ = front.split_to(n);
                break;
            }
            n -= front.len();
            self.outbox.pop_front();
        }
    }

    /// Encrypts the front of `segments`, at most `limit` bytes; returns how many rustls
    /// took.
    fn encrypt(&mut self, segments: &[Bytes], limit: usize) -> Result<usize, TransportError> {
        let mut taken = 0;
        for segment in segments {
            let want = segment.len().min(limit - taken);
            let took = self.conn.writer().write(&segment[..want])?;
            self.seal();
            taken += took;
            if took < want || taken == limit {
                break;
            }
        }
        Ok(taken)
    }

    /// Gives rustls the held ciphertext and processes it. `Ok(true)` when some was taken.
    fn feed(&mut self) -> Result<bool, TransportError> {
        let mut progressed = false;
        while !self.input.is_empty() {
            let mut input: &[u8] = &self.input;
            let took = match self.conn.read_tls(&mut input) {
                Ok(took) => took,
                // rustls holds all the plaintext it may: the rest waits for a read.
                Err(_) => break,
            };
            if took == 0 {
                break;
            }
            let _ = self.input.split_to(took);
            progressed = true;
            match self.conn.process_new_packets() {
                Ok(io) => self.plaintext_ready = io.plaintext_bytes_to_read() > 0,
                Err(e) => {
                    // rustls queued an alert for the peer: send it on the way out.
                    self.seal();
                    let e = tls_error(e);
                    self.read_failed = Some(e.clone());
                    self.input = Bytes::new();
                    return Err(e);
                }
            }
        }
        // Answers to what came in (key updates, alerts) go out with the next flush.
        self.seal();
        Ok(progressed)
    }

    /// Decrypted plaintext for one `recvfrom` (at most `max_len` bytes, allocated to
    /// fit), or `Eof` once the peer's close_notify came and everything before it was
    /// read; `None` when rustls holds none.
    fn plaintext(&mut self, max_len: usize) -> Result<Option<Received>, TransportError> {
        let io = self.conn.process_new_packets().map_err(tls_error)?;
        let n = io.plaintext_bytes_to_read().min(max_len.max(1));
        if n == 0 {
            return Ok(io.peer_has_closed().then_some(Received::Eof));
        }
        let mut out = vec![0u8; n];
        self.conn.reader().read_exact(&mut out)?;
        Ok(Some(Received::Data {
            bytes: Bytes::from(out),
            from: self.from.clone(),
        }))
    }

    /// Holds ciphertext the inner transport read, after any still held.
    fn hold(&mut self, bytes: Bytes, from: Option<Address>) {
        if self.input.is_empty() {
            self.input = bytes;
        } else {
            let mut joined = BytesMut::with_capacity(self.input.len() + bytes.len());
            joined.extend_from_slice(&self.input);
            joined.extend_from_slice(&bytes);
            self.input = joined.freeze();
        }
        self.from = from;
    }

    /// Plaintext rustls decrypted before reading failed (at most `max_len` bytes), if
    /// any: the records it came from were whole and authentic.
    fn plaintext_before_failure(&mut self, max_len: usize) -> Option<Received> {
        let held = self.conn.reader().fill_buf().map_or(0, |chunk| chunk.len());
        let n = held.min(max_len.max(1));
        if n == 0 {
            return None;
        }
        let mut out = vec![0u8; n];
        self.conn.reader().read_exact(&mut out).ok()?;
        Some(Received::Data {
            bytes: Bytes::from(out),
            from: self.from.clone(),
        })
    }

    /// What one `recvfrom` can answer without reading: plaintext rustls holds, or
    /// plaintext from the held ciphertext. Once reading failed, the plaintext of the
    /// good records that came before the bad one goes first, then the failure.
    fn deliver(&mut self, max_len: usize) -> Result<Option<Received>, TransportError> {
        loop {
            if let Some(e) = &self.read_failed {
                let e = e.clone();
                return match self.plaintext_before_failure(max_len) {
                    Some(received) => Ok(Some(received)),
                    None => Err(e),
                };
            }
            if let Some(received) = self.plaintext(max_len)? {
                return Ok(Some(received));
            }
            // A failure to feed is in `read_failed`, for the next turn.
            if self.input.is_empty() || !self.feed().unwrap_or(true) {
                return Ok(None);
            }
        }
    }
}

impl Session {
    /// Tells the socket its writes may go on, if it is owed that and they can.
    fn settle(&self, room: usize) {
        let mut state = self.state.borrow_mut();
        if state.owed && (input_fitting(room) > 0 || state.write_failed.is_some()) {
            state.owed = false;
            if let Some(events) = state.events.as_ref().and_then(|e| e.upgrade()) {
                tracing::trace!(handle = %self.handle, "tls: outbox has room");
                events.do_send(Ready {
                    handle: self.handle,
                    readiness: Readiness::Writable,
                });
            }
        }
    }

    /// Fails the handle's writes for good, and wakes whoever waits on them.
    fn fail_writes(&self, e: TransportError) {
        tracing::debug!(handle = %self.handle, error = %e, "tls: inner transport failed");
        self.state.borrow_mut().write_failed = Some(e);
        self.drained.notify_one();
        self.readable.notify_one();
    }
}

/// How the writer reaches the inner transport.
struct Outlet {
    sendv: Recipient<SendV>,
    max_per_call: usize,
}

impl Outlet {
    /// Hands the inner transport the outbox's front, at most the per-call bound.
    async fn send(&self, handle: Handle, segments: Vec<Bytes>) -> Result<Sent, TransportError> {
        let segments = take_front(segments, self.max_per_call);
        let offered: usize = segments.iter().map(Bytes::len).sum();
        let msg = SendV {
            handle,
            segments,
            to: None,
        };
        match self.sendv.send(msg).await? {
            Ok(Sent::Accepted(n)) if n > offered => Err(TransportError::OverAccepted {
                accepted: n,
                offered,
            }),
            answer => answer,
        }
    }
}

/// Hands the session's outbox to the inner transport until the handle closes or fails.
async fn write_loop(session: Rc<Session>, outlet: Outlet, max_buffered: usize) {
    loop {
        let front = {
            let state = session.state.borrow();
            if state.closed || state.write_failed.is_some() {
                return;
            }
            // Only the front that one call may carry: a few records at most.
            let mut front = Vec::new();
            let mut len = 0;
            for segment in &state.outbox {
                if len >= outlet.max_per_call {
                    break;
                }
                len += segment.len();
                front.push(segment.clone());
            }
            front
        };
        if front.is_empty() {
            session.drained.notify_one();
            session.wake.notified().await;
            continue;
        }
        match outlet.send(session.handle, front).await {
            Ok(Sent::Accepted(n)) => {
                let room = {
                    let mut state = session.state.borrow_mut();
                    state.taken(n);
                    max_buffered.saturating_sub(state.buffered)
                };
                session.settle(room);
            }
            Ok(Sent::WouldBlock) => session.writable.notified().await,
            Err(e) => {
                session.fail_writes(e);
                session.settle(0);
                return;
            }
        }
    }
}

/// Runs the handshake: sends what rustls has to send, reads what it needs, until the
/// session is secured, fails, or the peer leaves.
async fn handshake(session: Rc<Session>, recv: Recipient<RecvFrom>) -> Result<(), TransportError> {
    let handle = session.handle;
    loop {
        let (progressed, done) = {
            let mut state = session.state.borrow_mut();
            let progressed = state.feed();
            if let Some(e) = &state.write_failed {
                return Err(e.clone());
            }
            (progressed, !state.conn.is_handshaking())
        };
        // What the step wrote (the client's Finished, an alert) goes out now.
        session.wake.notify_one();
        if done {
            return progressed.map(|_| ());
        }
        if progressed? {
            continue;
        }
        let msg = RecvFrom {
            handle,
            max_len: HANDSHAKE_READ,
        };
        match recv.send(msg).await?? {
            Received::Data { bytes, from } => {
                session.state.borrow_mut().hold(bytes, from);
            }
            Received::WouldBlock => session.readable.notified().await,
            Received::Eof => {
                return Err(io_error(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ))
            }
            Received::Truncated { .. } => {
                return Err(io_error(
                    io::ErrorKind::InvalidData,
                    "a datagram where a TLS stream was expected",
                ))
            }
        }
    }
}

/// Waits until the session's outbox is empty (or its writes failed).
async fn drain(session: Rc<Session>) -> Result<(), TransportError> {
    loop {
        {
            let state = session.state.borrow();
            if let Some(e) = &state.write_failed {
                return Err(e.clone());
            }
            if state.buffered == 0 {
                return Ok(());
            }
        }
        session.drained.notified().await;
    }
}

/// TLS over a stream transport, client or server, on rustls.
///
/// **Handshake**: [`client`](Self::client) runs the client handshake when the inner
/// transport has connected, before the socket hears the connect's answer;
/// [`server`](Self::server) runs the server handshake on each accepted connection
/// before the listener gets it, up to [`max_handshakes`](Self::max_handshakes) at once
/// (a slow client does not hold up the next). Certificates are verified as the rustls config says (a
/// client config needs a root store: there is no way to turn verification off here), the
/// client sends the server name as SNI, and ALPN is whatever the config sets. A failed
/// handshake (a bad certificate, a wrong name, no common protocol, a peer that leaves, or
/// more than [`handshake_timeout`](Self::handshake_timeout)) fails the connect (or
/// accept) with [`TransportError::Io`] of kind `InvalidData` whose inner error is the
/// [`rustls::Error`] (`UnexpectedEof` and `TimedOut` for the last two).
///
/// **Writing**: each `sendv` encrypts at most [`max_per_call`](Self::max_per_call) of
/// the caller's plaintext, and no more than surely fits in the room left in the
/// handle's outbox of ciphertext (at most [`max_buffered`](Self::max_buffered)); the
/// answer is `Accepted(n)`, `n` the plaintext bytes taken. The outbox goes to the inner
/// transport in calls of at most `max_per_call` bytes, on its own, waiting for the inner
/// `Ready(Writable)` when it blocks. While the outbox has no room the answer is
/// would-block, and the socket's `Ready(Writable)` follows when the inner transport has
/// taken enough. An inner error fails the handle's writes for good.
///
/// **Reading**: each `recvfrom` returns at most
/// [`max_output_per_call`](Self::max_output_per_call) (and its `max_len`) plaintext
/// bytes; ciphertext not decrypted yet waits for the next call. The peer's close_notify
/// is `Eof`; a peer that closes the connection without one is an `UnexpectedEof` error
/// (the data may have been cut short), and a TLS error from the peer's bytes is an
/// `InvalidData` error with the [`rustls::Error`] inside.
///
/// **Closing**: close_notify is queued and the outbox handed on (waiting at most
/// [`close_timeout`](Self::close_timeout)) before the close goes on to the inner
/// transport.
///
/// Datagram handles are refused ([`TransportError::Unsupported`]).
///
/// A TLS failure can be told from other failures by downcasting:
///
/// ```
/// use sockactor::{SocketError, TransportError};
///
/// fn is_bad_certificate(error: &SocketError) -> bool {
///     matches!(
///         error,
///         SocketError::Connect(TransportError::Io(e)) if matches!(
///             e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()),
///             Some(rustls::Error::InvalidCertificate(_))
///         )
///     )
/// }
/// ```
///
/// A client over the system transport:
///
/// ```no_run
/// use std::sync::Arc;
/// use sockactor::filters::Tls;
/// use sockactor::SocketFunctions;
///
/// # fn demo(roots: rustls::RootCertStore) {
/// let config = rustls::ClientConfig::builder_with_provider(Arc::new(
///     rustls::crypto::ring::default_provider(),
/// ))
/// .with_safe_default_protocol_versions()
/// .expect("versions")
/// .with_root_certificates(roots)
/// .with_no_client_auth();
/// let functions = Tls::client(Arc::new(config), "example.com")
///     .expect("a valid server name")
///     .wrap(SocketFunctions::system());
/// # }
/// ```
#[derive(Debug)]
pub struct Tls {
    role: Role,
    max_per_call: usize,
    max_buffered: usize,
    max_output_per_call: usize,
    handshake_timeout: Duration,
    close_timeout: Duration,
    max_handshakes: usize,
    sessions: HashMap<Handle, Rc<Session>>,
    agreed: TlsSessions,
}

/// What a finished TLS handshake agreed on, for one handle.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsSessionInfo {
    /// The application protocol both sides chose (ALPN), if any was offered and agreed.
    pub alpn_protocol: Option<Vec<u8>>,
    /// The TLS version.
    pub protocol_version: Option<rustls::ProtocolVersion>,
    /// The cipher suite.
    pub cipher_suite: Option<rustls::CipherSuite>,
    /// The server name: on a server, the one the client asked for (SNI); on a client, the
    /// one it verified the server's certificate against.
    pub server_name: Option<String>,
    /// The peer's certificate chain, its own certificate first (empty for a client that
    /// sent none).
    pub peer_certificates: Vec<CertificateDer<'static>>,
}

/// The sessions one [`Tls`] filter has secured, by transport handle, readable from any
/// thread: take it with [`Tls::sessions`] before wrapping, then look a socket up by the
/// handle [`GetInfo`](crate::messages::GetInfo) reports. A session is there from the end
/// of its handshake until its handle closes.
///
/// ```no_run
/// # async fn demo(socket: actix::Addr<sockactor::Socket>, sessions: sockactor::filters::TlsSessions)
/// # -> Result<(), actix::MailboxError> {
/// use sockactor::messages::GetInfo;
///
/// let handle = socket.send(GetInfo).await?.handle;
/// if let Some(session) = sessions.get(handle) {
///     let h2 = session.alpn_protocol.as_deref() == Some(&b"h2"[..]);
///     println!("h2: {h2}, peer chain of {}", session.peer_certificates.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct TlsSessions(Arc<DashMap<Handle, TlsSessionInfo>>);

impl TlsSessions {
    /// The session on `handle`, if its handshake finished and it is still open.
    pub fn get(&self, handle: Handle) -> Option<TlsSessionInfo> {
        self.0.get(&handle).map(|entry| entry.value().clone())
    }

    /// Every open session, with its handle (in no particular order).
    pub fn all(&self) -> Vec<(Handle, TlsSessionInfo)> {
        self.0
            .iter()
            .map(|entry| (*entry.key(), entry.value().clone()))
            .collect()
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TlsSessionInfo {
    fn of(conn: &Connection, client_name: Option<&ServerName<'static>>) -> Self {
        let server_name = match conn {
            Connection::Server(server) => server.server_name().map(str::to_owned),
            Connection::Client(_) => client_name.map(|name| match name {
                ServerName::DnsName(dns) => dns.as_ref().to_owned(),
                ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
                other => format!("{other:?}"),
            }),
        };
        TlsSessionInfo {
            alpn_protocol: conn.alpn_protocol().map(<[u8]>::to_vec),
            protocol_version: conn.protocol_version(),
            cipher_suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
            server_name,
            peer_certificates: conn
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
        }
    }
}

impl Tls {
    /// A TLS client that verifies the server as `config` says and names it `server_name`
    /// (a DNS name, checked against the certificate and sent as SNI, or an IP address).
    /// Fails if `server_name` is neither.
    pub fn client(
        config: Arc<ClientConfig>,
        server_name: &str,
    ) -> Result<Self, rustls::pki_types::InvalidDnsNameError> {
        let name = ServerName::try_from(server_name.to_owned())?;
        Ok(Self::with_role(Role::Client { config, name }))
    }

    /// A TLS server with the certificate and settings of `config`.
    pub fn server(config: Arc<ServerConfig>) -> Self {
        Self::with_role(Role::Server { config })
    }

    fn with_role(role: Role) -> Self {
        Tls {
            role,
            max_per_call: DEFAULT_MAX_PER_CALL,
            max_buffered: DEFAULT_MAX_BUFFERED,
            max_output_per_call: DEFAULT_MAX_OUTPUT_PER_CALL,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            sessions: HashMap::new(),
            agreed: TlsSessions::default(),
        }
    }

    /// Encrypts at most `n` of the caller's bytes (at least 1) per `sendv`, and hands the
    /// inner transport at most `n` ciphertext bytes per call (default 64 KiB).
    pub fn max_per_call(mut self, n: usize) -> Self {
        self.max_per_call = n.max(1);
        self
    }

    /// Holds at most `n` ciphertext bytes per handle that the inner transport has not
    /// taken (at least 256; default 128 KiB).
    pub fn max_buffered(mut self, n: usize) -> Self {
        self.max_buffered = n.max(MIN_BUFFERED);
        self
    }

    /// Returns at most `n` plaintext bytes (at least 1) per `recvfrom` (default 64 KiB).
    pub fn max_output_per_call(mut self, n: usize) -> Self {
        self.max_output_per_call = n.max(1);
        self
    }

    /// The sessions this filter secures, by handle: what each handshake agreed on (ALPN,
    /// version, cipher suite, server name, the peer's certificates).
    pub fn sessions(&self) -> TlsSessions {
        self.agreed.clone()
    }

    /// A server runs at most this many handshakes at once per listener (default 64, at
    /// least 1), ahead of the listener's `accept`s, so a slow or silent client does not
    /// hold up the clients behind it: each listener `accept` gets whichever connection
    /// finished its handshake first. Connections past the bound wait in the kernel's
    /// backlog.
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n.max(1);
        self
    }

    /// Fails a handshake that takes longer than this (tokio time; default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Waits at most this long (tokio time), when a handle closes, for the inner
    /// transport to take the ciphertext left (default 10 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Starts the filter over `inner` and returns the table to give sockets.
    pub fn wrap(self, inner: SocketFunctions) -> SocketFunctions {
        let max = self.max_per_call;
        FilterActor::wrap(self, inner, max)
    }

    /// Starts a session on `handle` with `conn` and its writer, and runs the handshake.
    fn start(
        &mut self,
        handle: Handle,
        conn: Result<Connection, rustls::Error>,
        link: &Link,
        ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, ()> {
        if link.kind(handle) != Some(SocketKind::Stream) {
            return answer(Err(TransportError::Unsupported("TLS over datagrams")));
        }
        let events = link.events(handle);
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(e) => return answer(Err(tls_error(e))),
        };
        // The filter bounds its own buffers; rustls's limit would only cut calls short.
        conn.set_buffer_limit(None);
        let session = Rc::new(Session {
            handle,
            state: RefCell::new(State {
                conn,
                outbox: VecDeque::new(),
                buffered: 0,
                input: Bytes::new(),
                from: None,
                handshaking: true,
                plaintext_ready: false,
                owed: false,
                write_failed: None,
                read_failed: None,
                closed: false,
                events,
            }),
            wake: Notify::new(),
            writable: Notify::new(),
            readable: Notify::new(),
            drained: Notify::new(),
        });
        self.sessions.insert(handle, session.clone());
        let outlet = Outlet {
            sendv: link.inner().sendv().clone(),
            max_per_call: self.max_per_call,
        };
        ctx.spawn(actix::fut::wrap_future(write_loop(
            session.clone(),
            outlet,
            self.max_buffered,
        )));
        let recv = link.inner().recvfrom().clone();
        let timeout = self.handshake_timeout;
        let shaking = session.clone();
        let alert_wait = self.close_timeout.min(ALERT_WAIT);
        let done = async move {
            let done = match tokio::time::timeout(timeout, handshake(shaking.clone(), recv)).await {
                Ok(done) => done,
                Err(_) => Err(io_error(
                    io::ErrorKind::TimedOut,
                    "the TLS handshake took too long",
                )),
            };
            if done.is_err() {
                // The alert rustls wrote for the peer goes out before the handle closes.
                let _ = tokio::time::timeout(alert_wait, drain(shaking)).await;
            }
            done
        };
        let agreed = self.agreed.clone();
        let client_name = match &self.role {
            Role::Client { name, .. } => Some(name.clone()),
            Role::Server { .. } => None,
        };
        Box::pin(actix::fut::wrap_future(done).map(move |done, _, _| {
            let mut state = session.state.borrow_mut();
            state.handshaking = false;
            match &done {
                Ok(()) => {
                    tracing::debug!(%handle, "tls: handshake done");
                    if !state.closed {
                        let info = TlsSessionInfo::of(&state.conn, client_name.as_ref());
                        agreed.0.insert(handle, info);
                    }
                    if !state.input.is_empty() || state.plaintext_ready {
                        // Data came with the handshake: the socket may read it now.
                        if let Some(events) = state.events.as_ref().and_then(|e| e.upgrade()) {
                            events.do_send(Ready {
                                handle,
                                readiness: Readiness::Readable,
                            });
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(%handle, error = %e, "tls: handshake failed");
                    state.read_failed.get_or_insert_with(|| e.clone());
                }
            }
            done
        }))
    }

    fn session(&self, handle: Handle) -> Result<Rc<Session>, TransportError> {
        self.sessions
            .get(&handle)
            .cloned()
            .ok_or_else(|| io_error(io::ErrorKind::NotConnected, "no TLS session on this handle"))
    }
}

fn answer<T: 'static>(value: Result<T, TransportError>) -> FilterAnswer<Tls, T> {
    Box::pin(actix::fut::ready(value))
}

impl Filter for Tls {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn background_accepts(&self) -> usize {
        match self.role {
            Role::Server { .. } => self.max_handshakes,
            Role::Client { .. } => 0,
        }
    }

    fn routed(&mut self, handle: Handle, events: &WeakRecipient<Ready>) {
        let Some(session) = self.sessions.get(&handle) else {
            return;
        };
        let mut state = session.state.borrow_mut();
        state.events = Some(events.clone());
        if !state.input.is_empty() || state.plaintext_ready {
            // Data came with the handshake: the socket may read it now.
            if let Some(events) = events.upgrade() {
                events.do_send(Ready {
                    handle,
                    readiness: Readiness::Readable,
                });
            }
        }
    }

    fn connected(
        &mut self,
        handle: Handle,
        link: &mut Link,
        ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, ()> {
        let conn = match &self.role {
            Role::Client { config, name } => {
                ClientConnection::new(config.clone(), name.clone()).map(Connection::from)
            }
            Role::Server { .. } => {
                return answer(Err(TransportError::Unsupported(
                    "a TLS server filter on a connecting socket",
                )))
            }
        };
        self.start(handle, conn, link, ctx)
    }

    fn accepted(
        &mut self,
        handle: Handle,
        link: &mut Link,
        ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, ()> {
        let conn = match &self.role {
            Role::Server { config } => ServerConnection::new(config.clone()).map(Connection::from),
            Role::Client { .. } => {
                return answer(Err(TransportError::Unsupported(
                    "a TLS client filter on an accepted connection",
                )))
            }
        };
        self.start(handle, conn, link, ctx)
    }

    fn sendv(
        &mut self,
        msg: SendV,
        _link: &mut Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Sent> {
        let session = match self.session(msg.handle) {
            Ok(session) => session,
            Err(e) => return answer(Err(e)),
        };
        let mut state = session.state.borrow_mut();
        if let Some(e) = &state.write_failed {
            return answer(Err(e.clone()));
        }
        let room = self.max_buffered.saturating_sub(state.buffered);
        let limit = msg.len().min(self.max_per_call).min(input_fitting(room));
        if limit == 0 && !msg.is_empty() {
            tracing::trace!(handle = %msg.handle, room, "tls: outbox full, would block");
            state.owed = true;
            return answer(Ok(Sent::WouldBlock));
        }
        let taken = match state.encrypt(&msg.segments, limit) {
            Ok(taken) => taken,
            Err(e) => {
                drop(state);
                session.fail_writes(e.clone());
                return answer(Err(e));
            }
        };
        drop(state);
        session.wake.notify_one();
        if taken == 0 && !msg.is_empty() {
            // rustls took nothing (it should not, with room): retry once its bytes go.
            session.state.borrow_mut().owed = true;
            return answer(Ok(Sent::WouldBlock));
        }
        answer(Ok(Sent::Accepted(taken)))
    }

    fn recvfrom(
        &mut self,
        msg: RecvFrom,
        link: &mut Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Received> {
        let handle = msg.handle;
        let session = match self.session(handle) {
            Ok(session) => session,
            Err(e) => return answer(Err(e)),
        };
        let max_len = msg.max_len.min(self.max_output_per_call).max(1);
        {
            let mut state = session.state.borrow_mut();
            let delivered = state.deliver(max_len);
            drop(state);
            session.wake.notify_one();
            match delivered {
                Ok(Some(received)) => return answer(Ok(received)),
                Ok(None) => {}
                Err(e) => return answer(Err(e)),
            }
        }
        let read = link.recvfrom(RecvFrom {
            handle,
            max_len: msg.max_len.max(1),
        });
        Box::pin(actix::fut::wrap_future(read).map(
            move |received, act: &mut FilterActor<Self>, _| {
                let received = received?;
                let mut state = session.state.borrow_mut();
                let delivered = match received {
                    Received::Data { bytes, from } => {
                        state.hold(bytes, from);
                        state.deliver(max_len)
                    }
                    Received::Eof => {
                        let e = io_error(
                            io::ErrorKind::UnexpectedEof,
                            "the peer closed the connection without a TLS close_notify",
                        );
                        state.read_failed = Some(e.clone());
                        Err(e)
                    }
                    other => Ok(Some(other)),
                };
                drop(state);
                session.wake.notify_one();
                match delivered {
                    Ok(Some(received)) => Ok(received),
                    Ok(None) => {
                        // The records are not whole yet: the retry reads on at once.
                        act.link().notify(handle, Readiness::Readable);
                        Ok(Received::WouldBlock)
                    }
                    Err(e) => Err(e),
                }
            },
        ))
    }

    fn closing(
        &mut self,
        handle: Handle,
        _link: &mut Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, ()> {
        let Some(session) = self.sessions.get(&handle).cloned() else {
            return answer(Ok(()));
        };
        {
            let mut state = session.state.borrow_mut();
            if state.write_failed.is_some() {
                return answer(Ok(()));
            }
            if !state.conn.is_handshaking() {
                state.conn.send_close_notify();
                state.seal();
            }
            tracing::debug!(%handle, buffered = state.buffered, "tls: flushing before close");
        }
        session.wake.notify_one();
        let timeout = self.close_timeout;
        let waited = async move {
            match tokio::time::timeout(timeout, drain(session)).await {
                Ok(drained) => drained,
                Err(_) => Err(io::ErrorKind::TimedOut.into()),
            }
        };
        Box::pin(actix::fut::wrap_future(waited))
    }

    fn closed(&mut self, handle: Handle) {
        self.agreed.0.remove(&handle);
        if let Some(session) = self.sessions.remove(&handle) {
            session.state.borrow_mut().closed = true;
            session.wake.notify_one();
        }
    }

    fn inner_ready(
        &mut self,
        ready: Ready,
        link: &mut Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) {
        let Some(session) = self.sessions.get(&ready.handle) else {
            link.notify(ready.handle, ready.readiness);
            return;
        };
        match ready.readiness {
            // The socket never sees an inner would-block on writes: the writer does.
            Readiness::Writable => session.writable.notify_one(),
            Readiness::Readable if session.state.borrow().handshaking => {
                session.readable.notify_one()
            }
            Readiness::Readable => link.notify(ready.handle, ready.readiness),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_fitting_a_room_is_within_its_worst_case() {
        for room in [0usize, 1, 128, 129, 256, 1000, 16_500, 65_536, 131_072] {
            let n = input_fitting(room);
            assert!(n == 0 || worst_case(n) <= room, "room {room}: {n}");
        }
        assert!(input_fitting(MIN_BUFFERED) > 0);
    }
}
