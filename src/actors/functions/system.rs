//! [`SystemFunctions`]: real non-blocking sockets on the actix-rt (tokio) reactor.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::sync::Arc;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, Recipient,
    ResponseActFuture, SpawnHandle, WrapFuture,
};
use bytes::BytesMut;
use tokio::net::{TcpSocket, TcpStream};

use crate::error::TransportError;
use crate::messages::functions::{
    Address, CloseSocket, Connect, Family, Handle, OpenSocket, Readiness, Ready, Received,
    RecvFrom, SendV, Sent, SocketKind,
};

/// The built-in transport: non-blocking TCP through tokio.
///
/// Opening, connecting and closing always go through this actor. When a socket's `sendv`
/// and `recvfrom` are still the system ones, the socket borrows the stream and calls
/// `writev`/`read` in place (same semantics, no message per call); once either is
/// replaced, that operation goes through messages to whatever replaced it.
///
/// UDP and Unix domain sockets answer [`TransportError::Unsupported`] for now; the
/// messages already carry what they need (family, kind, destination address).
///
/// Would-block answers arm a readiness wait on the reactor; when the handle becomes
/// ready the socket's `events` recipient gets one [`Ready`]. New TCP connections have
/// `TCP_NODELAY` set: sockets coalesce their writes themselves.
#[derive(Debug, Default)]
pub struct SystemFunctions {
    next: u64,
    handles: HashMap<Handle, Entry>,
}

#[derive(Debug)]
struct Entry {
    state: State,
    /// `None` once the socket does its own readiness waits (both `sendv` and `recvfrom`
    /// in place): nothing is owed to it, and idle sockets are smaller.
    events: Option<Recipient<Ready>>,
    write_wait: Option<SpawnHandle>,
    read_wait: Option<SpawnHandle>,
}

#[derive(Debug)]
enum State {
    Unconnected(TcpSocket),
    Connecting,
    Stream(Arc<TcpStream>),
}

/// Hand an already connected TCP stream (from a listener's `accept`) to the system
/// transport. Answered with its handle. Handled by [`SystemFunctions`].
#[derive(Debug)]
pub struct Adopt {
    /// The stream.
    pub stream: TcpStream,
    /// Where [`Ready`] notices go.
    pub events: Recipient<Ready>,
}

impl Message for Adopt {
    type Result = Result<Handle, TransportError>;
}

/// Lend a socket actor the stream behind a handle, so it can call `writev`/`read` in
/// place instead of sending [`SendV`]/[`RecvFrom`] (crate-internal: only for handles whose
/// `sendv`/`recvfrom` are still the system ones).
#[derive(Debug)]
pub(crate) struct ShareStream {
    pub(crate) handle: Handle,
    /// The socket calls both `sendv` and `recvfrom` in place: it waits for readiness
    /// itself, so the transport can let go of its `Ready` recipient.
    pub(crate) all_in_place: bool,
}

impl Message for ShareStream {
    type Result = Option<Arc<TcpStream>>;
}

impl Handler<ShareStream> for SystemFunctions {
    type Result = Option<Arc<TcpStream>>;

    fn handle(&mut self, msg: ShareStream, _: &mut Context<Self>) -> Self::Result {
        let stream = self.stream(msg.handle).ok()?;
        if msg.all_in_place {
            if let Some(entry) = self.handles.get_mut(&msg.handle) {
                entry.events = None;
            }
        }
        Some(stream)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Addr<SystemFunctions>>> = const { RefCell::new(None) };
}

impl SystemFunctions {
    /// A new system transport (start it with [`Actor::start`]).
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
                    let addr = SystemFunctions::new().start();
                    *slot = Some(addr.clone());
                    addr
                }
            }
        })
    }

    fn insert(&mut self, state: State, events: Recipient<Ready>) -> Handle {
        self.next += 1;
        let handle = Handle(self.next);
        self.handles.insert(
            handle,
            Entry {
                state,
                events: Some(events),
                write_wait: None,
                read_wait: None,
            },
        );
        handle
    }

    fn stream(&self, handle: Handle) -> Result<Arc<TcpStream>, TransportError> {
        match self.handles.get(&handle) {
            Some(Entry {
                state: State::Stream(s),
                ..
            }) => Ok(s.clone()),
            Some(_) => Err(io::Error::from(io::ErrorKind::NotConnected).into()),
            None => Err(TransportError::UnknownHandle(handle)),
        }
    }

    /// Sends one `Ready` when `stream` becomes ready for `readiness`, unless a wait is
    /// already armed.
    fn arm(
        &mut self,
        handle: Handle,
        stream: Arc<TcpStream>,
        readiness: Readiness,
        ctx: &mut Context<Self>,
    ) {
        let armed = match self.handles.get(&handle) {
            Some(e) => match readiness {
                Readiness::Writable => e.write_wait.is_some(),
                Readiness::Readable => e.read_wait.is_some(),
            },
            None => return,
        };
        if armed {
            return;
        }
        let wait = async move {
            // An error here surfaces on the retry, so it is not reported twice.
            let _ = match readiness {
                Readiness::Writable => stream.writable().await,
                Readiness::Readable => stream.readable().await,
            };
        };
        let spawned = ctx.spawn(wait.into_actor(self).map(move |_, act, _| {
            if let Some(e) = act.handles.get_mut(&handle) {
                match readiness {
                    Readiness::Writable => e.write_wait = None,
                    Readiness::Readable => e.read_wait = None,
                }
                if let Some(events) = &e.events {
                    events.do_send(Ready { handle, readiness });
                }
            }
        }));
        if let Some(e) = self.handles.get_mut(&handle) {
            match readiness {
                Readiness::Writable => e.write_wait = Some(spawned),
                Readiness::Readable => e.read_wait = Some(spawned),
            }
        }
    }
}

