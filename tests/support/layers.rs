//! A user byte layer for the layer tests: passes bytes through, misbehaving as told.

use std::io::{self, IoSlice};

use bytes::BytesMut;
use sockactor::filters::{Decoded, Layer};
use sockactor::SocketFunctions;

/// How an [`Unruly`] layer misbehaves.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unruly {
    /// Added to every worst case.
    pub overhead: usize,
    /// `decode` answers `More` and does nothing.
    pub stuck: bool,
    /// `poll_output` answers each decoded byte with one of its own.
    pub ack: bool,
    /// `poll_output` fails once something was decoded.
    pub poll_fails: bool,
    /// `eof` says the stream was cut.
    pub strict_eof: bool,
}

impl Unruly {
    /// `functions` with this layer on top (nearest the plaintext).
    pub fn on(self, functions: SocketFunctions) -> SocketFunctions {
        functions.layer(move |_| Ok(Box::new(UnrulyLayer { how: self, owed: 0 }) as Box<dyn Layer>))
    }
}

#[derive(Debug)]
struct UnrulyLayer {
    how: Unruly,
    owed: usize,
}

impl Layer for UnrulyLayer {
    fn name(&self) -> &'static str {
        "unruly"
    }
    fn worst_case(&self, n: usize) -> usize {
        n.saturating_add(self.how.overhead)
    }
    fn encode(&mut self, input: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<()> {
        for s in input {
            out.extend_from_slice(s);
        }
        Ok(())
    }
    fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        max: usize,
    ) -> io::Result<Decoded> {
        if self.how.stuck && !input.is_empty() {
            return Ok(Decoded::More);
        }
        let n = input.len().min(max);
        out.extend_from_slice(&input.split_to(n));
        self.owed += n;
        Ok(if input.is_empty() {
            Decoded::NeedInput
        } else {
            Decoded::More
        })
    }
    fn poll_output(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if self.how.poll_fails && self.owed > 0 {
            return Err(io::Error::other("poll_output refused"));
        }
        if self.how.ack {
            out.resize(std::mem::take(&mut self.owed), b'a');
        }
        Ok(())
    }
    fn eof(&mut self) -> io::Result<()> {
        if self.how.strict_eof {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stream was cut",
            ));
        }
        Ok(())
    }
}
