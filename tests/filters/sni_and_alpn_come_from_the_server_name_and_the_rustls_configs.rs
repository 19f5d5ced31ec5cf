//! The TLS client sends its server name as SNI, and ALPN is whatever the rustls configs
//! say: a server that picks its certificate by SNI serves a client named "localhost" and
//! refuses one that names it by IP address (no SNI is sent for an address: rustls's
//! server answers `access_denied` when it has no certificate for the hello); a server
//! and a client with a common ALPN protocol connect, and with none the client's connect
//! fails with the server's `no_application_protocol` alert. What each handshake agreed
//! on (ALPN, version, suite, server name, the peer's chain) can be read back by handle
//! from `Tls::sessions`, on both sides, until the handle closes.

use std::sync::Arc;

use crate::support::tls::{client_config, echo_listener, pki, provider, Pki};
use rustls::server::ResolvesServerCertUsingSni;
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, ClientConfig, ServerConfig};
use sockactor::filters::Tls;
use sockactor::messages::{Close, GetInfo, StopListening};
use sockactor::{Socket, SocketError, SocketFunctions, TransportError};

/// The alert inside a failed connect.
fn alert(connected: &Result<actix::Addr<Socket>, SocketError>) -> Option<AlertDescription> {
    let Err(SocketError::Connect(TransportError::Io(e))) = connected else {
        panic!("not a connect i/o error: {connected:?}");
    };
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

async fn connect(
    config: Arc<ClientConfig>,
    name: &str,
    addr: std::net::SocketAddr,
) -> Result<actix::Addr<Socket>, SocketError> {
    Socket::builder()
        .functions(
            Tls::client(config, name)
                .expect("server name")
                .wrap(SocketFunctions::system()),
        )
        .connect(addr)
        .await
}

fn sni_server(pki: &Pki) -> Arc<ServerConfig> {
    let mut resolver = ResolvesServerCertUsingSni::new();
    let key = CertifiedKey::from_der(pki.chain.clone(), pki.key.clone_key(), &provider())
        .expect("certified key");
    resolver
        .add("localhost", key)
        .expect("a name of the certificate");
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    Arc::new(config)
}

#[actix::test]
async fn the_server_name_is_sent_as_sni() {
    let pki = pki(&["localhost", "127.0.0.1"]);
    let (listener, addr) =
        echo_listener(Tls::server(sni_server(&pki)).wrap(SocketFunctions::system())).await;
    let named = connect(client_config(pki.roots.clone()), "localhost", addr).await;
    let socket = named.expect("a client sending SNI \"localhost\" gets its certificate");
    socket.do_send(Close::Graceful);
    let by_address = connect(client_config(pki.roots.clone()), "127.0.0.1", addr).await;
    assert_eq!(
        alert(&by_address),
        Some(AlertDescription::AccessDenied),
        "without SNI the server has no certificate to offer"
    );
    listener.send(StopListening).await.expect("listener");
}

#[actix::test]
async fn alpn_is_negotiated_from_the_configs() {
    let pki = pki(&["localhost"]);
    let mut server = (*pki.server).clone();
    server.alpn_protocols = vec![b"sockactor/1".to_vec()];
    let (listener, addr) =
        echo_listener(Tls::server(Arc::new(server)).wrap(SocketFunctions::system())).await;
    let with_alpn = |protocol: &[u8]| {
        let mut config = (*client_config(pki.roots.clone())).clone();
        config.alpn_protocols = vec![protocol.to_vec()];
        Arc::new(config)
    };
    let common = connect(with_alpn(b"sockactor/1"), "localhost", addr).await;
    let socket = common.expect("a common ALPN protocol connects");
    socket.do_send(Close::Graceful);
    let none = connect(with_alpn(b"other/2"), "localhost", addr).await;
    assert_eq!(alert(&none), Some(AlertDescription::NoApplicationProtocol));
    listener.send(StopListening).await.expect("listener");
}

#[actix::test]
async fn what_each_handshake_agreed_on_is_readable_by_handle_until_it_closes() {
    let pki = pki(&["localhost"]);
    let mut server = (*pki.server).clone();
    server.alpn_protocols = vec![b"h2".to_vec(), b"sockactor/1".to_vec()];
    let server_tls = Tls::server(Arc::new(server));
    let server_sessions = server_tls.sessions();
    let (listener, addr) = echo_listener(server_tls.wrap(SocketFunctions::system())).await;

    let mut config = (*client_config(pki.roots.clone())).clone();
    config.alpn_protocols = vec![b"sockactor/1".to_vec()];
    let client_tls = Tls::client(Arc::new(config), "localhost").expect("server name");
    let client_sessions = client_tls.sessions();
    let socket = Socket::builder()
        .functions(client_tls.wrap(SocketFunctions::system()))
        .connect(addr)
        .await
        .expect("connects");
    let handle = socket.send(GetInfo).await.expect("info").handle;
    let mine = client_sessions.get(handle).expect("the client's session");
    assert_eq!(mine.alpn_protocol.as_deref(), Some(&b"sockactor/1"[..]));
    assert_eq!(
        mine.protocol_version,
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert!(mine.cipher_suite.is_some());
    assert_eq!(mine.server_name.as_deref(), Some("localhost"));
    assert_eq!(
        mine.peer_certificates.first(),
        pki.chain.first(),
        "the server's own certificate first"
    );

    // The server side: one session, with the SNI the client sent.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server_sessions.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let all = server_sessions.all();
    let [(_, theirs)] = all.as_slice() else {
        panic!("one server session, got {all:?}");
    };
    assert_eq!(
        theirs.server_name.as_deref(),
        Some("localhost"),
        "the SNI sent"
    );
    assert_eq!(theirs.alpn_protocol.as_deref(), Some(&b"sockactor/1"[..]));
    assert!(
        theirs.peer_certificates.is_empty(),
        "the client sent no certificate"
    );

    socket.send(Close::Graceful).await.expect("close");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(client_sessions.is_empty() && server_sessions.is_empty())
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        client_sessions.get(handle).is_none(),
        "gone with its handle"
    );
    assert!(
        server_sessions.is_empty(),
        "the server's too, once the echo closed"
    );
    listener.send(StopListening).await.expect("listener");
}
