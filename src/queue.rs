//! The write queue: ordering, batching, fairness and watermarks, with no actors, no I/O
//! and no clock (the time is passed in).
//!
//! The [`Socket`](crate::Socket) actor owns one [`WriteQueue`] and drives it:
//! [`push`](WriteQueue::push) a write, [`poll_transmit`](WriteQueue::poll_transmit) the next
//! vectored write, tell it what the transport did with [`handle_sent`](WriteQueue::handle_sent)
//! or [`handle_would_block`](WriteQueue::handle_would_block), and it reports each finished
//! write exactly once, in FIFO order.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;
use tokio::time::Instant;

use crate::batch::IoBatch;
use crate::error::{TransportError, WriteError};
use crate::messages::socket::Written;

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
    /// Most bytes one flush turn hands the transport before the socket yields.
    pub max_bytes_per_turn: usize,
    /// Most segments in one vectored write (`IOV_MAX` on Linux is 1024).
    pub max_segments: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            high_watermark: 4 * 1024 * 1024,
            low_watermark: 1024 * 1024,
            max_bytes_per_turn: 256 * 1024,
            max_segments: 1024,
        }
    }
}

impl QueueConfig {
    /// The same limits with every value made usable: at least one byte and one segment
    /// per turn, and a low watermark no higher than the high one.
    pub fn sanitized(mut self) -> Self {
        self.max_bytes_per_turn = self.max_bytes_per_turn.max(1);
        self.max_segments = self.max_segments.clamp(1, 1024);
        self.low_watermark = self.low_watermark.min(self.high_watermark);
        self
    }
}

/// One vectored write to hand to the transport.
#[derive(Clone, Debug)]
pub struct Transmit {
    /// The segments: slices of the callers' own buffers (no payload copies).
    pub segments: Vec<Bytes>,
    /// Total bytes in `segments`.
    pub len: usize,
    /// How many queued writes this transmit carries bytes of.
    pub writes: usize,
}

/// A write refused by [`WriteQueue::push`], with its payload and token handed back.
#[derive(Debug)]
pub struct Refused<T> {
    /// The payload.
    pub batch: IoBatch,
    /// The caller's token.
    pub token: T,
    /// Bytes queued at the time.
    pub queued: usize,
}

struct Entry<T> {
    tag: Option<u64>,
    segments: IoBatch,
    len: usize,
    sent: usize,
    /// Index of the first segment not yet fully sent, and the offset into it.
    seg: usize,
    off: usize,
    enqueued: Instant,
    sendv_calls: u32,
    would_blocks: u32,
    max_writes_per_sendv: u32,
    token: T,
}

impl<T> Entry<T> {
    fn new(batch: IoBatch, tag: Option<u64>, token: T, now: Instant) -> Self {
        Entry {
            tag,
            len: batch.len(),
            segments: batch,
            sent: 0,
            seg: 0,
            off: 0,
            enqueued: now,
            sendv_calls: 0,
            would_blocks: 0,
            max_writes_per_sendv: 0,
            token,
        }
    }

    fn remaining(&self) -> usize {
        self.len - self.sent
    }

    /// Marks `n` more bytes (at most `remaining()`) as sent.
    fn advance(&mut self, mut n: usize) {
        self.sent += n;
        while n > 0 {
            let left_in_seg = self.segments.segments()[self.seg].len() - self.off;
            if n < left_in_seg {
                self.off += n;
                return;
            }
            n -= left_in_seg;
            self.seg += 1;
            self.off = 0;
        }
    }

