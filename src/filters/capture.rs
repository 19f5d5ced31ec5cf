//! [`Capture`]: a pass-through filter that records every call and answer on its handles
//! to a sink, in the format of [`record`](super::record).

use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix::{ActorFutureExt, Context};
use bytes::Bytes;
use tokio::time::Instant;

use super::link::{take_front, Filter, FilterActor, FilterAnswer, Link};
use super::record::{
    self, AcceptAnswer, CaptureEvent, CaptureReader, Record, RecordedError, RecvAnswer, SendAnswer,
    MAX_DATA,
};
use crate::error::TransportError;
use crate::messages::functions::{
    Accepted, Address, Family, Handle, Readiness, Received, RecvFrom, SendV, Sent, SocketKind,
};
use crate::SocketFunctions;

/// Default bound on the bytes handed to the inner transport per `sendv`.
const DEFAULT_MAX_PER_CALL: usize = 64 * 1024;

/// Default: the buffer is written to the sink once it holds this many bytes.
const DEFAULT_FLUSH_AT: usize = 64 * 1024;

/// Default: records wait at most this long (if another record comes) before the buffer
/// is written out.
const DEFAULT_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Default: most bytes kept while the sink would block.
const DEFAULT_BUFFER_LIMIT: usize = 4 << 20;

/// The bytes waiting for the sink, and the sink; `None` once capture has stopped.
struct Spool {
    sink: Option<Box<dyn Write + Send>>,
    buf: Vec<u8>,
    flush_at: usize,
    every: Duration,
    /// When the buffer was last written out (or the capture made).
    last: Instant,
    limit: usize,
    records: u64,
}

impl Spool {
    /// Appends a record; writes the buffer out once it passes the threshold.
    fn push(&mut self, record: &Record) {
        if self.sink.is_none() {
            return;
        }
        if !record.encode_into(&mut self.buf) {
            tracing::warn!(handle = %record.handle, "capture: record too long, skipped");
            return;
        }
        self.records += 1;
        if self.buf.len() >= self.flush_at || self.last.elapsed() >= self.every {
            self.write_out(false);
        }
    }

    /// Writes as much of the buffer as the sink takes (and flushes the sink when
    /// `flush`). A sink that would block keeps the rest buffered, up to the limit; any
    /// other error, or the limit passed, stops the capture for good.
    fn write_out(&mut self, flush: bool) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        self.last = Instant::now();
        let mut done = 0;
        let mut failure = None;
        while done < self.buf.len() {
            match sink.write(&self.buf[done..]) {
                Ok(0) => {
                    failure = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        self.buf.drain(..done);
        if failure.is_none() && flush && self.buf.is_empty() {
            if let Err(e) = sink.flush() {
                if e.kind() != io::ErrorKind::WouldBlock {
                    failure = Some(e);
                }
            }
        }
        if failure.is_none() && self.buf.len() > self.limit {
            failure = Some(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the sink would block and the capture buffer is full",
            ));
        }
        if let Some(error) = failure {
            tracing::warn!(%error, records = self.records, "capture: sink failed, capture stopped");
            self.sink = None;
            self.buf = Vec::new();
        }
    }
}

/// A filter that records everything that passes through it, and changes nothing: every
/// `open`, `connect` and `accept` with its answer, every `sendv` with the bytes offered
/// and its answer (for an accepted count, exactly the accepted front bytes), every
/// `recvfrom` with its answer (data and sender, EOF, would-block, error), the inner
/// transport's readiness notices and every `close`, each with the handle and the tokio
/// time since the capture started.
///
/// Records go to any [`Write`] sink (a file, a `Vec`, a [`CaptureBuffer`]) in a
/// versioned binary format (`docs/filters.md`), read back with [`CaptureReader`] and
/// turned into a deterministic test with [`Replay`](super::Replay). The actor never
/// waits for the sink: records are buffered and written out when the buffer passes
/// [`flush_at`](Self::flush_at) bytes, when a record comes
/// [`flush_every`](Self::flush_every) after the last write-out, on every `close` and
/// when the filter stops. A
/// sink that would block keeps records buffered up to
/// [`buffer_limit`](Self::buffer_limit); a sink error (or the limit passed) is reported
/// once through `tracing` and ends the capture. Traffic is never affected.
///
/// A stream `recvfrom` asks the inner transport for at most 16 MiB, so one read fits one
/// record.
///
/// ```
/// use sockactor::filters::Capture;
/// use sockactor::messages::Write;
/// use sockactor::{MockTransport, Socket};
///
/// let runtime = || {
///     tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime")
/// };
/// actix::System::with_tokio_rt(runtime).block_on(async {
///     let mock = MockTransport::start();
///     let (capture, file) = Capture::to_memory();
///     let socket = Socket::builder()
///         .functions(capture.wrap(mock.functions()))
///         .connect("127.0.0.1:9".parse::<std::net::SocketAddr>().expect("addr"))
///         .await
///         .expect("connect");
///     socket.send(Write::new(&b"hello"[..])).await.expect("mailbox").expect("written");
///     socket.send(sockactor::messages::Close::Graceful).await.expect("mailbox");
///     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
///     let records: Vec<_> = file.reader().collect::<Result<_, _>>().expect("valid capture");
///     assert!(records.len() >= 4, "open, connect, sendv, close");
/// });
/// ```
pub struct Capture {
    start: Instant,
    spool: Spool,
    max_per_call: usize,
}

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capture")
            .field("start", &self.start)
            .field("capturing", &self.spool.sink.is_some())
            .field("buffered", &self.spool.buf.len())
            .field("records", &self.spool.records)
            .field("max_per_call", &self.max_per_call)
            .finish()
    }
}

