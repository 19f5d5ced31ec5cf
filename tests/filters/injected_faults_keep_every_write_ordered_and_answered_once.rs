//! Through the fault injector (partial accepts, would-blocks with a late `Ready`,
//! delayed answers, resets) a socket keeps its invariants: writes leave in order, each
//! gets exactly one answer, and the byte stream the inner transport recorded is exactly
//! the completed writes' bytes followed by the failed write's reported `bytes_sent`. The
//! read side (short reads, delays, would-blocks) delivers the stream whole and in order,
//! and a read reset ends the socket with `ConnectionReset`.

use std::io;
use std::time::Duration;

use crate::support::{mock_peer, pattern, run_paused, settle, watermarks, Recorder};
use bytes::Bytes;
use sockactor::filters::{FaultInjector, Faults};
use sockactor::messages::{GetWriter, Handle, SocketEventKind};
use sockactor::{MockTransport, Socket, WriteError};

const WRITES: usize = 40;

fn write_faults() -> Faults {
    Faults::default()
        .partial(0.5)
        .would_block(0.2, Duration::from_millis(3))
        .delay(0.2, Duration::from_millis(2))
        .reset(0.01)
}

/// Writes random-sized writes through the injector on a fresh mock and checks the
/// invariants; returns whether the connection was reset.
async fn random_writes(seed: u64) -> bool {
    let mock = MockTransport::start();
    let socket = Socket::builder()
        .functions(
            FaultInjector::new(seed, write_faults())
                .max_per_call(512)
                .wrap(mock.functions()),
        )
        .config(watermarks(1 << 24, 1 << 20))
        .connect(mock_peer())
        .await
        .expect("connect");
    let writer = socket.send(GetWriter).await.expect("writer");
    let sizes = pattern(WRITES, seed + 1);
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| pattern(1 + usize::from(size) * 2, seed * 1000 + i as u64))
        .collect();
    let answers: Vec<_> = payloads
        .iter()
        .map(|p| writer.write_answered(Bytes::from(p.clone())))
        .collect();

    let mut expected = Vec::new();
    let mut failed: Option<usize> = None;
    for (i, answer) in answers.into_iter().enumerate() {
        let answer = tokio::time::timeout(Duration::from_secs(60), answer)
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: write {i} answered"));
        match (answer, failed) {
            (Ok(done), None) => {
                assert_eq!(done.len, payloads[i].len(), "seed {seed}: write {i}");
                expected.extend_from_slice(&payloads[i]);
            }
            (Ok(_), Some(first)) => {
                panic!("seed {seed}: write {i} completed after write {first} failed")
            }
            (Err(e @ WriteError::Transport { .. }), None) => {
                assert_eq!(
                    e.io_kind_of_source(),
                    Some(io::ErrorKind::ConnectionReset),
                    "seed {seed}: write {i}"
                );
                expected.extend_from_slice(&payloads[i][..e.bytes_sent()]);
                failed = Some(i);
            }
            (Err(e @ WriteError::Transport { .. }), Some(_)) => {
                assert_eq!(e.bytes_sent(), 0, "seed {seed}: write {i} after the reset");
            }
            (Err(other), _) => panic!("seed {seed}: write {i} failed with {other:?}"),
        }
    }
    settle().await;
    assert_eq!(
        mock.written(Handle(1)),
        expected,
        "seed {seed}: the recorded stream is the answered bytes in order"
    );
    failed.is_some()
}

/// The I/O error kind a write's transport error carries.
trait SourceKind {
    fn io_kind_of_source(&self) -> Option<io::ErrorKind>;
}

impl SourceKind for WriteError {
    fn io_kind_of_source(&self) -> Option<io::ErrorKind> {
        match self {
            WriteError::Transport { source, .. } => source.io_kind(),
            _ => None,
        }
    }
}

#[test]
fn random_writes_through_random_faults_leave_exactly_the_answered_bytes_in_order() {
    run_paused(|| async {
        let mut resets = 0;
        for seed in 0..24 {
            resets += usize::from(random_writes(seed).await);
        }
        assert!(resets > 0, "some seeds reset the connection");
        assert!(resets < 24, "some seeds never reset it");
    });
}

/// The sendv log of one run, times relative to its start.
fn sendv_log(seed: u64) -> Vec<(usize, usize, bool, Duration)> {
    run_paused(|| async move {
        let start = tokio::time::Instant::now();
        let mock = MockTransport::start();
        let faults = Faults::default()
            .partial(0.5)
            .would_block(0.3, Duration::from_millis(3))
            .delay(0.3, Duration::from_millis(2));
        let socket = Socket::builder()
            .functions(
                FaultInjector::new(seed, faults)
                    .max_per_call(512)
                    .wrap(mock.functions()),
            )
            .config(watermarks(1 << 24, 1 << 20))
            .connect(mock_peer())
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.expect("writer");
        for i in 0..20 {
            writer.write(pattern(500, i)).expect("queued");
        }
        writer.write_answered(&b"last"[..]).await.expect("written");
        mock.sendv_log(Handle(1))
            .into_iter()
            .map(|r| (r.offered, r.accepted, r.would_block, r.at - start))
            .collect()
    })
}

#[test]
fn the_same_seed_gives_the_same_sendv_log_and_another_seed_a_different_one() {
    let first = sendv_log(7);
    assert!(first.len() > 5, "faults cut the writes into several calls");
    assert_eq!(first, sendv_log(7));
    assert_ne!(first, sendv_log(8));
}

#[test]
fn faulty_reads_deliver_the_stream_whole_and_in_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let faults = Faults::default()
            .short_reads(0.7)
            .read_would_block(0.3, Duration::from_millis(3))
            .read_delay(0.3, Duration::from_millis(2));
        let recorder = Recorder::default();
        let _socket = Socket::builder()
            .functions(FaultInjector::new(3, faults).wrap(mock.functions()))
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let mut sent = Vec::new();
        for i in 0..30 {
            let chunk = pattern(700, 100 + i);
            sent.extend_from_slice(&chunk);
            mock.push_inbound(Handle(1), chunk);
        }
        mock.push_eof(Handle(1));
        tokio::time::timeout(Duration::from_secs(60), async {
            while recorder.count(|e| matches!(e, SocketEventKind::Eof)) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("EOF reached the subscriber");
        assert_eq!(recorder.received(), sent);
        assert!(
            recorder.count(|e| matches!(e, SocketEventKind::Received(_))) > 30,
            "short reads cut the chunks"
        );
    });
}

#[test]
fn a_read_reset_ends_the_socket_with_connection_reset() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(
                FaultInjector::new(5, Faults::default().read_reset(1.0)).wrap(mock.functions()),
            )
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        let read_resets = recorder.count(|e| {
            matches!(e, SocketEventKind::ReadFailed(error)
                if error.io_kind() == Some(io::ErrorKind::ConnectionReset))
        });
        assert_eq!(read_resets, 1);
        assert!(mock.is_closed(Handle(1)), "the reset handle is closed");
        let late = socket
            .send(sockactor::messages::Write::new(&b"late"[..]))
            .await;
        assert!(
            !matches!(late, Ok(Ok(_))),
            "a reset socket takes no more writes"
        );
    });
}
