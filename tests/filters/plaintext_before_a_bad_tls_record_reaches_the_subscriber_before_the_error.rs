//! A TLS peer's good records that come in the same read as a bad one (found by the
//! `tls_inbound` fuzz target): their plaintext was authenticated, so the subscriber gets
//! it, byte exact, before the one read error for the bad record. What arrives does not
//! depend on how the stream was cut into reads.

use std::io;

use crate::support::tls::{client_config, connect_to_mock_peer, pki, Pki};
use crate::support::{pattern, run_paused, settle, Recorder};
use sockactor::filters::Tls;
use sockactor::messages::{Handle, SocketEventKind};
use sockactor::{MockTransport, Socket, SocketFunctions, TransportError};

fn tls(pki: &Pki, mock: &MockTransport, bound: usize) -> SocketFunctions {
    Tls::client(client_config(pki.roots.clone()), "localhost")
        .expect("server name")
        .max_output_per_call(bound)
        .wrap(mock.functions())
}

/// What the subscriber saw.
struct Outcome {
    good: Vec<u8>,
    received: Vec<u8>,
    /// Each read error's kind, and whether a rustls error is inside.
    failures: Vec<(io::ErrorKind, bool)>,
    eofs: usize,
    /// Data came after the read error.
    data_after_failure: bool,
}

/// Good records, then a flipped one, arrive in one read or split at `split`.
fn run(bound: usize, split: Option<usize>) -> Outcome {
    run_paused(|| async move {
        let pki = pki(&["localhost"]);
        let mock = MockTransport::start();
        let recorder = Recorder::default();
        let builder = Socket::builder().subscriber(recorder.start().recipient());
        let (_socket, mut peer) =
            connect_to_mock_peer(&mock, builder, tls(&pki, &mock, bound), pki.server.clone()).await;
        let good = pattern(3000, 31);
        let mut wire = peer.seal(&good[..1000]);
        wire.extend(peer.seal(&good[1000..]));
        let bad_from = wire.len();
        wire.extend(peer.seal(b"never delivered"));
        wire[bad_from + 7] ^= 0x40;
        match split {
            Some(at) => {
                mock.push_inbound(Handle(1), wire[..at].to_vec());
                mock.push_inbound(Handle(1), wire[at..].to_vec());
            }
            None => mock.push_inbound(Handle(1), wire),
        }
        settle().await;
        let received = recorder.received();
        let eofs = recorder.count(|e| matches!(e, SocketEventKind::Eof));
        let events = recorder.events.lock().expect("lock");
        let failures = events
            .iter()
            .filter_map(|e| match e {
                SocketEventKind::ReadFailed(TransportError::Io(e)) => Some((
                    e.kind(),
                    e.get_ref()
                        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
                )),
                SocketEventKind::ReadFailed(_) => Some((io::ErrorKind::Other, false)),
                _ => None,
            })
            .collect();
        Outcome {
            good,
            received,
            failures,
            eofs,
            data_after_failure: events
                .iter()
                .skip_while(|e| !matches!(e, SocketEventKind::ReadFailed(_)))
                .any(|e| matches!(e, SocketEventKind::Received(_))),
        }
    })
}

fn assert_good_then_one_error(outcome: &Outcome) {
    assert_eq!(
        outcome.received.len(),
        outcome.good.len(),
        "every good byte arrives"
    );
    assert!(
        outcome.received == outcome.good,
        "the good plaintext, byte exact"
    );
    assert_eq!(
        outcome.failures,
        vec![(io::ErrorKind::InvalidData, true)],
        "one read error, InvalidData with the rustls error inside"
    );
    assert!(
        !outcome.data_after_failure,
        "the error comes after the data"
    );
    assert_eq!(outcome.eofs, 0, "a bad record is no clean EOF");
}

#[test]
fn good_records_in_the_same_read_as_a_bad_one_are_delivered_first() {
    assert_good_then_one_error(&run(64 * 1024, None));
}

#[test]
fn a_small_read_bound_still_delivers_every_good_byte_first() {
    assert_good_then_one_error(&run(7, None));
}

#[test]
fn the_good_records_read_apart_from_the_bad_one_give_the_same_events() {
    assert_good_then_one_error(&run(64 * 1024, Some(1200)));
}
