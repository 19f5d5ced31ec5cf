//! [`Registry`]: every registered socket, by id, readable from any thread.

use std::sync::Arc;

use actix::{Addr, WeakAddr};
use dashmap::DashMap;

use crate::actors::socket::Socket;
use crate::actors::writer::{Core, Writer};
use crate::messages::functions::Address;
use crate::messages::interest::UserData;
use crate::messages::socket::{SocketId, SocketStats};

/// Where a socket is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketState {
    /// Taking writes.
    Open,
    /// Closing gracefully: no new writes, the queue draining.
    Draining,
    /// Closed: the handle is gone; the actor stops when its last address is dropped.
    Closed,
}

/// A registered socket: its address, peer, state, user data and live counters.
#[derive(Clone, Debug)]
pub struct SocketHandle {
    id: SocketId,
    peer: Option<Address>,
    state: SocketState,
    user_data: Option<UserData>,
    addr: WeakAddr<Socket>,
    core: Arc<Core>,
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

    /// A writer into its queue.
    pub fn writer(&self) -> Writer {
        Writer::new(self.core.clone())
    }

    /// Its counters, now.
    pub fn stats(&self) -> SocketStats {
        let st = self.core.lock();
        st.stats.stats(st.queue.queued_bytes(), st.queue.len())
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
        core: Arc<Core>,
        addr: WeakAddr<Socket>,
        peer: Option<Address>,
        user_data: Option<UserData>,
    ) -> Registration {
        let id = core.id;
        self.map.insert(
            id,
            SocketHandle {
                id,
                peer,
                state: SocketState::Open,
                user_data,
                addr,
                core,
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
