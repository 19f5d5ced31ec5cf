//! From the sixteenth round of the independent review: lifecycles and what can be
//! observed of them. The registry's states and counters, interest groups, `SocketSystem`
//! shutdowns with writes out (each answered once and truthfully) and listeners on its
//! arbiters, the reconnecting client's back-off and events, Flushers shared and stopped.
#![allow(dead_code, unused_imports, clippy::all)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::client::{client_events, ConnectGate, Events};
use crate::support::{channel, channel_subscriber, mock_peer, run_paused, settle, Recorder};
use actix::prelude::*;
use bytes::Bytes;
use sockactor::messages::{
    ClientEvent, ClientState, Close, Flush, GetClientState, GetInfo, GetStats, GetWriter, Handle,
    Interest, InterestRefused, ListenerEvent, PendingWrite, Reconnect, SocketEventKind,
    SocketInterest, StopListening, Write,
};
use sockactor::{
    FlushPolicy, Flusher, InterestGroup, Jitter, Listener, MockTransport, ReconnectingClient,
    Registry, SendStep, Socket, SocketError, SocketState, SocketSystem, SocketSystemError,
    WriteError,
};

// ---------------------------------------------------------------------------------------
// Helpers

/// An interest subscriber that records every notification and accepts it.
#[derive(Clone, Default)]
struct Interests(Arc<Mutex<Vec<(sockactor::messages::SocketId, Interest)>>>);

struct InterestActor(Interests);

impl Actor for InterestActor {
    type Context = Context<Self>;
}

impl Handler<SocketInterest> for InterestActor {
    type Result = Result<(), InterestRefused>;
    fn handle(&mut self, msg: SocketInterest, _: &mut Context<Self>) -> Self::Result {
        self.0 .0.lock().unwrap().push((msg.socket, msg.interest));
        Ok(())
    }
}

impl Interests {
    fn start(&self) -> Recipient<SocketInterest> {
        InterestActor(self.clone()).start().recipient()
    }
    fn of(&self, id: sockactor::messages::SocketId) -> Vec<Interest> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s == id)
            .map(|(_, i)| *i)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Registry, SocketHandle, SocketState, GetInfo

/// The registry's state and `GetInfo::open` follow the documented lifecycle: `Open`,
/// `Draining` (a graceful close with a write still out), `Closed` while the actor still
/// runs (its address held), and the entry goes when the actor ends; a handle copy taken
/// earlier then has no address and its writer refuses with `Closed`.
#[test]
fn registry_state_and_info_follow_open_draining_closed_then_the_entry_goes() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let registry = Registry::new();
        let socket = Socket::builder()
            .functions(mock.functions())
            .registry(&registry)
            .connect(mock_peer())
            .await
            .expect("connect");
        let info = socket.send(GetInfo).await.expect("mailbox");
        let id = info.id;
        assert!(info.open);
        let early = registry.get(id).expect("registered");
        assert_eq!(early.state(), SocketState::Open);
        assert_eq!(registry.len(), 1);

        let answer = socket.send(Write::new(&b"hello"[..]));
        settle().await;
        socket.do_send(Close::Graceful);
        settle().await;
        assert_eq!(
            registry.get(id).expect("still registered").state(),
            SocketState::Draining
        );
        assert!(!socket.send(GetInfo).await.expect("mailbox").open);

        mock.release(Handle(1));
        answer.await.expect("mailbox").expect("written");
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        let closed = registry.get(id).expect("registered while its actor runs");
        assert_eq!(closed.state(), SocketState::Closed);
        assert!(!socket.send(GetInfo).await.expect("mailbox").open);
        match closed.writer().write(&b"late"[..]) {
            Err(WriteError::Closed {
                bytes_sent: 0,
                len: 4,
            }) => {}
            other => panic!("a closed socket's writer: expected Closed, got {other:?}"),
        }

        drop(socket);
        settle().await;
        assert!(registry.get(id).is_none(), "entry gone with the actor");
        assert!(registry.is_empty());
        assert!(early.addr().is_none());
        match early.writer().write(&b"later"[..]) {
            Err(WriteError::Closed { .. }) => {}
            other => panic!("an ended socket's writer: expected Closed, got {other:?}"),
        }
    });
}

/// Orphaning (every address dropped) with a write still out is a graceful close: the
/// registry shows `Draining`, then the entry goes once the write is answered.
#[test]
fn an_orphaned_socket_is_draining_in_the_registry_until_its_write_is_answered() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let registry = Registry::new();
        let socket = Socket::builder()
            .functions(mock.functions())
            .registry(&registry)
            .connect(mock_peer())
            .await
            .expect("connect");
        let id = socket.send(GetInfo).await.expect("mailbox").id;
        let writer = socket.send(GetWriter).await.expect("mailbox");
        let answer = writer.write_answered(&b"orphan"[..]);
        settle().await;
        drop(writer);
        drop(socket);
        settle().await;
        let handle = registry.get(id).expect("registered while draining");
        assert_eq!(handle.state(), SocketState::Draining);
        mock.release(Handle(1));
        answer.await.expect("written");
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        assert!(registry.get(id).is_none());
    });
}

