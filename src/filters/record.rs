//! The capture file format: what a [`Capture`](super::Capture) writes and a
//! [`CaptureReader`] reads back. Version 1, specified in `docs/filters.md` (section 7).
//!
//! ```text
//! header:  magic "SKACTCAP" (8 bytes) | version u16 LE (= 1) | reserved u16 LE (= 0)
//! record:  len u32 LE | type u8 | handle u64 LE | at u64 LE (ns) | payload | crc32 u32 LE
//! ```
//!
//! `len` counts the bytes after it (type to crc); the CRC-32 (IEEE, as in zlib and
//! gzip) covers `len` to the end of the payload. Every length is checked against a bound
//! before anything is allocated, so a damaged file gives a [`CaptureError`] with the
//! offset of the damage, never a panic or a huge allocation.

use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::error::TransportError;
use crate::messages::functions::{Address, Family, Handle, Readiness, SocketKind};

/// The first eight bytes of every capture file.
pub const MAGIC: [u8; 8] = *b"SKACTCAP";

/// The format version this crate writes and reads.
pub const VERSION: u16 = 1;

/// Most data bytes one record carries: a `sendv` record's accepted bytes (the capture's
/// per-call bound is at most this) or one read (a stream read through the capture asks
/// for at most this).
pub const MAX_DATA: usize = 16 << 20;

/// Most bytes a record's `len` may announce: the data bound plus room for the fixed
/// fields and an address.
pub const MAX_RECORD_LEN: u32 = (MAX_DATA + 64 * 1024) as u32;

/// Bytes of the file header.
const HEADER_LEN: usize = 12;

/// Bytes of a record outside its payload, after `len`: type, handle, time, crc.
const FIXED_LEN: u32 = 1 + 8 + 8 + 4;

const OPEN: u8 = 1;
const CONNECT: u8 = 2;
const ACCEPT: u8 = 3;
const SENDV: u8 = 4;
const RECVFROM: u8 = 5;
const READY: u8 = 6;
const CLOSE: u8 = 7;

/// One captured event on one handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The handle (the inner transport's own number). For [`CaptureEvent::Accept`], the
    /// listening handle; for a failed [`CaptureEvent::Open`], `Handle(0)`.
    pub handle: Handle,
    /// When the call was made (for `Open`, `Accept`, `Ready` and `Close`: when it was
    /// seen), in tokio time since the capture started.
    pub at: Duration,
    /// What happened.
    pub event: CaptureEvent,
}

/// What a [`Record`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaptureEvent {
    /// An `OpenSocket` and its answer.
    Open {
        /// The family asked for.
        family: Family,
        /// Stream or datagram.
        kind: SocketKind,
        /// `Ok` with the new handle in [`Record::handle`], or why it failed.
        result: Result<(), RecordedError>,
    },
    /// A `Connect` and its answer.
    Connect {
        /// The peer.
        addr: Address,
        /// How long the inner transport took to answer.
        took: Duration,
        /// The answer.
        result: Result<(), RecordedError>,
    },
    /// An `Accept` on the listening handle and its answer.
    Accept(AcceptAnswer),
    /// A `SendV` and its answer.
    SendV {
        /// Bytes the caller offered (the capture may have handed on fewer: its per-call
        /// bound).
        offered: u64,
        /// The destination, for unconnected datagram sockets.
        to: Option<Address>,
        /// How long the inner transport took to answer.
        took: Duration,
        /// The answer, with exactly the bytes taken.
        answer: SendAnswer,
    },
    /// A `RecvFrom` and its answer.
    RecvFrom {
        /// Most bytes the call asked for (as handed to the inner transport).
        max_len: u64,
        /// How long the inner transport took to answer.
        took: Duration,
        /// The answer.
        answer: RecvAnswer,
    },
    /// The inner transport's readiness notice for the handle.
    Ready(Readiness),
    /// A `CloseSocket`.
    Close,
}

