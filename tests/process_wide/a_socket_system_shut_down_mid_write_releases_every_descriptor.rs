//! From the sixteenth round of the independent review: a socket on a `SocketSystem`
//! arbiter, mid-write over real loopback to a peer that never reads, when the system
//! shuts down: the write is answered once, every descriptor is released, and a new
//! system started afterwards works and releases everything too.

use std::time::Duration;

use bytes::Bytes;
use sockactor::messages::{GetStats, GetWriter, Write};
use sockactor::{Socket, SocketSystem, WriteError};

/// Real loopback: a socket on an arbiter mid-write to a peer that never reads, the system
/// shut down: the write is lost (answered once), and every descriptor is released; a new
/// socket system started afterwards works, and its shutdown releases everything too.
#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn shutdown_mid_write_on_loopback_releases_descriptors_and_a_new_system_works() {
    {
        // Warm up what lives for the process.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std_listener.local_addr().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = crate::support::open_fds();

        let system = SocketSystem::builder().arbiters(2).start().expect("start");
        let socket = system
            .connect(Socket::builder, peer)
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.unwrap();
        let big = writer.write_answered(Bytes::from(vec![1u8; 32 << 20]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stats = socket.send(GetStats).await.unwrap();
        assert!(
            stats.bytes_sent > 0 && stats.bytes_sent < 32 << 20,
            "{stats:?}"
        );
        system.shutdown().await.expect("shutdown");
        match tokio::time::timeout(Duration::from_secs(5), big).await {
            Ok(Err(WriteError::Lost { .. } | WriteError::Closed { .. })) => {}
            other => panic!("expected Lost, got {other:?}"),
        }
        drop(socket);
        drop(writer);
        // The peer's end of the connection is in the backlog: accept and drop it.
        std_listener.set_nonblocking(true).unwrap();
        while let Ok((s, _)) = std_listener.accept() {
            drop(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if crate::support::open_fds() != before {
            for e in std::fs::read_dir("/proc/self/fd").unwrap() {
                let e = e.unwrap();
                eprintln!("{:?} -> {:?}", e.file_name(), std::fs::read_link(e.path()));
            }
        }
        assert_eq!(
            crate::support::open_fds(),
            before,
            "descriptors after the first system"
        );

        let again = SocketSystem::builder()
            .arbiters(1)
            .start()
            .expect("restart");
        let socket = again
            .connect(Socket::builder, peer)
            .await
            .expect("connect again");
        socket
            .send(Write::new(&b"hello again"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        again.shutdown().await.expect("shutdown again");
        drop(socket);
        while let Ok((s, _)) = std_listener.accept() {
            drop(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            crate::support::open_fds(),
            before,
            "descriptors after the second system"
        );
    }
}
