//! A capture into a file, buffered far past the session's size: the socket's close
//! writes every record out (the file reads back whole with a buffered reader, and
//! replays); a capture whose socket never closed is written out when its system stops
//! and drops the filter.

use std::fs::File;
use std::io::BufReader;

use crate::support::capture::{session, writes};
use crate::support::{mock_peer, run_paused, settle, TempPath};
use sockactor::filters::{Capture, CaptureEvent, CaptureReader, Replay};
use sockactor::messages::Handle;
use sockactor::messages::Write;
use sockactor::{MockTransport, Socket};

#[test]
fn a_file_capture_is_written_out_on_close_and_replays() {
    let path = TempPath::new("capture.skcap");
    let file = File::create(&path.0).expect("create the capture file");
    let captured = run_paused(|| async move {
        let mock = MockTransport::start();
        crate::support::capture::script_session(&mock);
        crate::support::capture::spawn_peer(&mock);
        let functions = Capture::new(file).flush_at(1 << 20).wrap(mock.functions());
        session(functions).await
    });
    let reader = BufReader::new(File::open(&path.0).expect("open the capture"));
    let records: Vec<_> = CaptureReader::new(reader)
        .collect::<Result<_, _>>()
        .expect("a whole capture");
    assert_eq!(records.len(), 21);
    assert_eq!(records.last().map(|r| &r.event), Some(&CaptureEvent::Close));
    let all: Vec<u8> = writes().concat();
    assert_eq!(
        crate::support::capture::accepted_bytes(&records, Handle(1)),
        all
    );

    let replay_file = File::open(&path.0).expect("open the capture");
    let replayed = run_paused(|| async move {
        let replay = Replay::from_reader(BufReader::new(replay_file)).expect("valid");
        session(replay.functions()).await
    });
    assert_eq!(replayed, captured);
}

#[test]
fn a_file_capture_still_open_is_written_out_when_its_system_stops() {
    let path = TempPath::new("capture.skcap");
    let file = File::create(&path.0).expect("create the capture file");
    let (socket, before) = run_paused(|| async {
        let mock = MockTransport::start();
        let functions = Capture::new(file).flush_at(1 << 20).wrap(mock.functions());
        let socket = Socket::builder()
            .functions(functions)
            .connect(mock_peer())
            .await
            .expect("connect");
        socket
            .send(Write::new(&b"never closed"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        settle().await;
        let before = std::fs::metadata(&path.0).expect("metadata").len();
        // The socket's address leaves the system with the test, so it never closes.
        (socket, before)
    });
    assert_eq!(before, 0, "nothing written while the capture ran");
    drop(socket);
    let reader = BufReader::new(File::open(&path.0).expect("open the capture"));
    let records: Vec<_> = CaptureReader::new(reader)
        .collect::<Result<_, _>>()
        .expect("a whole capture");
    assert!(records.iter().all(|r| r.event != CaptureEvent::Close));
    assert_eq!(
        crate::support::capture::accepted_bytes(&records, Handle(1)),
        b"never closed"
    );
}

/// A sink that answers `WouldBlock` to every other call and takes at most 5 bytes a call.
#[derive(Clone, Default)]
struct Flaky {
    bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl std::io::Write for Flaky {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n.is_multiple_of(2) {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let take = buf.len().min(5);
        self.bytes
            .lock()
            .expect("lock")
            .extend_from_slice(&buf[..take]);
        Ok(take)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A sink that would block when the capture stops: the records it could not take are
/// reported (a warning naming how many bytes), not lost silently.
#[test]
fn records_a_blocked_sink_could_not_take_when_the_capture_stops_are_reported() {
    let (log, _guard) = crate::support::WarnLog::start();
    let sink = Flaky::default();
    let written = run_paused(|| {
        let sink = sink.clone();
        async move {
            let mock = MockTransport::start();
            let functions = Capture::new(sink).flush_at(0).wrap(mock.functions());
            let socket = Socket::builder()
                .functions(functions)
                .connect(mock_peer())
                .await
                .expect("connect");
            for i in 0..5u8 {
                socket
                    .send(Write::new(vec![i; 40]))
                    .await
                    .expect("mailbox")
                    .expect("written");
            }
            drop(socket);
            settle().await;
            mock.written(Handle(1)).len()
        }
    });
    assert_eq!(written, 200);
    let bytes = sink.bytes.lock().expect("lock").clone();
    let whole = CaptureReader::new(&bytes[..]).all(|r| r.is_ok());
    assert!(
        whole || log.lines_with("capture") > 0,
        "the capture's tail is lost and nothing says so ({} bytes reached the sink)",
        bytes.len()
    );
}