/// A recorded `Accept` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptAnswer {
    /// A new connection.
    Connection {
        /// Its handle.
        handle: Handle,
        /// The peer.
        peer: Address,
    },
    /// No connection was waiting.
    WouldBlock,
    /// The call failed.
    Failed(RecordedError),
}

/// A recorded `SendV` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendAnswer {
    /// The inner transport took these bytes: exactly the accepted front of the batch.
    Accepted(Bytes),
    /// Would block.
    WouldBlock,
    /// Failed.
    Failed(RecordedError),
}

/// A recorded `RecvFrom` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecvAnswer {
    /// Bytes, and the sender where the transport said.
    Data {
        /// The bytes.
        bytes: Bytes,
        /// The sender.
        from: Option<Address>,
    },
    /// A datagram cut to `max_len`.
    Truncated {
        /// Its first `max_len` bytes.
        bytes: Bytes,
        /// The sender.
        from: Option<Address>,
    },
    /// End of stream.
    Eof,
    /// Nothing to read.
    WouldBlock,
    /// Failed.
    Failed(RecordedError),
}

/// A transport error as a capture keeps it: its kind, not its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordedError {
    /// An I/O error of this kind (kinds the format has no code for are kept as
    /// [`io::ErrorKind::Other`]).
    Io(io::ErrorKind),
    /// [`TransportError::UnknownHandle`].
    UnknownHandle,
    /// [`TransportError::Unsupported`].
    Unsupported,
    /// [`TransportError::OverAccepted`].
    OverAccepted,
    /// [`TransportError::Unavailable`], or an error this version does not know.
    Unavailable,
}

impl RecordedError {
    /// The I/O error kind, for I/O errors.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            RecordedError::Io(kind) => Some(*kind),
            _ => None,
        }
    }
}

impl From<&TransportError> for RecordedError {
    fn from(e: &TransportError) -> Self {
        match e {
            TransportError::Io(e) => RecordedError::Io(kind_of_code(kind_code(e.kind()))),
            TransportError::UnknownHandle(_) => RecordedError::UnknownHandle,
            TransportError::Unsupported(_) => RecordedError::Unsupported,
            TransportError::OverAccepted { .. } => RecordedError::OverAccepted,
            _ => RecordedError::Unavailable,
        }
    }
}

