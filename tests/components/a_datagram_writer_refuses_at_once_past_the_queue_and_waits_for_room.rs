//! `DatagramWriter`: datagrams are admitted against the socket's queue limits before
//! they are sent to it, counting every datagram a writer admitted and the socket has not
//! answered, so a fire-and-forget producer never piles datagrams up in the mailbox.
//! Past the limits a send is refused at once with its payload; `writable` and
//! `send_when_ready` wait for room; a closed socket refuses at once; a datagram refused
//! after admission is reported, never silent.

use std::net::SocketAddr;

use crate::support::{channel, drain, local, run_paused, settle, WarnLog};
use sockactor::messages::{
    Close, DatagramEvent, DatagramEventKind, GetDatagramWriter, Handle, SendDatagram,
};
use sockactor::{DatagramConfig, DatagramError, DatagramSocket, MockTransport, SendStep};

fn peer() -> SocketAddr {
    "127.0.0.1:9053".parse().expect("addr")
}

fn config(max_queued: usize) -> DatagramConfig {
    DatagramConfig {
        max_queued,
        ..DatagramConfig::default()
    }
}

#[test]
fn past_the_queue_a_send_is_refused_at_once_and_room_comes_back_as_datagrams_leave() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(config(4))
            .bind(local())
            .await
            .expect("bind");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        for i in 0..4u8 {
            writer
                .send_to(vec![i], Some(peer().into()))
                .expect("admitted");
        }
        assert_eq!(writer.queued(), 4);
        match writer.send_to(vec![4u8, 4], Some(peer().into())) {
            Err(DatagramError::QueueFull {
                queued, payload, ..
            }) => {
                assert_eq!(queued, 4);
                assert_eq!(payload.to_vec().expect("memory"), vec![4u8, 4]);
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        settle().await;
        // The transport takes them now: the room comes back and the waiting sender goes.
        let waiting = {
            let writer = writer.clone();
            actix::spawn(async move {
                writer
                    .send_when_ready(vec![4u8, 4], Some(peer().into()))
                    .await
            })
        };
        settle().await;
        assert!(!waiting.is_finished(), "no room yet");
        mock.set_default_step(SendStep::AcceptAll);
        mock.release(Handle(1));
        waiting
            .await
            .expect("join")
            .expect("sent once there was room");
        settle().await;
        let sent: Vec<Vec<u8>> = mock
            .datagrams(Handle(1))
            .into_iter()
            .map(|d| d.bytes)
            .collect();
        assert_eq!(sent, [vec![0], vec![1], vec![2], vec![3], vec![4, 4]]);
        assert_eq!(writer.queued(), 0);
    });
}

#[test]
fn a_fire_and_forget_producer_never_has_more_admitted_than_the_queue_holds() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(config(64))
            .bind(local())
            .await
            .expect("bind");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        let mut most = 0;
        let mut refused = 0u32;
        for i in 0..20_000u32 {
            let mut payload: sockactor::IoBatch = i.to_be_bytes().to_vec().into();
            loop {
                match writer.send_to(payload, Some(peer().into())) {
                    Ok(()) => break,
                    Err(DatagramError::QueueFull { payload: back, .. }) => {
                        refused += 1;
                        payload = back;
                        writer.writable(4).await.expect("open");
                    }
                    Err(other) => panic!("{other:?}"),
                }
            }
            most = most.max(writer.queued());
        }
        settle().await;
        assert!(
            most <= 64,
            "at most the queue's 64 admitted at once, saw {most}"
        );
        assert!(
            refused > 0,
            "the producer outran the socket and was held back"
        );
        let sent = mock.datagrams(Handle(1));
        assert_eq!(sent.len(), 20_000, "none lost");
        for (i, d) in sent.iter().enumerate() {
            assert_eq!(d.bytes, (i as u32).to_be_bytes(), "in order");
        }
    });
}

#[test]
fn a_closed_socket_refuses_at_once_and_wakes_those_waiting_for_room() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(config(1))
            .bind(local())
            .await
            .expect("bind");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        writer
            .send_to(vec![1u8], Some(peer().into()))
            .expect("admitted");
        let waiting = {
            let writer = writer.clone();
            actix::spawn(async move { writer.writable(1).await })
        };
        settle().await;
        socket.do_send(Close::Abort);
        settle().await;
        let woke = waiting.await.expect("join");
        assert!(woke.is_err(), "{woke:?}");
        assert!(matches!(
            writer.send_to(vec![2u8], Some(peer().into())),
            Err(DatagramError::Closed | DatagramError::Aborted)
        ));
    });
}

