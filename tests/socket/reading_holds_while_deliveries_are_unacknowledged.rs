//! Read backpressure: a socket stops reading while the subscriber holds too many
//! deliveries (or bytes) unacknowledged, or when told to pause, and resumes when permits
//! are dropped or it is told to resume. A peer that floods cannot grow our memory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{mock_peer, pattern, run_paused, settle, subscribed_mock_socket};
use actix::prelude::*;
use sockactor::messages::{
    GetStats, Handle, PauseReading, ResumeReading, SocketEvent, SocketEventKind,
};
use sockactor::{MockTransport, ReadLimits, ReadPermit, Socket, SocketConfig};

/// A subscriber that keeps the permits of what it receives while `keep` is set.
#[derive(Clone, Default)]
struct Keeper(Arc<Mutex<Kept>>);

#[derive(Default)]
struct Kept {
    keep: bool,
    permits: Vec<ReadPermit>,
    data: Vec<u8>,
    deliveries: usize,
    eof: bool,
}

impl Keeper {
    fn keeping() -> Self {
        let k = Keeper::default();
        k.0.lock().expect("lock").keep = true;
        k
    }
    fn start(&self) -> Recipient<SocketEvent> {
        KeeperActor(self.clone()).start().recipient()
    }
    fn deliveries(&self) -> usize {
        self.0.lock().expect("lock").deliveries
    }
    fn data(&self) -> Vec<u8> {
        self.0.lock().expect("lock").data.clone()
    }
    /// Drops `n` of the kept permits, oldest first.
    fn release(&self, n: usize) {
        let mut k = self.0.lock().expect("lock");
        let n = n.min(k.permits.len());
        k.permits.drain(..n);
    }
    /// Stops keeping permits and drops those kept.
    fn release_all(&self) {
        let mut k = self.0.lock().expect("lock");
        k.keep = false;
        k.permits.clear();
    }
}

struct KeeperActor(Keeper);

impl Actor for KeeperActor {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for KeeperActor {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        let mut k = self.0 .0.lock().expect("lock");
        match msg.kind {
            SocketEventKind::Received(bytes) => {
                k.deliveries += 1;
                k.data.extend_from_slice(&bytes);
                let permit = msg.permit.expect("a received chunk carries a permit");
                assert_eq!(permit.bytes(), bytes.len());
                if k.keep {
                    k.permits.push(permit);
                }
            }
            SocketEventKind::Eof => k.eof = true,
            _ => {}
        }
    }
}

fn config(read_chunk: usize, limits: ReadLimits) -> SocketConfig {
    SocketConfig {
        read_chunk,
        read_limits: limits,
        ..SocketConfig::default()
    }
}

#[test]
fn reading_stops_at_the_delivery_limit_and_resumes_as_permits_are_dropped() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let keeper = Keeper::keeping();
        let limits = ReadLimits {
            max_deliveries: 3,
            max_bytes: usize::MAX,
        };
        let socket = Socket::builder()
            .functions(mock.functions())
            .config(config(4, limits))
            .subscriber(keeper.start())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), &b"aaaabbbbccccddddeeee"[..]);
        settle().await;
        assert_eq!(
            keeper.deliveries(),
            3,
            "three chunks, then the window is full"
        );
        assert_eq!(keeper.data(), b"aaaabbbbcccc");
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!((stats.unacked_deliveries, stats.unacked_bytes), (3, 12));
        assert_eq!(stats.bytes_received, 12, "nothing more was read");

        keeper.release(1);
        settle().await;
        assert_eq!(keeper.deliveries(), 4, "one permit dropped, one more chunk");

        keeper.release_all();
        settle().await;
        assert_eq!(keeper.data(), b"aaaabbbbccccddddeeee");
        let stats = socket.send(GetStats).await.expect("stats");
        assert_eq!((stats.unacked_deliveries, stats.unacked_bytes), (0, 0));
    });
}

