//! The file-sending benchmark: a file in the page cache sent over loopback TCP, by
//! sockactor with a [`FileRange`] (`sendfile` in place), by sockactor after reading the
//! file into memory, by sockactor through a pass-through filter (the range read in
//! chunks), by a naive read/write loop, and by a bare `sendfile` loop (the kernel's
//! limit). One markdown table.
//!
//! ```text
//! cargo run --release -p sockactor-tools --bin file_bench             # 256 MiB, 5 repetitions
//! cargo run --release -p sockactor-tools --bin file_bench -- --quick  # 16 MiB, 1 repetition (CI)
//! cargo run --release -p sockactor-tools --bin file_bench -- --mib 1024 --reps 3
//! ```
//!
//! Method: every measurement runs in a fresh process (this binary re-executed with
//! `--child SENDER FILE`), so peak RSS (`VmHWM`) is that sender's alone. The receiver is
//! a std thread reading 256 KiB at a time and counting; it is the same for every sender.
//! Reported per sender: throughput (file bytes over the wall time from the first write to
//! the receiver's last byte), the sending thread's CPU time per GiB
//! (`CLOCK_THREAD_CPUTIME_ID`, so the receiver is not counted), and peak RSS. Ratios
//! compare against the `sendfile` loop in the same run. Medians over the repetitions,
//! which run interleaved.

use std::io::{self, Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sockactor::filters::{FaultInjector, Faults};
use sockactor::messages::{Close, GetStats, GetWriter};
use sockactor::{FileRange, IoBatch, QueueConfig, Socket, SocketConfig, SocketFunctions};
use sockactor_tools::args::{unknown, Args};
use sockactor_tools::child::{self, this_binary, Stderr};
use sockactor_tools::procfs::{status_kb, thread_cpu};
use sockactor_tools::report::{spread, table_header, table_row, upper_median, Align};

const SENDERS: [&str; 5] = [
    "sendfile-loop",
    "sockactor-file",
    "sockactor-file-filtered",
    "sockactor-memory",
    "naive-read-write",
];

/// Bytes per read of the receiver and of the naive sender.
const CHUNK: usize = 256 * 1024;

/// Bytes per write (one `FileRange` or one `Bytes` each): how a server would hand out a
/// large file, a few ranges at a time.
const WRITE: usize = 8 << 20;

fn main() {
    let args: Vec<String> = Args::from_env().collect();
    if args.first().map(String::as_str) == Some("--child") {
        let (Some(sender), Some(path)) = (args.get(1), args.get(2)) else {
            eprintln!("usage: file_bench --child SENDER FILE");
            std::process::exit(2);
        };
        match child(sender, path) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("{sender}: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if let Err(e) = parent(&args) {
        eprintln!("file_bench: {e}");
        std::process::exit(1);
    }
}

struct Opts {
    mib: usize,
    reps: usize,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut opts = Opts { mib: 256, reps: 5 };
    let mut args = Args::new(args.iter().cloned());
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            args.parsed()
                .filter(|v| *v > 0)
                .ok_or(format!("{name} needs a positive number"))
        };
        match arg.as_str() {
            "--quick" => {
                opts.mib = 16;
                opts.reps = 1;
            }
            "--mib" => opts.mib = value("--mib")?,
            "--reps" => opts.reps = value("--reps")?,
            other => return Err(unknown(other)),
        }
    }
    Ok(opts)
}

/// One measurement, as the child prints it.
#[derive(Clone, Copy, Debug)]
struct Sample {
    mb_per_s: f64,
    cpu_ms_per_gib: f64,
    peak_rss_mib: f64,
}

