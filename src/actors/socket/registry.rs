//! [`Registry`]: every registered socket, by id, readable from any thread.

use std::sync::Arc;

use actix::{Addr, Recipient, WeakAddr, WeakRecipient};
use dashmap::DashMap;

use super::{Socket, Writer};
use crate::messages::interest::SocketInterest;
use crate::messages::socket::Close;
use crate::proto::SocketStats;
use crate::shared::Shared;
use crate::types::{Address, SocketId, UserData};

use crate::types::SocketState;

/// A registered socket: its address, peer, state, user data and live counters.
#[derive(Clone, Debug)]
pub struct SocketHandle {
    id: SocketId,
    peer: Option<Address>,
    state: SocketState,
    user_data: Option<UserData>,
    addr: WeakAddr<Socket>,
    shared: Arc<Shared>,
}

impl SocketHandle {
    /// The socket's id.
    pub fn id(&self) -> SocketId {
        self.id
    }

    /// The peer, where known.
    pub fn peer(&self) -> Option<&Address> {
        self.peer.as_ref()
    }

    /// Its state when this copy was taken.
    pub fn state(&self) -> SocketState {
        self.state
    }

    /// The user data assigned to it.
    pub fn user_data(&self) -> Option<&UserData> {
        self.user_data.as_ref()
    }

    /// The actor's address, while it runs. (The registry holds it weakly: being
    /// registered keeps no socket alive.)
    pub fn addr(&self) -> Option<Addr<Socket>> {
        self.addr.upgrade()
    }

    /// A writer to it (one that refuses with [`WriteError::Closed`](crate::WriteError::Closed)
    /// if its actor has ended).
    pub fn writer(&self) -> Writer {
        Writer::new(self.addr.upgrade(), self.shared.clone())
    }

    /// Its counters, as the socket last published them (after its latest turn).
    pub fn stats(&self) -> SocketStats {
        let mut stats = self.shared.published();
        stats.writes_failed += self.shared.refused();
        stats
    }
}

/// Every registered socket, by id: a `dashmap`, so lookups and iteration from any
/// thread do not stop the sockets. A socket is registered with
/// [`SocketBuilder::registry`](crate::SocketBuilder::registry) and removed when its actor
/// ends (also when the runtime drops it without stopping it), so the registry holds no
/// stale entries. Cheap to clone: clones share the map.
///
/// ```
/// use sockactor::{Registry, Socket};
///
/// # fn demo(registry: Registry) {
/// for socket in registry.iter() {
///     println!("{} {:?} {:?}", socket.id(), socket.peer(), socket.state());
/// }
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Registry {
    map: Arc<DashMap<SocketId, SocketHandle>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The socket with this id, if registered.
    pub fn get(&self, id: SocketId) -> Option<SocketHandle> {
        self.map.get(&id).map(|e| e.value().clone())
    }

    /// A snapshot of every registered socket.
    pub fn iter(&self) -> Vec<SocketHandle> {
        self.map.iter().map(|e| e.value().clone()).collect()
    }

    /// Registered sockets.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn insert(
        &self,
        shared: Arc<Shared>,
        addr: WeakAddr<Socket>,
        peer: Option<Address>,
        user_data: Option<UserData>,
    ) -> Registration {
        let id = shared.id;
        self.map.insert(
            id,
            SocketHandle {
                id,
                peer,
                state: SocketState::Open,
                user_data,
                addr,
                shared,
            },
        );
        Registration {
            registry: self.clone(),
            id,
        }
    }
}

/// A socket's entry in a registry; removes it when dropped (with the actor).
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Registry,
    id: SocketId,
}

impl Registration {
    pub(crate) fn set_state(&self, state: SocketState) {
        if let Some(mut e) = self.registry.map.get_mut(&self.id) {
            e.state = state;
        }
    }

    pub(crate) fn set_user_data(&self, data: Option<UserData>) {
        if let Some(mut e) = self.registry.map.get_mut(&self.id) {
            e.user_data = data;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.map.remove(&self.id);
    }
}

/// Sockets that share one interest subscriber, as transfers share a libcurl multi handle:
/// when the subscriber refuses a notification (answers `Err`), every socket of the group
/// is aborted, not only the one the notification was about.
///
/// [`SocketBuilder::interest_subscriber`](crate::SocketBuilder::interest_subscriber) makes
/// a group of one; [`SocketBuilder::interest_group`](crate::SocketBuilder::interest_group)
/// joins a shared one. Members leave when their actors end.
#[derive(Clone, Debug)]
pub struct InterestGroup {
    inner: Arc<GroupInner>,
}

#[derive(Debug)]
struct GroupInner {
    subscriber: Recipient<SocketInterest>,
    members: DashMap<SocketId, WeakRecipient<Close>>,
}

impl InterestGroup {
    /// A group whose sockets all report to `subscriber`.
    pub fn new(subscriber: Recipient<SocketInterest>) -> Self {
        InterestGroup {
            inner: Arc::new(GroupInner {
                subscriber,
                members: DashMap::new(),
            }),
        }
    }

    /// Sockets in the group.
    pub fn len(&self) -> usize {
        self.inner.members.len()
    }

    /// Whether the group has no socket.
    pub fn is_empty(&self) -> bool {
        self.inner.members.is_empty()
    }

    pub(crate) fn subscriber(&self) -> &Recipient<SocketInterest> {
        &self.inner.subscriber
    }

    pub(crate) fn join(&self, id: SocketId, close: WeakRecipient<Close>) -> Membership {
        self.inner.members.insert(id, close);
        Membership {
            group: self.clone(),
            id,
        }
    }

    /// Aborts every socket of the group (each answers its queued writes with
    /// `WriteError::Aborted`).
    pub(crate) fn abort_all(&self) {
        let members: Vec<_> = self
            .inner
            .members
            .iter()
            .filter_map(|m| m.value().upgrade())
            .collect();
        for socket in members {
            socket.do_send(Close::Abort);
        }
    }
}

/// A socket's place in an [`InterestGroup`]; leaves it when dropped (with the actor).
#[derive(Debug)]
pub(crate) struct Membership {
    group: InterestGroup,
    id: SocketId,
}

impl Membership {
    pub(crate) fn group(&self) -> &InterestGroup {
        &self.group
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.group.inner.members.remove(&self.id);
    }
}