#[test]
fn a_datagram_refused_after_admission_is_reported_to_the_subscriber() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let (subscriber, mut events) = channel::<DatagramEvent>();
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(config(2))
            .immediate()
            .subscriber(subscriber)
            .bind(local())
            .await
            .expect("bind");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        // `do_send`s fill the socket's queue behind the writer's back: the first goes
        // out (held by the transport), the next two fill the queue of two.
        socket.do_send(SendDatagram::new(vec![0u8]).to(peer()));
        socket.do_send(SendDatagram::new(vec![0u8]).to(peer()));
        socket.do_send(SendDatagram::new(vec![0u8]).to(peer()));
        writer
            .send_to(vec![9u8; 3], Some(peer().into()))
            .expect("admitted by the writers' gate");
        settle().await;
        let mut full = 0;
        for event in drain(&mut events) {
            if let DatagramEventKind::SendFailed {
                error: DatagramError::QueueFull { .. },
                ..
            } = event.kind
            {
                full += 1;
            }
        }
        assert_eq!(
            full, 1,
            "the writer's datagram, refused by the full queue, was reported"
        );
        assert_eq!(writer.queued(), 0, "and its room given back");
    });
}

/// The same with no subscriber to report to: the refusal is a warning, not silence.
#[test]
fn a_datagram_refused_after_admission_with_nobody_subscribed_is_a_warning() {
    let (log, _guard) = WarnLog::start();
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(config(2))
            .immediate()
            .bind(local())
            .await
            .expect("bind");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        for _ in 0..3 {
            socket.do_send(SendDatagram::new(vec![0u8]).to(peer()));
        }
        writer
            .send_to(vec![9u8; 3], Some(peer().into()))
            .expect("admitted by the writers' gate");
        settle().await;
        assert_eq!(writer.queued(), 0, "room given back");
    });
    assert_eq!(
        log.lines_with("nobody"),
        1,
        "one warning for the refused datagram: {}",
        log.text()
    );
}

/// A `DatagramWriter` outliving its socket, whose arbiter stopped with datagrams
/// admitted (one out, held by the transport, one queued): it refuses at once, a wait for
/// room ends with an error, and nothing counts as queued.
#[actix::test]
async fn a_writer_outliving_its_sockets_arbiter_is_refused_and_holds_nothing() {
    let mock = MockTransport::start();
    mock.set_default_step(SendStep::Hold);
    let system = sockactor::SocketSystem::builder()
        .arbiters(1)
        .start()
        .expect("start");
    let functions = mock.functions();
    let writer = system
        .run_on(0, move || async move {
            let (socket, _) = DatagramSocket::builder()
                .functions(functions)
                .config(config(2))
                .immediate()
                .bind(local())
                .await
                .expect("bind");
            socket.send(GetDatagramWriter).await.expect("writer")
        })
        .await
        .expect("on the arbiter");
    writer
        .send_to(vec![1u8], Some(peer().into()))
        .expect("admitted");
    writer
        .send_to(vec![2u8], Some(peer().into()))
        .expect("admitted");
    for _ in 0..200 {
        if mock.sendv_calls(Handle(1)) == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(mock.sendv_calls(Handle(1)), 1, "one datagram out, held");
    system.shutdown().await.expect("shutdown");
    assert!(writer.send_to(vec![3u8], Some(peer().into())).is_err());
    let room = tokio::time::timeout(std::time::Duration::from_secs(10), writer.writable(1))
        .await
        .expect("resolved");
    assert!(room.is_err(), "{room:?}");
    assert_eq!(writer.queued(), 0, "nothing is queued or on its way");
}

/// A datagram a `DatagramWriter` refuses is counted in `send_failed`, as a stream
/// `Writer`'s refusal is in `writes_failed`.
#[test]
fn a_writers_refusal_is_counted_as_failed() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(config(1))
            .immediate()
            .bind(local())
            .await
            .expect("bind");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        writer
            .send_to(vec![1u8], Some(peer().into()))
            .expect("admitted");
        assert!(matches!(
            writer.send_to(vec![2u8], Some(peer().into())),
            Err(DatagramError::QueueFull { .. })
        ));
        settle().await;
        let stats = socket
            .send(sockactor::messages::GetDatagramStats)
            .await
            .expect("stats");
        assert_eq!(stats.send_failed, 1, "{stats:?}");
    });
}

/// A `send_when_ready` waiting for room when the socket is aborted fails with the
/// socket's refusal, and the refusal is counted once in `send_failed`.
#[test]
fn a_send_waiting_for_room_when_the_socket_closes_is_refused_and_counted() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let (socket, _) = DatagramSocket::builder()
            .functions(mock.functions())
            .config(config(1))
            .bind(local())
            .await
            .expect("bind");
        let writer = socket.send(GetDatagramWriter).await.expect("writer");
        writer
            .send_to(vec![0u8], Some(peer().into()))
            .expect("admitted");
        settle().await;
        let waiting = {
            let writer = writer.clone();
            actix::spawn(
                async move { writer.send_when_ready(vec![1u8], Some(peer().into())).await },
            )
        };
        settle().await;
        assert!(!waiting.is_finished(), "no room yet");
        socket.do_send(Close::Abort);
        let refused = waiting.await.expect("join");
        assert!(refused.is_err(), "{refused:?}");
        tokio::time::sleep(std::time::Duration::from_secs(11)).await;
        let stats = socket
            .send(sockactor::messages::GetDatagramStats)
            .await
            .expect("stats");
        assert_eq!(
            stats.send_failed, 2,
            "the held datagram and this one: {stats:?}"
        );
    });
}
