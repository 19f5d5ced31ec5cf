//! [`DatagramIo`]: the one I/O mechanism a [`DatagramSocket`] sees, as `StreamIo` is a
//! stream socket's. On the unreplaced system
//! table it borrows the socket and sends and receives in place, in batches where the OS
//! has them (`sendmmsg`/`recvmmsg`), waiting for readiness on the reactor itself; on any
//! other table it sends one `SendV` per datagram and one `RecvFrom` per receive, and the
//! transport's `Ready` notices wake it.

use std::fmt;
use std::io;
use std::sync::Arc;

use actix::{AsyncContext, Context};
use bytes::Bytes;

use super::{DatagramSocket, Token};
use crate::actors::functions::{flatten, SocketFunctions, SystemDatagram, MAX_BATCH};
use crate::actors::readiness::{call, WaitSlots, Woke};
use crate::actors::socket::now;
use crate::error::TransportError;
use crate::messages::functions::{CloseSocket, RecvFrom, SendV};
use crate::proto::{DatagramCore, Received as Got};
use crate::types::{Address, Handle, Readiness, Sent};

/// The core a datagram socket drives.
pub(super) type Core = DatagramCore<Token>;

/// A datagram socket's transport: see the [module docs](self).
pub(super) struct DatagramIo {
    functions: SocketFunctions,
    handle: Handle,
    /// The socket, when the table's data path is the system's and it is called in place.
    system: Option<Arc<SystemDatagram>>,
    waits: WaitSlots,
    /// The bytes sent of each datagram of the last batch (kept for its capacity).
    sent: Vec<usize>,
    /// Runs of one length to one destination go as one offloaded message.
    offload: bool,
    /// `CloseSocket` went to the transport.
    closed: bool,
}

impl fmt::Debug for DatagramIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramIo")
            .field("handle", &self.handle)
            .field("in_place", &self.system.is_some())
            .finish_non_exhaustive()
    }
}

impl DatagramIo {
    pub(super) fn new(
        functions: SocketFunctions,
        handle: Handle,
        system: Option<Arc<SystemDatagram>>,
        offload: bool,
    ) -> Self {
        DatagramIo {
            functions,
            handle,
            system,
            waits: WaitSlots::default(),
            sent: Vec::new(),
            offload,
            closed: false,
        }
    }

    /// Hands the transport the core's next datagrams, at most `budget` of them: in place
    /// a batch, answered now; by message one, answered when the transport answers.
    pub(super) fn transmit(
        &mut self,
        core: &mut Core,
        budget: usize,
        ctx: &mut Context<DatagramSocket>,
    ) {
        let Some(system) = &self.system else {
            let Some((payload, to)) = core.poll_datagram() else {
                return;
            };
            let sendv = SendV {
                handle: self.handle,
                segments: payload
                    .segments()
                    .iter()
                    .filter_map(|s| s.as_bytes().cloned())
                    .collect(),
                to: to.cloned(),
            };
            tracing::trace!(bytes = payload.len(), to = ?sendv.to, "sendv");
            // Queued with the transport now, ahead of anything sent after (a close).
            let answer = self.functions.sendv().send(sendv);
            core.handle_send_pending();
            ctx.spawn(call(answer, |result, act: &mut DatagramSocket, ctx| {
                act.core.handle_sent(flatten(result), now());
                act.drive(ctx);
            }));
            return;
        };
        self.sent.clear();
        let result = system.try_send_batch(
            core.poll_datagrams(budget.min(MAX_BATCH)),
            &mut self.sent,
            self.offload,
        );
        tracing::trace!(datagrams = self.sent.len(), ?result, "sendmmsg");
        let now = now();
        for &len in &self.sent {
            core.handle_sent(Ok(Sent::Accepted(len)), now);
        }
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                core.handle_sent(Ok(Sent::WouldBlock), now);
            }
            Err(e) => core.handle_sent(Err(e.into()), now),
        }
    }

    /// Receives datagrams of at most `max` bytes: in place up to the core's read budget,
    /// each handed to `deliver` now (which says what the core is to hear of it); by
    /// message one, given to the socket when the transport answers.
    pub(super) fn read(
        &mut self,
        core: &mut Core,
        max: usize,
        ctx: &mut Context<DatagramSocket>,
        mut deliver: impl FnMut(&mut Core, Bytes, Option<Address>, bool) -> Got,
    ) {
        let Some(system) = &self.system else {
            let recv = RecvFrom {
                handle: self.handle,
                max_len: max,
            };
            let answer = self.functions.recvfrom().send(recv);
            core.handle_read_pending();
            ctx.spawn(call(
                answer,
                move |result, act: &mut DatagramSocket, ctx| {
                    act.received(flatten(result), max);
                    act.drive(ctx);
                },
            ));
            return;
        };
        let count = core.read_budget();
        let result = system.try_recv_batch(max, count, |bytes, from, truncated| {
            let got = deliver(core, Bytes::copy_from_slice(bytes), Some(from), truncated);
            core.handle_received(got);
        });
        match result {
            // Emptied: wait for the next datagram rather than call to hear would-block.
            Ok((_, true)) => core.handle_received(Got::WouldBlock),
            Ok((_, false)) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                core.handle_received(Got::WouldBlock)
            }
            Err(e) => core.handle_received(Got::Failed(TransportError::from(e))),
        }
    }

    /// Waits for `readiness` on the reactor, then wakes the socket; a transport reached
    /// by message sends its own `Ready` notice: nothing to do.
    pub(super) fn wait(&mut self, readiness: Readiness, ctx: &mut Context<DatagramSocket>) {
        if let Some(system) = &self.system {
            self.waits.arm(
                system,
                readiness,
                ctx,
                |act, readiness, woke, ctx| match woke {
                    Woke::Ready => act.on_ready(readiness, ctx),
                    Woke::Orphaned => act.on_orphaned(readiness, ctx),
                },
            );
        }
    }

    /// The wait for `readiness` ended.
    pub(super) fn waited(&mut self, readiness: Readiness) {
        self.waits.ended(readiness);
    }

    /// Closes the handle (the socket closes now, on the system transport) and stops
    /// waiting.
    pub(super) fn close(&mut self, ctx: &mut Context<DatagramSocket>) {
        self.waits.cancel(ctx);
        self.abandon();
    }

    /// Lets go of the socket and has the transport close the handle, once (also when
    /// the actor is dropped with its arbiter, without a context).
    pub(super) fn abandon(&mut self) {
        self.system = None;
        if !std::mem::replace(&mut self.closed, true) {
            self.functions.close().do_send(CloseSocket {
                handle: self.handle,
            });
        }
    }
}
