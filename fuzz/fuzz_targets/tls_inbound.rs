//! The TLS filter's inbound path (`Tls::client` / `Tls::server` over the mock transport)
//! fed by a peer that is either arbitrary bytes or a real rustls peer whose records the
//! fuzzer cuts, flips and interleaves with raw bytes. Nothing panics, and:
//!
//! - **A handshake against bytes** (modes 0 and 1) never succeeds: a client's connect
//!   (mode 0) or a server's accept (mode 1) fails exactly once, with the filter's typed
//!   error: `InvalidData` holding the [`rustls::Error`], or `UnexpectedEof` when the
//!   peer's bytes end first. With bit 2 of the mode set the peer's bytes start with a
//!   real first flight (a real server's answer to the client's hello, or a real client's
//!   hello) with one byte flipped at a position the fuzzer picks, then the rest of the
//!   data: a client's handshake then fails whenever the flip fell inside the flight
//!   (but on a record header's legacy version, which may be ignored), and succeeds when
//!   nothing follows an intact flight.
//! - **A session** (modes 2 and 3: a client that completed a real handshake with an
//!   in-process rustls server, TLS 1.3 or 1.2 by bit 2): the fuzz data is a list of
//!   operations: plaintext the peer encrypts (small or up to 32 KiB, over several
//!   records), a key update from the peer (at most 8 in a row), raw bytes put on the wire, a byte flipped in
//!   the ciphertext already on the wire, the wire cut short. Then the peer's
//!   close_notify and an inner EOF. The wire is spoiled from the first byte where it
//!   differs from what the peer sent (compared byte by byte, so raw bytes after a cut
//!   that happen to be the bytes cut spoil nothing). The socket delivers exactly the
//!   plaintext of the records that lie wholly before that byte, byte exact and in order,
//!   however the wire was cut into reads; its reads end with exactly one event: `Eof`
//!   if nothing was spoiled, else one typed `ReadFailed` (as above). A flip of a record
//!   header's content type or legacy version may or may not spoil (rustls does not
//!   always check them): either reading is accepted. No delivery
//!   is empty or larger than the filter's `max_output_per_call` or the socket's
//!   `read_chunk`.
//!
//! Input layout: byte 0 picks the mode (bits 0-1 the scenario, bit 2 as said, bits 3-4
//! `max_output_per_call`, bits 5-6 `read_chunk`), byte 1's low 3 bits say how many of the
//! next bytes cut the peer's bytes into the chunks it sends (see `chunks`), the rest is
//! the data. Certificates and rustls configs are made once per process; session
//! resumption is off, so every input runs a full handshake.

#![no_main]

use std::io::{self, Read, Write as _};
use std::sync::{Arc, Mutex, OnceLock};

use actix::prelude::*;
use libfuzzer_sys::fuzz_target;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use sockactor::filters::Tls;
use sockactor::messages::{Address, Handle, ListenerEvent, SocketEventKind};
use sockactor::{Listener, MockTransport, Socket, SocketConfig, SocketError, TransportError};
use sockactor_fuzz::{chunks, mock_peer, run_paused, settle, settle_until, Recorder};

/// The largest plaintext one record carries.
const RECORD: usize = 16 * 1024;
/// Key updates the peer sends with no data between them (rustls, rightly, takes a
/// flood of them for an attack: `PeerMisbehaved::TooManyKeyUpdateRequests`).
const MAX_KEY_UPDATES_IN_A_ROW: usize = 8;

/// Certificates and configs, made once per process.
struct Pki {
    server: Arc<ServerConfig>,
    client13: Arc<ClientConfig>,
    client12: Arc<ClientConfig>,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let provider = || Arc::new(rustls::crypto::ring::default_provider());
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sockactor fuzz CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("leaf params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf cert");
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).expect("root");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let client = |version: &'static rustls::SupportedProtocolVersion| {
            let mut config = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[version])
                .expect("versions")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.resumption = rustls::client::Resumption::disabled();
            Arc::new(config)
        };
        Pki {
            server: Arc::new(server),
            client13: client(&rustls::version::TLS13),
            client12: client(&rustls::version::TLS12),
        }
    })
}

/// The filter's read bound and the socket's read size for one input.
#[derive(Clone, Copy, Debug)]
struct Setup {
    max_output: usize,
    read_chunk: usize,
}

