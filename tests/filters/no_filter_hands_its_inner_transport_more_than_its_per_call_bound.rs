//! Fairness: however large the batches a socket offers, no `sendv` a filter makes on its
//! inner transport carries more than the filter's per-call bound (for a stack, the
//! innermost filter's), and every byte still arrives in order. Datagrams are the
//! exception the contract allows: one is never cut, so it goes whole.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{mock_peer, pattern, run_paused, watermarks};
use bytes::Bytes;
use sockactor::filters::{FaultInjector, Faults, Throttle};
use sockactor::messages::{GetWriter, Handle, SendDatagram};
use sockactor::{DatagramSocket, MockTransport, Socket, SocketFunctions};

const TOTAL: usize = 100_000;

/// Writes `TOTAL` bytes in writes of mixed sizes (coalesced into large batches) through
/// `wrap(mock)`, and checks every inner call against `bound`.
async fn check(bound: usize, wrap: impl FnOnce(SocketFunctions) -> SocketFunctions) {
    let mock = MockTransport::start();
    let socket = Socket::builder()
        .functions(wrap(mock.functions()))
        .config(watermarks(1 << 24, 1 << 20))
        .connect(mock_peer())
        .await
        .expect("connect");
    let writer = socket.send(GetWriter).await.expect("writer");
    let data = Bytes::from(pattern(TOTAL, 5));
    let sizes = [1usize, 30_000, 7, 4096, 50_000, 900];
    let (mut offset, mut last) = (0, None);
    for size in sizes.iter().cycle() {
        if offset == TOTAL {
            break;
        }
        let end = (offset + size).min(TOTAL);
        last = Some(writer.write_answered(data.slice(offset..end)));
        offset = end;
    }
    last.expect("writes").await.expect("written");
    let log = mock.sendv_log(Handle(1));
    let largest = log.iter().map(|r| r.offered).max().unwrap_or(0);
    assert!(
        largest <= bound,
        "a sendv of {largest} bytes reached the transport, bound {bound}"
    );
    assert!(log.len() >= TOTAL / bound, "{} calls", log.len());
    assert_eq!(mock.written(Handle(1)), data);
}

#[test]
fn the_fault_injector_hands_on_at_most_its_bound_per_call() {
    run_paused(|| async {
        check(1000, |inner| {
            FaultInjector::new(9, Faults::default())
                .max_per_call(1000)
                .wrap(inner)
        })
        .await;
        check(777, |inner| {
            let faults = Faults::default()
                .partial(0.5)
                .would_block(0.2, Duration::from_millis(1));
            FaultInjector::new(9, faults).max_per_call(777).wrap(inner)
        })
        .await;
    });
}

#[test]
fn the_throttle_hands_on_at_most_its_bound_per_call() {
    run_paused(|| async {
        check(2048, |inner| {
            Throttle::per_socket(1 << 30, 1 << 20)
                .max_per_call(2048)
                .wrap(inner)
        })
        .await;
    });
}

#[test]
fn a_stack_hands_on_at_most_the_innermost_bound_per_call() {
    run_paused(|| async {
        check(500, |inner| {
            Throttle::per_socket(1 << 30, 1 << 20)
                .max_per_call(4096)
                .wrap(
                    FaultInjector::new(2, Faults::default())
                        .max_per_call(500)
                        .wrap(inner),
                )
        })
        .await;
    });
}

#[test]
fn a_datagram_larger_than_the_bound_goes_whole() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let functions = Throttle::per_socket(1 << 30, 1 << 20)
            .max_per_call(10)
            .wrap(
                FaultInjector::new(4, Faults::default().partial(1.0))
                    .max_per_call(10)
                    .wrap(mock.functions()),
            );
        let (socket, _) = DatagramSocket::builder()
            .functions(functions)
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let to = SocketAddr::from(([192, 0, 2, 1], 53));
        let sent = socket
            .send(SendDatagram::new(pattern(100, 8)).to(to))
            .await
            .expect("answered")
            .expect("sent");
        assert_eq!(sent.len, 100);
        let datagrams = mock.datagrams(Handle(1));
        assert_eq!(datagrams.len(), 1);
        assert_eq!(datagrams[0].bytes, pattern(100, 8));
    });
}
