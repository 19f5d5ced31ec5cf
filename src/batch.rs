//! [`IoBatch`]: the segments of one write, memory ([`Bytes`]) and file ranges
//! ([`FileRange`]), sent in order as one stream.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// A range of bytes in an open file, to be sent as part of a write without first reading
/// it into memory: libowfat's `iob_addfile`.
///
/// On the system transport called in place (TCP or Unix stream, on Linux) the range goes
/// out with `sendfile(2)`: the kernel copies from the page cache to the socket and the
/// bytes never enter this process. Anywhere else (a filter, a mock, another OS) the socket
/// reads the range in bounded chunks ([`QueueConfig::file_read_chunk`]) just before they
/// are sent, so a filter sees ordinary [`Bytes`] and never more than one chunk per range
/// is held in memory.
///
/// The file is shared (`Arc<File>`) and read at explicit offsets (`pread`), never through
/// its cursor, so one open file can back any number of ranges on any number of sockets.
/// The range is checked against the file's length when it is made; a file that later
/// shrinks under a queued range fails the socket with [`TransportError::File`]
/// (`UnexpectedEof`), because a peer that got part of a write cannot be given the rest.
///
/// [`QueueConfig::file_read_chunk`]: crate::QueueConfig::file_read_chunk
/// [`TransportError::File`]: crate::TransportError::File
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bytes::Bytes;
/// use sockactor::{FileRange, IoBatch};
///
/// let file = std::fs::File::open("/var/www/index.html")?;
/// let body = FileRange::whole(file)?;
/// let mut response = IoBatch::new();
/// response.push(Bytes::from(format!(
///     "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
///     body.len()
/// )));
/// response.push_file(body);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct FileRange {
    file: Arc<File>,
    offset: u64,
    len: usize,
}

/// Why a [`FileRange`] could not be made.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileRangeError {
    /// The file's metadata could not be read.
    #[error("cannot read the file's metadata: {0}")]
    Metadata(#[source] Arc<io::Error>),
    /// The handle is not a regular file (a directory, pipe, socket or device has no
    /// fixed length to send a range of).
    #[error("not a regular file")]
    NotAFile,
    /// The range reaches past the end of the file.
    #[error("range {offset}+{len} reaches past the end of the {file_len}-byte file")]
    PastEnd {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// The file's length when the range was made.
        file_len: u64,
    },
}

impl FileRange {
    /// `len` bytes of `file` from `offset`. The file must be a regular file at least
    /// `offset + len` bytes long now.
    pub fn new(
        file: impl Into<Arc<File>>,
        offset: u64,
        len: usize,
    ) -> Result<Self, FileRangeError> {
        let file = file.into();
        let meta = file
            .metadata()
            .map_err(|e| FileRangeError::Metadata(Arc::new(e)))?;
        if !meta.is_file() {
            return Err(FileRangeError::NotAFile);
        }
        let file_len = meta.len();
        let past_end = offset
            .checked_add(len as u64)
            .is_none_or(|end| end > file_len);
        if past_end {
            return Err(FileRangeError::PastEnd {
                offset,
                len: len as u64,
                file_len,
            });
        }
        Ok(FileRange { file, offset, len })
    }

    /// The whole file, as long as it is now.
    pub fn whole(file: impl Into<Arc<File>>) -> Result<Self, FileRangeError> {
        let file = file.into();
        let meta = file
            .metadata()
            .map_err(|e| FileRangeError::Metadata(Arc::new(e)))?;
        if !meta.is_file() {
            return Err(FileRangeError::NotAFile);
        }
        let len = usize::try_from(meta.len()).map_err(|_| FileRangeError::PastEnd {
            offset: 0,
            len: meta.len(),
            file_len: meta.len(),
        })?;
        Ok(FileRange {
            file,
            offset: 0,
            len,
        })
    }