impl Setup {
    fn from_mode(mode: u8) -> Self {
        Setup {
            max_output: [1, 100, 4096, 64 * 1024][usize::from((mode >> 3) & 3)],
            read_chunk: [1, 13, 4096, 64 * 1024][usize::from((mode >> 5) & 3)],
        }
    }

    /// The most one delivery may carry.
    fn bound(&self) -> usize {
        self.max_output.min(self.read_chunk)
    }

    /// The most plaintext an input sends: a few thousand deliveries at most.
    fn plaintext_cap(&self) -> usize {
        (self.bound() * 2048).min(96 * 1024)
    }
}

/// Whether `error` is one the filter may fail a read or a handshake with: `InvalidData`
/// holding the rustls error, or `UnexpectedEof`.
fn typed(error: &TransportError) -> bool {
    match error {
        TransportError::Io(e) => match e.kind() {
            io::ErrorKind::InvalidData => e
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
            io::ErrorKind::UnexpectedEof => true,
            _ => false,
        },
        _ => false,
    }
}

/// An in-process rustls server at the far end of a mock handle.
struct Peer {
    conn: ServerConnection,
    handle: Handle,
    seen: usize,
}

impl Peer {
    /// Takes what the client wrote since the last call; returns what the server has to
    /// send (not pushed yet).
    fn take(&mut self, mock: &MockTransport) -> Vec<u8> {
        let written = mock.written(self.handle);
        let mut fresh = &written[self.seen..];
        self.seen = written.len();
        while !fresh.is_empty() {
            self.conn.read_tls(&mut fresh).expect("read_tls");
            self.conn
                .process_new_packets()
                .expect("the client's TLS is valid");
            let mut sink = [0u8; 4096];
            while matches!(self.conn.reader().read(&mut sink), Ok(n) if n > 0) {}
        }
        self.sealed()
    }

    /// What the server has to send.
    fn sealed(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out).expect("write_tls");
        }
        out
    }
}

/// Collects the events of a listener.
#[derive(Clone, Default)]
struct ListenerLog(Arc<Mutex<Vec<ListenerEvent>>>);

impl Actor for ListenerLogActor {
    type Context = Context<Self>;
}

struct ListenerLogActor(ListenerLog);

impl Handler<ListenerEvent> for ListenerLogActor {
    type Result = ();
    fn handle(&mut self, msg: ListenerEvent, _: &mut Context<Self>) {
        self.0 .0.lock().expect("lock").push(msg);
    }
}

/// Flips the byte at `at` (picked by two fuzz bytes) of `flight`, if it is that long;
/// the flight's length otherwise.
fn flip(flight: &mut [u8], at: usize, mask: u8) -> Option<usize> {
    let byte = flight.get_mut(at)?;
    *byte ^= mask | 1;
    Some(at)
}

/// Whether `at` is one of the two legacy-version bytes of a record header in `flight`.
fn header_version_byte(flight: &[u8], at: usize) -> bool {
    let mut start = 0;
    while start + 5 <= flight.len() {
        if at < start {
            return false;
        }
        if at == start + 1 || at == start + 2 {
            return true;
        }
        let len = usize::from(u16::from_be_bytes([flight[start + 3], flight[start + 4]]));
        start += 5 + len;
    }
    false
}

/// The two bytes at the front of `data` as a position, and the byte after as a mask.
fn split_flip(data: &[u8]) -> (usize, u8, &[u8]) {
    match data {
        [a, b, m, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), *m, rest),
        _ => (usize::MAX, 0, &[]),
    }
}