/// `close_on_eof`: the peer's EOF closes gracefully; the registry shows `Draining` while a
/// write is held, the subscriber hears `Eof` then `Closed`, and the registry `Closed`.
#[test]
fn eof_with_close_on_eof_goes_draining_then_closed_in_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let registry = Registry::new();
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .registry(&registry)
            .subscriber(recorder.start().recipient())
            .config(sockactor::SocketConfig {
                close_on_eof: true,
                ..Default::default()
            })
            .connect(mock_peer())
            .await
            .expect("connect");
        let id = socket.send(GetInfo).await.expect("mailbox").id;
        let answer = socket.send(Write::new(&b"abc"[..]));
        settle().await;
        mock.push_eof(Handle(1));
        settle().await;
        assert_eq!(registry.get(id).unwrap().state(), SocketState::Draining);
        assert!(!socket.send(GetInfo).await.unwrap().open);
        mock.release(Handle(1));
        answer.await.unwrap().expect("written");
        settle().await;
        assert_eq!(registry.get(id).unwrap().state(), SocketState::Closed);
        let kinds = recorder.picked(|e| match e {
            SocketEventKind::Eof => Some("eof"),
            SocketEventKind::Closed { .. } => Some("closed"),
            _ => None,
        });
        assert_eq!(kinds, ["eof", "closed"]);
    });
}

/// `SocketHandle::stats` publishes the same counters `GetStats` answers, once the socket
/// has had its turn: after writes, a refused write, and an abort with writes queued.
#[test]
fn the_registrys_counters_match_get_stats_after_every_turn() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Accept(3), SendStep::Hold]);
        let registry = Registry::new();
        let socket = Socket::builder()
            .functions(mock.functions())
            .registry(&registry)
            .immediate()
            .connect(mock_peer())
            .await
            .expect("connect");
        let id = socket.send(GetInfo).await.unwrap().id;
        let writer = socket.send(GetWriter).await.unwrap();
        let first = writer.write_answered(&b"0123456789"[..]);
        let second = writer.write_answered(&b"abcdef"[..]);
        settle().await;
        let stats = socket.send(GetStats).await.unwrap();
        settle().await;
        assert_eq!(
            registry.get(id).unwrap().stats(),
            stats,
            "while a write is held"
        );

        socket.do_send(Close::Abort);
        settle().await;
        assert!(matches!(first.await, Err(WriteError::Aborted { .. })));
        assert!(matches!(second.await, Err(WriteError::Aborted { .. })));
        let _ = writer.write(&b"refused"[..]);
        let _ = socket.send(Write::new(&b"refused too"[..])).await;
        settle().await;
        let stats = socket.send(GetStats).await.unwrap();
        settle().await;
        let published = registry.get(id).unwrap().stats();
        assert_eq!(published, stats, "after an abort and two refusals");
        assert_eq!(stats.writes_failed, 4);
    });
}

/// Sockets of an interest group leave it when their actors end, and each hears `Remove`
/// last; the group's length follows.
#[test]
fn group_members_leave_when_their_actors_end_with_remove_last() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let interests = Interests::default();
        let group = InterestGroup::new(interests.start());
        let mut sockets = Vec::new();
        for _ in 0..3 {
            sockets.push(
                Socket::builder()
                    .functions(mock.functions())
                    .interest_group(&group)
                    .connect(mock_peer())
                    .await
                    .expect("connect"),
            );
        }
        assert_eq!(group.len(), 3);
        let ids: Vec<_> = {
            let mut v = Vec::new();
            for s in &sockets {
                v.push(s.send(GetInfo).await.unwrap().id);
            }
            v
        };
        sockets[0].do_send(Close::Graceful);
        sockets[1].do_send(Close::Abort);
        settle().await;
        // Closed but their addresses are held: still members (they leave with the actor).
        drop(sockets.remove(0));
        drop(sockets.remove(0));
        settle().await;
        assert_eq!(group.len(), 1);
        for id in &ids[..2] {
            assert_eq!(interests.of(*id).last(), Some(&Interest::Remove), "{id}");
            assert_eq!(
                interests
                    .of(*id)
                    .iter()
                    .filter(|i| **i == Interest::Remove)
                    .count(),
                1
            );
        }
        drop(sockets);
        settle().await;
        assert!(group.is_empty());
        assert_eq!(interests.of(ids[2]).last(), Some(&Interest::Remove));
    });
}

// ---------------------------------------------------------------------------------------
// SocketSystem and runtime shutdown

