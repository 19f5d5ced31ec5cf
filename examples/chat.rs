//! A line-based chat server over TCP, a client for it, and a demo that checks itself.
//!
//! ```text
//! cargo run --release --example chat                     # the demo (the default)
//! cargo run --release --example chat -- server [--addr 127.0.0.1:7878] [--seconds N]
//! cargo run --release --example chat -- client [--addr 127.0.0.1:7878] --nick NAME
//! ```
//!
//! How the server is put together, one sockactor feature at a time:
//!
//! - A [`Listener`] accepts connections. For each one its factory starts a `Session`
//!   actor and builds the socket: framed with tokio-util's `LinesCodec` (the session gets
//!   whole lines as `Frame<String>`s), and registered in a [`Registry`] with a `Member`
//!   record as its user data.
//! - The first line a client sends is its nickname. Each later line is broadcast: the
//!   session walks the registry and pushes the line into every other member's write
//!   queue through that socket's [`Writer`], with no actor message per recipient.
//! - A member that does not read fills its queue. Then `Writer::write` answers
//!   `WriteError::QueueFull` at once, and the broadcast to that member is dropped and
//!   counted, so one stuck client cannot make the server's memory grow.
//! - A line longer than the limit is a typed `DecodeError`: the socket closes by itself,
//!   and the session tells the others why that member left.
//! - Shutdown: stop listening, send "server shutting down" to everyone, close every
//!   socket gracefully, and wait until the registry is empty. Sockets that cannot drain
//!   (their peer does not read) are aborted after a grace period.
//!
//! Ctrl-C (or the end of `--seconds N`) shuts the server down gracefully.
//!
//! Everything runs on one actix arbiter (one thread): the listener, the sockets, the
//! sessions and, in the demo, the clients too.
//!
//! The items are `pub` so that `tests/the_chat_example_serves_a_room_over_loopback.rs`
//! can include this file as a module and drive the server and clients in-process.

use std::collections::HashMap;
use std::fmt;
use std::io::BufRead;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use sockactor::messages::{
    Address, Close, Frame, GetWriter, ListenerEvent, SocketEvent, SocketEventKind, SocketId,
    SocketStats, StopListening, Write,
};
use sockactor::{
    DecodeError, Listener, QueueConfig, ReadPermit, Registry, Socket, SocketConfig, SocketError,
    SocketHandle, SocketState, TransportError, WriteError, Writer,
};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_util::codec::{LinesCodec, LinesCodecError};
use tracing_subscriber::EnvFilter;

/// Where the server listens, and the client connects, unless told otherwise.
const DEFAULT_ADDR: &str = "127.0.0.1:7878";
/// Longest nickname, in bytes.
const MAX_NICK: usize = 32;
/// Longest line the client accepts from the server (a broadcast is a client's line plus
/// its sender's nickname, and `/who` lists everyone).
const CLIENT_MAX_LINE: usize = 64 * 1024;

const USAGE: &str = "\
usage:
  chat [demo]                                       run a server and scripted clients, check them
  chat server [--addr ADDR] [--seconds N]           serve (default addr 127.0.0.1:7878); shut
                                                    down gracefully on Ctrl-C or after N s
  chat client [--addr ADDR] --nick NAME             join a server; stdin lines are sent

commands in the chat: /who lists who is online, /quit leaves";

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

/// What the command line asks for.
#[derive(Debug)]
enum Mode {
    Demo,
    Server {
        addr: SocketAddr,
        seconds: Option<u64>,
    },
    Client {
        addr: SocketAddr,
        nick: String,
    },
}

