//! The [`Socket`]'s message handlers: each hands its input to the core (through the
//! driver in the parent module) and drives it.

use actix::{AsyncContext, Context, Handler};

use super::writer::WriteEach;
use super::{now, report_failure, GetWriter, Socket, Writer};
use crate::actors::reply::{Reply, ReportFailures, WriteResponse};
use crate::error::WriteError;
use crate::messages::flush::Flush;
use crate::messages::functions::Ready;
use crate::messages::interest::AssignUserData;
use crate::messages::read::{PauseReading, ResumeReading};
use crate::messages::socket::{
    CancelWrite, Close, GetInfo, GetStats, SocketInfo, SubscribeWritability, Write,
};
use crate::proto::Written;
use crate::shared::WindowReopened;

impl Handler<Write> for Socket {
    type Result = WriteResponse<Result<Written, WriteError>>;

    fn handle(&mut self, msg: Write, ctx: &mut Context<Self>) -> Self::Result {
        self.attach_reply();
        // The clock is read only for a write someone will hear about: a writer's
        // awaited write here; a `send`'s when its response parks the reply channel
        // (`attach_reply` stamps it). A `do_send` or a writer's fire-and-forget write
        // never reads it (a vDSO call per write on the hot path).
        let now = msg.reply.is_some().then(now);
        let (tag, len) = (msg.tag, msg.batch.len());
        // A writer's write brings its own answer channel (or needs none).
        if msg.admitted {
            self.admitted_write(msg.batch, tag, Reply::own(tag, msg.reply), now);
            self.drive_after_write(ctx);
            return WriteResponse::detached();
        }
        let token = Reply::pending(tag);
        let queued = if self.core.has_waiting() {
            // Writes already waiting for room go first: this one waits behind them, or
            // (not willing to wait) is refused.
            if msg.wait_when_full {
                let (queued, high_watermark) =
                    (self.shared.admitted(), self.shared.high_watermark());
                let full = move |payload| WriteError::QueueFull {
                    queued,
                    high_watermark,
                    payload,
                };
                self.core.handle_wait(msg.batch, tag, token, false, full)
            } else {
                self.core.handle_refused();
                let error = self.full(msg.batch);
                return self.refuse(tag, error);
            }
        } else {
            match self.shared.admit(len) {
                Ok(()) => self.core.handle_write(msg.batch, tag, token, now),
                Err(WriteError::QueueFull {
                    queued,
                    high_watermark,
                    ..
                }) => {
                    let full = |payload| WriteError::QueueFull {
                        queued,
                        high_watermark,
                        payload,
                    };
                    if msg.wait_when_full {
                        self.core.handle_wait(msg.batch, tag, token, false, full)
                    } else {
                        tracing::debug!(parent: self.span(), queued, "write refused: queue full");
                        self.core.handle_refused();
                        return self.refuse(tag, full(msg.batch));
                    }
                }
                Err(other) => {
                    self.core.handle_refused();
                    return self.refuse(tag, other);
                }
            }
        };
        if let Err(refused) = queued {
            return self.refuse(tag, refused.error);
        }
        self.drive_after_write(ctx);
        self.replies.later(tag)
    }
}

impl Handler<WriteEach> for Socket {
    type Result = ();

    fn handle(&mut self, msg: WriteEach, ctx: &mut Context<Self>) {
        self.attach_reply();
        for batch in msg.0 {
            self.admitted_write(batch, None, Reply::own(None, None), None);
        }
        self.drive_after_write(ctx);
    }
}

impl Socket {
    /// A write refused in its handler: counted in the published counters now (the
    /// socket may not act again for a long time), answered now.
    fn refuse(
        &mut self,
        tag: Option<u64>,
        error: WriteError,
    ) -> WriteResponse<Result<Written, WriteError>> {
        self.publish_stats();
        self.replies.now(tag, Err(error))
    }

    /// Drives the core after writes were queued, unless they changed nothing it would
    /// act on: a burst's writes behind the first only join the queue while the flush
    /// asked for (or a transmit, or a wait for room) is under way.
    fn drive_after_write(&mut self, ctx: &mut Context<Self>) {
        if self.core.wants_drive() || self.core.waiting_stalled() {
            self.drive(ctx);
        } else {
            self.publish_stats();
        }
    }

