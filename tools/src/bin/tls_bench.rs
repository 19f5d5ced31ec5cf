//! Byte layers against plain, on loopback, in one run: what the in-place TLS and deflate
//! layers cost a sockactor socket.
//!
//! - **ping-pong**: 64 B round trips through an echo peer (a std thread: plain TCP, or
//!   rustls over TCP), one at a time; p50 and p99 per repetition, the TLS/plain ratio
//!   per repetition.
//! - **small writes**: 64 B writes through a `Writer` (1,024 in flight), the peer reading
//!   and (for TLS) decrypting or (for deflate) inflating; messages per second, layered ÷
//!   plain per repetition.
//!
//! - **bulk**: 16 KiB writes through a `Writer` (64 in flight), the peer decrypting.
//! - **tokio-rustls**, the baseline in the same run: a tokio `TcpStream` under
//!   tokio-rustls (the same rustls build), with a 64 KiB `BufWriter` for small writes
//!   (flushed at the end) and `write_all` + `flush` per ping and per bulk write.
//!
//! Every repetition runs each mode in turn (plain, TLS, tokio-rustls); the table gives
//! medians with (min..max). `cargo run --release -p sockactor-tools --bin tls_bench -- [--reps N]
//! [--count N] [--quick] [--only MEASURE]`; `--only` runs one measure `--reps` times and
//! prints its figures, no table (for a profiler): `ping-pong`, `tls-ping-pong`,
//! `tokio-ping-pong`, `writes`, `tls-writes`, `deflate-writes`, `tls-sink`, `tokio-writes`,
//! `tls-bulk`, `tokio-bulk`.

use std::io::{self, Read, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use rustls::{ClientConfig, ServerConfig, ServerConnection, StreamOwned};
use sockactor::filters::{Compress, Tls};
use sockactor::messages::{GetWriter, SocketEvent, SocketEventKind};
use sockactor::{Socket, SocketFunctions, Writer};
use sockactor_tools::args::{bad_arguments, unknown, Args};
use sockactor_tools::inflate::Inflate;
use sockactor_tools::pingpong::{p50_p99, round_trips};
use sockactor_tools::procfs::pin_to_cpu;
use sockactor_tools::report::median;
use sockactor_tools::tls::configs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const USAGE: &str = "usage: tls_bench [--reps N] [--count N] [--quick] [--only MEASURE]";
const SIZE: usize = 64;
/// A bulk write: one TLS record's worth of plaintext.
const BULK: usize = 16 * 1024;

struct Options {
    reps: usize,
    count: usize,
    only: Option<String>,
}

fn parse() -> Result<Options, String> {
    let mut args = Args::from_env();
    let mut o = Options {
        reps: 5,
        count: 20_000,
        only: None,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--reps" => o.reps = args.number::<usize>("--reps")?.max(1),
            "--count" => o.count = args.number::<usize>("--count")?.max(100),
            "--only" => o.only = Some(args.value("--only")?),
            "--quick" => {
                o.reps = 1;
                o.count = 2_000;
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(unknown(other)),
        }
    }
    Ok(o)
}

/// What a connection carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layering {
    Plain,
    Tls,
    Deflate,
}

/// The peer: accepts one connection, plain or TLS; echoes (`echo`) or reads everything;
/// answers the bytes it read when the connection ends.
fn peer(
    tls: Option<Arc<ServerConfig>>,
    echo: bool,
) -> (SocketAddr, std::thread::JoinHandle<io::Result<u64>>) {
    peer_with(tls, false, echo)
}

/// As [`peer`], inflating what it reads with `deflate`.
fn peer_with(
    tls: Option<Arc<ServerConfig>>,
    deflate: bool,
    echo: bool,
) -> (SocketAddr, std::thread::JoinHandle<io::Result<u64>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let thread = std::thread::spawn(move || -> io::Result<u64> {
        // The peer on the second CPU, the client's runtime on the first (as `bench`).
        pin_to_cpu(1);
        let (tcp, _) = listener.accept()?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut stream: Box<dyn ReadWrite> = match tls {
            Some(config) => {
                let conn = ServerConnection::new(config).map_err(io::Error::other)?;
                Box::new(StreamOwned::new(conn, tcp))
            }
            None if deflate => Box::new(Inflate::new(tcp)),
            None => Box::new(tcp),
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A client that closes without close_notify: the end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(total),
                Err(e) => return Err(e),
            };
            total += n as u64;
            if echo {
                stream.write_all(&buf[..n])?;
                stream.flush()?;
            }
        }
    });
    (addr, thread)
}