/// A socket on an arbiter, over a transport of the main thread (the mock), registered and
/// in an interest group, with writes held back by a transport that would block:
/// `shutdown` drops it. `SocketSystem`'s docs: each socket answers its unfinished writes
/// as it goes, `Closed` with the bytes that went out (here none: no transmit was out),
/// and a pending `send` gets its answer or a mailbox error; the registry and the group
/// forget it; it still closes its connection through the transport that lives on; later
/// writes through its writer are refused; nothing panics.
#[test]
fn shutdown_answers_queued_writes_closed_with_none_sent_and_forgets_the_socket() {
    let panics = crate::support::panics_on_this_thread_during(|| {
        actix::System::new().block_on(async {
            let mock = MockTransport::start();
            mock.script_sendv(Handle(1), [SendStep::Hold]);
            let registry = Registry::new();
            let interests = Interests::default();
            let group = InterestGroup::new(interests.start());
            let system = SocketSystem::builder().arbiters(2).start().expect("start");
            let functions = mock.functions();
            let (reg, grp) = (registry.clone(), group.clone());
            let socket = system
                .connect(
                    move || {
                        Socket::builder()
                            .functions(functions)
                            .registry(&reg)
                            .interest_group(&grp)
                    },
                    mock_peer(),
                )
                .await
                .expect("connect on an arbiter");
            let writer = socket.send(GetWriter).await.expect("mailbox");
            let futures: Vec<_> = (0..3)
                .map(|i| writer.write_answered(Bytes::from(vec![b'a' + i as u8; 100])))
                .collect();
            let sent = tokio::spawn(socket.send(Write::new(&b"by message"[..])));
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(registry.len(), 1);
            assert_eq!(group.len(), 1);
            assert!(!mock.is_closed(Handle(1)));

            system.shutdown().await.expect("shutdown");
            let mut answers = Vec::new();
            for f in futures {
                answers.push(
                    tokio::time::timeout(Duration::from_secs(5), f)
                        .await
                        .expect("answered"),
                );
            }
            // The transport, which lives on, lets go of the held call now.
            mock.release(Handle(1));
            tokio::time::sleep(Duration::from_millis(50)).await;
            let written = mock.written(Handle(1)).len();
            let claimed: usize = answers
                .iter()
                .map(|a| match a {
                    Ok(w) => w.len,
                    Err(e) => e.bytes_sent(),
                })
                .sum();
            assert!(
                claimed <= written,
                "answers claim {claimed} bytes out, the transport took {written}: {answers:?}"
            );
            let not_closed: Vec<_> = answers
                .iter()
                .filter(|a| {
                    !matches!(
                        a,
                        Err(WriteError::Closed {
                            bytes_sent: 0,
                            len: 100
                        })
                    )
                })
                .collect();
            // Documented: its answer (the socket's refusal), or a mailbox error.
            match tokio::time::timeout(Duration::from_secs(5), sent).await {
                Ok(Ok(Err(_mailbox))) => {}
                Ok(Ok(Ok(Err(WriteError::Closed { .. } | WriteError::Lost { .. })))) => {}
                other => panic!("expected a mailbox error, got {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(registry.is_empty(), "registry forgets a dropped socket");
            assert!(group.is_empty(), "group forgets a dropped socket");
            assert!(mock.is_closed(Handle(1)), "the connection is closed");
            match writer.write(&b"after"[..]) {
                Err(WriteError::Closed { .. }) => {}
                other => panic!("expected Closed, got {other:?}"),
            }
            assert!(matches!(
                system.connect(Socket::builder, mock_peer()).await,
                Err(SocketSystemError::ShutDown)
            ));
            assert!(
                not_closed.is_empty(),
                "documented: Closed with the bytes that went out; got {not_closed:?} (transport took {written} bytes)"
            );
        });
    });
    assert_eq!(panics, 0);
}

/// A whole actix system stopped (its runtime dropped) with writes pending on a socket of
/// its own thread: every write gets exactly one answer, `Lost`, after the fact; the
/// registry is empty; no panic.
#[test]
fn dropping_the_actix_system_with_writes_pending_answers_each_lost() {
    let registry = Registry::new();
    let mut kept = None;
    let panics = crate::support::panics_on_this_thread_during(|| {
        let sys = actix::System::new();
        let reg = registry.clone();
        let (futures, writer) = sys.block_on(async move {
            let mock = MockTransport::start();
            mock.script_sendv(Handle(1), [SendStep::Accept(10), SendStep::Hold]);
            let socket = Socket::builder()
                .functions(mock.functions())
                .registry(&reg)
                .connect(mock_peer())
                .await
                .expect("connect");
            let writer = socket.send(GetWriter).await.expect("mailbox");
            let futures: Vec<_> = (0..4)
                .map(|_| writer.write_answered(Bytes::from(vec![7u8; 64])))
                .collect();
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(reg.len(), 1);
            actix::System::current().stop();
            (futures, writer)
        });
        drop(sys);
        kept = Some((futures, writer));
    });
    assert_eq!(panics, 0);
    assert!(registry.is_empty(), "the dropped socket left the registry");
    let (futures, writer) = kept.unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for f in futures {
            // Documented: `Lost`; a `Closed` that tells how far it got is accepted here (the
            // strict check is `shutdown_answers_queued_writes_lost_as_documented`).
            match tokio::time::timeout(Duration::from_secs(5), f).await {
                Ok(Err(WriteError::Lost { len: 64 } | WriteError::Closed { len: 64, .. })) => {}
                other => panic!("expected Lost, got {other:?}"),
            }
        }
        match writer.write(&b"x"[..]) {
            Err(WriteError::Closed { .. }) => {}
            other => panic!("expected Closed, got {other:?}"),
        }
    });
}

