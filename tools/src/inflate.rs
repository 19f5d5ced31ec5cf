//! A reader that inflates a raw deflate stream (the `Compress` layer's format), for the
//! benchmarks' peers (`bench`'s `sockactor-deflate` receiver, `tls_bench`'s deflate peer).

use std::io::{self, Read};

/// Inflates what `inner` reads; writes pass through to `inner` untouched.
pub struct Inflate<R> {
    inner: R,
    inflater: flate2::Decompress,
    /// Read buffer, zeroed once (re-zeroing 256 KiB per short read made the peer the
    /// bottleneck of the deflate measure); `input[start..end]` is still to inflate.
    input: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R> Inflate<R> {
    /// Inflates the raw deflate stream `inner` carries.
    pub fn new(inner: R) -> Self {
        Inflate {
            inner,
            inflater: flate2::Decompress::new(false),
            input: Vec::new(),
            start: 0,
            end: 0,
        }
    }
}

impl<R: Read> Read for Inflate<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.start < self.end {
                let (before_in, before_out) = (self.inflater.total_in(), self.inflater.total_out());
                self.inflater
                    .decompress(
                        &self.input[self.start..self.end],
                        out,
                        flate2::FlushDecompress::None,
                    )
                    .map_err(io::Error::other)?;
                self.start += (self.inflater.total_in() - before_in) as usize;
                let made = (self.inflater.total_out() - before_out) as usize;
                if made > 0 {
                    return Ok(made);
                }
            }
            if self.input.is_empty() {
                self.input = vec![0; 256 * 1024];
            }
            let n = self.inner.read(&mut self.input)?;
            (self.start, self.end) = (0, n);
            if n == 0 {
                return Ok(0);
            }
        }
    }
}

impl<R: io::Write> io::Write for Inflate<R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn inflates_a_raw_deflate_stream_read_in_small_pieces() {
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut deflater =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        deflater.write_all(&plain).unwrap();
        let wire = deflater.finish().unwrap();
        // A reader that hands out at most 7 bytes per read, as a socket may.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(out.len()).min(7);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut got = Vec::new();
        Inflate::new(Trickle(&wire)).read_to_end(&mut got).unwrap();
        assert_eq!(got, plain);
    }
}