/// Mode 0: a client handshake against bytes (after a real server's answer, flipped,
/// with `real`).
async fn client_handshake(real: bool, seed: &[u8], data: &[u8]) {
    let pki = pki();
    let mock = MockTransport::start();
    let functions = Tls::client(pki.client13.clone(), "localhost")
        .expect("server name")
        .wrap(mock.functions());
    let connecting = actix::spawn(async move {
        Socket::builder()
            .functions(functions)
            .connect(mock_peer())
            .await
    });
    settle().await;
    let (stream, spoiled) = if real {
        let mut peer = Peer {
            conn: ServerConnection::new(pki.server.clone()).expect("server"),
            handle: Handle(1),
            seen: 0,
        };
        let mut flight = peer.take(&mock);
        assert!(!flight.is_empty(), "the server answers the client's hello");
        let (at, mask, rest) = split_flip(data);
        // A flipped record-layer version may be ignored (RFC 8446, 5.1): either outcome.
        let spoiled = match flip(&mut flight, at, mask) {
            Some(at) if header_version_byte(&flight, at) => None,
            Some(_) => Some(true),
            // Bytes after a whole flight come after the handshake, which may finish.
            None if rest.is_empty() => Some(false),
            None => None,
        };
        flight.extend_from_slice(rest);
        (flight, spoiled)
    } else {
        (data.to_vec(), Some(true))
    };
    for piece in chunks(seed, &stream) {
        mock.push_inbound(Handle(1), piece.to_vec());
    }
    mock.push_eof(Handle(1));
    assert!(
        settle_until(4096, || connecting.is_finished()).await,
        "the handshake never ended"
    );
    let connected = connecting.await.expect("join");
    match (&connected, spoiled) {
        (Err(SocketError::Connect(e)), Some(true) | None) => {
            assert!(typed(e), "a handshake failure that is not typed: {e}")
        }
        (Ok(_), Some(false) | None) => {}
        (other, spoiled) => panic!("spoiled {spoiled:?}, connect: {other:?}"),
    }
}

/// Mode 1: a server handshake (an accept) against bytes (after a real client's hello,
/// flipped, with `real`).
async fn server_handshake(real: bool, seed: &[u8], data: &[u8]) {
    let pki = pki();
    let mock = MockTransport::start();
    let log = ListenerLog::default();
    let (_listener, _local) = Listener::builder()
        .functions(Tls::server(pki.server.clone()).wrap(mock.functions()))
        .subscriber(ListenerLogActor(log.clone()).start().recipient())
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    settle().await;
    let conn = mock
        .connect_inbound(Handle(1), Address::Inet(mock_peer()))
        .expect("listening");
    let stream = if real {
        let name = ServerName::try_from("localhost").expect("name");
        let mut client = ClientConnection::new(pki.client13.clone(), name).expect("client");
        let mut hello = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut hello).expect("write_tls");
        }
        let (at, mask, rest) = split_flip(data);
        // Whether it flips or not, the hello alone cannot finish a handshake.
        let _ = flip(&mut hello, at, mask);
        hello.extend_from_slice(rest);
        hello
    } else {
        data.to_vec()
    };
    for piece in chunks(seed, &stream) {
        mock.push_inbound(conn, piece.to_vec());
    }
    mock.push_eof(conn);
    let ended = || !log.0.lock().expect("lock").is_empty();
    assert!(settle_until(4096, ended).await, "the accept never ended");
    settle().await;
    let events = log.0.lock().expect("lock");
    assert_eq!(events.len(), 1, "one listener event: {events:?}");
    match &events[0] {
        ListenerEvent::AcceptFailed { error } => {
            assert!(typed(error), "an accept failure that is not typed: {error}")
        }
        other => panic!("a handshake against bytes ended in {other:?}"),
    }
}

/// What the session's peer sent, what the fuzzer made of it, and which plaintext each
/// part carries.
#[derive(Default)]
struct Wire {
    /// The wire as the socket gets it.
    bytes: Vec<u8>,
    /// Everything the peer sent, in order, untouched.
    truth: Vec<u8>,
    /// Each record of plaintext: where its ciphertext ends (on the wire, as sent), and
    /// the plaintext.
    records: Vec<(usize, Vec<u8>)>,
    plaintext: usize,
}

impl Wire {
    /// Appends what the peer sent.
    fn sent(&mut self, bytes: Vec<u8>) {
        self.truth.extend_from_slice(&bytes);
        self.bytes.extend(bytes);
    }

    /// The first byte where the wire stops being what the peer sent (raw bytes, a flip,
    /// a cut; unless chance made them the very bytes the peer sent there).
    fn spoiled(&self) -> Option<usize> {
        self.spoiled_but(&[])
    }

    /// As `spoiled`, with differences at the positions in `ignored` overlooked.
    fn spoiled_but(&self, ignored: &[usize]) -> Option<usize> {
        let differs = (self.bytes.iter().zip(&self.truth))
            .enumerate()
            .position(|(i, (a, b))| a != b && !ignored.contains(&i));
        differs.or_else(|| {
            (self.bytes.len() != self.truth.len()).then(|| self.bytes.len().min(self.truth.len()))
        })
    }

