//! A TLS server filter runs its handshakes ahead of the listener's `accept`s, several at
//! once: clients that connect and then say nothing do not hold up a good client that
//! comes after them (it is served long before their handshakes time out), each silent
//! client is one failed accept when its handshake times out, and at most
//! `max_handshakes` run at once (a client past the bound waits in the backlog until a
//! slot frees). Clients that connect and leave at once (port scanners, health checks)
//! are failed handshakes, each reported, but they are not failures of the listening
//! socket: no back-off, so a good client behind twenty of them is served at once. Real
//! loopback TCP. (Descriptors: in the process_wide crate,
//! `tls_handshakes_cut_off_by_a_closing_listener_leave_no_descriptor_behind`.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::tls::{
    client_config, collect, pki, tls_listener, tls_listener_backing_off, write_mixed,
};
use crate::support::{channel_subscriber, pattern, EchoServer};
use actix::prelude::*;
use bytes::Bytes;
use sockactor::filters::Tls;
use sockactor::messages::{ListenerEvent, StopListening};
use sockactor::{Socket, SocketFunctions};
use tokio::sync::mpsc::UnboundedReceiver;

/// Connects a TLS client, has the listener's socket echo it, and checks the echo.
async fn serve_one_good_client(
    server: &crate::support::tls::Pki,
    addr: SocketAddr,
    echo: &Addr<EchoServer>,
    listener_events: &mut UnboundedReceiver<ListenerEvent>,
) {
    let (subscriber, mut events) = channel_subscriber();
    let client = Socket::builder()
        .functions(
            Tls::client(client_config(server.roots.clone()), "localhost")
                .expect("server name")
                .wrap(SocketFunctions::system()),
        )
        .subscriber(subscriber)
        .connect(addr)
        .await
        .expect("the good client connects");
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), listener_events.recv())
            .await
            .expect("a listener event within 10 s")
            .expect("listener events");
        if matches!(event, ListenerEvent::Accepted { .. }) {
            echo.do_send(event);
            break;
        }
    }
    let data = Bytes::from(pattern(16 * 1024, 5));
    write_mixed(&client, &data).await;
    let echoed = tokio::time::timeout(Duration::from_secs(10), collect(&mut events, data.len()))
        .await
        .expect("the echo within 10 s");
    assert!(echoed == data, "byte-exact echo");
}

#[actix::test]
async fn silent_clients_do_not_hold_up_a_good_client() {
    let server = pki(&["localhost"]);
    // Handshakes time out only after a minute: a good client served within seconds was
    // not queued behind the silent ones.
    let (listener, addr, echo, mut listener_events) =
        tls_listener(&server, 64, Duration::from_secs(60)).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("a silent client connects"),
        );
    }
    let started = Instant::now();
    serve_one_good_client(&server, addr, &echo, &mut listener_events).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "served behind three silent clients in {:?}",
        started.elapsed()
    );
    listener.do_send(StopListening);
    drop(silent);
}

#[actix::test]
async fn a_client_past_the_handshake_bound_waits_for_a_slot_and_silent_ones_fail_one_accept_each() {
    let server = pki(&["localhost"]);
    let timeout = Duration::from_millis(300);
    let (listener, addr, echo, mut listener_events) = tls_listener(&server, 1, timeout).await;
    let started = Instant::now();
    // First in the backlog, so first into the only slot.
    let silent = tokio::net::TcpStream::connect(addr)
        .await
        .expect("a silent client connects");
    serve_one_good_client(&server, addr, &echo, &mut listener_events).await;
    assert!(
        started.elapsed() >= timeout,
        "with one slot, held by the silent client, the good client's handshake starts \
         only when the silent one's times out (served after {:?})",
        started.elapsed()
    );
    listener.do_send(StopListening);
    drop(silent);
}

#[actix::test]
async fn each_silent_client_is_one_failed_accept_when_its_handshake_times_out() {
    let server = pki(&["localhost"]);
    let (listener, addr, _echo, mut listener_events) =
        tls_listener(&server, 8, Duration::from_millis(200)).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("a silent client connects"),
        );
    }
    let mut failed = 0;
    while failed < 3 {
        let event = tokio::time::timeout(Duration::from_secs(10), listener_events.recv())
            .await
            .expect("a listener event within 10 s")
            .expect("listener events");
        match event {
            ListenerEvent::AcceptFailed { error } => {
                assert_eq!(error.io_kind(), Some(std::io::ErrorKind::TimedOut));
                failed += 1;
            }
            other => panic!("only failed accepts expected, got {other:?}"),
        }
    }
    listener.do_send(StopListening);
    drop(silent);
}

#[actix::test]
async fn clients_that_connect_and_leave_do_not_put_the_listener_into_back_off() {
    let server = pki(&["localhost"]);
    // A back-off this long would hold a good client for many seconds per failure.
    let (listener, addr, echo, mut listener_events) = tls_listener_backing_off(
        &server,
        64,
        Duration::from_secs(60),
        Duration::from_secs(30),
    )
    .await;
    for _ in 0..20 {
        let scanner = tokio::net::TcpStream::connect(addr)
            .await
            .expect("a scanner connects");
        drop(scanner);
    }
    let started = Instant::now();
    serve_one_good_client(&server, addr, &echo, &mut listener_events).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "served behind twenty failed handshakes in {:?}",
        started.elapsed()
    );
    listener.do_send(StopListening);
}
