//! Byte layers: synchronous transforms between a stream socket's plaintext and the bytes
//! its transport carries (TLS, compression, a user's own), run in place over the socket's
//! buffers, as ntex-io runs its filter layers. No I/O here: a [`LayerStack`] takes the
//! plaintext the core transmits and keeps what the layers made of it in one bounded
//! outbox for the driver to write; it takes the bytes the driver read and gives back
//! plaintext, a bounded amount per call.
//!
//! # Calling order (a driver, for one socket)
//!
//! - **Writing**: [`room`](LayerStack::room) says how much plaintext may be taken now (0:
//!   the outbox is full, the driver answers the core would-block);
//!   [`encode`](LayerStack::encode) takes that much; [`outbox`](LayerStack::outbox) is
//!   what to write, and [`sent`](LayerStack::sent) drops what the transport took.
//! - **Reading**: the driver appends what it read to [`inbox`](LayerStack::inbox), then
//!   calls [`decode`](LayerStack::decode) until it says [`Decoded::NeedInput`]; at the
//!   transport's end of stream, [`end_input`](LayerStack::end_input), then `decode`
//!   until it says [`Decoded::End`] (every layer ended cleanly) or fails (one says the
//!   stream was cut). A layer may make bytes of its own while decoding (a TLS key
//!   update, an alert): they land in the outbox, for the driver to write.
//! - **Closing**: [`close`](LayerStack::close) puts the layers' last bytes (TLS
//!   close_notify) in the outbox; the driver writes them before it shuts the transport
//!   down.

use std::fmt;
use std::io::{self, IoSlice};

use bytes::{Buf, BytesMut};

thread_local! {
    /// An empty read buffer a layered socket of this thread let go of when it found
    /// nothing more to read, for the next one to read into.
    static SPARE_INBOX: std::cell::RefCell<Option<BytesMut>> = const { std::cell::RefCell::new(None) };
}

