//! A loopback TCP echo benchmark: a sockactor echo server on 127.0.0.1 and 8 client
//! sockets streaming 64-byte messages at it, first with deferred flushing through the
//! thread's `Flusher` (the default), then with `.immediate()` flushing, ~4.5 s each. It
//! prints a markdown table and exits on its own after about 10 s. Run it with
//! `cargo run --release --example echo` (set `RUST_LOG=sockactor=debug` to see tracing).

use std::cell::Cell;
use std::error::Error;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use sockactor::messages::{Close, GetStats, SocketEvent, SocketEventKind, SocketStats, Write};
use sockactor::{Socket, SocketBuilder};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

const CLIENTS: usize = 8;
const MSG_LEN: usize = 64;
const BURST: usize = 64;
const PHASE: Duration = Duration::from_millis(4500);
static PAYLOAD: [u8; MSG_LEN] = [b'x'; MSG_LEN];

/// Server side, one per accepted connection: writes back whatever arrives.
struct Echo {
    socket: Addr<Socket>,
}

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for Echo {
    type Result = ();
    fn handle(&mut self, event: SocketEvent, ctx: &mut Context<Self>) {
        match event.kind {
            SocketEventKind::Received(bytes) => self.socket.do_send(Write::new(bytes)),
            SocketEventKind::Eof => self.socket.do_send(Close::Graceful),
            SocketEventKind::Closed { .. } => ctx.stop(),
            other => tracing::warn!(?other, "echo socket event"),
        }
    }
}

/// Client side, one per phase: counts the echoed bytes of all clients (all actors here
/// share one thread, so a `Cell` will do).
struct Counter(Rc<Cell<u64>>);

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for Counter {
    type Result = ();
    fn handle(&mut self, event: SocketEvent, _: &mut Context<Self>) {
        if let SocketEventKind::Received(bytes) = event.kind {
            self.0.set(self.0.get() + bytes.len() as u64);
        }
    }
}

/// One per client: until `until`, sends bursts of BURST writes, all fire-and-forget but
/// the last, whose answer it awaits, so at most one burst per client is in flight.
struct Producer {
    socket: Addr<Socket>,
    until: Instant,
}

impl Actor for Producer {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.burst(ctx);
    }
}

impl Producer {
    fn burst(&mut self, ctx: &mut Context<Self>) {
        if Instant::now() >= self.until {
            return ctx.stop();
        }
        for _ in 1..BURST {
            self.socket.do_send(Write::new(&PAYLOAD[..]));
        }
        let last = self.socket.send(Write::new(&PAYLOAD[..]));
        ctx.wait(last.into_actor(self).map(|answer, act, ctx| match answer {
            Ok(Ok(_)) => act.burst(ctx),
            Ok(Err(e)) => tracing::warn!(%e, "write failed; producer stops"),
            Err(e) => tracing::warn!(%e, "socket gone; producer stops"),
        }));
    }
}

/// Runs one phase against `server` with clients built by `configure`; returns its row.
async fn phase(
    mode: &str,
    server: SocketAddr,
    configure: fn(SocketBuilder) -> SocketBuilder,
) -> Result<String, Box<dyn Error>> {
    // Connect the clients; they all report to one Counter.
    let echoed = Rc::new(Cell::new(0));
    let counter = Counter(echoed.clone()).start();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let builder = Socket::builder().subscriber(counter.clone().recipient());
        clients.push(configure(builder).connect(server).await?);
    }
    // Run one producer per client for the phase, and measure the bytes echoed meanwhile.
    let (start, until) = (Instant::now(), Instant::now() + PHASE);
    for socket in clients.iter().cloned() {
        Producer { socket, until }.start();
    }
    tokio::time::sleep(PHASE).await;
    let (bytes, secs) = (echoed.get() as f64, start.elapsed().as_secs_f64());
    // Wait (at most 1 s) until every byte written has come back; read the clients' stats.
    let drain_until = Instant::now() + Duration::from_secs(1);
    let stats = loop {
        let mut stats = Vec::new();
        for socket in &clients {
            stats.push(socket.send(GetStats).await?);
        }
        let written: u64 = stats.iter().map(|s| s.writes * MSG_LEN as u64).sum();
        if echoed.get() == written || Instant::now() >= drain_until {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let sum = |field: fn(&SocketStats) -> u64| stats.iter().map(field).sum::<u64>();
    let writes = sum(|s| s.writes);
    if echoed.get() != writes * MSG_LEN as u64 {
        let sent = writes * MSG_LEN as u64;
        eprintln!("{mode}: only {} of {sent} bytes came back", echoed.get());
    }
    // Close the clients; their server-side peers see EOF and close too.
    for socket in &clients {
        socket.do_send(Close::Graceful);
    }
    Ok(format!(
        "| {mode} | {:.0} | {:.1} | {:.4} | {} |",
        bytes / MSG_LEN as f64 / secs,
        bytes / 1e6 / secs,
        sum(|s| s.sendv_calls) as f64 / writes.max(1) as f64,
        sum(|s| s.would_blocks),
    ))
}

#[actix::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // Log to stderr, filtered by RUST_LOG (warnings only by default).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let subscriber = tracing_subscriber::fmt().with_writer(std::io::stderr);
    subscriber.with_env_filter(filter).init();

    // The echo server: each accepted stream becomes a Socket whose subscriber is an Echo.
    // The Echo's context exists before the Socket, which breaks the address cycle.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let server = listener.local_addr()?;
    actix::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(%e, "accept failed");
                    continue;
                }
            };
            let ctx = Context::<Echo>::new();
            let builder = Socket::builder().subscriber(ctx.address().recipient());
            match builder.adopt(stream).await {
                Ok(socket) => drop(ctx.run(Echo { socket })),
                Err(e) => tracing::warn!(%e, "adopt failed"),
            }
        }
    });

    // Two phases, deferred then immediate flushing, printed as a markdown table.
    println!("| mode | messages/s | MB/s (echoed) | sendv calls per write | would-blocks |");
    println!("|---|---:|---:|---:|---:|");
    println!("{}", phase("deferred (Flusher)", server, |b| b).await?);
    println!(
        "{}",
        phase("immediate", server, SocketBuilder::immediate).await?
    );
    Ok(())
}