fn parent(args: &[String]) -> Result<(), String> {
    let opts = parse(args)?;
    let path = std::env::temp_dir().join(format!("sockactor-file-bench-{}", std::process::id()));
    {
        // Written just now, so it is in the page cache, as a hot file on a server is.
        let mut file = std::fs::File::create(&path).map_err(|e| format!("create: {e}"))?;
        let block: Vec<u8> = (0..1 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
        for _ in 0..opts.mib {
            file.write_all(&block).map_err(|e| format!("write: {e}"))?;
        }
        file.sync_all().map_err(|e| format!("sync: {e}"))?;
    }
    let exe = this_binary()?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); SENDERS.len()];
    let started = Instant::now();
    for _ in 0..opts.reps {
        for (i, sender) in SENDERS.iter().enumerate() {
            let mut cmd = Command::new(&exe);
            cmd.args(["--child", sender]).arg(&path);
            let out =
                child::run(&mut cmd, Stderr::Capture, None).map_err(|e| format!("spawn: {e}"))?;
            if !out.status.is_some_and(|s| s.success()) {
                let _ = std::fs::remove_file(&path);
                return Err(format!("{sender} failed: {}", out.stderr));
            }
            let line = &out.stdout;
            samples[i].push(parse_sample(line).ok_or(format!("{sender}: bad output {line}"))?);
        }
    }
    let _ = std::fs::remove_file(&path);

    println!(
        "## file sending: {} MiB over loopback TCP, {} rep(s), {:.0} s",
        opts.mib,
        opts.reps,
        started.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "Each write is one {} MiB `FileRange` (or `Bytes`); medians (min..max).",
        WRITE >> 20
    );
    println!();
    let r = Align::Right;
    table_header(&[
        ("sender", Align::Left),
        ("MB/s", r),
        ("vs sendfile loop", r),
        ("sender CPU ms/GiB", r),
        ("peak RSS MiB", r),
    ]);
    let median = |v: &[f64]| upper_median(v).unwrap_or(f64::NAN);
    let base = median(&samples[0].iter().map(|s| s.mb_per_s).collect::<Vec<_>>());
    for (sender, runs) in SENDERS.iter().zip(&samples) {
        let mbs: Vec<f64> = runs.iter().map(|s| s.mb_per_s).collect();
        let cpu: Vec<f64> = runs.iter().map(|s| s.cpu_ms_per_gib).collect();
        let rss: Vec<f64> = runs.iter().map(|s| s.peak_rss_mib).collect();
        let cell = |v: &[f64], decimals: usize| {
            spread(v, upper_median, |x| format!("{x:.decimals$}")).unwrap_or_default()
        };
        table_row(&[
            sender.to_string(),
            cell(&mbs, 0),
            format!("{:.2}x", median(&mbs) / base),
            cell(&cpu, 0),
            cell(&rss, 1),
        ]);
    }
    Ok(())
}

fn parse_sample(line: &str) -> Option<Sample> {
    let mut it = line.split_whitespace();
    Some(Sample {
        mb_per_s: it.next()?.parse().ok()?,
        cpu_ms_per_gib: it.next()?.parse().ok()?,
        peak_rss_mib: it.next()?.parse().ok()?,
    })
}

/// Runs one sender against a fresh receiver and prints `MB/s cpu-ms/GiB peak-rss-MiB`.
fn child(sender: &str, path: &str) -> Result<String, String> {
    let file = Arc::new(std::fs::File::open(path).map_err(|e| format!("open: {e}"))?);
    let len = file.metadata().map_err(|e| e.to_string())?.len() as usize;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let receiver = std::thread::spawn(move || -> io::Result<(usize, Instant)> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0;
        loop {
            match stream.read(&mut buf)? {
                0 => return Ok((total, Instant::now())),
                n => total += n,
            }
        }
    });
    let started = Instant::now();
    let cpu = match sender {
        "sendfile-loop" => sendfile_loop(&file, len, addr),
        "naive-read-write" => naive(&file, len, addr),
        "sockactor-file" => sockactor_send(file.clone(), len, addr, Source::File, false),
        "sockactor-file-filtered" => sockactor_send(file.clone(), len, addr, Source::File, true),
        "sockactor-memory" => sockactor_send(file.clone(), len, addr, Source::Memory, false),
        other => return Err(format!("unknown sender {other}")),
    }
    .map_err(|e| format!("send: {e}"))?;
    let (received, ended) = receiver
        .join()
        .map_err(|_| "receiver panicked".to_string())?
        .map_err(|e| format!("receive: {e}"))?;
    if received != len {
        return Err(format!("the receiver got {received} of {len} bytes"));
    }
    let secs = ended.duration_since(started).as_secs_f64();
    let gib = len as f64 / f64::from(1u32 << 30);
    let rss_kb = status_kb("VmHWM").unwrap_or(0);
    Ok(format!(
        "{:.1} {:.1} {:.1}",
        len as f64 / secs / 1e6,
        cpu.as_secs_f64() * 1e3 / gib,
        rss_kb as f64 / 1024.0
    ))
}