    /// The content-type and legacy-version bytes of the record headers the peer sent:
    /// rustls does not check them on encrypted TLS 1.3 records (seen: a type of 0x16
    /// for 0x17 decrypts), so a flip there may spoil nothing.
    fn version_bytes(&self) -> Vec<usize> {
        let (mut out, mut start) = (Vec::new(), 0);
        while start + 5 <= self.truth.len() {
            out.extend([start, start + 1, start + 2]);
            let len = u16::from_be_bytes([self.truth[start + 3], self.truth[start + 4]]);
            start += 5 + usize::from(len);
        }
        out
    }

    /// The plaintext of every record that lies wholly before `spoiled`.
    fn expected(&self, spoiled: Option<usize>) -> Vec<u8> {
        let mut out = Vec::new();
        for (end, plain) in &self.records {
            if spoiled.is_some_and(|s| *end > s) {
                break;
            }
            out.extend_from_slice(plain);
        }
        out
    }
}

/// Runs the operations in `data` against the session's peer.
fn operations(peer: &mut Peer, tls13: bool, cap: usize, mut data: &[u8]) -> Wire {
    let mut wire = Wire::default();
    let mut key_updates = 0;
    let next = |data: &mut &[u8]| -> Option<u8> {
        let (&b, rest) = data.split_first()?;
        *data = rest;
        Some(b)
    };
    while let Some(op) = next(&mut data) {
        let arg = usize::from(op >> 2);
        match op & 3 {
            // Plaintext from the data (1 to 64 bytes), or a pattern of 512 B to 32 KiB.
            kind @ (0 | 1) => {
                let plain: Vec<u8> = if kind == 0 {
                    let n = (arg + 1).min(data.len());
                    let (head, rest) = data.split_at(n);
                    data = rest;
                    head.to_vec()
                } else {
                    let salt = next(&mut data).unwrap_or(0);
                    (0..(arg + 1) * 512)
                        .map(|i| (i % 251) as u8 ^ salt)
                        .collect()
                };
                if plain.is_empty() || wire.plaintext + plain.len() > cap {
                    continue;
                }
                wire.plaintext += plain.len();
                key_updates = 0;
                for record in plain.chunks(RECORD) {
                    peer.conn.writer().write_all(record).expect("peer write");
                    wire.sent(peer.sealed());
                    wire.records.push((wire.bytes.len(), record.to_vec()));
                }
            }
            // Raw bytes on the wire (1 to 64).
            2 => {
                let n = (arg + 1).min(data.len());
                let (head, rest) = data.split_at(n);
                data = rest;
                wire.bytes.extend_from_slice(head);
            }
            _ => match arg & 3 {
                // A key update from the peer (TLS 1.3 only).
                // rustls refuses more than 32 in a row without data between: a few only.
                1 if tls13 && key_updates < MAX_KEY_UPDATES_IN_A_ROW => {
                    key_updates += 1;
                    peer.conn.refresh_traffic_keys().expect("key update");
                    wire.sent(peer.sealed());
                }
                // The wire cut short by 1 to 32 bytes.
                2 => {
                    let k = usize::from(next(&mut data).unwrap_or(0) % 32) + 1;
                    let at = wire.bytes.len().saturating_sub(k);
                    wire.bytes.truncate(at);
                }
                // A byte flipped, counted back from the wire's end.
                _ => {
                    let back = usize::from(next(&mut data).unwrap_or(0))
                        | usize::from(next(&mut data).unwrap_or(0)) << 8;
                    let mask = next(&mut data).unwrap_or(1);
                    if let Some(at) = wire.bytes.len().checked_sub(1 + back) {
                        wire.bytes[at] ^= mask | 1;
                    }
                }
            },
        }
    }
    peer.conn.send_close_notify();
    wire.sent(peer.sealed());
    wire
}

