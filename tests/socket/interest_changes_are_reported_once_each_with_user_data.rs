//! libcurl's socket callback as messages: a socket tells its interest subscriber what it
//! waits for (IN, OUT, IN+OUT, none, REMOVE) only when that changes, with the user data
//! assigned to it, in order, REMOVE last, even to a subscriber whose mailbox is full; a
//! subscriber that refuses a notification aborts the socket.

use std::sync::{Arc, Mutex};

use crate::support::{mock_peer, run_paused, settle, Recorder};
use actix::prelude::*;
use sockactor::messages::{
    AssignUserData, Close, Handle, Interest, InterestRefused, PauseReading, SocketInterest, Write,
};
use sockactor::{InterestGroup, MockTransport, SendStep, Socket, WriteError};

/// One notification: the interest and the user data, if it was a `String`.
type Seen = (Interest, Option<String>);

/// Records every notification; refuses the one kind named in `refuse`.
#[derive(Clone, Default)]
struct Watcher {
    seen: Arc<Mutex<Vec<Seen>>>,
    refuse: Option<Interest>,
}

impl Actor for Watcher {
    type Context = Context<Self>;
}

impl Handler<SocketInterest> for Watcher {
    type Result = Result<(), InterestRefused>;
    fn handle(&mut self, msg: SocketInterest, _: &mut Context<Self>) -> Self::Result {
        let data = msg
            .user_data
            .and_then(|d| d.downcast_ref::<String>().cloned());
        self.seen.lock().expect("lock").push((msg.interest, data));
        if self.refuse == Some(msg.interest) {
            return Err(InterestRefused("no room for another socket".into()));
        }
        Ok(())
    }
}

/// Keeps the watcher busy for a while (its mailbox fills behind it).
#[derive(Message)]
#[rtype(result = "()")]
struct Busy(std::time::Duration);

impl Handler<Busy> for Watcher {
    type Result = ();
    fn handle(&mut self, msg: Busy, ctx: &mut Context<Self>) {
        ctx.wait(tokio::time::sleep(msg.0).into_actor(self));
    }
}

impl Watcher {
    fn interests(&self) -> Vec<Interest> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .map(|(i, _)| *i)
            .collect()
    }
}

#[test]
fn interest_follows_reading_would_block_drain_eof_and_close() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let watcher = Watcher::default();
        let socket = Socket::builder()
            .functions(mock.functions())
            .subscriber(Recorder::default().start().recipient())
            .interest_subscriber(watcher.clone().start().recipient())
            .user_data(Arc::new(String::from("conn-7")))
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        assert_eq!(
            watcher.interests(),
            vec![Interest::In],
            "reading from the start"
        );

        // Several writes, one would-block: OUT appears once.
        for _ in 0..3 {
            socket.do_send(Write::new(&b"data"[..]));
        }
        settle().await;
        assert_eq!(watcher.interests(), vec![Interest::In, Interest::InOut]);

        // The transport takes everything: OUT goes when the queue drains.
        mock.release(Handle(1));
        settle().await;
        assert_eq!(mock.written(Handle(1)), b"datadatadata");
        assert_eq!(
            watcher.interests(),
            vec![Interest::In, Interest::InOut, Interest::In]
        );

        // EOF: nothing to wait for; then close: REMOVE, and nothing after it.
        mock.push_eof(Handle(1));
        settle().await;
        socket.do_send(AssignUserData(Some(Arc::new(String::from("conn-7b")))));
        socket.do_send(Close::Graceful);
        settle().await;
        socket.do_send(Write::new(&b"late"[..]));
        settle().await;
        let seen = watcher.seen.lock().expect("lock").clone();
        let interests: Vec<Interest> = seen.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            interests,
            vec![
                Interest::In,
                Interest::InOut,
                Interest::In,
                Interest::None,
                Interest::Remove
            ]
        );
        assert!(seen[..4]
            .iter()
            .all(|(_, d)| d.as_deref() == Some("conn-7")));
        assert_eq!(
            seen[4].1.as_deref(),
            Some("conn-7b"),
            "reassigned data comes back"
        );
    });
}