#[test]
fn reading_stops_at_the_byte_limit_overshooting_by_at_most_one_read() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let keeper = Keeper::keeping();
        let limits = ReadLimits {
            max_deliveries: u32::MAX,
            max_bytes: 10,
        };
        let _socket = Socket::builder()
            .functions(mock.functions())
            .config(config(4, limits))
            .subscriber(keeper.start())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        mock.push_inbound(Handle(1), pattern(64, 1));
        settle().await;
        let got = keeper.data().len();
        assert!(got >= 10, "reads until the limit is reached: {got}");
        assert!(got < 10 + 4, "then stops: {got} bytes read");
        keeper.release_all();
        settle().await;
        assert_eq!(keeper.data(), pattern(64, 1));
    });
}

#[test]
fn pause_stops_reading_and_resume_restarts_it() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let keeper = Keeper::default();
        let socket = subscribed_mock_socket(&mock, keeper.start()).await;
        settle().await;
        socket.send(PauseReading).await.expect("pause");
        mock.push_inbound(Handle(1), &b"held back"[..]);
        mock.push_eof(Handle(1));
        settle().await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle().await;
        assert_eq!(keeper.deliveries(), 0, "nothing is read while paused");
        assert!(!keeper.0.lock().expect("lock").eof);

        socket.send(ResumeReading).await.expect("resume");
        settle().await;
        assert_eq!(keeper.data(), b"held back");
        assert!(keeper.0.lock().expect("lock").eof, "then the EOF");
    });
}

/// A real peer writes as fast as the kernel lets it while the subscriber acknowledges
/// nothing: the socket reads up to its window and no further, however much the peer
/// has sent; once the permits go, everything arrives byte-exact.
#[actix::test]
async fn a_flooding_peer_cannot_grow_memory_past_the_read_window() {
    use tokio::io::AsyncWriteExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let keeper = Keeper::keeping();
    let limits = ReadLimits {
        max_deliveries: 1_000,
        max_bytes: 256 * 1024,
    };
    let read_chunk = 16 * 1024;
    let socket = Socket::builder()
        .config(config(read_chunk, limits))
        .subscriber(keeper.start())
        .connect(addr)
        .await
        .expect("connect");
    let (mut peer, _) = listener.accept().await.expect("accept");
    let payload = pattern(8 * 1024 * 1024, 7);

    // Flood in rounds: write until the kernel's buffers are full, then wait until either
    // the socket has read enough for the peer to write again, or its window is full.
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let bound = (limits.max_bytes + read_chunk) as u64;
    loop {
        while sent < payload.len() {
            match peer.try_write(&payload[sent..(sent + 64 * 1024).min(payload.len())]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("peer write: {e}"),
            }
        }
        let window_full = async {
            loop {
                tokio::task::yield_now().await;
                let stats = socket.send(GetStats).await.expect("stats");
                assert!(
                    stats.bytes_received <= bound,
                    "read {} bytes with a {}-byte window",
                    stats.bytes_received,
                    limits.max_bytes
                );
                if stats.unacked_bytes >= limits.max_bytes as u64 {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "window never filled"
                );
            }
        };
        tokio::select! {
            _ = peer.writable() => continue,
            () = window_full => break,
        }
    }
    assert!(
        sent > 2 * limits.max_bytes,
        "the peer got {sent} bytes into the kernel, well past the window"
    );
    // More flooding changes nothing while the permits are held.
    tokio::task::yield_now().await;
    let held = socket.send(GetStats).await.expect("stats").bytes_received;
    assert!(held <= (limits.max_bytes + read_chunk) as u64);

    keeper.release_all();
    let rest = payload[sent..].to_vec();
    let writer = tokio::spawn(async move {
        peer.write_all(&rest).await.expect("write the rest");
        peer.shutdown().await.expect("shutdown");
        peer
    });
    while !keeper.0.lock().expect("lock").eof {
        assert!(tokio::time::Instant::now() < deadline, "stream never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _peer = writer.await.expect("writer");
    assert_eq!(keeper.data().len(), payload.len());
    assert!(
        keeper.data() == payload,
        "byte-exact after the window reopened"
    );
}
