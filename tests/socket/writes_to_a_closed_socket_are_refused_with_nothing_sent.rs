//! Writing to a socket that has closed (gracefully or by an abort) is answered at once
//! with `WriteError::Closed { bytes_sent: 0 }`, through a `Write` message or a `Writer`,
//! and nothing reaches the transport.

use crate::support::{mock_socket, run_paused, settle};
use sockactor::messages::{Close, GetWriter, Handle, Write};
use sockactor::{MockTransport, WriteError};

async fn assert_refused(close: Close) {
    let mock = MockTransport::start();
    let socket = mock_socket(&mock).await;
    let writer = socket.send(GetWriter).await.expect("writer");
    socket.send(close).await.expect("mailbox");
    settle().await;
    assert!(mock.is_closed(Handle(1)), "the handle is closed");

    let by_message = socket
        .send(Write::new(&b"late"[..]))
        .await
        .expect("a typed answer, not a mailbox error");
    assert!(
        matches!(
            by_message,
            Err(WriteError::Closed {
                bytes_sent: 0,
                len: 4
            })
        ),
        "got {by_message:?}"
    );
    let by_writer = writer.write(&b"later"[..]);
    assert!(
        matches!(
            by_writer,
            Err(WriteError::Closed {
                bytes_sent: 0,
                len: 5
            })
        ),
        "got {by_writer:?}"
    );
    let answered = writer.write_answered(&b"last"[..]).await;
    assert!(matches!(
        answered,
        Err(WriteError::Closed {
            bytes_sent: 0,
            len: 4
        })
    ));
    settle().await;
    assert_eq!(mock.sendv_calls(Handle(1)), 0, "nothing was sent");
}

#[test]
fn after_a_graceful_close_writes_are_refused_closed() {
    run_paused(|| assert_refused(Close::Graceful));
}

#[test]
fn after_an_abort_writes_are_refused_closed() {
    run_paused(|| assert_refused(Close::Abort));
}
