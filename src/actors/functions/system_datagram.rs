//! [`SystemDatagram`]: a datagram socket (UDP or Unix domain) of the system transport,
//! as tokio's, with the calls the transport and a datagram socket in place make on it.

use std::io;
#[cfg(unix)]
use tokio::net::UdpSocket;

use crate::batch::IoBatch;

use crate::types::{Address, Readiness};

/// A datagram socket of the system transport.
#[derive(Debug)]
pub(crate) enum SystemDatagram {
    Udp(UdpSocket),
    #[cfg(unix)]
    Unix {
        socket: tokio::net::UnixDatagram,
        /// The path this transport bound, removed when the handle closes.
        bound: Option<super::system::BoundPath>,
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
            SystemDatagram::Unix { socket, .. } => socket
                .try_recv_from(buf)
                .map(|(n, from)| (n, super::tokio_unix_address(&from))),
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
            // Through socket2, which takes an abstract name (a leading NUL) as the kernel
            // does; std's `connect` refuses a path with a NUL byte.
            (SystemDatagram::Unix { socket, .. }, Address::Unix(path)) => {
                socket2::SockRef::from(socket).connect(&socket2::SockAddr::unix(path)?)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "connect: the address is not of the socket's family",
            )),
        }
    }

    /// The Unix path this transport bound, if any.
    #[cfg(unix)]
    pub(crate) fn bound(&self) -> Option<&super::system::BoundPath> {
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

/// The longest datagram a receive takes whole: no kernel delivers a longer one here (a
/// UDP datagram is at most 64 KiB; a Unix one is bounded by the sender's send buffer).
/// A larger `max_len` is taken as this (a longer datagram would be flagged truncated),
/// so a caller's "any size" allocates no more than it.
pub(crate) const MAX_RECEIVE: usize = 16 << 20;

/// How many datagrams of at most `max_len` bytes one receive call takes, of `wanted`.
fn recv_batch_len(max_len: usize, wanted: usize) -> usize {
    wanted
        .min(MAX_BATCH)
        .min(BATCH_BYTES / max_len.max(1))
        .max(1)
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
    /// each. With `offload`, where the OS has UDP segmentation offload, a run of
    /// datagrams of one length (up to 1,452 bytes) to one destination goes as one message
    /// that the kernel cuts into those datagrams, all or none. Pushes the bytes sent of each datagram the kernel took onto `sent`, in
    /// order, and stops at the first it did not take: its error (would-block included)
    /// is the answer only when it was the first of the batch; otherwise the next call
    /// meets it.
    pub(crate) fn try_send_batch<'a>(
        &self,
        batch: impl Iterator<Item = (&'a IoBatch, Option<&'a Address>)>,
        sent: &mut Vec<usize>,
        offload: bool,
    ) -> io::Result<()> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            mmsg::send(self, batch, sent, offload)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = offload;
            for (payload, to) in batch.take(MAX_BATCH) {
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

    /// Receives up to `count` datagrams (fewer when they may be long: a batch's buffers
    /// stay within a bound) in one call where the OS batches them (`recvmmsg`), else one
    /// call each, handing each to `each` with its sender and whether it was longer than
    /// `max_len` (then only its first `max_len` bytes are given). Answers how many, and
    /// whether that emptied the socket (fewer came than asked for: its readiness is
    /// cleared, as tokio clears a stream's on a short read, so the next receive waits
    /// for a new datagram instead of calling to hear would-block); would-block (or an
    /// error) only when none came.
    ///
    /// A batch is received into this thread's buffers and each datagram is copied out at
    /// its exact length by `each`, so a small datagram pins no large allocation and idle
    /// sockets hold no buffer.
    pub(crate) fn try_recv_batch(
        &self,
        max_len: usize,
        count: usize,
        each: impl FnMut(&[u8], Address, bool),
    ) -> io::Result<(usize, bool)> {
        let max_len = max_len.min(MAX_RECEIVE);
        let count = recv_batch_len(max_len, count);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            // A short batch cleared the socket's readiness as it was received.
            let got = mmsg::recv(self, max_len, count, each)?;
            Ok((got, got < count))
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            thread_local! {
                static SCRATCH: std::cell::RefCell<Vec<u8>> =
                    const { std::cell::RefCell::new(Vec::new()) };
            }
            let mut each = each;
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
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
                        // That would-block cleared the readiness already.
                        Err(_) if got > 0 => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok((got, got < count))
            })
        }
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

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn is_unix(&self) -> bool {
        matches!(self, SystemDatagram::Unix { .. })
    }
}