trait ReadWrite: Read + io::Write + Send {}
impl<T: Read + io::Write + Send> ReadWrite for T {}

/// Forwards a socket's events into a channel.
struct Events(mpsc::UnboundedSender<SocketEventKind>);

impl Actor for Events {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for Events {
    type Result = ();
    fn handle(&mut self, msg: SocketEvent, _: &mut Context<Self>) {
        let _ = self.0.send(msg.kind);
    }
}

type Connected = (
    Addr<Socket>,
    Writer,
    mpsc::UnboundedReceiver<SocketEventKind>,
);

async fn connect(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> Connected {
    connect_with(addr, tls, false).await
}

async fn connect_with(
    addr: SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
    deflate: bool,
) -> Connected {
    let functions = match tls {
        Some(config) => Tls::client(config.clone(), "localhost")
            .expect("name")
            .wrap(SocketFunctions::system()),
        None if deflate => Compress::new().level(1).wrap(SocketFunctions::system()),
        None => SocketFunctions::system(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let socket = Socket::builder()
        .functions(functions)
        .subscriber(Events(tx).start().recipient())
        .connect(addr)
        .await
        .expect("connect");
    let writer = socket.send(GetWriter).await.expect("writer");
    (socket, writer, rx)
}

/// p50 and p99 of `count` round trips, in µs.
async fn ping_pong(
    count: usize,
    tls: Option<(&Arc<ServerConfig>, &Arc<ClientConfig>)>,
) -> (f64, f64) {
    let (addr, thread) = peer(tls.map(|(s, _)| s.clone()), true);
    let (socket, writer, mut events) = connect(addr, tls.map(|(_, c)| c)).await;
    let ping = Bytes::from(vec![7u8; SIZE]);
    let latencies = round_trips(&writer, &mut events, &ping, count).await;
    socket.do_send(sockactor::messages::Close::Graceful);
    drop(writer);
    drop(socket);
    // Joined off the runtime thread: the socket must run to close, and the echo peer
    // ends at its EOF (a blocking join here held both until the peer's read timeout).
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    p50_p99(latencies)
}

/// Messages per second for `count` 64 B writes through a `Writer`, 1,024 in flight.
async fn small_writes(count: usize, tls: Option<(&Arc<ServerConfig>, &Arc<ClientConfig>)>) -> f64 {
    let layering = if tls.is_some() {
        Layering::Tls
    } else {
        Layering::Plain
    };
    small_writes_with(count, tls, layering).await
}

async fn small_writes_with(
    count: usize,
    tls: Option<(&Arc<ServerConfig>, &Arc<ClientConfig>)>,
    layering: Layering,
) -> f64 {
    writes(
        count,
        SIZE,
        tls,
        layering,
        Producer::Answered { in_flight: 1024 },
    )
    .await
}

/// How a producer writes through its `Writer`.
#[derive(Clone, Copy)]
enum Producer {
    /// Each write answered, `in_flight` unanswered at a time.
    Answered { in_flight: usize },
    /// Fire and forget (`write_when_ready`: waiting only for room under the high
    /// watermark), the last one answered: the shape of a `BufWriter` user, who hears of
    /// no single write.
    Unanswered,
    /// Through the writer's `Sink` (`FramedWriter` with an encoder of slices): `send_all`,
    /// which buffers up to 64 KiB per write and flushes at the end, as a `BufWriter` user
    /// writes; then an empty answered write, done when everything before it is.
    Sink,
}

/// Messages per second for `count` writes of `size` bytes through a `Writer` on a
/// `layering` socket, to a peer that reads (and decrypts or inflates) everything.
async fn writes(
    count: usize,
    size: usize,
    tls: Option<(&Arc<ServerConfig>, &Arc<ClientConfig>)>,
    layering: Layering,
    producer: Producer,
) -> f64 {
    let deflate = layering == Layering::Deflate;
    let (addr, thread) = peer_with(tls.map(|(s, _)| s.clone()), deflate, false);
    let (socket, writer, _events) = connect_with(addr, tls.map(|(_, c)| c), deflate).await;
    let message = Bytes::from(vec![9u8; size]);
    let start = Instant::now();
    match producer {
        Producer::Answered { in_flight } => {
            let mut answers = std::collections::VecDeque::with_capacity(in_flight);
            for _ in 0..count {
                if answers.len() == in_flight {
                    let answer: sockactor::WriteFuture = answers.pop_front().expect("answer");
                    answer.await.expect("written");
                }
                answers.push_back(writer.write_answered(message.clone()));
            }
            for answer in answers {
                answer.await.expect("written");
            }
        }
        Producer::Sink => {
            use futures_util::SinkExt;
            // Items are borrowed slices, as the `BufWriter` baseline writes them (a
            // `Bytes` item would add two reference-count updates per item).
            let mut sink = writer.clone().framed(Slices);
            let mut items = futures_util::stream::iter(
                (0..count).map(|_| Ok::<_, sockactor::FramedWriteError<io::Error>>(&message[..])),
            );
            sink.send_all(&mut items).await.expect("sent");
            writer
                .write_answered(Bytes::new())
                .await
                .expect("everything before it written");
        }
        Producer::Unanswered => {
            for _ in 1..count {
                writer
                    .write_when_ready(message.clone())
                    .await
                    .expect("written");
            }
            writer
                .write_answered(message.clone())
                .await
                .expect("the last write answered");
        }
    }
    socket.do_send(sockactor::messages::Close::Graceful);
    drop(writer);
    drop(socket);
    let read = tokio::task::spawn_blocking(move || thread.join())
        .await
        .expect("join")
        .expect("peer")
        .expect("peer read");
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(read, (count * size) as u64, "the peer read every byte");
    count as f64 / elapsed
}

/// A tokio-rustls client connected to `addr`.
async fn tokio_tls(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(client.clone())
        .connect(name, tcp)
        .await
        .expect("handshake")
}

/// (tokio-rustls) p50 and p99 of `count` round trips, in µs.
async fn tokio_ping_pong(
    count: usize,
    tls: (&Arc<ServerConfig>, &Arc<ClientConfig>),
) -> (f64, f64) {
    let (addr, thread) = peer(Some(tls.0.clone()), true);
    let mut stream = tokio_tls(addr, tls.1).await;
    let ping = vec![7u8; SIZE];
    let mut pong = vec![0u8; SIZE];
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        stream.write_all(&ping).await.expect("write");
        stream.flush().await.expect("flush");
        stream.read_exact(&mut pong).await.expect("read");
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let _ = stream.shutdown().await;
    drop(stream);
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    p50_p99(latencies)
}

/// (tokio-rustls) messages per second for `count` writes of `size` bytes: through a
/// 64 KiB `BufWriter` when `buffered`, else `write_all` each; flushed at the end.
async fn tokio_writes(
    count: usize,
    size: usize,
    buffered: bool,
    tls: (&Arc<ServerConfig>, &Arc<ClientConfig>),
) -> f64 {
    let (addr, thread) = peer(Some(tls.0.clone()), false);
    let stream = tokio_tls(addr, tls.1).await;
    // Unbuffered: a zero-capacity `BufWriter` hands every write straight through.
    let capacity = if buffered { 64 * 1024 } else { 0 };
    tokio_writes_to(stream, capacity, count, size, thread).await
}

/// Messages per second for `count` writes of `size` bytes from a plain tokio
/// `TcpStream` behind a 64 KiB `BufWriter`, to a peer that reads everything.
async fn tokio_plain_writes(count: usize, size: usize) -> f64 {
    let (addr, thread) = peer(None, false);
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    tokio_writes_to(stream, 64 * 1024, count, size, thread).await
}

/// Writes `count` messages of `size` bytes to `stream` behind a `BufWriter` of
/// `capacity`, flushes and shuts it down, and waits for `peer` to have read them all:
/// messages per second.
async fn tokio_writes_to<S: tokio::io::AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    capacity: usize,
    count: usize,
    size: usize,
    peer: std::thread::JoinHandle<io::Result<u64>>,
) -> f64 {
    let message = vec![9u8; size];
    let start = Instant::now();
    let mut out = tokio::io::BufWriter::with_capacity(capacity, stream);
    for _ in 0..count {
        out.write_all(&message).await.expect("write");
    }
    out.flush().await.expect("flush");
    out.shutdown().await.expect("shutdown");
    // Held open until the peer has read it all: closing a stream with unread bytes
    // (the server's session tickets) would reset the connection under the peer.
    let read = tokio::task::spawn_blocking(move || peer.join())
        .await
        .expect("join")
        .expect("peer")
        .expect("peer read");
    let elapsed = start.elapsed().as_secs_f64();
    drop(out);
    assert_eq!(read, (count * size) as u64, "the peer read every byte");
    count as f64 / elapsed
}

/// An encoder of borrowed byte slices, copied as they are.
struct Slices;

impl<'a> tokio_util::codec::Encoder<&'a [u8]> for Slices {
    type Error = io::Error;

    fn encode(&mut self, item: &'a [u8], dst: &mut bytes::BytesMut) -> io::Result<()> {
        dst.extend_from_slice(item);
        Ok(())
    }
}

fn cell(values: &mut [f64], digits: usize) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "{:.digits$} ({:.digits$}..{:.digits$})",
        median(values).unwrap_or(f64::NAN),
        values[0],
        values[values.len() - 1]
    )
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(why) => return bad_arguments("tls_bench", &why, USAGE),
    };
    let (server, client) = configs();
    pin_to_cpu(0);
    let system = actix::System::new();
    system.block_on(async move {
        let tls = Some((&server, &client));
        if let Some(only) = &o.only {
            return run_only(only, &o, &server, &client).await;
        }
        let (mut p50s, mut p99s, mut ratio50, mut ratio99) = (vec![], vec![], vec![], vec![]);
        let (mut tp50s, mut tp99s) = (vec![], vec![]);
        let (mut plain_rate, mut tls_rate, mut rate_ratio) = (vec![], vec![], vec![]);
        let (mut deflate_rate, mut deflate_ratio) = (vec![], vec![]);
        let (mut k50s, mut k99s, mut vs50, mut vs99) = (vec![], vec![], vec![], vec![]);
        let (mut tokio_rate, mut vs_rate) = (vec![], vec![]);
        let (mut silent_rate, mut vs_silent) = (vec![], vec![]);
        let (mut sink_rate, mut vs_sink) = (vec![], vec![]);
        let (mut plain_sink_rate, mut plain_tokio_rate, mut vs_plain_sink) = (vec![], vec![], vec![]);
        let (mut plain_silent_rate, mut vs_plain_silent) = (vec![], vec![]);
        let (mut bulk_rate, mut tokio_bulk, mut vs_bulk) = (vec![], vec![], vec![]);
        let bulk_count = (o.count / 4).max(100);
        for rep in 1..=o.reps {
            let (p50, p99) = ping_pong(o.count, None).await;
            let (t50, t99) = ping_pong(o.count, tls).await;
            let plain = small_writes(o.count * 50, None).await;
            let secured = small_writes(o.count * 50, tls).await;
            let deflated = small_writes_with(o.count * 50, None, Layering::Deflate).await;
            let (k50, k99) = tokio_ping_pong(o.count, (&server, &client)).await;
            let buffered = tokio_writes(o.count * 50, SIZE, true, (&server, &client)).await;
            let silent = writes(o.count * 50, SIZE, tls, Layering::Tls, Producer::Unanswered).await;
            let sunk = writes(o.count * 50, SIZE, tls, Layering::Tls, Producer::Sink).await;
            let plain_sunk =
                writes(o.count * 50, SIZE, None, Layering::Plain, Producer::Sink).await;
            let plain_buffered = tokio_plain_writes(o.count * 50, SIZE).await;
            let plain_silent =
                writes(o.count * 50, SIZE, None, Layering::Plain, Producer::Unanswered).await;
            let bulk = writes(
                bulk_count,
                BULK,
                tls,
                Layering::Tls,
                Producer::Answered { in_flight: 64 },
            )
            .await;
            let kbulk = tokio_writes(bulk_count, BULK, false, (&server, &client)).await;
            eprintln!(
                "[rep {rep}] tokio-rustls: ping-pong p50/p99 {k50:.1}/{k99:.1} µs, 64 B writes \
                 {buffered:.0}/s (sockactor unanswered {silent:.0}/s); 16 KiB writes sockactor \
                 {bulk:.0}/s, tokio-rustls {kbulk:.0}/s"
            );
            sink_rate.push(sunk / 1e6);
            vs_sink.push(sunk / buffered);
            plain_sink_rate.push(plain_sunk / 1e6);
            plain_tokio_rate.push(plain_buffered / 1e6);
            vs_plain_sink.push(plain_sunk / plain_buffered);
            plain_silent_rate.push(plain_silent / 1e6);
            vs_plain_silent.push(plain_silent / plain_buffered);
            silent_rate.push(silent / 1e6);
            vs_silent.push(silent / buffered);
            k50s.push(k50);
            k99s.push(k99);
            vs50.push(t50 / k50);
            vs99.push(t99 / k99);
            tokio_rate.push(buffered / 1e6);
            vs_rate.push(secured / buffered);
            bulk_rate.push(bulk / 1e3);
            tokio_bulk.push(kbulk / 1e3);
            vs_bulk.push(bulk / kbulk);
            eprintln!(
                "[rep {rep}] ping-pong p50/p99 plain {p50:.1}/{p99:.1} µs, TLS {t50:.1}/{t99:.1} µs; \
                 64 B writes plain {plain:.0}/s, TLS {secured:.0}/s, deflate {deflated:.0}/s"
            );
            p50s.push(p50);
            p99s.push(p99);
            tp50s.push(t50);
            tp99s.push(t99);
            ratio50.push(t50 / p50);
            ratio99.push(t99 / p99);
            plain_rate.push(plain / 1e6);
            tls_rate.push(secured / 1e6);
            rate_ratio.push(secured / plain);
            deflate_rate.push(deflated / 1e6);
            deflate_ratio.push(deflated / plain);
        }
        println!("## TLS (in-place layer) against plain, sockactor sockets on loopback");
        println!();
        println!(
            "- {} repetitions, each: {} ping-pongs of {SIZE} B per mode; {} writes of {SIZE} B through a Writer (1,024 in flight) per mode",
            o.reps,
            o.count,
            o.count * 50
        );
        println!("- medians with (min..max); ratios are TLS ÷ plain per repetition");
        println!(
            "- the client's runtime thread pinned to one CPU, each peer thread to another \
             (`SOCKACTOR_BENCH_NO_PIN=1`: not)"
        );
        println!();
        println!("| measure | plain | layered | layered ÷ plain |");
        println!("|---|---:|---:|---:|");
        println!(
            "| ping-pong p50 µs, TLS | {} | {} | {} |",
            cell(&mut p50s, 1),
            cell(&mut tp50s, 1),
            cell(&mut ratio50, 2)
        );
        println!(
            "| ping-pong p99 µs, TLS | {} | {} | {} |",
            cell(&mut p99s, 1),
            cell(&mut tp99s, 1),
            cell(&mut ratio99, 2)
        );
        println!(
            "| 64 B writes, M msg/s, TLS | {} | {} | {} |",
            cell(&mut plain_rate.clone(), 2),
            cell(&mut tls_rate, 2),
            cell(&mut rate_ratio, 2)
        );
        println!(
            "| 64 B writes, M msg/s, deflate (level 1) | {} | {} | {} |",
            cell(&mut plain_rate, 2),
            cell(&mut deflate_rate, 2),
            cell(&mut deflate_ratio, 2)
        );
        println!();
        println!("## TLS: sockactor's in-place layer against tokio-rustls, same run");
        println!();
        println!(
            "- tokio-rustls: 64 B writes through a 64 KiB `BufWriter` (flushed at the end); \
             ping `write_all` + `flush`, `read_exact`; {bulk_count} bulk writes of 16 KiB, \
             `write_all` each (sockactor: a `Writer`, 64 in flight); ratios sockactor ÷ \
             tokio-rustls per repetition"
        );
        println!();
        println!("| measure | sockactor TLS | tokio-rustls | sockactor ÷ tokio-rustls |");
        println!("|---|---:|---:|---:|");
        println!(
            "| ping-pong p50 µs | {} | {} | {} |",
            cell(&mut tp50s.clone(), 1),
            cell(&mut k50s, 1),
            cell(&mut vs50, 2)
        );
        println!(
            "| ping-pong p99 µs | {} | {} | {} |",
            cell(&mut tp99s.clone(), 1),
            cell(&mut k99s, 1),
            cell(&mut vs99, 2)
        );
        println!(
            "| 64 B writes, each answered (1,024 in flight), M msg/s | {} | {} | {} |",
            cell(&mut tls_rate.clone(), 2),
            cell(&mut tokio_rate.clone(), 2),
            cell(&mut vs_rate, 2)
        );
        println!(
            "| 64 B writes, fire and forget (`write_when_ready`), M msg/s | {} | {} | {} |",
            cell(&mut silent_rate, 2),
            cell(&mut tokio_rate, 2),
            cell(&mut vs_silent, 2)
        );
        println!(
            "| 64 B writes through the `Sink` (`send_all`, 64 KiB per write), M msg/s | {} | {} | {} |",
            cell(&mut sink_rate, 2),
            cell(&mut tokio_rate.clone(), 2),
            cell(&mut vs_sink, 2)
        );
        println!(
            "| plain: 64 B writes through the `Sink` against tokio `TcpStream` + `BufWriter`, M msg/s | {} | {} | {} |",
            cell(&mut plain_sink_rate, 2),
            cell(&mut plain_tokio_rate.clone(), 2),
            cell(&mut vs_plain_sink, 2)
        );
        println!(
            "| plain: 64 B writes through a `Writer`, fire and forget, against tokio `TcpStream` + `BufWriter`, M msg/s | {} | {} | {} |",
            cell(&mut plain_silent_rate, 2),
            cell(&mut plain_tokio_rate, 2),
            cell(&mut vs_plain_silent, 2)
        );
        println!(
            "| 16 KiB writes, k msg/s | {} | {} | {} |",
            cell(&mut bulk_rate, 1),
            cell(&mut tokio_bulk, 1),
            cell(&mut vs_bulk, 2)
        );
        ExitCode::SUCCESS
    })
}

