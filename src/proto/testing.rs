//! Test doubles for the core's callers (tests only).

use std::io::{self, IoSlice};

/// A stream written in place ([`Layer::encode_direct`](super::Layer::encode_direct)'s
/// `direct`) that takes `room` bytes, then would block (or fails with
/// `ConnectionReset`, if `fail`); it keeps what it took and counts its calls.
#[derive(Debug, Default)]
pub(crate) struct Takes {
    pub(crate) room: usize,
    pub(crate) took: Vec<u8>,
    pub(crate) calls: usize,
    pub(crate) fail: bool,
}

impl Takes {
    /// Takes `room` bytes, then would block.
    pub(crate) fn new(room: usize) -> Self {
        Takes {
            room,
            ..Takes::default()
        }
    }
}

impl io::Write for Takes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.calls += 1;
        if self.room == 0 {
            let kind = if self.fail {
                io::ErrorKind::ConnectionReset
            } else {
                io::ErrorKind::WouldBlock
            };
            return Err(kind.into());
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(self.room);
            self.took.extend_from_slice(&b[..take]);
            self.room -= take;
            n += take;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
