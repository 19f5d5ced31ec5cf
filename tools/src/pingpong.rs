//! Round trips through a sockactor socket and their percentiles: what `tls_bench` and
//! `crowd` measure the same way.

use std::time::Instant;

use bytes::Bytes;
use sockactor::messages::SocketEventKind;
use sockactor::Writer;
use tokio::sync::mpsc::UnboundedReceiver;

/// `count` round trips of `ping` through `writer`, each waiting until its length in bytes
/// came back on `events` (an echo peer); each round trip's time in µs, in order.
///
/// Panics on any other event, or when the events end: the tools' peers only echo.
pub async fn round_trips(
    writer: &Writer,
    events: &mut UnboundedReceiver<SocketEventKind>,
    ping: &Bytes,
    count: usize,
) -> Vec<f64> {
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        writer.write(ping.clone()).expect("write");
        let mut got = 0;
        while got < ping.len() {
            match events.recv().await.expect("events") {
                SocketEventKind::Received(bytes) => got += bytes.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    latencies
}

/// The p50 and p99 of `latencies` (sorted here).
pub fn p50_p99(mut latencies: Vec<f64>) -> (f64, f64) {
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let last = latencies.len().saturating_sub(1);
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(last))
            .copied()
            .unwrap_or(f64::NAN)
    };
    (at(0.50), at(0.99))
}