impl Capture {
    /// A capture writing to `sink`. The header goes into the buffer at once.
    pub fn new(sink: impl Write + Send + 'static) -> Self {
        Capture {
            start: Instant::now(),
            spool: Spool {
                sink: Some(Box::new(sink)),
                buf: record::header().to_vec(),
                flush_at: DEFAULT_FLUSH_AT,
                every: DEFAULT_FLUSH_EVERY,
                last: Instant::now(),
                limit: DEFAULT_BUFFER_LIMIT,
                records: 0,
            },
            max_per_call: DEFAULT_MAX_PER_CALL,
        }
    }

    /// A capture into memory, and the buffer to read it from. Writing to memory is
    /// cheap, so each record reaches the buffer at once (`flush_at(0)`): the buffer can
    /// be read while the capture runs.
    pub fn to_memory() -> (Self, CaptureBuffer) {
        let buffer = CaptureBuffer::default();
        (Capture::new(buffer.clone()).flush_at(0), buffer)
    }

    /// Writes the buffer to the sink once it holds `bytes` (default 64 KiB; 0 writes
    /// every record at once).
    pub fn flush_at(mut self, bytes: usize) -> Self {
        self.spool.flush_at = bytes;
        self
    }

    /// Writes the buffer out when a record comes this long (default 1 s) after the last
    /// write-out, however little it holds, so a quiet capture still reaches its sink.
    pub fn flush_every(mut self, interval: Duration) -> Self {
        self.spool.every = interval;
        self
    }

    /// Most bytes kept in memory while the sink would block (default 4 MiB); past it the
    /// capture stops.
    pub fn buffer_limit(mut self, bytes: usize) -> Self {
        self.spool.limit = bytes;
        self
    }

    /// Hands the inner transport at most `n` bytes (at least 1, at most 16 MiB) per
    /// `sendv` (default 64 KiB).
    pub fn max_per_call(mut self, n: usize) -> Self {
        self.max_per_call = n.clamp(1, MAX_DATA);
        self
    }

    /// Starts the capture over `inner` and returns the table to give sockets. Times are
    /// counted from now.
    pub fn wrap(mut self, inner: SocketFunctions) -> SocketFunctions {
        self.start = Instant::now();
        self.spool.last = self.start;
        let max = self.max_per_call;
        FilterActor::wrap(self, inner, max)
    }

    fn since_start(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.start)
    }

    fn record(&mut self, handle: Handle, at: Instant, event: CaptureEvent) {
        let record = Record {
            handle,
            at: self.since_start(at),
            event,
        };
        self.spool.push(&record);
    }

    fn capturing(&self) -> bool {
        self.spool.sink.is_some()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.spool.write_out(true);
        if self.spool.sink.is_some() && !self.spool.buf.is_empty() {
            // The last chance to write them went: a sink that would block keeps them.
            tracing::warn!(
                bytes = self.spool.buf.len(),
                "capture: {} bytes of records not written, the sink would block when the capture stopped",
                self.spool.buf.len()
            );
        }
    }
}

fn recorded<T>(answer: &Result<T, TransportError>) -> Result<(), RecordedError> {
    answer.as_ref().map(|_| ()).map_err(RecordedError::from)
}

/// The bytes of `segments`' first `n`, in one buffer.
fn front_bytes(segments: Vec<Bytes>, n: usize) -> Bytes {
    let front = take_front(segments, n);
    match <[Bytes; 1]>::try_from(front) {
        Ok([one]) => one,
        Err(front) => front.concat().into(),
    }
}

