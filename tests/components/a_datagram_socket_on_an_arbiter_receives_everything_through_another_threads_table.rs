//! A datagram socket on a `SocketSystem` arbiter using a system table made on another
//! thread receives in place from the arbiter while the other thread's reactor watches
//! the socket: every datagram of a flow-controlled stream (nothing for the kernel to
//! drop) is received; none waits for a wake-up that never comes.

use std::time::Duration;

use actix::prelude::*;
use sockactor::messages::{Address, DatagramEvent, DatagramEventKind};
use sockactor::{DatagramSocket, SocketFunctions, SocketSystem};

/// Counts received datagrams into a channel.
struct Counter(tokio::sync::mpsc::UnboundedSender<usize>);

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<DatagramEvent> for Counter {
    type Result = ();
    fn handle(&mut self, msg: DatagramEvent, _: &mut Context<Self>) {
        if let DatagramEventKind::Received { bytes, .. } = msg.kind {
            let _ = self.0.send(bytes.len());
        }
    }
}

#[actix::test]
async fn a_datagram_socket_on_an_arbiter_receives_every_paced_datagram() {
    let system = SocketSystem::builder().arbiters(1).start().expect("start");
    let (tx, mut received) = tokio::sync::mpsc::unbounded_channel();
    let counter = Counter(tx).start().recipient();
    let table = SocketFunctions::system();
    let (socket, local) = system
        .run_on(0, move || async move {
            DatagramSocket::builder()
                .functions(table)
                .subscriber(counter)
                .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
        })
        .await
        .expect("run_on")
        .expect("bind");
    let Address::Inet(to) = local else {
        panic!("an inet address")
    };
    // A sender thread keeps at most 16 datagrams unreceived (nothing for the kernel to
    // drop), so datagrams keep arriving while the socket receives.
    const TOTAL: usize = 300_000;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = done.clone();
    let sender = std::thread::spawn(move || {
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        let start = std::time::Instant::now();
        for sent in 0..TOTAL {
            while sent - seen.load(std::sync::atomic::Ordering::Acquire) >= 16 {
                if start.elapsed() > Duration::from_secs(60) {
                    return sent;
                }
                std::thread::yield_now();
            }
            sender.send_to(&[7u8; 64], to).expect("send");
        }
        TOTAL
    });
    let mut got = 0usize;
    while got < TOTAL {
        match tokio::time::timeout(Duration::from_secs(5), received.recv()).await {
            Ok(Some(64)) => {
                got += 1;
                done.store(got, std::sync::atomic::Ordering::Release);
            }
            other => panic!("after {got} datagrams: {other:?}"),
        }
    }
    assert_eq!(sender.join().expect("sender"), TOTAL);
    drop(socket);
    system.shutdown().await.expect("shutdown");
}

/// A datagram socket on an arbiter using the main thread's system table, dropped with
/// its arbiter at shutdown (not stopped): its socket still closes, so its port can be
/// bound again, as with the arbiter's own table.
#[actix::test]
async fn a_datagram_socket_dropped_with_its_arbiter_releases_its_port() {
    for cross in [false, true] {
        let system = SocketSystem::builder().arbiters(1).start().expect("start");
        let table = SocketFunctions::system();
        let (socket, local) = system
            .run_on(0, move || async move {
                let builder = DatagramSocket::builder();
                let builder = if cross {
                    builder.functions(table)
                } else {
                    builder
                };
                builder
                    .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
            })
            .await
            .expect("run_on")
            .expect("bind");
        let Address::Inet(port) = local else {
            panic!("an inet address")
        };
        system.shutdown().await.expect("shutdown");
        drop(socket);
        let mut rebound = None;
        for _ in 0..100 {
            match std::net::UdpSocket::bind(port) {
                Ok(socket) => {
                    rebound = Some(socket);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        assert!(
            rebound.is_some(),
            "cross-thread table {cross}: the port is still bound 2 s after shutdown"
        );
    }
}
