//! Shared by the TLS tests: certificates made at test time (a CA and a leaf for
//! "localhost"), rustls configs on the ring provider, an echo listener behind the TLS
//! server filter, and writes of mixed sizes.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sockactor::filters::Tls;
use sockactor::messages::{Address, ListenerEvent, SocketEventKind, Write};
use sockactor::{Listener, Socket, SocketFunctions};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::support::EchoServer;

static NEXT_CA: AtomicU64 = AtomicU64::new(1);

/// A CA, and a server certificate it signed for `names`.
pub struct Pki {
    /// A root store holding only the CA.
    pub roots: RootCertStore,
    /// A server config presenting the leaf certificate.
    pub server: Arc<ServerConfig>,
    /// The leaf certificate.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
    /// The CA certificate, the leaf certificate and the leaf's key, as PEM.
    pub ca_pem: String,
    pub chain_pem: String,
    pub key_pem: String,
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes a CA and a leaf for `names`, signed by it.
pub fn pki(names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Each CA has its own name, so another CA's root is an unknown issuer.
    let serial = NEXT_CA.fetch_add(1, Ordering::Relaxed);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("sockactor test CA {serial}"));
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf = CertificateParams::new(names)
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone()).expect("root");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())
        .expect("server config");
    Pki {
        roots,
        server: Arc::new(server),
        chain,
        ca_pem: ca_cert.pem(),
        chain_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
        key,
    }
}

/// A client config trusting only `roots`.
pub fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// An echo listener on 127.0.0.1 whose transport is `functions` (accepted sockets too).
pub async fn echo_listener(functions: SocketFunctions) -> (Addr<Listener>, SocketAddr) {
    let server = EchoServer::default().start();
    let subscriber = server.clone();
    let (listener, local) = Listener::builder()
        .functions(functions)
        .subscriber(server.clone().recipient())
        .socket_builder(move |_| Socket::builder().subscriber(subscriber.clone().recipient()))
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    let Address::Inet(addr) = local else {
        panic!("an inet listener has an inet address");
    };
    (listener, addr)
}

/// The write sizes, 1 B to 256 KiB.
pub const SIZES: [usize; 9] = [1, 9, 700, 4096, 16_385, 65_536, 3000, 130_000, 256 * 1024];

/// Writes `data` in writes of the mixed `SIZES`; asserts each is answered Ok with its
/// length.
pub async fn write_mixed(socket: &Addr<Socket>, data: &Bytes) {
    let (mut offset, mut answers) = (0, Vec::new());
    for size in SIZES.iter().cycle() {
        if offset == data.len() {
            break;
        }
        let end = (offset + size).min(data.len());
        let write = socket.send(Write::new(data.slice(offset..end)).wait_when_full());
        answers.push((end - offset, actix::spawn(write)));
        offset = end;
    }
    for (len, answer) in answers {
        let done = answer
            .await
            .expect("join")
            .expect("mailbox")
            .expect("written");
        assert_eq!(done.len, len, "a write answered with another length");
    }
}

/// Collects `total` bytes from a socket's events (60 s at most); any other event fails.
pub async fn collect(events: &mut UnboundedReceiver<SocketEventKind>, total: usize) -> Vec<u8> {
    let mut back = Vec::with_capacity(total);
    tokio::time::timeout(Duration::from_secs(60), async {
        while back.len() < total {
            match events.recv().await {
                Some(SocketEventKind::Received(bytes)) => back.extend_from_slice(&bytes),
                Some(other) => panic!("unexpected event {other:?}"),
                None => break,
            }
        }
    })
    .await
    .expect("the echo within 60 s");
    back
}

/// A rustls server at the far end of a mock transport's handle: it reads what the client
/// wrote on the handle and pushes its answers back as inbound bytes.
pub struct MockPeer {
    server: rustls::ServerConnection,
    handle: sockactor::messages::Handle,
    seen: usize,
    /// Plaintext the client sent, decrypted.
    pub received: Vec<u8>,
}

impl MockPeer {
    /// A server with `config` at the far end of `handle`.
    pub fn new(config: Arc<ServerConfig>, handle: sockactor::messages::Handle) -> Self {
        MockPeer {
            server: rustls::ServerConnection::new(config).expect("server connection"),
            handle,
            seen: 0,
            received: Vec::new(),
        }
    }