/// Why a capture file could not be read. Every variant names the byte offset in the
/// file where the problem starts (the record's first byte for a damaged record).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// Reading the underlying source failed.
    #[error("reading the capture failed at offset {offset}: {source}")]
    Io {
        /// Where.
        offset: u64,
        /// The error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The file does not start with the capture magic.
    #[error("not a capture file: bad magic at offset {offset}")]
    BadMagic {
        /// Where (0).
        offset: u64,
        /// The first bytes found.
        found: [u8; 8],
    },
    /// A format version this crate does not read.
    #[error("capture format version {version} is not supported (offset {offset})")]
    UnsupportedVersion {
        /// Where the version field is.
        offset: u64,
        /// The version found.
        version: u16,
    },
    /// The file ends inside the header or a record.
    #[error("capture truncated: {needed} bytes needed at offset {offset}, {available} there")]
    Truncated {
        /// Where the cut header or record starts.
        offset: u64,
        /// Bytes it should have.
        needed: u64,
        /// Bytes there were.
        available: u64,
    },
    /// A record announces more bytes than any record may have.
    #[error("capture record at offset {offset} announces {len} bytes, more than the bound {max}")]
    RecordTooLong {
        /// The record's offset.
        offset: u64,
        /// The length it announced.
        len: u32,
        /// The bound.
        max: u32,
    },
    /// A record announces fewer bytes than its fixed fields.
    #[error("capture record at offset {offset} announces {len} bytes, too short for a record")]
    RecordTooShort {
        /// The record's offset.
        offset: u64,
        /// The length it announced.
        len: u32,
    },
    /// A record of a type this version does not know.
    #[error("capture record at offset {offset} has unknown type {record_type}")]
    UnknownRecordType {
        /// The record's offset.
        offset: u64,
        /// The type byte.
        record_type: u8,
    },
    /// A record's checksum does not match its bytes.
    #[error("capture record at offset {offset} is corrupt: checksum {found:#010x}, expected {expected:#010x}")]
    ChecksumMismatch {
        /// The record's offset.
        offset: u64,
        /// The checksum stored.
        found: u32,
        /// The checksum of the bytes.
        expected: u32,
    },
    /// A record's payload does not parse.
    #[error("capture record at offset {offset} is malformed: {what}")]
    Malformed {
        /// The record's offset.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
}

impl CaptureError {
    /// The byte offset in the file where the problem starts.
    pub fn offset(&self) -> u64 {
        match self {
            CaptureError::Io { offset, .. }
            | CaptureError::BadMagic { offset, .. }
            | CaptureError::UnsupportedVersion { offset, .. }
            | CaptureError::Truncated { offset, .. }
            | CaptureError::RecordTooLong { offset, .. }
            | CaptureError::RecordTooShort { offset, .. }
            | CaptureError::UnknownRecordType { offset, .. }
            | CaptureError::ChecksumMismatch { offset, .. }
            | CaptureError::Malformed { offset, .. } => *offset,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Checksum

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320, as zlib computes it) of
/// `parts`, in order; `crc32fast` uses the CPU's carry-less multiply where it has one.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

// ---------------------------------------------------------------------------------------
// Codes

/// The I/O error kinds the format names, by code. Code 0 is not used.
const KINDS: [io::ErrorKind; 24] = [
    io::ErrorKind::Other,
    io::ErrorKind::NotFound,
    io::ErrorKind::PermissionDenied,
    io::ErrorKind::ConnectionRefused,
    io::ErrorKind::ConnectionReset,
    io::ErrorKind::ConnectionAborted,
    io::ErrorKind::NotConnected,
    io::ErrorKind::AddrInUse,
    io::ErrorKind::AddrNotAvailable,
    io::ErrorKind::BrokenPipe,
    io::ErrorKind::AlreadyExists,
    io::ErrorKind::WouldBlock,
    io::ErrorKind::InvalidInput,
    io::ErrorKind::InvalidData,
    io::ErrorKind::TimedOut,
    io::ErrorKind::WriteZero,
    io::ErrorKind::Interrupted,
    io::ErrorKind::Unsupported,
    io::ErrorKind::UnexpectedEof,
    io::ErrorKind::OutOfMemory,
    io::ErrorKind::HostUnreachable,
    io::ErrorKind::NetworkUnreachable,
    io::ErrorKind::NetworkDown,
    io::ErrorKind::ResourceBusy,
];

/// The code of an error kind (`Other`'s for kinds without one).
fn kind_code(kind: io::ErrorKind) -> u8 {
    KINDS
        .iter()
        .position(|k| *k == kind)
        .map_or(1, |i| i as u8 + 1)
}

fn kind_of_code(code: u8) -> io::ErrorKind {
    kind_from_code(code).unwrap_or(io::ErrorKind::Other)
}

fn kind_from_code(code: u8) -> Option<io::ErrorKind> {
    usize::from(code)
        .checked_sub(1)
        .and_then(|i| KINDS.get(i))
        .copied()
}

fn family_code(family: Family) -> u8 {
    match family {
        Family::Ipv4 => 1,
        Family::Ipv6 => 2,
        Family::Unix => 3,
    }
}

fn kind_byte(kind: SocketKind) -> u8 {
    match kind {
        SocketKind::Stream => 1,
        SocketKind::Datagram => 2,
    }
}

fn readiness_code(readiness: Readiness) -> u8 {
    match readiness {
        Readiness::Readable => 1,
        Readiness::Writable => 2,
    }
}

// ---------------------------------------------------------------------------------------
// Encoding

/// The file header.
pub(crate) fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_duration(out: &mut Vec<u8>, d: Duration) {
    put_u64(out, u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
}

fn put_error(out: &mut Vec<u8>, e: RecordedError) {
    let (class, code) = match e {
        RecordedError::Io(kind) => (1, kind_code(kind)),
        RecordedError::UnknownHandle => (2, 0),
        RecordedError::Unsupported => (3, 0),
        RecordedError::OverAccepted => (4, 0),
        RecordedError::Unavailable => (5, 0),
    };
    out.extend_from_slice(&[class, code]);
}

fn put_result(out: &mut Vec<u8>, result: &Result<(), RecordedError>) {
    match result {
        Ok(()) => out.push(0),
        Err(e) => {
            out.push(1);
            put_error(out, *e);
        }
    }
}

fn put_address(out: &mut Vec<u8>, addr: Option<&Address>) {
    match addr {
        None => out.push(0),
        Some(Address::Inet(SocketAddr::V4(a))) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
        }
        Some(Address::Inet(SocketAddr::V6(a))) => {
            out.push(6);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
            out.extend_from_slice(&a.flowinfo().to_le_bytes());
            out.extend_from_slice(&a.scope_id().to_le_bytes());
        }
        Some(Address::Unix(path)) => {
            let bytes = path_bytes(path);
            out.push(b'u');
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
    }
}

#[cfg(unix)]
fn path_bytes(path: &std::path::Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().to_vec()
}

#[cfg(not(unix))]
fn path_bytes(path: &std::path::Path) -> Vec<u8> {
    path.to_string_lossy().as_bytes().to_vec()
}

#[cfg(unix)]
fn path_from(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn path_from(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}

impl Record {
    fn type_byte(&self) -> u8 {
        match self.event {
            CaptureEvent::Open { .. } => OPEN,
            CaptureEvent::Connect { .. } => CONNECT,
            CaptureEvent::Accept(_) => ACCEPT,
            CaptureEvent::SendV { .. } => SENDV,
            CaptureEvent::RecvFrom { .. } => RECVFROM,
            CaptureEvent::Ready(_) => READY,
            CaptureEvent::Close => CLOSE,
        }
    }

    fn payload(&self, out: &mut Vec<u8>) {
        match &self.event {
            CaptureEvent::Open {
                family,
                kind,
                result,
            } => {
                out.extend_from_slice(&[family_code(*family), kind_byte(*kind)]);
                put_result(out, result);
            }
            CaptureEvent::Connect { addr, took, result } => {
                put_duration(out, *took);
                put_address(out, Some(addr));
                put_result(out, result);
            }
            CaptureEvent::Accept(answer) => match answer {
                AcceptAnswer::Connection { handle, peer } => {
                    out.push(0);
                    put_u64(out, handle.0);
                    put_address(out, Some(peer));
                }
                AcceptAnswer::WouldBlock => out.push(1),
                AcceptAnswer::Failed(e) => {
                    out.push(2);
                    put_error(out, *e);
                }
            },
            CaptureEvent::SendV {
                offered,
                to,
                took,
                answer,
            } => {
                put_duration(out, *took);
                put_u64(out, *offered);
                put_address(out, to.as_ref());
                match answer {
                    SendAnswer::Accepted(bytes) => {
                        out.push(0);
                        out.extend_from_slice(bytes);
                    }
                    SendAnswer::WouldBlock => out.push(1),
                    SendAnswer::Failed(e) => {
                        out.push(2);
                        put_error(out, *e);
                    }
                }
            }
            CaptureEvent::RecvFrom {
                max_len,
                took,
                answer,
            } => {
                put_duration(out, *took);
                put_u64(out, *max_len);
                match answer {
                    RecvAnswer::Data { bytes, from } | RecvAnswer::Truncated { bytes, from } => {
                        let truncated = matches!(answer, RecvAnswer::Truncated { .. });
                        out.push(if truncated { 1 } else { 0 });
                        put_address(out, from.as_ref());
                        out.extend_from_slice(bytes);
                    }
                    RecvAnswer::Eof => out.push(2),
                    RecvAnswer::WouldBlock => out.push(3),
                    RecvAnswer::Failed(e) => {
                        out.push(4);
                        put_error(out, *e);
                    }
                }
            }
            CaptureEvent::Ready(readiness) => out.push(readiness_code(*readiness)),
            CaptureEvent::Close => {}
        }
    }

    /// Appends the encoded record to `out`; `false` (and nothing appended) if it would
    /// be longer than [`MAX_RECORD_LEN`].
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.push(self.type_byte());
        put_u64(out, self.handle.0);
        put_duration(out, self.at);
        self.payload(out);
        // Everything after the length field, the checksum to come included.
        let len = out.len() - (start + 4) + 4;
        let Ok(len) = u32::try_from(len) else {
            out.truncate(start);
            return false;
        };
        if len > MAX_RECORD_LEN {
            out.truncate(start);
            return false;
        }
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32(&[&out[start..]]);
        out.extend_from_slice(&crc.to_le_bytes());
        true
    }
}

// ---------------------------------------------------------------------------------------
// Decoding

/// A cursor over one record's payload.
struct Payload {
    bytes: Bytes,
    offset: u64,
}

impl Payload {
    fn malformed(&self, what: &'static str) -> CaptureError {
        CaptureError::Malformed {
            offset: self.offset,
            what,
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, CaptureError> {
        if self.bytes.len() < n {
            return Err(self.malformed(what));
        }
        Ok(self.bytes.split_to(n))
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CaptureError> {
        let bytes = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&bytes);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CaptureError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, CaptureError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn duration(&mut self, what: &'static str) -> Result<Duration, CaptureError> {
        Ok(Duration::from_nanos(self.u64(what)?))
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.bytes)
    }

    fn end(&self) -> Result<(), CaptureError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.malformed("bytes after the payload"))
        }
    }

    fn error(&mut self) -> Result<RecordedError, CaptureError> {
        let [class, code] = self.array::<2>("error")?;
        match (class, code) {
            (1, code) => kind_from_code(code)
                .map(RecordedError::Io)
                .ok_or_else(|| self.malformed("unknown error kind")),
            (2, 0) => Ok(RecordedError::UnknownHandle),
            (3, 0) => Ok(RecordedError::Unsupported),
            (4, 0) => Ok(RecordedError::OverAccepted),
            (5, 0) => Ok(RecordedError::Unavailable),
            _ => Err(self.malformed("unknown error class")),
        }
    }

    fn result(&mut self) -> Result<Result<(), RecordedError>, CaptureError> {
        match self.u8("result")? {
            0 => Ok(Ok(())),
            1 => Ok(Err(self.error()?)),
            _ => Err(self.malformed("unknown result tag")),
        }
    }

    fn address(&mut self) -> Result<Option<Address>, CaptureError> {
        match self.u8("address")? {
            0 => Ok(None),
            4 => {
                let ip = Ipv4Addr::from(self.array::<4>("IPv4 address")?);
                let port = u16::from_le_bytes(self.array("port")?);
                Ok(Some(Address::Inet(SocketAddrV4::new(ip, port).into())))
            }
            6 => {
                let ip = Ipv6Addr::from(self.array::<16>("IPv6 address")?);
                let port = u16::from_le_bytes(self.array("port")?);
                let flow = u32::from_le_bytes(self.array("flow info")?);
                let scope = u32::from_le_bytes(self.array("scope id")?);
                let a = SocketAddrV6::new(ip, port, flow, scope);
                Ok(Some(Address::Inet(a.into())))
            }
            b'u' => {
                let len = u32::from_le_bytes(self.array("path length")?);
                let len = usize::try_from(len).map_err(|_| self.malformed("path length"))?;
                let path = self.take(len, "path")?;
                Ok(Some(Address::Unix(path_from(&path))))
            }
            _ => Err(self.malformed("unknown address tag")),
        }
    }

    fn some_address(&mut self) -> Result<Address, CaptureError> {
        self.address()?
            .ok_or_else(|| self.malformed("missing address"))
    }

    fn event(&mut self, record_type: u8) -> Result<CaptureEvent, CaptureError> {
        let event = match record_type {
            OPEN => {
                let family = match self.u8("family")? {
                    1 => Family::Ipv4,
                    2 => Family::Ipv6,
                    3 => Family::Unix,
                    _ => return Err(self.malformed("unknown family")),
                };
                let kind = match self.u8("socket kind")? {
                    1 => SocketKind::Stream,
                    2 => SocketKind::Datagram,
                    _ => return Err(self.malformed("unknown socket kind")),
                };
                let result = self.result()?;
                CaptureEvent::Open {
                    family,
                    kind,
                    result,
                }
            }
            CONNECT => {
                let took = self.duration("connect time")?;
                let addr = self.some_address()?;
                let result = self.result()?;
                CaptureEvent::Connect { addr, took, result }
            }
            ACCEPT => CaptureEvent::Accept(match self.u8("accept answer")? {
                0 => {
                    let handle = Handle(self.u64("accepted handle")?);
                    let peer = self.some_address()?;
                    AcceptAnswer::Connection { handle, peer }
                }
                1 => AcceptAnswer::WouldBlock,
                2 => AcceptAnswer::Failed(self.error()?),
                _ => return Err(self.malformed("unknown accept answer")),
            }),
            SENDV => {
                let took = self.duration("sendv time")?;
                let offered = self.u64("offered")?;
                let to = self.address()?;
                let answer = match self.u8("sendv answer")? {
                    0 => SendAnswer::Accepted(self.rest()),
                    1 => SendAnswer::WouldBlock,
                    2 => SendAnswer::Failed(self.error()?),
                    _ => return Err(self.malformed("unknown sendv answer")),
                };
                CaptureEvent::SendV {
                    offered,
                    to,
                    took,
                    answer,
                }
            }
            RECVFROM => {
                let took = self.duration("recvfrom time")?;
                let max_len = self.u64("max_len")?;
                let answer = match self.u8("recvfrom answer")? {
                    tag @ (0 | 1) => {
                        let from = self.address()?;
                        let bytes = self.rest();
                        if tag == 0 {
                            RecvAnswer::Data { bytes, from }
                        } else {
                            RecvAnswer::Truncated { bytes, from }
                        }
                    }
                    2 => RecvAnswer::Eof,
                    3 => RecvAnswer::WouldBlock,
                    4 => RecvAnswer::Failed(self.error()?),
                    _ => return Err(self.malformed("unknown recvfrom answer")),
                };
                CaptureEvent::RecvFrom {
                    max_len,
                    took,
                    answer,
                }
            }
            READY => CaptureEvent::Ready(match self.u8("readiness")? {
                1 => Readiness::Readable,
                2 => Readiness::Writable,
                _ => return Err(self.malformed("unknown readiness")),
            }),
            CLOSE => CaptureEvent::Close,
            other => {
                return Err(CaptureError::UnknownRecordType {
                    offset: self.offset,
                    record_type: other,
                })
            }
        };
        self.end()?;
        Ok(event)
    }
}

fn known_type(t: u8) -> bool {
    (OPEN..=CLOSE).contains(&t)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Header,
    Records,
    Done,
}

/// Reads a capture back: an iterator of [`Record`]s in the order they were written.
///
/// The header is checked on the first call. A damaged file gives one `Err` (with the
/// offset of the damage) and then the iterator ends; a file that ends cleanly after a
/// whole record ends the iteration with `None`. Nothing larger than
/// [`MAX_RECORD_LEN`] is ever allocated.
///
/// ```
/// use sockactor::filters::CaptureReader;
///
/// let mut records = CaptureReader::new(&b"not a capture"[..]);
/// assert!(matches!(records.next(), Some(Err(sockactor::filters::CaptureError::BadMagic { offset: 0, .. }))));
/// assert!(records.next().is_none());
/// ```
#[derive(Debug)]
pub struct CaptureReader<R> {
    source: R,
    offset: u64,
    state: ReadState,
}

impl<R: Read> CaptureReader<R> {
    /// A reader over `source` (a file, a byte slice…). Wrap a file in a `BufReader`.
    pub fn new(source: R) -> Self {
        CaptureReader {
            source,
            offset: 0,
            state: ReadState::Header,
        }
    }

    /// The offset of the next byte to read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads into `buf` until it is full or the source ends; how many bytes came.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, CaptureError> {
        let mut got = 0;
        while got < buf.len() {
            match self.source.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(CaptureError::Io {
                        offset: self.offset + got as u64,
                        source: Arc::new(e),
                    })
                }
            }
        }
        Ok(got)
    }

    /// Reads exactly `buf.len()` bytes of the header or record starting at `start`.
    fn exact(&mut self, buf: &mut [u8], start: u64, needed: u64) -> Result<(), CaptureError> {
        let got = self.fill(buf)?;
        self.offset += got as u64;
        if got < buf.len() {
            return Err(CaptureError::Truncated {
                offset: start,
                needed,
                available: self.offset - start,
            });
        }
        Ok(())
    }

    fn read_header(&mut self) -> Result<(), CaptureError> {
        let mut h = [0u8; HEADER_LEN];
        let got = self.fill(&mut h)?;
        self.offset += got as u64;
        let mut found = [0u8; 8];
        found.copy_from_slice(&h[..8]);
        if got >= 8 && found != MAGIC || got < 8 && h[..got] != MAGIC[..got] {
            return Err(CaptureError::BadMagic { offset: 0, found });
        }
        if got < HEADER_LEN {
            return Err(CaptureError::Truncated {
                offset: 0,
                needed: HEADER_LEN as u64,
                available: got as u64,
            });
        }
        let version = u16::from_le_bytes([h[8], h[9]]);
        if version != VERSION {
            return Err(CaptureError::UnsupportedVersion { offset: 8, version });
        }
        Ok(())
    }

    /// The next record, `None` at a clean end.
    fn read_record(&mut self) -> Result<Option<Record>, CaptureError> {
        let start = self.offset;
        let mut len_bytes = [0u8; 4];
        let got = self.fill(&mut len_bytes)?;
        self.offset += got as u64;
        if got == 0 {
            return Ok(None);
        }
        if got < 4 {
            return Err(CaptureError::Truncated {
                offset: start,
                needed: 4,
                available: got as u64,
            });
        }
        let len = u32::from_le_bytes(len_bytes);
        if len > MAX_RECORD_LEN {
            return Err(CaptureError::RecordTooLong {
                offset: start,
                len,
                max: MAX_RECORD_LEN,
            });
        }
        if len < FIXED_LEN {
            return Err(CaptureError::RecordTooShort { offset: start, len });
        }
        let mut body = vec![0u8; len as usize];
        self.exact(&mut body, start, 4 + u64::from(len))?;
        let record_type = body[0];
        if !known_type(record_type) {
            return Err(CaptureError::UnknownRecordType {
                offset: start,
                record_type,
            });
        }
        let (content, crc) = body.split_at(body.len() - 4);
        let mut stored = [0u8; 4];
        stored.copy_from_slice(crc);
        let found = u32::from_le_bytes(stored);
        let expected = crc32(&[&len_bytes, content]);
        if found != expected {
            return Err(CaptureError::ChecksumMismatch {
                offset: start,
                found,
                expected,
            });
        }
        body.truncate(body.len() - 4);
        let mut payload = Payload {
            bytes: Bytes::from(body),
            offset: start,
        };
        let _type = payload.u8("record type")?;
        let handle = Handle(payload.u64("handle")?);
        let at = payload.duration("time")?;
        let event = payload.event(record_type)?;
        Ok(Some(Record { handle, at, event }))
    }

    fn step(&mut self) -> Result<Option<Record>, CaptureError> {
        if self.state == ReadState::Header {
            self.read_header()?;
            self.state = ReadState::Records;
        }
        self.read_record()
    }
}

