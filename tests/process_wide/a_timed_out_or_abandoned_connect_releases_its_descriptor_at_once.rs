//! A connect that hits `connect_timeout`, or whose future is dropped, releases its
//! descriptor at once, not when the operating system gives up on the SYN (about two
//! minutes later), even when dropped right after the transport opened the handle; an
//! abandoned `adopt` too; `connect_timeout` bounds every step, the open included.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{open_fds, settle};
use sockactor::{Socket, SocketError};

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

#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn fifty_timed_out_connects_leave_no_descriptor_open() {
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

#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn a_dropped_connect_future_releases_its_descriptor() {
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

/// Polls `fut` once, lets every actor run, then drops it: a caller that gives up right
/// after the transport answered a step the future had not yet seen.
async fn poll_once_settle_and_drop<F: std::future::Future>(fut: F) {
    let mut fut = Box::pin(fut);
    std::future::poll_fn(|cx| {
        let _ = fut.as_mut().poll(cx);
        std::task::Poll::Ready(())
    })
    .await;
    settle().await;
    drop(fut);
}

/// Abandoned after the transport opened the handle (its answer not yet seen), a connect
/// still closes it: on the mock, and in descriptors on the system transport.
#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn a_connect_abandoned_right_after_its_open_leaves_no_handle_or_descriptor() {
    let mock = sockactor::MockTransport::start();
    poll_once_settle_and_drop(
        Socket::builder()
            .functions(mock.functions())
            .connect(crate::support::mock_peer()),
    )
    .await;
    settle().await;
    let handles = mock.handles();
    assert!(!handles.is_empty(), "the open was answered");
    assert!(
        handles.iter().all(|h| mock.is_closed(*h)),
        "every handle closed: {handles:?}"
    );

    let (_listener, _first, addr) = full_listener();
    let before = open_fds();
    for _ in 0..10 {
        poll_once_settle_and_drop(Socket::builder().connect(addr)).await;
    }
    settle().await;
    assert_eq!(
        open_fds(),
        before,
        "every abandoned connect let go of its descriptor"
    );
}

/// An `adopt` abandoned after the system transport took the stream leaves no descriptor.
#[cfg(unix)]
#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn an_adopt_abandoned_after_the_transport_took_the_stream_leaves_no_descriptor() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
    let warm = Socket::builder().adopt(a).await.expect("adopted");
    warm.do_send(sockactor::messages::Close::Abort);
    drop(warm);
    settle().await;
    let before = open_fds();
    for _ in 0..10 {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        poll_once_settle_and_drop(Socket::builder().adopt(a)).await;
        drop(b);
    }
    settle().await;
    assert_eq!(
        open_fds(),
        before,
        "every abandoned adopt let go of its descriptor"
    );
}

/// An `open` that never answers is bounded by `connect_timeout` too.
#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn connect_timeout_bounds_an_open_that_never_answers() {
    use actix::prelude::*;
    struct Wedged;
    impl Actor for Wedged {
        type Context = Context<Self>;
    }
    impl Handler<sockactor::messages::OpenSocket> for Wedged {
        type Result =
            ResponseActFuture<Self, Result<sockactor::messages::Handle, sockactor::TransportError>>;
        fn handle(
            &mut self,
            _: sockactor::messages::OpenSocket,
            _: &mut Context<Self>,
        ) -> Self::Result {
            Box::pin(actix::fut::wrap_future(std::future::pending()))
        }
    }
    let mock = sockactor::MockTransport::start();
    let functions = mock.functions().with_open(Wedged.start().recipient());
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        Socket::builder()
            .functions(functions)
            .connect_timeout(Duration::from_millis(200))
            .connect(crate::support::mock_peer()),
    )
    .await
    .expect("bounded by its connect_timeout");
    assert!(
        matches!(result, Err(SocketError::TimedOut(d)) if d == Duration::from_millis(200)),
        "{:?} after {:?}",
        result.map(|_| ()),
        started.elapsed()
    );
}