/// The kernel's limit: `sendfile` on a blocking socket until the file is out.
fn sendfile_loop(file: &std::fs::File, len: usize, addr: SocketAddr) -> io::Result<Duration> {
    let stream = TcpStream::connect(addr)?;
    let cpu = thread_cpu();
    let mut offset: libc::off_t = 0;
    while (offset as usize) < len {
        let left = len - offset as usize;
        // SAFETY: both descriptors are open for the call; `offset` is a valid `off_t`.
        let n = unsafe {
            libc::sendfile(
                stream.as_raw_fd(),
                file.as_raw_fd(),
                &mut offset,
                left.min(WRITE),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    let used = thread_cpu() - cpu;
    drop(stream);
    Ok(used)
}

/// What most code does: read a chunk into a buffer, write it, repeat.
fn naive(file: &std::fs::File, len: usize, addr: SocketAddr) -> io::Result<Duration> {
    use std::os::unix::fs::FileExt;
    let mut stream = TcpStream::connect(addr)?;
    let cpu = thread_cpu();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0;
    while at < len {
        let n = file.read_at(&mut buf, at as u64)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        stream.write_all(&buf[..n])?;
        at += n;
    }
    let used = thread_cpu() - cpu;
    drop(stream);
    Ok(used)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `FileRange`s.
    File,
    /// The file read into memory first (in `WRITE`-sized `Bytes`), then written.
    Memory,
}

/// A sockactor socket on one actix system thread: the whole file in `WRITE`-sized writes.
fn sockactor_send(
    file: Arc<std::fs::File>,
    len: usize,
    addr: SocketAddr,
    source: Source,
    filtered: bool,
) -> io::Result<Duration> {
    let system = actix::System::new();
    system.block_on(async move {
        // Every write is queued at once: no watermark in the way (queued file ranges hold
        // no memory; the memory sender holds the file anyway).
        let config = SocketConfig {
            queue: QueueConfig {
                high_watermark: usize::MAX / 2,
                ..QueueConfig::default()
            },
            ..SocketConfig::default()
        };
        let mut builder = Socket::builder().config(config);
        if filtered {
            builder = builder.functions(
                FaultInjector::new(0, Faults::default()).wrap(SocketFunctions::system()),
            );
        }
        let socket = builder
            .connect(addr)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        let writer = socket
            .send(GetWriter)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        let cpu = thread_cpu();
        let mut answers = Vec::new();
        let mut at = 0;
        while at < len {
            let n = WRITE.min(len - at);
            let batch: IoBatch = match source {
                Source::File => FileRange::new(file.clone(), at as u64, n)
                    .map_err(|e| io::Error::other(e.to_string()))?
                    .into(),
                Source::Memory => {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0u8; n];
                    file.read_exact_at(&mut buf, at as u64)?;
                    Bytes::from(buf).into()
                }
            };
            answers.push(writer.write_answered(batch));
            at += n;
        }
        for answer in answers {
            answer.await.map_err(|e| io::Error::other(e.to_string()))?;
        }
        let used = thread_cpu() - cpu;
        let stats = socket
            .send(GetStats)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        let expect_sendfile = source == Source::File && !filtered;
        if expect_sendfile != (stats.sendfile_calls > 0) {
            return Err(io::Error::other(format!(
                "sendfile used: {}, expected {expect_sendfile}",
                stats.sendfile_calls
            )));
        }
        socket.do_send(Close::Graceful);
        Ok(used)
    })
}