impl Actor for SystemFunctions {
    type Context = Context<Self>;
}

impl Handler<OpenSocket> for SystemFunctions {
    type Result = Result<Handle, TransportError>;

    fn handle(&mut self, msg: OpenSocket, _: &mut Context<Self>) -> Self::Result {
        let socket = match (msg.family, msg.kind) {
            (Family::Ipv4, SocketKind::Stream) => TcpSocket::new_v4()?,
            (Family::Ipv6, SocketKind::Stream) => TcpSocket::new_v6()?,
            (_, SocketKind::Datagram) => {
                return Err(TransportError::Unsupported("datagram sockets"))
            }
            (Family::Unix, _) => return Err(TransportError::Unsupported("unix sockets")),
        };
        Ok(self.insert(State::Unconnected(socket), msg.events))
    }
}

impl Handler<Connect> for SystemFunctions {
    type Result = ResponseActFuture<Self, Result<(), TransportError>>;

    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) -> Self::Result {
        let handle = msg.handle;
        let prepared = match (self.handles.get_mut(&handle), msg.addr) {
            (None, _) => Err(TransportError::UnknownHandle(handle)),
            (Some(entry), Address::Inet(addr)) => {
                match std::mem::replace(&mut entry.state, State::Connecting) {
                    State::Unconnected(socket) => Ok((socket, addr)),
                    other => {
                        entry.state = other;
                        Err(io::Error::from(io::ErrorKind::AlreadyExists).into())
                    }
                }
            }
            (Some(_), Address::Unix(_)) => Err(TransportError::Unsupported("unix sockets")),
        };
        let (socket, addr) = match prepared {
            Ok(p) => p,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        Box::pin(
            async move { socket.connect(addr).await }
                .into_actor(self)
                .map(move |res, act, _| {
                    let stream = res?;
                    stream.set_nodelay(true)?;
                    match act.handles.get_mut(&handle) {
                        Some(entry) => {
                            entry.state = State::Stream(Arc::new(stream));
                            Ok(())
                        }
                        // Closed while connecting: the stream drops here.
                        None => Err(TransportError::UnknownHandle(handle)),
                    }
                }),
        )
    }
}

impl Handler<Adopt> for SystemFunctions {
    type Result = Result<Handle, TransportError>;

    fn handle(&mut self, msg: Adopt, _: &mut Context<Self>) -> Self::Result {
        msg.stream.set_nodelay(true)?;
        Ok(self.insert(State::Stream(Arc::new(msg.stream)), msg.events))
    }
}

impl Handler<SendV> for SystemFunctions {
    type Result = Result<Sent, TransportError>;

    fn handle(&mut self, msg: SendV, ctx: &mut Context<Self>) -> Self::Result {
        if msg.to.is_some() {
            return Err(TransportError::Unsupported("sendto on a stream socket"));
        }
        let stream = self.stream(msg.handle)?;
        let slices: Vec<IoSlice<'_>> = msg.segments.iter().map(|b| IoSlice::new(b)).collect();
        match stream.try_write_vectored(&slices) {
            Ok(0) if !msg.is_empty() => Err(io::Error::from(io::ErrorKind::WriteZero).into()),
            Ok(n) => Ok(Sent::Accepted(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.arm(msg.handle, stream, Readiness::Writable, ctx);
                Ok(Sent::WouldBlock)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Handler<RecvFrom> for SystemFunctions {
    type Result = Result<Received, TransportError>;

    fn handle(&mut self, msg: RecvFrom, ctx: &mut Context<Self>) -> Self::Result {
        let stream = self.stream(msg.handle)?;
        let mut buf = BytesMut::with_capacity(msg.max_len.max(1));
        match stream.try_read_buf(&mut buf) {
            Ok(0) => Ok(Received::Eof),
            Ok(_) => Ok(Received::Data {
                bytes: buf.freeze(),
                from: None,
            }),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.arm(msg.handle, stream, Readiness::Readable, ctx);
                Ok(Received::WouldBlock)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Handler<CloseSocket> for SystemFunctions {
    type Result = Result<(), TransportError>;

    fn handle(&mut self, msg: CloseSocket, ctx: &mut Context<Self>) -> Self::Result {
        let entry = self
            .handles
            .remove(&msg.handle)
            .ok_or(TransportError::UnknownHandle(msg.handle))?;
        for wait in [entry.write_wait, entry.read_wait].into_iter().flatten() {
            ctx.cancel_future(wait);
        }
        // Dropping the last Arc closes the descriptor.
        Ok(())
    }
}
