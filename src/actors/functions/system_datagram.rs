//! [`SystemDatagram`]: a datagram socket (UDP or Unix domain) of the system transport,
//! as tokio's, with the calls the transport and a datagram socket in place make on it.

use std::io;
#[cfg(unix)]
use std::path::PathBuf;

use tokio::net::UdpSocket;

use crate::types::{Address, Readiness};

/// A datagram socket of the system transport.
#[derive(Debug)]
pub(crate) enum SystemDatagram {
    Udp(UdpSocket),
    #[cfg(unix)]
    Unix {
        socket: tokio::net::UnixDatagram,
        /// The path this transport bound, removed when the handle closes.
        bound: Option<PathBuf>,
    },
}

impl SystemDatagram {
    pub(crate) fn try_send(&self, payload: &[u8]) -> io::Result<usize> {
        match self {
            SystemDatagram::Udp(udp) => udp.try_send(payload),
            #[cfg(unix)]
            SystemDatagram::Unix { socket, .. } => socket.try_send(payload),
        }
    }

    pub(crate) fn try_send_to(&self, payload: &[u8], to: &Address) -> io::Result<usize> {
        match (self, to) {
            (SystemDatagram::Udp(udp), Address::Inet(to)) => udp.try_send_to(payload, *to),
            #[cfg(unix)]
            (SystemDatagram::Unix { socket, .. }, Address::Unix(path)) => {
                socket.try_send_to(payload, path)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the destination is not of the socket's family",
            )),
        }
    }

    pub(crate) fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Address)> {
        match self {
            SystemDatagram::Udp(udp) => udp
                .try_recv_from(buf)
                .map(|(n, from)| (n, Address::Inet(from))),
            #[cfg(unix)]
            SystemDatagram::Unix { socket, .. } => socket.try_recv_from(buf).map(|(n, from)| {
                let path = from.as_pathname().map(PathBuf::from).unwrap_or_default();
                (n, Address::Unix(path))
            }),
        }
    }

    pub(crate) async fn ready(&self, readiness: Readiness) {
        // An error here surfaces on the retry, so it is not reported twice.
        let _ = match (self, readiness) {
            (SystemDatagram::Udp(udp), Readiness::Readable) => udp.readable().await,
            (SystemDatagram::Udp(udp), Readiness::Writable) => udp.writable().await,
            #[cfg(unix)]
            (SystemDatagram::Unix { socket, .. }, Readiness::Readable) => socket.readable().await,
            #[cfg(unix)]
            (SystemDatagram::Unix { socket, .. }, Readiness::Writable) => socket.writable().await,
        };
    }

    pub(crate) fn connect(&self, to: &Address) -> io::Result<()> {
        match (self, to) {
            (SystemDatagram::Udp(udp), Address::Inet(addr)) => {
                socket2::SockRef::from(udp).connect(&(*addr).into())
            }
            #[cfg(unix)]
            (SystemDatagram::Unix { socket, .. }, Address::Unix(path)) => socket.connect(path),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "connect: the address is not of the socket's family",
            )),
        }
    }

    /// The Unix path this transport bound, if any.
    #[cfg(unix)]
    pub(crate) fn bound(&self) -> Option<&PathBuf> {
        match self {
            SystemDatagram::Unix { bound, .. } => bound.as_ref(),
            SystemDatagram::Udp(_) => None,
        }
    }
}

/// Most datagrams in one batched call.
pub(crate) const MAX_BATCH: usize = 64;

/// Most bytes of receive buffer a batch uses (a batch of datagrams as long as the socket
/// takes whole fits in it; at least one datagram always does).
const BATCH_BYTES: usize = 1 << 20;

/// How many datagrams of at most `max_len` bytes one receive call takes, of `wanted`.
pub(crate) fn recv_batch_len(max_len: usize, wanted: usize) -> usize {
    wanted
        .min(MAX_BATCH)
        .min(BATCH_BYTES / max_len.max(1))
        .max(1)
}