    fn written(&self, now: Instant) -> Written {
        Written {
            len: self.len,
            sendv_calls: self.sendv_calls,
            would_blocks: self.would_blocks,
            max_writes_per_sendv: self.max_writes_per_sendv,
            latency: now.saturating_duration_since(self.enqueued),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    len: usize,
    writes: usize,
}

/// Walks the unsent bytes from the front: at most `budget` bytes (at least one) in at
/// most `max_segments` pieces, handing each piece to `piece`. Returns the bytes and the
/// number of writes covered.
fn gather<'a, T>(
    entries: &'a VecDeque<Entry<T>>,
    budget: usize,
    max_segments: usize,
    mut piece: impl FnMut(&'a Bytes, std::ops::Range<usize>),
) -> (usize, usize) {
    let budget = budget.max(1);
    let mut len = 0;
    let mut writes = 0;
    let mut pieces = 0;
    for entry in entries {
        writes += 1;
        if entry.remaining() == 0 {
            continue;
        }
        for (i, seg) in entry.segments.segments()[entry.seg..].iter().enumerate() {
            let start = if i == 0 { entry.off } else { 0 };
            let end = seg.len().min(start.saturating_add(budget - len));
            len += end - start;
            pieces += 1;
            piece(seg, start..end);
            if len == budget || pieces == max_segments {
                return (len, writes);
            }
        }
    }
    (len, writes)
}

/// The FIFO write queue of one socket. `T` is the caller's per-write token (the socket
/// keeps the reply channel there); it comes back with the write's one answer.
pub struct WriteQueue<T> {
    config: QueueConfig,
    entries: VecDeque<Entry<T>>,
    queued: usize,
    writable: bool,
    writability_change: Option<bool>,
    in_flight: Option<InFlight>,
}

impl<T> std::fmt::Debug for WriteQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteQueue")
            .field("writes", &self.entries.len())
            .field("queued", &self.queued)
            .field("writable", &self.writable)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl<T> WriteQueue<T> {
    /// An empty, writable queue.
    pub fn new(config: QueueConfig) -> Self {
        WriteQueue {
            config: config.sanitized(),
            entries: VecDeque::new(),
            queued: 0,
            writable: true,
            writability_change: None,
            in_flight: None,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Unsent bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Writes queued (including the one partly sent).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no write is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a new write would be accepted.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Whether a transmit is out with the transport, awaiting its answer.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether there are unsent bytes and no transmit in flight.
    pub fn has_transmit(&self) -> bool {
        self.in_flight.is_none() && self.queued > 0
    }

    /// The writability flip since the last call, if any (`false`: crossed the high
    /// watermark; `true`: drained to the low watermark).
    pub fn take_writability_change(&mut self) -> Option<bool> {
        self.writability_change.take()
    }

    /// Queues a write. Refused (payload and token back) while the queue is unwritable.
    ///
    /// A zero-length write is queued like any other and completes, in order, once every
    /// write ahead of it has; `completed` answers it at once when the queue is empty.
    pub fn push(
        &mut self,
        batch: IoBatch,
        tag: Option<u64>,
        token: T,
        now: Instant,
        completed: impl FnOnce(T, Result<Written, WriteError>),
    ) -> Result<(), Refused<T>> {
        self.push_inner(batch, tag, token, now, completed, false)
    }

    /// [`push`](Self::push), accepted even while unwritable: for writes whose payload is
    /// already held in memory elsewhere (writes that waited for room, when a graceful
    /// close moves them into the queue).
    pub fn push_forced(
        &mut self,
        batch: IoBatch,
        tag: Option<u64>,
        token: T,
        now: Instant,
        completed: impl FnOnce(T, Result<Written, WriteError>),
    ) {
        if let Err(refused) = self.push_inner(batch, tag, token, now, completed, true) {
            // Unreachable: a forced push is never refused. Keep the write anyway.
            self.queued += refused.batch.len();
            self.entries
                .push_back(Entry::new(refused.batch, tag, refused.token, now));
        }
    }

    fn push_inner(
        &mut self,
        batch: IoBatch,
        tag: Option<u64>,
        token: T,
        now: Instant,
        completed: impl FnOnce(T, Result<Written, WriteError>),
        force: bool,
    ) -> Result<(), Refused<T>> {
        if !self.writable && !force {
            return Err(Refused {
                batch,
                token,
                queued: self.queued,
            });
        }
        let len = batch.len();
        if len == 0 && self.entries.is_empty() {
            completed(
                token,
                Ok(Written {
                    len: 0,
                    sendv_calls: 0,
                    would_blocks: 0,
                    max_writes_per_sendv: 0,
                    latency: std::time::Duration::ZERO,
                }),
            );
            return Ok(());
        }
        self.entries.push_back(Entry::new(batch, tag, token, now));
        self.queued += len;
        if self.queued >= self.config.high_watermark {
            self.set_writable(false);
        }
        Ok(())
    }

    /// The next vectored write: at most `budget` bytes (at least one) and
    /// `max_segments` segments, from the front of the queue. `None` while a transmit is in
    /// flight or nothing is queued. Each transmit must be answered with `handle_sent`,
    /// `handle_would_block` or `fail_all` before the next.
    pub fn poll_transmit(&mut self, budget: usize) -> Option<Transmit> {
        if !self.has_transmit() {
            return None;
        }
        let mut segments = Vec::new();
        let (len, writes) = gather(
            &self.entries,
            budget,
            self.config.max_segments,
            |seg, range| segments.push(seg.slice(range)),
        );
        self.in_flight = Some(InFlight { len, writes });
        Some(Transmit {
            segments,
            len,
            writes,
        })
    }

    /// Like [`poll_transmit`](Self::poll_transmit), but lends the bytes as `IoSlice`s
    /// borrowed from the queue, for a transport called in place (the system transport's
    /// `writev`): not even a reference count changes hands. Returns the transmit's length
    /// and write count; drop `out` before answering with `handle_sent` and the others.
    pub fn poll_transmit_slices<'a>(
        &'a mut self,
        budget: usize,
        out: &mut Vec<IoSlice<'a>>,
    ) -> Option<(usize, usize)> {
        if !self.has_transmit() {
            return None;
        }
        let (len, writes) = gather(
            &self.entries,
            budget,
            self.config.max_segments,
            |seg, range| out.push(IoSlice::new(&seg[range])),
        );
        self.in_flight = Some(InFlight { len, writes });
        Some((len, writes))
    }

    /// The transport accepted `n` bytes of the transmit in flight. Finished writes are
    /// reported to `completed`, in order. An answer that breaks the transport contract
    /// (more than offered, or zero of a non-empty transmit) is an error; the caller should
    /// then `fail_all`.
    pub fn handle_sent(
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
        for entry in self.entries.iter_mut().take(flight.writes) {
            entry.sendv_calls += 1;
            entry.max_writes_per_sendv = entry.max_writes_per_sendv.max(flight.writes as u32);
        }
        let mut left = n;
        self.queued -= n;
        for entry in self.entries.iter_mut() {
            if left == 0 {
                break;
            }
            let take = left.min(entry.remaining());
            entry.advance(take);
            left -= take;
        }
        self.pop_finished(now, completed);
        if !self.writable && self.queued <= self.config.low_watermark {
            self.set_writable(true);
        }
        Ok(())
    }

    /// The transport would block: nothing of the transmit in flight was taken. The same
    /// bytes are offered again by the next `poll_transmit`.
    pub fn handle_would_block(&mut self) {
        if let Some(flight) = self.in_flight.take() {
            for entry in self.entries.iter_mut().take(flight.writes) {
                entry.would_blocks += 1;
            }
        }
    }

    /// The transport failed the transmit in flight: how far it got is what earlier
    /// answers said. Clears the in-flight mark so every write can be failed.
    pub fn handle_failed(&mut self) {
        self.in_flight = None;
    }

    /// Removes a queued write that has not started (no byte of it sent or in flight),
    /// answers it with [`WriteError::Cancelled`] through `completed`, and hands back its
    /// payload. `None` if no such write has this tag. Zero-length writes that the removal
    /// leaves at the front are completed next, in order.
    pub fn cancel(
        &mut self,
        tag: u64,
        now: Instant,
        mut completed: impl FnMut(T, Result<Written, WriteError>),
    ) -> Option<IoBatch> {
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
        completed(entry.token, Err(WriteError::Cancelled));
        if self.in_flight.is_none() {
            self.pop_finished(now, completed);
        }
        if !self.writable && self.queued <= self.config.low_watermark {
            self.set_writable(true);
        }
        Some(entry.segments)
    }

    /// Ends every write behind the transmit in flight (every write, when none is in
    /// flight) with the error `error(bytes_sent, len)` makes, front first. The writes in
    /// flight stay until the transport's answer says how far they got.
    pub fn fail_behind_in_flight(
        &mut self,
        error: impl Fn(usize, usize) -> WriteError,
        mut completed: impl FnMut(T, Result<Written, WriteError>),
    ) {
        let keep = self
            .in_flight
            .map_or(0, |f| f.writes)
            .min(self.entries.len());
        for entry in self.entries.drain(keep..) {
            self.queued -= entry.remaining();
            completed(entry.token, Err(error(entry.sent, entry.len)));
        }
    }

    /// Ends every queued write with the error `error(bytes_sent, len)` makes, front first.
    pub fn fail_all(
        &mut self,
        error: impl Fn(usize, usize) -> WriteError,
        mut completed: impl FnMut(T, Result<Written, WriteError>),
    ) {
        self.in_flight = None;
        self.queued = 0;
        for entry in self.entries.drain(..) {
            completed(entry.token, Err(error(entry.sent, entry.len)));
        }
        if !self.writable {
            self.set_writable(true);
        }
    }

    /// Completes the writes at the front that have nothing left to send.
    fn pop_finished(
        &mut self,
        now: Instant,
        mut completed: impl FnMut(T, Result<Written, WriteError>),
    ) {
        while self.entries.front().is_some_and(|e| e.remaining() == 0) {
            if let Some(done) = self.entries.pop_front() {
                let report = done.written(now);
                completed(done.token, Ok(report));
            }
        }
    }

    fn set_writable(&mut self, writable: bool) {
        if self.writable != writable {
            self.writable = writable;
            self.writability_change = match self.writability_change {
                // Two flips since the last look cancel out.
                Some(prev) if prev != writable => None,
                _ => Some(writable),
            };
        }
    }
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
            max_segments: segs,
        }
    }

    fn push(q: &mut WriteQueue<u32>, id: u32, data: &[&'static [u8]], out: &mut Answers) {
        let batch: IoBatch = data.iter().map(|s| Bytes::from_static(s)).collect();
        q.push(batch, Some(id as u64), id, Instant::now(), |t, r| {
            out.push((t, r))
        })
        .expect("writable");
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
            Instant::now(),
            |_, _| {},
        )
        .expect("writable");
        let t = q.poll_transmit(usize::MAX).expect("data");
        assert_eq!(t.segments[0].as_ptr(), payload.as_ptr());
    }

    #[test]
    fn watermarks_flip_once_per_crossing_and_refuse_while_unwritable() {
        let mut q = WriteQueue::new(config(10, 4, 100, 64));
        let mut out = Vec::new();
        push(&mut q, 1, &[b"123456"], &mut out);
        assert_eq!(q.take_writability_change(), None);
        push(&mut q, 2, &[b"7890ab"], &mut out);
        assert_eq!(q.take_writability_change(), Some(false));
        let refused = q
            .push(
                Bytes::from_static(b"x").into(),
                None,
                3,
                Instant::now(),
                |_, _| {},
            )
            .expect_err("unwritable");
        assert_eq!(refused.batch.to_vec(), b"x");
        assert_eq!(refused.token, 3);
        q.poll_transmit(100).expect("data");
        q.handle_sent(6, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        assert_eq!(q.take_writability_change(), None, "6 queued > low 4");
        q.poll_transmit(100).expect("data");
        q.handle_sent(3, Instant::now(), |t, r| out.push((t, r)))
            .expect("ok");
        assert_eq!(q.take_writability_change(), Some(true));
        assert_eq!(q.take_writability_change(), None);
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
        assert_eq!(batch.to_vec(), b"cccc".to_vec());
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
        q.fail_all(
            |bytes_sent, len| WriteError::Closed { bytes_sent, len },
            |t, r| out.push((t, r)),
        );
        let sent: Vec<(u32, usize)> = out
            .iter()
            .map(|(t, r)| (*t, r.as_ref().expect_err("failed").bytes_sent()))
            .collect();
        assert_eq!(sent, vec![(1, 3), (2, 0)]);
        assert!(q.is_empty() && !q.in_flight());
    }
}
