//! The transport's answers to a [`Socket`] (see `StreamIo`): a transmit, a read or a
//! shutdown answered by message, readiness, a byte layer's own call answered, and the
//! socket's own wait noticing its last address gone. Each feeds the core and drives.

use actix::Context;

use super::io::Lower;
use super::{now, Socket};
use crate::actors::inbound::Got;
use crate::error::TransportError;
use crate::types::Readiness;

impl Socket {
    /// A transport reached by message answered a transmit.
    pub(crate) fn on_sent(
        &mut self,
        result: Result<crate::types::Sent, TransportError>,
        ctx: &mut Context<Self>,
    ) {
        self.attach_reply();
        self.core.handle_sent(result, now());
        self.drive(ctx);
    }

    /// A transport reached by message answered a read.
    pub(crate) fn on_read(&mut self, got: Result<Got, TransportError>, ctx: &mut Context<Self>) {
        self.attach_reply();
        self.absorb(got, now());
        self.drive(ctx);
    }

    /// A transport reached by message answered a shutdown of the sending half.
    pub(crate) fn on_shutdown(
        &mut self,
        result: Result<(), TransportError>,
        ctx: &mut Context<Self>,
    ) {
        self.attach_reply();
        if let Err(error) = &result {
            tracing::debug!(parent: self.span(), %error, "shutdown of the sending half failed");
        }
        self.core.handle_shutdown(result, now());
        self.drive(ctx);
    }

    /// The transport is ready again (`waited`: the socket's own wait ended).
    pub(crate) fn on_ready(&mut self, readiness: Readiness, waited: bool, ctx: &mut Context<Self>) {
        self.attach_reply();
        if waited {
            self.io.waited(readiness);
        }
        if self.io.ready(readiness, &mut self.core, ctx) {
            self.core.handle_ready(readiness);
        }
        self.drive(ctx);
    }

    /// A transport reached by message answered a byte layer's own call.
    pub(crate) fn on_lower(&mut self, lower: Lower, ctx: &mut Context<Self>) {
        self.attach_reply();
        if let Some(got) = self.io.lower(lower, &mut self.core, ctx) {
            self.absorb(got, now());
        }
        self.drive(ctx);
    }

    /// Every address of the socket was dropped while it waited on the reactor. actix
    /// keeps an actor with spawned futures alive, so the wait itself notices, and the
    /// socket closes gracefully: reading stops, queued writes drain (their wait is armed
    /// again), then the handle closes and, with nothing left under way, the actor stops.
    pub(crate) fn on_orphaned(&mut self, readiness: Readiness, ctx: &mut Context<Self>) {
        self.io.waited(readiness);
        self.close_orphaned();
        if self.io.ready(readiness, &mut self.core, ctx) {
            self.core.rearm(readiness);
        }
        self.drive(ctx);
    }

    /// No address is left (noticed by a wait or a transport call): reading stops and
    /// the socket closes gracefully.
    fn close_orphaned(&mut self) {
        self.attach_reply();
        tracing::debug!(parent: self.span(), "every address dropped; closing gracefully");
        self.inbound.drop_buffers();
        self.core.handle_orphaned(now());
    }
}

impl crate::actors::readiness::Waiter for Socket {
    /// Whether the socket still takes writes.
    fn is_open(&self) -> bool {
        self.core.is_open()
    }
}

impl crate::actors::readiness::Orphanable for Socket {
    fn orphaned(&mut self, ctx: &mut Context<Self>) {
        self.close_orphaned();
        self.drive(ctx);
    }
}