/// A socket of the main thread deferring to a Flusher that lives on a socket-system
/// arbiter: the arbiter is shut down (the Flusher dropped, not stopped); the socket falls
/// back to immediate writes and nothing stalls.
#[test]
fn a_flusher_on_an_arbiter_that_shuts_down_strands_no_write() {
    actix::System::new().block_on(async {
        let mock = MockTransport::start();
        let system = SocketSystem::builder().arbiters(1).start().expect("start");
        let flusher = system
            .run_on(0, || async { Flusher::current() })
            .await
            .unwrap();
        let socket = Socket::builder()
            .functions(mock.functions())
            .flusher(flusher)
            .connect(mock_peer())
            .await
            .expect("connect");
        tokio::time::timeout(
            Duration::from_secs(5),
            socket.send(Write::new(&b"one "[..])),
        )
        .await
        .expect("answered through the remote flusher")
        .unwrap()
        .expect("written");
        system.shutdown().await.expect("shutdown");
        for w in [&b"two "[..], &b"three"[..]] {
            tokio::time::timeout(Duration::from_secs(5), socket.send(Write::new(w)))
                .await
                .expect("answered after the flusher's arbiter stopped")
                .unwrap()
                .expect("written");
        }
        assert_eq!(mock.written(Handle(1)), b"one two three");
    });
}

/// A `sendv` of the caller's that takes its time, then takes every byte it was offered
/// (and keeps them, as a peer would get them).
struct SlowSendv {
    delay: Duration,
    taken: Arc<Mutex<Vec<u8>>>,
}

impl Actor for SlowSendv {
    type Context = Context<Self>;
}

impl Handler<sockactor::messages::SendV> for SlowSendv {
    type Result = ResponseFuture<Result<sockactor::messages::Sent, sockactor::TransportError>>;
    fn handle(&mut self, msg: sockactor::messages::SendV, _: &mut Context<Self>) -> Self::Result {
        let (delay, taken) = (self.delay, self.taken.clone());
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let mut t = taken.lock().unwrap();
            for s in &msg.segments {
                t.extend_from_slice(s);
            }
            Ok(sockactor::messages::Sent::Accepted(msg.len()))
        })
    }
}

// ---------------------------------------------------------------------------------------
// ReconnectingClient: backoff timing, Reconnect at odd moments, events order

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A short name for each event, for comparing sequences.
fn name(e: &ClientEvent) -> String {
    match e {
        ClientEvent::Connected { attempt, .. } => format!("Connected({attempt})"),
        ClientEvent::Disconnected { cause } => format!("Disconnected({})", cause.is_some()),
        ClientEvent::Reconnecting { attempt, delay } => {
            format!("Reconnecting({attempt},{}ms)", delay.as_millis())
        }
        ClientEvent::GaveUp { attempts, .. } => format!("GaveUp({attempts})"),
        ClientEvent::Received(..) => "Received".into(),
        ClientEvent::Eof => "Eof".into(),
        ClientEvent::Idle { .. } => "Idle".into(),
        ClientEvent::WriteFailed { .. } => "WriteFailed".into(),
        _ => "other".into(),
    }
}

async fn next_named(events: &mut Events) -> String {
    name(&events.next().await)
}

/// Refused connects without jitter: the attempts come exactly at the capped exponential
/// delays the `Reconnecting` events announce; `Reconnect` while waiting is refused and
/// changes nothing; `GaveUp` replaces the last `Reconnecting`; a `Reconnect` then starts
/// over at attempt 1 with the backoff reset, and the client connects once the peer is back.
#[test]
fn backoff_is_exact_and_reconnect_works_only_after_giving_up() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        gate.refuse_all(true);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .backoff(ms(100), ms(250))
            .jitter(Jitter::None)
            .max_attempts(Some(4))
            .subscriber(subscriber)
            .start();
        let t0 = tokio::time::Instant::now();
        assert_eq!(next_named(&mut events).await, "Reconnecting(2,100ms)");
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Waiting { attempt: 2 }
        );
        assert!(!client.send(Reconnect).await.unwrap(), "not given up yet");
        assert_eq!(next_named(&mut events).await, "Reconnecting(3,200ms)");
        assert_eq!(next_named(&mut events).await, "Reconnecting(4,250ms)");
        match events.next().await {
            ClientEvent::GaveUp {
                attempts: 4,
                last_error,
            } => {
                assert!(
                    matches!(last_error, SocketError::Refused(_)),
                    "{last_error:?}"
                )
            }
            other => panic!("expected GaveUp(4), got {other:?}"),
        }
        let offsets: Vec<_> = gate.calls().iter().map(|t| *t - t0).collect();
        assert_eq!(offsets, [ms(0), ms(100), ms(300), ms(550)]);
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::GaveUp { attempts: 4 }
        );
        assert!(matches!(
            client.send(Write::new(&b"x"[..])).await.unwrap(),
            Err(WriteError::GaveUp { attempts: 4, .. })
        ));
        // Nothing more happens by itself.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(gate.calls().len(), 4);
        assert!(events.drain().is_empty());

        let t1 = tokio::time::Instant::now();
        assert!(client.send(Reconnect).await.unwrap());
        assert!(matches!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Connecting { attempt: 1 } | ClientState::Waiting { attempt: 2 }
        ));
        assert!(
            !client.send(Reconnect).await.unwrap(),
            "already started over"
        );
        assert_eq!(next_named(&mut events).await, "Reconnecting(2,100ms)");
        gate.refuse_all(false);
        assert_eq!(next_named(&mut events).await, "Connected(2)");
        let offsets: Vec<_> = gate.calls()[4..].iter().map(|t| *t - t1).collect();
        assert_eq!(offsets, [ms(0), ms(100)]);
        assert!(!client.send(Reconnect).await.unwrap(), "connected");
        assert!(matches!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Connected { .. }
        ));
    });
}

