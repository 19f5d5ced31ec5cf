//! The write queue: ordering, batching and the bytes each write has left, with no actors,
//! no I/O and no clock (the time is passed in).
//!
//! [`StreamCore`](super::StreamCore) owns one [`WriteQueue`] and drives it:
//! [`push`](WriteQueue::push) a write, [`poll_transmit`](WriteQueue::poll_transmit) the next
//! vectored write, tell it what the transport did with [`handle_sent`](WriteQueue::handle_sent)
//! or [`handle_would_block`](WriteQueue::handle_would_block), and it reports each finished
//! write exactly once, in FIFO order.
//!
//! File ranges that must go out as memory (no `sendfile`) are read by the caller, not
//! here: [`poll_chunk_request`](WriteQueue::poll_chunk_request) says which chunk the next
//! transmit needs, and [`handle_chunk`](WriteQueue::handle_chunk) takes what was read.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::batch::{FileRange, IoBatch, Segment};
use crate::error::{TransportError, WriteError};

/// The success answer to a write: its last byte was accepted by the transport. Also the
/// write's flush telemetry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Bytes written.
    pub len: usize,
    /// Vectored writes (`sendv` calls) that carried bytes of this write and were answered
    /// with an accepted count.
    pub sendv_calls: u32,
    /// Would-block answers met while this write was being offered.
    pub would_blocks: u32,
    /// The largest number of writes one of those vectored writes carried: the
    /// coalescing this write enjoyed.
    pub max_writes_per_sendv: u32,
    /// Time from enqueue to the transport accepting the last byte; zero for a write
    /// whose answer nobody can see (the socket spares them the clock read) and for one
    /// done within the handler that queued it.
    pub latency: Duration,
}

/// Limits of a write queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// When queued (unsent) bytes reach this, the queue becomes unwritable: further writes
    /// are refused with [`WriteError::QueueFull`] until it drains to `low_watermark`.
    /// The write that crosses the mark is still accepted, so queued bytes stay below
    /// `high_watermark` plus one write.
    pub high_watermark: usize,
    /// Queued bytes at or below which an unwritable queue becomes writable again.
    pub low_watermark: usize,
    /// Most bytes one flush turn hands the transport before the socket yields, when
    /// [`turn_cap`](Self::turn_cap) says the turn is capped. Counted up to 4 GiB: a
    /// larger value (and an uncapped turn) yields after 4 GiB.
    pub max_bytes_per_turn: usize,
    /// When a flush turn is capped at `max_bytes_per_turn`.
    pub turn_cap: TurnCap,
    /// Most segments in one vectored write (`IOV_MAX` on Linux is 1024).
    pub max_segments: usize,
    /// Most bytes of a [`FileRange`] read into memory at once, where a range cannot go
    /// out with `sendfile` (through a filter or any other message-path transport). Each
    /// range being sent holds at most one such chunk until the transport has taken it.
    pub file_read_chunk: usize,
    /// Writes of at most this many bytes are copied into the socket's staging buffer
    /// instead of being queued as slices of their own: a run of small writes then leaves
    /// as one slice of one buffer, and each caller's buffer is freed at once. Larger
    /// writes, writes with a tag (they can be cancelled, which hands the payload back)
    /// and file ranges stay zero-copy. Each write still gets its own answer. `0` turns
    /// copying off. The default, 512 bytes, and how it was measured are in
    /// `docs/performance.md`.
    pub copy_threshold: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            high_watermark: 4 * 1024 * 1024,
            low_watermark: 1024 * 1024,
            max_bytes_per_turn: 256 * 1024,
            turn_cap: TurnCap::WhenContended,
            max_segments: 1024,
            file_read_chunk: 64 * 1024,
            copy_threshold: DEFAULT_COPY_THRESHOLD,
        }
    }
}

/// When a socket's flush turn is capped at [`QueueConfig::max_bytes_per_turn`] (after
/// which it yields to the other tasks of its thread before it sends on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TurnCap {
    /// Only while another socket of the same thread has data to send: a socket alone
    /// hands the transport all it has in each vectored write, as a hand-written loop
    /// would, and sockets that share a thread still take turns.
    #[default]
    WhenContended,
    /// Always, busy neighbours or not.
    Always,
}

/// The default [`QueueConfig::copy_threshold`].
const DEFAULT_COPY_THRESHOLD: usize = 512;

/// A drained staging buffer that held more than this at once is freed rather than kept
/// for the next burst (an idle socket should not hold a burst's buffer).
const STAGING_KEEP: usize = 64 * 1024;

impl QueueConfig {
    /// The same limits with every value made usable: at least one byte and one segment
    /// per turn, and a low watermark no higher than the high one.
    pub fn sanitized(mut self) -> Self {
        self.max_bytes_per_turn = self.max_bytes_per_turn.max(1);
        self.max_segments = self.max_segments.clamp(1, 1024);
        self.file_read_chunk = self.file_read_chunk.max(1);
        self.low_watermark = self.low_watermark.min(self.high_watermark);
        self
    }
}

/// One vectored write to hand to the transport.
#[derive(Clone, Debug)]
pub(crate) struct Transmit {
    /// The segments: slices of the callers' own buffers (no payload copies), and chunks
    /// read from file ranges.
    pub(crate) segments: Vec<Bytes>,
    /// Total bytes in `segments`.
    pub(crate) len: usize,
    /// How many queued writes this transmit carries bytes of.
    pub(crate) writes: usize,
}

/// What a transmit prepared for a transport called in place: see
/// [`WriteQueue::poll_transmit_in_place`].
#[derive(Debug)]
pub(crate) enum InPlaceTransmit<'a> {
    /// A vectored write of the slices pushed into the caller's vector.
    Vectored {
        /// Total bytes in the slices.
        len: usize,
        /// How many queued writes the slices carry bytes of.
        writes: usize,
        /// A file range follows these bytes at once (send them with `MSG_MORE`, so a
        /// header and the file behind it can share packets).
        more: bool,
    },
    /// One file range to hand to `sendfile`.
    File {
        /// The file.
        file: &'a File,
        /// Where in the file to start.
        offset: u64,
        /// How many bytes to send at most.
        len: usize,
        /// How many queued writes this transmit covers (the range's own and any
        /// zero-length ones before it).
        #[allow(dead_code)]
        writes: usize,
    },
}

/// Bytes of one file segment already read into memory, from that segment's first unsent
/// byte on.
struct ReadAhead {
    seg: usize,
    buf: Bytes,
}

/// The bytes of a write that was not copied, and how far they went.
struct Body {
    segments: IoBatch,
    /// Index of the first segment not yet fully sent, and the offset into it.
    seg: usize,
    off: usize,
    /// At most one file segment's chunk, read ahead for a message-path transmit.
    read_ahead: Option<ReadAhead>,
}

/// The lengths of a run's writes, in order, run-length coded: a length and how many
/// writes in a row had it. A producer's writes are often all one size, and then a run
/// of any number of them is one pair: the list never grows (and is never reallocated)
/// while the run does. Boxed, so that every entry pays 8 bytes for its `Option`.
#[derive(Debug, Default)]
struct Lens {
    pairs: Vec<(u32, u32)>,
}

impl Lens {
    /// Starts the list over with one write of `len` bytes.
    fn restart(&mut self, len: u32) {
        self.pairs.clear();
        self.pairs.push((len, 1));
    }

    /// How many writes the run holds.
    fn writes(&self) -> u64 {
        self.pairs.iter().map(|&(_, n)| u64::from(n)).sum()
    }

    /// One more write of `len` bytes. The queue stops runs before `u32::MAX` writes.
    fn push(&mut self, len: u32) {
        match self.pairs.last_mut() {
            Some((last, n)) if *last == len && *n < u32::MAX => *n += 1,
            _ => self.pairs.push((len, 1)),
        }
    }

    /// Takes the last write off the list: its length.
    fn pop(&mut self) -> u32 {
        let Some((len, n)) = self.pairs.last_mut() else {
            return 0;
        };
        let len = *len;
        *n -= 1;
        if *n == 0 {
            self.pairs.pop();
        }
        len
    }

    /// The lengths, one per write, in order.
    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.pairs
            .iter()
            .flat_map(|&(len, n)| std::iter::repeat_n(len, n as usize))
    }
}

/// What the queue (and the core) ask of a write's token.
pub(crate) trait Token: Sized {
    /// Nobody hears this write's success (a fire-and-forget write): when it succeeds,
    /// the core counts it and drops the token instead of emitting its answer. A failure
    /// is always emitted (someone reports it).
    fn silent(&self) -> bool;

    /// A silent token with no tag: what the answers of the writes merged into a run of
    /// silent copied writes carry (see [`WriteQueue::push`]).
    fn new_silent() -> Self;