impl Filter for Capture {
    fn name(&self) -> &'static str {
        "capture"
    }

    fn sendv(
        &mut self,
        msg: SendV,
        link: &mut Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Sent> {
        let (handle, asked, offered) = (msg.handle, Instant::now(), msg.len() as u64);
        let to = msg.to.clone();
        let segments = self.capturing().then(|| msg.segments.clone());
        let sent = actix::fut::wrap_future(link.sendv(msg, usize::MAX));
        Box::pin(sent.map(move |answer, act: &mut FilterActor<Self>, _| {
            let Some(segments) = segments else {
                return answer;
            };
            let capture = act.filter_mut();
            let answer_record = match &answer {
                Ok(Sent::Accepted(n)) => SendAnswer::Accepted(front_bytes(segments, *n)),
                Ok(Sent::WouldBlock) => SendAnswer::WouldBlock,
                Err(e) => SendAnswer::Failed(e.into()),
            };
            let event = CaptureEvent::SendV {
                offered,
                to,
                took: asked.elapsed(),
                answer: answer_record,
            };
            capture.record(handle, asked, event);
            answer
        }))
    }

    fn recvfrom(
        &mut self,
        mut msg: RecvFrom,
        link: &mut Link,
        _ctx: &mut Context<FilterActor<Self>>,
    ) -> FilterAnswer<Self, Received> {
        if link.kind(msg.handle) == Some(SocketKind::Stream) {
            msg.max_len = msg.max_len.min(MAX_DATA);
        }
        let (handle, asked, max_len) = (msg.handle, Instant::now(), msg.max_len as u64);
        let received = actix::fut::wrap_future(link.recvfrom(msg));
        Box::pin(received.map(move |answer, act: &mut FilterActor<Self>, _| {
            let capture = act.filter_mut();
            if !capture.capturing() {
                return answer;
            }
            let answer_record = match &answer {
                Ok(Received::Data { bytes, from }) => RecvAnswer::Data {
                    bytes: bytes.clone(),
                    from: from.clone(),
                },
                Ok(Received::Truncated { bytes, from }) => RecvAnswer::Truncated {
                    bytes: bytes.clone(),
                    from: from.clone(),
                },
                Ok(Received::Eof) => RecvAnswer::Eof,
                Ok(Received::WouldBlock) => RecvAnswer::WouldBlock,
                Err(e) => RecvAnswer::Failed(e.into()),
            };
            let event = CaptureEvent::RecvFrom {
                max_len,
                took: asked.elapsed(),
                answer: answer_record,
            };
            capture.record(handle, asked, event);
            answer
        }))
    }

    fn closed(&mut self, handle: Handle) {
        self.record(handle, Instant::now(), CaptureEvent::Close);
        self.spool.write_out(true);
    }

    fn opened(
        &mut self,
        family: Family,
        kind: SocketKind,
        answer: &Result<Handle, TransportError>,
    ) {
        let handle = answer.as_ref().copied().unwrap_or(Handle(0));
        let result = recorded(answer);
        let event = CaptureEvent::Open {
            family,
            kind,
            result,
        };
        self.record(handle, Instant::now(), event);
    }

    fn saw_connect(
        &mut self,
        handle: Handle,
        addr: &Address,
        asked: Instant,
        answer: &Result<(), TransportError>,
    ) {
        let event = CaptureEvent::Connect {
            addr: addr.clone(),
            took: asked.elapsed(),
            result: recorded(answer),
        };
        self.record(handle, asked, event);
    }

    fn saw_accept(&mut self, listener: Handle, answer: &Result<Accepted, TransportError>) {
        let answer = match answer {
            Ok(Accepted::Connection { handle, peer }) => AcceptAnswer::Connection {
                handle: *handle,
                peer: peer.clone(),
            },
            Ok(Accepted::WouldBlock) => AcceptAnswer::WouldBlock,
            // Recorded as a failed accept: the format has no code of its own for it, so
            // a replay answers it as an error (with the listener's back-off).
            Ok(Accepted::Refused(e)) | Err(e) => AcceptAnswer::Failed(e.into()),
        };
        self.record(listener, Instant::now(), CaptureEvent::Accept(answer));
    }

    fn ready(&mut self, handle: Handle, readiness: Readiness) {
        self.record(handle, Instant::now(), CaptureEvent::Ready(readiness));
    }
}

/// A capture sink in memory that can be read while (and after) the capture runs: a
/// cloneable handle on one growing byte buffer.
#[derive(Clone, Debug, Default)]
pub struct CaptureBuffer {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl CaptureBuffer {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bytes written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// A reader over the bytes written so far.
    pub fn reader(&self) -> CaptureReader<io::Cursor<Vec<u8>>> {
        CaptureReader::new(io::Cursor::new(self.contents()))
    }
}

impl Write for CaptureBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
