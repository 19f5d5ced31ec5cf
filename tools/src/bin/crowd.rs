//! One busy socket among many idle ones, all reached by message (through a filter that
//! changes nothing, so every read and write is a message to the system transport, and
//! every idle socket has a read wait armed there): 64 B round trips on the busy socket
//! against an echo peer, with 0, 1,000 and 5,000 idle sockets beside it. What it shows:
//! whether the transport's cost per message grows with the sockets it waits for.
//!
//! With `--throttled`, the filter is instead a `Throttle` limiting each socket's reads to
//! 64 KiB/s, and the idle sockets' peer sends each of them 256 KiB at once: each idle
//! socket reads its burst, then waits on the throttle's timer, over and over, so the
//! throttle holds one timer per idle socket (the busy socket's 1,000 round trips stay
//! within its 64 KiB burst).
//!
//! `cargo run --release -p sockactor-tools --bin crowd -- [--idle 0,1000,5000] [--count N] [--reps N] [--throttled]`

use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use sockactor::filters::{FaultInjector, Faults, Throttle};
use sockactor::messages::{GetWriter, SocketEvent, SocketEventKind};
use sockactor::{Socket, SocketFunctions};
use sockactor_tools::args::{bad_arguments, number, unknown, Args};
use sockactor_tools::pingpong::{p50_p99, round_trips};
use sockactor_tools::procfs::{pin_to_cpu, raise_nofile_towards};
use sockactor_tools::report::{median, table_header, table_row, Align};
use tokio::sync::mpsc;

const USAGE: &str = "usage: crowd [--idle N,N,..] [--count N] [--reps N] [--throttled]";
const SIZE: usize = 64;

struct Options {
    idle: Vec<usize>,
    count: usize,
    reps: usize,
    throttled: bool,
}

fn parse() -> Result<Options, String> {
    let mut args = Args::from_env();
    let mut o = Options {
        idle: vec![0, 1000, 5000],
        count: 20_000,
        reps: 3,
        throttled: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--idle" => {
                o.idle = args
                    .value("--idle")?
                    .split(',')
                    .map(number::<usize>)
                    .collect::<Result<_, _>>()?
            }
            "--count" => o.count = args.number::<usize>("--count")?.max(100),
            "--reps" => o.reps = args.number::<usize>("--reps")?.max(1),
            "--throttled" => o.throttled = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(unknown(other)),
        }
    }
    Ok(o)
}

/// Holds every connection it accepts, reading nothing (the idle sockets' peer), until
/// [`Holder::stop`].
struct Holder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Holder {
    /// With `send` bytes sent to each connection at once (as much as the kernel takes).
    fn start(send: usize) -> Holder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            pin_to_cpu(1);
            let mut held = Vec::new();
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                match stream {
                    Ok(mut stream) => {
                        if send > 0 && stream.set_nonblocking(true).is_ok() {
                            let _ = stream.write(&vec![1u8; send]);
                        }
                        held.push(stream)
                    }
                    Err(_) => return,
                }
            }
        });
        Holder { addr, stop, thread }
    }

    /// Closes every connection it holds.
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}

/// Echoes one connection back until it ends.
fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        pin_to_cpu(1);
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_nodelay(true);
        echo_until_eof(&mut stream);
    });
    addr
}

fn echo_until_eof(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Forwards a socket's events to a channel (the busy socket), or drops them (the idle).
struct Events(Option<mpsc::UnboundedSender<SocketEventKind>>);

impl Actor for Events {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for Events {
    type Result = ();

    fn handle(&mut self, event: SocketEvent, _: &mut Context<Self>) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event.kind);
        }
    }
}

/// p50 and p99 of `count` round trips on a busy socket beside `idle` idle ones, in µs.
async fn run(idle: usize, count: usize, throttled: bool) -> (f64, f64) {
    let functions = if throttled {
        Throttle::per_socket(1 << 40, 1 << 30)
            .receive_per_socket(64 * 1024, 64 * 1024)
            .wrap(SocketFunctions::system())
    } else {
        FaultInjector::new(1, Faults::default()).wrap(SocketFunctions::system())
    };
    let quiet = Events(None).start().recipient();
    let held = Holder::start(if throttled { 256 * 1024 } else { 0 });
    let mut crowd = Vec::with_capacity(idle);
    for _ in 0..idle {
        let socket = Socket::builder()
            .functions(functions.clone())
            .subscriber(quiet.clone())
            .connect(held.addr)
            .await
            .expect("connect an idle socket");
        crowd.push(socket);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let socket = Socket::builder()
        .functions(functions.clone())
        .subscriber(Events(Some(tx)).start().recipient())
        .connect(echo())
        .await
        .expect("connect the busy socket");
    let writer = socket.send(GetWriter).await.expect("writer");
    let ping = Bytes::from(vec![7u8; SIZE]);
    let latencies = round_trips(&writer, &mut rx, &ping, count).await;
    socket.do_send(sockactor::messages::Close::Abort);
    for socket in &crowd {
        socket.do_send(sockactor::messages::Close::Abort);
    }
    held.stop().await;
    p50_p99(latencies)
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(why) => return bad_arguments("crowd", &why, USAGE),
    };
    let most = o.idle.iter().copied().max().unwrap_or(0) as u64;
    let limit = raise_nofile_towards(2 * most + 1024);
    if limit < 2 * most + 64 {
        eprintln!(
            "crowd: {most} idle sockets need {} descriptors; the limit is {limit}",
            2 * most + 64
        );
        return ExitCode::from(2);
    }
    pin_to_cpu(0);
    let system = actix::System::new();
    let rows = system.block_on(async move {
        let mut rows = Vec::new();
        for &idle in &o.idle {
            let (mut p50s, mut p99s) = (vec![], vec![]);
            for rep in 1..=o.reps {
                let (p50, p99) = run(idle, o.count, o.throttled).await;
                eprintln!("[rep {rep}] {idle} idle: p50 {p50:.1} µs, p99 {p99:.1} µs");
                p50s.push(p50);
                p99s.push(p99);
                // Let the aborted sockets close before the next run.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            rows.push((idle, p50s, p99s));
        }
        rows
    });
    println!(
        "\n{} round trips of {SIZE} B per run, {} runs; every socket through {} over the \
         system transport; medians (min..max)\n",
        o.count,
        o.reps,
        if o.throttled {
            "a throttle of reads (64 KiB/s per socket; the idle ones each sent 256 KiB)"
        } else {
            "a pass-through fault injector"
        }
    );
    table_header(&[
        ("idle sockets beside", Align::Right),
        ("p50 µs", Align::Right),
        ("p99 µs", Align::Right),
    ]);
    for (idle, p50s, p99s) in rows {
        table_row(&[idle.to_string(), cell(&p50s), cell(&p99s)]);
    }
    ExitCode::SUCCESS
}

fn cell(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    format!(
        "{:.1} ({:.1}..{:.1})",
        median(&v).unwrap_or(f64::NAN),
        v[0],
        v[v.len() - 1]
    )
}