/// A synchronous byte transform over a stream socket: what [`Tls`](crate::filters::Tls)
/// and [`Compress`](crate::filters::Compress) are, and what a user's byte filter
/// implements (then wraps a table with [`SocketFunctions::layer`](crate::SocketFunctions::layer)).
///
/// The socket calls it on its own thread, in place: no actor, no message, no copy of the
/// plaintext beyond the one the transform makes. Errors are `io::Error`s (their kind
/// [`InvalidData`](io::ErrorKind::InvalidData) for a peer's bad input), which close the
/// socket as its transport error.
///
/// ```
/// use std::io::{self, IoSlice};
/// use bytes::BytesMut;
/// use sockactor::filters::{Decoded, Layer};
///
/// /// Flips every bit both ways: a toy cipher.
/// #[derive(Debug)]
/// struct Invert;
///
/// impl Layer for Invert {
///     fn name(&self) -> &'static str {
///         "invert"
///     }
///     fn worst_case(&self, n: usize) -> usize {
///         n
///     }
///     fn encode(&mut self, input: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()> {
///         for slice in input {
///             out.extend(slice.iter().map(|b| !b));
///         }
///         Ok(())
///     }
///     fn decode(&mut self, input: &mut BytesMut, out: &mut BytesMut, max: usize) -> io::Result<Decoded> {
///         let n = input.len().min(max);
///         out.extend(input.split_to(n).iter().map(|b| !b));
///         Ok(if input.is_empty() { Decoded::NeedInput } else { Decoded::More })
///     }
/// }
/// ```
pub trait Layer: Send + fmt::Debug + 'static {
    /// A short name, for tracing.
    fn name(&self) -> &'static str;

    /// The most bytes `encode` can make of `n` input bytes given in one call: the outbox
    /// takes no more plaintext than fits by this bound.
    fn worst_case(&self, n: usize) -> usize;

    /// Encodes all of `input`, appending to `out`; what one call was given must be
    /// decodable by the peer without waiting for more (a compressor flushes).
    fn encode(&mut self, input: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()>;

    /// [`encode`](Self::encode) for the layer nearest the wire, while the socket's
    /// outbox is empty and its transport is written in place: the layer may write what
    /// it makes straight to `direct`, a non-blocking writer on the transport, saving the
    /// copy into `out`. `direct` answers [`WouldBlock`](io::ErrorKind::WouldBlock) when
    /// it takes no more (or the transport failed: the socket learns that from it); what
    /// it did not take must be appended to `out`, in order. By default everything is
    /// appended to `out`.
    fn encode_direct(
        &mut self,
        input: &[IoSlice<'_>],
        direct: &mut dyn io::Write,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let _ = direct;
        self.encode(input, out)
    }

    /// Decodes from the front of `input` (removing what it took), appending at most `max`
    /// bytes to `out`.
    fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        max: usize,
    ) -> io::Result<Decoded>;

    /// Bytes the layer wants sent of its own accord, after a decode (an answer to what
    /// came in), appended to `out`. Nothing by default.
    fn poll_output(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let _ = out;
        Ok(())
    }

    /// The socket closes gracefully: the layer's last bytes (TLS close_notify), appended
    /// to `out`. Nothing by default.
    fn close(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let _ = out;
        Ok(())
    }

    /// The bytes below ended (the transport's EOF, or the end of the layer below): `Ok`
    /// for a clean end, an error for a stream cut short (TLS without close_notify).
    /// `Ok` by default.
    fn eof(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a [`Layer::decode`] call left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// More plaintext may come from what it holds, without more input.
    More,
    /// It needs more input to make more plaintext.
    NeedInput,
    /// The peer ended the stream inside the layer (TLS close_notify): nothing comes after.
    End,
}

/// `Decoded::More` answers in a row, with nothing taken or made, after which a layer is
/// taken to be stuck (a typed error, not a spinning thread).
const MAX_IDLE_MORES: u32 = 64;

/// From this many encoded bytes on, an encode into an empty outbox hands its buffer over
/// instead of copying it (below, the copy costs less than the hand-over's bookkeeping).
const SWAP_AT: usize = 8 * 1024;

/// The layers of one socket, from the plaintext's side to the wire's, with the one
/// bounded outbox they share: see the [module docs](self).
#[derive(Debug)]
pub(crate) struct LayerStack {
    /// Plaintext side first.
    layers: Vec<Box<dyn Layer>>,
    /// Bytes for the transport, oldest first.
    outbox: BytesMut,
    /// The bound on the outbox and the bytes out with a transport together.
    max_buffered: usize,
    /// Bytes taken from the outbox and out with a transport (by message).
    out: usize,
    /// The most plaintext one `decode` call returns.
    max_output: usize,
    /// What the transport read, not yet decoded.
    inbox: BytesMut,
    /// Between layers: `between[i]` is what layer `i + 1` decoded for layer `i`.
    between: Vec<BytesMut>,
    /// Between layers on the way out.
    scratch: Vec<Vec<u8>>,
    /// The layer at `ended` (or the transport, at `layers.len()`) ended its stream.
    ended: Option<usize>,
    /// Decoding failed: the error not yet returned (after the plaintext before it), or
    /// `None` once it was.
    failed: Option<Option<io::Error>>,
    /// `Decoded::More` answers in a row that took and made nothing.
    idle_mores: u32,
}

impl LayerStack {
    /// Layers from the plaintext's side to the wire's; an outbox of at most
    /// `max_buffered` bytes; at most `max_output` plaintext bytes per `decode`.
    pub(crate) fn new(layers: Vec<Box<dyn Layer>>, max_buffered: usize, max_output: usize) -> Self {
        let n = layers.len();
        LayerStack {
            layers,
            outbox: BytesMut::new(),
            max_buffered: max_buffered.max(1),
            out: 0,
            max_output: max_output.max(1),
            inbox: BytesMut::new(),
            between: (1..n).map(|_| BytesMut::new()).collect(),
            scratch: (0..n).map(|_| Vec::new()).collect(),
            ended: None,
            failed: None,
            idle_mores: 0,
        }
    }

    /// The layers' names, plaintext side first.
    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.layers.iter().map(|l| l.name()).collect()
    }

    /// The most bytes `n` plaintext bytes can become through every layer.
    fn worst_case(&self, n: usize) -> usize {
        self.layers
            .iter()
            .fold(n, |n, layer| layer.worst_case(n).max(n))
    }

    /// How much plaintext may be encoded now, at most `limit`: what fits in the outbox's
    /// room by the layers' worst case (0 when it is full).
    pub(crate) fn room(&self, limit: usize) -> usize {
        let room = self
            .max_buffered
            .saturating_sub(self.outbox.len() + self.out);
        if room == 0 || limit == 0 {
            return 0;
        }
        // No layer makes fewer bytes than it is given (the stack's bound is at least
        // `n`): more than `room` cannot fit, and a layer's bound is never asked about a
        // size past the outbox (an uncapped turn asks with `usize::MAX`).
        let limit = limit.min(room);
        if self.worst_case(limit) <= room {
            return limit;
        }
        // The largest n with worst_case(n) <= room (worst_case is monotone).
        let (mut lo, mut hi) = (0, limit);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.worst_case(mid) <= room {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        if lo == 0 && self.outbox.is_empty() && self.out == 0 {
            // A layer whose overhead alone passes the bound could never be written to:
            // an empty outbox takes a turn whatever the worst case (it may then hold
            // more than its bound, once).
            return limit;
        }
        lo
    }

    /// Whether reading holds: bytes the layers made of their own accord (answers to
    /// what they decoded) took the outbox to twice its bound, which the plaintext
    /// written never does. It holds until the transport takes enough of them.
    pub(crate) fn reading_held(&self) -> bool {
        self.outbox.len() + self.out >= self.max_buffered.saturating_mul(2)
    }

    /// Encodes `input` (all of it: take at most [`room`](Self::room)) through every layer
    /// into the outbox.
    pub(crate) fn encode(&mut self, input: &[IoSlice<'_>]) -> io::Result<()> {
        self.encode_through(input, None)
    }

    /// [`encode`](Self::encode), letting the layer nearest the wire write straight to
    /// `direct` (see [`Layer::encode_direct`]) when the outbox is empty: what `direct`
    /// took is on the transport, the rest in the outbox after it. With bytes in the
    /// outbox, everything goes behind them.
    pub(crate) fn encode_direct(
        &mut self,
        input: &[IoSlice<'_>],
        direct: &mut dyn io::Write,
    ) -> io::Result<()> {
        let direct = (self.outbox.is_empty() && self.out == 0).then_some(direct);
        self.encode_through(input, direct)
    }

    fn encode_through(
        &mut self,
        input: &[IoSlice<'_>],
        mut direct: Option<&mut dyn io::Write>,
    ) -> io::Result<()> {
        let Some(last) = self.layers.len().checked_sub(1) else {
            for slice in input {
                self.outbox.extend_from_slice(slice);
            }
            return Ok(());
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = (|| {
            for (i, layer) in self.layers.iter_mut().enumerate() {
                let (before, rest) = scratch.split_at_mut(i);
                let out = &mut rest[0];
                out.clear();
                let below = [IoSlice::new(before.last().map_or(&[][..], Vec::as_slice))];
                let input = if i == 0 { input } else { &below[..] };
                match direct.as_deref_mut().filter(|_| i == last) {
                    Some(direct) => layer.encode_direct(input, direct, out)?,
                    None => layer.encode(input, out)?,
                }
            }
            Ok(())
        })();
        if result.is_ok() {
            if self.outbox.is_empty() && scratch[last].len() >= SWAP_AT {
                // Nothing waits to be written: the encoded bytes become the outbox as
                // they are, and the outbox's buffer the next scratch (no copy of them).
                let spare = Vec::from(std::mem::take(&mut self.outbox));
                let encoded = std::mem::replace(&mut scratch[last], spare);
                scratch[last].clear();
                self.outbox = BytesMut::from(bytes::Bytes::from(encoded));
            } else {
                self.outbox.extend_from_slice(&scratch[last]);
            }
        }
        for s in &mut scratch {
            // Keep a sensible buffer, not the largest one ever used.
            if s.capacity() > 256 * 1024 {
                *s = Vec::new();
            }
        }
        self.scratch = scratch;
        result
    }

    /// Bytes for the transport, oldest first.
    pub(crate) fn outbox(&self) -> &[u8] {
        &self.outbox
    }

    /// The front `n` bytes of the outbox, taken out to hand to a transport by message
    /// (they count against the bound until [`returned`](Self::returned)).
    pub(crate) fn take_outbox(&mut self, n: usize) -> bytes::Bytes {
        let taken = self.outbox.split_to(n.min(self.outbox.len())).freeze();
        self.out += taken.len();
        taken
    }

    /// The transport took the outbox's first `n` bytes.
    pub(crate) fn sent(&mut self, n: usize) {
        self.outbox.advance(n.min(self.outbox.len()));
        if self.outbox.is_empty() && self.outbox.capacity() > 4 * self.max_buffered.max(65536) {
            self.outbox = BytesMut::new();
        }
    }

    /// The transport answered for bytes from [`take_outbox`](Self::take_outbox): it took
    /// the first `accepted`; the rest go back to the front of the outbox.
    pub(crate) fn returned(&mut self, offered: &[u8], accepted: usize) {
        self.out -= offered.len().min(self.out);
        let rest = &offered[accepted.min(offered.len())..];
        if rest.is_empty() {
            return;
        }
        let mut joined = BytesMut::with_capacity(rest.len() + self.outbox.len());
        joined.extend_from_slice(rest);
        joined.extend_from_slice(&self.outbox);
        self.outbox = joined;
    }

    /// Whether the outbox is empty.
    pub(crate) fn drained(&self) -> bool {
        self.outbox.is_empty()
    }

    /// Lets go of the read buffer if it holds nothing (an idle socket keeps none).
    pub(crate) fn release_inbox(&mut self) {
        if self.inbox.is_empty() && self.inbox.capacity() > 0 {
            let inbox = std::mem::take(&mut self.inbox);
            // The thread's one spare: the next socket of the thread to read takes it,
            // instead of the allocator handing out (and trimming back) 64 KiB each time.
            SPARE_INBOX.with(|spare| {
                let mut spare = spare.borrow_mut();
                if spare
                    .as_ref()
                    .is_none_or(|s| s.capacity() < inbox.capacity())
                {
                    *spare = Some(inbox);
                }
            });
        }
    }

    /// Where the transport's bytes go (append, then [`decode`](Self::decode)): at least
    /// `room` bytes of spare capacity.
    pub(crate) fn inbox(&mut self, room: usize) -> &mut BytesMut {
        if self.inbox.capacity() == 0 {
            if let Some(spare) = SPARE_INBOX.with(|spare| spare.borrow_mut().take()) {
                self.inbox = spare;
            }
        }
        self.inbox.reserve(room);
        &mut self.inbox
    }

    /// Decodes at most `max` plaintext bytes (and the stack's own bound) into `out`,
    /// pulling through every layer. Bytes a layer made of its own accord go to the
    /// outbox. After an error, the plaintext decoded before it comes first, then the
    /// error again on every call.
    pub(crate) fn decode(&mut self, out: &mut BytesMut, max: usize) -> io::Result<Decoded> {
        if let Some(failed) = &mut self.failed {
            // The error itself once (its inner error intact), a copy after.
            return Err(failed.take().unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "the layers failed before")
            }));
        }
        let max = max.min(self.max_output).max(1);
        let before = out.len();
        let result = self.pull(0, out, max).and_then(|decoded| {
            // Bytes the layers answer with (a key update, an alert) fail like a decode.
            self.poll_output()?;
            Ok(decoded)
        });
        match result {
            Ok(decoded) => Ok(decoded),
            Err(e) if out.len() > before => {
                // The plaintext before the error goes first.
                self.failed = Some(Some(e));
                Ok(Decoded::More)
            }
            Err(e) => {
                self.failed = Some(None);
                Err(e)
            }
        }
    }

    /// Layer `i` decodes into `out`, its input refilled from layer `i + 1` as needed.
    fn pull(&mut self, i: usize, out: &mut BytesMut, max: usize) -> io::Result<Decoded> {
        let n = self.layers.len();
        if n == 0 {
            let take = self.inbox.len().min(max);
            out.extend_from_slice(&self.inbox.split_to(take));
            return Ok(if self.ended.is_some() && self.inbox.is_empty() {
                Decoded::End
            } else if self.inbox.is_empty() {
                Decoded::NeedInput
            } else {
                Decoded::More
            });
        }
        if self.ended.is_some_and(|e| e <= i) {
            return Ok(Decoded::End);
        }
        loop {
            let input = if i + 1 == n {
                &mut self.inbox
            } else {
                &mut self.between[i]
            };
            let (before, held) = (out.len(), input.len());
            let decoded = self.layers[i].decode(input, out, max)?;
            let made = out.len() > before;
            if made || input.len() != held {
                self.idle_mores = 0;
            }
            match decoded {
                Decoded::End => {
                    self.ended = Some(i);
                    return Ok(if made { Decoded::More } else { Decoded::End });
                }
                Decoded::More if !made && input.len() == held => {
                    // `More` promises output without more input; a layer that keeps
                    // saying it and making nothing would spin the socket's thread.
                    self.idle_mores += 1;
                    if self.idle_mores >= MAX_IDLE_MORES {
                        let name = self.layers[i].name();
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("layer {name} answered More {MAX_IDLE_MORES} times without progress"),
                        ));
                    }
                    return Ok(Decoded::More);
                }
                Decoded::More => return Ok(Decoded::More),
                Decoded::NeedInput if made => return Ok(Decoded::More),
                Decoded::NeedInput => {}
            }
            // Layer i needs more: ask the layer below for some.
            if i + 1 == n {
                if self.ended == Some(n) {
                    // The transport ended and the wire-side layer has decoded all it
                    // held: it hears the end, and the layers above hear it from it.
                    self.layers[i].eof()?;
                    self.ended = Some(i);
                    return Ok(Decoded::End);
                }
                return Ok(Decoded::NeedInput);
            }
            let mut below = std::mem::take(&mut self.between[i]);
            let held = below.len();
            // Between layers, the stack's bound; the caller's applies to the top only.
            let pulled = self.pull(i + 1, &mut below, self.max_output);
            let grew = below.len() > held;
            self.between[i] = below;
            match pulled? {
                Decoded::NeedInput if !grew => return Ok(Decoded::NeedInput),
                Decoded::End if !grew => {
                    // The layer below ended: so does this one's input.
                    self.layers[i].eof()?;
                    self.ended = Some(i);
                    return Ok(Decoded::End);
                }
                _ => {}
            }
        }
    }

    /// The transport's stream ended: from the next [`decode`](Self::decode) on, each
    /// layer, wire side first, decodes what it holds and then hears the end
    /// ([`Layer::eof`]); `decode` says [`Decoded::End`] once every layer ended cleanly,
    /// or fails with the error of one that says the stream was cut, after the plaintext
    /// before it. `false` when the end was known already.
    pub(crate) fn end_input(&mut self) -> bool {
        if self.ended.is_some() {
            return false;
        }
        self.ended = Some(self.layers.len());
        true
    }

    /// Moves what the layers want sent of their own accord into the outbox, wire side
    /// last (a layer's own bytes go through the layers below it).
    pub(crate) fn poll_output(&mut self) -> io::Result<()> {
        self.each_layers_own(|layer, own| layer.poll_output(own))
    }

    /// The layers' last bytes, into the outbox (graceful close).
    pub(crate) fn close(&mut self) -> io::Result<()> {
        self.each_layers_own(|layer, last| layer.close(last))
    }

    /// Asks each layer, plaintext side first, for bytes of its own (`own` fills the
    /// buffer it is given), and encodes them through the layers below it into the
    /// outbox.
    fn each_layers_own(
        &mut self,
        own: impl Fn(&mut dyn Layer, &mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        for i in 0..self.layers.len() {
            let mut bytes = Vec::new();
            own(self.layers[i].as_mut(), &mut bytes)?;
            if !bytes.is_empty() {
                self.encode_from(i + 1, bytes)?;
            }
        }
        Ok(())
    }

    /// Encodes `bytes` through the layers from `first` down into the outbox.
    fn encode_from(&mut self, first: usize, mut bytes: Vec<u8>) -> io::Result<()> {
        for layer in &mut self.layers[first..] {
            let mut out = Vec::new();
            layer.encode(&[IoSlice::new(&bytes)], &mut out)?;
            bytes = out;
        }
        self.outbox.extend_from_slice(&bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testing::Takes;

    /// Adds one to every byte; decodes at most 3 bytes a call (to exercise `More`).
    #[derive(Debug)]
    struct AddOne;

    impl Layer for AddOne {
        fn name(&self) -> &'static str {
            "add-one"
        }
        fn worst_case(&self, n: usize) -> usize {
            n
        }
        fn encode(&mut self, input: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()> {
            for s in input {
                out.extend(s.iter().map(|b| b.wrapping_add(1)));
            }
            Ok(())
        }
        fn decode(
            &mut self,
            input: &mut BytesMut,
            out: &mut BytesMut,
            max: usize,
        ) -> io::Result<Decoded> {
            let n = input.len().min(max).min(3);
            out.extend(input.split_to(n).iter().map(|b| b.wrapping_sub(1)));
            Ok(if input.is_empty() {
                Decoded::NeedInput
            } else {
                Decoded::More
            })
        }
    }

    /// Frames each encode as a length byte and the bytes (at most 255 a frame); a zero
    /// length frame is the end.
    #[derive(Debug, Default)]
    struct Frames;

    impl Layer for Frames {
        fn name(&self) -> &'static str {
            "frames"
        }
        fn worst_case(&self, n: usize) -> usize {
            n + n.div_ceil(255)
        }
        fn encode(&mut self, input: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()> {
            let all: Vec<u8> = input.iter().flat_map(|s| s.iter().copied()).collect();
            for chunk in all.chunks(255) {
                out.push(chunk.len() as u8);
                out.extend_from_slice(chunk);
            }
            Ok(())
        }
        fn decode(
            &mut self,
            input: &mut BytesMut,
            out: &mut BytesMut,
            max: usize,
        ) -> io::Result<Decoded> {
            let Some(&len) = input.first() else {
                return Ok(Decoded::NeedInput);
            };
            if len == 0 {
                input.advance(1);
                return Ok(Decoded::End);
            }
            let len = usize::from(len);
            if input.len() < 1 + len || len > max {
                return Ok(Decoded::NeedInput);
            }
            input.advance(1);
            out.extend_from_slice(&input.split_to(len));
            Ok(Decoded::More)
        }
        fn close(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
            out.push(0);
            Ok(())
        }
        fn eof(&mut self) -> io::Result<()> {
            Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no end frame"))
        }
    }

    fn stack(max_buffered: usize) -> LayerStack {
        LayerStack::new(vec![Box::new(AddOne), Box::new(Frames)], max_buffered, 1024)
    }

    fn decode_all(s: &mut LayerStack) -> (Vec<u8>, Decoded) {
        let mut out = BytesMut::new();
        loop {
            match s.decode(&mut out, 1024).expect("decodes") {
                Decoded::More => continue,
                other => return (out.to_vec(), other),
            }
        }
    }

    /// Frames (as [`Frames`]) and writes what it can straight to the transport.
    #[derive(Debug, Default)]
    struct DirectFrames(Frames);

    impl Layer for DirectFrames {
        fn name(&self) -> &'static str {
            "direct-frames"
        }
        fn worst_case(&self, n: usize) -> usize {
            self.0.worst_case(n)
        }
        fn encode(&mut self, input: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()> {
            self.0.encode(input, out)
        }
        fn encode_direct(
            &mut self,
            input: &[IoSlice<'_>],
            direct: &mut dyn io::Write,
            out: &mut Vec<u8>,
        ) -> io::Result<()> {
            let mut framed = Vec::new();
            self.0.encode(input, &mut framed)?;
            let took = direct.write(&framed).unwrap_or(0);
            out.extend_from_slice(&framed[took..]);
            Ok(())
        }
        fn decode(
            &mut self,
            input: &mut BytesMut,
            out: &mut BytesMut,
            max: usize,
        ) -> io::Result<Decoded> {
            self.0.decode(input, out, max)
        }
    }

    #[test]
    fn the_wire_side_layer_writes_in_place_only_when_nothing_waits_before_it() {
        let data: Vec<u8> = (0..600u32).map(|i| (i % 251) as u8).collect();
        let input = [IoSlice::new(&data)];
        let mut framed = Vec::new();
        Frames.encode(&input, &mut framed).expect("frames");

        // A layer that does not write in place: everything into the outbox.
        let mut stack = LayerStack::new(vec![Box::new(AddOne), Box::new(Frames)], 1 << 20, 1 << 20);
        let mut direct = Takes::new(usize::MAX);
        stack.encode_direct(&input, &mut direct).expect("encode");
        assert!(direct.took.is_empty());
        assert_eq!(stack.outbox().len(), framed.len());

        // The wire-side layer writes what the transport takes; the rest follows in the
        // outbox; the layer before it still runs first.
        let mut stack = LayerStack::new(
            vec![Box::new(AddOne), Box::new(DirectFrames::default())],
            1 << 20,
            1 << 20,
        );
        let mut direct = Takes::new(100);
        stack.encode_direct(&input, &mut direct).expect("encode");
        let mut plus_one = Vec::new();
        AddOne.encode(&input, &mut plus_one).expect("add one");
        let mut expected = Vec::new();
        Frames
            .encode(&[IoSlice::new(&plus_one)], &mut expected)
            .expect("frames");
        assert_eq!(direct.took, expected[..100], "the transport took its room");
        assert_eq!(stack.outbox(), &expected[100..], "the rest, in order");

        // Bytes already wait in the outbox: nothing goes in place, all goes behind them.
        let mut direct = Takes::new(usize::MAX);
        stack.encode_direct(&input, &mut direct).expect("encode");
        assert!(direct.took.is_empty(), "nothing overtakes the outbox");
        assert_eq!(stack.outbox().len(), 2 * expected.len() - 100);
    }

    /// What the transport does with the outbox or a write in place, in a property test.
    #[derive(Clone, Debug)]
    enum Step {
        /// Writes `len` bytes, letting the wire-side layer write in place to a transport
        /// that takes `room` bytes, then would block (or fails, if `fail`).
        Direct { len: usize, room: usize, fail: bool },
        /// Writes `len` bytes into the outbox only (a transport reached by message).
        Encode { len: usize },
        /// The transport takes the outbox's first `n` bytes in place.
        Sent { n: usize },
        /// The outbox's first `n` bytes go by message; the transport takes `accepted`
        /// of them, the rest comes back.
        ByMessage { n: usize, accepted: usize },
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let len = 0usize..3 * SWAP_AT;
        prop_oneof![
            (
                len.clone(),
                0usize..4 * SWAP_AT,
                proptest::bool::weighted(0.1)
            )
                .prop_map(|(len, room, fail)| Step::Direct { len, room, fail }),
            len.prop_map(|len| Step::Encode { len }),
            (0usize..4 * SWAP_AT).prop_map(|n| Step::Sent { n }),
            (0usize..4 * SWAP_AT, 0usize..4 * SWAP_AT)
                .prop_map(|(n, accepted)| Step::ByMessage { n, accepted }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 256,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// Writes in place and into the outbox, the outbox drained in place or by message
        /// (in part, the rest returned), in any order: the wire carries every write's
        /// bytes once, in order, and nothing is written in place while the outbox holds
        /// bytes or has bytes out with a transport.
        #[test]
        fn writes_in_place_and_through_the_outbox_reach_the_wire_once_in_order(
            steps in proptest::collection::vec(step(), 1..24),
        ) {
            let layers: Vec<Box<dyn Layer>> =
                vec![Box::new(AddOne), Box::new(DirectFrames::default())];
            let mut ours = LayerStack::new(layers, 1 << 30, 1 << 20);
            let (mut wire, mut plaintext) = (Vec::new(), Vec::new());
            let mut next = 0u8;
            let mut write = |len: usize| {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        next = next.wrapping_add(7);
                        next
                    })
                    .collect();
                plaintext.extend_from_slice(&data);
                data
            };
            for step in steps {
                match step {
                    Step::Direct { len, room, fail } => {
                        let data = write(len);
                        let waiting = !ours.outbox().is_empty() || ours.out > 0;
                        let mut direct = Takes { fail, ..Takes::new(room) };
                        ours.encode_direct(&[IoSlice::new(&data)], &mut direct)
                            .expect("encodes");
                        if waiting {
                            proptest::prop_assert!(direct.took.is_empty(), "overtook the outbox");
                        }
                        wire.extend_from_slice(&direct.took);
                    }
                    Step::Encode { len } => {
                        let data = write(len);
                        ours.encode(&[IoSlice::new(&data)]).expect("encodes");
                    }
                    Step::Sent { n } => {
                        let n = n.min(ours.outbox().len());
                        wire.extend_from_slice(&ours.outbox()[..n]);
                        ours.sent(n);
                    }
                    Step::ByMessage { n, accepted } => {
                        let taken = ours.take_outbox(n);
                        let accepted = accepted.min(taken.len());
                        wire.extend_from_slice(&taken[..accepted]);
                        ours.returned(&taken, accepted);
                    }
                }
            }
            wire.extend_from_slice(ours.outbox());
            let mut peer = stack(1 << 30);
            peer.inbox(wire.len()).extend_from_slice(&wire);
            let (got, _) = decode_all(&mut peer);
            proptest::prop_assert_eq!(got.len(), plaintext.len());
            proptest::prop_assert!(got == plaintext, "the peer's plaintext differs");
        }
    }

    #[test]
    fn bytes_go_through_every_layer_and_back() {
        let mut a = stack(1 << 20);
        a.encode(&[IoSlice::new(b"hello "), IoSlice::new(b"world")])
            .expect("encodes");
        let wire = a.take_outbox(usize::MAX);
        assert_eq!(wire[0], 11, "the frame layer is on the wire's side");
        let mut b = stack(1 << 20);
        // In pieces, as a transport might read them.
        for piece in wire.chunks(4) {
            b.inbox(piece.len()).extend_from_slice(piece);
        }
        let (plain, last) = decode_all(&mut b);
        assert_eq!(plain, b"hello world");
        assert_eq!(last, Decoded::NeedInput);
    }

    #[test]
    fn large_encodes_handed_to_the_outbox_keep_every_byte_in_order() {
        let mut a = stack(1 << 20);
        let mut b = stack(1 << 20);
        let data: Vec<u8> = (0..4 * SWAP_AT).map(|i| (i % 251) as u8).collect();
        let (first, second) = data.split_at(2 * SWAP_AT);
        let mut wire = Vec::new();
        // Into an empty outbox (handed over), written in part in place; then one
        // appended behind what is left; then taken by message and partly returned.
        a.encode(&[IoSlice::new(first)]).expect("encodes");
        wire.extend_from_slice(&a.outbox()[..100]);
        a.sent(100);
        a.encode(&[IoSlice::new(second)]).expect("encodes");
        let taken = a.take_outbox(usize::MAX);
        wire.extend_from_slice(&taken[..SWAP_AT]);
        a.returned(&taken, SWAP_AT);
        let rest = a.take_outbox(usize::MAX);
        wire.extend_from_slice(&rest);
        a.returned(&rest, rest.len());
        assert!(a.outbox().is_empty());
        // Empty again: the next large encode is handed over too.
        a.encode(&[IoSlice::new(first)]).expect("encodes");
        wire.extend_from_slice(a.outbox());
        for piece in wire.chunks(1000) {
            b.inbox(piece.len()).extend_from_slice(piece);
        }
        let (plain, _) = decode_all(&mut b);
        assert_eq!(plain.len(), data.len() + first.len());
        assert!(plain[..data.len()] == data[..], "every byte, in order");
        assert!(plain[data.len()..] == first[..]);
    }

    #[test]
    fn the_outbox_takes_no_more_than_its_bound_by_the_worst_case() {
        let mut s = stack(300);
        let n = s.room(1000);
        assert!(
            s.worst_case(n) <= 300 && s.worst_case(n + 1) > 300,
            "n = {n}"
        );
        s.encode(&[IoSlice::new(&vec![7; n])]).expect("encodes");
        assert!(s.outbox().len() <= 300);
        assert_eq!(s.room(1000), 0, "full");
        s.sent(100);
        assert!(s.room(1000) > 0, "room again once the transport took some");
    }

    #[test]
    fn an_uncapped_limit_never_reaches_a_layers_bound() {
        // The frames layer's bound overflows near usize::MAX; an uncapped turn asks with it.
        let s = stack(300);
        let n = s.room(usize::MAX);
        assert_eq!(
            n,
            s.room(1000),
            "the same room as any limit past the outbox"
        );
    }

    #[test]
    fn a_closed_stream_ends_cleanly_and_a_cut_one_is_an_error() {
        let mut a = stack(1 << 20);
        a.encode(&[IoSlice::new(b"bye")]).expect("encodes");
        a.close().expect("closes");
        let wire = a.take_outbox(usize::MAX);
        let mut b = stack(1 << 20);
        b.inbox(wire.len()).extend_from_slice(&wire);
        let (plain, last) = decode_all(&mut b);
        assert_eq!((plain.as_slice(), last), (&b"bye"[..], Decoded::End));
        assert!(!b.end_input(), "the layers ended before the transport");
        assert_eq!(
            b.decode(&mut BytesMut::new(), 64).expect("clean"),
            Decoded::End
        );

        let mut c = stack(1 << 20);
        c.inbox(wire.len())
            .extend_from_slice(&wire[..wire.len() - 1]);
        let (plain, last) = decode_all(&mut c);
        assert_eq!(plain, b"bye", "the plaintext before the cut comes first");
        assert_eq!(last, Decoded::NeedInput);
        assert!(c.end_input());
        assert_eq!(
            c.decode(&mut BytesMut::new(), 64).expect_err("cut").kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn the_transports_end_reaches_a_layer_above_the_wire_side_one() {
        // Frames (strict: a stream without its end frame was cut) above AddOne.
        let layers = || -> Vec<Box<dyn Layer>> { vec![Box::new(Frames), Box::new(AddOne)] };
        let mut a = LayerStack::new(layers(), 1 << 20, 1024);
        a.encode(&[IoSlice::new(b"bye")]).expect("encodes");
        let cut = a.take_outbox(usize::MAX);
        a.close().expect("closes");
        let end = a.take_outbox(usize::MAX);

        let mut b = LayerStack::new(layers(), 1 << 20, 1024);
        b.inbox(cut.len()).extend_from_slice(&cut);
        assert_eq!(decode_all(&mut b), (b"bye".to_vec(), Decoded::NeedInput));
        assert!(b.end_input());
        assert_eq!(
            b.decode(&mut BytesMut::new(), 64)
                .expect_err("the upper layer saw no end frame")
                .kind(),
            io::ErrorKind::UnexpectedEof
        );

        let mut c = LayerStack::new(layers(), 1 << 20, 1024);
        c.inbox(cut.len() + end.len()).extend_from_slice(&cut);
        c.inbox(end.len()).extend_from_slice(&end);
        assert_eq!(decode_all(&mut c), (b"bye".to_vec(), Decoded::End));
        assert!(!c.end_input());
    }

    #[test]
    fn a_pass_through_stack_ends_cleanly_at_the_transports_end() {
        let mut s = LayerStack::new(vec![Box::new(AddOne), Box::new(AddOne)], 1 << 20, 1024);
        s.inbox(3).extend_from_slice(&[3, 4, 5]);
        assert_eq!(decode_all(&mut s), (vec![1, 2, 3], Decoded::NeedInput));
        assert!(s.end_input());
        assert_eq!(decode_all(&mut s), (vec![], Decoded::End));
        assert!(!s.end_input(), "once");
    }

    #[test]
    fn decoding_returns_at_most_what_was_asked() {
        let mut a = stack(1 << 20);
        a.encode(&[IoSlice::new(&[1; 100])]).expect("encodes");
        let wire = a.take_outbox(usize::MAX);
        let mut b = stack(1 << 20);
        b.inbox(wire.len()).extend_from_slice(&wire);
        let mut out = BytesMut::new();
        assert_eq!(b.decode(&mut out, 2).expect("decodes"), Decoded::More);
        assert_eq!(out.len(), 2);
    }

    /// A layer that misbehaves as told: a worst case past any outbox, `More` with no
    /// progress, an answer of its own per byte decoded, a failing `poll_output`.
    #[derive(Debug, Default)]
    struct Unruly {
        overhead: usize,
        stuck: bool,
        ack: bool,
        poll_fails: bool,
        acks_owed: usize,
    }

    impl Layer for Unruly {
        fn name(&self) -> &'static str {
            "unruly"
        }
        fn worst_case(&self, n: usize) -> usize {
            n + self.overhead
        }
        fn encode(&mut self, input: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()> {
            for s in input {
                out.extend_from_slice(s);
            }
            Ok(())
        }
        fn decode(
            &mut self,
            input: &mut BytesMut,
            out: &mut BytesMut,
            max: usize,
        ) -> io::Result<Decoded> {
            if self.stuck {
                return Ok(Decoded::More);
            }
            let n = input.len().min(max);
            out.extend_from_slice(&input.split_to(n));
            self.acks_owed += n;
            Ok(if input.is_empty() {
                Decoded::NeedInput
            } else {
                Decoded::More
            })
        }
        fn poll_output(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
            if self.poll_fails {
                return Err(io::Error::other("poll_output failed"));
            }
            if self.ack {
                out.resize(std::mem::take(&mut self.acks_owed), b'a');
            }
            Ok(())
        }
    }

    fn unruly(layer: Unruly, max_buffered: usize) -> LayerStack {
        LayerStack::new(vec![Box::new(layer)], max_buffered, 1024)
    }

    #[test]
    fn an_empty_outbox_takes_plaintext_whatever_the_layers_worst_case() {
        let s = unruly(
            Unruly {
                overhead: 1 << 20,
                ..Unruly::default()
            },
            1000,
        );
        assert_eq!(s.room(5), 5, "else the write waits for ever");
        assert_eq!(s.room(usize::MAX), 1000, "at most the outbox's bound");
    }

    #[test]
    fn a_layer_answering_more_without_progress_is_an_error_not_a_spin() {
        let mut s = unruly(
            Unruly {
                stuck: true,
                ..Unruly::default()
            },
            1000,
        );
        s.inbox(5).extend_from_slice(b"hello");
        let mut out = BytesMut::new();
        let mut calls = 0;
        let error = loop {
            calls += 1;
            assert!(calls < 1000, "still More after {calls} calls");
            match s.decode(&mut out, 64) {
                Ok(Decoded::More) => continue,
                Ok(other) => panic!("{other:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_failing_poll_output_comes_after_the_plaintext_decoded_before_it() {
        let mut s = unruly(
            Unruly {
                poll_fails: true,
                ..Unruly::default()
            },
            1000,
        );
        s.inbox(5).extend_from_slice(b"hello");
        let mut out = BytesMut::new();
        assert_eq!(
            s.decode(&mut out, 64).expect("the plaintext first"),
            Decoded::More
        );
        assert_eq!(&out[..], b"hello");
        let error = s.decode(&mut out, 64).expect_err("then the error");
        assert_eq!(error.to_string(), "poll_output failed");
    }

    #[test]
    fn the_layers_own_output_holds_reading_at_twice_the_outbox_bound() {
        let mut s = unruly(
            Unruly {
                ack: true,
                ..Unruly::default()
            },
            100,
        );
        let mut out = BytesMut::new();
        s.inbox(150).extend_from_slice(&[b'p'; 150]);
        while s.decode(&mut out, 1024).expect("decodes") == Decoded::More {}
        assert_eq!(s.outbox().len(), 150);
        assert!(!s.reading_held(), "below twice the bound");
        s.inbox(100).extend_from_slice(&[b'p'; 100]);
        while s.decode(&mut out, 1024).expect("decodes") == Decoded::More {}
        assert!(s.reading_held(), "250 bytes of its own at a bound of 100");
        s.sent(200);
        assert!(!s.reading_held());
    }
}
