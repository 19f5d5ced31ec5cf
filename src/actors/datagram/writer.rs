//! [`DatagramWriter`]: a cloneable, `Send` handle that sends datagrams through a
//! [`DatagramSocket`] from any task or thread, refused at once (payload handed back)
//! when the socket's queue is full, with a wait for room: a fire-and-forget producer's
//! datagrams never pile up in the socket's mailbox.

use std::sync::{Arc, Mutex, PoisonError};

use actix::{Addr, Message, Recipient};
use tokio::sync::Notify;

use super::DatagramSocket;
use crate::batch::IoBatch;
use crate::error::DatagramError;
use crate::shared::{wait_for_room, WritabilityChanged};
use crate::types::{Address, SocketId};

/// Ask a datagram socket for a [`DatagramWriter`]. Handled by [`DatagramSocket`].
#[derive(Clone, Copy, Debug, Default)]
pub struct GetDatagramWriter;

impl Message for GetDatagramWriter {
    type Result = DatagramWriter;
}

/// A datagram a [`DatagramWriter`] admitted: queued by the socket as fire-and-forget.
#[derive(Debug)]
pub(crate) struct SendAdmitted {
    pub(crate) payload: IoBatch,
    pub(crate) to: Option<Address>,
}

impl Message for SendAdmitted {
    type Result = ();
}

#[derive(Debug, Default)]
struct Counts {
    datagrams: usize,
    bytes: usize,
    /// The socket no longer takes datagrams: why.
    closed: Option<DatagramError>,
    /// The queue was announced full (`writable: false`), and has not drained to half
    /// since.
    full: bool,
    /// Who hears of the changes.
    subscribers: Vec<Recipient<WritabilityChanged>>,
    /// Datagrams the writers refused (counted in the socket's `send_failed`).
    refused: u64,
}

impl Counts {
    /// Tells every subscriber (under the gate's lock: the notices keep their order).
    fn announce(&mut self, socket: SocketId, writable: bool) {
        self.full = !writable;
        self.subscribers.retain(|s| s.connected());
        for s in &self.subscribers {
            s.do_send(WritabilityChanged { socket, writable });
        }
    }
}

/// The admission gate of a datagram socket's writers: datagrams admitted and not yet
/// answered (queued, in the mailbox, or out with the transport), held to the socket's
/// queue limits. Its room is announced as [`WritabilityChanged`]: `false` when the queue
/// is full or a datagram was refused, `true` when what was admitted drained to half the
/// limits.
#[derive(Debug)]
pub(crate) struct DatagramGate {
    socket: SocketId,
    counts: Mutex<Counts>,
    room: Notify,
    max: usize,
    max_bytes: usize,
}

impl DatagramGate {
    pub(crate) fn new(socket: SocketId, max: usize, max_bytes: usize) -> Self {
        DatagramGate {
            socket,
            counts: Mutex::new(Counts::default()),
            room: Notify::new(),
            max: max.max(1),
            max_bytes,
        }
    }

    /// `subscriber` hears of every change of the writers' room from now on.
    pub(crate) fn subscribe(&self, subscriber: Recipient<WritabilityChanged>) {
        self.counts().subscribers.push(subscriber);
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a datagram of `len` bytes, or says why not (a `QueueFull` with an empty
    /// payload, for the caller to fill). A `QueueFull` is counted as a refused datagram
    /// unless the caller `waits` for room and tries again (it is no failure then).
    fn admit(&self, len: usize, waits: bool) -> Result<(), DatagramError> {
        let mut c = self.counts();
        if let Some(closed) = &c.closed {
            let refusal = copy_of(closed);
            c.refused += 1;
            return Err(refusal);
        }
        if !self.fits(&c, len) {
            if !waits {
                c.refused += 1;
            }
            if !c.full {
                c.announce(self.socket, false);
            }
            return Err(DatagramError::QueueFull {
                queued: c.datagrams,
                queued_bytes: c.bytes,
                payload: IoBatch::new(),
            });
        }
        c.datagrams += 1;
        c.bytes += len;
        // Full now: the next datagram would be refused.
        if !c.full && (c.datagrams >= self.max || c.bytes >= self.max_bytes) {
            c.announce(self.socket, false);
        }
        Ok(())
    }

    /// Whether a datagram of `len` bytes fits beside those admitted. As in the socket's
    /// own queue, a datagram larger than the byte limit is taken when nothing else is.
    fn fits(&self, c: &Counts, len: usize) -> bool {
        let over_bytes = c.datagrams > 0 && c.bytes.saturating_add(len) > self.max_bytes;
        c.datagrams < self.max && !over_bytes
    }

    /// An admitted datagram was answered (sent or failed): its room is free again.
    pub(crate) fn release(&self, len: usize) {
        self.release_many(1, len);
    }

    /// Admitted datagrams were answered: `datagrams` of them, `bytes` in all. Their room
    /// is free again, and writers waiting for it wake once.
    pub(crate) fn release_many(&self, datagrams: usize, bytes: usize) {
        if datagrams == 0 {
            return;
        }
        let mut c = self.counts();
        c.datagrams = c.datagrams.saturating_sub(datagrams);
        c.bytes = c.bytes.saturating_sub(bytes);
        if c.full
            && c.closed.is_none()
            && c.datagrams <= self.max / 2
            && c.bytes <= self.max_bytes / 2
        {
            c.announce(self.socket, true);
        }
        drop(c);
        self.room.notify_waiters();
    }

    /// Datagrams the writers refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.counts().refused
    }

    /// The socket is gone: nothing it held counts as admitted any more.
    pub(crate) fn release_all(&self) {
        let mut c = self.counts();
        c.datagrams = 0;
        c.bytes = 0;
        drop(c);
        self.room.notify_waiters();
    }

    /// The socket no longer takes datagrams: writers are refused with `why` from now on.
    pub(crate) fn close(&self, why: DatagramError) {
        let mut c = self.counts();
        if c.closed.is_none() {
            c.closed = Some(why);
        }
        drop(c);
        self.room.notify_waiters();
    }

    fn admitted(&self) -> usize {
        self.counts().datagrams
    }

    async fn room(&self, len: usize) -> Result<(), DatagramError> {
        wait_for_room(&self.room, || {
            let c = self.counts();
            if let Some(closed) = &c.closed {
                return Some(Err(copy_of(closed)));
            }
            self.fits(&c, len).then_some(Ok(()))
        })
        .await
    }
}

/// A closing reason, again (the gate keeps its own).
fn copy_of(error: &DatagramError) -> DatagramError {
    match error {
        DatagramError::Aborted => DatagramError::Aborted,
        DatagramError::Transport(e) => DatagramError::Transport(e.clone()),
        _ => DatagramError::Closed,
    }
}

/// A cloneable, `Send` handle that sends datagrams through a [`DatagramSocket`] from any
/// task or thread. Get one with [`GetDatagramWriter`].
///
/// Each datagram is admitted against the socket's queue limits
/// ([`DatagramConfig::max_queued`](crate::DatagramConfig::max_queued) and
/// `max_queued_bytes`) before it is sent to the socket, counting every datagram a writer
/// admitted and the socket has not answered yet, wherever it is. So a producer that only
/// fires and forgets cannot fill the socket's mailbox: past the limits,
/// [`send_to`](Self::send_to) returns [`DatagramError::QueueFull`] with the payload, at
/// once, and [`writable`](Self::writable) waits for room. A datagram that fails later
/// (the transport refused it, the socket closed) is reported to the socket's subscriber
/// as [`DatagramEventKind::SendFailed`](crate::messages::DatagramEventKind::SendFailed)
/// (with no subscriber, as a `tracing` warning), so no refusal is silent. Datagrams keep their order with everything else sent to the
/// socket.
///
/// ```
/// # async fn demo(
/// #     socket: actix::Addr<sockactor::DatagramSocket>,
/// #     peer: std::net::SocketAddr,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// use sockactor::messages::GetDatagramWriter;
/// let writer = socket.send(GetDatagramWriter).await?;
/// for i in 0..10_000u32 {
///     // Waits for room instead of piling datagrams up.
///     writer.send_when_ready(i.to_be_bytes().to_vec(), Some(peer.into())).await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct DatagramWriter {
    socket: Addr<DatagramSocket>,
    gate: Arc<DatagramGate>,
    id: SocketId,
}

