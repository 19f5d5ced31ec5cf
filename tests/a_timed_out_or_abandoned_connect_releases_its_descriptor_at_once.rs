//! A connect that hits `connect_timeout`, or whose future is dropped, releases its
//! descriptor at once, not when the operating system gives up on the SYN (about two
//! minutes later).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use sockactor::{Socket, SocketError};
use support::{fd_count_lock, open_fds, settle};

/// A loopback listener whose accept queue is full: further SYNs are dropped, so a
/// connect to it stays in SYN-SENT. Keep the returned values alive.
fn full_listener() -> (socket2::Socket, std::net::TcpStream, SocketAddr) {
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    listener.bind(&any.into()).expect("bind loopback");
    // A backlog of 0 holds one connection nobody accepts; the next SYN is dropped.
    listener.listen(0).expect("listen");
    let addr = listener
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("inet");
    let first = std::net::TcpStream::connect(addr).expect("the one connection the queue holds");
    (listener, first, addr)
}

#[actix::test]
async fn fifty_timed_out_connects_leave_no_descriptor_open() {
    let _serial = fd_count_lock();
    let (_listener, _first, addr) = full_listener();
    // Warm the thread's transport so the counts compare.
    let warm = Socket::builder()
        .connect_timeout(Duration::from_millis(1))
        .connect(addr)
        .await;
    assert!(matches!(warm, Err(SocketError::TimedOut(_))), "{warm:?}");
    settle().await;
    let before = open_fds();
    for _ in 0..50 {
        let attempt = Socket::builder()
            .connect_timeout(Duration::from_millis(1))
            .connect(addr)
            .await;
        assert!(
            matches!(attempt, Err(SocketError::TimedOut(_))),
            "{attempt:?}"
        );
    }
    settle().await;
    assert_eq!(
        open_fds(),
        before,
        "every timed-out connect let go of its descriptor"
    );
}

#[actix::test]
async fn a_dropped_connect_future_releases_its_descriptor() {
    let _serial = fd_count_lock();
    let (_listener, _first, addr) = full_listener();
    let warm = Socket::builder()
        .connect_timeout(Duration::from_millis(1))
        .connect(addr)
        .await;
    assert!(warm.is_err());
    settle().await;
    let before = open_fds();
    for _ in 0..20 {
        // The caller gives up on its own: the connect future is dropped mid-way.
        let abandoned =
            tokio::time::timeout(Duration::from_millis(1), Socket::builder().connect(addr)).await;
        assert!(abandoned.is_err(), "the connect cannot finish");
    }
    settle().await;
    assert_eq!(
        open_fds(),
        before,
        "every abandoned connect let go of its descriptor"
    );
}
