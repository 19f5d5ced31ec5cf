//! Reading a damaged capture never panics and never allocates past the record bound: a
//! truncated file, a bad magic, an unknown version, a length past the bound or too short,
//! an unknown record type, a flipped byte and a malformed payload each give their own
//! typed `CaptureError` with the offset of the damage, after every whole record before
//! it. `Replay::from_reader` refuses such a file with the same error.

use std::io;

use crate::support::run_paused;
use sockactor::filters::record::MAX_RECORD_LEN;
use sockactor::filters::{Capture, CaptureError, CaptureReader, Record, Replay};
use sockactor::MockTransport;

/// A capture of the scripted session (21 records).
fn capture() -> Vec<u8> {
    run_paused(|| async {
        let mock = MockTransport::start();
        crate::support::capture::script_session(&mock);
        crate::support::capture::spawn_peer(&mock);
        let (capture, file) = Capture::to_memory();
        crate::support::capture::session(capture.wrap(mock.functions())).await;
        file.contents()
    })
}

/// Where each record starts, by the format: a 12-byte header, then records each led by
/// a u32 LE length of the bytes after it.
fn offsets(file: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 12;
    while at < file.len() {
        out.push(at);
        let len = u32::from_le_bytes(file[at..at + 4].try_into().expect("4 bytes"));
        at += 4 + len as usize;
    }
    assert_eq!(at, file.len());
    out
}

/// Every result the reader gives.
fn read(file: &[u8]) -> Vec<Result<Record, CaptureError>> {
    CaptureReader::new(file).collect()
}

/// Checks that `file` yields `whole` good records, then exactly `error`.
fn assert_damage(file: &[u8], whole: usize, check: impl Fn(&CaptureError) -> bool) {
    let results = read(file);
    assert_eq!(results.len(), whole + 1, "{results:?}");
    assert!(results[..whole].iter().all(Result::is_ok));
    let error = results[whole].as_ref().expect_err("the damage");
    assert!(check(error), "unexpected error {error:?}");
    let refused = run_paused(|| async { Replay::from_reader(file).map(|_| ()) });
    assert_eq!(
        refused.expect_err("replay refuses it").offset(),
        error.offset()
    );
}

/// CRC-32 (IEEE), as the format specifies, to craft records by hand.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn the_undamaged_capture_reads_whole() {
    let file = capture();
    let records = read(&file);
    assert_eq!(records.len(), 21);
    assert!(records.iter().all(Result::is_ok));
    assert_eq!(offsets(&file).len(), 21);
}

#[test]
fn a_file_cut_inside_a_record_is_truncated_at_that_record() {
    let file = capture();
    let offsets = offsets(&file);
    for k in [0, 3, 7, 20] {
        let start = offsets[k];
        let len = u32::from_le_bytes(file[start..start + 4].try_into().expect("4"));
        for cut in [start + 2, start + 10, start + 4 + len as usize - 1] {
            // Cut inside the length field, only the field's 4 bytes are known to be
            // needed.
            let needed = if cut < start + 4 {
                4
            } else {
                4 + u64::from(len)
            };
            assert_damage(&file[..cut], k, |e| {
                matches!(e, CaptureError::Truncated { offset, needed: n, available }
                    if *offset == start as u64
                        && *n == needed
                        && *available == (cut - start) as u64)
            });
        }
    }
}

#[test]
fn a_file_cut_inside_the_header_is_truncated_at_zero() {
    let file = capture();
    for cut in [0, 5, 11] {
        assert_damage(&file[..cut], 0, |e| {
            matches!(e, CaptureError::Truncated { offset: 0, needed: 12, available }
                if *available == cut as u64)
        });
    }
}

#[test]
fn a_file_cut_between_records_reads_as_the_shorter_capture() {
    let file = capture();
    let offsets = offsets(&file);
    let results = read(&file[..offsets[5]]);
    assert_eq!(results.len(), 5);
    assert!(results.iter().all(Result::is_ok));
}

