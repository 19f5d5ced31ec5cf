//! Producers and subscribers ↔ [`DatagramSocket`](crate::DatagramSocket).

use actix::Message;
use bytes::Bytes;

use crate::batch::IoBatch;
use crate::error::{DatagramError, TransportError};
pub use crate::proto::{DatagramSent, DatagramStats};
use crate::types::{Address, Handle, SocketId};

/// Send one datagram: the payload's segments, in order, as one datagram. Handled by
/// [`DatagramSocket`](crate::DatagramSocket).
///
/// Datagrams leave in the order the socket receives them, each whole, never merged with
/// another. The answer comes when the transport has taken it ([`DatagramSent`]) or it has
/// failed ([`DatagramError`]). With `Addr::do_send`, failures go to the subscriber as
/// [`DatagramEventKind::SendFailed`].
///
/// ```
/// use sockactor::messages::SendDatagram;
///
/// let to: std::net::SocketAddr = "127.0.0.1:5353".parse().expect("addr");
/// let d = SendDatagram::new(&b"query"[..]).to(to).tag(1);
/// assert_eq!(d.len(), 5);
/// ```
#[derive(Debug)]
pub struct SendDatagram {
    pub(crate) payload: IoBatch,
    pub(crate) to: Option<Address>,
    pub(crate) tag: Option<u64>,
}

impl SendDatagram {
    /// A datagram of `payload` (anything that converts: `Bytes`, `Vec<u8>`, `Vec<Bytes>`…),
    /// to the connected peer unless [`to`](Self::to) names a destination.
    pub fn new(payload: impl Into<IoBatch>) -> Self {
        SendDatagram {
            payload: payload.into(),
            to: None,
            tag: None,
        }
    }

    /// The destination (needed on a socket that is not connected).
    pub fn to(mut self, addr: impl Into<Address>) -> Self {
        self.to = Some(addr.into());
        self
    }

    /// Labels the datagram, to recognise it in [`DatagramEventKind::SendFailed`].
    pub fn tag(mut self, tag: u64) -> Self {
        self.tag = Some(tag);
        self
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// Whether the payload is empty (an empty datagram is still a datagram).
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }
}

impl Message for SendDatagram {
    type Result = Result<DatagramSent, DatagramError>;
}

/// A notification from a datagram socket to its subscriber.
#[derive(Debug)]
pub struct DatagramEvent {
    /// The socket it concerns.
    pub socket: SocketId,
    /// What happened.
    pub kind: DatagramEventKind,
}

impl Message for DatagramEvent {
    type Result = ();
}

/// What a [`DatagramEvent`] reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum DatagramEventKind {
    /// A datagram arrived, whole unless `truncated`.
    Received {
        /// The datagram (its first `max_datagram_size` bytes when truncated).
        bytes: Bytes,
        /// The sender, where the transport knows it.
        from: Option<Address>,
        /// The datagram was longer than the socket's
        /// [`max_datagram_size`](crate::DatagramConfig::max_datagram_size): `bytes` is only
        /// its beginning, the rest is lost.
        truncated: bool,
    },
    /// A receive failed with an input/output error (an ICMP error reported on a
    /// connected socket, say); the socket goes on reading. Other errors close it.
    ReadFailed(TransportError),
    /// A datagram sent with `do_send` failed.
    SendFailed {
        /// Its tag, if it had one.
        tag: Option<u64>,
        /// Why.
        error: DatagramError,
    },
    /// The socket closed; `cause` is the transport error that closed it, if any.
    Closed {
        /// The transport error, if one closed it.
        cause: Option<TransportError>,
    },
}

/// Ask a datagram socket who it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct GetDatagramInfo;

impl Message for GetDatagramInfo {
    type Result = DatagramInfo;
}

/// A datagram socket's identity and state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatagramInfo {
    /// Its id (from the same sequence as stream sockets').
    pub id: SocketId,
    /// Its transport handle.
    pub handle: Handle,
    /// The local address it was bound to, if it was bound explicitly.
    pub local: Option<Address>,
    /// The peer, if it is connected.
    pub peer: Option<Address>,
    /// Whether it still takes datagrams.
    pub open: bool,
}

/// Ask a datagram socket for its counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct GetDatagramStats;

impl Message for GetDatagramStats {
    type Result = DatagramStats;
}