impl<R: Read> Iterator for CaptureReader<R> {
    type Item = Result<Record, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.state == ReadState::Done {
            return None;
        }
        match self.step() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.state = ReadState::Done;
                None
            }
            Err(e) => {
                self.state = ReadState::Done;
                Some(Err(e))
            }
        }
    }
}

impl<R: Read> std::iter::FusedIterator for CaptureReader<R> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        let v6: SocketAddr = "[::1]:8080".parse().expect("addr");
        vec![
            Record {
                handle: Handle(3),
                at: Duration::ZERO,
                event: CaptureEvent::Open {
                    family: Family::Ipv6,
                    kind: SocketKind::Stream,
                    result: Ok(()),
                },
            },
            Record {
                handle: Handle(3),
                at: Duration::from_nanos(5),
                event: CaptureEvent::Connect {
                    addr: v6.into(),
                    took: Duration::from_millis(2),
                    result: Err(RecordedError::Io(io::ErrorKind::ConnectionRefused)),
                },
            },
            Record {
                handle: Handle(3),
                at: Duration::from_secs(1),
                event: CaptureEvent::SendV {
                    offered: 10,
                    to: Some(SocketAddr::from(([192, 0, 2, 1], 53)).into()),
                    took: Duration::ZERO,
                    answer: SendAnswer::Accepted(Bytes::from_static(b"abc")),
                },
            },
            Record {
                handle: Handle(4),
                at: Duration::from_secs(2),
                event: CaptureEvent::RecvFrom {
                    max_len: 9,
                    took: Duration::from_nanos(1),
                    answer: RecvAnswer::Truncated {
                        bytes: Bytes::from_static(b"123456789"),
                        from: Some(Address::Unix(PathBuf::from("/tmp/x.sock"))),
                    },
                },
            },
            Record {
                handle: Handle(5),
                at: Duration::from_secs(3),
                event: CaptureEvent::Accept(AcceptAnswer::Connection {
                    handle: Handle(6),
                    peer: SocketAddr::from(([10, 0, 0, 1], 9)).into(),
                }),
            },
            Record {
                handle: Handle(6),
                at: Duration::from_secs(3),
                event: CaptureEvent::Ready(Readiness::Writable),
            },
            Record {
                handle: Handle(6),
                at: Duration::from_secs(4),
                event: CaptureEvent::Close,
            },
        ]
    }

    fn encode(records: &[Record]) -> Vec<u8> {
        let mut out = header().to_vec();
        for r in records {
            assert!(r.encode_into(&mut out));
        }
        out
    }

    #[test]
    fn records_round_trip() {
        let records = sample();
        let bytes = encode(&records);
        let back: Vec<Record> = CaptureReader::new(&bytes[..])
            .collect::<Result<_, _>>()
            .expect("valid");
        assert_eq!(back, records);
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
    }

    #[test]
    fn every_cut_of_a_capture_is_an_error_or_a_clean_prefix() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            let results: Vec<_> = CaptureReader::new(&bytes[..cut]).collect();
            let last = results.last();
            let clean_end = results.iter().all(Result::is_ok);
            if clean_end {
                assert!(cut >= HEADER_LEN, "cut {cut}");
            } else {
                assert!(
                    matches!(
                        last,
                        Some(Err(
                            CaptureError::Truncated { .. } | CaptureError::BadMagic { .. }
                        ))
                    ),
                    "cut {cut}: {last:?}"
                );
            }
        }
    }

    #[test]
    fn every_flipped_byte_after_the_header_is_detected() {
        let records = sample();
        let bytes = encode(&records);
        for i in HEADER_LEN..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x41;
            let results: Vec<_> = CaptureReader::new(&damaged[..]).collect();
            assert!(
                results.iter().any(Result::is_err),
                "flipping byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn error_kinds_keep_their_codes() {
        for kind in KINDS {
            assert_eq!(kind_of_code(kind_code(kind)), kind);
        }
        assert_eq!(kind_code(io::ErrorKind::Deadlock), 1);
    }
}
