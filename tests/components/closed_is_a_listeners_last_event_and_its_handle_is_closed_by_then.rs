//! `ListenerEvent::Closed` comes last and means what it says: no `Accepted` follows it,
//! even for connections whose sockets were still starting when the listener stopped, and
//! by the time it is heard the listening handle is closed (the port refuses connections,
//! a Unix path is gone), wherever the listener runs.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{channel, TempPath};
use sockactor::messages::{Address, ListenerEvent, StopListening};
use sockactor::{Listener, SocketSystem};

const LONG: Duration = Duration::from_secs(10);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Every event until the listener and its starting sockets have all let go of the
/// subscriber.
async fn every_event(
    heard: &mut tokio::sync::mpsc::UnboundedReceiver<ListenerEvent>,
) -> Vec<ListenerEvent> {
    let mut events = Vec::new();
    while let Some(event) = tokio::time::timeout(LONG, heard.recv())
        .await
        .expect("the events end")
    {
        events.push(event);
    }
    events
}

async fn wait_for_closed(heard: &mut tokio::sync::mpsc::UnboundedReceiver<ListenerEvent>) {
    loop {
        let event = tokio::time::timeout(LONG, heard.recv())
            .await
            .expect("Closed comes")
            .expect("alive");
        if matches!(event, ListenerEvent::Closed) {
            return;
        }
    }
}

#[actix::test]
async fn no_accepted_follows_closed_while_a_burst_is_being_accepted() {
    for _ in 0..3 {
        let (events, mut heard) = channel::<ListenerEvent>();
        let (listener, local) = Listener::builder()
            .subscriber(events)
            .bind(loopback())
            .await
            .expect("bind");
        let Address::Inet(addr) = local else {
            panic!("{local:?}")
        };
        let clients: Vec<_> = (0..64)
            .map(|_| tokio::spawn(tokio::net::TcpStream::connect(addr)))
            .collect();
        let first = tokio::time::timeout(LONG, heard.recv())
            .await
            .expect("an event")
            .expect("alive");
        assert!(matches!(first, ListenerEvent::Accepted { .. }), "{first:?}");
        listener.do_send(StopListening);
        drop(listener);
        let rest = every_event(&mut heard).await;
        assert!(
            matches!(rest.last(), Some(ListenerEvent::Closed)),
            "Closed is the last event: {:?}",
            rest.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>()
        );
        for client in clients {
            let _ = client.await;
        }
    }
}

#[actix::test]
async fn once_closed_is_heard_the_port_refuses_connections() {
    let system = SocketSystem::builder().arbiters(1).start().expect("start");
    for _ in 0..10 {
        let (events, mut heard) = channel::<ListenerEvent>();
        let (listener, local) = system
            .run_on(0, move || async move {
                Listener::builder()
                    .subscriber(events)
                    .bind(loopback())
                    .await
            })
            .await
            .expect("on the arbiter")
            .expect("bind");
        let Address::Inet(addr) = local else {
            panic!("{local:?}")
        };
        listener.do_send(StopListening);
        wait_for_closed(&mut heard).await;
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "a connection taken after Closed was heard"
        );
    }
    system.shutdown().await.expect("shutdown");
}

#[actix::test]
async fn once_closed_is_heard_the_unix_path_is_gone() {
    let system = SocketSystem::builder().arbiters(1).start().expect("start");
    for i in 0..10 {
        let path = TempPath::new(&format!("closed-{i}.sock"));
        let (events, mut heard) = channel::<ListenerEvent>();
        let bound = path.0.clone();
        let (listener, _) = system
            .run_on(0, move || async move {
                Listener::builder()
                    .subscriber(events)
                    .bind(Address::Unix(bound))
                    .await
            })
            .await
            .expect("on the arbiter")
            .expect("bind");
        assert!(path.0.exists());
        listener.do_send(StopListening);
        wait_for_closed(&mut heard).await;
        assert!(!path.0.exists(), "the path is gone when Closed is heard");
    }
    system.shutdown().await.expect("shutdown");
}
