//! The TLS client sends its server name as SNI, and ALPN is whatever the rustls configs
//! say: a server that picks its certificate by SNI serves a client named "localhost" and
//! refuses one that names it by IP address (no SNI is sent for an address: rustls's
//! server answers `access_denied` when it has no certificate for the hello); a server
//! and a client with a common ALPN protocol connect, and with none the client's connect
//! fails with the server's `no_application_protocol` alert.

mod support;
mod tls_support;

use std::sync::Arc;

use rustls::server::ResolvesServerCertUsingSni;
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, ClientConfig, ServerConfig};
use sockactor::filters::Tls;
use sockactor::messages::{Close, StopListening};
use sockactor::{Socket, SocketError, SocketFunctions, TransportError};
use tls_support::{client_config, echo_listener, pki, provider, Pki};

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