thread_local! {
    /// The receive buffer of the datagram sockets of this thread: a batch is received
    /// here and each datagram copied out at its exact length, so a small datagram pins no
    /// large allocation and idle sockets hold no buffer. Pages are touched only as
    /// datagrams fill them.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl SystemDatagram {
    /// Readiness for `readiness`; the waker is kept in the socket's own slot (one
    /// waiter: the datagram socket calling it in place).
    pub(crate) fn poll_ready(
        &self,
        readiness: Readiness,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match (self, readiness) {
            (SystemDatagram::Udp(udp), Readiness::Writable) => udp.poll_send_ready(cx),
            (SystemDatagram::Udp(udp), Readiness::Readable) => udp.poll_recv_ready(cx),
            #[cfg(unix)]
            (SystemDatagram::Unix { socket, .. }, Readiness::Writable) => {
                socket.poll_send_ready(cx)
            }
            #[cfg(unix)]
            (SystemDatagram::Unix { socket, .. }, Readiness::Readable) => {
                socket.poll_recv_ready(cx)
            }
        }
    }

    /// Sends the datagrams in order, each whole and to its own destination (`None`: the
    /// connected peer), in one call where the OS batches them (`sendmmsg`), else one call
    /// each. Pushes the bytes sent of each datagram the kernel took onto `sent`, in
    /// order, and stops at the first it did not take: its error (would-block included)
    /// is the answer only when it was the first of the batch; otherwise the next call
    /// meets it.
    pub(crate) fn try_send_batch<'a>(
        &self,
        batch: impl Iterator<Item = (&'a crate::batch::IoBatch, Option<&'a Address>)>,
        sent: &mut Vec<usize>,
    ) -> io::Result<()> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            mmsg::send(self, batch, sent)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            for (payload, to) in batch {
                let joined = match payload.to_vec() {
                    Ok(joined) => joined,
                    Err(_) if !sent.is_empty() => return Ok(()),
                    Err(e) => return Err(e),
                };
                let result = match to {
                    None => self.try_send(&joined),
                    Some(to) => self.try_send_to(&joined, to),
                };
                match result {
                    Ok(n) => sent.push(n),
                    Err(_) if !sent.is_empty() => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
    }

    /// Receives up to `count` datagrams (see [`recv_batch_len`]) in one call where the
    /// OS batches them (`recvmmsg`), else one call each, handing each to `each` with its
    /// sender and whether it was longer than `max_len` (then only its first `max_len`
    /// bytes are given). Answers how many; would-block (or an error) only when none.
    pub(crate) fn try_recv_batch(
        &self,
        max_len: usize,
        count: usize,
        mut each: impl FnMut(&[u8], Address, bool),
    ) -> io::Result<usize> {
        let count = recv_batch_len(max_len, count);
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            #[cfg(any(target_os = "linux", target_os = "android"))]
            {
                mmsg::recv(self, &mut scratch, max_len, count, &mut each)
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            {
                // One byte more than asked: a datagram that fills it was longer.
                let room = max_len.saturating_add(1);
                if scratch.len() < room {
                    scratch.resize(room, 0);
                }
                let mut got = 0;
                while got < count {
                    match self.try_recv_from(&mut scratch[..room]) {
                        Ok((n, from)) => {
                            each(&scratch[..n.min(max_len)], from, n > max_len);
                            got += 1;
                        }
                        Err(_) if got > 0 => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(got)
            }
        })
    }

    /// Runs a raw call on the socket through tokio, which clears its readiness when the
    /// call would block.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn try_io<R>(
        &self,
        interest: tokio::io::Interest,
        call: impl FnOnce(std::os::fd::RawFd) -> io::Result<R>,
    ) -> io::Result<R> {
        use std::os::fd::AsRawFd;
        match self {
            SystemDatagram::Udp(udp) => udp.try_io(interest, || call(udp.as_raw_fd())),
            SystemDatagram::Unix { socket, .. } => {
                socket.try_io(interest, || call(socket.as_raw_fd()))
            }
        }
    }

    fn is_unix(&self) -> bool {
        #[cfg(unix)]
        {
            matches!(self, SystemDatagram::Unix { .. })
        }
        #[cfg(not(unix))]
        {
            false
        }
    }
}

/// `sendmmsg(2)` and `recvmmsg(2)`.
#[cfg(any(target_os = "linux", target_os = "android"))]
mod mmsg {
    use std::io;
    use std::path::PathBuf;

    use socket2::{SockAddr, SockAddrStorage};
    use tokio::io::Interest;

    use super::SystemDatagram;
    use crate::batch::IoBatch;
    use crate::types::Address;

    /// A destination as the kernel takes it.
    fn sockaddr(to: &Address) -> io::Result<SockAddr> {
        match to {
            Address::Inet(addr) => Ok(SockAddr::from(*addr)),
            Address::Unix(path) => SockAddr::unix(path),
        }
    }