    /// Nobody knows yet whether anyone hears this write: its driver learns only after
    /// queuing it (a `Write` message's reply channel comes after its handler), and says
    /// so with [`WriteQueue::join_silenced_last`] or by attaching a listener to
    /// [`WriteQueue::last_token_mut`]. Such a write may join a run while it waits (see
    /// [`WriteQueue::push`]).
    fn unheard(&self) -> bool {
        false
    }
}

impl Token for u32 {
    fn silent(&self) -> bool {
        false
    }
    fn new_silent() -> Self {
        u32::MAX
    }
}

/// One queued write. Kept small (the queue holds one per write, and a burst of small
/// writes walks thousands of them): a copied write has no body, its bytes being in the
/// staging buffer.
struct Entry<T> {
    tag: Option<u64>,
    len: usize,
    sent: usize,
    /// When it was queued (`None`: nobody sees its latency).
    enqueued: Option<Instant>,
    sendv_calls: u32,
    would_blocks: u32,
    max_writes_per_sendv: u32,
    token: T,
    /// `None`: a copied write (see [`QueueConfig::copy_threshold`]), or an empty one.
    body: Option<Box<Body>>,
    /// A run: further silent copied writes merged into this one, their lengths in
    /// order (this entry's own first). `len` is the run's total. Boxed so that every
    /// entry pays 8 bytes for it, not 24.
    run: Option<Box<Lens>>,
}

impl<T> Entry<T> {
    fn new(batch: IoBatch, len: usize, tag: Option<u64>, token: T, now: Option<Instant>) -> Self {
        let body = (!batch.is_empty()).then(|| {
            Box::new(Body {
                segments: batch,
                seg: 0,
                off: 0,
                read_ahead: None,
            })
        });
        Entry {
            tag,
            len,
            sent: 0,
            enqueued: now,
            sendv_calls: 0,
            would_blocks: 0,
            max_writes_per_sendv: 0,
            token,
            body,
            run: None,
        }
    }

    /// Whether a silent copied write may join this entry's run: it is a silent copied
    /// write itself, nothing of it is sent, and nobody sees its latency.
    fn takes_silent(&self) -> bool
    where
        T: Token,
    {
        self.body.is_none()
            && self.tag.is_none()
            && self.sent == 0
            && self.enqueued.is_none()
            && self.len > 0
            && self.token.silent()
    }

    /// Ends the writes of a run, in order, through `completed`: a write whose bytes all
    /// went out is done (`done` with its length), the others fail with what
    /// `error(bytes_sent, len)` makes. The run's further writes answer with silent
    /// tokens.
    ///
    /// Hands back the list of lengths, for the next run.
    fn finish_run(
        self,
        completed: &mut impl FnMut(T, Result<Written, WriteError>),
        done: Written,
        error: impl Fn(usize, usize) -> WriteError,
    ) -> Option<Box<Lens>>
    where
        T: Token,
    {
        let run = self.run?;
        let mut sent = self.sent;
        let mut token = Some(self.token);
        for len in run.iter() {
            let len = len as usize;
            let took = sent.min(len);
            sent -= took;
            let token = token.take().unwrap_or_else(T::new_silent);
            let result = if took == len {
                Ok(Written { len, ..done })
            } else {
                Err(error(took, len))
            };
            completed(token, result);
        }
        Some(run)
    }

    fn remaining(&self) -> usize {
        self.len - self.sent
    }

    /// Writes merged into this entry's run, beyond its own.
    /// 1 if it holds a file range (for [`WriteQueue::files`]), else 0.
    fn files(&self) -> u32 {
        u32::from(
            self.body
                .as_ref()
                .is_some_and(|body| body.segments.has_files()),
        )
    }

    fn merged(&self) -> u32 {
        // A run holds at most `u32::MAX` writes beyond its first: the queue's count
        // stops runs from growing there.
        self.run.as_ref().map_or(0, |run| {
            u32::try_from(run.writes().saturating_sub(1)).unwrap_or(u32::MAX)
        })
    }

    /// Whether its bytes are in the staging buffer.
    fn staged(&self) -> bool {
        self.body.is_none()
    }

    /// Marks `n` more bytes (at most `remaining()`) as sent.
    fn advance(&mut self, mut n: usize) {
        self.sent += n;
        let Some(body) = self.body.as_deref_mut() else {
            return;
        };
        while n > 0 {
            let left_in_seg = body.segments.segments()[body.seg].len() - body.off;
            let take = n.min(left_in_seg);
            let seg = body.seg;
            if let Some(ahead) = body.read_ahead.as_mut().filter(|r| r.seg == seg) {
                if take >= ahead.buf.len() {
                    body.read_ahead = None;
                } else {
                    ahead.buf.advance(take);
                }
            }
            if n < left_in_seg {
                body.off += n;
                return;
            }
            n -= left_in_seg;
            body.seg += 1;
            body.off = 0;
        }
    }

    fn written(&self, now: Instant) -> Written {
        Written {
            len: self.len,
            sendv_calls: self.sendv_calls,
            would_blocks: self.would_blocks,
            max_writes_per_sendv: self.max_writes_per_sendv,
            latency: self
                .enqueued
                .map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    len: usize,
    writes: usize,
}

/// How [`gather`] treats file segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Files {
    /// The transport sends files itself (`sendfile`): a file segment is a transmit of its
    /// own, so gathering stops before one unless it comes first.
    Sendfile,
    /// File segments go out as the chunks read ahead into memory; gathering stops at a
    /// file segment with nothing read ahead.
    ReadAhead,
}

/// One piece of a transmit.
enum Piece<'a> {
    Memory(&'a Bytes, std::ops::Range<usize>),
    /// A run of copied small writes: this range of the staging buffer.
    Staged(std::ops::Range<usize>),
    File {
        range: &'a FileRange,
        at: usize,
        len: usize,
    },
    /// The transmit ends here because a file range comes next (sendfile mode).
    FileNext,
}

/// Walks the unsent bytes from the front: at most `budget` bytes (at least one) in at
/// most `max_segments` pieces, handing each piece to `piece`. Returns the bytes and the
/// number of writes covered.
///
/// Copied writes hold no bytes of their own: theirs are in the staging buffer, in queue
/// order, from its first byte on, so a run of them is one [`Piece::Staged`] range (one
/// piece, however many writes it covers).
fn gather<'a, T>(
    entries: &'a VecDeque<Entry<T>>,
    budget: usize,
    max_segments: usize,
    files: Files,
    mut piece: impl FnMut(Piece<'a>),
) -> (usize, usize) {
    let budget = budget.max(1);
    let mut len = 0;
    let mut writes = 0;
    let mut pieces = 0;
    // The staged run being gathered, and where the next staged byte is.
    let mut run: Option<std::ops::Range<usize>> = None;
    let mut staged_at = 0;
    let (len, writes) = 'walk: {
        for entry in entries {
            if entry.remaining() == 0 {
                writes += 1;
                continue;
            }
            let Some(body) = entry.body.as_deref() else {
                let n = entry.remaining().min(budget - len);
                match &mut run {
                    Some(r) => r.end += n,
                    None if pieces == max_segments => break 'walk (len, writes),
                    None => {
                        run = Some(staged_at..staged_at + n);
                        pieces += 1;
                    }
                }
                staged_at += n;
                len += n;
                writes += 1;
                if len == budget {
                    break 'walk (len, writes);
                }
                continue;
            };
            let mut took = false;
            for (index, seg) in body.segments.segments().iter().enumerate().skip(body.seg) {
                if pieces == max_segments {
                    break 'walk (len, writes + usize::from(took));
                }
                if let Some(r) = run.take() {
                    piece(Piece::Staged(r));
                }
                let start = if index == body.seg { body.off } else { 0 };
                let room = budget - len;
                let n = match seg {
                    Segment::Bytes(bytes) => {
                        let end = bytes.len().min(start.saturating_add(room));
                        piece(Piece::Memory(bytes, start..end));
                        end - start
                    }
                    Segment::File(range) if files == Files::Sendfile => {
                        if pieces > 0 {
                            piece(Piece::FileNext);
                            break 'walk (len, writes + usize::from(took));
                        }
                        let n = (range.len() - start).min(room);
                        piece(Piece::File {
                            range,
                            at: start,
                            len: n,
                        });
                        break 'walk (n, writes + 1);
                    }
                    Segment::File(range) => {
                        let ahead = body.read_ahead.as_ref().filter(|r| r.seg == index);
                        let Some(ahead) = ahead else {
                            break 'walk (len, writes + usize::from(took));
                        };
                        let n = ahead.buf.len().min(room);
                        piece(Piece::Memory(&ahead.buf, 0..n));
                        if n < range.len() - start {
                            // The rest of the range is not read yet: nothing after it may
                            // go out before it.
                            break 'walk (len + n, writes + 1);
                        }
                        n
                    }
                };
                took = true;
                len += n;
                pieces += 1;
                if len == budget {
                    break 'walk (len, writes + 1);
                }
            }
            writes += 1;
        }
        (len, writes)
    };
    if let Some(r) = run {
        piece(Piece::Staged(r));
    }
    (len, writes)
}

