//! Capture over the mock transport: every open, connect, sendv (with exactly the
//! accepted bytes, would-blocks and errors), recvfrom (data, would-block, EOF, errors),
//! readiness notice and close is recorded with its handle and its tokio time since the
//! capture started, and read back whole. The sink is written without affecting traffic:
//! a failing sink stops the capture, a sink that would block keeps records buffered.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{mock_peer, run_paused, settle, Recorder, WarnLog};
use bytes::Bytes;
use sockactor::filters::{Capture, CaptureEvent, Record, RecordedError, RecvAnswer, SendAnswer};
use sockactor::messages::{Address, Close, Family, Handle, Readiness, SocketKind, Write};
use sockactor::{MockTransport, SendStep, Socket, SocketFunctions};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at(ms_: u64, event: CaptureEvent) -> Record {
    Record {
        handle: Handle(1),
        at: ms(ms_),
        event,
    }
}

fn send(offered: u64, answer: SendAnswer) -> CaptureEvent {
    CaptureEvent::SendV {
        offered,
        to: None,
        took: Duration::ZERO,
        answer,
    }
}

/// The socket's default read chunk.
const CHUNK: u64 = 64 * 1024;

fn recv(answer: RecvAnswer) -> CaptureEvent {
    CaptureEvent::RecvFrom {
        max_len: CHUNK,
        took: Duration::ZERO,
        answer,
    }
}

fn data(bytes: &'static [u8]) -> RecvAnswer {
    RecvAnswer::Data {
        bytes: Bytes::from_static(bytes),
        from: Some(Address::Inet(mock_peer())),
    }
}

#[test]
fn a_mock_session_is_recorded_call_by_call_with_exact_bytes_and_times() {
    run_paused(|| async {
        let mock = MockTransport::start();
        crate::support::capture::script_session(&mock);
        let (capture, file) = Capture::to_memory();
        let functions = capture.wrap(mock.functions());
        crate::support::capture::spawn_peer(&mock);
        let seen = crate::support::capture::session(functions).await;
        assert_eq!(seen.received, b"pingpong!");

        let [first, second, third] = crate::support::capture::writes();
        let all = Bytes::from([first, second].concat());
        let expected = vec![
            at(
                0,
                CaptureEvent::Open {
                    family: Family::Ipv4,
                    kind: SocketKind::Stream,
                    result: Ok(()),
                },
            ),
            at(
                0,
                CaptureEvent::Connect {
                    addr: Address::Inet(mock_peer()),
                    took: Duration::ZERO,
                    result: Ok(()),
                },
            ),
            at(0, recv(RecvAnswer::WouldBlock)),
            // Both writes offered at once: the mock takes 3 bytes, then would block
            // for 5 ms.
            at(0, send(3015, SendAnswer::Accepted(all.slice(..3)))),
            at(0, send(3012, SendAnswer::WouldBlock)),
            at(5, CaptureEvent::Ready(Readiness::Writable)),
            at(5, send(3012, SendAnswer::Accepted(all.slice(3..7)))),
            at(5, send(3008, SendAnswer::Accepted(all.slice(7..1007)))),
            at(5, send(2008, SendAnswer::WouldBlock)),
            at(7, CaptureEvent::Ready(Readiness::Writable)),
            at(7, send(2008, SendAnswer::Accepted(all.slice(1007..)))),
            // The peer's data, then its EOF.
            at(10, CaptureEvent::Ready(Readiness::Readable)),
            at(10, recv(data(b"ping"))),
            at(10, recv(RecvAnswer::WouldBlock)),
            at(12, CaptureEvent::Ready(Readiness::Readable)),
            at(12, recv(data(b"pong!"))),
            at(12, recv(RecvAnswer::WouldBlock)),
            at(20, CaptureEvent::Ready(Readiness::Readable)),
            at(20, recv(RecvAnswer::Eof)),
            at(25, send(9, SendAnswer::Accepted(third))),
            at(40, CaptureEvent::Close),
        ];
        let records = crate::support::capture::records(&file.contents());
        assert_eq!(records.len(), expected.len(), "{records:#?}");
        for (i, (got, want)) in records.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "record {i}");
        }
        assert_eq!(
            crate::support::capture::accepted_bytes(&records, Handle(1)),
            mock.written(Handle(1)),
            "the accepted bytes are exactly the byte stream the transport took"
        );
    });
}

