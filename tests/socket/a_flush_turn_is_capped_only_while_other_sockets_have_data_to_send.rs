//! The fairness turn (`max_bytes_per_turn`) caps a flush only while another socket of the
//! same thread has data to send (`TurnCap::WhenContended`): a socket alone hands the
//! transport all it has in one vectored write, and busy sockets of one thread still take
//! turns. `TurnCap::Always` caps every turn.

use std::cell::RefCell;
use std::rc::Rc;

use crate::support::{mock_peer, run_paused, settle};
use actix::prelude::*;
use bytes::Bytes;
use sockactor::messages::{
    CloseSocket, Connect, Handle, OpenSocket, Received, RecvFrom, SendV, Sent, Write,
};
use sockactor::{QueueConfig, Socket, SocketConfig, SocketFunctions, TransportError, TurnCap};

/// A transport that takes every byte at once and logs each vectored write, across all
/// its handles, in the order they were made.
#[derive(Default)]
struct Log {
    next: u64,
    writes: Rc<RefCell<Vec<(Handle, usize)>>>,
}

impl Actor for Log {
    type Context = Context<Self>;
}

impl Handler<OpenSocket> for Log {
    type Result = Result<Handle, TransportError>;
    fn handle(&mut self, _: OpenSocket, _: &mut Context<Self>) -> Self::Result {
        self.next += 1;
        Ok(Handle(self.next))
    }
}

impl Handler<Connect> for Log {
    type Result = Result<(), TransportError>;
    fn handle(&mut self, _: Connect, _: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}

impl Handler<SendV> for Log {
    type Result = Result<Sent, TransportError>;
    fn handle(&mut self, msg: SendV, _: &mut Context<Self>) -> Self::Result {
        let n = msg.len();
        self.writes.borrow_mut().push((msg.handle, n));
        Ok(Sent::Accepted(n))
    }
}

impl Handler<RecvFrom> for Log {
    type Result = Result<Received, TransportError>;
    fn handle(&mut self, _: RecvFrom, _: &mut Context<Self>) -> Self::Result {
        Ok(Received::WouldBlock)
    }
}

impl Handler<CloseSocket> for Log {
    type Result = Result<(), TransportError>;
    fn handle(&mut self, _: CloseSocket, _: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}

const TURN: usize = 1_000;
const WRITE: usize = 600;
const WRITES: usize = 10;

async fn sockets(
    count: usize,
    cap: TurnCap,
) -> (Vec<Addr<Socket>>, Rc<RefCell<Vec<(Handle, usize)>>>) {
    let log = Log::default();
    let writes = log.writes.clone();
    let functions = SocketFunctions::from_actor(log.start());
    let config = SocketConfig {
        queue: QueueConfig {
            max_bytes_per_turn: TURN,
            turn_cap: cap,
            ..QueueConfig::default()
        },
        ..SocketConfig::default()
    };
    let mut out = Vec::new();
    for _ in 0..count {
        let socket = Socket::builder()
            .functions(functions.clone())
            .config(config)
            .connect(mock_peer())
            .await
            .expect("connect");
        out.push(socket);
    }
    (out, writes)
}

/// Queues `WRITES` writes of `WRITE` bytes (not copied: above the copy threshold) on
/// each socket, all before any flush, and waits until everything went out.
async fn burst(sockets: &[Addr<Socket>]) {
    for socket in sockets {
        for _ in 0..WRITES {
            socket.do_send(Write::new(Bytes::from(vec![7u8; WRITE])));
        }
    }
    settle().await;
}

#[test]
fn a_socket_alone_sends_all_it_has_in_one_write() {
    run_paused(|| async {
        let (sockets, writes) = sockets(1, TurnCap::WhenContended).await;
        burst(&sockets).await;
        let writes = writes.borrow();
        assert_eq!(writes.iter().map(|(_, n)| n).sum::<usize>(), WRITES * WRITE);
        assert_eq!(
            writes.len(),
            1,
            "one vectored write past the {TURN}-byte turn: {writes:?}"
        );
    });
}

#[test]
fn busy_sockets_of_one_thread_take_turns_capped_at_the_budget() {
    run_paused(|| async {
        let (sockets, writes) = sockets(3, TurnCap::WhenContended).await;
        burst(&sockets).await;
        let writes = writes.borrow();
        for socket in 1..=3 {
            let sent: usize = writes
                .iter()
                .filter(|(h, _)| *h == Handle(socket))
                .map(|(_, n)| n)
                .sum();
            assert_eq!(sent, WRITES * WRITE, "socket {socket} sent everything");
        }
        // While another socket had data, no turn went past the budget, and no socket
        // sent twice in a row before the others had their turn.
        let contended = &writes[..writes.len() - 2];
        assert!(
            contended.iter().all(|(_, n)| *n <= TURN),
            "turns capped at {TURN}: {writes:?}"
        );
        let first_three: Vec<Handle> = writes.iter().take(3).map(|(h, _)| *h).collect();
        let mut sorted = first_three.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 3, "each socket had a turn first: {writes:?}");
        let longest_run = writes
            .chunk_by(|a, b| a.0 == b.0)
            .map(|run| run.iter().map(|(_, n)| n).sum::<usize>())
            .max()
            .unwrap_or(0);
        assert!(
            longest_run <= 2 * TURN,
            "a turn is one budget (a socket may go on once the others are done): {writes:?}"
        );
    });
}

#[test]
fn with_always_every_turn_is_capped_even_alone() {
    run_paused(|| async {
        let (sockets, writes) = sockets(1, TurnCap::Always).await;
        burst(&sockets).await;
        let writes = writes.borrow();
        assert_eq!(writes.iter().map(|(_, n)| n).sum::<usize>(), WRITES * WRITE);
        assert!(writes.iter().all(|(_, n)| *n <= TURN), "{writes:?}");
        assert_eq!(writes.len(), (WRITES * WRITE).div_ceil(TURN));
    });
}