    /// The file.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Where the range starts in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes in the range.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads `len` bytes of the range, starting `at` bytes into it, into a new buffer.
    /// A file that ends first is an `UnexpectedEof` error.
    pub(crate) fn read_chunk(&self, at: usize, len: usize) -> io::Result<Bytes> {
        let len = len.min(self.len.saturating_sub(at));
        let mut buf = BytesMut::zeroed(len);
        read_exact_at(&self.file, &mut buf, self.offset + at as u64)?;
        Ok(buf.freeze())
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended before the range did (it shrank after the range was made)",
            )
        } else {
            e
        }
    })
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before the range did (it shrank after the range was made)",
                ))
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl PartialEq for FileRange {
    /// The same bytes of the same open file (the same `Arc`).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.file, &other.file) && self.offset == other.offset && self.len == other.len
    }
}

impl Eq for FileRange {}

/// One segment of an [`IoBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Bytes in memory.
    Bytes(Bytes),
    /// A range of a file, sent without being read into memory where the transport allows.
    File(FileRange),
}

impl Segment {
    /// Bytes in the segment.
    pub fn len(&self) -> usize {
        match self {
            Segment::Bytes(b) => b.len(),
            Segment::File(f) => f.len(),
        }
    }

    /// Whether the segment is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when the segment is in memory.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Segment::Bytes(b) => Some(b),
            Segment::File(_) => None,
        }
    }
}

impl From<Bytes> for Segment {
    fn from(b: Bytes) -> Self {
        Segment::Bytes(b)
    }
}

impl From<FileRange> for Segment {
    fn from(f: FileRange) -> Self {
        Segment::File(f)
    }
}

/// An I/O batch: the segments of one write, sent in order as if they were one buffer.
///
/// This is libowfat's `io_batch` for actors. Memory segments are reference-counted
/// [`Bytes`], so the payload is never copied on its way to the transport: a vectored
/// write hands the kernel (or a filter) slices of the same allocations the caller made.
/// File segments ([`FileRange`], `iob_addfile`) go out with `sendfile(2)` where the
/// transport allows, else in bounded chunks read just before they are sent.
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
    One(Segment),
    Many(Vec<Segment>),
}

impl IoBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a memory segment. Empty segments are dropped: they carry nothing.
    pub fn push(&mut self, segment: Bytes) {
        self.push_segment(Segment::Bytes(segment));
    }

    /// Appends a file range (libowfat's `iob_addfile`). Empty ranges are dropped.
    pub fn push_file(&mut self, range: FileRange) {
        self.push_segment(Segment::File(range));
    }

    /// Appends a segment of either kind. Empty segments are dropped.
    pub fn push_segment(&mut self, segment: Segment) {
        if segment.is_empty() {
            return;
        }
        // Past `usize::MAX` bytes (file ranges of sparse files) the length saturates.
        self.len = self.len.saturating_add(segment.len());
        self.segments = match std::mem::take(&mut self.segments) {
            Segments::Empty => Segments::One(segment),
            Segments::One(first) => Segments::Many(vec![first, segment]),
            Segments::Many(mut all) => {
                all.push(segment);
                Segments::Many(all)
            }
        };
    }

    /// Total number of payload bytes, file ranges included (at most `usize::MAX`: the
    /// sum saturates).
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

    /// Whether any segment is a file range.
    pub fn has_files(&self) -> bool {
        self.segments()
            .iter()
            .any(|s| matches!(s, Segment::File(_)))
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        match &self.segments {
            Segments::Empty => &[],
            Segments::One(s) => std::slice::from_ref(s),
            Segments::Many(v) => v,
        }
    }

    /// Gives the segments back.
    pub fn into_segments(self) -> Vec<Segment> {
        match self.segments {
            Segments::Empty => Vec::new(),
            Segments::One(s) => vec![s],
            Segments::Many(v) => v,
        }
    }

    /// The batch with every file range read into memory (memory segments are kept as
    /// they are, not copied). For paths that need the bytes themselves, such as a
    /// datagram, which leaves in one call.
    pub fn into_memory(self) -> io::Result<IoBatch> {
        if !self.has_files() {
            return Ok(self);
        }
        let mut out = IoBatch::new();
        for segment in self.into_segments() {
            match segment {
                Segment::Bytes(b) => out.push(b),
                Segment::File(f) => out.push(f.read_chunk(0, f.len())?),
            }
        }
        Ok(out)
    }

    /// Copies the whole batch into one contiguous vector, reading file ranges from their
    /// files (for tests and diagnostics; the write path never does this).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len);
        for s in self.segments() {
            match s {
                Segment::Bytes(b) => out.extend_from_slice(b),
                Segment::File(f) => out.extend_from_slice(&f.read_chunk(0, f.len())?),
            }
        }
        Ok(out)
    }
}