/// `sendmmsg(2)` and `recvmmsg(2)`, with this thread's buffers and headers reused from
/// call to call (they point into each other only during a call).
#[cfg(any(target_os = "linux", target_os = "android"))]
mod mmsg {
    use std::cell::RefCell;
    use std::io;

    use socket2::{SockAddr, SockAddrStorage};
    use tokio::io::Interest;

    use super::{SystemDatagram, MAX_BATCH};
    use crate::batch::IoBatch;
    use crate::types::Address;

    /// A send batch's parts.
    #[derive(Default)]
    struct SendParts {
        /// One message per group of datagrams sent together (see [`Group`]).
        groups: Vec<Group>,
        names: Vec<Option<SockAddr>>,
        iovecs: Vec<libc::iovec>,
        /// The lengths of the datagrams, in order.
        lens: Vec<usize>,
        /// How many segments (`iovecs`) each datagram has, in order.
        segs: Vec<usize>,
        /// A `UDP_SEGMENT` control message for each group (`u64`s: aligned for it).
        controls: Vec<u64>,
        headers: Vec<libc::mmsghdr>,
        /// Datagrams of more segments than a message takes, each joined into one
        /// buffer (its heap does not move while the vector grows).
        joined: Vec<Vec<u8>>,
    }

    impl SendParts {
        /// Empties every part, keeping their capacity.
        fn clear(&mut self) {
            self.groups.clear();
            self.names.clear();
            self.iovecs.clear();
            self.lens.clear();
            self.segs.clear();
            self.controls.clear();
            self.headers.clear();
            self.joined.clear();
        }
    }

    /// Datagrams leaving in one message: one, or (segmentation offload) several of the
    /// same length to the same destination, the last perhaps shorter, which the kernel
    /// sends as that many datagrams, all or none.
    #[derive(Clone, Copy)]
    struct Group {
        /// The first datagram's index, and how many.
        first: usize,
        count: usize,
        /// The first datagram's length: every one before the last has it.
        size: usize,
        bytes: usize,
        /// The group's segments in `iovecs`.
        iov_first: usize,
        iov_count: usize,
    }

    /// Most datagrams in one offloaded group (the kernel's `UDP_MAX_SEGMENTS` on older
    /// kernels), and most bytes in one (under a UDP datagram's 16-bit length).
    const GSO_SEGMENTS: usize = 64;
    const GSO_BYTES: usize = 65_000;
    /// Longest datagram offloaded: one that fits an Ethernet frame over IPv6, so a
    /// path's MTU never makes the kernel refuse a group (longer ones go one a message).
    const GSO_SIZE: usize = 1_452;
    /// Most buffers one message may point at (the kernel's `UIO_MAXIOV`): a group stops
    /// short of it, and a datagram of more segments is joined into one buffer.
    const MAX_IOV: usize = 1_024;

    /// Whether UDP segmentation offload is used: until the kernel refuses it once.
    static GSO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    /// A receive batch's parts: `count` slots of `slot` bytes in `buffer`, an address
    /// and a header for each.
    #[derive(Default)]
    struct RecvParts {
        buffer: Vec<u8>,
        names: Vec<SockAddrStorage>,
        iovecs: Vec<libc::iovec>,
        headers: Vec<libc::mmsghdr>,
        slot: usize,
    }

