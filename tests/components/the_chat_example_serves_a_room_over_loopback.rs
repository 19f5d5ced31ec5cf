//! The chat example (`examples/chat.rs`, included here as a module) on 127.0.0.1:0 over
//! real TCP: lines reach every other member and never come back to their sender; `/who`
//! lists joined members only; nicknames must be valid and free; leaving is announced,
//! whether by `/quit`, by hanging up or by sending a line that is too long (a typed
//! decode error, counted); lines to a peer that never reads are dropped and counted
//! once its queue is full, while the others get every line; shutdown tells everyone,
//! closes every socket, empties the registry and stops listening, aborting a peer that
//! cannot drain after the grace period; and the scripted demo passes its own checks.

#[path = "../../examples/chat.rs"]
#[allow(dead_code)]
mod chat;

use std::net::SocketAddr;
use std::time::Duration;

use chat::{ChatClient, ChatConfig, ChatServer, Heard};
use sockactor::messages::Write;
use sockactor::{Socket, SocketError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Generous: these run on the real clock, on a shared machine.
const WAIT: Duration = Duration::from_secs(30);

async fn server() -> ChatServer {
    server_with(ChatConfig::default()).await
}

async fn server_with(config: ChatConfig) -> ChatServer {
    ChatServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .expect("listen on loopback")
}

/// Joins as `nick` and checks the welcome.
async fn join(server: &ChatServer, nick: &str, online: &str) -> ChatClient {
    let mut client = ChatClient::join(server.local_addr(), nick)
        .await
        .expect("connect");
    assert_eq!(
        line(&mut client).await,
        format!("* welcome, {nick}! online: {online}")
    );
    client
}

/// The client's next line (failing if the connection ends instead).
async fn line(client: &mut ChatClient) -> String {
    match tokio::time::timeout(WAIT, client.next()).await {
        Ok(Some(Heard::Line { text, .. })) => text,
        Ok(other) => panic!("expected a line, got {other:?}"),
        Err(_) => panic!("no line within {WAIT:?}"),
    }
}

/// The client's connection must end now, with no line before.
async fn disconnected(client: &mut ChatClient) -> String {
    match tokio::time::timeout(WAIT, client.next()).await {
        Ok(Some(Heard::Closed(why))) => why,
        Ok(other) => panic!("expected the end of the connection, got {other:?}"),
        Err(_) => panic!("still connected after {WAIT:?}"),
    }
}

/// A peer that joins as `nick` and never reads: a sockactor socket without a subscriber.
async fn lurker(server: &ChatServer, nick: &str) -> actix::Addr<Socket> {
    let socket = Socket::builder()
        .connect(server.local_addr())
        .await
        .expect("connect");
    socket
        .send(Write::new(format!("{nick}\n").into_bytes()))
        .await
        .expect("mailbox")
        .expect("written");
    socket
}

/// `flood` sends rounds of 256 lines of 1000 bytes, each round ended by `/who` (whose
/// answer means the server has broadcast every line before it), until the server drops a
/// line; each round, `reader` (if any) must get exactly the round's lines. Answers how
/// many lines were sent.
async fn flood_until_dropping(
    server: &ChatServer,
    flood: &mut ChatClient,
    mut reader: Option<&mut ChatClient>,
    online: &str,
) -> usize {
    let text = "f".repeat(1000);
    let mut sent = 0;
    while server.dropped() == 0 {
        assert!(sent < 64 * 1024, "{sent} lines and no queue filled");
        for _ in 0..256 {
            flood.say(&text).expect("queued");
        }
        sent += 256;
        flood.say("/who").expect("queued");
        assert_eq!(line(flood).await, format!("* online: {online}"));
        if let Some(reader) = reader.as_deref_mut() {
            for _ in 0..256 {
                assert_eq!(line(reader).await, format!("flood: {text}"));
            }
        }
    }
    sent
}

#[actix::test]
async fn a_line_reaches_every_other_member_but_not_its_sender() {
    let server = server().await;
    let mut alice = join(&server, "alice", "alice").await;
    let mut bob = join(&server, "bob", "alice, bob").await;
    assert_eq!(line(&mut alice).await, "* bob joined");
    let mut carol = join(&server, "carol", "alice, bob, carol").await;
    assert_eq!(line(&mut alice).await, "* carol joined");
    assert_eq!(line(&mut bob).await, "* carol joined");

    alice.say("hello").expect("queued");
    assert_eq!(line(&mut bob).await, "alice: hello");
    assert_eq!(line(&mut carol).await, "alice: hello");
    // Her own line, had it come back, would be ahead of this answer.
    alice.say("/who").expect("queued");
    assert_eq!(line(&mut alice).await, "* online: alice, bob, carol");
    assert_eq!(server.relayed(), 1);
}

#[actix::test]
async fn who_lists_only_members_that_have_given_a_nickname() {
    let server = server().await;
    let mut alice = join(&server, "alice", "alice").await;
    let mut unnamed = ChatClient::connect(server.local_addr())
        .await
        .expect("connect");
    alice.say("/who").expect("queued");
    assert_eq!(line(&mut alice).await, "* online: alice");

    unnamed.say("zed").expect("queued");
    assert_eq!(
        line(&mut unnamed).await,
        "* welcome, zed! online: alice, zed"
    );
    assert_eq!(line(&mut alice).await, "* zed joined");
    alice.say("/who").expect("queued");
    assert_eq!(line(&mut alice).await, "* online: alice, zed");
}

#[actix::test]
async fn an_invalid_or_taken_nickname_is_refused_until_a_good_one_comes() {
    let server = server().await;
    let mut alice = join(&server, "alice", "alice").await;
    let mut second = ChatClient::connect(server.local_addr())
        .await
        .expect("connect");
    second.say("alice").expect("queued");
    assert_eq!(
        line(&mut second).await,
        "* the nickname alice is taken; pick another"
    );
    second.say("not a nick!").expect("queued");
    assert_eq!(
        line(&mut second).await,
        "* a nickname is 1 to 32 letters, digits, '-' or '_'; pick another"
    );
    second.say("alicia").expect("queued");
    assert_eq!(
        line(&mut second).await,
        "* welcome, alicia! online: alice, alicia"
    );
    // Alice heard of the one join, nothing of the refused attempts.
    assert_eq!(line(&mut alice).await, "* alicia joined");
}

#[actix::test]
async fn quit_says_goodbye_closes_the_connection_and_tells_the_others() {
    let server = server().await;
    let mut alice = join(&server, "alice", "alice").await;
    let mut bob = join(&server, "bob", "alice, bob").await;
    assert_eq!(line(&mut alice).await, "* bob joined");

    bob.say("/quit").expect("queued");
    assert_eq!(line(&mut bob).await, "* bye, bob");
    assert_eq!(disconnected(&mut bob).await, "closed by the server");
    assert_eq!(line(&mut alice).await, "* bob left");
    alice.say("/who").expect("queued");
    assert_eq!(line(&mut alice).await, "* online: alice");
}

#[actix::test]
async fn a_member_that_hangs_up_is_announced_as_gone() {
    let server = server().await;
    let mut alice = join(&server, "alice", "alice").await;
    // A plain TCP peer, as `nc` would be.
    let mut bob = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    bob.write_all(b"bob\n").await.expect("send");
    let mut welcome = String::new();
    BufReader::new(&mut bob)
        .read_line(&mut welcome)
        .await
        .expect("read");
    assert_eq!(welcome, "* welcome, bob! online: alice, bob\n");
    assert_eq!(line(&mut alice).await, "* bob joined");

    drop(bob);
    assert_eq!(line(&mut alice).await, "* bob left");
}

#[actix::test]
async fn dropping_a_client_hangs_up() {
    let server = server().await;
    let mut alice = join(&server, "alice", "alice").await;
    let bob = join(&server, "bob", "alice, bob").await;
    assert_eq!(line(&mut alice).await, "* bob joined");

    drop(bob);
    assert_eq!(line(&mut alice).await, "* bob left");
}

#[actix::test]
async fn a_line_too_long_disconnects_only_its_sender_and_the_others_are_told_why() {
    let server = server().await;
    let mut alice = join(&server, "alice", "alice").await;
    let mut dave = join(&server, "dave", "alice, dave").await;
    assert_eq!(line(&mut alice).await, "* dave joined");

    dave.say(&"x".repeat(1025)).expect("queued");
    disconnected(&mut dave).await;
    assert_eq!(
        line(&mut alice).await,
        "* dave left (sent a line longer than 1024 bytes)"
    );
    assert_eq!(server.rejected(), 1, "the decode error was counted");
    assert_eq!(server.relayed(), 0, "nothing of the long line was relayed");
    alice.say("/who").expect("queued");
    assert_eq!(line(&mut alice).await, "* online: alice");
}

#[actix::test]
async fn a_line_of_exactly_the_limit_is_relayed() {
    let server = server().await;
    let mut alice = join(&server, "alice", "alice").await;
    let dave = join(&server, "dave", "alice, dave").await;
    assert_eq!(line(&mut alice).await, "* dave joined");

    let longest = "y".repeat(1024);
    dave.say(&longest).expect("queued");
    assert_eq!(line(&mut alice).await, format!("dave: {longest}"));
    assert_eq!(server.rejected(), 0);
}

#[actix::test]
async fn lines_to_a_peer_that_never_reads_are_dropped_and_counted_while_the_others_get_all() {
    let server = server().await;
    let _lurker = lurker(&server, "lurker").await;
    let mut flood = join(&server, "flood", "flood, lurker").await;
    let mut reader = join(&server, "reader", "flood, lurker, reader").await;
    assert_eq!(line(&mut flood).await, "* reader joined");

    let sent = flood_until_dropping(
        &server,
        &mut flood,
        Some(&mut reader),
        "flood, lurker, reader",
    )
    .await;

    let (stats, dropped) = server.member_stats("lurker").expect("lurker online");
    assert!(dropped > 0);
    assert_eq!(dropped, server.dropped(), "only the lurker lost lines");
    // Its welcome, two joins and every flood line: each queued, or refused and counted.
    let addressed = 3 + sent as u64;
    assert_eq!(stats.writes + stats.writes_failed, addressed);
    assert_eq!(stats.writes_failed, dropped, "the socket's count agrees");
    let high = ChatConfig::default().queue.high_watermark as u64;
    assert!(
        stats.queued_bytes <= high + 1007,
        "queue bounded by the high watermark plus one line, holds {}",
        stats.queued_bytes
    );
    // The reader got every line (checked round by round), and nothing else since.
    reader.say("/who").expect("queued");
    assert_eq!(line(&mut reader).await, "* online: flood, lurker, reader");
}

#[actix::test]
async fn shutdown_tells_everyone_closes_every_socket_empties_the_registry_and_stops_listening() {
    let server = server().await;
    let addr = server.local_addr();
    let registry = server.registry();
    let mut alice = join(&server, "alice", "alice").await;
    let mut bob = join(&server, "bob", "alice, bob").await;
    assert_eq!(line(&mut alice).await, "* bob joined");
    let mut unnamed = ChatClient::connect(addr).await.expect("connect");
    // Its answer means the server has registered the unnamed connection too.
    unnamed.say("/").expect("queued");
    assert_eq!(
        line(&mut unnamed).await,
        "* a nickname is 1 to 32 letters, digits, '-' or '_'; pick another"
    );
    assert_eq!(registry.len(), 3);

    let report = tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shut down in time")
        .expect("shut down");

    assert_eq!((report.told, report.closed, report.aborted), (3, 3, 0));
    assert!(registry.is_empty(), "every socket's actor has ended");
    for client in [&mut alice, &mut bob, &mut unnamed] {
        assert_eq!(line(client).await, "* server shutting down");
        assert_eq!(disconnected(client).await, "closed by the server");
    }
    match Socket::builder().connect(addr).await {
        Err(SocketError::Refused(_)) => {}
        other => panic!("connecting after shutdown: {other:?}"),
    }
}

#[actix::test]
async fn shutdown_aborts_a_peer_that_cannot_drain_after_the_grace_period() {
    let server = server_with(ChatConfig {
        shutdown_grace: Duration::from_millis(300),
        ..ChatConfig::default()
    })
    .await;
    let registry = server.registry();
    let _lurker = lurker(&server, "lurker").await;
    let mut flood = join(&server, "flood", "flood, lurker").await;
    flood_until_dropping(&server, &mut flood, None, "flood, lurker").await;

    let report = tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shut down in time")
        .expect("shut down");

    // The lurker's full queue refused the notice; the flood took it and drained.
    assert_eq!((report.told, report.closed, report.aborted), (1, 2, 1));
    assert!(registry.is_empty());
    assert_eq!(line(&mut flood).await, "* server shutting down");
    assert_eq!(disconnected(&mut flood).await, "closed by the server");
}

#[actix::test]
async fn the_scripted_demo_passes_its_own_checks() {
    tokio::time::timeout(WAIT, chat::run_demo())
        .await
        .expect("demo within the time limit")
        .expect("demo checks");
}