/// A lost connection starts the count again: `Eof`, `Disconnected`, then
/// `Reconnecting(1, base)`, doubling, and `GaveUp` after `max_attempts` further attempts;
/// a write made while waiting is answered `GaveUp`.
#[test]
fn a_lost_connection_counts_attempts_from_one_and_gives_up_in_order() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let gate = ConnectGate::new(&mock);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .backoff(ms(100), ms(10_000))
            .jitter(Jitter::None)
            .max_attempts(Some(2))
            .subscriber(subscriber)
            .start();
        assert_eq!(next_named(&mut events).await, "Connected(1)");
        gate.refuse_all(true);
        mock.push_eof(Handle(1));
        let t0 = tokio::time::Instant::now();
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(next_named(&mut events).await);
        }
        assert_eq!(
            seen,
            ["Eof", "Disconnected(false)", "Reconnecting(1,100ms)"]
        );
        let held = client.send(Write::new(&b"held"[..]));
        let held = tokio::spawn(held);
        assert_eq!(next_named(&mut events).await, "Reconnecting(2,200ms)");
        assert_eq!(next_named(&mut events).await, "GaveUp(2)");
        let offsets: Vec<_> = gate.calls()[1..].iter().map(|t| *t - t0).collect();
        assert_eq!(offsets, [ms(100), ms(300)]);
        assert!(matches!(
            held.await.unwrap().unwrap(),
            Err(WriteError::GaveUp { attempts: 2, .. })
        ));
    });
}

/// A connect timeout under paused time is a failed attempt like any other: the next is
/// announced exactly at the timeout, and the give-up carries `TimedOut`.
#[test]
fn connect_timeouts_fail_attempts_at_exactly_the_limit() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.delay_connect(mock_peer(), Duration::from_secs(3600));
        let (subscriber, mut events) = client_events();
        let t0 = tokio::time::Instant::now();
        let _client = ReconnectingClient::builder(mock_peer())
            .functions(mock.functions())
            .backoff(ms(100), ms(10_000))
            .jitter(Jitter::None)
            .connect_timeout(Some(Duration::from_secs(1)))
            .max_attempts(Some(2))
            .subscriber(subscriber)
            .start();
        assert_eq!(next_named(&mut events).await, "Reconnecting(2,100ms)");
        assert_eq!(t0.elapsed(), ms(1000));
        match events.next().await {
            ClientEvent::GaveUp {
                attempts: 2,
                last_error: SocketError::TimedOut(limit),
            } => assert_eq!(limit, Duration::from_secs(1)),
            other => panic!("expected GaveUp(2, TimedOut), got {other:?}"),
        }
        assert_eq!(t0.elapsed(), ms(2100));
        settle().await;
        for h in mock.handles() {
            assert!(mock.is_closed(h), "timed-out attempt left {h:?} open");
        }
    });
}

/// `Close` while a connect is under way: `Reconnect` is refused while connecting, the
/// close ends the client at once, the connect that completes later is aborted (its
/// handle closed), no `Connected` is heard and no attempt follows.
#[test]
fn close_while_connecting_aborts_the_late_connection_and_ends_the_client() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.delay_connect(mock_peer(), Duration::from_secs(2));
        let gate = ConnectGate::new(&mock);
        let (subscriber, mut events) = client_events();
        let client = ReconnectingClient::builder(mock_peer())
            .functions(gate.functions())
            .subscriber(subscriber)
            .start();
        tokio::time::sleep(ms(500)).await;
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Connecting { attempt: 1 }
        );
        assert!(!client.send(Reconnect).await.unwrap());
        let held = tokio::spawn(client.send(Write::new(&b"held"[..])));
        settle().await;
        client.do_send(Close::Graceful);
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Closed
        );
        assert!(matches!(
            held.await.unwrap().unwrap(),
            Err(WriteError::Closed {
                bytes_sent: 0,
                len: 4
            })
        ));
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle().await;
        assert_eq!(gate.calls().len(), 1);
        let handles = mock.handles();
        assert!(!handles.is_empty());
        for h in handles {
            assert!(mock.is_closed(h), "the late connection {h:?} is left open");
        }
        let heard: Vec<_> = events.drain().iter().map(name).collect();
        assert!(heard.is_empty(), "heard {heard:?}");
        assert_eq!(
            client.send(GetClientState).await.unwrap(),
            ClientState::Closed
        );
    });
}

// ---------------------------------------------------------------------------------------
// Flusher: custom flushers, one shared by many sockets, unsolicited and doubled Flushes

/// A Flusher of the test's: keeps each `PendingWrite` until told to answer.
#[derive(Clone, Default)]
struct Requests(Arc<Mutex<Vec<PendingWrite>>>);

struct ManualFlusher {
    requests: Requests,
    seen: Arc<Mutex<Vec<sockactor::messages::SocketId>>>,
}

impl Actor for ManualFlusher {
    type Context = Context<Self>;
}