/// The bytes of the copied writes (see [`QueueConfig::copy_threshold`]).
struct Stage<T> {
    /// Their unsent bytes, in queue order.
    buf: BytesMut,
    /// The most bytes `buf` held at once.
    peak: usize,
    /// The copy of staged runs handed to a message-path transport with the transmit in
    /// flight, and a buffer from an earlier one to copy into next (reclaimed once the
    /// transport has let go of it).
    lent: Option<Bytes>,
    spare: BytesMut,
    /// A finished run's list of lengths, kept for the next run (freeing one and making
    /// one per run costs more than the run saves).
    spare_run: Option<Box<Lens>>,
    /// The token of an unheard write (see [`Token::unheard`]) that joined the last
    /// entry's run as its last write, until its driver says whether anyone hears it.
    /// While it is here, that entry is untouched: nothing of it was offered to the
    /// transport (every transmit and failure [`settles`](WriteQueue::settle) it first).
    held: Option<T>,
}

impl<T> Default for Stage<T> {
    fn default() -> Self {
        Stage {
            buf: BytesMut::new(),
            peak: 0,
            lent: None,
            spare: BytesMut::new(),
            spare_run: None,
            held: None,
        }
    }
}

/// The FIFO write queue of one socket. `T` is the caller's per-write token (the socket
/// keeps the reply channel there); it comes back with the write's one answer.
///
/// The queue takes every write it is given: how much may be queued (the watermarks) is
/// decided before a write gets here ([`Watermarks`](super::Watermarks)).
pub(crate) struct WriteQueue<T> {
    limits: Limits,
    entries: VecDeque<Entry<T>>,
    /// The copied writes' bytes; made at the first copied write (boxed: an idle socket
    /// holds none).
    stage: Option<Box<Stage<T>>>,
    /// Writes merged into runs (beyond each run's first), for [`len`](Self::len). A
    /// `u32` (every socket holds one: it fits beside the limits); at its maximum, writes
    /// stop joining runs.
    merged: u32,
    /// Queued writes holding a file range: with none, no transmit needs a chunk read
    /// ahead, and [`poll_chunk_request`](Self::poll_chunk_request) answers at once
    /// instead of walking the queue.
    files: u32,
    queued: usize,
    in_flight: Option<InFlight>,
    /// What reading file chunks ahead has left: made at the first chunk read (boxed: a
    /// socket that sends no file without `sendfile` never holds one).
    reads: Option<Box<FileReads>>,
}

/// A queue's file-read state, boxed in [`WriteQueue`].
#[derive(Debug, Default)]
struct FileReads {
    /// A chunk read failed for a file segment (entry, segment) that was not the first
    /// piece of the transmit being prepared: that transmit ends before it (it is met
    /// again when it comes first). Cleared by the next transmit.
    stop: Option<(usize, usize)>,
    /// Bytes of file ranges read into memory so far.
    bytes_read: u64,
}

/// The limits of a [`QueueConfig`] the queue needs, kept compactly: every socket, idle or
/// not, holds one (chunk sizes are clamped to 4 GiB, segments to 1024).
#[derive(Clone, Copy, Debug)]
struct Limits {
    file_read_chunk: u32,
    copy_threshold: u32,
    max_segments: u16,
}

impl Limits {
    fn new(config: QueueConfig) -> Self {
        let config = config.sanitized();
        Limits {
            file_read_chunk: u32::try_from(config.file_read_chunk).unwrap_or(u32::MAX),
            copy_threshold: u32::try_from(config.copy_threshold).unwrap_or(u32::MAX),
            max_segments: u16::try_from(config.max_segments).unwrap_or(1024),
        }
    }
}

/// One chunk of a file range that the next transmit needs in memory: read
/// `len` bytes of `range` from `at` (`range.read_chunk(at, len)`) and hand the result to
/// [`WriteQueue::handle_chunk`].
#[derive(Clone, Debug)]
pub(crate) struct ChunkRequest {
    /// The range.
    pub(crate) range: FileRange,
    /// Offset in the range.
    pub(crate) at: usize,
    /// Bytes wanted.
    pub(crate) len: usize,
    entry: usize,
    seg: usize,
    /// The chunk is the transmit's first piece: failing to read it fails the socket.
    first: bool,
}

impl<T> std::fmt::Debug for WriteQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteQueue")
            .field("writes", &self.entries.len())
            .field("queued", &self.queued)
            .field("in_flight", &self.in_flight)
            .field("limits", &self.limits)
            .finish()
    }
}

impl<T: Token> WriteQueue<T> {
    /// An empty queue.
    pub(crate) fn new(config: QueueConfig) -> Self {
        WriteQueue {
            limits: Limits::new(config),
            entries: VecDeque::new(),
            stage: None,
            merged: 0,
            files: 0,
            queued: 0,
            in_flight: None,
            reads: None,
        }
    }

    /// Unsent bytes queued.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Writes queued (including the one partly sent).
    pub(crate) fn len(&self) -> usize {
        self.entries.len() + self.merged as usize
    }

    /// Whether no write is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of file ranges read into memory so far (ranges that could not go out with
    /// `sendfile`).
    pub(crate) fn file_bytes_read(&self) -> u64 {
        self.reads.as_ref().map_or(0, |reads| reads.bytes_read)
    }

    /// Whether a failed chunk read ends the transmit being prepared at this segment.
    fn chunk_stopped_at(&self, entry: usize, seg: usize) -> bool {
        self.reads.as_ref().and_then(|reads| reads.stop) == Some((entry, seg))
    }

    /// A new transmit starts: a failed chunk read is met again when its turn comes.
    fn clear_chunk_stop(&mut self) {
        if let Some(reads) = &mut self.reads {
            reads.stop = None;
        }
    }

    /// Whether a transmit is out with the transport, awaiting its answer.
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether there are unsent bytes and no transmit in flight.
    pub(crate) fn has_transmit(&self) -> bool {
        self.in_flight.is_none() && self.queued > 0
    }

    /// The token of the write queued last, if any (the socket attaches a reply channel
    /// that arrives after the write was queued).
    pub(crate) fn last_token_mut(&mut self) -> Option<&mut T> {
        if let Some(held) = self.stage.as_deref_mut().and_then(|s| s.held.as_mut()) {
            return Some(held);
        }
        self.entries.back_mut().map(|e| &mut e.token)
    }

    /// The write queued last counts its latency from `at`, if it had no start yet.
    pub(crate) fn stamp_last(&mut self, at: Instant) {
        // Someone hears it: it leaves the run it was held in.
        self.settle();
        if let Some(last) = self.entries.back_mut() {
            last.enqueued.get_or_insert(at);
        }
    }

    /// Queues a write.
    ///
    /// A zero-length write is queued like any other and completes, in order, once every
    /// write ahead of it has; `completed` answers it at once when the queue is empty.
    ///
    /// A small untagged write (copied, see [`QueueConfig::copy_threshold`]) with no
    /// latency to measure joins the run of silent copied writes before it, if that run
    /// is not offered to the transport yet: at once when its token is silent, and
    /// provisionally when it is [unheard](Token::unheard) (its token is held until its
    /// driver says: silent, it stays; heard, or anything else done to the queue first,
    /// and it becomes an entry of its own, as if it had never joined).
    pub(crate) fn push(
        &mut self,
        batch: IoBatch,
        tag: Option<u64>,
        token: T,
        now: Option<Instant>,
        completed: impl FnOnce(T, Result<Written, WriteError>),
    ) {
        self.settle();
        let len = batch.len();
        if len == 0 && self.entries.is_empty() {
            completed(token, Ok(Written::default()));
            return;
        }
        let copied = tag.is_none() && len <= self.limits.copy_threshold as usize;
        let batch = if copied && !batch.has_files() {
            // A small write: its bytes join the staging buffer, and its buffer is freed
            // now, while it is still in cache.
            let stage = self.stage.get_or_insert_with(Box::default);
            stage.buf.reserve(len);
            for segment in batch.segments() {
                if let Segment::Bytes(bytes) = segment {
                    stage.buf.put_slice(bytes);
                }
            }
            stage.peak = stage.peak.max(stage.buf.len());
            // A silent copied write behind another, neither offered to the transport
            // yet: one entry for the run (their successes are counted, not emitted; a
            // failure still answers each write). An unheard one joins provisionally.
            if now.is_none() && len > 0 && self.last_takes_silent() {
                if token.silent() {
                    self.queued += len;
                    self.join_last_run(len);
                    return;
                }
                if token.unheard() {
                    self.queued += len;
                    self.join_last_run(len);
                    if let Some(stage) = self.stage.as_deref_mut() {
                        stage.held = Some(token);
                    }
                    return;
                }
            }
            IoBatch::new()
        } else {
            batch
        };
        let entry = Entry::new(batch, len, tag, token, now);
        // Cannot overflow: four billion queued file writes would take hundreds of GB.
        self.files += entry.files();
        self.entries.push_back(entry);
        // File ranges of sparse files can add up past `usize::MAX` bytes.
        self.queued = self.queued.saturating_add(len);
    }

