//! [`Compress`]: streaming deflate for stream sockets, both ways, as a byte layer run
//! in place by each socket (see [`Layer`]).
//!
//! The write side compresses the plaintext the socket transmits into the socket's
//! bounded outbox, each transmit ending with a sync flush; the read side inflates what
//! the transport reads, at most a bounded number of plaintext bytes per call, and fails
//! with a typed error on corrupt input and on a stream that inflates past its bounds.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use flate2::{Compression, FlushCompress, FlushDecompress};

use crate::actors::functions::{LayerBounds, LayerSpec};
use crate::error::TransportError;
use crate::proto::{Decoded, Layer};
use crate::SocketFunctions;

/// Default bound on plaintext bytes per compressed byte, over a connection.
const DEFAULT_MAX_RATIO: u64 = 256;
/// The ratio bound applies once this much plaintext came out: short messages of
/// repeated bytes compress far better than any sensible bound.
const RATIO_FLOOR: u64 = 64 * 1024;
/// The most plaintext compressed in one compressor call.
const STEP: usize = 64 * 1024;

/// The most encoded bytes `n` input bytes ending in a sync flush can take. Most levels
/// fall back to stored blocks (5 bytes of header per block) for data they cannot shrink;
/// level 1 (zlib-rs' quick strategy, as zlib-ng's) writes fixed-Huffman blocks only, where
/// a literal takes up to 9 bits: 1/8 more. Generous beyond that: a few bytes per block,
/// a flush marker and a partial block's bits.
fn worst_case(n: usize) -> usize {
    n + n / 8 + n / 1024 + 64
}

/// Why a [`Compress`] layer failed a socket. It reaches the socket as
/// [`TransportError::Io`] with kind [`io::ErrorKind::InvalidData`] (or `Other`, for a
/// compressor fault) whose inner error is this type, so it can be downcast:
///
/// ```
/// use sockactor::filters::CompressError;
/// use sockactor::TransportError;
///
/// fn is_bomb(error: &TransportError) -> bool {
///     matches!(
///         error,
///         TransportError::Io(e) if matches!(
///             e.get_ref().and_then(|inner| inner.downcast_ref::<CompressError>()),
///             Some(CompressError::TooLarge { .. } | CompressError::RatioExceeded { .. })
///         )
///     )
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// The peer's bytes are not a deflate stream.
    #[error("corrupt deflate stream from the peer: {0}")]
    Corrupt(String),
    /// The peer's stream inflated past [`Compress::max_total`].
    #[error("peer's stream inflated to more than {limit} bytes (decompression bomb?)")]
    TooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The peer's stream inflated past [`Compress::max_ratio`] plaintext bytes per
    /// compressed byte.
    #[error(
        "peer's stream inflated {consumed} bytes into {produced}, more than {ratio} times \
         (decompression bomb?)"
    )]
    RatioExceeded {
        /// Compressed bytes read.
        consumed: u64,
        /// Plaintext bytes they gave.
        produced: u64,
        /// The configured ratio.
        ratio: u64,
    },
    /// The compressor itself failed (a bug, not the peer's doing).
    #[error("compressor failed: {0}")]
    Compressor(String),
}