impl From<Bytes> for IoBatch {
    fn from(b: Bytes) -> Self {
        if b.is_empty() {
            return IoBatch::new();
        }
        IoBatch {
            len: b.len(),
            segments: Segments::One(Segment::Bytes(b)),
        }
    }
}

impl From<FileRange> for IoBatch {
    fn from(f: FileRange) -> Self {
        let mut batch = IoBatch::new();
        batch.push_file(f);
        batch
    }
}

impl From<Segment> for IoBatch {
    fn from(s: Segment) -> Self {
        let mut batch = IoBatch::new();
        batch.push_segment(s);
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

impl From<Vec<Segment>> for IoBatch {
    fn from(v: Vec<Segment>) -> Self {
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

impl FromIterator<Segment> for IoBatch {
    fn from_iter<I: IntoIterator<Item = Segment>>(iter: I) -> Self {
        let mut batch = IoBatch::new();
        for s in iter {
            batch.push_segment(s);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(content: &[u8]) -> File {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("sockactor-batch-{}-{n}", std::process::id()));
        let mut f = File::create(&path).expect("create");
        f.write_all(content).expect("write");
        let f = File::open(&path).expect("open");
        let _ = std::fs::remove_file(&path);
        f
    }

    /// Ranges of a sparse file of 2^62 bytes, four of them past `usize::MAX` together:
    /// the batch's length saturates, with no overflow and never 0 for a batch of bytes.
    #[test]
    fn a_batch_of_huge_file_ranges_saturates_its_length() {
        // tmpfs holds sparse files this large; most disk file systems refuse them.
        let dir = std::path::Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("sockactor-huge-{}", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        let _ = std::fs::remove_file(&path);
        let huge: u64 = 1 << 62;
        if file.set_len(huge).is_err() {
            // A file system that cannot hold such a sparse file: nothing to check.
            return;
        }
        let file = Arc::new(file);
        let mut batch = IoBatch::new();
        for _ in 0..4 {
            batch.push_file(FileRange::whole(file.clone()).expect("the whole file"));
        }
        assert_eq!(batch.len(), usize::MAX);
        assert!(!batch.is_empty());
    }

    #[test]
    fn a_range_past_the_end_or_of_a_directory_is_refused() {
        let file = Arc::new(temp_file(b"0123456789"));
        assert!(matches!(
            FileRange::new(file.clone(), 4, 7),
            Err(FileRangeError::PastEnd {
                offset: 4,
                len: 7,
                file_len: 10
            })
        ));
        assert!(matches!(
            FileRange::new(file.clone(), u64::MAX, 2),
            Err(FileRangeError::PastEnd { .. })
        ));
        let dir = File::open(std::env::temp_dir()).expect("open dir");
        assert!(matches!(
            FileRange::whole(dir),
            Err(FileRangeError::NotAFile)
        ));
        let ok = FileRange::new(file, 4, 6).expect("fits");
        assert_eq!(ok.read_chunk(1, 100).expect("read").as_ref(), b"56789");
    }

    #[test]
    fn a_batch_mixes_memory_and_file_segments_in_order() {
        let file = Arc::new(temp_file(b"abcdefghij"));
        let mut batch = IoBatch::new();
        batch.push(Bytes::from_static(b"<"));
        batch.push_file(FileRange::new(file.clone(), 2, 5).expect("fits"));
        batch.push_file(FileRange::new(file, 0, 0).expect("empty fits"));
        batch.push(Bytes::from_static(b">"));
        assert_eq!(batch.len(), 7);
        assert_eq!(batch.segment_count(), 3, "the empty range is dropped");
        assert!(batch.has_files());
        assert_eq!(batch.to_vec().expect("read"), b"<cdefg>");
        let memory = batch.into_memory().expect("read");
        assert!(!memory.has_files());
        assert_eq!(memory.to_vec().expect("no files"), b"<cdefg>");
    }
}