impl Handler<PendingWrite> for ManualFlusher {
    type Result = ();
    fn handle(&mut self, msg: PendingWrite, _: &mut Context<Self>) {
        self.seen.lock().unwrap().push(msg.socket);
        self.requests.0.lock().unwrap().push(msg);
    }
}

#[derive(Message)]
#[rtype(result = "usize")]
struct AnswerAll {
    times: usize,
}

impl Handler<AnswerAll> for ManualFlusher {
    type Result = usize;
    fn handle(&mut self, msg: AnswerAll, _: &mut Context<Self>) -> usize {
        let pending: Vec<_> = self.requests.0.lock().unwrap().drain(..).collect();
        for p in &pending {
            for _ in 0..msg.times {
                p.flush.do_send(Flush);
            }
        }
        pending.len()
    }
}

/// One Flusher of the caller's shared by three sockets: each asks once per burst however
/// many writes it queues, nothing leaves before the `Flush`, and each burst then leaves in
/// one `sendv` per socket.
#[test]
fn a_custom_flusher_shared_by_sockets_gets_one_request_per_burst_each() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let flusher = ManualFlusher {
            requests: Requests::default(),
            seen: seen.clone(),
        }
        .start();
        let mut sockets = Vec::new();
        for _ in 0..3 {
            sockets.push(
                Socket::builder()
                    .functions(mock.functions())
                    .flush_policy(FlushPolicy::Deferred(flusher.clone().recipient()))
                    .connect(mock_peer())
                    .await
                    .expect("connect"),
            );
        }
        let mut answers = Vec::new();
        for round in 0..5u8 {
            for s in &sockets {
                answers.push(s.send(Write::new(Bytes::from(vec![round; 10]))));
            }
        }
        let answers: Vec<_> = answers.into_iter().map(tokio::spawn).collect();
        settle().await;
        assert_eq!(seen.lock().unwrap().len(), 3, "one request per socket");
        for h in 1..=3 {
            assert_eq!(mock.sendv_calls(Handle(h)), 0, "nothing before the Flush");
        }
        assert_eq!(flusher.send(AnswerAll { times: 1 }).await.unwrap(), 3);
        for a in answers {
            a.await.unwrap().unwrap().expect("written");
        }
        for (i, s) in sockets.iter().enumerate() {
            let h = Handle(i as u64 + 1);
            assert_eq!(mock.sendv_calls(h), 1, "{h:?}");
            assert_eq!(mock.written(h).len(), 50);
            assert_eq!(s.send(GetStats).await.unwrap().pending_writes, 1);
        }
    });
}

/// A `Flush` nobody asked for ("harmless when nothing is queued"; with writes queued it
/// sends them), then the Flusher's own late answer, twice: every write is answered once,
/// in order, and the next burst still asks the Flusher and waits for it.
#[test]
fn unsolicited_and_doubled_flushes_leave_the_socket_asking_for_the_next_burst() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let flusher = ManualFlusher {
            requests: Requests::default(),
            seen: seen.clone(),
        }
        .start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .flush_policy(FlushPolicy::Deferred(flusher.clone().recipient()))
            .connect(mock_peer())
            .await
            .expect("connect");
        socket.do_send(Flush); // nothing queued
        let a = tokio::spawn(socket.send(Write::new(&b"one "[..])));
        let b = tokio::spawn(socket.send(Write::new(&b"two "[..])));
        settle().await;
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(mock.sendv_calls(Handle(1)), 0);
        socket.do_send(Flush); // unsolicited, with writes queued
        a.await.unwrap().unwrap().expect("one");
        b.await.unwrap().unwrap().expect("two");
        assert_eq!(mock.written(Handle(1)), b"one two ");
        // The Flusher's own answer comes late, twice.
        flusher.send(AnswerAll { times: 2 }).await.unwrap();
        settle().await;
        // The next burst asks again and waits for the answer.
        let c = tokio::spawn(socket.send(Write::new(&b"three"[..])));
        settle().await;
        assert_eq!(
            seen.lock().unwrap().len(),
            2,
            "the next burst asks the Flusher"
        );
        assert_eq!(mock.written(Handle(1)), b"one two ", "and waits for it");
        flusher.send(AnswerAll { times: 1 }).await.unwrap();
        c.await.unwrap().unwrap().expect("three");
        assert_eq!(mock.written(Handle(1)), b"one two three");
        let stats = socket.send(GetStats).await.unwrap();
        assert_eq!(stats.writes_completed, 3);
        assert_eq!(stats.pending_writes, 2);
    });
}