impl From<CompressError> for io::Error {
    fn from(e: CompressError) -> Self {
        let kind = match e {
            CompressError::Compressor(_) => io::ErrorKind::Other,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

impl From<CompressError> for TransportError {
    fn from(e: CompressError) -> Self {
        io::Error::from(e).into()
    }
}

/// Bounds on what a peer's stream may inflate to.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    max_ratio: u64,
    max_total: u64,
}

/// One socket's deflate both ways: the [`Layer`] a [`Compress`] table puts on each
/// stream socket.
#[derive(Debug)]
struct Deflate {
    level: Compression,
    /// Made at the first encode: a socket that never writes holds no compressor
    /// (`zlib-rs` keeps about 380 KB for one at level 1).
    deflate: Option<flate2::Compress>,
    /// Made at the first decode with input: a socket that never reads holds no
    /// decompressor (about 48 KB).
    inflate: Option<flate2::Decompress>,
    bounds: Bounds,
    /// A fault found after plaintext that went out first: the next call's answer.
    corrupt: Option<CompressError>,
}

impl Deflate {
    fn new(level: Compression, bounds: Bounds) -> Self {
        Deflate {
            level,
            deflate: None,
            inflate: None,
            bounds,
            corrupt: None,
        }
    }

    /// Compresses `input` (at most [`STEP`] bytes) into `out`, straight into its spare
    /// room; with `sync`, ends with a sync flush. Calls the compressor again while it
    /// fills the room it was given (its output may wait inside it until there is room).
    fn run(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        sync: bool,
    ) -> Result<(), CompressError> {
        let flush = if sync {
            FlushCompress::Sync
        } else {
            FlushCompress::None
        };
        let level = self.level;
        let deflate = self
            .deflate
            .get_or_insert_with(|| flate2::Compress::new(level, false));
        loop {
            // Room for the input's worst case: its output is written in one call, with no
            // growing of `out` piece by piece (output held inside the compressor from
            // earlier calls may take another).
            out.reserve(worst_case(input.len()));
            let (before_in, before_out) = (deflate.total_in(), deflate.total_out());
            deflate
                .compress_vec(input, out, flush)
                .map_err(|e| CompressError::Compressor(e.to_string()))?;
            let used = as_usize(deflate.total_in() - before_in);
            let made = as_usize(deflate.total_out() - before_out);
            input = &input[used.min(input.len())..];
            // Room left over: everything is taken, and (for a flush) written out.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
            if used == 0 && made == 0 {
                return Err(CompressError::Compressor(format!(
                    "no progress with {} bytes left and room to spare",
                    input.len()
                )));
            }
        }
    }

    fn check(&self) -> Result<(), CompressError> {
        let Some(inflate) = &self.inflate else {
            return Ok(());
        };
        let (consumed, produced) = (inflate.total_in(), inflate.total_out());
        if produced > self.bounds.max_total {
            return Err(CompressError::TooLarge {
                limit: self.bounds.max_total,
            });
        }
        if produced > RATIO_FLOOR && produced > self.bounds.max_ratio.saturating_mul(consumed) {
            return Err(CompressError::RatioExceeded {
                consumed,
                produced,
                ratio: self.bounds.max_ratio,
            });
        }
        Ok(())
    }
}

impl Layer for Deflate {
    fn name(&self) -> &'static str {
        "deflate"
    }

    fn worst_case(&self, n: usize) -> usize {
        worst_case(n)
    }

    fn encode(&mut self, input: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()> {
        for slice in input {
            for step in slice.chunks(STEP) {
                self.run(step, out, false)?;
            }
        }
        // The peer can inflate everything so far without waiting for more.
        self.run(&[], out, true)?;
        Ok(())
    }

    fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        max: usize,
    ) -> io::Result<Decoded> {
        if let Some(e) = self.corrupt.take() {
            return Err(e.into());
        }
        if input.is_empty() && self.inflate.is_none() {
            return Ok(Decoded::NeedInput);
        }
        // The output window is zeroed before inflating into it: sized to what this input
        // likely makes (a fuller window is `More`, and the caller comes back), not to
        // `max`, so a small message does not zero a whole read chunk.
        let window = input
            .len()
            .saturating_mul(8)
            .clamp(4 * 1024, 64 * 1024)
            .min(max.max(1));
        let start = out.len();
        out.resize(start + window, 0);
        let inflate = self
            .inflate
            .get_or_insert_with(|| flate2::Decompress::new(false));
        let (before_in, before_out) = (inflate.total_in(), inflate.total_out());
        let status = inflate
            .decompress(input, &mut out[start..], FlushDecompress::None)
            .map_err(|e| CompressError::Corrupt(e.to_string()));
        let used = as_usize(inflate.total_in() - before_in);
        let made = as_usize(inflate.total_out() - before_out);
        out.truncate(start + made);
        input.advance(used.min(input.len()));
        if let Err(e) = self.check() {
            // Nothing past the bound reaches the socket: this call's output goes too.
            out.truncate(start);
            return Err(e.into());
        }
        if let Err(e) = status {
            if made == 0 {
                return Err(e.into());
            }
            // The plaintext before the fault goes out first; the fault comes next call.
            self.corrupt = Some(e);
            return Ok(Decoded::More);
        }
        if used == 0 && made == 0 && !input.is_empty() {
            return Err(CompressError::Corrupt(
                "no progress: bytes after the end of the deflate stream".into(),
            )
            .into());
        }
        Ok(if made == window {
            // The output filled: the decompressor may hold more.
            Decoded::More
        } else {
            Decoded::NeedInput
        })
    }
}

fn as_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Streaming deflate for stream sockets (raw deflate, RFC 1951, no header), as a byte
/// layer each socket runs in place over its transport.
///
/// **Writing**: the plaintext of each transmit is compressed into the socket's outbox of
/// at most [`max_buffered`](Self::max_buffered) encoded bytes and ends with a sync flush,
/// so the peer can inflate everything written so far without waiting for more; a write
/// counts as sent once compressed. While the outbox is full the socket waits, as for a
/// transport that would block. On the system transport the outbox goes out with `write`
/// on the stream itself; on any other table, by `sendv` of at most
/// [`max_per_call`](Self::max_per_call) bytes. A graceful close waits at most
/// [`close_timeout`](Self::close_timeout) for the encoded bytes left to go out.
///
/// **Reading**: each read returns at most
/// [`max_output_per_call`](Self::max_output_per_call) plaintext bytes. A peer's stream
/// that is not deflate, or that inflates to more than [`max_total`](Self::max_total)
/// bytes or more than [`max_ratio`](Self::max_ratio) bytes per compressed byte (checked
/// once 64 KiB came out), fails the socket's reads with a [`CompressError`] inside
/// [`TransportError::Io`] (`InvalidData`). Memory per socket stays within the outbox,
/// one read and one call's plaintext, whatever the peer sends.
///
/// **State**: the compressor is made at a socket's first write and the decompressor at
/// its first input, and each is kept from then on (the deflate window is the stream's
/// history): about 380 KB for the compressor at level 1 and 48 KB for the decompressor,
/// none for a socket that never writes or never reads.
///
/// Datagram sockets refuse a layered table ([`TransportError::Unsupported`]): a datagram
/// cannot be cut and its reader would need each one compressed on its own.
///
/// ```no_run
/// use sockactor::filters::Compress;
/// use sockactor::SocketFunctions;
///
/// # fn demo() {
/// let functions = Compress::new()
///     .level(6)
///     .max_total(64 << 20)
///     .wrap(SocketFunctions::system());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Compress {
    level: Compression,
    layer: LayerBounds,
    bounds: Bounds,
}

