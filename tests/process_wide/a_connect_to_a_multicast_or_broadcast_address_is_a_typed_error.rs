//! An address no TCP connection can go to (a multicast group, the broadcast address) is
//! refused by the system transport with a typed `SocketError::Unreachable`, not a panic
//! or a hang, and the descriptor opened for it is closed again.

use std::net::SocketAddr;

use crate::support::open_fds;
use sockactor::{Socket, SocketError};

#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn multicast_and_broadcast_addresses_are_unreachable_and_leak_nothing() {
    // The thread's transport is made lazily: warm it so the counts compare.
    let warm: SocketAddr = "224.0.0.1:80".parse().expect("addr");
    let _ = Socket::builder().connect(warm).await;
    let before = open_fds();
    for addr in ["224.0.0.1:80", "239.1.2.3:5000", "255.255.255.255:80"] {
        let addr: SocketAddr = addr.parse().expect("addr");
        match Socket::builder().connect(addr).await {
            Err(SocketError::Unreachable(e)) => assert_eq!(
                e.io_kind(),
                Some(std::io::ErrorKind::NetworkUnreachable),
                "{addr}"
            ),
            other => panic!("{addr}: expected Unreachable, got {other:?}"),
        }
    }
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        open_fds(),
        before,
        "the failed connects' descriptors are closed"
    );
}
