//! `PeerLimits` over real loopback TCP, in paused time (the limits run on the tokio
//! clock; the peers do nothing, so nothing races the jumps): a server whose accepted
//! sockets close when idle hangs up on a client that connects and says nothing, and
//! goes on serving one that talks; a socket whose peer never reads answers its write
//! `TimedOut` with the bytes the kernel took, and closes.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::run_paused;
use sockactor::messages::{Address, Write};
use sockactor::{Listener, PeerLimits, Socket, SocketConfig, WriteError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const S: Duration = Duration::from_secs(1);

#[test]
fn a_server_hangs_up_on_a_client_that_connects_and_says_nothing() {
    run_paused(|| async {
        let config = SocketConfig {
            limits: PeerLimits {
                read_idle: Some(30 * S),
                close_when_idle: true,
                ..PeerLimits::default()
            },
            ..SocketConfig::default()
        };
        // The echo server keeps each accepted socket's address (a socket with none left
        // closes).
        let server = actix::Actor::start(crate::support::EchoServer::default());
        let (listener, local) = Listener::builder()
            .subscriber(server.clone().recipient())
            .socket_builder({
                let server = server.clone();
                move |_| {
                    Socket::builder()
                        .config(config)
                        .subscriber(server.clone().recipient())
                }
            })
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind loopback");
        let Address::Inet(addr) = local else {
            panic!("inet");
        };
        let start = tokio::time::Instant::now();
        let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut talker = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // The talker says something every 20 s; the silent one nothing.
        let talking = tokio::spawn(async move {
            let mut back = [0u8; 4];
            for _ in 0..4 {
                tokio::time::sleep(20 * S).await;
                talker.write_all(b"ping").await?;
                talker.read_exact(&mut back).await?;
                assert_eq!(&back, b"ping");
            }
            Ok::<_, std::io::Error>(())
        });
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(60 * S, silent.read(&mut buf))
            .await
            .expect("hung up within a minute")
            .expect("read");
        assert_eq!(n, 0, "EOF: the server closed the silent connection");
        let waited = start.elapsed();
        assert!(
            waited >= 30 * S && waited < 32 * S,
            "closed at the idle limit, after {waited:?}"
        );
        tokio::time::timeout(120 * S, talking)
            .await
            .expect("the talker is served to the end")
            .expect("join")
            .expect("talker i/o");
        drop(listener);
    });
}

#[test]
fn a_peer_that_never_reads_times_out_a_large_write_with_what_the_kernel_took() {
    run_paused(|| async {
        let server = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind loopback");
        let addr = server.local_addr().expect("addr");
        let accepting = tokio::spawn(async move { server.accept().await });
        let socket = Socket::builder()
            .config(SocketConfig {
                limits: PeerLimits {
                    send_timeout: Some(5 * S),
                    ..PeerLimits::default()
                },
                ..SocketConfig::default()
            })
            .connect(addr)
            .await
            .expect("connect");
        // Held, never read.
        let (_peer, _) = accepting.await.expect("join").expect("accept");
        const LEN: usize = 64 * 1024 * 1024;
        let answer = tokio::time::timeout(60 * S, socket.send(Write::new(vec![7u8; LEN])))
            .await
            .expect("answered within a minute")
            .expect("mailbox");
        match answer {
            Err(WriteError::TimedOut {
                bytes_sent,
                len,
                after,
            }) => {
                assert_eq!(len, LEN);
                assert_eq!(after, 5 * S);
                assert!(
                    bytes_sent > 0 && bytes_sent < LEN,
                    "the kernel's buffers took part of it: {bytes_sent}"
                );
            }
            other => panic!("expected TimedOut, got {other:?}"),
        }
        let late = socket.send(Write::new(&b"late"[..])).await;
        assert!(
            matches!(late, Ok(Err(WriteError::Closed { .. })) | Err(_)),
            "{late:?}"
        );
    });
}