impl Default for Compress {
    fn default() -> Self {
        Self::new()
    }
}

impl Compress {
    /// Deflate at the default level (6), with the default bounds: 64 KiB per call each
    /// way, a 128 KiB outbox, a ratio of 256 and no total.
    pub fn new() -> Self {
        Compress {
            level: Compression::default(),
            layer: LayerBounds::default(),
            bounds: Bounds {
                max_ratio: DEFAULT_MAX_RATIO,
                max_total: u64::MAX,
            },
        }
    }

    /// The compression level, 0 (store only) to 9 (smallest); higher values are 9.
    pub fn level(mut self, level: u32) -> Self {
        self.level = Compression::new(level.min(9));
        self
    }

    /// Hands a transport reached by message at most `n` encoded bytes (at least 1) per
    /// call (default 64 KiB).
    pub fn max_per_call(mut self, n: usize) -> Self {
        self.layer = self.layer.max_per_call(n);
        self
    }

    /// Holds at most `n` encoded bytes per socket that the transport has not taken (at
    /// least 256; default 128 KiB).
    pub fn max_buffered(mut self, n: usize) -> Self {
        self.layer = self.layer.max_buffered(n);
        self
    }

    /// Returns at most `n` plaintext bytes (at least 1) per read (default 64 KiB).
    pub fn max_output_per_call(mut self, n: usize) -> Self {
        self.layer = self.layer.max_output(n);
        self
    }

    /// Fails a peer's stream that inflates to more than `ratio` (at least 1) plaintext
    /// bytes per compressed byte, once 64 KiB of plaintext came out (default 256).
    pub fn max_ratio(mut self, ratio: u64) -> Self {
        self.bounds.max_ratio = ratio.max(1);
        self
    }

    /// Fails a peer's stream that inflates to more than `n` bytes in all (default: no
    /// limit but the ratio).
    pub fn max_total(mut self, n: u64) -> Self {
        self.bounds.max_total = n;
        self
    }