/// `--only`: one measure, `--reps` times, its figures printed as they come.
async fn run_only(
    only: &str,
    o: &Options,
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
) -> ExitCode {
    let tls = Some((server, client));
    let (n, bulk) = (o.count * 50, (o.count / 4).max(100));
    for rep in 1..=o.reps {
        let figure = match only {
            "ping-pong" => format!("{:?}", ping_pong(o.count, None).await),
            "tls-ping-pong" => format!("{:?}", ping_pong(o.count, tls).await),
            "tokio-ping-pong" => format!("{:?}", tokio_ping_pong(o.count, (server, client)).await),
            "writes" => format!("{:.0}/s", small_writes(n, None).await),
            "tls-writes" => format!("{:.0}/s", small_writes(n, tls).await),
            "deflate-writes" => {
                format!(
                    "{:.0}/s",
                    small_writes_with(n, None, Layering::Deflate).await
                )
            }
            "tls-sink" => {
                format!(
                    "{:.0}/s",
                    writes(n, SIZE, tls, Layering::Tls, Producer::Sink).await
                )
            }
            "tokio-writes" => format!(
                "{:.0}/s",
                tokio_writes(n, SIZE, true, (server, client)).await
            ),
            "tls-bulk" => {
                let answered = Producer::Answered { in_flight: 64 };
                format!(
                    "{:.0}/s",
                    writes(bulk, BULK, tls, Layering::Tls, answered).await
                )
            }
            "tokio-bulk" => format!(
                "{:.0}/s",
                tokio_writes(bulk, BULK, false, (server, client)).await
            ),
            other => {
                eprintln!("tls_bench: unknown measure {other}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        eprintln!("[rep {rep}] {only}: {figure}");
    }
    ExitCode::SUCCESS
}
