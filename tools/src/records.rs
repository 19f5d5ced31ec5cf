//! The soaks' checksummed, sequenced records and the stream check that verifies them.
//!
//! A record is a 16-byte header (magic, writer id, sequence number, payload length,
//! little-endian `u32`s), the payload (bytes drawn from a generator seeded by the run's
//! seed, the writer and the sequence number) and an 8-byte FNV-1a checksum of the
//! payload. The receiver regenerates each payload and compares it byte by byte, checks
//! the checksum, the sequence and the writer id, and counts the bytes.

use bytes::Bytes;

use crate::rng::Rng;

/// Record header: magic, writer id, sequence number, payload length.
pub const HEADER: usize = 16;
/// Record trailer: the payload's FNV-1a.
pub const TRAILER: usize = 8;
/// Most records in one burst.
pub const MAX_BURST: u64 = 8;

/// FNV-1a, 64 bits.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(pub u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xCBF2_9CE4_8422_2325)
    }

    pub fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
}

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv::new()
    }
}

/// The seed of one payload: the run, the writer and the sequence number.
pub fn payload_seed(run: u64, writer: u32, seq: u32) -> u64 {
    run ^ (u64::from(writer) << 32 | u64::from(seq)).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// A payload's bytes, eight at a time from its generator.
#[derive(Debug)]
pub struct PayloadBytes {
    rng: Rng,
    word: [u8; 8],
    at: usize,
}

impl PayloadBytes {
    pub fn new(seed: u64) -> PayloadBytes {
        PayloadBytes {
            rng: Rng::new(seed),
            word: [0; 8],
            at: 8,
        }
    }

    pub fn next_byte(&mut self) -> u8 {
        if self.at == 8 {
            self.word = self.rng.next_u64().to_le_bytes();
            self.at = 0;
        }
        self.at += 1;
        self.word[self.at - 1]
    }
}

/// A payload of `len` bytes and its checksum.
pub fn payload(seed: u64, len: usize) -> (Vec<u8>, Fnv) {
    let mut gen = PayloadBytes::new(seed);
    let mut fnv = Fnv::new();
    let bytes = (0..len)
        .map(|_| {
            let b = gen.next_byte();
            fnv.byte(b);
            b
        })
        .collect();
    (bytes, fnv)
}

/// The little-endian `u32` at `b[i..i + 4]`.
pub fn word(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// One tool's records: the first word of each, and the largest payload.
#[derive(Clone, Copy, Debug)]
pub struct RecordFormat {
    pub magic: u32,
    pub max_payload: usize,
}

impl RecordFormat {
    /// A payload length: mostly small, sometimes a few KiB, now and then up to
    /// `max_payload`.
    pub fn payload_len(self, rng: &mut Rng) -> usize {
        let max = self.max_payload as u64;
        let cap = match rng.next_u64() % 100 {
            0..=69 => 256,
            70..=94 => 4096,
            _ => max,
        };
        rng.one_to(cap.min(max)) as usize
    }

    /// One record as three segments: header, payload, checksum.
    pub fn record(self, run: u64, writer: u32, seq: u32, len: usize) -> Vec<Bytes> {
        let (bytes, fnv) = payload(payload_seed(run, writer, seq), len);
        let mut header = Vec::with_capacity(HEADER);
        for w in [self.magic, writer, seq, len as u32] {
            header.extend_from_slice(&w.to_le_bytes());
        }
        vec![
            Bytes::from(header),
            Bytes::from(bytes),
            Bytes::copy_from_slice(&fnv.0.to_le_bytes()),
        ]
    }
}

/// Where a stream parser is within a record.
#[derive(Debug)]
enum Parse {
    Header(Vec<u8>),
    Payload {
        left: usize,
        gen: PayloadBytes,
        fnv: Fnv,
    },
    Trailer {
        fnv: Fnv,
        got: Vec<u8>,
    },
}

/// Why a stream was wrong (the first fault only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Corruption {
    Magic,
    /// A record of another writer (another connection) than the stream's first.
    Writer,
    Sequence,
    Length,
    PayloadByte,
    Checksum,
}

/// How sequence numbers must run within one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqRule {
    /// 0, 1, 2… (a socket's own stream).
    Consecutive,
    /// Strictly increasing from anywhere (one connection of a reconnecting client: a
    /// write cut short on the last connection is not sent again).
    Increasing,
}

