//! `SocketSystem` lifecycle: shutdown stops and joins every arbiter, after which every
//! call is a typed error; a stopped arbiter is a typed error and placement skips it;
//! nothing panics when an arbiter is gone or the system is used wrongly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use actix::prelude::*;
use sockactor::messages::Write;
use sockactor::{Socket, SocketSystem, SocketSystemError};

/// A loopback listener that never accepts: connects complete in its backlog.
async fn backlog_peer() -> (std::net::SocketAddr, tokio::net::TcpListener) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    (listener.local_addr().expect("addr"), listener)
}

/// A gate threads can wait at until the test opens it.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open(&self) {
        *self.0 .0.lock().expect("lock") = true;
        self.0 .1.notify_all();
    }

    fn wait(&self) {
        let mut open = self.0 .0.lock().expect("lock");
        while !*open {
            open = self.0 .1.wait(open).expect("lock");
        }
    }
}

/// Held by a task on an arbiter: when the arbiter ends and drops it, it says so, holds
/// the arbiter thread at the gate, then counts itself dropped.
struct Guard {
    dropping: tokio::sync::mpsc::UnboundedSender<usize>,
    index: usize,
    gate: Gate,
    dropped: Arc<AtomicUsize>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.dropping.send(self.index);
        self.gate.wait();
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

#[actix::test]
async fn shutdown_stops_and_joins_every_arbiter_then_every_call_is_shut_down() {
    let system = SocketSystem::builder().arbiters(2).start().expect("start");
    let gate = Gate::default();
    let dropped = Arc::new(AtomicUsize::new(0));
    let (dropping_tx, mut dropping) = tokio::sync::mpsc::unbounded_channel();
    for index in 0..system.arbiters() {
        let guard = Guard {
            dropping: dropping_tx.clone(),
            index,
            gate: gate.clone(),
            dropped: dropped.clone(),
        };
        // A task that never ends on its own: only the arbiter's end drops it.
        let ran_on = system
            .run_on(index, move || {
                actix::spawn(async move {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                });
                async { thread::current().id() }
            })
            .await
            .expect("run on a live arbiter");
        assert_eq!(ran_on, system.thread_ids()[index]);
    }
    // A socket left open on an arbiter at shutdown.
    let (peer, _listener) = backlog_peer().await;
    let socket = system
        .connect(Socket::builder, peer)
        .await
        .expect("connect");

    let stopping = system.clone();
    let mut shutdown = actix::spawn(async move { stopping.shutdown().await });
    let mut held = Vec::new();
    for _ in 0..system.arbiters() {
        let index = tokio::time::timeout(Duration::from_secs(10), dropping.recv())
            .await
            .expect("each arbiter drops its tasks when stopped")
            .expect("guards alive");
        held.push(index);
    }
    held.sort_unstable();
    assert_eq!(held, vec![0, 1]);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut shutdown)
            .await
            .is_err(),
        "shutdown waits while the arbiter threads have not ended"
    );
    gate.open();
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown returns once the threads end")
        .expect("join")
        .expect("clean shutdown");
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        2,
        "both arbiter threads finished before shutdown returned"
    );

    assert!(!socket.connected(), "the socket went with its arbiter");
    assert!(
        socket.send(Write::new(&b"late"[..])).await.is_err(),
        "a write to it is a mailbox error, not a hang"
    );
    assert!(matches!(
        system.connect(Socket::builder, peer).await,
        Err(SocketSystemError::ShutDown)
    ));
    let stream = std::net::TcpStream::connect(peer).expect("a stream to adopt");
    assert!(matches!(
        system.adopt(stream, Socket::builder).await,
        Err(SocketSystemError::ShutDown)
    ));
    assert!(matches!(
        system.run_on(0, || async {}).await,
        Err(SocketSystemError::ShutDown)
    ));
    system
        .shutdown()
        .await
        .expect("a second shutdown has nothing left to do");
}

#[actix::test]
async fn a_stopped_arbiter_is_a_typed_error_and_placement_skips_it() {
    let system = SocketSystem::builder().arbiters(2).start().expect("start");
    system
        .run_on(1, || async { Arbiter::current().stop() })
        .await
        .expect("the stop request ran");
    assert!(matches!(
        system.run_on(1, || async {}).await,
        Err(SocketSystemError::ArbiterGone { index: 1 })
    ));

    let (peer, _listener) = backlog_peer().await;
    let placed = Arc::new(Mutex::new(Vec::new()));
    // Round-robin would use arbiter 1 for every other socket; it is gone.
    for _ in 0..4 {
        let placed = placed.clone();
        let socket = system
            .connect(
                move || {
                    placed.lock().expect("lock").push(thread::current().id());
                    Socket::builder()
                },
                peer,
            )
            .await;
        assert!(socket.is_ok(), "placed on the live arbiter: {socket:?}");
    }
    let placed = placed.lock().expect("lock").clone();
    assert_eq!(placed, vec![system.thread_ids()[0]; 4]);
    system.shutdown().await.expect("clean shutdown");
}