    /// Whether the last entry may take a silent copied write into its run: it can (see
    /// [`Entry::takes_silent`]), it is not offered to the transport, and the count of
    /// merged writes has room.
    fn last_takes_silent(&self) -> bool {
        let in_flight = self.in_flight.map_or(0, |f| f.writes);
        self.entries.len() > in_flight
            && self.merged < u32::MAX
            && self.entries.back().is_some_and(Entry::takes_silent)
    }

    /// Adds a silent copied write of `len` bytes (already staged, already counted in
    /// `queued`) to the last entry's run.
    fn join_last_run(&mut self, len: usize) {
        let Some(last) = self.entries.back_mut() else {
            return;
        };
        let first = last.len as u32;
        let spare = self.stage.as_deref_mut().map(|stage| &mut stage.spare_run);
        let run = last.run.get_or_insert_with(|| {
            let mut run = spare.and_then(Option::take).unwrap_or_default();
            run.restart(first);
            run
        });
        run.push(len as u32);
        last.len += len;
        self.merged += 1;
    }

    /// The write queued last turned out silent after it was queued (a `do_send`'s
    /// missing answer channel shows only after its handler returned): if it was held
    /// in the run before it (see [`push`](Self::push)), it stays there, as if known
    /// silent when queued.
    pub(crate) fn join_silenced_last(&mut self) {
        if let Some(stage) = self.stage.as_deref_mut() {
            if let Some(held) = stage.held.take() {
                debug_assert!(held.silent(), "a write silenced, its token not");
            }
        }
    }

    /// An unheard write held in the last run (see [`push`](Self::push)) becomes an
    /// entry of its own, with its token, as if it had never joined: before anything is
    /// offered to the transport or answered, before the next write, and when someone
    /// turns out to hear it. The run is untouched, so its staged bytes stay in place.
    fn settle(&mut self) {
        let Some(token) = self.stage.as_deref_mut().and_then(|s| s.held.take()) else {
            return;
        };
        let Some(last) = self.entries.back_mut() else {
            return;
        };
        let len = last.run.as_deref_mut().map_or(0, Lens::pop) as usize;
        last.len -= len;
        self.merged -= 1;
        if last.run.as_ref().is_some_and(|run| run.writes() == 1) {
            let run = last.run.take();
            Self::keep_run(&mut self.stage, run);
        }
        self.entries
            .push_back(Entry::new(IoBatch::new(), len, None, token, None));
    }

    /// Keeps a finished run's list of lengths for the next run, unless it grew large.
    fn keep_run(stage: &mut Option<Box<Stage<T>>>, run: Option<Box<Lens>>) {
        let run = run.filter(|run| run.pairs.capacity() <= STAGING_KEEP / 8);
        if let (Some(run), Some(stage)) = (run, stage.as_deref_mut()) {
            stage.spare_run = Some(run);
        }
    }

    /// The transmit in flight was answered: takes back the copy buffer it lent, if the
    /// transport has let go of it.
    fn reclaim(&mut self) {
        let Some(stage) = self.stage.as_deref_mut() else {
            return;
        };
        if let Some(lent) = stage.lent.take() {
            if let Ok(mut buf) = lent.try_into_mut() {
                if buf.capacity() <= STAGING_KEEP {
                    buf.clear();
                    stage.spare = buf;
                }
            }
        }
    }

    /// `n` bytes of copied writes left: drops them from the staging buffer, and frees
    /// a drained buffer that held more than [`STAGING_KEEP`].
    fn consume_staged(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let Some(stage) = self.stage.as_deref_mut() else {
            return;
        };
        stage.buf.advance(n);
        if stage.buf.is_empty() && stage.peak > STAGING_KEEP {
            self.stage = None;
        }
    }

    /// The next file chunk the transmit of at most `budget` bytes needs in memory (a
    /// transport without `sendfile`), front first; `None` when it needs none (more).
    /// Each request must be answered with [`handle_chunk`](Self::handle_chunk) before the
    /// next call. At most one chunk per write is held at a time.
    pub(crate) fn poll_chunk_request(&self, budget: usize) -> Option<ChunkRequest> {
        debug_assert_eq!(
            self.files,
            self.entries.iter().map(Entry::files).sum::<u32>(),
            "the count of queued file writes drifted"
        );
        if self.files == 0 || !self.has_transmit() {
            return None;
        }
        let budget = budget.max(1);
        let chunk = self.limits.file_read_chunk as usize;
        let max_segments = usize::from(self.limits.max_segments);
        let mut len = 0;
        let mut pieces = 0;
        // Counted as `gather` counts: a run of copied writes is one piece.
        let mut in_run = false;
        for (index, entry) in self.entries.iter().enumerate() {
            if entry.remaining() == 0 {
                continue;
            }
            let Some(body) = entry.body.as_deref() else {
                if !in_run {
                    if pieces == max_segments {
                        return None;
                    }
                    pieces += 1;
                    in_run = true;
                }
                len += entry.remaining().min(budget - len);
                if len == budget {
                    return None;
                }
                continue;
            };
            in_run = false;
            let segments = body.segments.segments();
            for (seg, piece) in segments.iter().enumerate().skip(body.seg) {
                if self.chunk_stopped_at(index, seg) || pieces == max_segments {
                    return None;
                }
                let start = if seg == body.seg { body.off } else { 0 };
                let room = budget - len;
                let n = match piece {
                    Segment::Bytes(bytes) => (bytes.len() - start).min(room),
                    Segment::File(range) => match &body.read_ahead {
                        Some(ahead) if ahead.seg == seg => {
                            if ahead.buf.len() < range.len() - start {
                                return None;
                            }
                            ahead.buf.len().min(room)
                        }
                        // One chunk per write: the rest waits for a later transmit.
                        Some(_) => return None,
                        None => {
                            return Some(ChunkRequest {
                                range: range.clone(),
                                at: start,
                                len: (range.len() - start).min(room).min(chunk),
                                entry: index,
                                seg,
                                first: pieces == 0,
                            })
                        }
                    },
                };
                len += n;
                pieces += 1;
                if len == budget {
                    return None;
                }
            }
        }
        None
    }

    /// What reading a requested chunk gave. An error reading the transmit's first piece is
    /// handed back (the caller fails the socket: its peer may have part of that write); a
    /// later piece's error ends the transmit before it.
    pub(crate) fn handle_chunk(
        &mut self,
        request: ChunkRequest,
        read: io::Result<Bytes>,
    ) -> io::Result<()> {
        match read {
            Ok(buf) => {
                self.reads.get_or_insert_default().bytes_read += buf.len() as u64;
                let body = self.entries.get_mut(request.entry);
                if let Some(body) = body.and_then(|e| e.body.as_deref_mut()) {
                    body.read_ahead = Some(ReadAhead {
                        seg: request.seg,
                        buf,
                    });
                }
                Ok(())
            }
            Err(e) if request.first => Err(e),
            Err(_) => {
                self.reads.get_or_insert_default().stop = Some((request.entry, request.seg));
                Ok(())
            }
        }
    }

    /// The next vectored write: at most `budget` bytes (at least one) and
    /// `max_segments` segments, from the front of the queue, as slices of the writers'
    /// buffers and of file chunks read ahead (see
    /// [`poll_chunk_request`](Self::poll_chunk_request): a transmit stops at a file range
    /// with nothing read). `None` while a transmit is in flight or nothing is queued.
    /// Each transmit must be answered with `handle_sent`, `handle_would_block` or
    /// `handle_failed` before the next.
    pub(crate) fn poll_transmit(&mut self, budget: usize) -> Option<Transmit> {
        self.settle();
        if !self.has_transmit() {
            return None;
        }
        self.clear_chunk_stop();
        // The transport keeps what it is handed while the staging buffer takes more
        // writes: staged runs go out as a copy, made into a buffer reused from transmit
        // to transmit.
        let mut copy = self
            .stage
            .as_deref_mut()
            .map(|stage| std::mem::take(&mut stage.spare))
            .unwrap_or_default();
        let mut pieces: Vec<Result<Bytes, std::ops::Range<usize>>> = Vec::new();
        let staging: &[u8] = self.stage.as_deref().map_or(&[], |stage| &stage.buf);
        let (len, writes) = gather(
            &self.entries,
            budget,
            usize::from(self.limits.max_segments),
            Files::ReadAhead,
            |piece| match piece {
                Piece::Memory(bytes, range) => pieces.push(Ok(bytes.slice(range))),
                Piece::Staged(range) => {
                    let at = copy.len();
                    copy.extend_from_slice(&staging[range]);
                    pieces.push(Err(at..copy.len()));
                }
                Piece::File { .. } | Piece::FileNext => {}
            },
        );
        let copy = copy.freeze();
        let segments = pieces
            .into_iter()
            .map(|piece| piece.unwrap_or_else(|range| copy.slice(range)))
            .collect();
        if let Some(stage) = self.stage.as_deref_mut().filter(|_| !copy.is_empty()) {
            stage.lent = Some(copy);
        }
        self.in_flight = Some(InFlight { len, writes });
        Some(Transmit {
            segments,
            len,
            writes,
        })
    }

