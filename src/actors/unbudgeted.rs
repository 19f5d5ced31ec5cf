//! [`start_unbudgeted`]: how the actors that serve many sockets are started.

use actix::{Actor, Addr, AsyncContext, Context};

/// Starts `actor` on the current arbiter, as [`Actor::start`] does, but outside tokio's
/// cooperative budget. Every actor that serves many sockets at once (a transport, a
/// filter) is started this way, and a user's own transport or filter actor should be too.
///
/// Why: such an actor keeps one future per call in flight in its actix context (an
/// answer awaited from the inner transport, a readiness wait), and actix polls them in
/// order at each wake-up. tokio lets a task see at most 128 ready resources per poll;
/// the rest read as not ready until the next poll. Under sustained load the first
/// futures of the context are refilled with fresh calls at every poll, and use up the
/// budget each time, so a call further back already answered by the inner transport
/// was not seen until the load stopped: its socket stalled for seconds (TLS handshakes
/// timed out under the soak's write faults). Unbudgeted, each poll sees every answer
/// that is ready. The actor still yields whenever it has nothing ready, and its
/// mailbox was never budgeted.
///
/// ```
/// use sockactor::{start_unbudgeted, SystemFunctions};
///
/// # actix::System::new().block_on(async {
/// let system = start_unbudgeted(SystemFunctions::new());
/// assert!(system.connected());
/// # });
/// ```
pub fn start_unbudgeted<A>(actor: A) -> Addr<A>
where
    A: Actor<Context = Context<A>>,
{
    let ctx = Context::new();
    let addr = ctx.address();
    actix_rt::spawn(tokio::task::unconstrained(ctx.into_future(actor)));
    addr
}