    pub(super) fn send<'a>(
        socket: &SystemDatagram,
        batch: impl Iterator<Item = (&'a IoBatch, Option<&'a Address>)>,
        sent: &mut Vec<usize>,
    ) -> io::Result<()> {
        let mut names: Vec<Option<SockAddr>> = Vec::with_capacity(super::MAX_BATCH);
        let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(super::MAX_BATCH);
        // Where each datagram's segments start in `iovecs`.
        let mut starts: Vec<usize> = Vec::with_capacity(super::MAX_BATCH + 1);
        for (payload, to) in batch.take(super::MAX_BATCH) {
            let name = match to.map(sockaddr).transpose() {
                Ok(name) => name,
                // A destination the kernel cannot take: what came before goes now, and
                // this one meets its error as the first of the next call.
                Err(_) if !names.is_empty() => break,
                Err(e) => return Err(e),
            };
            if let Some(addr) = &name {
                if addr.is_unix() != socket.is_unix() {
                    if names.is_empty() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "the destination is not of the socket's family",
                        ));
                    }
                    break;
                }
            }
            starts.push(iovecs.len());
            for segment in payload.segments() {
                // A datagram's file ranges were read into memory when it was queued.
                if let Some(bytes) = segment.as_bytes() {
                    iovecs.push(libc::iovec {
                        iov_base: bytes.as_ptr() as *mut libc::c_void,
                        iov_len: bytes.len(),
                    });
                }
            }
            names.push(name);
        }
        starts.push(iovecs.len());
        if names.is_empty() {
            return Ok(());
        }
        let mut headers: Vec<libc::mmsghdr> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                // SAFETY: an all-zero `msghdr` is valid (no name, no buffers, no control).
                let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
                if let Some(name) = name {
                    header.msg_name = name.as_ptr() as *mut libc::c_void;
                    header.msg_namelen = name.len();
                }
                let (from, to) = (starts[i], starts[i + 1]);
                if to > from {
                    header.msg_iov = iovecs[from..to].as_ptr() as *mut libc::iovec;
                    header.msg_iovlen = (to - from) as _;
                }
                libc::mmsghdr {
                    msg_hdr: header,
                    msg_len: 0,
                }
            })
            .collect();
        let taken = socket.try_io(Interest::WRITABLE, |fd| {
            // SAFETY: every header points into `names` and `iovecs`, which outlive the
            // call, and into the payloads' bytes, borrowed for 'a; the kernel writes only
            // `msg_len`.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    headers.as_mut_ptr(),
                    headers.len() as _,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })?;
        sent.extend(headers[..taken].iter().map(|h| h.msg_len as usize));
        Ok(())
    }

    pub(super) fn recv(
        socket: &SystemDatagram,
        scratch: &mut Vec<u8>,
        max_len: usize,
        count: usize,
        each: &mut impl FnMut(&[u8], Address, bool),
    ) -> io::Result<usize> {
        // At least one byte a slot: a zero-length buffer cannot tell a cut datagram.
        let slot = max_len.max(1);
        if scratch.len() < slot * count {
            scratch.resize(slot * count, 0);
        }
        let mut names: Vec<SockAddrStorage> =
            (0..count).map(|_| SockAddrStorage::zeroed()).collect();
        let mut iovecs: Vec<libc::iovec> = scratch
            .chunks_exact_mut(slot)
            .take(count)
            .map(|chunk| libc::iovec {
                iov_base: chunk.as_mut_ptr() as *mut libc::c_void,
                iov_len: chunk.len(),
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = names
            .iter_mut()
            .zip(iovecs.iter_mut())
            .map(|(name, iov)| {
                // SAFETY: an all-zero `msghdr` is valid.
                let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
                header.msg_name = name as *mut SockAddrStorage as *mut libc::c_void;
                header.msg_namelen = name.size_of();
                header.msg_iov = iov as *mut libc::iovec;
                header.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: header,
                    msg_len: 0,
                }
            })
            .collect();
        let got = socket.try_io(Interest::READABLE, |fd| {
            // SAFETY: every header points into `names`, `iovecs` and `scratch`, which
            // outlive the call; the kernel writes within the lengths given.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    headers.as_mut_ptr(),
                    headers.len() as _,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })?;
        for (i, header) in headers[..got].iter().enumerate() {
            let len = (header.msg_len as usize).min(max_len);
            let truncated = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let namelen = header.msg_hdr.msg_namelen;
            let name = std::mem::replace(&mut names[i], SockAddrStorage::zeroed());
            // SAFETY: the kernel filled `name` with an address of `namelen` bytes.
            let from = unsafe { SockAddr::new(name, namelen) };
            let from = match from.as_socket() {
                Some(addr) => Address::Inet(addr),
                // An unbound Unix sender is an unnamed peer: an empty path.
                None => Address::Unix(from.as_pathname().map(PathBuf::from).unwrap_or_default()),
            };
            let start = i * slot;
            each(&scratch[start..start + len], from, truncated);
        }
        Ok(got)
    }
}
