//! A datagram socket on a `SocketSystem` arbiter, using a system table made on this
//! thread (which lives on), with datagrams blocked toward a Unix receiver that never
//! reads: when the system shuts down, the arbiter drops the socket (it does not stop
//! it), and its descriptor still closes, as it does with the arbiter's own table.

use std::time::Duration;

use crate::support::{open_fds, TempPath};
use sockactor::messages::{Address, SendDatagram};
use sockactor::{DatagramSocket, SocketFunctions, SocketSystem};

async fn blocked_then_shut_down(cross: bool) -> (usize, usize) {
    let receiver_path = TempPath::new("dgram-receiver.sock");
    let receiver = std::os::unix::net::UnixDatagram::bind(&receiver_path.0).expect("bind");
    let table = SocketFunctions::system();
    // Warm the table's own lazily made descriptors, and this thread's runtime's.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = open_fds();
    let system = SocketSystem::builder().arbiters(1).start().expect("start");
    let to = receiver_path.0.clone();
    let socket = system
        .run_on(0, move || async move {
            let builder = DatagramSocket::builder();
            let builder = if cross {
                builder.functions(table)
            } else {
                builder
            };
            builder.connect(Address::Unix(to)).await
        })
        .await
        .expect("run_on")
        .expect("connect");
    // Far more than the receiver's queue holds: the socket blocks with datagrams queued.
    for i in 0..2_000u32 {
        socket.do_send(SendDatagram::new(i.to_be_bytes().repeat(64)));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    system.shutdown().await.expect("shutdown");
    drop(socket);
    let mut after = open_fds();
    for _ in 0..100 {
        if after <= before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = open_fds();
    }
    drop(receiver);
    (before, after)
}

#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn a_blocked_datagram_socket_dropped_with_its_arbiter_closes_its_descriptor() {
    let (before, after) = blocked_then_shut_down(false).await;
    assert_eq!(after, before, "the arbiter's own table");
    let (before, after) = blocked_then_shut_down(true).await;
    assert_eq!(after, before, "this thread's table, which lives on");
}
