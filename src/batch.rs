//! [`IoBatch`]: a list of `Bytes` segments sent as one write.

use bytes::Bytes;

/// An I/O batch: the segments of one write, sent in order as if they were one buffer.
///
/// This is libowfat's `io_batch` for actors. Segments are reference-counted [`Bytes`], so
/// the payload is never copied on its way to the transport: a vectored write hands the
/// kernel (or a filter) slices of the same allocations the caller made.
///
/// ```
/// use bytes::Bytes;
/// use sockactor::IoBatch;
///
/// let mut batch = IoBatch::new();
/// batch.push(Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n"));
/// batch.push(Bytes::from(vec![b'x'; 1024]));
/// assert_eq!(batch.len(), 19 + 1024);
/// assert_eq!(batch.segment_count(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoBatch {
    segments: Segments,
    len: usize,
}

/// The segments, with the common single-segment case kept inline (no allocation per
/// write on the hot path).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Segments {
    #[default]
    Empty,
    One(Bytes),
    Many(Vec<Bytes>),
}

impl IoBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a segment. Empty segments are dropped: they carry nothing.
    pub fn push(&mut self, segment: Bytes) {
        if segment.is_empty() {
            return;
        }
        self.len += segment.len();
        self.segments = match std::mem::take(&mut self.segments) {
            Segments::Empty => Segments::One(segment),
            Segments::One(first) => Segments::Many(vec![first, segment]),
            Segments::Many(mut all) => {
                all.push(segment);
                Segments::Many(all)
            }
        };
    }

    /// Total number of payload bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch carries no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of (non-empty) segments.
    pub fn segment_count(&self) -> usize {
        self.segments().len()
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Bytes] {
        match &self.segments {
            Segments::Empty => &[],
            Segments::One(b) => std::slice::from_ref(b),
            Segments::Many(v) => v,
        }
    }

    /// Gives the segments back.
    pub fn into_segments(self) -> Vec<Bytes> {
        match self.segments {
            Segments::Empty => Vec::new(),
            Segments::One(b) => vec![b],
            Segments::Many(v) => v,
        }
    }

    /// Copies the whole batch into one contiguous vector (for tests and diagnostics; the
    /// write path never does this).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for s in self.segments() {
            out.extend_from_slice(s);
        }
        out
    }
}

impl From<Bytes> for IoBatch {
    fn from(b: Bytes) -> Self {
        let mut batch = IoBatch::new();
        batch.push(b);
        batch
    }
}

impl From<Vec<u8>> for IoBatch {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl From<&'static [u8]> for IoBatch {
    fn from(s: &'static [u8]) -> Self {
        Bytes::from_static(s).into()
    }
}

impl From<&'static str> for IoBatch {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl From<Vec<Bytes>> for IoBatch {
    fn from(v: Vec<Bytes>) -> Self {
        v.into_iter().collect()
    }
}

impl FromIterator<Bytes> for IoBatch {
    fn from_iter<I: IntoIterator<Item = Bytes>>(iter: I) -> Self {
        let mut batch = IoBatch::new();
        for b in iter {
            batch.push(b);
        }
        batch
    }
}