/// A Flusher of the caller's that stops while it holds requests of several sockets
/// (handled, unanswered): each socket falls back to immediate writes within the
/// documented second; every write is answered.
#[test]
fn a_shared_custom_flusher_that_stops_holding_requests_strands_no_socket() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let flusher = ManualFlusher {
            requests: Requests::default(),
            seen: Arc::default(),
        }
        .start();
        let mut sockets = Vec::new();
        for _ in 0..3 {
            sockets.push(
                Socket::builder()
                    .functions(mock.functions())
                    .flush_policy(FlushPolicy::Deferred(flusher.clone().recipient()))
                    .connect(mock_peer())
                    .await
                    .expect("connect"),
            );
        }
        let answers: Vec<_> = sockets
            .iter()
            .map(|s| tokio::spawn(s.send(Write::new(&b"stranded?"[..]))))
            .collect();
        settle().await;
        // Stop it: its context ends; the requests it keeps are dropped with it.
        struct Stop;
        impl Message for Stop {
            type Result = ();
        }
        impl Handler<Stop> for ManualFlusher {
            type Result = ();
            fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
                ctx.stop();
            }
        }
        let t0 = tokio::time::Instant::now();
        flusher.do_send(Stop);
        drop(flusher);
        for a in answers {
            tokio::time::timeout(Duration::from_secs(2), a)
                .await
                .expect("answered within the documented second")
                .unwrap()
                .unwrap()
                .expect("written");
        }
        assert!(
            t0.elapsed() <= Duration::from_millis(1100),
            "{:?}",
            t0.elapsed()
        );
        for s in &sockets {
            s.send(Write::new(&b"after"[..]))
                .await
                .unwrap()
                .expect("immediate from now on");
        }
    });
}

/// Same thread, no shutdown: `Close::Abort` while a slow `sendv` is out. The docs: the
/// abort answers every unfinished write saying how many of its bytes went out, and
/// writes in a transmit still out wait for its answer. The transport takes what it was
/// offered 200 ms later: the answers must add up to it.
#[test]
fn an_abort_with_a_slow_sendv_out_reports_the_bytes_the_transport_took() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let slow = SlowSendv {
            delay: ms(200),
            taken: taken.clone(),
        }
        .start();
        let recorder = Recorder::default();
        let socket = Socket::builder()
            .functions(mock.functions().with_sendv(slow.recipient()))
            .subscriber(recorder.start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let writer = socket.send(GetWriter).await.unwrap();
        let first = writer.write_answered(Bytes::from(vec![1u8; 1000]));
        tokio::time::sleep(ms(50)).await;
        let second = writer.write_answered(Bytes::from(vec![2u8; 50]));
        settle().await;
        socket.do_send(Close::Abort);
        let first = first.await;
        let second = second.await;
        tokio::time::sleep(ms(500)).await;
        let went_out = taken.lock().unwrap().len();
        let claimed = |r: &Result<sockactor::messages::Written, WriteError>| match r {
            Ok(w) => w.len,
            Err(e) => e.bytes_sent(),
        };
        assert_eq!(
            claimed(&first) + claimed(&second),
            went_out,
            "answers {first:?} / {second:?}, transport took {went_out}"
        );
        assert!(
            matches!(second, Err(WriteError::Aborted { .. })),
            "{second:?}"
        );
        settle().await;
        assert_eq!(
            recorder.count(|e| matches!(e, SocketEventKind::Closed { .. })),
            1
        );
    });
}

// ---------------------------------------------------------------------------------------
// Listener: stopping during the back-off, its last address dropped, events order

/// `StopListening` while the listener backs off after an accept error: `Closed` follows
/// the `AcceptFailed` at once and is the last event; no accept is tried after it; the
/// listening handle and the connection waiting in its backlog are closed; the sockets it
/// accepted before live on (registry entries and all).
#[test]
fn stop_listening_during_the_accept_backoff_ends_it_at_once_with_closed_last() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let registry = Registry::new();
        let (events, mut heard) = channel::<ListenerEvent>();
        let reg = registry.clone();
        let (listener, _) = Listener::builder()
            .functions(mock.functions())
            .accept_backoff(Duration::from_secs(5))
            .socket_builder(move |_| Socket::builder().registry(&reg))
            .subscriber(events)
            .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        settle().await;
        let first = mock
            .connect_inbound(Handle(1), std::net::SocketAddr::from(([10, 0, 0, 1], 1)))
            .unwrap();
        settle().await;
        let accepted = match crate::support::drain(&mut heard).as_slice() {
            [ListenerEvent::Accepted { socket, .. }] => socket.clone(),
            other => panic!("expected one Accepted, got {other:?}"),
        };
        assert_eq!(registry.len(), 1);
        mock.fail_accept(Handle(1), std::io::ErrorKind::ConnectionAborted);
        let waiting = mock
            .connect_inbound(Handle(1), std::net::SocketAddr::from(([10, 0, 0, 2], 2)))
            .unwrap();
        settle().await;
        assert!(matches!(
            crate::support::drain(&mut heard).as_slice(),
            [ListenerEvent::AcceptFailed { .. }]
        ));
        let calls = mock.accept_calls(Handle(1));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t0 = tokio::time::Instant::now();
        listener.send(StopListening).await.expect("mailbox");
        settle().await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert!(matches!(
            crate::support::drain(&mut heard).as_slice(),
            [ListenerEvent::Closed]
        ));
        assert!(mock.is_closed(Handle(1)));
        assert!(
            mock.is_closed(waiting),
            "a connection left in the backlog is closed"
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        assert_eq!(
            mock.accept_calls(Handle(1)),
            calls,
            "no accept after StopListening"
        );
        assert!(heard.try_recv().is_err(), "nothing after Closed");
        assert!(!mock.is_closed(first));
        assert_eq!(registry.len(), 1, "the accepted socket lives on");
        assert!(accepted.send(GetInfo).await.unwrap().open);
    });
}