/// One stream's check: records parsed, regenerated and compared byte by byte.
#[derive(Debug)]
pub struct StreamCheck {
    format: RecordFormat,
    run: u64,
    rule: SeqRule,
    /// The writer id of the stream's first record.
    pub writer: Option<u32>,
    last_seq: Option<u32>,
    pub bytes: u64,
    pub records: u64,
    /// Sequence numbers of the whole records (kept only when asked).
    pub whole: Option<Vec<u32>>,
    /// The record being parsed: its sequence number once its header is in, and its bytes
    /// so far.
    pub current: (Option<u32>, usize),
    parse: Parse,
    pub corrupt: Option<Corruption>,
    /// The server aborted this connection (its stream ends wherever the abort fell).
    pub aborted: bool,
}

impl StreamCheck {
    pub fn new(format: RecordFormat, run: u64, rule: SeqRule, keep_whole: bool) -> StreamCheck {
        StreamCheck {
            format,
            run,
            rule,
            writer: None,
            last_seq: None,
            bytes: 0,
            records: 0,
            whole: keep_whole.then(Vec::new),
            current: (None, 0),
            parse: Parse::Header(Vec::with_capacity(HEADER)),
            corrupt: None,
            aborted: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        for &b in chunk {
            if self.corrupt.is_some() {
                return;
            }
            self.current.1 += 1;
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        match &mut self.parse {
            Parse::Header(h) => {
                h.push(b);
                if h.len() == HEADER {
                    let h = std::mem::take(h);
                    self.header(&h);
                }
            }
            Parse::Payload { left, gen, fnv } => {
                if gen.next_byte() != b {
                    self.corrupt = Some(Corruption::PayloadByte);
                    return;
                }
                fnv.byte(b);
                *left -= 1;
                if *left == 0 {
                    let fnv = *fnv;
                    self.parse = Parse::Trailer {
                        fnv,
                        got: Vec::with_capacity(TRAILER),
                    };
                }
            }
            Parse::Trailer { fnv, got } => {
                got.push(b);
                if got.len() == TRAILER {
                    if got[..] != fnv.0.to_le_bytes() {
                        self.corrupt = Some(Corruption::Checksum);
                        return;
                    }
                    self.records += 1;
                    let seq = self.current.0;
                    if let (Some(whole), Some(seq)) = (&mut self.whole, seq) {
                        whole.push(seq);
                    }
                    self.last_seq = seq;
                    self.current = (None, 0);
                    self.parse = Parse::Header(Vec::with_capacity(HEADER));
                }
            }
        }
    }

    fn header(&mut self, h: &[u8]) {
        let (magic, writer, seq, len) = (word(h, 0), word(h, 4), word(h, 8), word(h, 12));
        let len = len as usize;
        let in_order = match (self.rule, self.last_seq) {
            (SeqRule::Consecutive, None) => seq == 0,
            (SeqRule::Consecutive, Some(last)) => seq == last.wrapping_add(1),
            (SeqRule::Increasing, None) => true,
            (SeqRule::Increasing, Some(last)) => seq > last,
        };
        let fault = if magic != self.format.magic {
            Some(Corruption::Magic)
        } else if self.writer.is_some_and(|w| w != writer) {
            Some(Corruption::Writer)
        } else if !in_order {
            Some(Corruption::Sequence)
        } else if len == 0 || len > self.format.max_payload {
            Some(Corruption::Length)
        } else {
            None
        };
        if fault.is_some() {
            self.corrupt = fault;
            return;
        }
        self.writer = Some(writer);
        self.current.0 = Some(seq);
        self.parse = Parse::Payload {
            left: len,
            gen: PayloadBytes::new(payload_seed(self.run, writer, seq)),
            fnv: Fnv::new(),
        };
    }

    /// Whether the stream stopped inside a record.
    pub fn mid_record(&self) -> bool {
        !matches!(&self.parse, Parse::Header(h) if h.is_empty())
    }
}

/// One stream's contribution to the digest both sides compute: its writer id and its
/// byte count, mixed, summed over streams. The receiver learns the id from the first
/// record's header, so a stream cut before a whole header got across contributes its
/// byte count alone (and one that got no byte across, nothing), on both sides.
pub fn digest_of(writer: Option<u32>, bytes: u64) -> u64 {
    if bytes == 0 {
        return 0;
    }
    let key = match writer {
        Some(w) if bytes >= HEADER as u64 => u64::from(w) << 32 ^ bytes,
        _ => bytes ^ 1 << 63,
    };
    Rng::new(key).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: RecordFormat = RecordFormat {
        magic: 0x5445_5354,
        max_payload: 4096,
    };

    fn stream(records: &[(u32, u32, usize)]) -> Vec<u8> {
        records
            .iter()
            .flat_map(|&(writer, seq, len)| FORMAT.record(7, writer, seq, len))
            .flat_map(|b| b.to_vec())
            .collect()
    }

    #[test]
    fn records_fed_in_any_chunks_check_whole() {
        let bytes = stream(&[(3, 0, 1), (3, 1, 300), (3, 2, 4096)]);
        for chunk in [1, 7, 4096, bytes.len()] {
            let mut check = StreamCheck::new(FORMAT, 7, SeqRule::Consecutive, true);
            bytes.chunks(chunk).for_each(|c| check.feed(c));
            assert_eq!(check.corrupt, None);
            assert_eq!((check.records, check.bytes), (3, bytes.len() as u64));
            assert_eq!(check.whole, Some(vec![0, 1, 2]));
            assert_eq!(check.writer, Some(3));
            assert!(!check.mid_record());
        }
    }

    #[test]
    fn each_fault_is_named() {
        let check = |bytes: &[u8], rule| {
            let mut check = StreamCheck::new(FORMAT, 7, rule, false);
            check.feed(bytes);
            check.corrupt
        };
        let good = stream(&[(1, 0, 10), (1, 1, 10)]);
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert_eq!(check(&bad, SeqRule::Consecutive), Some(Corruption::Magic));
        let mut bad = good.clone();
        bad[HEADER + 3] ^= 1;
        assert_eq!(
            check(&bad, SeqRule::Consecutive),
            Some(Corruption::PayloadByte)
        );
        let mut bad = good.clone();
        bad[HEADER + 10] ^= 1;
        assert_eq!(
            check(&bad, SeqRule::Consecutive),
            Some(Corruption::Checksum)
        );
        let other = stream(&[(1, 0, 10), (2, 1, 10)]);
        assert_eq!(
            check(&other, SeqRule::Consecutive),
            Some(Corruption::Writer)
        );
        let gap = stream(&[(1, 0, 10), (1, 2, 10)]);
        assert_eq!(
            check(&gap, SeqRule::Consecutive),
            Some(Corruption::Sequence)
        );
        assert_eq!(check(&gap, SeqRule::Increasing), None);
        let late = stream(&[(1, 5, 10), (1, 4, 10)]);
        assert_eq!(
            check(&late, SeqRule::Increasing),
            Some(Corruption::Sequence)
        );
        let too_long = RecordFormat {
            max_payload: 8,
            ..FORMAT
        };
        let mut check = StreamCheck::new(too_long, 7, SeqRule::Consecutive, false);
        check.feed(&good);
        assert_eq!(check.corrupt, Some(Corruption::Length));
    }

    #[test]
    fn a_stream_cut_inside_a_record_says_so() {
        let bytes = stream(&[(1, 0, 100)]);
        let mut check = StreamCheck::new(FORMAT, 7, SeqRule::Consecutive, false);
        check.feed(&bytes[..HEADER + 5]);
        assert!(check.mid_record());
        assert_eq!(check.current, (Some(0), HEADER + 5));
    }

    #[test]
    fn payload_lengths_stay_within_the_format() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            let len = FORMAT.payload_len(&mut rng);
            assert!((1..=FORMAT.max_payload).contains(&len));
        }
    }

    #[test]
    fn digests_match_only_for_the_same_writer_and_bytes() {
        assert_eq!(digest_of(Some(1), 0), 0);
        assert_eq!(digest_of(Some(1), 100), digest_of(Some(1), 100));
        assert_ne!(digest_of(Some(1), 100), digest_of(Some(2), 100));
        // Fewer bytes than a header: the writer is not known to the receiver.
        assert_eq!(digest_of(Some(1), 10), digest_of(None, 10));
    }
}
