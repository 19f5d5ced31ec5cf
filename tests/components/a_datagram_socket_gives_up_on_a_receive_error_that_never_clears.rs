//! A datagram socket takes a failed receive in its stride (an ICMP error reported on a
//! connected UDP socket, say), but a run of failures with no datagram between them is an
//! error that will not clear: the socket fails instead of spinning.

use std::net::SocketAddr;

use crate::support::{channel, drain, run_paused, settle};
use sockactor::filters::{FaultInjector, Faults};
use sockactor::messages::{DatagramEvent, DatagramEventKind, GetDatagramInfo, Handle};
use sockactor::{DatagramSocket, MockTransport};

#[test]
fn a_permanent_receive_error_fails_the_socket_after_a_bounded_run() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // Every receive on the handle fails with ConnectionReset, for good.
        let functions =
            FaultInjector::new(1, Faults::default().read_reset(1.0)).wrap(mock.functions());
        let (events, mut heard) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(functions)
            .subscriber(events)
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        mock.push_datagram(Handle(1), &b"x"[..], SocketAddr::from(([127, 0, 0, 1], 9)));
        settle().await;
        let events = drain(&mut heard);
        let failures = events
            .iter()
            .filter(|e| matches!(e.kind, DatagramEventKind::ReadFailed(_)))
            .count();
        assert_eq!(
            failures, 9,
            "8 taken in stride, the 9th ends it: {events:?}"
        );
        assert!(
            matches!(
                events.last().map(|e| &e.kind),
                Some(DatagramEventKind::Closed { cause: Some(_) })
            ),
            "the socket closed with the error: {events:?}"
        );
        let info = socket.send(GetDatagramInfo).await.expect("info");
        assert!(!info.open);
        assert!(mock.is_closed(Handle(1)));
    });
}
