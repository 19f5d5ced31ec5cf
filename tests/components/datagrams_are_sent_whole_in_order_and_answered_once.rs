//! Datagram sockets on the mock transport: every datagram leaves whole, in order, in a
//! `sendv` of its own carrying its destination, never merged with another or split; each
//! is answered exactly once, whatever the transport does (partial takes, would-blocks,
//! failures); a full queue and a missing destination refuse with the payload handed back.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{channel, drain, local, run_paused, settle};
use bytes::Bytes;
use sockactor::messages::{
    Address, Close, DatagramEvent, DatagramEventKind, GetDatagramInfo, GetDatagramStats, Handle,
    SendDatagram,
};
use sockactor::{
    DatagramConfig, DatagramError, DatagramSocket, IoBatch, MockDatagram, MockTransport, SendStep,
};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], port))
}

#[test]
fn every_datagram_leaves_whole_in_order_with_its_destination() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (socket, bound) = DatagramSocket::builder()
            .functions(mock.functions())
            .bind(local())
            .await
            .expect("bind");
        assert_eq!(
            bound,
            Address::Inet(SocketAddr::from(([127, 0, 0, 1], 40_000)))
        );

        // Sizes 0 to 199, some in several segments, to three destinations in turn.
        let mut expected = Vec::new();
        let mut answers = Vec::new();
        for i in 0..200usize {
            let bytes: Vec<u8> = (0..i).map(|b| (b + i) as u8).collect();
            let payload: IoBatch = if i % 3 == 0 && i > 2 {
                let (a, b) = bytes.split_at(i / 2);
                vec![Bytes::copy_from_slice(a), Bytes::copy_from_slice(b)].into()
            } else {
                bytes.clone().into()
            };
            let to = addr(1000 + (i % 3) as u16);
            expected.push(MockDatagram {
                bytes,
                to: Some(to.into()),
            });
            answers.push(actix::spawn(
                socket.send(SendDatagram::new(payload).to(to).tag(i as u64)),
            ));
        }
        for (i, answer) in answers.into_iter().enumerate() {
            let sent = answer
                .await
                .expect("join")
                .expect("answered")
                .expect("sent");
            assert_eq!(sent.len, i);
        }
        assert_eq!(mock.datagrams(Handle(1)), expected);
        assert_eq!(mock.sendv_calls(Handle(1)), 200, "one sendv per datagram");
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!((stats.sent, stats.send_failed), (200, 0));
        assert_eq!(stats.bytes_sent, (0..200u64).sum::<u64>());
    });
}

#[test]
fn each_datagram_is_answered_once_whatever_the_transport_does() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [
                SendStep::AcceptAll,
                // Takes 3 of the second datagram's bytes: an error, and no resend.
                SendStep::Accept(3),
                // The third meets a would-block, then goes out whole.
                SendStep::WouldBlock(Duration::from_millis(5)),
                SendStep::AcceptAll,
                // The fourth fails on its own; the fifth still goes.
                SendStep::Fail(io::ErrorKind::ConnectionRefused),
                SendStep::AcceptAll,
            ],
        );
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .bind(local())
            .await
            .expect("bind");
        let payloads: Vec<&'static [u8]> = vec![b"one", b"second", b"third!", b"fourth", b"fifth"];
        let answers: Vec<_> = payloads
            .iter()
            .map(|p| actix::spawn(socket.send(SendDatagram::new(*p).to(addr(53)))))
            .collect();
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.expect("join").expect("answered"));
        }
        assert_eq!(results[0].as_ref().map(|s| s.len).ok(), Some(3));
        assert!(
            matches!(results[1], Err(DatagramError::Partial { sent: 3, len: 6 })),
            "{:?}",
            results[1]
        );
        let third = results[2].as_ref().expect("sent after the would-block");
        assert_eq!(third.len, 6);
        assert!(third.latency >= Duration::from_millis(5));
        assert!(
            matches!(&results[3], Err(DatagramError::Transport(e)) if e.io_kind() == Some(io::ErrorKind::ConnectionRefused)),
            "{:?}",
            results[3]
        );
        assert_eq!(results[4].as_ref().map(|s| s.len).ok(), Some(5));

        let sent: Vec<Vec<u8>> = mock
            .datagrams(Handle(1))
            .into_iter()
            .map(|d| d.bytes)
            .collect();
        assert_eq!(sent, [&b"one"[..], b"sec", b"third!", b"fifth"]);
        let log = mock.sendv_log(Handle(1));
        let offered: Vec<usize> = log.iter().map(|r| r.offered).collect();
        assert_eq!(
            offered,
            [3, 6, 6, 6, 6, 5],
            "the blocked datagram is offered again whole"
        );
        assert!(log[2].would_block);
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(
            (stats.sent, stats.send_failed, stats.would_blocks),
            (3, 2, 1)
        );
        assert!(
            !mock.is_closed(Handle(1)),
            "per-datagram errors do not close the socket"
        );
    });
}

