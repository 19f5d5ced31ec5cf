//! A socket buffer size the kernel cannot take (past `i32::MAX`) fails the open with a
//! typed `InvalidInput` error, and the descriptor the transport had opened is closed.

use std::io;

use crate::support::{open_fds, settle};
use sockactor::{Socket, SocketBuffers, SocketConfig, SocketError, TransportError};

async fn refused(addr: std::net::SocketAddr) -> SocketError {
    Socket::builder()
        .config(SocketConfig {
            buffers: SocketBuffers {
                send: Some(usize::MAX),
                recv: None,
            },
            ..SocketConfig::default()
        })
        .connect(addr)
        .await
        .expect_err("refused")
}

#[actix_rt::test(system = "crate::support::SerialSystem")]
async fn a_size_past_the_kernels_fails_the_open_and_leaks_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Warm the thread's transport so the counts compare.
    let _ = refused(addr).await;
    settle().await;
    let before = open_fds();
    for _ in 0..10 {
        match refused(addr).await {
            SocketError::Open(TransportError::Io(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}")
            }
            other => panic!("expected an open error, got {other:?}"),
        }
    }
    settle().await;
    assert_eq!(open_fds(), before, "no descriptor left behind");
}
