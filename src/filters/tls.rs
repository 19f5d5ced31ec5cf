//! [`Tls`]: TLS over any stream transport, on the rustls sans-I/O engine.
//!
//! The handshake runs in the `connected` (client) or `accepted` (server) hook of
//! [`Filter`](super::Filter), over the inner transport, so the socket hears of a
//! connection only once it is secured, and a failed handshake is the connect's (or
//! accept's) error. The secured session then becomes the socket's byte layer
//! ([`Layer`]): from there on the socket encrypts and decrypts in place, over its own
//! transport (with in-place `write` and `read` on the system transport), and no message
//! passes through this filter's actor per write or read.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Write};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::{ActorFutureExt, Context, Recipient};
use bytes::{Buf, Bytes, BytesMut};
use dashmap::DashMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use tokio::sync::Notify;

use super::link::{take_front, Filter, FilterActor, FilterAnswer, Link};
use crate::actors::functions::{LayerBounds, LayerSpec};
use crate::error::TransportError;
use crate::messages::functions::{
    Handle, Readiness, Ready, Received, RecvFrom, SendV, Sent, SocketKind,
};
use crate::proto::{Decoded, Layer};
use crate::SocketFunctions;

/// Default time a handshake may take (tokio time).
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Server handshakes at once per listener.
const DEFAULT_MAX_HANDSHAKES: usize = 64;
/// Longest wait, after a failed handshake, for the alert to the peer to go out.
const ALERT_WAIT: Duration = Duration::from_secs(1);
/// The largest TLS record's plaintext.
const RECORD: usize = 16 * 1024;
/// More than any record's framing and tag (TLS 1.3: 22 bytes; TLS 1.2: at most 29).
const RECORD_OVERHEAD: usize = 64;
/// Ciphertext read per inner `recvfrom` during the handshake.
const HANDSHAKE_READ: usize = 16 * 1024 + 512;

/// The most ciphertext `n` plaintext bytes can become: the plaintext plus one record's
/// overhead per started record, plus one more record for good measure.
fn worst_case(n: usize) -> usize {
    n + (n / RECORD + 2) * RECORD_OVERHEAD
}

/// The error a socket sees when TLS fails: [`TransportError::Io`] of kind
/// [`io::ErrorKind::InvalidData`] whose inner error is the [`rustls::Error`] (see
/// [`TransportError::tls`]).
fn tls_error(e: rustls::Error) -> TransportError {
    tls_io_error(e).into()
}

fn tls_io_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
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

/// One handle's handshake, shared by its futures: the session's state and the wake-ups
/// between them.
#[derive(Debug)]
struct Session {
    handle: Handle,
    state: RefCell<State>,
    /// The outbox has something (or the handshake ended): for the writer.
    wake: Notify,
    /// The inner transport's `Ready(Writable)`: for the writer.
    writable: Notify,
    /// The inner transport's `Ready(Readable)`, or a write failure.
    readable: Notify,
    /// The outbox emptied, or the writes failed.
    drained: Notify,
}

/// One handle's TLS state during its handshake.
#[derive(Debug)]
struct State {
    conn: Option<Connection>,
    /// Ciphertext, oldest first.
    outbox: VecDeque<Bytes>,
    buffered: usize,
    /// Ciphertext read from the inner transport, not yet given to rustls.
    input: Bytes,
    /// The inner transport failed a write.
    write_failed: Option<TransportError>,
    /// The handshake is over (secured and handed on, failed, or its handle closed): the
    /// writer stops.
    over: bool,
}

impl State {
    fn conn(&mut self) -> &mut Connection {
        self.conn
            .as_mut()
            .expect("a handshaking session has its connection")
    }

