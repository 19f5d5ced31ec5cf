//! A `FramedWriter` dropped with items it never flushed sends them to its socket; when
//! that socket is gone for good (its arbiter shut down with the `SocketSystem`), nothing
//! can take them, and the writer says so with a warning naming the bytes, never dropping
//! them unheard.

use crate::support::WarnLog;
use futures_util::SinkExt;
use sockactor::messages::GetWriter;
use sockactor::{Socket, SocketSystem, Writer};
use tokio_util::codec::LinesCodec;

#[test]
fn a_framed_writer_whose_socket_is_gone_warns_of_the_bytes_it_drops() {
    let (log, _guard) = WarnLog::start();
    actix::System::new().block_on(async {
        // A loopback listener that never accepts: the connect completes in its backlog.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let peer = listener.local_addr().expect("addr");
        let system = SocketSystem::builder().arbiters(1).start().expect("start");
        let socket = system
            .connect(Socket::builder, peer)
            .await
            .expect("connect on the arbiter");
        let writer: Writer = socket.send(GetWriter).await.expect("writer");
        let mut lines = writer.framed(LinesCodec::new());
        // Buffered in the writer, not flushed: nothing has reached the socket.
        lines.feed("never sent".to_owned()).await.expect("fed");
        system.shutdown().await.expect("clean shutdown");
        assert!(!socket.connected(), "the socket went with its arbiter");
        drop(lines);
        drop(listener);
    });
    assert_eq!(
        log.lines_with("11 bytes"),
        1,
        "one warning names the 11 bytes nobody can send: {}",
        log.text()
    );
}