    /// Like [`poll_transmit`](Self::poll_transmit), for a transport called in place (the
    /// system transport's `writev` and `sendfile`): memory is lent as `IoSlice`s borrowed
    /// from the queue (pushed into `out`), so not even a reference count changes hands.
    ///
    /// With `sendfile`, a file range is not read at all: a transmit is either a run of
    /// memory slices up to the next range, or one range
    /// ([`InPlaceTransmit::File`]) for the caller to send. Without it, ranges go out as
    /// the chunks read ahead, as for `poll_transmit`. Drop `out` before answering with
    /// `handle_sent` and the others.
    pub(crate) fn poll_transmit_in_place<'a>(
        &'a mut self,
        budget: usize,
        sendfile: bool,
        out: &mut Vec<IoSlice<'a>>,
    ) -> Option<InPlaceTransmit<'a>> {
        self.settle();
        if !self.has_transmit() {
            return None;
        }
        self.clear_chunk_stop();
        let files = if sendfile {
            Files::Sendfile
        } else {
            Files::ReadAhead
        };
        let mut file = None;
        let mut more = false;
        let staging: &[u8] = self.stage.as_deref().map_or(&[], |stage| &stage.buf);
        let (len, writes) = gather(
            &self.entries,
            budget,
            usize::from(self.limits.max_segments),
            files,
            |piece| match piece {
                Piece::Memory(bytes, range) => out.push(IoSlice::new(&bytes[range])),
                Piece::Staged(range) => out.push(IoSlice::new(&staging[range])),
                Piece::File { range, at, len } => file = Some((range, at, len)),
                Piece::FileNext => more = true,
            },
        );
        self.in_flight = Some(InFlight { len, writes });
        Some(match file {
            Some((range, at, len)) => InPlaceTransmit::File {
                file: range.file(),
                offset: range.offset() + at as u64,
                len,
                writes,
            },
            None => InPlaceTransmit::Vectored { len, writes, more },
        })
    }

    /// The transport accepted `n` bytes of the transmit in flight. Finished writes are
    /// reported to `completed`, in order. An answer that breaks the transport contract
    /// (more than offered, or zero of a non-empty transmit) is an error; the caller should
    /// then fail every write.
    pub(crate) fn handle_sent(
        &mut self,
        n: usize,
        now: Instant,
        completed: impl FnMut(T, Result<Written, WriteError>),
    ) -> Result<(), TransportError> {
        let Some(flight) = self.in_flight.take() else {
            return Err(TransportError::OverAccepted {
                accepted: n,
                offered: 0,
            });
        };
        if n > flight.len {
            return Err(TransportError::OverAccepted {
                accepted: n,
                offered: flight.len,
            });
        }
        if n == 0 && flight.len > 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.reclaim();
        let mut left = n;
        let mut staged = 0;
        self.queued -= n;
        // The writes it carried bytes of: a run of silent copied writes is one entry,
        // many writes; a zero-length write rides along with none.
        let carried: u64 = self
            .entries
            .iter()
            .take(flight.writes)
            .filter(|e| e.remaining() > 0)
            .map(|e| e.run.as_deref().map_or(1, Lens::writes))
            .sum();
        let carried = u32::try_from(carried).unwrap_or(u32::MAX);
        for entry in self.entries.iter_mut().take(flight.writes) {
            if entry.remaining() > 0 {
                entry.sendv_calls += 1;
                entry.max_writes_per_sendv = entry.max_writes_per_sendv.max(carried);
            }
            // The transport takes bytes in order: the writes past the first one not
            // wholly taken got nothing.
            let take = left.min(entry.remaining());
            entry.advance(take);
            if entry.staged() {
                staged += take;
            }
            left -= take;
        }
        self.consume_staged(staged);
        self.pop_finished(now, completed);
        Ok(())
    }

    /// The transport would block: nothing of the transmit in flight was taken. The same
    /// bytes are offered again by the next `poll_transmit`.
    pub(crate) fn handle_would_block(&mut self) {
        self.reclaim();
        if let Some(flight) = self.in_flight.take() {
            for entry in self.entries.iter_mut().take(flight.writes) {
                entry.would_blocks += 1;
            }
        }
    }

    /// The transport failed the transmit in flight (or it was never handed over): how
    /// far it got is what earlier answers said. Clears the in-flight mark.
    pub(crate) fn handle_failed(&mut self) {
        if let Some(stage) = self.stage.as_deref_mut() {
            stage.lent = None;
        }
        self.in_flight = None;
    }

    /// Removes a queued write that has not started (no byte of it sent or in flight),
    /// answers it with [`WriteError::Cancelled`] through `completed`, and hands back its
    /// payload. `None` if no such write has this tag. Zero-length writes that the removal
    /// leaves at the front are completed next, in order.
    pub(crate) fn cancel(
        &mut self,
        tag: u64,
        now: Instant,
        mut completed: impl FnMut(T, Result<Written, WriteError>),
    ) -> Option<IoBatch> {
        self.settle();
        let first_free = self.in_flight.map_or(0, |f| f.writes);
        let index = self
            .entries
            .iter()
            .enumerate()
            .skip(first_free)
            .find(|(_, e)| e.tag == Some(tag) && e.sent == 0)
            .map(|(i, _)| i)?;
        let entry = self.entries.remove(index)?;
        self.queued -= entry.len;
        self.files -= entry.files();
        completed(entry.token, Err(WriteError::Cancelled));
        if self.in_flight.is_none() {
            self.pop_finished(now, completed);
        }
        Some(entry.body.map(|body| body.segments).unwrap_or_default())
    }

    /// Ends every write behind the transmit in flight (every write, when none is in
    /// flight) with the error `error(bytes_sent, len)` makes, front first, and returns
    /// the unsent bytes they held. The writes in flight stay until the transport's answer
    /// says how far they got.
    pub(crate) fn fail_behind_in_flight(
        &mut self,
        error: impl Fn(usize, usize) -> WriteError,
        mut completed: impl FnMut(T, Result<Written, WriteError>),
    ) -> usize {
        self.settle();
        let keep = self
            .in_flight
            .map_or(0, |f| f.writes)
            .min(self.entries.len());
        let mut released = 0;
        let mut staged = 0;
        for entry in self.entries.drain(keep..) {
            released += entry.remaining();
            self.files -= entry.files();
            if entry.staged() {
                staged += entry.remaining();
            }
            self.merged -= entry.merged();
            if entry.run.is_some() {
                let run = entry.finish_run(&mut completed, Written::default(), &error);
                Self::keep_run(&mut self.stage, run);
            } else {
                completed(entry.token, Err(error(entry.sent, entry.len)));
            }
        }
        // The staged bytes of the writes ended are the buffer's last ones.
        if let Some(stage) = self.stage.as_deref_mut() {
            stage.buf.truncate(stage.buf.len() - staged);
        }
        self.queued -= released;
        released
    }

    /// Ends every queued write with the error `error(bytes_sent, len)` makes, front
    /// first, and returns the unsent bytes they held.
    pub(crate) fn fail_all(
        &mut self,
        error: impl Fn(usize, usize) -> WriteError,
        mut completed: impl FnMut(T, Result<Written, WriteError>),
    ) -> usize {
        self.settle();
        self.in_flight = None;
        let released = self.queued;
        self.queued = 0;
        self.stage = None;
        self.merged = 0;
        self.files = 0;
        for entry in self.entries.drain(..) {
            if entry.run.is_some() {
                let run = entry.finish_run(&mut completed, Written::default(), &error);
                Self::keep_run(&mut self.stage, run);
            } else {
                completed(entry.token, Err(error(entry.sent, entry.len)));
            }
        }
        released
    }

    /// Completes the writes at the front that have nothing left to send.
    fn pop_finished(
        &mut self,
        now: Instant,
        mut completed: impl FnMut(T, Result<Written, WriteError>),
    ) {
        let done = self
            .entries
            .iter()
            .take_while(|e| e.remaining() == 0)
            .count();
        for entry in self.entries.drain(..done) {
            self.merged -= entry.merged();
            self.files -= entry.files();
            let report = entry.written(now);
            if entry.run.is_none() {
                completed(entry.token, Ok(report));
                continue;
            }
            let run = entry.finish_run(&mut completed, report, |sent, len| {
                unreachable_partial(sent, len)
            });
            Self::keep_run(&mut self.stage, run);
        }
    }
}

