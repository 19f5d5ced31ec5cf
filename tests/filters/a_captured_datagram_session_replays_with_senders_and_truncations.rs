//! Datagram sockets through a capture: each datagram received is recorded whole with
//! its sender (a truncated one as truncated, with the read's `max_len`), each datagram
//! sent with its destination; replayed, the socket receives the same datagrams from the
//! same senders, truncated the same way, and its sends are answered the same way.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{channel, drain, pattern, run_paused, settle};
use sockactor::filters::{Capture, CaptureEvent, RecvAnswer, Replay, SendAnswer};
use sockactor::messages::{
    Address, DatagramEvent, DatagramEventKind, Handle, SendDatagram, SocketKind,
};
use sockactor::{DatagramConfig, DatagramSocket, MockTransport, SocketFunctions};

fn sender() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 5], 777))
}

fn destination() -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 9], 53))
}

/// (bytes, from, truncated) of each datagram received, and each send's answer.
type Seen = (
    Vec<(Vec<u8>, Option<Address>, bool)>,
    Vec<Result<usize, String>>,
);

/// Binds, sends two datagrams at 2 ms, receives for 10 ms.
async fn program(functions: SocketFunctions) -> Seen {
    let (events, mut heard) = channel::<DatagramEvent>();
    let (socket, _) = DatagramSocket::builder()
        .functions(functions)
        .config(DatagramConfig {
            max_datagram_size: 16,
            ..DatagramConfig::default()
        })
        .subscriber(events)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    tokio::time::sleep(Duration::from_millis(2)).await;
    let mut sent = Vec::new();
    for payload in [&b"query one"[..], b"query two"] {
        let answer = socket
            .send(SendDatagram::new(payload).to(destination()))
            .await
            .expect("mailbox");
        sent.push(answer.map(|s| s.len).map_err(|e| e.to_string()));
    }
    tokio::time::sleep(Duration::from_millis(8)).await;
    settle().await;
    let received = drain(&mut heard)
        .into_iter()
        .filter_map(|e| match e.kind {
            DatagramEventKind::Received {
                bytes,
                from,
                truncated,
            } => Some((bytes.to_vec(), from, truncated)),
            _ => None,
        })
        .collect();
    (received, sent)
}

#[test]
fn datagrams_are_captured_with_senders_and_destinations_and_replay_the_same() {
    let (captured, bytes) = run_paused(|| async {
        let mock = MockTransport::start();
        let (capture, file) = Capture::to_memory();
        let functions = capture.wrap(mock.functions());
        let feeder = mock.clone();
        actix::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            feeder.push_datagram(Handle(1), pattern(40, 1), sender());
            tokio::time::sleep(Duration::from_millis(4)).await;
            feeder.push_datagram(Handle(1), &b"short answer"[..], sender());
        });
        let seen = program(functions).await;
        (seen, file.contents())
    });
    assert_eq!(
        captured.0,
        vec![
            (pattern(40, 1)[..16].to_vec(), Some(sender().into()), true),
            (b"short answer".to_vec(), Some(sender().into()), false),
        ]
    );
    assert_eq!(captured.1, vec![Ok(9), Ok(9)]);

    let records = crate::support::capture::records(&bytes);
    assert!(matches!(
        records[0].event,
        CaptureEvent::Open {
            kind: SocketKind::Datagram,
            ..
        }
    ));
    let reads: Vec<(Duration, RecvAnswer)> = records
        .iter()
        .filter_map(|r| match &r.event {
            CaptureEvent::RecvFrom { answer, .. } if *answer != RecvAnswer::WouldBlock => {
                Some((r.at, answer.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        reads,
        vec![
            (
                Duration::from_millis(1),
                RecvAnswer::Truncated {
                    bytes: pattern(40, 1)[..16].to_vec().into(),
                    from: Some(sender().into()),
                }
            ),
            (
                Duration::from_millis(5),
                RecvAnswer::Data {
                    bytes: b"short answer".to_vec().into(),
                    from: Some(sender().into()),
                }
            ),
        ]
    );
    let sends: Vec<(Option<Address>, SendAnswer)> = records
        .iter()
        .filter_map(|r| match &r.event {
            CaptureEvent::SendV { to, answer, .. } => Some((to.clone(), answer.clone())),
            _ => None,
        })
        .collect();
    let to = Some(Address::Inet(destination()));
    assert_eq!(
        sends,
        vec![
            (
                to.clone(),
                SendAnswer::Accepted(b"query one".to_vec().into())
            ),
            (to, SendAnswer::Accepted(b"query two".to_vec().into())),
        ]
    );

    let replayed = run_paused(|| async move {
        let replay = Replay::from_reader(&bytes[..]).expect("valid capture");
        program(replay.functions()).await
    });
    assert_eq!(replayed, captured);
}
