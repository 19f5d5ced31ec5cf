//! TLS and compression stacked over loopback TCP: a sockactor listener on 127.0.0.1
//! whose sockets compress, then encrypt (the `Compress` filter over the `Tls` server
//! filter), echoes what a client with the same stack (`Tls::client`) writes. The
//! certificates (a CA and a leaf for "localhost") are made at start with rcgen. The
//! client writes 8 MiB of half-compressible data in 64 KiB writes, checks that the echo is
//! byte exact, prints the echoed bytes per second and "tls echo: OK", and exits (within
//! 20 s in any case). Run it with `cargo run --release --example tls_echo`.

use std::collections::HashMap;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sockactor::filters::{Compress, Tls};
use sockactor::messages::{
    Address, Close, ListenerEvent, SocketEvent, SocketEventKind, SocketId, StopListening, Write,
};
use sockactor::{Listener, Socket, SocketFunctions};
use tracing_subscriber::EnvFilter;

const TOTAL: usize = 8 << 20;
const WRITE: usize = 64 << 10;
const DEADLINE: Duration = Duration::from_secs(20);

/// The server side: writes back whatever an accepted socket receives.
#[derive(Default)]
struct Echo {
    sockets: HashMap<SocketId, Addr<Socket>>,
}

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<ListenerEvent> for Echo {
    type Result = ();
    fn handle(&mut self, event: ListenerEvent, _: &mut Context<Self>) {
        match event {
            ListenerEvent::Accepted { socket, id, .. } => {
                self.sockets.insert(id, socket);
            }
            ListenerEvent::AcceptFailed { error } => tracing::warn!(%error, "accept failed"),
            _ => {}
        }
    }
}

impl Handler<SocketEvent> for Echo {
    type Result = ();
    fn handle(&mut self, event: SocketEvent, _: &mut Context<Self>) {
        let Some(socket) = self.sockets.get(&event.socket) else {
            return;
        };
        match event.kind {
            SocketEventKind::Received(bytes) => socket.do_send(Write::new(bytes).wait_when_full()),
            SocketEventKind::Eof => socket.do_send(Close::Graceful),
            SocketEventKind::Closed { .. } => {
                self.sockets.remove(&event.socket);
            }
            _ => {}
        }
    }
}

/// A CA's root store, and a server config with a leaf for "localhost" the CA signed.
fn certificates() -> Result<(RootCertStore, ServerConfig), Box<dyn Error>> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tls_echo example CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate()?;
    let leaf =
        CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&leaf_key, &issuer)?;
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)?;
    Ok((roots, server))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Half noise, half text: something deflate shrinks, but not to nothing.
fn payload() -> Bytes {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let text = b"sockactor: tls over compress over tcp. "
        .iter()
        .copied()
        .cycle();
    let noise = std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Some((x >> 24) as u8)
    });
    noise
        .take(TOTAL / 2)
        .chain(text)
        .take(TOTAL)
        .collect::<Vec<u8>>()
        .into()
}

async fn run() -> Result<(), Box<dyn Error>> {
    let (roots, server_config) = certificates()?;
    let echo = Echo::default().start();
    let subscriber = echo.clone();
    // Compress outermost: the plaintext is compressed, then encrypted.
    let server_stack =
        Compress::new().wrap(Tls::server(Arc::new(server_config)).wrap(SocketFunctions::system()));
    let (listener, local) = Listener::builder()
        .functions(server_stack)
        .subscriber(echo.clone().recipient())
        .socket_builder(move |_| Socket::builder().subscriber(subscriber.clone().recipient()))
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;
    let Address::Inet(addr) = local else {
        return Err("an inet listener without an inet address".into());
    };

    let client_config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client_stack = Compress::new()
        .wrap(Tls::client(Arc::new(client_config), "localhost")?.wrap(SocketFunctions::system()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let collector = Collector(tx).start();
    let client = Socket::builder()
        .functions(client_stack)
        .subscriber(collector.recipient())
        .connect(addr)
        .await?;

    let data = payload();
    let start = Instant::now();
    let mut answers = Vec::new();
    for offset in (0..TOTAL).step_by(WRITE) {
        let chunk = data.slice(offset..(offset + WRITE).min(TOTAL));
        // Spawned, so every write reaches the socket's mailbox (it holds only a few).
        answers.push(actix::spawn(
            client.send(Write::new(chunk).wait_when_full()),
        ));
    }
    let mut back = Vec::with_capacity(TOTAL);
    while back.len() < TOTAL {
        match rx.recv().await {
            Some(SocketEventKind::Received(bytes)) => back.extend_from_slice(&bytes),
            Some(other) => return Err(format!("unexpected event {other:?}").into()),
            None => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    for answer in answers {
        answer.await???;
    }
    if back != data {
        return Err(format!("the echo differs: {} of {TOTAL} bytes back", back.len()).into());
    }
    println!(
        "{TOTAL} bytes through TLS + deflate and back in {secs:.3} s: {:.1} MB/s echoed",
        TOTAL as f64 / 1e6 / secs
    );
    client.do_send(Close::Graceful);
    listener.send(StopListening).await?;
    println!("tls echo: OK");
    Ok(())
}

/// Forwards the client socket's events into a channel.
struct Collector(tokio::sync::mpsc::UnboundedSender<SocketEventKind>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<SocketEvent> for Collector {
    type Result = ();
    fn handle(&mut self, event: SocketEvent, _: &mut Context<Self>) {
        let _ = self.0.send(event.kind);
    }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let subscriber = tracing_subscriber::fmt().with_writer(std::io::stderr);
    subscriber.with_env_filter(filter).init();
    match tokio::time::timeout(DEADLINE, run()).await {
        Ok(result) => result,
        Err(_) => Err(format!("tls echo: no echo within {DEADLINE:?}").into()),
    }
}
