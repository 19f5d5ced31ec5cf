//! `CaptureReader` over arbitrary bytes, iterated to the end: it never panics, ends
//! (fused) after its first error or at a clean end, every error names an offset inside
//! the input, and no single allocation, nor the heap it holds at once, grows past the
//! format's record bound whatever length a record announces.
//!
//! The first input byte picks the mode. Bit 0 clear: the rest is the file, as is. Bit 0
//! set: the rest is a list of records' contents (`u16` little-endian length, then the
//! bytes) that the harness frames with the header, the length field and a correct
//! checksum, so the fuzzer reaches the payload parser instead of dying on the CRC; any
//! bytes left over are appended raw. Bits 1..8 (when not zero) cap how many bytes each
//! `read` of the source returns, to exercise the reader's refills.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use sockactor::filters::record::{MAGIC, MAX_RECORD_LEN, VERSION};
use sockactor::filters::{CaptureError, CaptureReader, Record};

/// The system allocator, keeping the largest single request and the peak of live bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK_LIVE: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note_alloc(size: usize) {
    LARGEST.fetch_max(size, Ordering::Relaxed);
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK_LIVE.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` with the same arguments; the counters
// are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        note_alloc(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A source that hands out at most `step` bytes per `read`.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// CRC-32 (IEEE, reflected), bit by bit: the checksum the format stores.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for part in parts {
        for &b in *part {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
    }
    !c
}

/// A capture file: the header, then each content framed with its length and checksum.
fn framed(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rest.len() + 64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    while rest.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        if rest.len() - 2 < n {
            break;
        }
        let content = &rest[2..2 + n];
        let len = u32::try_from(n + 4).unwrap_or(u32::MAX).to_le_bytes();
        out.extend_from_slice(&len);
        out.extend_from_slice(content);
        out.extend_from_slice(&crc32(&[&len, content]).to_le_bytes());
        rest = &rest[2 + n..];
    }
    out.extend_from_slice(rest);
    out
}

/// Checks one error against the file it came from: its offset is inside the file.
fn check_item(item: &Result<Record, CaptureError>, file_len: u64) {
    if let Err(e) = item {
        assert!(e.offset() <= file_len, "{e} past the end ({file_len})");
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let file = if mode & 1 == 1 {
        framed(rest)
    } else {
        rest.to_vec()
    };
    let step = match usize::from(mode >> 1) {
        0 => usize::MAX,
        n => n,
    };
    let file_len = file.len() as u64;
    let baseline = LIVE.load(Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
    PEAK_LIVE.store(baseline, Ordering::Relaxed);

    let mut reader = CaptureReader::new(Trickle { data: &file, step });
    // Each record takes at least the 4-byte length and 21 fixed bytes after the header.
    let most_items = file.len() / 25 + 2;
    let mut items = 0;
    let mut failed = false;
    for item in reader.by_ref() {
        assert!(!failed, "an item after an error");
        check_item(&item, file_len);
        failed = item.is_err();
        items += 1;
        assert!(
            items <= most_items,
            "{items} items from {} bytes",
            file.len()
        );
    }
    assert!(reader.next().is_none(), "not fused");
    assert!(
        reader.offset() <= file_len,
        "offset {} past the end",
        reader.offset()
    );

    let bound = MAX_RECORD_LEN as usize;
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest <= bound, "one allocation of {largest} bytes");
    let held = PEAK_LIVE.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(
        held <= 2 * bound + 4096,
        "{held} bytes live at once for a {}-byte file",
        file.len()
    );
});
