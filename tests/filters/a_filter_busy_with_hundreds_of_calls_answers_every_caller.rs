//! A filter serves many sockets at once, each call a future on the filter's actor that
//! waits for the inner transport's answer. Under sustained load (hundreds of calls
//! answered per turn of the runtime) every caller keeps being answered: no call already
//! answered by the inner transport waits behind the calls that keep arriving.
//!
//! The failure this guards against: tokio's cooperative budget (128 ready resources per
//! poll of a task) ran out on the first futures of the filter's actix context, which the
//! context refills with fresh calls on every poll, so a call further back saw its answer
//! only when the load stopped (TLS handshakes timed out under the soak's write faults).

use std::cell::RefCell;
use std::rc::Rc;

use crate::support::run_paused;
use actix::prelude::*;
use bytes::Bytes;
use sockactor::filters::{FaultInjector, Faults};
use sockactor::messages::{Family, OpenSocket, Ready, SendV, Sent, SocketKind};
use sockactor::MockTransport;

/// Takes readiness notices and does nothing with them (the mock accepts every write).
struct Deaf;

impl Actor for Deaf {
    type Context = Context<Self>;
}

impl Handler<Ready> for Deaf {
    type Result = ();

    fn handle(&mut self, _: Ready, _: &mut Context<Self>) {}
}

/// Callers writing through the filter at once, each sending its next write as soon as
/// the last is answered: well past the 128 answers a task takes per poll.
const CALLERS: usize = 512;

/// Rounds the fastest caller makes.
const ROUNDS: usize = 200;

#[test]
fn every_caller_is_answered_while_hundreds_of_others_keep_writing() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions = FaultInjector::new(1, Faults::default()).wrap(mock.functions());
        let deaf = Deaf.start();
        let mut handles = Vec::with_capacity(CALLERS);
        for _ in 0..CALLERS {
            let open = OpenSocket {
                family: Family::Ipv4,
                kind: SocketKind::Stream,
                events: deaf.clone().recipient().downgrade(),
                buffers: Default::default(),
            };
            let handle = functions.open().send(open).await.expect("mailbox");
            handles.push(handle.expect("open"));
        }
        let rounds = Rc::new(RefCell::new(vec![0usize; CALLERS]));
        let mut callers = Vec::with_capacity(CALLERS);
        for (i, handle) in handles.into_iter().enumerate() {
            let (sendv, rounds) = (functions.sendv().clone(), rounds.clone());
            callers.push(tokio::task::spawn_local(async move {
                loop {
                    if rounds.borrow().iter().max() >= Some(&ROUNDS) {
                        return;
                    }
                    let msg = SendV {
                        handle,
                        segments: vec![Bytes::from_static(b"x")],
                        to: None,
                    };
                    let sent = sendv.send(msg).await.expect("mailbox").expect("sendv");
                    assert_eq!(sent, Sent::Accepted(1));
                    rounds.borrow_mut()[i] += 1;
                }
            }));
        }
        for caller in callers {
            caller.await.expect("caller");
        }
        let rounds = rounds.borrow();
        let slowest = rounds.iter().min().copied().unwrap_or_default();
        let starved = rounds.iter().filter(|&&n| n < ROUNDS / 2).count();
        assert!(
            slowest >= ROUNDS / 2,
            "while the fastest caller was answered {ROUNDS} times, {starved} of {CALLERS} \
             callers were answered fewer than {} times (the slowest {slowest})",
            ROUNDS / 2
        );
    });
}