/// A finished run has every byte sent: no write of it can be partial.
fn unreachable_partial(bytes_sent: usize, len: usize) -> WriteError {
    debug_assert!(
        false,
        "a finished run with a partial write ({bytes_sent} of {len})"
    );
    WriteError::Closed { bytes_sent, len }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answers = Vec<(u32, Result<Written, WriteError>)>;

    fn config(high: usize, low: usize, turn: usize, segs: usize) -> QueueConfig {
        QueueConfig {
            high_watermark: high,
            low_watermark: low,
            max_bytes_per_turn: turn,
            turn_cap: TurnCap::Always,
            max_segments: segs,
            file_read_chunk: 64 * 1024,
            copy_threshold: 0,
        }
    }

    fn staged(q: &WriteQueue<u32>) -> &[u8] {
        q.stage.as_deref().map_or(&[], |stage| &stage.buf)
    }

    fn copying(threshold: usize, segs: usize) -> QueueConfig {
        QueueConfig {
            copy_threshold: threshold,
            ..config(1 << 20, 0, 1 << 20, segs)
        }
    }

    fn untagged(q: &mut WriteQueue<u32>, id: u32, data: &[&'static [u8]], out: &mut Answers) {
        let batch: IoBatch = data.iter().map(|s| Bytes::from_static(s)).collect();
        q.push(batch, None, id, None, |t, r| out.push((t, r)));
    }

    fn in_place<T: Token>(q: &mut WriteQueue<T>, budget: usize) -> (Vec<Vec<u8>>, usize) {
        let mut slices = Vec::new();
        let transmit = q.poll_transmit_in_place(budget, true, &mut slices);
        let Some(InPlaceTransmit::Vectored { writes, .. }) = transmit else {
            panic!("a vectored transmit");
        };
        (slices.iter().map(|s| s.to_vec()).collect(), writes)
    }

    /// A token that is silent or not.
    #[derive(Debug, PartialEq)]
    struct Tok(u32, bool);

    impl Token for Tok {
        fn silent(&self) -> bool {
            self.1
        }
        fn new_silent() -> Self {
            Tok(0, true)
        }
    }

    fn tok(q: &mut WriteQueue<Tok>, token: Tok, data: &'static [u8]) {
        q.push(
            Bytes::from_static(data).into(),
            None,
            token,
            None,
            |_, _| panic!("answered at once"),
        );
    }

    /// A write's answer: its token's id, and its length done or (bytes sent, length).
    type Answer = (u32, Result<usize, (usize, usize)>);

    /// Fails every queued write as closed, then gives every answer so far as [`Answer`]s.
    fn closed_all(
        q: &mut WriteQueue<Tok>,
        out: &mut Vec<(Tok, Result<Written, WriteError>)>,
    ) -> Vec<Answer> {
        q.fail_all(
            |bytes_sent, len| WriteError::Closed { bytes_sent, len },
            |t, r| out.push((t, r)),
        );
        answers(out)
    }

    /// A test token's id.
    trait Id {
        fn id(&self) -> u32;
    }

    impl Id for Tok {
        fn id(&self) -> u32 {
            self.0
        }
    }

    impl Id for Pend {
        fn id(&self) -> u32 {
            self.0
        }
    }

    /// Each answer as an [`Answer`].
    fn answers(out: &[(impl Id, Result<Written, WriteError>)]) -> Vec<Answer> {
        out.iter()
            .map(|(t, r)| match r {
                Ok(w) => (t.id(), Ok(w.len)),
                Err(WriteError::Closed { bytes_sent, len }) => (t.id(), Err((*bytes_sent, *len))),
                Err(e) => panic!("{e:?}"),
            })
            .collect()
    }

    #[test]
    fn a_run_of_equal_writes_keeps_one_length_and_answers_each_write() {
        let mut q = WriteQueue::new(copying(64, 1024));
        for i in 0..10_000 {
            tok(&mut q, Tok(i, true), b"0123456789abcdef");
        }
        tok(&mut q, Tok(10_000, true), b"xyz");
        tok(&mut q, Tok(10_001, true), b"0123456789abcdef");
        assert_eq!(q.entries.len(), 1, "one run");
        let run = q.entries[0].run.as_deref().expect("a run");
        assert_eq!(
            run.pairs,
            [(16, 10_000), (3, 1), (16, 1)],
            "lengths in order, one pair per stretch of equal ones"
        );
        assert_eq!(q.len(), 10_002, "every write counts");
        let mut out = Vec::new();
        q.fail_all(
            |bytes_sent, len| WriteError::Closed { bytes_sent, len },
            |t, r| out.push((t, r)),
        );
        let lens: Vec<usize> = out
            .iter()
            .map(|(_, r)| match r {
                Err(WriteError::Closed { bytes_sent: 0, len }) => *len,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lens.len(), 10_002, "one answer per write");
        assert!(lens[..10_000].iter().all(|&len| len == 16));
        assert_eq!(lens[10_000..], [3, 16]);
        assert_eq!(out[0].0 .0, 0, "the run's first write keeps its own token");
    }

    /// A token whose write may be unheard (`None`) until its driver says: silent
    /// (`Some(true)`) or heard (`Some(false)`).
    #[derive(Debug, PartialEq)]
    struct Pend(u32, Option<bool>);

    impl Token for Pend {
        fn silent(&self) -> bool {
            self.1 == Some(true)
        }
        fn new_silent() -> Self {
            Pend(0, Some(true))
        }
        fn unheard(&self) -> bool {
            self.1.is_none()
        }
    }

    fn pend(q: &mut WriteQueue<Pend>, id: u32, data: &'static [u8]) {
        q.push(
            Bytes::from_static(data).into(),
            None,
            Pend(id, None),
            None,
            |_, _| panic!("answered at once"),
        );
    }

    /// What a socket does when a write's `do_send` shows: its token turns silent.
    fn silence_last(q: &mut WriteQueue<Pend>) {
        q.last_token_mut().expect("a write").1 = Some(true);
        q.join_silenced_last();
    }

    /// What a socket does when a write's `send` shows: its token turns heard, and its
    /// latency starts.
    fn hear_last(q: &mut WriteQueue<Pend>, at: Instant) {
        q.last_token_mut().expect("a write").1 = Some(false);
        q.stamp_last(at);
    }

    #[test]
    fn a_write_silenced_after_queuing_joins_the_run_before_it_only_where_it_could_have() {
        let mut q = WriteQueue::new(copying(64, 1024));
        // Alone: nothing to join.
        pend(&mut q, 1, b"ab");
        silence_last(&mut q);
        assert_eq!(q.entries.len(), 1);
        // Behind a silent copied write: joins its run.
        pend(&mut q, 2, b"cde");
        silence_last(&mut q);
        assert_eq!(q.entries.len(), 1, "2 joined 1");
        // Heard: leaves the run; behind a write someone hears: stays its own.
        let at = Instant::now();
        pend(&mut q, 3, b"f");
        hear_last(&mut q, at);
        pend(&mut q, 4, b"gh");
        silence_last(&mut q);
        assert_eq!(q.entries.len(), 3, "[1 2] [3] [4]");
        assert_eq!(q.entries[1].enqueued, Some(at), "3's latency counts");
        // Behind a run offered to the transport: stays its own.
        let mut slices = Vec::new();
        assert!(q.poll_transmit_in_place(1024, true, &mut slices).is_some());
        drop(slices);
        pend(&mut q, 5, b"ij");
        silence_last(&mut q);
        assert_eq!(q.entries.len(), 4, "the entries in flight take no more");
        pend(&mut q, 6, b"k");
        silence_last(&mut q);
        assert_eq!(q.entries.len(), 4, "6 joined 5");
        assert_eq!(q.len(), 6);
        let mut out = Vec::new();
        q.handle_sent(4, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        q.fail_all(
            |bytes_sent, len| WriteError::Closed { bytes_sent, len },
            |t, r| out.push((t, r)),
        );
        assert_eq!(
            answers(&out),
            [
                (1, Ok(2)),
                (0, Err((2, 3))),
                (3, Err((0, 1))),
                (4, Err((0, 2))),
                (5, Err((0, 2))),
                (0, Err((0, 1))),
            ],
            "one answer per write, in order, with its own length; a joined write \
             answers with a silent token"
        );
    }

    #[test]
    fn an_unheard_write_left_in_a_run_is_its_own_write_before_anything_touches_the_queue() {
        let fail_all = |q: &mut WriteQueue<Pend>, out: &mut Vec<_>| {
            q.fail_all(
                |bytes_sent, len| WriteError::Closed { bytes_sent, len },
                |t, r| out.push((t, r)),
            );
        };
        // Its driver never says, and the queue fails: it answers with its own token.
        let mut q = WriteQueue::new(copying(64, 1024));
        pend(&mut q, 1, b"ab");
        silence_last(&mut q);
        pend(&mut q, 2, b"cde");
        assert_eq!((q.entries.len(), q.len()), (1, 2), "2 held in 1's run");
        let mut out = Vec::new();
        fail_all(&mut q, &mut out);
        assert_eq!(
            answers(&out),
            [(1, Err((0, 2))), (2, Err((0, 3)))],
            "the held write answers to its own token"
        );
        assert!(out[1].0 .1.is_none(), "still unheard");

        // A transmit comes first: the held write is an entry of its own, sent whole.
        let mut q = WriteQueue::new(copying(64, 1024));
        pend(&mut q, 1, b"ab");
        silence_last(&mut q);
        pend(&mut q, 2, b"cde");
        let (slices, writes) = in_place(&mut q, 1024);
        assert_eq!((slices.concat(), writes), (b"abcde".to_vec(), 2));
        let mut out = Vec::new();
        q.handle_sent(5, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        assert_eq!(
            answers(&out),
            [(1, Ok(2)), (2, Ok(3))],
            "each with its own token"
        );
        assert!(q.is_empty());

        // The next write comes first: the held one is settled before it, in order.
        let mut q = WriteQueue::new(copying(64, 1024));
        pend(&mut q, 1, b"ab");
        silence_last(&mut q);
        pend(&mut q, 2, b"cde");
        pend(&mut q, 3, b"f");
        silence_last(&mut q);
        assert_eq!(
            q.entries.len(),
            3,
            "[1] [2] [3]: 3 is behind an unheard write"
        );
        let mut out = Vec::new();
        fail_all(&mut q, &mut out);
        assert_eq!(
            answers(&out),
            [(1, Err((0, 2))), (2, Err((0, 3))), (3, Err((0, 1)))]
        );
    }

    #[test]
    fn silent_copied_writes_share_one_entry_and_are_still_answered_one_by_one() {
        let mut q = WriteQueue::new(copying(8, 1024));
        tok(&mut q, Tok(1, true), b"ab");
        tok(&mut q, Tok(2, true), b"cde");
        tok(&mut q, Tok(3, true), b"f");
        tok(&mut q, Tok(4, false), b"gh");
        tok(&mut q, Tok(5, true), b"ij");
        tok(&mut q, Tok(6, true), b"k");
        assert_eq!(q.entries.len(), 3, "runs: [1 2 3] [4] [5 6]");
        assert_eq!(q.len(), 6, "every write counts");
        let mut slices = Vec::new();
        let Some(InPlaceTransmit::Vectored { len, writes, .. }) =
            q.poll_transmit_in_place(5, true, &mut slices)
        else {
            panic!("a transmit");
        };
        assert_eq!((len, writes), (5, 1), "a run is one entry");
        drop(slices);
        let mut out = Vec::new();
        q.handle_sent(4, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        assert!(out.is_empty(), "a run is answered when it ends");
        tok(&mut q, Tok(7, true), b"l");
        assert_eq!(
            q.len(),
            7,
            "a run partly sent takes no more writes; 7 joins [5 6]"
        );
        assert_eq!(q.entries.len(), 3);
        assert_eq!(
            closed_all(&mut q, &mut out),
            [
                (1, Ok(2)),
                (0, Err((2, 3))),
                (0, Err((0, 1))),
                (4, Err((0, 2))),
                (5, Err((0, 2))),
                (0, Err((0, 1))),
                (0, Err((0, 1))),
            ],
            "one answer per write, in order: done if all of it went out, else how far"
        );
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_run_in_flight_takes_no_more_writes_and_its_successes_come_one_per_write() {
        let mut q = WriteQueue::new(copying(8, 1024));
        tok(&mut q, Tok(1, true), b"ab");
        tok(&mut q, Tok(2, true), b"cd");
        let t = q.poll_transmit(usize::MAX).expect("data");
        assert_eq!((t.len, t.writes), (4, 1));
        tok(&mut q, Tok(3, true), b"ef");
        assert_eq!(q.entries.len(), 2, "the run in flight is closed");
        let mut out = Vec::new();
        q.handle_sent(4, Instant::now(), |t, r| out.push((t, r.map(|w| w.len))))
            .expect("ok");
        let done: Vec<(u32, usize)> = out
            .iter()
            .map(|(t, r)| (t.0, *r.as_ref().expect("done")))
            .collect();
        assert_eq!(done, [(1, 2), (0, 2)]);
        assert_eq!(q.len(), 1);
        let t = q.poll_transmit(usize::MAX).expect("data");
        assert_eq!(concat(&t), b"ef");
    }

    #[test]
    fn small_writes_are_copied_into_one_slice_and_answered_one_by_one() {
        let mut q = WriteQueue::new(copying(8, 1024));
        let mut out = Vec::new();
        untagged(&mut q, 1, &[b"ab", b"c"], &mut out);
        untagged(&mut q, 2, &[b"defg"], &mut out);
        untagged(&mut q, 3, &[b"hi"], &mut out);
        let (slices, writes) = in_place(&mut q, usize::MAX);
        assert_eq!(slices, vec![b"abcdefghi".to_vec()], "one slice for the run");
        assert_eq!(writes, 3);
        q.handle_sent(5, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        let ids: Vec<u32> = out.iter().map(|(t, _)| *t).collect();
        assert_eq!(ids, vec![1], "write 2 is only partly sent");
        let (slices, _) = in_place(&mut q, usize::MAX);
        assert_eq!(slices, vec![b"fghi".to_vec()]);
        q.handle_sent(4, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        let lens: Vec<(u32, usize)> = out
            .iter()
            .map(|(t, r)| (*t, r.as_ref().expect("done").len))
            .collect();
        assert_eq!(lens, vec![(1, 3), (2, 4), (3, 2)]);
        assert!(q.is_empty() && staged(&q).is_empty());
    }

    #[test]
    fn copied_runs_keep_their_place_among_large_tagged_and_file_writes() {
        let mut q = WriteQueue::new(copying(4, 1024));
        let mut out = Vec::new();
        untagged(&mut q, 1, &[b"ab"], &mut out);
        untagged(&mut q, 2, &[b"cd"], &mut out);
        untagged(&mut q, 3, &[b"LARGE!"], &mut out);
        untagged(&mut q, 4, &[b"ef"], &mut out);
        push(&mut q, 5, &[b"tg"], &mut out);
        untagged(&mut q, 6, &[b"gh"], &mut out);
        let (slices, writes) = in_place(&mut q, usize::MAX);
        let expected: Vec<Vec<u8>> = [&b"abcd"[..], b"LARGE!", b"ef", b"tg", b"gh"]
            .iter()
            .map(|s| s.to_vec())
            .collect();
        assert_eq!(slices, expected);
        assert_eq!(writes, 6);
        assert!(
            q.cancel(5, Instant::now(), |_, _| {}).is_none(),
            "in flight"
        );
        q.handle_sent(16, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        let ids: Vec<u32> = out.iter().map(|(t, _)| *t).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
        let tagged = q.cancel(7, Instant::now(), |_, _| {});
        assert!(tagged.is_none());
    }

    #[test]
    fn a_tagged_small_write_stays_a_slice_of_its_own_and_can_be_cancelled() {
        let mut q = WriteQueue::new(copying(64, 1024));
        let mut out = Vec::new();
        untagged(&mut q, 1, &[b"ab"], &mut out);
        push(&mut q, 2, &[b"cd"], &mut out);
        untagged(&mut q, 3, &[b"ef"], &mut out);
        let batch = q
            .cancel(2, Instant::now(), |t, r| out.push((t, r)))
            .expect("not started");
        assert_eq!(batch.to_vec().expect("memory"), b"cd".to_vec());
        let (slices, writes) = in_place(&mut q, usize::MAX);
        assert_eq!(
            slices,
            vec![b"abef".to_vec()],
            "the run closes over the gap"
        );
        assert_eq!(writes, 2);
    }

    #[test]
    fn copied_runs_respect_the_byte_and_segment_bounds() {
        let mut q = WriteQueue::new(copying(4, 2));
        let mut out = Vec::new();
        untagged(&mut q, 1, &[b"ab"], &mut out);
        untagged(&mut q, 2, &[b"LARGE!"], &mut out);
        untagged(&mut q, 3, &[b"cd"], &mut out);
        let (slices, writes) = in_place(&mut q, usize::MAX);
        assert_eq!(slices, vec![b"ab".to_vec(), b"LARGE!".to_vec()]);
        assert_eq!(writes, 2, "the third piece waits for the next transmit");
        q.handle_sent(8, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        untagged(&mut q, 4, &[b"efg"], &mut out);
        let (slices, writes) = in_place(&mut q, 4);
        assert_eq!(slices, vec![b"cdef".to_vec()], "the budget cuts a run");
        assert_eq!(writes, 2);
        q.handle_sent(4, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        let (slices, _) = in_place(&mut q, 4);
        assert_eq!(slices, vec![b"g".to_vec()]);
    }

    #[test]
    fn owned_transmits_copy_the_run_so_later_writes_cannot_touch_it() {
        let mut q = WriteQueue::new(copying(8, 1024));
        let mut out = Vec::new();
        untagged(&mut q, 1, &[b"abc"], &mut out);
        let t = q.poll_transmit(usize::MAX).expect("data");
        untagged(&mut q, 2, &[b"def"], &mut out);
        assert_eq!(concat(&t), b"abc");
        q.handle_sent(2, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        let t = q.poll_transmit(usize::MAX).expect("rest");
        assert_eq!(concat(&t), b"cdef");
    }

    #[test]
    fn failing_writes_behind_the_transmit_drops_their_copied_bytes() {
        let mut q = WriteQueue::new(copying(8, 1024));
        let mut out = Vec::new();
        untagged(&mut q, 1, &[b"abc"], &mut out);
        let t = q.poll_transmit(usize::MAX).expect("data");
        assert_eq!(concat(&t), b"abc");
        untagged(&mut q, 2, &[b"def"], &mut out);
        untagged(&mut q, 3, &[b"LARGE-WRITE"], &mut out);
        untagged(&mut q, 4, &[b"ghi"], &mut out);
        let released = q.fail_behind_in_flight(
            |bytes_sent, len| WriteError::Closed { bytes_sent, len },
            |t, r| out.push((t, r)),
        );
        assert_eq!(released, 3 + 11 + 3);
        assert_eq!(
            staged(&q),
            b"abc",
            "only the write in flight keeps its bytes"
        );
        q.handle_sent(3, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        assert!(q.is_empty() && staged(&q).is_empty());
        let ids: Vec<u32> = out.iter().map(|(t, _)| *t).collect();
        assert_eq!(ids, vec![2, 3, 4, 1]);
    }

    #[test]
    fn a_drained_staging_buffer_past_the_keep_size_is_freed() {
        let mut q = WriteQueue::new(copying(1024, 1024));
        let mut out = Vec::new();
        static KIB: [u8; 1024] = [b'k'; 1024];
        for id in 0..100 {
            untagged(&mut q, id, &[&KIB], &mut out);
        }
        let (_, writes) = in_place(&mut q, usize::MAX);
        assert_eq!(writes, 100);
        q.handle_sent(100 * 1024, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        assert_eq!(out.len(), 100);
        assert!(q.stage.is_none(), "the staging buffer is freed");
    }

    fn push(q: &mut WriteQueue<u32>, id: u32, data: &[&'static [u8]], out: &mut Answers) {
        let batch: IoBatch = data.iter().map(|s| Bytes::from_static(s)).collect();
        q.push(batch, Some(id as u64), id, Some(Instant::now()), |t, r| {
            out.push((t, r))
        });
    }

    fn concat(t: &Transmit) -> Vec<u8> {
        t.segments.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn transmit_gathers_writes_in_order_and_partial_sends_resume_mid_segment() {
        let mut q = WriteQueue::new(config(1 << 20, 0, 1 << 20, 1024));
        let mut out = Vec::new();
        push(&mut q, 1, &[b"ab", b"cd"], &mut out);
        push(&mut q, 2, &[b"efg"], &mut out);
        let t = q.poll_transmit(usize::MAX).expect("data");
        assert_eq!(concat(&t), b"abcdefg");
        assert_eq!(t.writes, 2);
        assert!(
            q.poll_transmit(usize::MAX).is_none(),
            "one transmit at a time"
        );
        q.handle_sent(3, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        assert!(out.is_empty());
        let t = q.poll_transmit(usize::MAX).expect("rest");
        assert_eq!(concat(&t), b"defg");
        q.handle_sent(4, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        let ids: Vec<u32> = out.iter().map(|(t, _)| *t).collect();
        assert_eq!(ids, vec![1, 2]);
        let first = out[0].1.as_ref().expect("done");
        assert_eq!((first.len, first.sendv_calls), (4, 2));
        assert!(q.is_empty());
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn transmit_respects_byte_and_segment_bounds() {
        let mut q = WriteQueue::new(config(1 << 20, 0, 5, 2));
        let mut out = Vec::new();
        push(&mut q, 1, &[b"abc", b"def", b"ghi"], &mut out);
        let t = q.poll_transmit(5).expect("data");
        assert_eq!(concat(&t), b"abcde");
        q.handle_sent(5, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        let t = q.poll_transmit(100).expect("data");
        assert_eq!(t.segments.len(), 2, "max_segments caps the iovec count");
        assert_eq!(concat(&t), b"fghi");
    }

    #[test]
    fn transmit_is_zero_copy() {
        let mut q = WriteQueue::new(QueueConfig::default());
        let payload = Bytes::from(vec![7u8; 4096]);
        q.push(
            payload.clone().into(),
            None,
            0u32,
            Some(Instant::now()),
            |_, _| {},
        );
        let t = q.poll_transmit(usize::MAX).expect("data");
        assert_eq!(t.segments[0].as_ptr(), payload.as_ptr());
    }

    #[test]
    fn cancel_returns_payload_only_for_writes_not_started() {
        let mut q = WriteQueue::new(QueueConfig::default());
        let mut out = Vec::new();
        push(&mut q, 1, &[b"aaaa"], &mut out);
        push(&mut q, 2, &[b"bbbb"], &mut out);
        push(&mut q, 3, &[b"cccc"], &mut out);
        let t = q.poll_transmit(6).expect("data");
        assert_eq!(t.writes, 2);
        assert!(
            q.cancel(1, Instant::now(), |_, _| {}).is_none(),
            "in flight"
        );
        assert!(
            q.cancel(2, Instant::now(), |_, _| {}).is_none(),
            "in flight"
        );
        let batch = q
            .cancel(3, Instant::now(), |t, r| out.push((t, r)))
            .expect("queued");
        assert_eq!(batch.to_vec().expect("memory"), b"cccc".to_vec());
        assert!(matches!(out.as_slice(), [(3, Err(WriteError::Cancelled))]));
        assert_eq!(q.queued_bytes(), 8);
    }

    #[test]
    fn zero_length_writes_complete_in_order() {
        let mut q = WriteQueue::new(QueueConfig::default());
        let mut out = Vec::new();
        push(&mut q, 1, &[], &mut out);
        assert_eq!(out.len(), 1, "empty queue: answered at once");
        push(&mut q, 2, &[b"xy"], &mut out);
        push(&mut q, 3, &[], &mut out);
        assert_eq!(out.len(), 1);
        q.poll_transmit(10).expect("data");
        q.handle_sent(2, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        let ids: Vec<u32> = out.iter().map(|(t, _)| *t).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert!(q.is_empty());
    }

    #[test]
    fn broken_transport_answers_are_errors() {
        let mut q = WriteQueue::new(QueueConfig::default());
        let mut out = Vec::new();
        push(&mut q, 1, &[b"abc"], &mut out);
        q.poll_transmit(10).expect("data");
        assert!(matches!(
            q.handle_sent(4, Instant::now(), |_, _| {}),
            Err(TransportError::OverAccepted {
                accepted: 4,
                offered: 3
            })
        ));
        q.poll_transmit(10).expect("data");
        assert!(q.handle_sent(0, Instant::now(), |_, _| {}).is_err());
    }

    #[test]
    fn fail_all_reports_bytes_sent_per_write() {
        let mut q = WriteQueue::new(QueueConfig::default());
        let mut out = Vec::new();
        push(&mut q, 1, &[b"abcd"], &mut out);
        push(&mut q, 2, &[b"efgh"], &mut out);
        q.poll_transmit(10).expect("data");
        q.handle_sent(3, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        q.poll_transmit(10).expect("data");
        let released = q.fail_all(
            |bytes_sent, len| WriteError::Closed { bytes_sent, len },
            |t, r| out.push((t, r)),
        );
        assert_eq!(released, 5, "the unsent bytes are handed back");
        let sent: Vec<(u32, usize)> = out
            .iter()
            .map(|(t, r)| (*t, r.as_ref().expect_err("failed").bytes_sent()))
            .collect();
        assert_eq!(sent, vec![(1, 3), (2, 0)]);
        assert!(q.is_empty() && !q.in_flight());
    }
}