#[test]
fn a_refused_notification_aborts_the_socket() {
    run_paused(|| async {
        let mock = MockTransport::start();
        mock.set_default_step(SendStep::Hold);
        let watcher = Watcher {
            refuse: Some(Interest::Out),
            ..Watcher::default()
        };
        let socket = Socket::builder()
            .functions(mock.functions())
            .interest_subscriber(watcher.clone().start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        let write = socket
            .send(Write::new(&b"stuck"[..]))
            .await
            .expect("mailbox");
        assert!(
            matches!(
                write,
                Err(WriteError::Aborted {
                    bytes_sent: 0,
                    len: 5
                })
            ),
            "got {write:?}"
        );
        settle().await;
        assert!(mock.is_closed(Handle(1)));
        assert_eq!(
            watcher.interests(),
            vec![Interest::None, Interest::Out, Interest::Remove]
        );
    });
}

#[test]
fn a_refusal_aborts_every_socket_of_the_group_and_no_other() {
    run_paused(|| async {
        let mock = MockTransport::start();
        // Only the first member's transport blocks; the others are idle.
        mock.script_sendv(Handle(1), [SendStep::Hold]);
        let refusing = Watcher {
            refuse: Some(Interest::Out),
            ..Watcher::default()
        };
        let group = InterestGroup::new(refusing.clone().start().recipient());
        let calm = Watcher::default();
        let mut members = Vec::new();
        for _ in 0..3 {
            members.push(
                Socket::builder()
                    .functions(mock.functions())
                    .interest_group(&group)
                    .connect(mock_peer())
                    .await
                    .expect("connect"),
            );
        }
        let outsider = Socket::builder()
            .functions(mock.functions())
            .interest_subscriber(calm.clone().start().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        assert_eq!(group.len(), 3);

        // Member 1 blocks: OUT, refused: the whole group aborts.
        let blocked = members[0]
            .send(Write::new(&b"stuck"[..]))
            .await
            .expect("mailbox");
        assert!(
            matches!(blocked, Err(WriteError::Aborted { .. })),
            "{blocked:?}"
        );
        settle().await;
        for h in [Handle(1), Handle(2), Handle(3)] {
            assert!(mock.is_closed(h), "group member {h} closed");
        }
        let late = members[1]
            .send(Write::new(&b"late"[..]))
            .await
            .expect("mailbox");
        assert!(matches!(late, Err(WriteError::Closed { .. })), "{late:?}");

        // The outsider reports elsewhere and goes on.
        assert!(!mock.is_closed(Handle(4)));
        outsider
            .send(Write::new(&b"fine"[..]))
            .await
            .expect("mailbox")
            .expect("written");
        assert_eq!(mock.written(Handle(4)), b"fine");
    });
}

/// A subscriber with a full mailbox (past actix's capacity of 16, as one shared by many
/// sockets easily is) still hears a socket's notifications in order, REMOVE last: the
/// changes are not held back while the REMOVE goes ahead.
#[test]
fn remove_comes_last_even_when_the_subscribers_mailbox_is_full() {
    run_paused(|| async {
        let mock = MockTransport::start();
        let watcher = Watcher::default();
        let subscriber = watcher.clone().start();
        let socket = Socket::builder()
            .functions(mock.functions())
            .subscriber(Recorder::default().start().recipient())
            .interest_subscriber(subscriber.clone().recipient())
            .connect(mock_peer())
            .await
            .expect("connect");
        settle().await;
        subscriber.do_send(Busy(std::time::Duration::from_secs(10)));
        for _ in 0..20 {
            subscriber.do_send(Busy(std::time::Duration::ZERO));
        }
        // In one burst: reading paused (no interest), then an abort (REMOVE).
        socket.do_send(PauseReading);
        socket.do_send(PauseReading);
        socket.do_send(sockactor::messages::ResumeReading);
        socket.do_send(Close::Abort);
        settle().await;
        tokio::time::sleep(std::time::Duration::from_secs(20)).await;
        settle().await;
        assert_eq!(
            watcher.interests(),
            [Interest::In, Interest::None, Interest::In, Interest::Remove]
        );
    });
}