/// Every address of a listener dropped while it backs off: it runs out its back-off
/// timer, then stops once nothing is under way; its subscriber hears `Closed` and the
/// listening handle is closed.
#[test]
fn a_listener_dropped_during_its_backoff_closes_once_the_timer_has_run() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let (events, mut heard) = channel::<ListenerEvent>();
        let (listener, _) = Listener::builder()
            .functions(mock.functions())
            .accept_backoff(Duration::from_secs(5))
            .subscriber(events)
            .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        settle().await;
        mock.fail_accept(Handle(1), std::io::ErrorKind::ConnectionAborted);
        mock.connect_inbound(Handle(1), std::net::SocketAddr::from(([10, 0, 0, 2], 2)))
            .unwrap();
        settle().await;
        drop(listener);
        let mut all = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(60), heard.recv()).await {
                Ok(Some(e)) => {
                    let last = matches!(e, ListenerEvent::Closed);
                    all.push(e);
                    if last {
                        break;
                    }
                }
                other => panic!("no Closed within a minute; heard {all:?} then {other:?}"),
            }
        }
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        assert!(
            matches!(all.first(), Some(ListenerEvent::AcceptFailed { .. })),
            "{all:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Components placed on socket-system arbiters, then shut down

/// A reconnecting client placed on an arbiter (`run_on`), connected over the main
/// thread's mock, with writes held by the transport and by the client: shutdown answers
/// each write exactly once (an error; the docs allow `Lost` or a mailbox error), and the
/// connection is closed through the transport that lives on.
#[test]
fn a_client_on_an_arbiter_that_shuts_down_answers_every_write_once() {
    let panics = crate::support::panics_on_this_thread_during(|| {
        actix::System::new().block_on(async {
            let mock = MockTransport::start();
            mock.script_sendv(Handle(1), [SendStep::Hold]);
            let functions = mock.functions();
            let (subscriber, mut events) = client_events();
            let system = SocketSystem::builder().arbiters(1).start().expect("start");
            let client = system
                .run_on(0, move || async move {
                    ReconnectingClient::builder(mock_peer())
                        .functions(functions)
                        .subscriber(subscriber)
                        .socket_config(crate::support::watermarks(64, 32))
                        .start()
                })
                .await
                .expect("placed");
            assert_eq!(next_named(&mut events).await, "Connected(1)");
            let answers: Vec<_> = (0..6)
                .map(|i| tokio::spawn(client.send(Write::new(Bytes::from(vec![i as u8; 40])))))
                .collect();
            tokio::time::sleep(ms(100)).await;
            system.shutdown().await.expect("shutdown");
            for (i, a) in answers.into_iter().enumerate() {
                match tokio::time::timeout(Duration::from_secs(5), a).await {
                    Ok(Ok(Err(_mailbox))) => {}
                    Ok(Ok(Ok(Err(_write_error)))) => {}
                    other => panic!("write {i}: expected one error answer, got {other:?}"),
                }
            }
            tokio::time::sleep(ms(100)).await;
            assert!(
                mock.is_closed(Handle(1)),
                "the connection closed with the client"
            );
        });
    });
    assert_eq!(panics, 0);
}

/// A Unix listener placed on an arbiter (system transport of that arbiter): shutting the
/// system down removes its path, as `StopListening` would.
#[test]
fn a_unix_listener_on_an_arbiter_that_shuts_down_removes_its_path() {
    actix::System::new().block_on(async {
        let path = crate::support::TempPath::new("review16-listener.sock");
        let at = path.0.clone();
        let system = SocketSystem::builder().arbiters(1).start().expect("start");
        let _listener = system
            .run_on(0, move || async move {
                Listener::builder()
                    .bind(sockactor::messages::Address::Unix(at))
                    .await
                    .expect("bind")
            })
            .await
            .expect("placed");
        assert!(path.0.exists());
        system.shutdown().await.expect("shutdown");
        tokio::time::sleep(ms(100)).await;
        assert!(!path.0.exists(), "the Unix path is left behind");
    });
}

/// The same over real TCP: a listener on an arbiter using the main thread's system
/// transport (which lives on). After the shutdown nothing listens any more: the port
/// refuses connections.
#[test]
fn a_tcp_listener_on_an_arbiter_that_shuts_down_stops_listening_on_its_port() {
    actix::System::new().block_on(async {
        let functions = sockactor::SocketFunctions::system();
        tokio::time::sleep(ms(20)).await;
        let before = crate::support::open_fds();
        let system = SocketSystem::builder().arbiters(1).start().expect("start");
        let (_listener, local) = system
            .run_on(0, move || async move {
                Listener::builder()
                    .functions(functions)
                    .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
                    .expect("bind")
            })
            .await
            .expect("placed");
        let addr = crate::support::servers::inet(local);
        system.shutdown().await.expect("shutdown");
        tokio::time::sleep(ms(100)).await;
        let still_listening = tokio::net::TcpStream::connect(addr).await.is_ok();
        tokio::time::sleep(ms(100)).await;
        let leaked = crate::support::open_fds().saturating_sub(before);
        assert!(
            !still_listening,
            "after the shutdown {addr} still accepts connections ({leaked} descriptors more \
             than before; the same run with a StopListening first leaves 2 and refuses)"
        );
    });
}