    /// Waits at most this long (tokio time), at a graceful close, for the transport to
    /// take the encoded bytes left; then the socket closes anyway (default 10 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.layer = self.layer.close_timeout(timeout);
        self
    }

    /// `inner` with deflate on every stream socket built on it.
    pub fn wrap(self, inner: SocketFunctions) -> SocketFunctions {
        let Compress {
            level,
            layer,
            bounds,
        } = self;
        inner.with_layer(LayerSpec {
            name: "deflate",
            make: Arc::new(move |_| Ok(Box::new(Deflate::new(level, bounds)) as Box<dyn Layer>)),
            bounds: layer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        (0..len).map(|_| rng.next_u64() as u8).collect()
    }

    fn layer(level: u32) -> Deflate {
        Deflate::new(
            Compression::new(level),
            Bounds {
                max_ratio: DEFAULT_MAX_RATIO,
                max_total: u64::MAX,
            },
        )
    }

    #[test]
    fn a_direction_never_used_holds_no_zlib_state() {
        let (mut sender, mut receiver) = (layer(1), layer(1));
        assert!(
            sender.deflate.is_none() && sender.inflate.is_none(),
            "nothing made before use"
        );
        let mut wire = Vec::new();
        let text = b"hello hello hello hello";
        sender
            .encode(&[IoSlice::new(text)], &mut wire)
            .expect("encode");
        assert!(sender.deflate.is_some(), "made by the first encode");
        assert!(
            sender.inflate.is_none(),
            "a socket that only writes holds no inflater"
        );
        let mut out = BytesMut::new();
        assert!(matches!(
            receiver.decode(&mut BytesMut::new(), &mut out, 1 << 16),
            Ok(Decoded::NeedInput)
        ));
        assert!(receiver.inflate.is_none(), "no input, no inflater");
        let mut input = BytesMut::from(&wire[..]);
        receiver
            .decode(&mut input, &mut out, 1 << 16)
            .expect("decode");
        assert_eq!(&out[..], text, "byte exact");
        assert!(receiver.inflate.is_some(), "made by the first input");
        assert!(
            receiver.deflate.is_none(),
            "a socket that only reads holds no compressor"
        );
    }

    #[test]
    fn no_encode_takes_more_room_than_its_worst_case() {
        for level in 0..=9 {
            let mut deflate = layer(level);
            for (i, len) in [1usize, 2, 63, 100, 5000, 65_536, 70_000, 3]
                .iter()
                .enumerate()
            {
                let data = noise(*len, u64::from(level) * 100 + i as u64);
                let mut out = Vec::new();
                deflate
                    .encode(&[IoSlice::new(&data)], &mut out)
                    .expect("encode");
                let room = worst_case(*len);
                assert!(
                    out.len() <= room,
                    "level {level}: {len} bytes took {}, bound {room}",
                    out.len()
                );
            }
        }
    }

    #[test]
    fn no_plaintext_past_the_total_comes_out_of_a_decode() {
        // Found by the compress_inbound fuzz target: 257 bytes through a max_total of 256.
        let mut deflate = Deflate::new(
            Compression::new(6),
            Bounds {
                max_ratio: DEFAULT_MAX_RATIO,
                max_total: 256,
            },
        );
        let mut wire = Vec::new();
        layer(6)
            .encode(&[IoSlice::new(&[b'x'; 257])], &mut wire)
            .expect("encode");
        let (mut input, mut out) = (BytesMut::from(&wire[..]), BytesMut::new());
        let error = deflate
            .decode(&mut input, &mut out, 1024)
            .expect_err("too large");
        assert!(out.len() <= 256, "{} bytes came out", out.len());
        let inner = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<CompressError>());
        assert_eq!(inner, Some(&CompressError::TooLarge { limit: 256 }));
    }

    #[test]
    fn no_plaintext_past_the_total_comes_out_before_a_corrupt_byte_either() {
        // Found by the compress_inbound fuzz target: 512 bytes through a max_total of 256
        // when the stream turned corrupt after them.
        let mut deflate = Deflate::new(
            Compression::new(6),
            Bounds {
                max_ratio: DEFAULT_MAX_RATIO,
                max_total: 256,
            },
        );
        let mut wire = Vec::new();
        layer(6)
            .encode(&[IoSlice::new(&[b'y'; 300])], &mut wire)
            .expect("encode");
        // The stream goes bad after a sync flush: a reserved block type.
        wire.extend_from_slice(&[0xff, 0xff, 0xff]);
        let (mut input, mut out) = (BytesMut::from(&wire[..]), BytesMut::new());
        let result = deflate.decode(&mut input, &mut out, 512);
        assert!(out.len() <= 256, "{} bytes came out", out.len());
        let error = result.expect_err("too large");
        let inner = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<CompressError>());
        assert_eq!(inner, Some(&CompressError::TooLarge { limit: 256 }));
    }

    #[test]
    fn what_one_encode_makes_inflates_whole_without_more() {
        let (mut a, mut b) = (layer(6), layer(6));
        let mut wire = Vec::new();
        a.encode(
            &[IoSlice::new(b"hello "), IoSlice::new(b"world")],
            &mut wire,
        )
        .expect("encode");
        let (mut input, mut out) = (BytesMut::from(&wire[..]), BytesMut::new());
        b.decode(&mut input, &mut out, 1024).expect("decode");
        assert_eq!(&out[..], b"hello world");
    }

    #[test]
    fn an_encode_of_incompressible_steps_inflates_whole_byte_exact() {
        // Noise does not shrink: each 64 KiB step's output nearly fills the room made
        // for it, and output held inside the compressor from the step before joins it.
        for level in [1, 6, 9] {
            let (mut a, mut b) = (layer(level), layer(level));
            let data = noise(200_000, u64::from(level));
            let (first, second) = data.split_at(70_001);
            let mut wire = Vec::new();
            a.encode(&[IoSlice::new(first), IoSlice::new(second)], &mut wire)
                .expect("encode");
            assert!(wire.len() > data.len(), "{}", wire.len());
            let (mut input, mut out) = (BytesMut::from(&wire[..]), BytesMut::new());
            while out.len() < data.len() {
                let before = out.len();
                b.decode(&mut input, &mut out, 64 * 1024).expect("decode");
                assert!(out.len() > before, "level {level}: stuck at {before}");
            }
            assert!(out[..] == data[..], "level {level}: plaintext differs");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 64,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// Writes of any size through a deflate `LayerStack` whose outbox the transport
        /// drains a random amount at a time, read back by another stack in random pieces:
        /// the outbox never passes its bound, and the peer gets every byte, in order.
        #[test]
        fn a_layer_stack_keeps_its_bound_and_every_byte_under_any_draining(
            writes in proptest::collection::vec((1usize..20_000, 0u8..3), 1..12),
            bound in 256usize..40_000,
            takes in proptest::collection::vec(1usize..5_000, 1..20),
            pieces in proptest::collection::vec(1usize..3_000, 1..20),
            level in 0u32..10,
        ) {
            use crate::proto::LayerStack;
            let bounds = Bounds { max_ratio: u64::MAX, max_total: u64::MAX };
            let mut ours = LayerStack::new(
                vec![Box::new(Deflate::new(Compression::new(level), bounds))],
                bound,
                64 * 1024,
            );
            let mut theirs = LayerStack::new(
                vec![Box::new(Deflate::new(Compression::new(level), bounds))],
                1 << 30,
                1000,
            );
            let mut sent = Vec::new();
            let mut wire = Vec::new();
            let (mut take, mut step) = (takes.iter().cycle(), 0usize);
            for (n, (len, kind)) in writes.iter().enumerate() {
                let data: Vec<u8> = match kind {
                    0 => noise(*len, n as u64),
                    1 => vec![b'z'; *len],
                    _ => (0..*len).map(|i| (i % 7) as u8).collect(),
                };
                let mut at = 0;
                while at < data.len() {
                    let room = ours.room(data.len() - at);
                    if room > 0 {
                        ours.encode(&[IoSlice::new(&data[at..at + room])]).expect("encode");
                        at += room;
                    }
                    proptest::prop_assert!(ours.outbox().len() <= bound, "outbox {} over {bound}", ours.outbox().len());
                    // The transport takes some of the outbox.
                    let n = (*take.next().expect("cycle")).min(ours.outbox().len());
                    wire.extend_from_slice(&ours.outbox()[..n]);
                    ours.sent(n);
                    step += 1;
                    proptest::prop_assert!(step < 1_000_000, "no progress");
                }
                sent.extend_from_slice(&data);
            }
            wire.extend_from_slice(ours.outbox());
            let mut got = BytesMut::new();
            let mut rest = &wire[..];
            for piece in pieces.iter().cycle() {
                let n = (*piece).min(rest.len());
                theirs.inbox(n).extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                while theirs.decode(&mut got, 1000).expect("decode") == Decoded::More {}
                if rest.is_empty() {
                    break;
                }
            }
            proptest::prop_assert_eq!(got.len(), sent.len());
            proptest::prop_assert!(got[..] == sent[..], "the stream differs");
        }
    }
}