    /// Moves what rustls has to send into the outbox.
    fn seal(&mut self) {
        while self.conn().wants_write() {
            let mut sealed = Vec::new();
            match self.conn().write_tls(&mut sealed) {
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

    /// Gives rustls the held ciphertext and processes it. `Ok(true)` when some was taken.
    fn feed(&mut self) -> Result<bool, TransportError> {
        let mut progressed = false;
        while !self.input.is_empty() {
            let held = self.input.clone();
            let mut input: &[u8] = &held;
            let took = match self.conn().read_tls(&mut input) {
                Ok(took) => took,
                // rustls holds all it may: the rest waits.
                Err(_) => break,
            };
            if took == 0 {
                break;
            }
            let _ = self.input.split_to(took);
            progressed = true;
            if let Err(e) = self.conn().process_new_packets() {
                // rustls queued an alert for the peer: send it on the way out.
                self.seal();
                return Err(tls_error(e));
            }
            if !self.conn().is_handshaking() {
                // What follows is the layer's to decrypt.
                break;
            }
        }
        self.seal();
        Ok(progressed)
    }

    /// Holds ciphertext the inner transport read, after any still held.
    fn hold(&mut self, bytes: Bytes) {
        if self.input.is_empty() {
            self.input = bytes;
        } else {
            let mut joined = BytesMut::with_capacity(self.input.len() + bytes.len());
            joined.extend_from_slice(&self.input);
            joined.extend_from_slice(&bytes);
            self.input = joined.freeze();
        }
    }
}

/// How the handshake's writer reaches the inner transport.
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

/// Hands the handshake's outbox to the inner transport until the handshake is over.
async fn write_loop(session: Rc<Session>, outlet: Outlet) {
    loop {
        let front = {
            let state = session.state.borrow();
            if state.write_failed.is_some() {
                return;
            }
            let mut front = Vec::new();
            let mut len = 0;
            for segment in &state.outbox {
                if len >= outlet.max_per_call {
                    break;
                }
                len += segment.len();
                front.push(segment.clone());
            }
            if front.is_empty() && state.over {
                session.drained.notify_one();
                return;
            }
            front
        };
        if front.is_empty() {
            session.drained.notify_one();
            session.wake.notified().await;
            continue;
        }
        match outlet.send(session.handle, front).await {
            Ok(Sent::Accepted(n)) => session.state.borrow_mut().taken(n),
            Ok(Sent::WouldBlock) => session.writable.notified().await,
            Err(e) => {
                tracing::debug!(handle = %session.handle, error = %e, "tls: inner transport failed");
                session.state.borrow_mut().write_failed = Some(e);
                session.drained.notify_one();
                session.readable.notify_one();
                return;
            }
        }
    }
}

/// A handshake task's outcome, awaited by the filter: aborts the task if the filter
/// stops waiting for it (the actor stopped).
struct Detached<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for Detached<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Detached<T> {
    fn drop(&mut self) {
        self.0.abort();
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
            (progressed, !state.conn().is_handshaking())
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
            Received::Data { bytes, .. } => session.state.borrow_mut().hold(bytes),
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

/// Waits until the handshake's outbox is empty (or its writes failed).
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

/// A secured session as one socket's byte layer: encrypts the socket's plaintext into
/// full-size records, decrypts what the transport reads.
#[derive(Debug)]
struct TlsLayer {
    conn: Connection,
    /// Ciphertext read past the handshake: decrypted before what the socket reads.
    held: BytesMut,
    /// Decrypting failed: the error, once the plaintext before it was read.
    failed: Option<rustls::Error>,
}

impl TlsLayer {
    /// The layer of a secured `conn`, with `left` the ciphertext read past the handshake.
    fn new(conn: Connection, left: &[u8]) -> Self {
        TlsLayer {
            conn,
            held: BytesMut::from(left),
            failed: None,
        }
    }

    /// Hands rustls all of `input` as plaintext. rustls seals each call as records of
    /// its own, and takes a call's slices as one plaintext: the whole transmit in one
    /// call packs its writes, small or large, into full-size records, with no copy of
    /// ours before rustls' own.
    fn take_plaintext(&mut self, input: &[IoSlice<'_>]) -> io::Result<()> {
        let written = self.conn.writer().write_vectored(input)?;
        // Without a buffer limit (set when the layer is made) rustls takes everything;
        // the rest, should it not, slice by slice.
        let mut skip = written;
        for slice in input {
            if skip >= slice.len() {
                skip -= slice.len();
                continue;
            }
            self.conn.writer().write_all(&slice[skip..])?;
            skip = 0;
        }
        Ok(())
    }

    fn seal(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(out)? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Plaintext rustls holds, at most `max` bytes, into `out`: how many. Copied from
    /// rustls' own buffers as they are (a read into `out` would first have to zero `max`
    /// bytes of it, however little plaintext there is).
    fn plaintext(&mut self, out: &mut BytesMut, max: usize) -> usize {
        use std::io::BufRead;
        let mut reader = self.conn.reader();
        let mut n = 0;
        while n < max {
            // Would-block (nothing held) and a cut close are seen by the caller next.
            let Ok(held) = reader.fill_buf() else {
                break;
            };
            if held.is_empty() {
                break;
            }
            let take = held.len().min(max - n);
            out.extend_from_slice(&held[..take]);
            reader.consume(take);
            n += take;
        }
        n
    }
}

impl Layer for TlsLayer {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn worst_case(&self, n: usize) -> usize {
        worst_case(n)
    }

    fn encode(&mut self, input: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()> {
        self.take_plaintext(input)?;
        self.seal(out)
    }

    fn encode_direct(
        &mut self,
        input: &[IoSlice<'_>],
        direct: &mut dyn io::Write,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        self.take_plaintext(input)?;
        // The records go from rustls' buffers to the transport in one `writev`, as
        // tokio-rustls writes them; what the transport does not take (it would block,
        // or failed: the socket hears that from `direct`) is copied out behind them.
        while self.conn.wants_write() {
            match self.conn.write_tls(direct) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        self.seal(out)
    }

    fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        max: usize,
    ) -> io::Result<Decoded> {
        if !self.held.is_empty() {
            self.held.extend_from_slice(input);
            *input = std::mem::take(&mut self.held);
        }
        loop {
            if self.plaintext(out, max) > 0 {
                return Ok(Decoded::More);
            }
            if let Some(e) = &self.failed {
                return Err(tls_io_error(e.clone()));
            }
            if input.is_empty() {
                break;
            }
            let mut front: &[u8] = input;
            // An error: rustls holds all it may until its plaintext is read.
            let took = self.conn.read_tls(&mut front).unwrap_or_default();
            input.advance(took);
            if let Err(e) = self.conn.process_new_packets() {
                tracing::debug!(error = %e, "tls: the peer's bytes are refused");
                // The plaintext of the good records before the bad one goes first.
                self.failed = Some(e);
                continue;
            }
            if took == 0 {
                break;
            }
        }
        let state = self.conn.process_new_packets().map_err(tls_io_error)?;
        Ok(
            if state.peer_has_closed() && state.plaintext_bytes_to_read() == 0 {
                Decoded::End
            } else {
                Decoded::NeedInput
            },
        )
    }

    fn poll_output(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        // Answers to what came in (key updates, alerts).
        self.seal(out)
    }

    fn close(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.conn.send_close_notify();
        self.seal(out)
    }

    fn eof(&mut self) -> io::Result<()> {
        let closed = self
            .conn
            .process_new_packets()
            .is_ok_and(|state| state.peer_has_closed());
        if closed {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection without a TLS close_notify",
            ))
        }
    }
}

/// TLS over a stream transport, client or server, on rustls.
///
/// **Handshake**: [`client`](Self::client) runs the client handshake when the inner
/// transport has connected, before the socket hears the connect's answer;
/// [`server`](Self::server) runs the server handshake on each accepted connection
/// before the listener gets it, up to [`max_handshakes`](Self::max_handshakes) at once
/// (a slow client does not hold up the next). Certificates are verified as the rustls
/// config says (a client config needs a root store: there is no way to turn verification
/// off here), the client sends the server name as SNI, and ALPN is whatever the config
/// sets. A failed handshake (a bad certificate, a wrong name, no common protocol, a peer
/// that leaves, or more than [`handshake_timeout`](Self::handshake_timeout)) fails the
/// connect (or accept) with [`TransportError::Io`] of kind `InvalidData` whose inner
/// error is the [`rustls::Error`] (`UnexpectedEof` and `TimedOut` for the last two);
/// [`SocketError::tls`](crate::SocketError::tls) reaches the rustls error in one step.
///
/// **Then in place**: the secured session becomes the socket's byte layer. The socket
/// encrypts its queued writes into full-size records (a transmit's writes go to rustls as
/// one vectored plaintext, not sealed one record each) in an outbox of at most
/// [`max_buffered`](Self::max_buffered) ciphertext bytes, and writes it on the stream
/// itself on the system transport (by `sendv` of at most
/// [`max_per_call`](Self::max_per_call) bytes on any other); while the outbox is full
/// the socket waits as for a transport that would block. Each read returns at most
/// [`max_output_per_call`](Self::max_output_per_call) plaintext bytes. The peer's
/// close_notify is the socket's EOF; a peer that closes the connection without one is an
/// `UnexpectedEof` read error (the data may have been cut short), and a TLS error from
/// the peer's bytes an `InvalidData` one with the [`rustls::Error`] inside, after the
/// plaintext of the good records before it.
///
/// **Closing**: a graceful close sends close_notify after the queued writes, waiting at
/// most [`close_timeout`](Self::close_timeout) for the ciphertext left to go out.
///
/// Datagram handles are refused ([`TransportError::Unsupported`]), and so is a table
/// that already has byte layers (TLS must be the innermost layer: compress, then
/// encrypt, with `Compress::new().wrap(Tls::client(..).wrap(table))`).
///
/// A client over the system transport, its trusted roots loaded from a PEM file:
///
/// ```no_run
/// use sockactor::filters::Tls;
/// use sockactor::SocketFunctions;
///
/// # fn demo() -> Result<(), sockactor::filters::TlsConfigError> {
/// let functions = Tls::client_from_pem("ca.pem", "example.com")?.wrap(SocketFunctions::system());
/// # Ok(()) }
/// ```
///
/// What went wrong with a certificate, in one step:
///
/// ```
/// use sockactor::SocketError;
///
/// fn is_bad_certificate(error: &SocketError) -> bool {
///     matches!(error.tls(), Some(rustls::Error::InvalidCertificate(_)))
/// }
/// ```
#[derive(Debug)]
pub struct Tls {
    role: Role,
    layer: LayerBounds,
    handshake_timeout: Duration,
    max_handshakes: usize,
    /// Handshakes under way.
    sessions: HashMap<Handle, Rc<Session>>,
    /// The inner table has byte layers of its own: the handshake cannot run through
    /// them, so connects and accepts are refused.
    over_layers: bool,
    /// Secured sessions waiting for their socket to take them as its layer.
    secured: Arc<DashMap<Handle, TlsLayer>>,
    agreed: TlsSessions,
}

/// Why [`Tls::client_from_pem`] or [`Tls::server_from_pem`] could not make a config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A PEM file or its contents could not be read.
    #[error("reading PEM from {what}: {error}")]
    Pem {
        /// Which file (or "bytes").
        what: String,
        /// What the PEM parser said.
        error: rustls::pki_types::pem::Error,
    },
    /// The PEM held no certificate (or no private key).
    #[error("no {0} in the PEM")]
    Missing(&'static str),
    /// rustls refused a certificate, a key or their pairing.
    #[error("TLS config: {0}")]
    Rustls(#[from] rustls::Error),
    /// The server name is neither a DNS name nor an IP address.
    #[error("invalid server name: {0}")]
    ServerName(#[from] rustls::pki_types::InvalidDnsNameError),
}

fn pem_error(what: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsConfigError + '_ {
    move |error| TlsConfigError::Pem {
        what: what.display().to_string(),
        error,
    }
}

/// The ring crypto provider with the safe default protocol versions.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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
            layer: LayerBounds::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            sessions: HashMap::new(),
            over_layers: false,
            secured: Arc::default(),
            agreed: TlsSessions::default(),
        }
    }

    /// A TLS client trusting the CA certificates in the PEM file `roots` (verification
    /// as [`client`](Self::client) does, on the ring provider), naming the server
    /// `server_name`.
    pub fn client_from_pem(
        roots: impl AsRef<Path>,
        server_name: &str,
    ) -> Result<Self, TlsConfigError> {
        let path = roots.as_ref();
        let mut store = rustls::RootCertStore::empty();
        let mut any = false;
        for cert in CertificateDer::pem_file_iter(path).map_err(pem_error(path))? {
            store.add(cert.map_err(pem_error(path))?)?;
            any = true;
        }
        if !any {
            return Err(TlsConfigError::Missing("certificate"));
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Self::client(Arc::new(config), server_name)?)
    }

    /// A TLS server with the certificate chain (leaf first) in the PEM file `chain` and
    /// the private key in the PEM file `key`, on the ring provider, no client
    /// certificates asked for.
    pub fn server_from_pem(
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsConfigError> {
        let (chain, key) = (chain.as_ref(), key.as_ref());
        let certs = CertificateDer::pem_file_iter(chain)
            .map_err(pem_error(chain))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_error(chain))?;
        if certs.is_empty() {
            return Err(TlsConfigError::Missing("certificate"));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(pem_error(key))?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        Ok(Self::server(Arc::new(config)))
    }

    /// Hands a transport reached by message at most `n` ciphertext bytes (at least 1)
    /// per call, during the handshake and after (default 64 KiB).
    pub fn max_per_call(mut self, n: usize) -> Self {
        self.layer = self.layer.max_per_call(n);
        self
    }

    /// Holds at most `n` ciphertext bytes per socket that the transport has not taken
    /// (at least 256; default 128 KiB).
    pub fn max_buffered(mut self, n: usize) -> Self {
        self.layer = self.layer.max_buffered(n);
        self
    }

    /// Returns at most `n` plaintext bytes (at least 1) per read (default 64 KiB).
    pub fn max_output_per_call(mut self, n: usize) -> Self {
        self.layer = self.layer.max_output(n);
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

    /// Waits at most this long (tokio time), at a graceful close, for the transport to
    /// take the ciphertext left (close_notify included); then the socket closes anyway
    /// (default 10 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.layer = self.layer.close_timeout(timeout);
        self
    }

    /// Starts the filter over `inner` and returns the table to give sockets: connects
    /// and accepts go through the filter (for the handshake), data goes from each socket
    /// straight to `inner`'s transport, through the session as its byte layer.
    pub fn wrap(self, inner: SocketFunctions) -> SocketFunctions {
        let secured = self.secured.clone();
        let spec = LayerSpec {
            name: "tls",
            make: Arc::new(move |handle| {
                secured
                    .remove(&handle)
                    .map(|(_, layer)| Box::new(layer) as Box<dyn Layer>)
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::NotConnected,
                            "no secured TLS session on this handle (its handshake did not \
                             run on this table)",
                        )
                    })
            }),
            bounds: self.layer,
        };
        let max = self.layer.max_per_call;
        let mut tls = self;
        tls.over_layers = !inner.layers().is_empty();
        let hooks = FilterActor::wrap(tls, inner.clone(), max);
        inner.with_hooks(&hooks).with_layer(spec)
    }

    /// Starts a session on `handle` with `conn` and runs the handshake; once secured, the
    /// session waits for its socket to take it as its layer.
    fn start(
        &mut self,
        handle: Handle,
        conn: Result<Connection, rustls::Error>,
        link: &Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, ()> {
        if link.kind(handle) != Some(SocketKind::Stream) {
            return answer(Err(TransportError::Unsupported("TLS over datagrams")));
        }
        if self.over_layers {
            return answer(Err(TransportError::Unsupported(
                "TLS over another byte layer: put TLS innermost, e.g. \
                 Compress::new().wrap(Tls::client(..).wrap(table))",
            )));
        }
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(e) => return answer(Err(tls_error(e))),
        };
        // The socket's layer bounds its own buffers; rustls's limit would only cut calls
        // short.
        conn.set_buffer_limit(None);
        let session = Rc::new(Session {
            handle,
            state: RefCell::new(State {
                conn: Some(conn),
                outbox: VecDeque::new(),
                buffered: 0,
                input: Bytes::new(),
                write_failed: None,
                over: false,
            }),
            wake: Notify::new(),
            writable: Notify::new(),
            readable: Notify::new(),
            drained: Notify::new(),
        });
        self.sessions.insert(handle, session.clone());
        let outlet = Outlet {
            sendv: link.inner().sendv().clone(),
            max_per_call: self.layer.max_per_call,
        };
        // The handshake's writing and the handshake itself run as tasks of their own, not
        // as futures in this actor's context: actix polls every future of a context at
        // each of its wake-ups, so a thousand handshakes under way made every message to
        // the filter cost thousands of polls. (Handshakes that stalled past their
        // timeouts under load were starved by tokio's cooperative budget:
        // `start_unbudgeted`.) The writer lives as long as the handshake task: it ends
        // with it, or is stopped by it.
        let writer = Detached(tokio::task::spawn_local(write_loop(
            session.clone(),
            outlet,
        )));
        let recv = link.inner().recvfrom().clone();
        let timeout = self.handshake_timeout;
        let shaking = session.clone();
        let alert_wait = self.layer.close_timeout.min(ALERT_WAIT);
        let done = async move {
            let _writer = writer;
            let done = match tokio::time::timeout(timeout, async {
                handshake(shaking.clone(), recv).await?;
                // The last flight (the client's Finished) is out before the socket takes
                // the session.
                drain(shaking.clone()).await
            })
            .await
            {
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
        let done = Detached(tokio::task::spawn_local(done));
        let (agreed, secured) = (self.agreed.clone(), self.secured.clone());
        let client_name = match &self.role {
            Role::Client { name, .. } => Some(name.clone()),
            Role::Server { .. } => None,
        };
        Box::pin(
            actix::fut::wrap_future(done).map(move |done, act: &mut FilterActor<Self>, _| {
                // A task that ended without an answer (it cannot panic by design; the
                // runtime stopping drops it): the handshake did not finish.
                let done = done.unwrap_or_else(|_| {
                    Err(io_error(
                        io::ErrorKind::Interrupted,
                        "the TLS handshake task ended without an answer",
                    ))
                });
                act.filter_mut().sessions.remove(&handle);
                let mut state = session.state.borrow_mut();
                let closed = state.over;
                state.over = true;
                session.wake.notify_one();
                match &done {
                    Ok(()) if closed => {
                        return Err(io_error(
                            io::ErrorKind::ConnectionAborted,
                            "the handle closed during the TLS handshake",
                        ))
                    }
                    Ok(()) => {
                        tracing::debug!(%handle, "tls: handshake done");
                        let conn = state.conn.take().expect("the session's connection");
                        agreed
                            .0
                            .insert(handle, TlsSessionInfo::of(&conn, client_name.as_ref()));
                        // Ciphertext read past the handshake (the first records) is the
                        // layer's to decrypt.
                        let left = std::mem::take(&mut state.input);
                        secured.insert(handle, TlsLayer::new(conn, &left));
                    }
                    Err(e) => tracing::debug!(%handle, error = %e, "tls: handshake failed"),
                }
                done
            }),
        )
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

    /// Data does not come through the filter (the sockets run the session in place):
    /// a `sendv` sent to it anyway passes through.
    fn sendv(
        &mut self,
        msg: SendV,
        link: &mut Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Sent> {
        Box::pin(actix::fut::wrap_future(link.sendv(msg, usize::MAX)))
    }

    fn closed(&mut self, handle: Handle) {
        self.agreed.0.remove(&handle);
        self.secured.remove(&handle);
        if let Some(session) = self.sessions.remove(&handle) {
            session.state.borrow_mut().over = true;
            session.wake.notify_one();
            session.readable.notify_one();
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
            Readiness::Writable => session.writable.notify_one(),
            Readiness::Readable => session.readable.notify_one(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testing::Takes;

    /// A client connection and its server, the handshake done by hand in memory.
    fn handshaken() -> (ClientConnection, ServerConnection) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let der = cert.cert.der().clone();
        let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).expect("key");
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).expect("root");
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").expect("name");
        let mut client = ClientConnection::new(Arc::new(client), name).expect("client");
        let mut server = ServerConnection::new(Arc::new(server)).expect("server");
        while client.is_handshaking() || server.is_handshaking() {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).expect("client flight");
            server.read_tls(&mut &wire[..]).expect("server reads");
            server.process_new_packets().expect("server");
            let mut wire = Vec::new();
            server.write_tls(&mut wire).expect("server flight");
            client.read_tls(&mut &wire[..]).expect("client reads");
            client.process_new_packets().expect("client");
        }
        (client, server)
    }

    #[test]
    fn small_writes_leave_in_full_size_records_and_decrypt_byte_exact() {
        let (mut client, mut server) = handshaken();
        // As the layer is made once the handshake is done: its own outbox bounds it.
        client.set_buffer_limit(None);
        let mut layer = TlsLayer::new(Connection::from(client), &[]);
        // 1,000 writes of 64 B, then one of 40 KiB, in one transmit.
        let small: Vec<Vec<u8>> = (0..1000u32).map(|i| vec![(i % 251) as u8; 64]).collect();
        let large = vec![7u8; 40 * 1024];
        let mut slices: Vec<IoSlice<'_>> = small.iter().map(|w| IoSlice::new(w)).collect();
        slices.push(IoSlice::new(&large));
        let mut wire = Vec::new();
        layer.encode(&slices, &mut wire).expect("encode");
        let plaintext: usize = slices.iter().map(|s| s.len()).sum();
        assert!(
            wire.len() <= Layer::worst_case(&layer, plaintext),
            "{}",
            wire.len()
        );
        // Record headers: type, version (2), length (2).
        let mut records = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let len = usize::from(u16::from_be_bytes([wire[at + 3], wire[at + 4]]));
            records.push(len);
            at += 5 + len;
        }
        assert_eq!(at, wire.len(), "whole records");
        // 105,920 bytes of plaintext: 7 records of at most 16 KiB each.
        assert_eq!(
            records.len(),
            plaintext.div_ceil(RECORD),
            "records: {records:?}"
        );
        let (mut rest, mut got) = (&wire[..], Vec::new());
        while !rest.is_empty() {
            server.read_tls(&mut rest).expect("server reads");
            server.process_new_packets().expect("decrypts");
            // Would-block once what is decrypted is read: the data stays in `got`.
            let _ = io::Read::read_to_end(&mut server.reader(), &mut got);
        }
        let mut sent = Vec::new();
        for slice in &slices {
            sent.extend_from_slice(slice);
        }
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "plaintext differs");
    }

    #[test]
    fn records_go_to_the_transport_in_place_and_what_it_did_not_take_follows_in_order() {
        for (room, fail) in [
            (usize::MAX, false),
            (20_000, false),
            (5, false),
            (0, false),
            (7_000, true),
        ] {
            let (mut client, mut server) = handshaken();
            client.set_buffer_limit(None);
            let mut layer = TlsLayer::new(Connection::from(client), &[]);
            let writes: Vec<Vec<u8>> = (0..40u32).map(|i| vec![(i % 251) as u8; 1500]).collect();
            let slices: Vec<IoSlice<'_>> = writes.iter().map(|w| IoSlice::new(w)).collect();
            let mut direct = Takes {
                fail,
                ..Takes::new(room)
            };
            let mut out = Vec::new();
            Layer::encode_direct(&mut layer, &slices, &mut direct, &mut out).expect("encode");
            if room == usize::MAX {
                assert!(
                    out.is_empty(),
                    "a transport that takes everything: nothing copied"
                );
                assert!(
                    direct.calls <= 2,
                    "one writev for all records ({} calls)",
                    direct.calls
                );
            } else {
                assert_eq!(direct.took.len(), room, "the transport took its room");
                assert!(!out.is_empty(), "room {room}: the rest is copied out");
            }
            let wire = [direct.took.clone(), out].concat();
            let (mut rest, mut got) = (&wire[..], Vec::new());
            while !rest.is_empty() {
                server.read_tls(&mut rest).expect("server reads");
                server.process_new_packets().expect("decrypts");
                let _ = io::Read::read_to_end(&mut server.reader(), &mut got);
            }
            assert!(
                got == writes.concat(),
                "room {room}: the plaintext, byte-exact, in order"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 48,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// Transmits of any writes through a TLS `LayerStack`, each written in place to a
        /// stream that takes a random amount (or would block, or fails), the outbox
        /// drained a random amount between them: the peer decrypts every byte, once, in
        /// order.
        #[test]
        fn tls_records_written_in_place_or_through_the_outbox_decrypt_in_order(
            transmits in proptest::collection::vec(
                (
                    proptest::collection::vec(1usize..6_000, 1..8),
                    0usize..70_000,
                    proptest::bool::weighted(0.1),
                    0usize..70_000,
                ),
                1..10,
            ),
        ) {
            use crate::proto::LayerStack;
            let (mut client, mut server) = handshaken();
            client.set_buffer_limit(None);
            let layer = TlsLayer::new(Connection::from(client), &[]);
            let mut stack = LayerStack::new(vec![Box::new(layer)], 1 << 30, 1 << 20);
            let (mut wire, mut sent, mut fill) = (Vec::new(), Vec::new(), 0u8);
            for (sizes, room, fail, drain) in transmits {
                let writes: Vec<Vec<u8>> = sizes
                    .iter()
                    .map(|&n| {
                        fill = fill.wrapping_add(1);
                        vec![fill; n]
                    })
                    .collect();
                let slices: Vec<IoSlice<'_>> = writes.iter().map(|w| IoSlice::new(w)).collect();
                let mut direct = Takes { fail, ..Takes::new(room) };
                stack.encode_direct(&slices, &mut direct).expect("encodes");
                wire.extend_from_slice(&direct.took);
                sent.extend(writes.concat());
                let n = drain.min(stack.outbox().len());
                wire.extend_from_slice(&stack.outbox()[..n]);
                stack.sent(n);
            }
            wire.extend_from_slice(stack.outbox());
            let (mut rest, mut got) = (&wire[..], Vec::new());
            while !rest.is_empty() {
                server.read_tls(&mut rest).expect("server reads");
                server.process_new_packets().expect("decrypts");
                let _ = io::Read::read_to_end(&mut server.reader(), &mut got);
            }
            proptest::prop_assert_eq!(got.len(), sent.len());
            proptest::prop_assert!(got == sent, "the plaintext differs");
        }
    }

    #[test]
    fn the_worst_case_covers_a_records_framing() {
        for n in [0usize, 1, 64, RECORD - 1, RECORD, RECORD + 1, 1 << 20] {
            assert!(worst_case(n) >= n + n.div_ceil(RECORD) * 29, "{n}");
        }
    }
}
