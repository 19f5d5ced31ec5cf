//! No file descriptor outlives its socket: 1,000 loopback connect/write/close cycles,
//! alternating graceful close and abort, leave the process with as many open
//! descriptors as before; so do 300 cycles of sockets reached by message (through a
//! filter), each closing while the system transport holds an armed read wait for it.

use std::time::Duration;

use crate::support::{channel_subscriber, open_fds};
use sockactor::filters::{FaultInjector, Faults};
use sockactor::messages::{Close, SocketEventKind, Write};
use sockactor::{Socket, SocketFunctions};
use tokio::io::AsyncReadExt;

/// Runs `cycles` connect/write/close cycles over `functions` against a loopback peer
/// that reads each connection to its end, after one cycle first (so the runtime's own
/// lazily created descriptors are counted), and asserts the process holds as many
/// descriptors after them as before.
async fn cycles_leave_no_descriptor(functions: SocketFunctions, cycles: usize) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    actix::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let done = done_tx.clone();
            actix::spawn(async move {
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink).await;
                let _ = done.send(sink.len());
            });
        }
    });
    let cycle = |i: usize| {
        let functions = functions.clone();
        async move {
            let (subscriber, mut events) = channel_subscriber();
            let socket = Socket::builder()
                .functions(functions)
                .subscriber(subscriber)
                .connect(addr)
                .await
                .expect("connect");
            socket
                .send(Write::new(&b"ping"[..]))
                .await
                .expect("mailbox")
                .expect("written");
            socket.do_send(if i.is_multiple_of(2) {
                Close::Graceful
            } else {
                Close::Abort
            });
            loop {
                let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                    .await
                    .expect("closed within 10 s")
                    .expect("subscriber alive");
                if matches!(event, SocketEventKind::Closed { .. }) {
                    break;
                }
            }
        }
    };
    cycle(0).await;
    let first = tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
        .await
        .expect("peer saw EOF")
        .expect("acceptor alive");
    assert_eq!(first, 4);
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
    let before = open_fds();

    for i in 1..=cycles {
        cycle(i).await;
    }
    for _ in 0..cycles {
        tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
            .await
            .expect("every peer saw EOF")
            .expect("acceptor alive");
    }
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        open_fds(),
        before,
        "descriptors left open after {cycles} cycles"
    );
}

#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn a_thousand_connect_close_cycles_leave_no_descriptor_behind() {
    cycles_leave_no_descriptor(SocketFunctions::system(), 1000).await;
}

#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn sockets_reached_by_message_release_their_descriptors_and_read_waits_when_they_close() {
    // A filter that changes nothing: the socket's reads and writes go by message, and
    // each read that finds nothing arms a wait in the system transport.
    let functions = FaultInjector::new(7, Faults::default()).wrap(SocketFunctions::system());
    cycles_leave_no_descriptor(functions, 300).await;
}
