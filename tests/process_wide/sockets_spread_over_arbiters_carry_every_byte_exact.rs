//! A `SocketSystem` with two arbiters: 64 loopback connections, placed round-robin,
//! move data at the same time through `Writer` handles and `Write` messages; every byte
//! arrives byte-exact per connection, every write is answered, the sockets ran on both
//! arbiter threads, and each arbiter's own Flusher ran flush rounds for them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread::{self, ThreadId};
use std::time::Duration;

use crate::support::pattern;
use actix::prelude::*;
use bytes::Bytes;
use sockactor::messages::{Close, GetWriter, Write};
use sockactor::{Socket, SocketSystem};
use tokio::io::AsyncReadExt;

const CONNECTIONS: usize = 64;
const ARBITERS: usize = 2;
/// Write sizes, cycled through.
const SIZES: [usize; 7] = [1, 100, 1500, 4096, 65_536, 7, 333];

/// Flusher events, counted by the thread they happened on. The Flusher traces one event
/// per flush round, and a round only follows a `PendingWrite`.
static FLUSHER_ROUNDS: LazyLock<Mutex<HashMap<ThreadId, usize>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A tracing subscriber that sees only the Flusher's events.
struct FlusherRounds;

impl tracing::Subscriber for FlusherRounds {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.is_event() && metadata.target() == "sockactor::actors::flusher"
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {
        *FLUSHER_ROUNDS
            .lock()
            .expect("lock")
            .entry(thread::current().id())
            .or_default() += 1;
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// What connection `index` sends: its index, then its own pattern.
fn stream_of(index: usize) -> Bytes {
    let mut all = (index as u32).to_be_bytes().to_vec();
    all.extend(pattern(100_000 + index * 997, index as u64 + 1));
    Bytes::from(all)
}

/// `data` cut into writes of the cycled sizes.
fn chunks(data: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = 0;
    for size in SIZES.iter().cycle() {
        if offset == data.len() {
            break;
        }
        let end = (offset + size).min(data.len());
        out.push(data.slice(offset..end));
        offset = end;
    }
    out
}

/// Writes `data` through a `Writer` handle (even connections) or `Write` messages (odd
/// ones), all at once, and returns how many writes were answered `Ok` with their full
/// length, out of how many.
async fn send_all(index: usize, socket: Addr<Socket>, data: Bytes) -> (usize, usize) {
    let pieces = chunks(&data);
    let total = pieces.len();
    let mut answered = 0;
    if index.is_multiple_of(2) {
        let writer = socket.send(GetWriter).await.expect("socket alive");
        let answers: Vec<_> = pieces
            .iter()
            .map(|piece| (piece.len(), writer.write_answered(piece.clone())))
            .collect();
        for (len, answer) in answers {
            if answer.await.is_ok_and(|w| w.len == len) {
                answered += 1;
            }
        }
    } else {
        let answers: Vec<_> = pieces
            .iter()
            .map(|piece| {
                let request = socket.send(Write::new(piece.clone()).wait_when_full());
                (piece.len(), actix::spawn(request))
            })
            .collect();
        for (len, answer) in answers {
            let answer = answer.await.expect("join").expect("mailbox");
            if answer.is_ok_and(|w| w.len == len) {
                answered += 1;
            }
        }
    }
    socket.do_send(Close::Graceful);
    (answered, total)
}

#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn sixty_four_sockets_on_two_arbiters_carry_every_byte_exact() {
    tracing::subscriber::set_global_default(FlusherRounds).expect("the only subscriber");
    let system = SocketSystem::builder()
        .arbiters(ARBITERS)
        .start()
        .expect("start arbiters");
    assert_eq!(system.arbiters(), ARBITERS);
    let arbiter_threads: HashSet<ThreadId> = system.thread_ids().iter().copied().collect();
    assert_eq!(arbiter_threads.len(), ARBITERS);
    let main_thread = thread::current().id();
    assert!(!arbiter_threads.contains(&main_thread));

    // The peer: every accepted connection is read to EOF on this (the test's) thread.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let (received_tx, mut received) = tokio::sync::mpsc::unbounded_channel();
    actix::spawn(async move {
        for _ in 0..CONNECTIONS {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let received_tx = received_tx.clone();
            actix::spawn(async move {
                let mut all = Vec::new();
                let read = stream.read_to_end(&mut all).await.map(|_| all);
                let _ = received_tx.send(read);
            });
        }
    });

    let placed = Arc::new(Mutex::new(Vec::new()));
    let mut sockets = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let placed = placed.clone();
        let make_builder = move || {
            placed.lock().expect("lock").push(thread::current().id());
            Socket::builder()
        };
        let socket = system
            .connect(make_builder, addr)
            .await
            .expect("connect on an arbiter");
        sockets.push(socket);
    }

    // Every connection sends at the same time.
    let senders: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(index, socket)| actix::spawn(send_all(index, socket, stream_of(index))))
        .collect();
    for (index, sender) in senders.into_iter().enumerate() {
        let (answered, total) = tokio::time::timeout(Duration::from_secs(60), sender)
            .await
            .expect("writes answered within 60 s")
            .expect("join");
        assert_eq!(
            answered, total,
            "connection {index}: every write answered with its full length"
        );
    }

    let mut seen = HashSet::new();
    for _ in 0..CONNECTIONS {
        let bytes = tokio::time::timeout(Duration::from_secs(60), received.recv())
            .await
            .expect("EOF within 60 s")
            .expect("reader alive")
            .expect("read");
        let header: [u8; 4] = bytes
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .expect("at least the header arrived");
        let index = u32::from_be_bytes(header) as usize;
        assert!(index < CONNECTIONS, "unknown connection {index}");
        assert!(seen.insert(index), "connection {index} arrived twice");
        assert!(
            bytes == stream_of(index),
            "connection {index}: the stream differs from what was written"
        );
    }

    let placed = placed.lock().expect("lock").clone();
    assert_eq!(placed.len(), CONNECTIONS);
    for thread in &arbiter_threads {
        assert_eq!(
            placed.iter().filter(|t| *t == thread).count(),
            CONNECTIONS / ARBITERS,
            "round-robin: each arbiter built an equal share"
        );
    }
    assert!(
        placed.iter().all(|t| arbiter_threads.contains(t)),
        "every builder ran on an arbiter thread"
    );

    let rounds = FLUSHER_ROUNDS.lock().expect("lock").clone();
    for thread in &arbiter_threads {
        assert!(
            rounds.get(thread).is_some_and(|&n| n > 0),
            "the Flusher of arbiter thread {thread:?} ran flush rounds"
        );
    }
    assert!(
        rounds.keys().all(|t| arbiter_threads.contains(t)),
        "no Flusher ran anywhere but on the arbiters: {rounds:?}"
    );

    system.shutdown().await.expect("clean shutdown");
}