#[test]
fn failed_sends_and_reads_are_recorded_with_their_error_kinds() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(2),
                SendStep::Fail(io::ErrorKind::BrokenPipe),
            ],
        );
        let (capture, file) = Capture::to_memory();
        let functions = capture.wrap(mock.functions());
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(functions)
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        tokio::time::sleep(ms(3)).await;
        mock.push_read_error(Handle(1), io::ErrorKind::ConnectionReset);
        settle().await;
        let failed = socket
            .send(Write::new(&b"abcdef"[..]))
            .await
            .expect("mailbox");
        assert!(failed.is_err(), "the socket closed on the read error");
        settle().await;
        let records = crate::support::capture::records(&file.contents());
        let reads: Vec<&Record> = records
            .iter()
            .filter(|r| {
                matches!(
                    r.event,
                    CaptureEvent::RecvFrom {
                        answer: RecvAnswer::Failed(_),
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(reads.len(), 1, "{records:#?}");
        assert_eq!(reads[0].at, ms(3));
        assert_eq!(
            reads[0].event,
            recv(RecvAnswer::Failed(RecordedError::Io(
                io::ErrorKind::ConnectionReset
            )))
        );
        assert_eq!(records.last().map(|r| &r.event), Some(&CaptureEvent::Close));

        // A second socket whose send fails.
        let (capture, file) = Capture::to_memory();
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::Accept(2),
                SendStep::Fail(io::ErrorKind::BrokenPipe),
            ],
        );
        let socket = Socket::builder()
            .functions(capture.wrap(mock.functions()))
            .connect(mock_peer())
            .await
            .expect("connect");
        let answer = socket
            .send(Write::new(&b"abcdef"[..]))
            .await
            .expect("mailbox");
        assert_eq!(answer.expect_err("failed").bytes_sent(), 2);
        settle().await;
        let sends: Vec<CaptureEvent> = crate::support::capture::records(&file.contents())
            .into_iter()
            .filter(|r| matches!(r.event, CaptureEvent::SendV { .. }))
            .map(|r| r.event)
            .collect();
        assert_eq!(
            sends,
            vec![
                send(6, SendAnswer::Accepted(Bytes::from_static(b"ab"))),
                send(
                    4,
                    SendAnswer::Failed(RecordedError::Io(io::ErrorKind::BrokenPipe))
                ),
            ]
        );
    });
}

#[test]
fn a_refused_connect_is_recorded_with_its_error_kind() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.fail_connect(mock_peer(), io::ErrorKind::ConnectionRefused);
        let (capture, file) = Capture::to_memory();
        let refused = Socket::builder()
            .functions(capture.wrap(mock.functions()))
            .connect(mock_peer())
            .await;
        assert!(refused.is_err());
        settle().await;
        let records = crate::support::capture::records(&file.contents());
        assert_eq!(
            records[1].event,
            CaptureEvent::Connect {
                addr: Address::Inet(mock_peer()),
                took: Duration::ZERO,
                result: Err(RecordedError::Io(io::ErrorKind::ConnectionRefused)),
            }
        );
        assert_eq!(records.last().map(|r| &r.event), Some(&CaptureEvent::Close));
    });
}

/// A sink that counts its calls and fails or would block as told.
#[derive(Clone, Default)]
struct TestSink {
    calls: Arc<Mutex<usize>>,
    bytes: Arc<Mutex<Vec<u8>>>,
    /// Answers for the first calls (then everything is taken).
    errors: Arc<Mutex<Vec<io::ErrorKind>>>,
}

impl io::Write for TestSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        *self.calls.lock().expect("lock") += 1;
        let mut errors = self.errors.lock().expect("lock");
        if !errors.is_empty() {
            return Err(errors.remove(0).into());
        }
        self.bytes.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes 100 lines through `functions` on a socket that gets the mock's `handle`, and
/// checks they all reach the mock.
async fn traffic_on(mock: &MockTransport, functions: SocketFunctions, handle: Handle) {
    let socket = Socket::builder()
        .functions(functions)
        .connect(mock_peer())
        .await
        .expect("connect");
    let mut expected = Vec::new();
    for i in 0..100 {
        let line = format!("line {i}\n");
        expected.extend_from_slice(line.as_bytes());
        socket
            .send(Write::new(Bytes::from(line)))
            .await
            .expect("mailbox")
            .expect("written");
    }
    socket.send(Close::Graceful).await.expect("mailbox");
    settle().await;
    assert_eq!(mock.written(handle), expected);
    assert!(mock.is_closed(handle));
}

async fn traffic(mock: &MockTransport, functions: SocketFunctions) {
    traffic_on(mock, functions, Handle(1)).await;
}

#[test]
fn a_failing_sink_stops_the_capture_and_never_touches_the_traffic() {
    let (log, _guard) = WarnLog::start();
    run_paused(|| async {
        let mock = MockTransport::start();
        let sink = TestSink::default();
        sink.errors
            .lock()
            .expect("lock")
            .push(io::ErrorKind::PermissionDenied);
        let functions = Capture::new(sink.clone())
            .flush_at(0)
            .wrap(mock.functions());
        traffic(&mock, functions).await;
        assert_eq!(
            *sink.calls.lock().expect("lock"),
            1,
            "the sink is never called again after its error"
        );
        assert!(sink.bytes.lock().expect("lock").is_empty());
    });
    assert_eq!(
        log.lines_with("capture: sink failed, capture stopped"),
        1,
        "reported once"
    );
}

