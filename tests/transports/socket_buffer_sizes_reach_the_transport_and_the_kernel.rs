//! `SocketBuffers` (`SO_SNDBUF`, `SO_RCVBUF`): the sizes in a socket's, a datagram
//! socket's or a listener's configuration reach the transport's `OpenSocket`, and on the
//! system transport a connection with them carries bytes. (A size the kernel cannot
//! take: `process_wide/a_socket_buffer_size_past_the_kernels_is_refused_with_no_descriptor_left.rs`.)

use crate::support::{local, mock_peer, run_paused};
use bytes::Bytes;
use sockactor::messages::{Handle, Write};
use sockactor::{
    DatagramConfig, DatagramSocket, Listener, MockTransport, Socket, SocketBuffers, SocketConfig,
};

const BUFFERS: SocketBuffers = SocketBuffers {
    send: Some(96 * 1024),
    recv: Some(48 * 1024),
};

#[test]
fn every_kind_of_socket_hands_its_buffer_sizes_to_the_transport() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let _stream = Socket::builder()
            .functions(mock.functions())
            .config(SocketConfig {
                buffers: BUFFERS,
                ..SocketConfig::default()
            })
            .connect(mock_peer())
            .await
            .expect("connect");
        assert_eq!(mock.buffers(Handle(1)), Some(BUFFERS));
        let (_datagrams, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(DatagramConfig {
                buffers: SocketBuffers {
                    send: None,
                    recv: Some(1 << 20),
                },
                ..DatagramConfig::default()
            })
            .bind(local())
            .await
            .expect("bind");
        assert_eq!(
            mock.buffers(Handle(2)),
            Some(SocketBuffers {
                send: None,
                recv: Some(1 << 20)
            })
        );
        let (_listener, _) = Listener::builder()
            .functions(mock.functions())
            .buffers(BUFFERS)
            .bind(local())
            .await
            .expect("listen");
        assert_eq!(mock.buffers(Handle(3)), Some(BUFFERS));
        let _plain = Socket::builder()
            .functions(mock.functions())
            .connect(mock_peer())
            .await
            .expect("connect");
        assert_eq!(mock.buffers(Handle(4)), Some(SocketBuffers::default()));
    });
}

#[actix::test]
async fn a_real_connection_with_buffer_sizes_carries_bytes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let socket = Socket::builder()
        .config(SocketConfig {
            buffers: BUFFERS,
            ..SocketConfig::default()
        })
        .connect(addr)
        .await
        .expect("connect");
    let (mut peer, _) = listener.accept().await.expect("accept");
    socket
        .send(Write::new(Bytes::from_static(b"buffered")))
        .await
        .expect("mailbox")
        .expect("written");
    let mut got = [0u8; 8];
    tokio::io::AsyncReadExt::read_exact(&mut peer, &mut got)
        .await
        .expect("read");
    assert_eq!(&got, b"buffered");
}