    /// Queues a write a `Writer` admitted (behind any writes waiting for room); a
    /// refusal after all (the socket shut since) gives its bytes back to the gate and
    /// its answer to its token.
    fn admitted_write(
        &mut self,
        batch: crate::batch::IoBatch,
        tag: Option<u64>,
        token: Reply<Result<Written, WriteError>>,
        now: Option<std::time::Instant>,
    ) {
        let len = batch.len();
        let queued = if self.core.has_waiting() {
            let (queued, high_watermark) = (self.shared.admitted(), self.shared.high_watermark());
            let full = move |payload| WriteError::QueueFull {
                queued,
                high_watermark,
                payload,
            };
            self.core.handle_wait(batch, tag, token, true, full)
        } else {
            self.core.handle_write(batch, tag, token, now)
        };
        if let Err(refused) = queued {
            self.shared.release(len);
            let (inbound, shared) = (&self.inbound, &self.shared);
            self.replies
                .answer(refused.token, Err(refused.error), |tag, error| {
                    report_failure(inbound, shared, tag, error);
                });
        }
    }
}

impl Handler<ReportFailures> for Socket {
    type Result = ();

    fn handle(&mut self, _: ReportFailures, _: &mut Context<Self>) {
        let (inbound, shared) = (&self.inbound, &self.shared);
        self.replies.report_parked(|tag, error| {
            report_failure(inbound, shared, tag, error);
        });
    }
}

impl Handler<Flush> for Socket {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.attach_reply();
        self.core.handle_flush();
        self.drive(ctx);
    }
}

impl Handler<WindowReopened> for Socket {
    type Result = ();

    fn handle(&mut self, _: WindowReopened, ctx: &mut Context<Self>) {
        self.attach_reply();
        // Frames already read go out as the window makes room, even while reading is
        // paused (`PauseReading` stops reading, not delivering).
        if !self.core.reading_done() && self.window_open() {
            self.deliver_frames(false, now());
        }
        self.drive(ctx);
    }
}

impl Handler<Ready> for Socket {
    type Result = ();

    fn handle(&mut self, msg: Ready, ctx: &mut Context<Self>) {
        self.attach_reply();
        if msg.handle == self.io.handle() {
            self.on_ready(msg.readiness, false, ctx);
        }
    }
}

impl Handler<CancelWrite> for Socket {
    type Result = Option<crate::batch::IoBatch>;

    fn handle(&mut self, msg: CancelWrite, ctx: &mut Context<Self>) -> Self::Result {
        self.attach_reply();
        let batch = self.core.handle_cancel(msg.tag, now());
        self.drive(ctx);
        batch
    }
}

impl Handler<Close> for Socket {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Context<Self>) {
        self.attach_reply();
        self.core.handle_close(msg == Close::Abort, now());
        self.drive(ctx);
    }
}

impl Handler<GetStats> for Socket {
    type Result = actix::MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let (deliveries, bytes) = self.shared.unacked();
        self.core.handle_unacked(deliveries, bytes);
        actix::MessageResult(self.stats())
    }
}

impl Handler<SubscribeWritability> for Socket {
    type Result = ();

    fn handle(&mut self, msg: SubscribeWritability, _: &mut Context<Self>) {
        self.shared.subscribe(msg.0);
    }
}

impl Handler<GetInfo> for Socket {
    type Result = actix::MessageResult<GetInfo>;

    fn handle(&mut self, _: GetInfo, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(SocketInfo {
            id: self.shared.id,
            peer: self.io.peer().cloned(),
            handle: self.io.handle(),
            open: self.core.is_open(),
            in_place: self.io.in_place(),
            layers: self.io.layers(),
        })
    }
}

impl Handler<AssignUserData> for Socket {
    type Result = ();

    fn handle(&mut self, msg: AssignUserData, _: &mut Context<Self>) {
        let watch = self.watch.get_or_insert_with(Box::default);
        if let Some(r) = &watch.registration {
            r.set_user_data(msg.0.clone());
        }
        watch.user_data = msg.0;
    }
}

impl Handler<GetWriter> for Socket {
    type Result = actix::MessageResult<GetWriter>;

    fn handle(&mut self, _: GetWriter, ctx: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(Writer::new(Some(ctx.address()), self.shared.clone()))
    }
}

impl Handler<PauseReading> for Socket {
    type Result = ();

    fn handle(&mut self, _: PauseReading, ctx: &mut Context<Self>) {
        self.core.handle_pause();
        self.drive(ctx);
    }
}

impl Handler<ResumeReading> for Socket {
    type Result = ();

    fn handle(&mut self, _: ResumeReading, ctx: &mut Context<Self>) {
        self.core.handle_resume();
        self.drive(ctx);
    }
}