#[test]
fn a_bad_magic_is_not_a_capture() {
    let mut file = capture();
    file[0] = b'X';
    assert_damage(
        &file,
        0,
        |e| matches!(e, CaptureError::BadMagic { offset: 0, found } if found == b"XKACTCAP"),
    );
    assert_damage(b"GIF89a, certainly no capture", 0, |e| {
        matches!(e, CaptureError::BadMagic { offset: 0, .. })
    });
}

#[test]
fn an_unknown_version_is_refused_at_its_field() {
    let mut file = capture();
    file[8..10].copy_from_slice(&2u16.to_le_bytes());
    assert_damage(&file, 0, |e| {
        matches!(
            e,
            CaptureError::UnsupportedVersion {
                offset: 8,
                version: 2
            }
        )
    });
}

#[test]
fn a_length_past_the_bound_is_refused_before_allocating() {
    let file = capture();
    let offsets = offsets(&file);
    for (k, len) in [(4, MAX_RECORD_LEN + 1), (9, u32::MAX)] {
        let mut damaged = file.clone();
        let start = offsets[k];
        damaged[start..start + 4].copy_from_slice(&len.to_le_bytes());
        assert_damage(&damaged, k, |e| {
            matches!(e, CaptureError::RecordTooLong { offset, len: l, max }
                if *offset == start as u64 && *l == len && *max == MAX_RECORD_LEN)
        });
    }
}

#[test]
fn a_length_shorter_than_a_record_is_refused() {
    let mut file = capture();
    let start = offsets(&file)[6];
    file[start..start + 4].copy_from_slice(&3u32.to_le_bytes());
    assert_damage(
        &file,
        6,
        |e| matches!(e, CaptureError::RecordTooShort { offset, len: 3 } if *offset == start as u64),
    );
}

#[test]
fn a_flipped_record_type_is_unknown_or_fails_its_checksum() {
    let file = capture();
    let start = offsets(&file)[3];
    let mut unknown = file.clone();
    unknown[start + 4] = 0xEE;
    assert_damage(&unknown, 3, |e| {
        matches!(e, CaptureError::UnknownRecordType { offset, record_type: 0xEE }
            if *offset == start as u64)
    });
    // Record 3 is a sendv; made a close (type 7), the type is known but the checksum
    // no longer matches.
    let mut other = file;
    assert_eq!(other[start + 4], 4, "record 3 is a sendv");
    other[start + 4] = 7;
    assert_damage(
        &other,
        3,
        |e| matches!(e, CaptureError::ChecksumMismatch { offset, .. } if *offset == start as u64),
    );
}

#[test]
fn a_flipped_data_byte_fails_the_checksum() {
    let mut file = capture();
    let offsets = offsets(&file);
    let start = offsets[7];
    let last = offsets[8] - 5;
    file[last] ^= 0x10;
    assert_damage(
        &file,
        7,
        |e| matches!(e, CaptureError::ChecksumMismatch { offset, .. } if *offset == start as u64),
    );
}

#[test]
fn a_malformed_payload_with_a_good_checksum_is_malformed() {
    let mut file = capture();
    // Record 0 is the open: type, handle, time, then family, kind, result. An unknown
    // family, with the checksum recomputed as the format says.
    let end = offsets(&file)[1];
    let family = 4 + 1 + 8 + 8;
    assert_eq!(file[12 + family], 1, "IPv4");
    file[12 + family] = 9;
    let crc = crc32(&file[12..end - 4]);
    file[end - 4..end].copy_from_slice(&crc.to_le_bytes());
    assert_damage(&file, 0, |e| {
        matches!(
            e,
            CaptureError::Malformed {
                offset: 12,
                what: "unknown family"
            }
        )
    });
}

/// A source that fails after some bytes.
struct Failing<'a>(&'a [u8]);

impl io::Read for Failing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn a_failing_source_is_an_io_error_at_its_offset() {
    let file = capture();
    let start = offsets(&file)[2];
    let results: Vec<_> = CaptureReader::new(Failing(&file[..start + 6])).collect();
    assert_eq!(results.len(), 3);
    assert!(matches!(
        &results[2],
        Err(CaptureError::Io { offset, source })
            if *offset == (start + 6) as u64 && source.kind() == io::ErrorKind::PermissionDenied
    ));
}