    thread_local! {
        static SEND: RefCell<SendParts> = RefCell::new(SendParts::default());
        static RECV: RefCell<RecvParts> = RefCell::new(RecvParts::default());
    }

    /// A destination as the kernel takes it.
    fn sockaddr(to: &Address) -> io::Result<SockAddr> {
        match to {
            Address::Inet(addr) => Ok(SockAddr::from(*addr)),
            Address::Unix(path) => SockAddr::unix(path),
        }
    }

    fn wrong_family() -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the destination is not of the socket's family",
        )
    }

    /// An empty header: no name, no buffers, no control.
    fn empty_header() -> libc::mmsghdr {
        // SAFETY: an all-zero `mmsghdr` is valid.
        unsafe { std::mem::zeroed() }
    }

    pub(super) fn send<'a>(
        socket: &SystemDatagram,
        batch: impl Iterator<Item = (&'a IoBatch, Option<&'a Address>)>,
        sent: &mut Vec<usize>,
        offload: bool,
    ) -> io::Result<()> {
        SEND.with(|parts| {
            let mut parts = parts.borrow_mut();
            let result = gather(&mut parts, socket, batch).and_then(|()| {
                let gso = offload
                    && !socket.is_unix()
                    && GSO.load(std::sync::atomic::Ordering::Relaxed);
                match send_groups(&mut parts, socket, gso, sent) {
                    // A kernel or device without segmentation offload: never again, and
                    // this batch one datagram a message.
                    Err(e) if gso && offload_refused(&e, &parts) => {
                        tracing::debug!(error = %e, "UDP segmentation offload refused; off from now on");
                        GSO.store(false, std::sync::atomic::Ordering::Relaxed);
                        send_groups(&mut parts, socket, false, sent)
                    }
                    other => other,
                }
            });
            // Nothing points into the payloads once the call is over.
            parts.clear();
            result
        })
    }

    /// Whether `error`, for a first message that carried several datagrams, is the
    /// kernel refusing segmentation offload rather than the datagrams.
    fn offload_refused(error: &io::Error, parts: &SendParts) -> bool {
        let several = parts.groups.first().is_some_and(|g| g.count > 1);
        several
            && matches!(
                error.raw_os_error(),
                Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
            )
    }

    /// Takes the batch's datagrams: their destinations, segments and lengths.
    fn gather<'a>(
        parts: &mut SendParts,
        socket: &SystemDatagram,
        batch: impl Iterator<Item = (&'a IoBatch, Option<&'a Address>)>,
    ) -> io::Result<()> {
        for (payload, to) in batch.take(MAX_BATCH) {
            let name = match to.map(sockaddr).transpose() {
                Ok(Some(name)) if name.is_unix() != socket.is_unix() => Err(wrong_family()),
                other => other,
            };
            let name = match name {
                Ok(name) => name,
                // A destination the kernel cannot take: what came before goes now, and
                // this one meets its error as the first of the next call.
                Err(_) if !parts.names.is_empty() => break,
                Err(e) => return Err(e),
            };
            let before = parts.iovecs.len();
            // A datagram's file ranges were read into memory when it was queued.
            let segments = payload.segments().iter().filter_map(|s| s.as_bytes());
            if payload.segments().len() > MAX_IOV {
                // More buffers than one message takes: one copy, as the message path
                // joins them.
                let mut whole = Vec::with_capacity(payload.len());
                for bytes in segments {
                    whole.extend_from_slice(bytes);
                }
                parts.iovecs.push(libc::iovec {
                    iov_base: whole.as_ptr() as *mut libc::c_void,
                    iov_len: whole.len(),
                });
                parts.joined.push(whole);
            } else {
                for bytes in segments {
                    parts.iovecs.push(libc::iovec {
                        iov_base: bytes.as_ptr() as *mut libc::c_void,
                        iov_len: bytes.len(),
                    });
                }
            }
            parts.names.push(name);
            parts.lens.push(payload.len());
            parts.segs.push(parts.iovecs.len() - before);
        }
        Ok(())
    }

    /// Groups the gathered datagrams (each alone, or with `gso` runs of one length to
    /// one destination), sends the groups in one `sendmmsg`, and pushes the length of
    /// each datagram of each group the kernel took onto `sent`.
    fn send_groups(
        parts: &mut SendParts,
        socket: &SystemDatagram,
        gso: bool,
        sent: &mut Vec<usize>,
    ) -> io::Result<()> {
        let SendParts {
            groups,
            names,
            iovecs,
            lens,
            segs,
            controls,
            headers,
            ..
        } = parts;
        if names.is_empty() {
            return Ok(());
        }
        groups.clear();
        controls.clear();
        headers.clear();
        let mut iov_at = 0;
        for (i, (&len, &seg)) in lens.iter().zip(segs.iter()).enumerate() {
            let joins = gso
                && groups.last().is_some_and(|g| {
                    let last = g.first + g.count - 1;
                    // Every datagram but the last of a group has the first one's length.
                    lens[last] == g.size
                        && len > 0
                        && len <= g.size
                        && g.size <= GSO_SIZE
                        && g.count < GSO_SEGMENTS
                        && g.bytes + len <= GSO_BYTES
                        && g.iov_count + seg <= MAX_IOV
                        && same_destination(&names[last], &names[i])
                });
            match groups.last_mut() {
                Some(g) if joins => {
                    g.count += 1;
                    g.bytes += len;
                    g.iov_count += seg;
                }
                _ => groups.push(Group {
                    first: i,
                    count: 1,
                    size: len,
                    bytes: len,
                    iov_first: iov_at,
                    iov_count: seg,
                }),
            }
            iov_at += seg;
        }
        // SAFETY: `CMSG_SPACE` only computes a size.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
        let words = space.div_ceil(8);
        controls.resize(groups.len() * words, 0);
        for (k, g) in groups.iter().enumerate() {
            let mut header = empty_header();
            if let Some(name) = &names[g.first] {
                header.msg_hdr.msg_name = name.as_ptr() as *mut libc::c_void;
                header.msg_hdr.msg_namelen = name.len();
            }
            if g.iov_count > 0 {
                header.msg_hdr.msg_iov = iovecs[g.iov_first..].as_mut_ptr();
                header.msg_hdr.msg_iovlen = g.iov_count as _;
            }
            if g.count > 1 {
                let control = controls[k * words..(k + 1) * words].as_mut_ptr();
                header.msg_hdr.msg_control = control as *mut libc::c_void;
                header.msg_hdr.msg_controllen = space as _;
                // SAFETY: the control buffer is `space` bytes, aligned for `cmsghdr`,
                // and holds exactly one message with a `u16`.
                unsafe {
                    let cmsg = libc::CMSG_FIRSTHDR(&header.msg_hdr);
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, g.size as u16);
                }
            }
            headers.push(header);
        }
        let taken = socket.try_io(Interest::WRITABLE, |fd| {
            // SAFETY: every header points into `names`, `iovecs` and `controls`, which
            // are not touched until the call returns, and into the payloads' bytes; the
            // kernel writes only `msg_len`.
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
        for (g, header) in groups.iter().zip(headers.iter()).take(taken) {
            if g.count == 1 {
                sent.push(header.msg_len as usize);
                continue;
            }
            // An offloaded group goes whole or not at all.
            sent.extend_from_slice(&lens[g.first..g.first + g.count]);
        }
        Ok(())
    }

    /// Whether two datagrams go to the same IP destination (the connected peer, or one
    /// address).
    fn same_destination(a: &Option<SockAddr>, b: &Option<SockAddr>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => a.as_socket().is_some() && a.as_socket() == b.as_socket(),
            _ => false,
        }
    }

    pub(super) fn recv(
        socket: &SystemDatagram,
        max_len: usize,
        count: usize,
        mut each: impl FnMut(&[u8], Address, bool),
    ) -> io::Result<usize> {
        RECV.with(|parts| {
            let mut parts = parts.borrow_mut();
            // At least one byte a slot: a zero-length buffer cannot tell a cut datagram.
            prepare(&mut parts, max_len.max(1), count);
            let RecvParts {
                buffer,
                names,
                headers,
                slot,
                ..
            } = &mut *parts;
            for (header, name) in headers[..count].iter_mut().zip(names.iter()) {
                header.msg_hdr.msg_namelen = name.size_of();
                header.msg_hdr.msg_flags = 0;
                header.msg_len = 0;
            }
            // A batch that came short emptied the socket: the call answers would-block
            // to tokio, which then clears the readiness it saw before the call (an event
            // that came during it, perhaps set by a reactor on another thread, stays).
            let mut short = None;
            let result = socket.try_io(Interest::READABLE, |fd| {
                // SAFETY: every header points into `names`, `iovecs` and `buffer`, which
                // `prepare` sized for `count` and nothing moves during the call; the
                // kernel writes within the lengths given.
                let n = unsafe {
                    libc::recvmmsg(
                        fd,
                        headers.as_mut_ptr(),
                        count as _,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else if (n as usize) < count && n > 0 {
                    short = Some(n as usize);
                    Err(io::Error::from(io::ErrorKind::WouldBlock))
                } else {
                    Ok(n as usize)
                }
            });
            let got = match (result, short) {
                (Ok(n), _) => n,
                (Err(_), Some(n)) => n,
                (Err(e), None) => return Err(e),
            };
            for (i, header) in headers[..got].iter().enumerate() {
                let len = (header.msg_len as usize).min(max_len);
                // Past the slot, the kernel says so; past `max_len` within it (a slot is
                // at least a byte, `max_len` may be 0), the cut is ours.
                let truncated = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0
                    || header.msg_len as usize > max_len;
                let namelen = header.msg_hdr.msg_namelen;
                let name = std::mem::replace(&mut names[i], SockAddrStorage::zeroed());
                // SAFETY: the kernel filled `name` with an address of `namelen` bytes.
                let from = unsafe { SockAddr::new(name, namelen) };
                let from = match from.as_socket() {
                    Some(addr) => Address::Inet(addr),
                    // A Unix sender: its path, its abstract name, or (unbound) the empty path.
                    None => super::super::sockaddr_unix_address(&from),
                };
                let start = i * *slot;
                each(&buffer[start..start + len], from, truncated);
            }
            Ok(got)
        })
    }

    /// Sizes the parts for `count` slots of `slot` bytes, pointing each header at its
    /// slot and address (again only when they moved).
    fn prepare(parts: &mut RecvParts, slot: usize, count: usize) {
        if parts.slot == slot && parts.headers.len() >= count {
            return;
        }
        let count = count.max(parts.headers.len());
        parts.slot = slot;
        // Zeroed pages are mapped as they are first written: a slot for a long datagram
        // costs memory only once one arrives.
        parts.buffer = vec![0; slot * count];
        parts.names = (0..count).map(|_| SockAddrStorage::zeroed()).collect();
        let RecvParts {
            buffer,
            names,
            iovecs,
            headers,
            ..
        } = parts;
        *iovecs = buffer
            .chunks_exact_mut(slot)
            .map(|chunk| libc::iovec {
                iov_base: chunk.as_mut_ptr() as *mut libc::c_void,
                iov_len: chunk.len(),
            })
            .collect();
        *headers = names
            .iter_mut()
            .zip(iovecs.iter_mut())
            .map(|(name, iov)| {
                let mut header = empty_header();
                header.msg_hdr.msg_name = name as *mut SockAddrStorage as *mut libc::c_void;
                header.msg_hdr.msg_iov = iov as *mut libc::iovec;
                header.msg_hdr.msg_iovlen = 1;
                header
            })
            .collect();
    }
}
