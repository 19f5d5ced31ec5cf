//! Certificate verification is on: a TLS client that does not trust the server's CA, or
//! that expects another name than the certificate's, fails its connect with the typed
//! error (`SocketError::Connect(TransportError::Io)` of kind `InvalidData` with the
//! `rustls::Error` inside), and never gets a socket.

use std::io;

use crate::support::tls::{client_config, echo_listener, pki};
use rustls::{CertificateError, Error as TlsError};
use sockactor::filters::Tls;
use sockactor::messages::StopListening;
use sockactor::{Socket, SocketError, SocketFunctions, TransportError};

/// The rustls error inside a failed connect, after checking its typed wrapping.
fn tls_error(error: &SocketError) -> TlsError {
    let SocketError::Connect(TransportError::Io(e)) = error else {
        panic!("not a connect i/o error: {error:?}");
    };
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>())
        .cloned()
        .unwrap_or_else(|| panic!("no rustls error inside: {e:?}"))
}

#[actix::test]
async fn a_client_that_does_not_trust_the_servers_ca_fails_the_connect() {
    let server_pki = pki(&["localhost"]);
    let other_pki = pki(&["localhost"]);
    let (listener, addr) =
        echo_listener(Tls::server(server_pki.server.clone()).wrap(SocketFunctions::system())).await;
    let connected = Socket::builder()
        .functions(
            Tls::client(client_config(other_pki.roots), "localhost")
                .expect("server name")
                .wrap(SocketFunctions::system()),
        )
        .connect(addr)
        .await;
    let error = connected.expect_err("an untrusted certificate fails the connect");
    assert_eq!(
        tls_error(&error),
        TlsError::InvalidCertificate(CertificateError::UnknownIssuer)
    );
    listener.send(StopListening).await.expect("listener");
}

#[actix::test]
async fn a_client_expecting_another_name_fails_the_connect() {
    let pki = pki(&["localhost"]);
    let (listener, addr) =
        echo_listener(Tls::server(pki.server.clone()).wrap(SocketFunctions::system())).await;
    let connected = Socket::builder()
        .functions(
            Tls::client(client_config(pki.roots), "example.com")
                .expect("server name")
                .wrap(SocketFunctions::system()),
        )
        .connect(addr)
        .await;
    let error = connected.expect_err("a certificate for another name fails the connect");
    assert!(
        matches!(
            tls_error(&error),
            TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{error:?}"
    );
    listener.send(StopListening).await.expect("listener");
}
