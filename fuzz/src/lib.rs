//! Helpers shared by the fuzz targets: a paused-time actix system per input, a way to let
//! every actor run, a recorder of socket events and frames, and a splitter that cuts
//! the fuzzer's bytes into the chunks a peer would send.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use sockactor::messages::{Frame, SocketEvent, SocketEventKind};

/// Runs `f` in a fresh actix system on a current-thread tokio runtime whose clock starts
/// paused, so timers fire at once and every run is deterministic.
pub fn run_paused<F: Future>(f: impl FnOnce() -> F) -> F::Output {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("tokio runtime")
    })
    .block_on(f())
}

/// An address nothing listens on; the mock transport never dials it.
pub fn mock_peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9))
}

/// Lets every ready actor run until nothing is left to do at this instant.
pub async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// Settles until `done` holds, at most `rounds` times; whether it came to hold.
pub async fn settle_until(rounds: usize, done: impl Fn() -> bool) -> bool {
    for _ in 0..rounds {
        if done() {
            return true;
        }
        settle().await;
    }
    done()
}

/// What a socket told its subscriber and its frame recipient.
#[derive(Clone, Default)]
pub struct Recorder {
    /// Socket events, in arrival order.
    pub events: Arc<Mutex<Vec<SocketEventKind>>>,
    /// Decoded frames, in arrival order.
    pub frames: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    /// The recipient for socket events.
    pub fn events_recipient(&self) -> Recipient<SocketEvent> {
        RecorderActor(self.clone()).start().recipient()
    }

    /// The recipient for string frames.
    pub fn frames_recipient(&self) -> Recipient<Frame<String>> {
        RecorderActor(self.clone()).start().recipient()
    }

    /// How many events match `pred`.
    pub fn count(&self, pred: impl Fn(&SocketEventKind) -> bool) -> usize {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| pred(e))
            .count()
    }

    /// The length of each `Received` delivery, in order.
    pub fn deliveries(&self) -> Vec<usize> {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|e| match e {
                SocketEventKind::Received(b) => Some(b.len()),
                _ => None,
            })
            .collect()
    }

    /// Every `Received` byte, concatenated.
    pub fn received(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in self.events.lock().expect("lock").iter() {
            if let SocketEventKind::Received(b) = e {
                out.extend_from_slice(b);
            }
        }
        out
    }

    /// The frames received so far.
    pub fn frames(&self) -> Vec<String> {
        self.frames.lock().expect("lock").clone()
    }
}

struct RecorderActor(Recorder);

impl Actor for RecorderActor {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for RecorderActor {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        self.0.events.lock().expect("lock").push(msg.kind);
    }
}

impl Handler<Frame<String>> for RecorderActor {
    type Result = ();
    fn handle(&mut self, msg: Frame<String>, _: &mut Context<Self>) {
        self.0.frames.lock().expect("lock").push(msg.frame);
    }
}

/// Cuts `data` into chunks whose lengths come from `seed` bytes (1 to 256 each, cycling
/// through the seed); no seed gives one chunk.
pub fn chunks<'a>(seed: &[u8], data: &'a [u8]) -> Vec<&'a [u8]> {
    if seed.is_empty() {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (usize::from(seed[i % seed.len()]) + 1).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
        i += 1;
    }
    out
}
