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
