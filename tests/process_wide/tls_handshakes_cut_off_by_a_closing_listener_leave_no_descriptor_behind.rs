//! Handshakes a TLS server filter runs ahead of its listener end by themselves when the
//! listener stops under them: once their clients have left, every descriptor is
//! closed. It runs in a `SerialSystem`, so the descriptor count is this test's alone.
//! Real loopback TCP.

use std::time::{Duration, Instant};

use crate::support::open_fds;
use crate::support::tls::{pki, tls_listener};
use sockactor::messages::{ListenerEvent, StopListening};

#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn handshakes_still_running_when_listening_stops_leave_no_descriptor_behind() {
    let server = pki(&["localhost"]);
    let before = open_fds();
    let (listener, addr, _echo, mut listener_events) =
        tls_listener(&server, 8, Duration::from_secs(60)).await;
    let listening = open_fds();
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("a silent client connects"),
        );
    }
    // Wait until the filter has accepted all four (their server-side descriptors are
    // open: handshakes under way), then stop listening under them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds() < listening + 8 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        open_fds(),
        listening + 8,
        "four clients and four handshakes under way"
    );
    listener.do_send(StopListening);
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), listener_events.recv())
            .await
            .expect("a listener event within 10 s");
        if matches!(event, Some(ListenerEvent::Closed) | None) {
            break;
        }
    }
    drop(silent);
    // The handshakes end (their clients left: long before their one-minute timeout) and
    // their handles close.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds() > before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        open_fds(),
        before,
        "every descriptor closed once the handshakes ended"
    );
}