#[test]
fn a_sink_that_would_block_keeps_every_record_until_it_takes_them() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let sink = TestSink::default();
        sink.errors
            .lock()
            .expect("lock")
            .extend([io::ErrorKind::WouldBlock; 5]);
        let functions = Capture::new(sink.clone())
            .flush_at(0)
            .wrap(mock.functions());
        traffic(&mock, functions).await;
        let bytes = sink.bytes.lock().expect("lock").clone();
        let records = crate::support::capture::records(&bytes);
        let sends = records
            .iter()
            .filter(|r| matches!(r.event, CaptureEvent::SendV { .. }))
            .count();
        assert_eq!(sends, 100, "no record lost while the sink would block");
        assert_eq!(
            crate::support::capture::accepted_bytes(&records, Handle(1)),
            mock.written(Handle(1))
        );
    });
}

#[test]
fn a_sink_that_keeps_blocking_past_the_buffer_limit_stops_the_capture() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let sink = TestSink::default();
        sink.errors
            .lock()
            .expect("lock")
            .extend([io::ErrorKind::WouldBlock; 1000]);
        let functions = Capture::new(sink.clone())
            .flush_at(0)
            .buffer_limit(200)
            .wrap(mock.functions());
        traffic(&mock, functions.clone()).await;
        let calls = *sink.calls.lock().expect("lock");
        assert!(
            calls < 100,
            "the capture stopped once 200 bytes were waiting, long before the 100 writes' records ({calls} calls)"
        );
        traffic_on(&mock, functions, Handle(2)).await;
        assert_eq!(
            *sink.calls.lock().expect("lock"),
            calls,
            "a stopped capture never calls its sink again"
        );
        assert!(sink.bytes.lock().expect("lock").is_empty());
    });
}

#[test]
fn records_are_buffered_until_the_threshold_or_a_close() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let sink = TestSink::default();
        let functions = Capture::new(sink.clone())
            .flush_at(1 << 20)
            .wrap(mock.functions());
        let socket = Socket::builder()
            .functions(functions)
            .connect(mock_peer())
            .await
            .expect("connect");
        socket
            .send(Write::new(&b"buffered"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        settle().await;
        assert_eq!(*sink.calls.lock().expect("lock"), 0, "still buffered");
        socket.send(Close::Graceful).await.expect("mailbox");
        settle().await;
        assert_eq!(*sink.calls.lock().expect("lock"), 1, "one write on close");
        let records = crate::support::capture::records(&sink.bytes.lock().expect("lock"));
        assert_eq!(records.last().map(|r| &r.event), Some(&CaptureEvent::Close));
    });
}

#[test]
fn a_quiet_capture_is_written_out_when_a_record_comes_after_the_interval() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let sink = TestSink::default();
        let functions = Capture::new(sink.clone())
            .flush_at(1 << 20)
            .flush_every(ms(10))
            .wrap(mock.functions());
        let socket = Socket::builder()
            .functions(functions)
            .connect(mock_peer())
            .await
            .expect("connect");
        socket
            .send(Write::new(&b"early"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        tokio::time::sleep(ms(9)).await;
        settle().await;
        assert_eq!(*sink.calls.lock().expect("lock"), 0, "within the interval");
        tokio::time::sleep(ms(11)).await;
        socket
            .send(Write::new(&b"late"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        assert_eq!(*sink.calls.lock().expect("lock"), 1, "written out");
        let records = crate::support::capture::records(&sink.bytes.lock().expect("lock"));
        assert_eq!(
            crate::support::capture::accepted_bytes(&records, Handle(1)),
            b"earlylate"
        );
    });
}

#[test]
fn a_capture_hands_its_inner_transport_at_most_its_per_call_bound() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (capture, file) = Capture::to_memory();
        let socket = Socket::builder()
            .functions(capture.max_per_call(100).wrap(mock.functions()))
            .connect(mock_peer())
            .await
            .expect("connect");
        let payload = crate::support::pattern(1000, 3);
        let done = socket
            .send(Write::new(payload.clone()))
            .await
            .expect("mailbox")
            .expect("written");
        assert_eq!(done.sendv_calls, 10);
        let log = mock.sendv_log(Handle(1));
        assert_eq!(log.len(), 10);
        assert!(log.iter().all(|l| l.offered == 100 && l.accepted == 100));
        let records = crate::support::capture::records(&file.contents());
        let offered: Vec<u64> = records
            .iter()
            .filter_map(|r| match r.event {
                CaptureEvent::SendV { offered, .. } => Some(offered),
                _ => None,
            })
            .collect();
        assert_eq!(
            offered,
            (0..10).rev().map(|i| 100 + i * 100).collect::<Vec<u64>>(),
            "the records keep what the socket offered, not the bound"
        );
        assert_eq!(
            crate::support::capture::accepted_bytes(&records, Handle(1)),
            payload
        );
    });
}