/// Modes 2 and 3: a client session after a real handshake.
async fn session(setup: Setup, tls13: bool, seed: &[u8], data: &[u8]) {
    let pki = pki();
    let mock = MockTransport::start();
    let recorder = Recorder::default();
    let config = if tls13 { &pki.client13 } else { &pki.client12 };
    let functions = Tls::client(config.clone(), "localhost")
        .expect("server name")
        .max_output_per_call(setup.max_output)
        .wrap(mock.functions());
    let subscriber = recorder.events_recipient();
    let read_chunk = setup.read_chunk;
    let connecting = actix::spawn(async move {
        Socket::builder()
            .functions(functions)
            .config(SocketConfig {
                read_chunk,
                ..SocketConfig::default()
            })
            .subscriber(subscriber)
            .connect(mock_peer())
            .await
    });
    let mut peer = Peer {
        conn: ServerConnection::new(pki.server.clone()).expect("server"),
        handle: Handle(1),
        seen: 0,
    };
    for _ in 0..32 {
        settle().await;
        let out = peer.take(&mock);
        if !out.is_empty() {
            mock.push_inbound(Handle(1), out);
        }
        if connecting.is_finished() && !peer.conn.is_handshaking() {
            break;
        }
    }
    let _socket = connecting
        .await
        .expect("join")
        .expect("the handshake with the real peer succeeds");
    // The server's tickets (TLS 1.3) go out with the first flush after the handshake.
    let tickets = peer.take(&mock);
    if !tickets.is_empty() {
        mock.push_inbound(Handle(1), tickets);
    }
    let wire = operations(&mut peer, tls13, setup.plaintext_cap(), data);
    for piece in chunks(seed, &wire.bytes) {
        mock.push_inbound(Handle(1), piece.to_vec());
    }
    mock.push_eof(Handle(1));
    let ended = || {
        recorder.count(|e| matches!(e, SocketEventKind::Eof | SocketEventKind::ReadFailed(_))) > 0
    };
    let budget = 256 + 4 * (wire.plaintext / setup.bound() + 1);
    assert!(settle_until(budget, ended).await, "reads never ended");
    settle_until(8, || false).await;

    let eofs = recorder.count(|e| matches!(e, SocketEventKind::Eof));
    let failed: Vec<TransportError> = recorder
        .events
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|e| match e {
            SocketEventKind::ReadFailed(error) => Some(error.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(eofs + failed.len(), 1, "one end: {eofs} EOFs, {failed:?}");
    if let Some(error) = failed.first() {
        assert!(typed(error), "a read failure not typed: {error}");
    }
    let sizes = recorder.deliveries();
    assert!(
        sizes.iter().all(|&n| n > 0 && n <= setup.bound()),
        "a delivery outside 1..={}: {sizes:?}",
        setup.bound()
    );
    let received = recorder.received();
    // Spoiled counting every flip, or overlooking flips of header types and versions: the
    // outcome must be the one of either reading.
    let strict = wire.spoiled();
    let lenient = wire.spoiled_but(&wire.version_bytes());
    let fits = |spoiled: Option<usize>| {
        let clean_end = if spoiled.is_some() {
            eofs == 0
        } else {
            eofs == 1
        };
        clean_end && received == wire.expected(spoiled)
    };
    // rustls may take some header flips and reject others (a content type it does not
    // know, seen: `InvalidContentType` on a later record after an earlier flip was
    // taken), so the stream may also end at any flipped header byte before the first
    // other difference.
    let header = wire.version_bytes();
    let flipped_headers = header
        .iter()
        .copied()
        .filter(|&i| {
            wire.bytes.get(i) != wire.truth.get(i) && lenient.is_none_or(|end| i < end)
        });
    let at_a_flipped_header = flipped_headers.clone().any(|i| fits(Some(i)));
    assert!(
        fits(strict) || fits(lenient) || at_a_flipped_header,
        "received {} bytes, {eofs} EOFs, {failed:?}; expected {} (spoiled at {strict:?}, \
         or {lenient:?} overlooking header versions, of {})",
        received.len(),
        wire.expected(strict).len(),
        wire.bytes.len()
    );
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let Some((&cuts, rest)) = rest.split_first() else {
        return;
    };
    let seed_len = usize::from(cuts & 7).min(rest.len());
    let (seed, data) = rest.split_at(seed_len);
    let setup = Setup::from_mode(mode);
    let bit2 = mode & 4 != 0;
    match mode & 3 {
        0 => run_paused(|| client_handshake(bit2, seed, data)),
        1 => run_paused(|| server_handshake(bit2, seed, data)),
        _ => run_paused(|| session(setup, !bit2, seed, data)),
    }
});