#[test]
fn a_connected_socket_sends_without_a_destination_and_an_unconnected_one_refuses() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let connected = DatagramSocket::builder()
            .functions(mock.functions())
            .connect(addr(7))
            .await
            .expect("connect");
        let info = connected.send(GetDatagramInfo).await.expect("info");
        assert_eq!(info.peer, Some(addr(7).into()));
        connected
            .send(SendDatagram::new(&b"to the peer"[..]))
            .await
            .expect("answered")
            .expect("sent");
        assert_eq!(
            mock.datagrams(info.handle),
            [MockDatagram {
                bytes: b"to the peer".to_vec(),
                to: None
            }]
        );
        assert_eq!(mock.peer(info.handle), Some(addr(7).into()));

        let (unconnected, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .bind(local())
            .await
            .expect("bind");
        let refused = unconnected
            .send(SendDatagram::new(&b"nowhere"[..]))
            .await
            .expect("answered")
            .expect_err("no destination");
        match refused {
            DatagramError::NoDestination { payload } => {
                assert_eq!(payload.to_vec().expect("in memory"), b"nowhere")
            }
            other => panic!("expected NoDestination, got {other:?}"),
        }
    });
}

#[test]
fn a_full_queue_refuses_with_the_payload_handed_back() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .immediate()
            .config(DatagramConfig {
                max_queued: 2,
                ..DatagramConfig::default()
            })
            .bind(local())
            .await
            .expect("bind");
        // The first is offered (and held by the transport), two more fill the queue.
        let held: Vec<_> = (0..3u8)
            .map(|i| actix::spawn(socket.send(SendDatagram::new(vec![i; 10]).to(addr(9)))))
            .collect();
        settle().await;
        let refused = socket
            .send(SendDatagram::new(vec![9u8; 10]).to(addr(9)))
            .await
            .expect("answered")
            .expect_err("queue full");
        match refused {
            DatagramError::QueueFull {
                queued,
                queued_bytes,
                payload,
            } => {
                assert_eq!((queued, queued_bytes), (2, 20));
                assert_eq!(payload.to_vec().expect("in memory"), vec![9u8; 10]);
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        for answer in held {
            answer
                .await
                .expect("join")
                .expect("answered")
                .expect("sent");
        }
        let sent: Vec<Vec<u8>> = mock
            .datagrams(Handle(1))
            .into_iter()
            .map(|d| d.bytes)
            .collect();
        assert_eq!(sent, [vec![0u8; 10], vec![1u8; 10], vec![2u8; 10]]);
    });
}

#[test]
fn fire_and_forget_failures_reach_the_subscriber_with_their_tags() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Fail(io::ErrorKind::PermissionDenied)]);
        let (events, mut heard) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .subscriber(events)
            .bind(local())
            .await
            .expect("bind");
        socket.do_send(SendDatagram::new(&b"denied"[..]).to(addr(1)).tag(41));
        socket.do_send(SendDatagram::new(&b"no address"[..]).tag(42));
        socket.do_send(SendDatagram::new(&b"fine"[..]).to(addr(1)).tag(43));
        settle().await;
        let failures: Vec<(Option<u64>, String)> = drain(&mut heard)
            .into_iter()
            .filter_map(|e| match e.kind {
                DatagramEventKind::SendFailed { tag, error } => Some((tag, format!("{error:?}"))),
                _ => None,
            })
            .collect();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures
            .iter()
            .any(|(t, e)| *t == Some(41) && e.contains("PermissionDenied")));
        assert!(failures
            .iter()
            .any(|(t, e)| *t == Some(42) && e.contains("NoDestination")));
        assert_eq!(mock.datagrams(Handle(1)).len(), 1);
    });
}

#[test]
fn closing_answers_every_queued_datagram() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .immediate()
            .bind(local())
            .await
            .expect("bind");
        let answers: Vec<_> = (0..4u8)
            .map(|i| actix::spawn(socket.send(SendDatagram::new(vec![i; 4]).to(addr(9)))))
            .collect();
        settle().await;
        socket.send(Close::Abort).await.expect("closed");
        let later = socket
            .send(SendDatagram::new(&b"late"[..]).to(addr(9)))
            .await
            .expect("answered");
        assert!(matches!(later, Err(DatagramError::Closed)), "{later:?}");
        for answer in answers {
            let result = answer.await.expect("join").expect("answered");
            assert!(matches!(result, Err(DatagramError::Aborted)), "{result:?}");
        }
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        assert!(mock.datagrams(Handle(1)).is_empty());
    });
}

