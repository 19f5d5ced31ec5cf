//! Heap bytes and allocations per idle socket, counted by a global allocator: starts a
//! warm-up batch of sockets on loopback, then `--sockets N` more, and reports what the
//! second batch holds per socket once every socket is idle (connected, reading armed,
//! nothing to write), with a histogram of the allocation sizes it left live.
//!
//! With `--deflate`, every socket goes through the deflate layer (level 1) and has written
//! one 1 KiB message before it is idle: what a compressed connection keeps between bursts.
//! With `--deflate-unwritten`, through the same layer but nothing written yet.
//!
//! `cargo run --release -p sockactor-tools --bin idle_mem -- --sockets 2000 [--deflate | --deflate-unwritten]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::Mutex;

use actix::prelude::*;
use sockactor::filters::Compress;
use sockactor::messages::{SocketEvent, Write};
use sockactor::{Socket, SocketFunctions};
use sockactor_tools::args::{bad_arguments, unknown, Args};

struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static COUNT: AtomicIsize = AtomicIsize::new(0);
/// Histogram of live allocation sizes (only while `TRACKING`).
static TRACKING: AtomicBool = AtomicBool::new(false);
static SIZES: Mutex<BTreeMap<usize, isize>> = Mutex::new(BTreeMap::new());
static IN_HIST: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize, delta: isize) {
    if !TRACKING.load(Ordering::Relaxed) {
        return;
    }
    if IN_HIST.fetch_add(1, Ordering::Relaxed) > 0 {
        // The histogram's own allocation.
        IN_HIST.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    if let Ok(mut sizes) = SIZES.try_lock() {
        *sizes.entry(size).or_insert(0) += delta;
    }
    IN_HIST.fetch_sub(1, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        COUNT.fetch_add(1, Ordering::Relaxed);
        note(layout.size(), 1);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        COUNT.fetch_sub(1, Ordering::Relaxed);
        note(layout.size(), -1);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A subscriber that ignores everything.
struct Quiet;

impl Actor for Quiet {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for Quiet {
    type Result = ();
    fn handle(&mut self, _: SocketEvent, _: &mut Context<Self>) {}
}

/// What each socket is before it idles.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    /// Through the deflate layer, one 1 KiB message written.
    Deflate,
    /// Through the deflate layer, nothing written.
    DeflateUnwritten,
}

async fn start(
    n: usize,
    addr: SocketAddr,
    quiet: &Addr<Quiet>,
    keep: &mut Vec<Addr<Socket>>,
    kind: Kind,
) {
    for _ in 0..n {
        let mut builder = Socket::builder().subscriber(quiet.clone().recipient());
        if kind != Kind::Plain {
            builder = builder.functions(Compress::new().level(1).wrap(SocketFunctions::system()));
        }
        let socket = builder.connect(addr).await.expect("connect");
        if kind == Kind::Deflate {
            socket
                .send(Write::new(vec![b'x'; 1024]))
                .await
                .expect("mailbox")
                .expect("written");
        }
        keep.push(socket);
    }
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

const USAGE: &str = "usage: idle_mem [--sockets N] [--deflate | --deflate-unwritten]";

fn parse() -> Result<(usize, Kind), String> {
    let mut args = Args::from_env();
    let (mut sockets, mut kind) = (2000usize, Kind::Plain);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sockets" => sockets = args.number("--sockets")?,
            "--deflate" => kind = Kind::Deflate,
            "--deflate-unwritten" => kind = Kind::DeflateUnwritten,
            "--help" => return Err(String::new()),
            other => return Err(unknown(other)),
        }
    }
    Ok((sockets.max(1), kind))
}

fn main() -> ExitCode {
    let (sockets, kind) = match parse() {
        Ok(n) => n,
        Err(why) => return bad_arguments("idle_mem", &why, USAGE),
    };
    // The peer: accepts and holds every connection, on its own thread.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let system = actix::System::new();
    system.block_on(async move {
        let quiet = Quiet.start();
        let mut keep = Vec::with_capacity(2 * sockets + 16);
        start(sockets, addr, &quiet, &mut keep, kind).await;
        let (bytes, count) = (BYTES.load(Ordering::Relaxed), COUNT.load(Ordering::Relaxed));
        TRACKING.store(true, Ordering::Relaxed);
        start(sockets, addr, &quiet, &mut keep, kind).await;
        TRACKING.store(false, Ordering::Relaxed);
        let bytes = BYTES.load(Ordering::Relaxed) - bytes;
        let count = COUNT.load(Ordering::Relaxed) - count;
        println!(
            "idle sockets: {:.0} heap bytes and {:.1} allocations each (requested sizes; \
             malloc adds about 8 bytes and rounds to 16 per allocation)",
            bytes as f64 / sockets as f64,
            count as f64 / sockets as f64
        );
        println!("live allocations per socket, by size:");
        let sizes = SIZES.lock().expect("sizes");
        for (size, n) in sizes.iter() {
            let per = *n as f64 / sockets as f64;
            if per >= 0.5 {
                println!("  {size:>6} B × {per:.2}");
            }
        }
        drop(keep);
    });
    ExitCode::SUCCESS
}