    /// Whether the handshake is done on the server's side.
    pub fn is_handshaking(&self) -> bool {
        self.server.is_handshaking()
    }

    /// Takes what the client wrote since the last call (decrypting its plaintext into
    /// `received`), and pushes the server's records back to the client.
    pub fn pump(&mut self, mock: &sockactor::MockTransport) {
        use std::io::Read;
        let written = mock.written(self.handle);
        let mut fresh = &written[self.seen..];
        self.seen = written.len();
        while !fresh.is_empty() {
            self.server.read_tls(&mut fresh).expect("read_tls");
            self.server
                .process_new_packets()
                .expect("valid TLS from the client");
            let mut buf = [0u8; 16 * 1024];
            loop {
                match self.server.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => self.received.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("server read: {e}"),
                }
            }
        }
        let mut out = Vec::new();
        while self.server.wants_write() {
            self.server.write_tls(&mut out).expect("write_tls");
        }
        if !out.is_empty() {
            mock.push_inbound(self.handle, out);
        }
    }
}

impl MockPeer {
    /// Encrypts `data` (and whatever else the server has to say) and pushes it to the
    /// client.
    pub fn send(&mut self, mock: &sockactor::MockTransport, data: &[u8]) {
        use std::io::Write as _;
        self.server.writer().write_all(data).expect("server write");
        self.pump(mock);
    }

    /// Encrypts `data` into records and returns them without pushing them (nor anything
    /// else the server has to say): for a test to tamper with them first.
    pub fn seal(&mut self, data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        self.server.writer().write_all(data).expect("server write");
        let mut out = Vec::new();
        while self.server.wants_write() {
            self.server.write_tls(&mut out).expect("write_tls");
        }
        out
    }

    /// Sends the server's close_notify to the client.
    pub fn close_notify(&mut self, mock: &sockactor::MockTransport) {
        self.server.send_close_notify();
        self.pump(mock);
    }
}

/// Connects a socket built by `builder` through `functions` (a TLS client over `mock`)
/// to a [`MockPeer`] serving `server` on handle 1, pumping the handshake (paused time).
pub async fn connect_to_mock_peer(
    mock: &sockactor::MockTransport,
    builder: sockactor::SocketBuilder,
    functions: SocketFunctions,
    server: Arc<ServerConfig>,
) -> (Addr<Socket>, MockPeer) {
    let connecting = actix::spawn(async move {
        builder
            .functions(functions)
            .connect(crate::support::mock_peer())
            .await
    });
    let mut peer = MockPeer::new(server, sockactor::messages::Handle(1));
    for _ in 0..20 {
        crate::support::settle().await;
        peer.pump(mock);
        if connecting.is_finished() {
            break;
        }
    }
    let socket = connecting
        .await
        .expect("join")
        .expect("the handshake with the mock peer succeeds");
    crate::support::settle().await;
    peer.pump(mock);
    (socket, peer)
}

/// A TLS echo listener on loopback with these handshake settings.
pub async fn tls_listener(
    server: &Pki,
    max_handshakes: usize,
    handshake_timeout: Duration,
) -> (
    Addr<Listener>,
    SocketAddr,
    Addr<EchoServer>,
    UnboundedReceiver<ListenerEvent>,
) {
    tls_listener_backing_off(
        server,
        max_handshakes,
        handshake_timeout,
        Duration::from_millis(1),
    )
    .await
}

/// [`tls_listener`] with this accept back-off.
pub async fn tls_listener_backing_off(
    server: &Pki,
    max_handshakes: usize,
    handshake_timeout: Duration,
    backoff: Duration,
) -> (
    Addr<Listener>,
    SocketAddr,
    Addr<EchoServer>,
    UnboundedReceiver<ListenerEvent>,
) {
    let echo = EchoServer::default().start();
    let (seen, listener_events) = crate::support::channel::<ListenerEvent>();
    let subscriber = echo.clone();
    let tls = Tls::server(server.server.clone())
        .max_handshakes(max_handshakes)
        .handshake_timeout(handshake_timeout);
    let (listener, local) = Listener::builder()
        .functions(tls.wrap(SocketFunctions::system()))
        .subscriber(seen)
        .accept_backoff(backoff)
        .socket_builder(move |_| Socket::builder().subscriber(subscriber.clone().recipient()))
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    let Address::Inet(addr) = local else {
        panic!("an inet listener has an inet address");
    };
    (listener, addr, echo, listener_events)
}