#[test]
fn a_datagram_the_transport_is_taking_when_the_socket_aborts_is_answered_truthfully() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(
            Handle(1),
            [SendStep::Slow {
                bytes: usize::MAX,
                after: Duration::from_millis(10),
            }],
        );
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .immediate()
            .bind(local())
            .await
            .expect("bind");
        let taking = actix::spawn(socket.send(SendDatagram::new(&b"in flight"[..]).to(addr(5))));
        let queued = actix::spawn(socket.send(SendDatagram::new(&b"queued"[..]).to(addr(5))));
        settle().await;
        socket.send(Close::Abort).await.expect("closed");
        let queued = queued.await.expect("join").expect("answered");
        assert!(matches!(queued, Err(DatagramError::Aborted)), "{queued:?}");
        let taking = taking.await.expect("join").expect("answered");
        assert_eq!(
            taking.map(|s| s.len).ok(),
            Some(9),
            "the transport took it: sent"
        );
        assert_eq!(mock.datagrams(Handle(1)).len(), 1);
    });
}

/// Fire-and-forget datagrams refused by a closed socket are reported to the subscriber in
/// the order they were sent (their reports once went through a message to self each,
/// which actix may handle out of order).
#[test]
fn do_send_datagrams_refused_after_a_close_are_reported_in_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (subscriber, mut events) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .subscriber(subscriber)
            .bind(local())
            .await
            .expect("bind");
        socket.send(Close::Abort).await.expect("closed");
        for tag in 0..8u64 {
            socket.do_send(SendDatagram::new(vec![7u8; 4]).to(addr(1000)).tag(tag));
        }
        settle().await;
        let tags: Vec<u64> = drain(&mut events)
            .into_iter()
            .filter_map(|e| match e.kind {
                DatagramEventKind::SendFailed { tag, .. } => tag,
                _ => None,
            })
            .collect();
        assert_eq!(
            tags,
            (0..8).collect::<Vec<_>>(),
            "reported in the order sent"
        );
    });
}

/// Refusals before a datagram is queued count as failed too: a file range too long to
/// read into one datagram, and no destination on an unconnected socket.
#[test]
fn refusals_before_queuing_are_counted_as_failed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .bind(local())
            .await
            .expect("bind");
        let path = crate::support::TempPath::new("long-datagram");
        std::fs::write(&path.0, vec![7u8; 70_000]).expect("written");
        let file = std::fs::File::open(&path.0).expect("opened");
        let mut batch = sockactor::IoBatch::new();
        batch.push_file(sockactor::FileRange::whole(file).expect("range"));
        let to = SocketAddr::from(([127, 0, 0, 1], 9));
        let refused = socket
            .send(SendDatagram::new(batch).to(to))
            .await
            .expect("mailbox");
        assert!(
            matches!(refused, Err(DatagramError::Transport(_))),
            "{refused:?}"
        );
        let refused = socket
            .send(SendDatagram::new(vec![1u8]))
            .await
            .expect("mailbox");
        assert!(
            matches!(refused, Err(DatagramError::NoDestination { .. })),
            "{refused:?}"
        );
        let stats = socket.send(GetDatagramStats).await.expect("stats");
        assert_eq!(stats.send_failed, 2, "{stats:?}");
    });
}

/// A `sendv` that never answers.
struct Silent;

impl actix::Actor for Silent {
    type Context = actix::Context<Self>;
}

impl actix::Handler<sockactor::messages::SendV> for Silent {
    type Result = actix::ResponseActFuture<
        Self,
        Result<sockactor::messages::Sent, sockactor::TransportError>,
    >;
    fn handle(
        &mut self,
        _: sockactor::messages::SendV,
        _: &mut actix::Context<Self>,
    ) -> Self::Result {
        Box::pin(actix::fut::wrap_future(std::future::pending()))
    }
}

/// An abort with a datagram out to a transport that never answers: the queued one is
/// answered `Aborted` at once, the one out `Lost` 10 s after the close (whether it went
/// out is unknown), each once.
#[test]
fn an_abort_with_a_datagram_out_never_answered_answers_it_10_s_later() {
    use actix::Actor;
    run_paused(|| async {
        let mock = MockTransport::start();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions().with_sendv(Silent.start().recipient()))
            .immediate()
            .bind(local())
            .await
            .expect("bind");
        let to = SocketAddr::from(([127, 0, 0, 1], 9));
        let out = actix::spawn(socket.send(SendDatagram::new(vec![1u8]).to(to)));
        let queued = actix::spawn(socket.send(SendDatagram::new(vec![2u8]).to(to)));
        settle().await;
        let t0 = tokio::time::Instant::now();
        socket.do_send(Close::Abort);
        let queued = queued.await.expect("join").expect("mailbox");
        assert!(matches!(queued, Err(DatagramError::Aborted)), "{queued:?}");
        let out = tokio::time::timeout(Duration::from_secs(60), out)
            .await
            .expect("answered, not held for ever")
            .expect("join")
            .expect("mailbox");
        assert!(matches!(out, Err(DatagramError::Lost)), "{out:?}");
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
    });
}
