//! A socket on a `SocketSystem` arbiter built with a system table made on another
//! thread (the documented "a builder given a transport from another thread uses it,
//! across threads"): the stream is registered with the other thread's reactor and
//! read in place from the arbiter, so a readiness event may come while the socket
//! reads. Every byte the peer echoes is delivered; none waits for a wake-up that never
//! comes. Real loopback with small socket buffers, many rounds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{channel_subscriber, pattern};
use bytes::Bytes;
use sockactor::messages::{Close, SocketEventKind, Write};
use sockactor::{Socket, SocketBuffers, SocketConfig, SocketFunctions, SocketSystem};

const LEN: usize = 200_000;

/// A tokio echo peer counting what it echoed.
async fn tokio_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let echoed = Arc::new(AtomicUsize::new(0));
    let count = echoed.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    count.fetch_add(n, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, echoed)
}

/// Writes `LEN` bytes through a socket on arbiter 0 using `table` and collects the echo
/// (5 s at most once the peer has echoed everything): how many bytes came back.
async fn echo_on_arbiter(
    system: &SocketSystem,
    addr: SocketAddr,
    echoed: &AtomicUsize,
    table: SocketFunctions,
) -> usize {
    let before = echoed.load(Ordering::SeqCst);
    let (events, mut heard) = channel_subscriber();
    let config = SocketConfig {
        buffers: SocketBuffers {
            send: Some(4096),
            recv: Some(4096),
        },
        ..SocketConfig::default()
    };
    let socket = system
        .connect(
            move || {
                Socket::builder()
                    .functions(table)
                    .subscriber(events)
                    .config(config)
            },
            addr,
        )
        .await
        .expect("connect");
    let data = Bytes::from(pattern(LEN, 5));
    tokio::time::timeout(
        Duration::from_secs(30),
        socket.send(Write::new(data.clone())),
    )
    .await
    .expect("write answered")
    .expect("mailbox")
    .expect("written");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while got.len() < LEN {
            match heard.recv().await {
                Some(SocketEventKind::Received(bytes)) => got.extend_from_slice(&bytes),
                Some(_) => {}
                None => break,
            }
        }
    })
    .await;
    assert!(got[..] == data[..got.len()], "the echo differs");
    assert_eq!(
        echoed.load(Ordering::SeqCst) - before,
        LEN,
        "the peer echoed all"
    );
    socket.do_send(Close::Abort);
    got.len()
}

#[actix::test]
async fn a_socket_on_an_arbiter_reads_everything_through_the_main_threads_system_table() {
    let (addr, echoed) = tokio_echo().await;
    let system = SocketSystem::builder().arbiters(1).start().expect("start");
    for round in 0..12 {
        let own = system
            .run_on(0, || async { SocketFunctions::system() })
            .await
            .expect("run_on");
        let control = echo_on_arbiter(&system, addr, &echoed, own).await;
        assert_eq!(control, LEN, "round {round}: the arbiter's own table");
        let cross = echo_on_arbiter(&system, addr, &echoed, SocketFunctions::system()).await;
        assert_eq!(cross, LEN, "round {round}: the main thread's table");
    }
    system.shutdown().await.expect("shutdown");
}

/// A socket on an arbiter, using the main thread's system table, with a write blocked
/// toward a peer that does not read when the system shuts down: the arbiter drops the
/// socket (it does not stop it), and the connection still closes (the peer reads to
/// EOF), as it does with the arbiter's own table.
#[actix::test]
async fn a_socket_dropped_with_its_arbiter_closes_its_connection_through_another_threads_table() {
    use std::io::Read;
    for cross in [false, true] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let system = SocketSystem::builder().arbiters(1).start().expect("start");
        let table = SocketFunctions::system();
        let socket = system
            .connect(
                move || {
                    if cross {
                        Socket::builder().functions(table)
                    } else {
                        Socket::builder()
                    }
                },
                addr,
            )
            .await
            .expect("connect");
        let (mut peer, _) = listener.accept().expect("accept");
        socket
            .send(Write::new(&b"hello"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        // A write the peer does not read: the socket waits for room when it is dropped.
        socket.do_send(Write::new(Bytes::from(vec![7u8; 4 << 20])));
        tokio::time::sleep(Duration::from_millis(100)).await;
        system.shutdown().await.expect("shutdown");
        drop(socket);
        let reader = std::thread::spawn(move || {
            peer.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match peer.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        return false
                    }
                    // A reset closes it too.
                    Err(_) => return true,
                }
            }
        });
        let closed = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
            .await
            .expect("join");
        assert!(
            closed,
            "cross-thread table {cross}: the connection is still open 5 s after shutdown"
        );
    }
}