#[actix::test]
async fn run_on_a_missing_arbiter_is_a_typed_error() {
    let system = SocketSystem::builder().arbiters(2).start().expect("start");
    assert!(matches!(
        system.run_on(2, || async {}).await,
        Err(SocketSystemError::NoSuchArbiter {
            index: 2,
            arbiters: 2
        })
    ));
    system.shutdown().await.expect("clean shutdown");
}

#[actix::test]
async fn shutdown_from_an_own_arbiter_is_refused() {
    let system = SocketSystem::builder().arbiters(1).start().expect("start");
    let own = system.clone();
    let refused = system
        .run_on(0, move || async move { own.shutdown().await })
        .await
        .expect("ran on the arbiter");
    assert!(matches!(refused, Err(SocketSystemError::OnOwnArbiter)));
    assert!(
        system.run_on(0, || async {}).await.is_ok(),
        "the refused shutdown changed nothing"
    );
    system.shutdown().await.expect("clean shutdown");
}

#[test]
fn starting_outside_an_actix_system_is_a_typed_error() {
    assert!(matches!(
        SocketSystem::start(),
        Err(SocketSystemError::NoSystem)
    ));
}

#[test]
fn zero_arbiters_means_one() {
    actix::System::new().block_on(async {
        let system = SocketSystem::builder().arbiters(0).start().expect("start");
        assert_eq!(system.arbiters(), 1);
        system.shutdown().await.expect("clean shutdown");
    });
}

/// Takes every byte of a `sendv`, but answers only after `delay`.
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
            let mut taken = taken.lock().expect("lock");
            for segment in &msg.segments {
                taken.extend_from_slice(segment);
            }
            Ok(sockactor::messages::Sent::Accepted(msg.len()))
        })
    }
}

/// A socket on an arbiter whose `sendv` (to a transport of the main thread, which lives
/// on) is out when the system shuts down: whether the transport takes the bytes is
/// unknown then (here it takes them all, later), so the write is answered
/// `WriteError::Lost`, never `Closed { bytes_sent: 0 }`.
#[actix::test]
async fn a_write_whose_sendv_is_out_at_shutdown_is_answered_lost() {
    let mock = sockactor::MockTransport::start();
    let taken = Arc::new(Mutex::new(Vec::new()));
    let slow = SlowSendv {
        delay: Duration::from_millis(200),
        taken: taken.clone(),
    }
    .start();
    let functions = mock.functions().with_sendv(slow.recipient());
    let system = SocketSystem::builder().arbiters(1).start().expect("start");
    let socket = system
        .connect(
            move || Socket::builder().functions(functions).immediate(),
            "127.0.0.1:9".parse::<std::net::SocketAddr>().expect("addr"),
        )
        .await
        .expect("connect");
    let writer = socket
        .send(sockactor::messages::GetWriter)
        .await
        .expect("writer");
    let answer = writer.write_answered(vec![9u8; 100]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    system.shutdown().await.expect("shutdown");
    let answer = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("answered");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(taken.lock().expect("lock").len(), 100, "taken after all");
    assert!(
        matches!(answer, Err(sockactor::WriteError::Lost { len: 100 })),
        "{answer:?}"
    );
}

/// A listener placed on an arbiter over the main thread's mock: when the arbiter shuts
/// down the listener is dropped with it; its listening handle is closed through the
/// transport that lives on, and its subscriber hears `Closed` last.
#[actix::test]
async fn a_listener_on_an_arbiter_that_shuts_down_closes_its_handle_and_says_closed() {
    use sockactor::messages::{Handle, ListenerEvent};
    let mock = sockactor::MockTransport::start();
    let functions = mock.functions();
    let (events, mut heard) = crate::support::channel::<ListenerEvent>();
    let system = SocketSystem::builder().arbiters(1).start().expect("start");
    let _listener = system
        .run_on(0, move || async move {
            sockactor::Listener::builder()
                .functions(functions)
                .subscriber(events)
                .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .expect("bind")
        })
        .await
        .expect("placed");
    let conn = mock
        .connect_inbound(Handle(1), std::net::SocketAddr::from(([10, 0, 0, 1], 1)))
        .expect("inbound");
    let accepted = tokio::time::timeout(Duration::from_secs(5), heard.recv())
        .await
        .expect("in time");
    assert!(matches!(accepted, Some(ListenerEvent::Accepted { .. })));
    system.shutdown().await.expect("shutdown");
    let closed = tokio::time::timeout(Duration::from_secs(5), heard.recv())
        .await
        .expect("in time");
    assert!(matches!(closed, Some(ListenerEvent::Closed)), "{closed:?}");
    crate::support::settle().await;
    assert!(mock.is_closed(Handle(1)), "the listening handle is closed");
    assert!(mock.is_closed(conn), "the accepted connection is closed");
    assert!(
        crate::support::drain(&mut heard).is_empty(),
        "Closed is the last"
    );
}