impl DatagramWriter {
    pub(crate) fn new(socket: Addr<DatagramSocket>, gate: Arc<DatagramGate>, id: SocketId) -> Self {
        DatagramWriter { socket, gate, id }
    }

    /// The socket sent through.
    pub fn socket(&self) -> SocketId {
        self.id
    }

    /// Sends a datagram to the connected peer: see [`send_to`](Self::send_to).
    pub fn send(&self, payload: impl Into<IoBatch>) -> Result<(), DatagramError> {
        self.send_inner(payload.into(), None, false)
    }

    /// Sends a datagram to `to` (or, with `None`, to the connected peer), fire-and-forget.
    /// Refused at once with [`DatagramError::QueueFull`] (payload handed back) while the
    /// socket's queue limits are reached, or with [`DatagramError::Closed`] (or why it
    /// closed) once the socket no longer takes datagrams.
    pub fn send_to(
        &self,
        payload: impl Into<IoBatch>,
        to: Option<Address>,
    ) -> Result<(), DatagramError> {
        self.send_inner(payload.into(), to, false)
    }

    /// Admits and sends; `waits`: the caller waits for room after a `QueueFull` and
    /// tries again (the refusal is not counted as a failed datagram).
    fn send_inner(
        &self,
        payload: IoBatch,
        to: Option<Address>,
        waits: bool,
    ) -> Result<(), DatagramError> {
        let len = payload.len();
        match self.gate.admit(len, waits) {
            Ok(()) => {}
            Err(DatagramError::QueueFull {
                queued,
                queued_bytes,
                ..
            }) => {
                return Err(DatagramError::QueueFull {
                    queued,
                    queued_bytes,
                    payload,
                })
            }
            Err(other) => return Err(other),
        }
        if self.socket.try_send(SendAdmitted { payload, to }).is_err() {
            // The actor is gone (its runtime stopped): nothing of it was sent.
            self.gate.release(len);
            return Err(DatagramError::Closed);
        }
        Ok(())
    }

    /// Waits until a datagram of `len` bytes would be admitted, or fails with why the
    /// socket no longer takes datagrams.
    pub async fn writable(&self, len: usize) -> Result<(), DatagramError> {
        self.gate.room(len).await
    }

    /// Waits for room, then sends (fire-and-forget, like [`send_to`](Self::send_to)).
    /// Fails only when the socket no longer takes datagrams.
    pub async fn send_when_ready(
        &self,
        payload: impl Into<IoBatch>,
        to: Option<Address>,
    ) -> Result<(), DatagramError> {
        let mut payload = payload.into();
        loop {
            match self.send_inner(payload, to.clone(), true) {
                Err(DatagramError::QueueFull { payload: back, .. }) => {
                    payload = back;
                    if self.gate.room(payload.len()).await.is_err() {
                        // The socket shut while this waited: its refusal, counted as
                        // a failed send, is this datagram's answer.
                        return self.send_inner(payload, to, false);
                    }
                }
                other => return other,
            }
        }
    }

    /// Datagrams admitted by this socket's writers and not answered yet.
    pub fn queued(&self) -> usize {
        self.gate.admitted()
    }
}
