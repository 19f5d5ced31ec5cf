//! Over real loopback TCP, a peer that accepts and never reads: once the kernel's
//! buffers are full the socket's queue fills to its high watermark and no further, and
//! the writer gets `QueueFull` with its payload back instead of growing memory.

use std::time::Duration;

use crate::support::watermarks;
use bytes::Bytes;
use sockactor::messages::{Close, GetStats, GetWriter};
use sockactor::{Socket, WriteError};

const HIGH: usize = 256 * 1024;
const CHUNK: usize = 64 * 1024;
/// Far more than loopback's socket buffers can hold.
const MAX_CHUNKS: usize = 4096;

#[actix::test]
async fn the_queue_stops_at_its_bound_and_the_writer_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let socket = Socket::builder()
        .config(watermarks(HIGH, HIGH / 4))
        .connect(addr)
        .await
        .expect("connect");
    let (peer, _) = listener.accept().await.expect("accept");
    let writer = socket.send(GetWriter).await.expect("writer");
    let chunk = Bytes::from(vec![b'z'; CHUNK]);

    let refused = tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..MAX_CHUNKS {
            match writer.write(chunk.clone()) {
                Ok(()) => {}
                Err(e) => return Some(e),
            }
            // Let the socket flush into the kernel while the kernel takes bytes.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
        None
    })
    .await
    .expect("refused within 60 s");

    match refused {
        Some(WriteError::QueueFull {
            queued,
            high_watermark,
            payload,
        }) => {
            assert_eq!(high_watermark, HIGH);
            assert!(
                (HIGH..HIGH + CHUNK).contains(&queued),
                "refused at the bound: {queued} queued"
            );
            assert_eq!(payload.len(), CHUNK, "the payload comes back");
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    let stats = socket.send(GetStats).await.expect("stats");
    assert!(
        stats.queued_bytes < (HIGH + CHUNK) as u64,
        "queued {} bytes",
        stats.queued_bytes
    );
    assert!(
        stats.bytes_sent > 0,
        "the kernel took bytes before it was full"
    );
    socket.do_send(Close::Abort);
    drop(peer);
}