#[actix::main]
async fn main() -> ExitCode {
    let mode = match parse_args(std::env::args().skip(1)) {
        Ok(mode) => mode,
        Err(ChatError::Usage(problem)) if problem.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("chat: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&mode);
    let result = match mode {
        Mode::Demo => run_demo().await,
        Mode::Server { addr, seconds } => run_server(addr, seconds).await,
        Mode::Client { addr, nick } => run_client(addr, &nick).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ ChatError::Demo(_)) => {
            eprintln!("chat demo: FAILED: {error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("chat: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Reads `[demo | server | client] [--addr ADDR] [--seconds N] [--nick NAME]`.
/// `Err(ChatError::Usage(""))` means help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Mode, ChatError> {
    let mode = args.next();
    let (mut addr, mut seconds, mut nick) = (None, None, None);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| ChatError::Usage(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--addr" => addr = Some(resolve(&value()?)?),
            "--seconds" => {
                let text = value()?;
                let n = text.parse().map_err(|_| {
                    ChatError::Usage(format!("--seconds takes a whole number, not {text:?}"))
                })?;
                seconds = Some(n);
            }
            "--nick" => nick = Some(value()?),
            "-h" | "--help" => return Err(ChatError::Usage(String::new())),
            other => return Err(ChatError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    let addr = match addr {
        Some(addr) => addr,
        None => resolve(DEFAULT_ADDR)?,
    };
    match mode.as_deref() {
        None | Some("demo") if seconds.is_none() && nick.is_none() => Ok(Mode::Demo),
        None | Some("demo") => Err(ChatError::Usage("the demo takes no options".into())),
        Some("server") if nick.is_none() => Ok(Mode::Server { addr, seconds }),
        Some("server") => Err(ChatError::Usage("--nick is for the client".into())),
        Some("client") if seconds.is_some() => {
            Err(ChatError::Usage("--seconds is for the server".into()))
        }
        Some("client") => match nick {
            Some(nick) => Ok(Mode::Client { addr, nick }),
            None => Err(ChatError::Usage("the client needs --nick NAME".into())),
        },
        Some("-h" | "--help") => Err(ChatError::Usage(String::new())),
        Some(other) => Err(ChatError::Usage(format!("unknown mode {other:?}"))),
    }
}

/// `host:port` to a socket address (the first one the resolver gives).
fn resolve(text: &str) -> Result<SocketAddr, ChatError> {
    let bad = |why: String| ChatError::Usage(format!("bad address {text:?}: {why}"));
    text.to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("it resolves to nothing".into()))
}

/// Logs to stderr, filtered by `RUST_LOG`. By default the server logs who comes and goes;
/// the demo and the client show only this example's warnings.
fn init_tracing(mode: &Mode) {
    let default = match mode {
        Mode::Server { .. } => "chat=info,sockactor=warn",
        Mode::Demo | Mode::Client { .. } => "chat=warn,sockactor=error",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
}

/// Everything that can go wrong in this example.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The command line was not understood (empty: help was asked for).
    #[error("{0}")]
    Usage(String),
    /// The server could not listen.
    #[error("could not listen on {addr}: {source}")]
    Listen {
        /// Where it tried.
        addr: SocketAddr,
        /// Why it failed.
        source: SocketError,
    },
    /// The listener is on something other than an IP address.
    #[error("the listener reports a non-IP local address {0}")]
    NotInet(Address),
    /// A client could not connect.
    #[error("could not connect to {addr}: {source}")]
    Connect {
        /// Where it tried.
        addr: SocketAddr,
        /// Why it failed.
        source: SocketError,
    },
    /// A line could not be queued for sending.
    #[error("could not send a line: {0}")]
    Write(#[from] WriteError),
    /// An actor stopped before it answered.
    #[error("an actor stopped before answering: {0}")]
    Mailbox(#[from] MailboxError),
    /// Shutting down, sockets stayed registered even after being aborted.
    #[error("{0} socket(s) still registered after shutdown aborted them")]
    Stuck(usize),
    /// The demo saw something other than what it expected.
    #[error("{0}")]
    Demo(String),
}

// ---------------------------------------------------------------------------------------
// Server: the shared room
// ---------------------------------------------------------------------------------------

/// How a chat server behaves.
#[derive(Clone, Copy, Debug)]
pub struct ChatConfig {
    /// Longest line a client may send, in bytes, without its newline. A longer one closes
    /// the connection.
    pub max_line: usize,
    /// Each connection's write queue. Once a connection has `high_watermark` bytes queued
    /// (its peer does not read), lines to it are dropped until it drains to
    /// `low_watermark`. Make the high watermark larger than one burst: a session handles
    /// up to a few hundred lines in a row before the sockets it wrote to get to flush,
    /// and a client that reads should not lose lines to that.
    pub queue: QueueConfig,
    /// How long a shutdown lets sockets send their last lines before it aborts them.
    pub shutdown_grace: Duration,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            max_line: 1024,
            queue: QueueConfig {
                high_watermark: 1024 * 1024,
                low_watermark: 256 * 1024,
                ..QueueConfig::default()
            },
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

impl ChatConfig {
    /// The configuration of every accepted socket.
    fn socket_config(&self) -> SocketConfig {
        SocketConfig {
            queue: self.queue,
            // `LinesCodec` rejects a long line itself (a typed `LinesCodecError`); this
            // outer limit would only catch a decoder that buffers without bound.
            max_frame_bytes: self.max_line.saturating_mul(4),
            ..SocketConfig::default()
        }
    }
}

/// One connection as the room sees it: the user data of its socket's registry entry,
/// shared by its own session (which writes it) and every other session (which reads it).
#[derive(Debug, Default)]
pub struct Member {
    /// Set once, by its first valid line.
    nick: OnceLock<String>,
    /// It quit, hung up or was disconnected: no longer listed, no more broadcasts.
    left: AtomicBool,
    /// Broadcast lines dropped because its queue was full.
    dropped: AtomicU64,
    /// Its queue refused the last line sent to it (a warning went out when it started).
    congested: AtomicBool,
}

impl Member {
    /// Its nickname, once it has one.
    pub fn nick(&self) -> Option<&str> {
        self.nick.get().map(String::as_str)
    }

    fn has_left(&self) -> bool {
        self.left.load(Ordering::SeqCst)
    }
}

/// What all sessions of one server share: the registry of its sockets, and counters.
#[derive(Debug)]
struct Room {
    registry: Registry,
    config: ChatConfig,
    /// Shutting down: nobody joins, leaves are not announced.
    closing: AtomicBool,
    /// Chat lines broadcast.
    relayed: AtomicU64,
    /// Lines dropped for members whose queue was full.
    dropped: AtomicU64,
    /// Connections closed because their byte stream could not be decoded into lines.
    rejected: AtomicU64,
}

impl Room {
    fn new(config: ChatConfig) -> Self {
        Room {
            registry: Registry::new(),
            config,
            closing: AtomicBool::new(false),
            relayed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Every registered connection that still takes writes, with its member record.
    fn connections(&self) -> Vec<(SocketHandle, Arc<Member>)> {
        self.registry
            .iter()
            .into_iter()
            .filter(|handle| handle.state() == SocketState::Open)
            .filter_map(|handle| {
                let member = Arc::downcast::<Member>(handle.user_data()?.clone()).ok()?;
                Some((handle, member))
            })
            .collect()
    }

    /// The connections that have joined (have a nickname) and not left.
    fn members(&self) -> Vec<(SocketHandle, Arc<Member>)> {
        let mut members = self.connections();
        members.retain(|(_, member)| member.nick().is_some() && !member.has_left());
        members
    }

    /// The nicknames online, sorted.
    fn online(&self) -> String {
        let mut nicks: Vec<String> = self
            .members()
            .iter()
            .filter_map(|(_, member)| member.nick().map(str::to_owned))
            .collect();
        nicks.sort();
        nicks.join(", ")
    }

    fn is_taken(&self, nick: &str) -> bool {
        self.members()
            .iter()
            .any(|(_, member)| member.nick() == Some(nick))
    }

    /// Sends `text` to every member but `except`; answers how many took it.
    fn broadcast(&self, except: Option<SocketId>, text: &str) -> usize {
        let line = line_bytes(text);
        let mut reached = 0;
        for (handle, member) in self.members() {
            if Some(handle.id()) != except && self.deliver(&handle.writer(), &member, line.clone())
            {
                reached += 1;
            }
        }
        reached
    }

    /// Sends `text` to every connection, joined or not; answers how many took it.
    fn tell_everyone(&self, text: &str) -> usize {
        let line = line_bytes(text);
        let mut reached = 0;
        for (handle, member) in self.connections() {
            if self.deliver(&handle.writer(), &member, line.clone()) {
                reached += 1;
            }
        }
        reached
    }

    /// Queues one line for one member. A full queue (the peer does not read) drops it:
    /// counted, and a warning when that member's congestion starts.
    fn deliver(&self, writer: &Writer, member: &Member, line: Bytes) -> bool {
        // `Bytes` is reference-counted: every member's queue holds the same buffer.
        match writer.write(line) {
            Ok(()) => {
                member.congested.store(false, Ordering::SeqCst);
                true
            }
            Err(WriteError::QueueFull {
                queued,
                high_watermark,
                ..
            }) => {
                self.dropped.fetch_add(1, Ordering::SeqCst);
                let dropped = member.dropped.fetch_add(1, Ordering::SeqCst) + 1;
                if !member.congested.swap(true, Ordering::SeqCst) {
                    let nick = member.nick().unwrap_or("(no nickname yet)");
                    tracing::warn!(
                        nick,
                        queued,
                        high_watermark,
                        dropped,
                        "{nick} is not reading: its queue is full, dropping lines sent to it"
                    );
                }
                false
            }
            // Closing meanwhile: it will not read this anyway.
            Err(error) => {
                tracing::debug!(%error, "line not queued");
                false
            }
        }
    }
}

/// A line of text as the bytes of one write.
fn line_bytes(text: &str) -> Bytes {
    Bytes::from(format!("{text}\n"))
}

/// A nickname is 1 to [`MAX_NICK`] ASCII letters, digits, `-` or `_`.
fn is_valid_nick(nick: &str) -> bool {
    !nick.is_empty()
        && nick.len() <= MAX_NICK
        && nick
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why a framed socket's stream was rejected, for the other members. The typed errors
/// tell a line that is too long from bytes that are not UTF-8 text.
fn decode_reason(error: &DecodeError, max_line: usize) -> String {
    match error {
        DecodeError::Decoder(source) => match source.downcast_ref::<LinesCodecError>() {
            Some(LinesCodecError::MaxLineLengthExceeded) => {
                format!("sent a line longer than {max_line} bytes")
            }
            Some(LinesCodecError::Io(e)) => format!("sent something that is not text: {e}"),
            None => format!("sent something undecodable: {source}"),
        },
        DecodeError::FrameTooLong { buffered, .. } => {
            format!("sent {buffered} bytes without a line break")
        }
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Server: one session per connection
// ---------------------------------------------------------------------------------------

/// Tells the hub a session is over: it lets go of the socket's address, so the closed
/// socket's actor ends and leaves the registry.
#[derive(Message)]
#[rtype(result = "()")]
struct SessionEnded(SocketId);

/// One connection's conversation: gets its lines as `Frame<String>`s and the rest of
/// what its socket has to say as `SocketEvent`s.
struct Session {
    room: Arc<Room>,
    member: Arc<Member>,
    peer: Address,
    hub: Recipient<SessionEnded>,
    /// Its socket, known from the first frame or event.
    socket: Option<SocketId>,
    /// Writes replies into its own socket's queue.
    writer: Option<Writer>,
}

impl Actor for Session {
    type Context = Context<Self>;
}

impl Session {
    /// Learns which socket it talks for (every frame and event names it).
    fn attach(&mut self, socket: SocketId) {
        if self.socket.is_none() {
            self.socket = Some(socket);
            self.writer = self.room.registry.get(socket).map(|h| h.writer());
        }
    }

    /// Sends one line to this session's own client.
    fn reply(&self, text: &str) {
        if let Some(writer) = &self.writer {
            self.room.deliver(writer, &self.member, line_bytes(text));
        }
    }

    /// The first lines: a nickname, until a valid and free one comes.
    fn choose_nick(&mut self, line: &str) {
        let nick = line.trim();
        if !is_valid_nick(nick) {
            let rule = format!("1 to {MAX_NICK} letters, digits, '-' or '_'");
            self.reply(&format!("* a nickname is {rule}; pick another"));
            return;
        }
        // Check and set need no lock: every session of this server runs on one thread.
        if self.room.is_taken(nick) || self.member.nick.set(nick.to_owned()).is_err() {
            self.reply(&format!("* the nickname {nick} is taken; pick another"));
            return;
        }
        tracing::info!(nick, peer = %self.peer, "joined");
        self.reply(&format!(
            "* welcome, {nick}! online: {}",
            self.room.online()
        ));
        self.room
            .broadcast(self.socket, &format!("* {nick} joined"));
    }

    /// A line from a member: a command, or something to say.
    fn chat(&mut self, nick: &str, line: &str) {
        match line {
            "/quit" => {
                self.reply(&format!("* bye, {nick}"));
                self.leave(None);
                self.close_socket();
            }
            "/who" => self.reply(&format!("* online: {}", self.room.online())),
            command if command.starts_with('/') => {
                self.reply(&format!("* unknown command {command}; try /who or /quit"))
            }
            "" => {}
            text => {
                self.room.relayed.fetch_add(1, Ordering::SeqCst);
                self.room.broadcast(self.socket, &format!("{nick}: {text}"));
            }
        }
    }

    /// Marks the member gone and tells the others, once (nothing to tell if it never
    /// joined, or during shutdown).
    fn leave(&mut self, reason: Option<&str>) {
        if self.member.left.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(nick) = self.member.nick() else {
            return;
        };
        let dropped = self.member.dropped.load(Ordering::SeqCst);
        if dropped > 0 {
            tracing::warn!(
                nick,
                dropped,
                "{nick} left; {dropped} line(s) were dropped for it"
            );
        }
        tracing::info!(nick, reason, "left");
        if self.room.is_closing() {
            return;
        }
        let text = match reason {
            Some(reason) => format!("* {nick} left ({reason})"),
            None => format!("* {nick} left"),
        };
        self.room.broadcast(self.socket, &text);
    }

    /// Closes its socket gracefully: what is queued (a goodbye) still goes out.
    fn close_socket(&self) {
        let registered = self.socket.and_then(|id| self.room.registry.get(id));
        if let Some(socket) = registered.and_then(|handle| handle.addr()) {
            socket.do_send(Close::Graceful);
        }
    }
}

impl Handler<Frame<String>> for Session {
    type Result = ();

    fn handle(&mut self, msg: Frame<String>, _: &mut Context<Self>) {
        self.attach(msg.socket);
        // Lines after /quit, or while the server shuts down, are not for anyone.
        if self.member.has_left() || self.room.is_closing() {
            return;
        }
        let member = self.member.clone();
        match member.nick() {
            None => self.choose_nick(&msg.frame),
            Some(nick) => self.chat(nick, &msg.frame),
        }
        // `msg.permit` is dropped here: the line is handled, the socket may read on.
    }
}

impl Handler<SocketEvent> for Session {
    type Result = ();

    fn handle(&mut self, event: SocketEvent, ctx: &mut Context<Self>) {
        self.attach(event.socket);
        match event.kind {
            // The client hung up (or ended its input): leave, and close our side too.
            SocketEventKind::Eof => {
                self.leave(None);
                self.close_socket();
            }
            // A line too long, or not text. The socket is already closing gracefully.
            SocketEventKind::DecodeFailed(error) => {
                let reason = decode_reason(&error, self.room.config.max_line);
                tracing::warn!(peer = %self.peer, %error, "disconnecting: {reason}");
                self.room.rejected.fetch_add(1, Ordering::SeqCst);
                self.leave(Some(&reason));
            }
            SocketEventKind::ReadFailed(error) => {
                self.leave(Some(&format!("connection lost: {error}")));
            }
            SocketEventKind::Closed { cause } => {
                let reason = cause.map(|error| format!("connection lost: {error}"));
                self.leave(reason.as_deref());
                if let Some(socket) = self.socket {
                    self.hub.do_send(SessionEnded(socket));
                }
                ctx.stop();
            }
            // A fire-and-forget write failed: the transport failed, `Closed` follows.
            SocketEventKind::WriteFailed { error, .. } => {
                tracing::debug!(peer = %self.peer, %error, "write failed");
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server: the hub, which owns the connections
// ---------------------------------------------------------------------------------------

/// Sends this `Close` to every connection; answers how many there were.
#[derive(Message)]
#[rtype(result = "usize")]
struct CloseAll(Close);

/// The listener's subscriber. It holds the address of every accepted socket (the
/// registry holds them weakly) until that socket's session is over.
struct Hub {
    room: Arc<Room>,
    sockets: HashMap<SocketId, Addr<Socket>>,
}

impl Actor for Hub {
    type Context = Context<Self>;
}

impl Handler<ListenerEvent> for Hub {
    type Result = ();

    fn handle(&mut self, event: ListenerEvent, _: &mut Context<Self>) {
        match event {
            ListenerEvent::Accepted { socket, id, peer } => {
                tracing::info!(%peer, socket = %id, "connected");
                if self.room.is_closing() {
                    // Accepted just before the listener stopped.
                    socket.do_send(Close::Graceful);
                }
                self.sockets.insert(id, socket);
            }
            // The listener retries after a back-off; nothing to do but tell.
            ListenerEvent::AcceptFailed { error } => tracing::warn!(%error, "accept failed"),
            ListenerEvent::Closed => tracing::info!("stopped listening"),
            _ => {}
        }
    }
}

impl Handler<SessionEnded> for Hub {
    type Result = ();

    fn handle(&mut self, msg: SessionEnded, _: &mut Context<Self>) {
        self.sockets.remove(&msg.0);
    }
}

impl Handler<CloseAll> for Hub {
    type Result = MessageResult<CloseAll>;

    fn handle(&mut self, msg: CloseAll, _: &mut Context<Self>) -> Self::Result {
        for socket in self.sockets.values() {
            socket.do_send(msg.0);
        }
        MessageResult(self.sockets.len())
    }
}

// ---------------------------------------------------------------------------------------
// Server: the handle
// ---------------------------------------------------------------------------------------

/// A running chat server.
pub struct ChatServer {
    room: Arc<Room>,
    hub: Addr<Hub>,
    listener: Addr<Listener>,
    local: SocketAddr,
}

/// What a shutdown did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections that took the "server shutting down" line.
    pub told: usize,
    /// Connections closed.
    pub closed: usize,
    /// Of those, connections aborted because they had not drained within the grace
    /// period.
    pub aborted: usize,
    /// Lines dropped, over the server's life, for members whose queue was full.
    pub dropped: u64,
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shut down: {} connection(s) told, {} closed ({} aborted); {} line(s) dropped \
             for clients that did not read",
            self.told, self.closed, self.aborted, self.dropped
        )
    }
}

impl ChatServer {
    /// Listens on `addr` (port 0: any free port, see [`ChatServer::local_addr`]).
    pub async fn start(addr: SocketAddr, config: ChatConfig) -> Result<ChatServer, ChatError> {
        let room = Arc::new(Room::new(config));
        let hub = Hub {
            room: room.clone(),
            sockets: HashMap::new(),
        }
        .start();
        let factory = {
            let (room, hub) = (room.clone(), hub.clone());
            move |peer: &Address| session_socket(&room, &hub, peer)
        };
        let (listener, local) = Listener::builder()
            .subscriber(hub.clone().recipient())
            .socket_builder(factory)
            .bind(addr)
            .await
            .map_err(|source| ChatError::Listen { addr, source })?;
        let Address::Inet(local) = local else {
            listener.do_send(StopListening);
            return Err(ChatError::NotInet(local));
        };
        Ok(ChatServer {
            room,
            hub,
            listener,
            local,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Its connections, live ones (and closed ones whose actor has not ended yet).
    pub fn registry(&self) -> Registry {
        self.room.registry.clone()
    }

    /// Chat lines broadcast so far.
    pub fn relayed(&self) -> u64 {
        self.room.relayed.load(Ordering::SeqCst)
    }

    /// Lines dropped so far because the member's queue was full.
    pub fn dropped(&self) -> u64 {
        self.room.dropped.load(Ordering::SeqCst)
    }

    /// Connections closed so far for a line too long (or not text).
    pub fn rejected(&self) -> u64 {
        self.room.rejected.load(Ordering::SeqCst)
    }

    /// The live counters of the socket of the member called `nick`, and the lines
    /// dropped for it.
    pub fn member_stats(&self, nick: &str) -> Option<(SocketStats, u64)> {
        let members = self.room.members();
        let (handle, member) = members.iter().find(|(_, m)| m.nick() == Some(nick))?;
        Some((handle.stats(), member.dropped.load(Ordering::SeqCst)))
    }

    /// Stops listening, tells every connection the server is shutting down, closes them
    /// gracefully and waits until the registry is empty. Connections that have not
    /// drained within the grace period (their peer does not read) are aborted.
    pub async fn shutdown(self) -> Result<ShutdownReport, ChatError> {
        let registry = self.room.registry.clone();
        self.room.closing.store(true, Ordering::SeqCst);
        // An error means the listener had already stopped (its transport failed).
        let _ = self.listener.send(StopListening).await;
        let told = self.room.tell_everyone("* server shutting down");
        let closed = self.hub.send(CloseAll(Close::Graceful)).await?;
        let mut aborted = 0;
        if !emptied(&registry, self.room.config.shutdown_grace).await {
            aborted = registry.len();
            tracing::warn!(aborted, "connections did not drain in time; aborting them");
            self.hub.send(CloseAll(Close::Abort)).await?;
            if !emptied(&registry, Duration::from_secs(5)).await {
                return Err(ChatError::Stuck(registry.len()));
            }
        }
        Ok(ShutdownReport {
            told,
            closed,
            aborted,
            dropped: self.room.dropped.load(Ordering::SeqCst),
        })
    }
}

/// The listener's per-connection factory: starts the connection's session, and builds a
/// socket that hands it whole lines, registered with a fresh member record.
fn session_socket(room: &Arc<Room>, hub: &Addr<Hub>, peer: &Address) -> sockactor::SocketBuilder {
    let member = Arc::new(Member::default());
    let session = Session {
        room: room.clone(),
        member: member.clone(),
        peer: peer.clone(),
        hub: hub.clone().recipient(),
        socket: None,
        writer: None,
    }
    .start();
    let lines = LinesCodec::new_with_max_length(room.config.max_line);
    Socket::builder()
        .config(room.config.socket_config())
        .framed(lines, session.clone().recipient())
        .subscriber(session.recipient())
        .registry(&room.registry)
        .user_data(member)
}

/// Waits until `registry` is empty; `false` if it is not within `limit`. (The registry
/// has no notifications, so this looks every 10 ms.)
async fn emptied(registry: &Registry, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !registry.is_empty() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// `chat server`: serves until Ctrl-C or `seconds`, then shuts down gracefully.
async fn run_server(addr: SocketAddr, seconds: Option<u64>) -> Result<(), ChatError> {
    let server = ChatServer::start(addr, ChatConfig::default()).await?;
    let local = server.local_addr();
    println!("chat server listening on {local}");
    println!(
        "join with `nc {} {}` or `cargo run --release --example chat -- client --addr {local} \
         --nick NAME`",
        local.ip(),
        local.port()
    );
    // Either way the shutdown is graceful: Ctrl-C, or the end of `--seconds`.
    let limit = async {
        match seconds {
            Some(seconds) => {
                println!("shutting down gracefully in {seconds} s, or on Ctrl-C");
                tokio::time::sleep(Duration::from_secs(seconds)).await;
            }
            None => {
                println!("Ctrl-C shuts it down gracefully");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = limit => {}
        signal = tokio::signal::ctrl_c() => {
            if let Err(e) = signal {
                eprintln!("cannot listen for Ctrl-C ({e}); serving until killed");
                std::future::pending::<()>().await;
            }
            println!("Ctrl-C: shutting down gracefully");
        }
    }
    let report = server.shutdown().await?;
    println!("{report}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

/// What a client hears.
#[derive(Debug)]
pub enum Heard {
    /// A line from the server. Its permit holds its place in the socket's read window:
    /// while 64 lines are unconsumed the socket stops reading, and TCP slows the server
    /// down, rather than lines piling up in memory.
    Line {
        /// The line, without its line break.
        text: String,
        /// Drop it once the line is dealt with.
        permit: ReadPermit,
    },
    /// The connection is closed; why.
    Closed(String),
}

/// What the inbox forwards from the socket.
enum Inbound {
    Line(String, ReadPermit),
    Eof,
    Trouble(String),
    Closed(Option<TransportError>),
}

/// The client socket's frame and event subscriber: forwards both into a channel, so that
/// plain async code can await them.
struct Inbox(mpsc::UnboundedSender<Inbound>);

impl Actor for Inbox {
    type Context = Context<Self>;
}

impl Handler<Frame<String>> for Inbox {
    type Result = ();

    fn handle(&mut self, msg: Frame<String>, _: &mut Context<Self>) {
        // An error means the client was dropped: nobody is listening.
        let _ = self.0.send(Inbound::Line(msg.frame, msg.permit));
    }
}

impl Handler<SocketEvent> for Inbox {
    type Result = ();

    fn handle(&mut self, event: SocketEvent, ctx: &mut Context<Self>) {
        let inbound = match event.kind {
            SocketEventKind::Eof => Inbound::Eof,
            SocketEventKind::DecodeFailed(error) => Inbound::Trouble(error.to_string()),
            SocketEventKind::ReadFailed(error) => Inbound::Trouble(error.to_string()),
            SocketEventKind::WriteFailed { error, .. } => {
                Inbound::Trouble(format!("a line was not sent: {error}"))
            }
            SocketEventKind::Closed { cause } => {
                // The last event: stopping drops the sender, which ends the channel.
                ctx.stop();
                Inbound::Closed(cause)
            }
            _ => return,
        };
        let _ = self.0.send(inbound);
    }
}

/// A connection to a chat server: a sockactor socket framed with `LinesCodec`.
pub struct ChatClient {
    socket: Addr<Socket>,
    writer: Writer,
    inbox: mpsc::UnboundedReceiver<Inbound>,
    /// What went wrong before the close, if anything did.
    trouble: Option<String>,
    /// The server closed its side first.
    server_closed: bool,
}

impl ChatClient {
    /// Connects, without saying anything yet (the first line will be the nickname).
    pub async fn connect(addr: SocketAddr) -> Result<ChatClient, ChatError> {
        let (tx, inbox) = mpsc::unbounded_channel();
        let subscriber = Inbox(tx).start();
        let socket = Socket::builder()
            .framed(
                LinesCodec::new_with_max_length(CLIENT_MAX_LINE),
                subscriber.clone().recipient(),
            )
            .subscriber(subscriber.recipient())
            .connect(addr)
            .await
            .map_err(|source| ChatError::Connect { addr, source })?;
        let writer = socket.send(GetWriter).await?;
        Ok(ChatClient {
            socket,
            writer,
            inbox,
            trouble: None,
            server_closed: false,
        })
    }

    /// Connects and gives `nick` as the first line.
    pub async fn join(addr: SocketAddr, nick: &str) -> Result<ChatClient, ChatError> {
        let client = ChatClient::connect(addr).await?;
        client.say(nick)?;
        Ok(client)
    }

    /// Sends one line (fire and forget: a failure later closes the connection).
    pub fn say(&self, line: &str) -> Result<(), WriteError> {
        self.writer.write(line_bytes(line))
    }

    /// A handle that sends from any thread.
    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }

    /// The socket's address.
    pub fn socket(&self) -> Addr<Socket> {
        self.socket.clone()
    }

    /// The next line, or the end of the connection; `None` after that.
    pub async fn next(&mut self) -> Option<Heard> {
        loop {
            match self.inbox.recv().await? {
                Inbound::Line(text, permit) => return Some(Heard::Line { text, permit }),
                // The server closed its side: the conversation is over, close ours.
                Inbound::Eof => {
                    self.server_closed = true;
                    self.socket.do_send(Close::Graceful);
                }
                Inbound::Trouble(what) => self.trouble = Some(what),
                Inbound::Closed(cause) => {
                    let why = match (cause, self.trouble.take()) {
                        (Some(error), _) => format!("connection lost: {error}"),
                        (None, Some(trouble)) => trouble,
                        (None, None) if self.server_closed => "closed by the server".to_owned(),
                        (None, None) => "closed".to_owned(),
                    };
                    return Some(Heard::Closed(why));
                }
            }
        }
    }
}

impl Drop for ChatClient {
    /// Hangs up. (A socket that reads stays alive while it waits for data, even once
    /// nobody holds its address, so dropping the address alone would not close it.)
    fn drop(&mut self) {
        self.socket.do_send(Close::Graceful);
    }
}

/// `chat client`: prints what arrives; stdin lines are sent.
async fn run_client(addr: SocketAddr, nick: &str) -> Result<(), ChatError> {
    let mut client = ChatClient::join(addr, nick).await?;
    eprintln!("connected to {addr} as {nick}: type to chat, /who, /quit (or end input)");
    // Reading stdin blocks, so it gets a thread of its own; a `Writer` may write into the
    // socket's queue from any thread, and an `Addr` takes messages from any thread.
    let (writer, socket) = (client.writer(), client.socket());
    std::thread::spawn(move || forward_stdin(&writer, &socket));
    while let Some(heard) = client.next().await {
        match heard {
            Heard::Line { text, permit } => {
                println!("{text}");
                drop(permit);
            }
            Heard::Closed(why) => eprintln!("disconnected: {why}"),
        }
    }
    Ok(())
}

/// Sends each line of stdin; at its end, closes the connection gracefully.
fn forward_stdin(writer: &Writer, socket: &Addr<Socket>) {
    for line in std::io::stdin().lock().lines() {
        let line = match line {
            Ok(line) => line,
            Err(error) => {
                eprintln!("stdin: {error}");
                break;
            }
        };
        match writer.write(line_bytes(&line)) {
            Ok(()) => {}
            Err(WriteError::QueueFull { .. }) => eprintln!("the server is not reading: not sent"),
            Err(error) => {
                eprintln!("not sent: {error}");
                break;
            }
        }
    }
    socket.do_send(Close::Graceful);
}

// ---------------------------------------------------------------------------------------
// Demo
// ---------------------------------------------------------------------------------------

/// How long the demo waits for any one line before it gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// A scripted client of the demo: says lines, and checks that it hears exactly the
/// expected ones, in order.
struct Player {
    name: &'static str,
    client: ChatClient,
}

impl Player {
    /// Connects without a nickname.
    async fn connect(addr: SocketAddr, name: &'static str) -> Result<Player, ChatError> {
        println!("{name:>8} connects");
        let client = ChatClient::connect(addr).await?;
        Ok(Player { name, client })
    }

    /// Connects and gives its name as nickname.
    async fn join(addr: SocketAddr, name: &'static str) -> Result<Player, ChatError> {
        let player = Player::connect(addr, name).await?;
        player.say(name)?;
        Ok(player)
    }

    fn say(&self, line: &str) -> Result<(), ChatError> {
        println!("{:>8} > {}", self.name, shorten(line));
        Ok(self.client.say(line)?)
    }

    /// The next lines must be exactly `lines`.
    async fn hears(&mut self, lines: &[&str]) -> Result<(), ChatError> {
        for want in lines {
            let got = self.next_line().await?;
            println!("{:>8} < {}", self.name, shorten(&got));
            if got != *want {
                return Err(self.unexpected(want, &got));
            }
        }
        Ok(())
    }

    /// Like [`Player::hears`] with one line, without printing it.
    async fn hears_quietly(&mut self, want: &str) -> Result<(), ChatError> {
        let got = self.next_line().await?;
        if got != want {
            return Err(self.unexpected(want, &got));
        }
        Ok(())
    }

    async fn next_line(&mut self) -> Result<String, ChatError> {
        match self.next().await? {
            Heard::Line { text, .. } => Ok(text),
            Heard::Closed(why) => Err(ChatError::Demo(format!(
                "{} was disconnected ({why}) while it expected a line",
                self.name
            ))),
        }
    }

    /// The connection must end now, with no line before.
    async fn is_disconnected(&mut self) -> Result<(), ChatError> {
        match self.next().await? {
            Heard::Closed(why) => {
                println!("{:>8} is disconnected ({why})", self.name);
                Ok(())
            }
            Heard::Line { text, .. } => Err(ChatError::Demo(format!(
                "{} expected to be disconnected, but heard {text:?}",
                self.name
            ))),
        }
    }

    async fn next(&mut self) -> Result<Heard, ChatError> {
        let name = self.name;
        match timeout(STEP_TIMEOUT, self.client.next()).await {
            Ok(Some(heard)) => Ok(heard),
            Ok(None) => Err(ChatError::Demo(format!(
                "{name}'s connection already ended"
            ))),
            Err(_) => Err(ChatError::Demo(format!(
                "{name} heard nothing for {STEP_TIMEOUT:?}"
            ))),
        }
    }

    fn unexpected(&self, want: &str, got: &str) -> ChatError {
        ChatError::Demo(format!(
            "{} expected {:?} but heard {:?}",
            self.name,
            shorten(want),
            shorten(got)
        ))
    }
}

/// Long lines, cut for the transcript.
fn shorten(line: &str) -> String {
    match line.char_indices().nth(48) {
        Some((cut, _)) => format!("{}... ({} bytes)", &line[..cut], line.len()),
        None => line.to_owned(),
    }
}

/// `chat demo`: a server and scripted clients in this process on 127.0.0.1, checked
/// line by line; then a graceful shutdown.
pub async fn run_demo() -> Result<(), ChatError> {
    let server =
        ChatServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), ChatConfig::default()).await?;
    println!("chat demo: server listening on {}", server.local_addr());
    demo_slow_reader(&server).await?;
    let mut players = demo_conversation(&server).await?;

    println!("-- the server shuts down");
    let relayed = server.relayed();
    let rejected = server.rejected();
    let report = server.shutdown().await?;
    for player in &mut players {
        player.hears(&["* server shutting down"]).await?;
        player.is_disconnected().await?;
    }
    println!("{report}; {relayed} chat line(s) relayed, {rejected} connection(s) rejected");
    if report.aborted != 0 || report.told != players.len() {
        return Err(ChatError::Demo(format!(
            "expected {} connections told and none aborted: {report}",
            players.len()
        )));
    }
    println!("chat demo: OK");
    Ok(())
}

/// A peer that never reads, and a chatty member: broadcasts to the lurker pile up to its
/// queue's high watermark, then are dropped and counted.
async fn demo_slow_reader(server: &ChatServer) -> Result<(), ChatError> {
    let addr = server.local_addr();
    println!("-- a client that never reads");
    // A sockactor socket without a subscriber does not read at all: the perfect lurker.
    let lurker = Socket::builder()
        .connect(addr)
        .await
        .map_err(|source| ChatError::Connect { addr, source })?;
    lurker.send(Write::new(&b"lurker\n"[..])).await??;
    println!("{:>8} > lurker   (and never reads again)", "lurker");
    let mut flood = Player::join(addr, "flood").await?;
    flood
        .hears(&["* welcome, flood! online: flood, lurker"])
        .await?;

    // Rounds of 256 long lines, each ended by /who: its answer means the server has
    // handled (and broadcast to the lurker) every line before it.
    let line = "f".repeat(1000);
    let mut sent = 0usize;
    while server.dropped() == 0 {
        if sent >= 64 * 1024 {
            return Err(ChatError::Demo(format!(
                "{sent} lines of 1000 bytes, and the lurker's queue never filled"
            )));
        }
        for _ in 0..256 {
            flood.client.say(&line)?;
        }
        sent += 256;
        flood.client.say("/who")?;
        flood.hears_quietly("* online: flood, lurker").await?;
    }
    let Some((stats, dropped)) = server.member_stats("lurker") else {
        return Err(ChatError::Demo("the lurker is not online".into()));
    };
    println!(
        "   flood > {sent} lines of 1000 bytes; the kernel's buffers fill, then the lurker's \
         queue: {} bytes queued, {dropped} line(s) dropped and counted",
        stats.queued_bytes
    );
    let bound = ChatConfig::default().queue.high_watermark + line.len() + 64;
    if stats.queued_bytes as usize > bound {
        return Err(ChatError::Demo(format!(
            "the lurker's queue grew to {} bytes (bound {bound})",
            stats.queued_bytes
        )));
    }

    flood.say("/quit")?;
    flood.hears(&["* bye, flood"]).await?;
    flood.is_disconnected().await?;
    // Its socket ends with its last address, closing the connection unread: the server
    // sees a reset, the session ends, and the registry forgets the socket.
    drop(lurker);
    println!("{:>8} hangs up", "lurker");
    if !emptied(&server.registry(), STEP_TIMEOUT).await {
        return Err(ChatError::Demo(
            "the server still lists connections after both left".into(),
        ));
    }
    Ok(())
}

/// Three members chat; a fourth sends a line that is too long; one quits. Answers the
/// players still connected.
async fn demo_conversation(server: &ChatServer) -> Result<Vec<Player>, ChatError> {
    let addr = server.local_addr();
    println!("-- a conversation");
    let mut alice = Player::join(addr, "alice").await?;
    alice.hears(&["* welcome, alice! online: alice"]).await?;
    let mut bob = Player::join(addr, "bob").await?;
    bob.hears(&["* welcome, bob! online: alice, bob"]).await?;
    alice.hears(&["* bob joined"]).await?;

    let mut carol = Player::connect(addr, "carol").await?;
    carol.say("alice")?;
    carol
        .hears(&["* the nickname alice is taken; pick another"])
        .await?;
    carol.say("carol")?;
    carol
        .hears(&["* welcome, carol! online: alice, bob, carol"])
        .await?;
    alice.hears(&["* carol joined"]).await?;
    bob.hears(&["* carol joined"]).await?;

    alice.say("hi everyone")?;
    bob.hears(&["alice: hi everyone"]).await?;
    carol.hears(&["alice: hi everyone"]).await?;
    bob.say("/who")?;
    bob.hears(&["* online: alice, bob, carol"]).await?;
    carol.say("hello alice")?;
    alice.hears(&["carol: hello alice"]).await?;
    bob.hears(&["carol: hello alice"]).await?;

    let mut dave = Player::join(addr, "dave").await?;
    dave.hears(&["* welcome, dave! online: alice, bob, carol, dave"])
        .await?;
    for player in [&mut alice, &mut bob, &mut carol] {
        player.hears(&["* dave joined"]).await?;
    }
    dave.say(&"x".repeat(2000))?;
    dave.is_disconnected().await?;
    for player in [&mut alice, &mut bob, &mut carol] {
        player
            .hears(&["* dave left (sent a line longer than 1024 bytes)"])
            .await?;
    }

    bob.say("/quit")?;
    bob.hears(&["* bye, bob"]).await?;
    bob.is_disconnected().await?;
    alice.hears(&["* bob left"]).await?;
    carol.hears(&["* bob left"]).await?;
    Ok(vec![alice, carol])
}
