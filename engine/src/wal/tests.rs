//! WAL tests: round trips, torn tails, corruption, poisoning, verify and crash points.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use super::format::SEGMENT_HEADER_BYTES;
use super::*;

const METADATA: &[u8] = b"cluster-id=7 member-id=3";

fn small_opts() -> WalOptions {
    WalOptions {
        segment_size_bytes: 4096,
        record_size_bytes_max: 1 << 20,
    }
}

/// Deterministic payload of `len_bytes` bytes, distinct per `seed`.
fn payload(seed: usize, len_bytes: usize) -> Vec<u8> {
    (0..len_bytes)
        .map(|i| (seed * 31 + i * 7 + 1) as u8)
        .collect()
}

const KINDS: [RecordKind; 4] = [
    RecordKind::Entry,
    RecordKind::HardState,
    RecordKind::ConfState,
    RecordKind::Snapshot,
];

/// `count` batches of 1..=3 records of 0..~250 bytes.
fn make_batches(first_seed: usize, count: usize) -> Vec<Vec<Record>> {
    (first_seed..first_seed + count)
        .map(|b| {
            (0..1 + b % 3)
                .map(|r| Record {
                    kind: KINDS[(b + r) % 4],
                    payload: payload(b * 5 + r, (b * 37 + r * 91) % 250),
                })
                .collect()
        })
        .collect()
}

fn append_batch(wal: &mut Wal, batch: &[Record]) -> Result<(), WalError> {
    let refs: Vec<(RecordKind, &[u8])> = batch
        .iter()
        .map(|r| (r.kind, r.payload.as_slice()))
        .collect();
    wal.append(&refs)
}

fn append_all(wal: &mut Wal, batches: &[Vec<Record>]) {
    for batch in batches {
        append_batch(wal, batch).expect("append");
    }
}

fn flatten(batches: &[Vec<Record>]) -> Vec<Record> {
    batches.iter().flatten().cloned().collect()
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

fn last_segment(dir: &Path) -> PathBuf {
    let seqs = segment::list_segments(dir).unwrap();
    seg_path(dir, *seqs.last().unwrap())
}

/// (start, end) of every frame in a well-formed segment, metadata first. Walks the length
/// fields on its own so the tests do not trust the code under test for offsets.
fn frame_extents(path: &Path) -> Vec<(u64, u64)> {
    let data = fs::read(path).unwrap();
    let mut extents = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while at + 9 <= data.len() && data[at..at + 9].iter().any(|&b| b != 0) {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        extents.push((at as u64, (at + 9 + len) as u64));
        at += 9 + len;
    }
    extents
}

fn flip_byte(path: &Path, offset: u64) {
    let mut data = fs::read(path).unwrap();
    data[offset as usize] ^= 0x5a;
    fs::write(path, data).unwrap();
}

fn truncate_file(path: &Path, len_bytes: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len_bytes)
        .unwrap();
}

fn copy_dir(src: &Path, dst: &Path) {
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
}

/// A WAL spanning several 4 KiB segments; returns the records written.
fn populated_wal(dir: &Path, batches: usize) -> Vec<Record> {
    let mut wal = Wal::create(dir, METADATA, small_opts()).unwrap();
    let batches = make_batches(0, batches);
    append_all(&mut wal, &batches);
    flatten(&batches)
}

fn expect_corrupt(err: WalError, path: &Path, offset: u64) {
    let text = err.to_string();
    match err {
        WalError::Corrupt {
            path: p, offset: o, ..
        } => {
            assert_eq!((p.as_path(), o), (path, offset), "{text}");
        }
        other => panic!(
            "expected Corrupt at {} offset {offset}, got {other}",
            path.display()
        ),
    }
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains(name) && text.contains(&format!("offset {offset}")),
        "{text}"
    );
}

#[test]
fn round_trip_across_segments_then_reopen_and_append() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    assert!(!Wal::exists(&dir));
    let mut expected = populated_wal(&dir, 120);
    assert!(Wal::exists(&dir));
    let segments = segment::list_segments(&dir).unwrap();
    assert!(
        segments.len() >= 4,
        "expected several segments, got {}",
        segments.len()
    );

    let (mut wal, recovered) = Wal::open(&dir, small_opts()).unwrap();
    assert_eq!(recovered.metadata, METADATA);
    assert_eq!(recovered.truncated_tail, None);
    assert_eq!(recovered.records, expected);
    let more = make_batches(500, 60);
    append_all(&mut wal, &more);
    expected.extend(flatten(&more));
    let size_bytes = wal.size_bytes();
    drop(wal);

    let (wal, recovered) = Wal::open(&dir, small_opts()).unwrap();
    assert_eq!(recovered.records, expected);
    assert_eq!(wal.size_bytes(), size_bytes);
    let report = verify(&dir, &small_opts()).unwrap();
    assert_eq!(report.records, expected.len() as u64);
    assert_eq!(report.bytes, size_bytes);
    assert_eq!(report.segments, segment::list_segments(&dir).unwrap().len());
    assert_eq!(report.torn_tail, None);
}

#[test]
fn size_bytes_counts_headers_metadata_and_records() {
    let tmp = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(tmp.path(), METADATA, small_opts()).unwrap();
    let base = (SEGMENT_HEADER_BYTES + 9 + METADATA.len()) as u64;
    assert_eq!(wal.size_bytes(), base);
    wal.append(&[(RecordKind::Entry, b"abc"), (RecordKind::HardState, b"")])
        .unwrap();
    assert_eq!(wal.size_bytes(), base + 12 + 9);
    wal.append(&[]).unwrap();
    assert_eq!(wal.size_bytes(), base + 21);
}

#[test]
fn every_segment_starts_with_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    populated_wal(tmp.path(), 60);
    for seq in segment::list_segments(tmp.path()).unwrap() {
        let data = fs::read(seg_path(tmp.path(), seq)).unwrap();
        assert_eq!(format::decode_segment_header(&data), Ok(seq));
        let format::Frame::Record { kind, payload, .. } =
            format::parse_frame(&data, SEGMENT_HEADER_BYTES, 1 << 20)
        else {
            panic!("segment {seq} has no first record")
        };
        assert_eq!((kind, payload), (RecordKind::Metadata, METADATA));
    }
}

#[test]
fn batch_larger_than_a_segment_gets_its_own_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(tmp.path(), METADATA, small_opts()).unwrap();
    wal.append(&[(RecordKind::Entry, b"small")]).unwrap();
    let big = payload(1, 10_000);
    wal.append(&[(RecordKind::Entry, &big), (RecordKind::Entry, &big)])
        .unwrap();
    wal.append(&[(RecordKind::Entry, b"after")]).unwrap();
    drop(wal);
    let (_, recovered) = Wal::open(tmp.path(), small_opts()).unwrap();
    let payloads: Vec<&[u8]> = recovered
        .records
        .iter()
        .map(|r| r.payload.as_slice())
        .collect();
    assert_eq!(payloads, vec![&b"small"[..], &big, &big, &b"after"[..]]);
    assert!(fs::metadata(seg_path(tmp.path(), 1)).unwrap().len() >= 20_018);
}

#[test]
fn create_refuses_existing_wal_and_open_refuses_missing() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Wal::create(tmp.path(), METADATA, small_opts()).unwrap());
    assert!(matches!(
        Wal::create(tmp.path(), METADATA, small_opts()),
        Err(WalError::AlreadyExists(_))
    ));
    let empty = tmp.path().join("empty");
    assert!(matches!(
        Wal::open(&empty, small_opts()),
        Err(WalError::NotFound(_))
    ));
    assert!(matches!(
        verify(&empty, &small_opts()),
        Err(WalError::NotFound(_))
    ));
}

#[test]
fn a_second_open_of_the_same_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let _wal = Wal::create(tmp.path(), METADATA, small_opts()).unwrap();
    assert!(matches!(
        Wal::open(tmp.path(), small_opts()),
        Err(WalError::Locked(_))
    ));
}

#[test]
fn torn_tail_cut_mid_record_is_truncated_and_appends_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let mut expected = populated_wal(tmp.path(), 50);
    let last = last_segment(tmp.path());
    let &(start, end) = frame_extents(&last).last().unwrap();
    truncate_file(&last, end - 3);
    expected.pop();

    let report = verify(tmp.path(), &small_opts()).unwrap();
    assert_eq!(report.torn_tail, Some((last.clone(), start)));
    let (mut wal, recovered) = Wal::open(tmp.path(), small_opts()).unwrap();
    assert_eq!(recovered.truncated_tail, Some((last.clone(), start)));
    assert_eq!(recovered.records, expected);
    // The segment is preallocated again, so the next append need not grow it.
    assert!(fs::metadata(&last).unwrap().len() >= 4096);
    let more = make_batches(900, 30);
    append_all(&mut wal, &more);
    expected.extend(flatten(&more));
    drop(wal);

    let (_, recovered) = Wal::open(tmp.path(), small_opts()).unwrap();
    assert_eq!(recovered.truncated_tail, None);
    assert_eq!(recovered.records, expected);
}

#[test]
fn torn_tail_flipped_bytes_is_truncated_zeroed_and_verify_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut expected = populated_wal(tmp.path(), 50);
    let last = last_segment(tmp.path());
    let &(start, end) = frame_extents(&last).last().unwrap();
    flip_byte(&last, end - 1);
    expected.pop();

    let before = fs::read(&last).unwrap();
    let report = verify(tmp.path(), &small_opts()).unwrap();
    assert_eq!(report.torn_tail, Some((last.clone(), start)));
    assert_eq!(report.records, expected.len() as u64);
    assert_eq!(
        fs::read(&last).unwrap(),
        before,
        "verify must not modify the WAL"
    );

    let (mut wal, recovered) = Wal::open(tmp.path(), small_opts()).unwrap();
    assert_eq!(recovered.truncated_tail, Some((last.clone(), start)));
    assert_eq!(recovered.records, expected);
    let after = fs::read(&last).unwrap();
    assert!(
        after[start as usize..].iter().all(|&b| b == 0),
        "torn bytes must be zeroed"
    );

    wal.append(&[(RecordKind::Entry, b"x")]).unwrap();
    drop(wal);
    let (_, recovered) = Wal::open(tmp.path(), small_opts()).unwrap();
    assert_eq!(recovered.records.last().unwrap().payload, b"x");
    assert_eq!(recovered.records.len(), expected.len() + 1);
}

#[test]
fn torn_length_field_in_last_record_is_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let mut expected = populated_wal(tmp.path(), 50);
    let last = last_segment(tmp.path());
    let &(start, _) = frame_extents(&last).last().unwrap();
    flip_byte(&last, start + 1); // length now runs far past the file
    expected.pop();
    let (_, recovered) = Wal::open(tmp.path(), small_opts()).unwrap();
    assert_eq!(recovered.truncated_tail, Some((last, start)));
    assert_eq!(recovered.records, expected);
}

#[test]
fn garbage_after_the_end_marker_of_the_last_segment_is_a_torn_tail() {
    // A torn write can persist a later sector of a batch but not its first one.
    let tmp = tempfile::tempdir().unwrap();
    let expected = populated_wal(tmp.path(), 50);
    let last = last_segment(tmp.path());
    let &(_, end) = frame_extents(&last).last().unwrap();
    flip_byte(&last, end + 700);
    let (_, recovered) = Wal::open(tmp.path(), small_opts()).unwrap();
    assert_eq!(recovered.truncated_tail, Some((last.clone(), end)));
    assert_eq!(recovered.records, expected);
    assert!(fs::read(&last).unwrap()[end as usize..]
        .iter()
        .all(|&b| b == 0));
}

#[test]
fn corruption_in_a_non_last_segment_is_an_error_naming_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    populated_wal(tmp.path(), 50);
    let first = seg_path(tmp.path(), 0);
    let extents = frame_extents(&first);
    // The last record of a sealed segment must not be mistaken for a torn tail either.
    let &(start, end) = extents.last().unwrap();
    flip_byte(&first, end - 1);
    expect_corrupt(
        Wal::open(tmp.path(), small_opts()).unwrap_err(),
        &first,
        start,
    );
    expect_corrupt(
        verify(tmp.path(), &small_opts()).unwrap_err(),
        &first,
        start,
    );
}

#[test]
fn non_zero_bytes_after_the_end_of_a_sealed_segment_are_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    populated_wal(tmp.path(), 50);
    let seqs = segment::list_segments(tmp.path()).unwrap();
    let (seg, end) = seqs[..seqs.len() - 1]
        .iter()
        .map(|&seq| seg_path(tmp.path(), seq))
        .map(|p| (p.clone(), frame_extents(&p).last().unwrap().1))
        .find(|&(_, end)| end < 4095)
        .expect("a sealed segment with unused space");
    let offset = end + (4096 - end) / 2;
    flip_byte(&seg, offset);
    expect_corrupt(
        Wal::open(tmp.path(), small_opts()).unwrap_err(),
        &seg,
        offset,
    );
}

#[test]
fn corruption_in_the_middle_of_the_last_segment_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    populated_wal(tmp.path(), 50);
    let last = last_segment(tmp.path());
    let extents = frame_extents(&last);
    assert!(extents.len() >= 3, "need a record followed by another one");
    let (start, end) = extents[1]; // first record after the metadata
    flip_byte(&last, end - 1);
    let before = fs::read(&last).unwrap();
    expect_corrupt(
        Wal::open(tmp.path(), small_opts()).unwrap_err(),
        &last,
        start,
    );
    expect_corrupt(verify(tmp.path(), &small_opts()).unwrap_err(), &last, start);
    assert_eq!(
        fs::read(&last).unwrap(),
        before,
        "a failed open must not modify the WAL"
    );
}

#[test]
fn bad_headers_missing_segments_and_bad_metadata_are_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    populated_wal(tmp.path(), 60);
    let count = segment::list_segments(tmp.path()).unwrap().len() as u64;
    assert!(count >= 3);

    let bad_header = tempfile::tempdir().unwrap();
    copy_dir(tmp.path(), bad_header.path());
    let seg = seg_path(bad_header.path(), count - 1);
    flip_byte(&seg, 2);
    expect_corrupt(
        Wal::open(bad_header.path(), small_opts()).unwrap_err(),
        &seg,
        0,
    );

    let gap = tempfile::tempdir().unwrap();
    copy_dir(tmp.path(), gap.path());
    fs::remove_file(seg_path(gap.path(), 1)).unwrap();
    expect_corrupt(
        Wal::open(gap.path(), small_opts()).unwrap_err(),
        &seg_path(gap.path(), 1),
        0,
    );

    let bad_meta = tempfile::tempdir().unwrap();
    copy_dir(tmp.path(), bad_meta.path());
    let seg = seg_path(bad_meta.path(), count - 1);
    flip_byte(&seg, SEGMENT_HEADER_BYTES as u64 + 10);
    expect_corrupt(
        Wal::open(bad_meta.path(), small_opts()).unwrap_err(),
        &seg,
        SEGMENT_HEADER_BYTES as u64,
    );

    // Segments released from the front leave a WAL that still opens.
    let released = tempfile::tempdir().unwrap();
    copy_dir(tmp.path(), released.path());
    fs::remove_file(seg_path(released.path(), 0)).unwrap();
    let (_, recovered) = Wal::open(released.path(), small_opts()).unwrap();
    assert_eq!(recovered.metadata, METADATA);
}

#[test]
fn interrupted_segment_creation_is_cleaned_up() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = populated_wal(tmp.path(), 10);
    let tmp_seg = tmp.path().join("00000000000000ff.wal.tmp");
    fs::write(&tmp_seg, b"half a segment").unwrap();
    let (_, recovered) = Wal::open(tmp.path(), small_opts()).unwrap();
    assert_eq!(recovered.records, expected);
    assert!(!tmp_seg.exists());
}

#[test]
fn record_over_the_max_is_refused_at_append_and_corrupt_at_read() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size_bytes: 4096,
        record_size_bytes_max: 100,
    };
    let mut wal = Wal::create(tmp.path(), METADATA, opts).unwrap();
    let err = wal
        .append(&[(RecordKind::Entry, b"ok"), (RecordKind::Entry, &[7u8; 101])])
        .unwrap_err();
    assert!(
        matches!(err, WalError::RecordTooLarge { size_bytes: 101 }),
        "{err}"
    );
    assert!(!wal.is_poisoned(), "a refused record is not an I/O error");
    wal.append(&[(RecordKind::Entry, &[7u8; 100])]).unwrap();
    drop(wal);
    let (_, recovered) = Wal::open(tmp.path(), opts).unwrap();
    assert_eq!(
        recovered.records.len(),
        1,
        "the refused batch must not be written at all"
    );

    let big = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(big.path(), METADATA, small_opts()).unwrap();
    append_all(&mut wal, &make_batches(0, 40)); // several segments, payloads up to 250 bytes
    drop(wal);
    let first = seg_path(big.path(), 0);
    let (start, _) = *frame_extents(&first)
        .iter()
        .find(|&&(s, e)| e - s - 9 > 100)
        .expect("a record over 100 bytes in segment 0");
    expect_corrupt(Wal::open(big.path(), opts).unwrap_err(), &first, start);

    let meta_too_big = tempfile::tempdir().unwrap();
    let err = Wal::create(meta_too_big.path(), &[0u8; 101], opts).unwrap_err();
    assert!(matches!(err, WalError::RecordTooLarge { size_bytes: 101 }));
}

/// The write path a test forces.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path3 {
    IoUring,
    /// pwrite + fdatasync.
    Buffered,
    /// O_DIRECT | O_DSYNC where the filesystem allows it (else the buffered path).
    Direct,
}

fn force_path(wal: &mut Wal, path: Path3) {
    match path {
        Path3::IoUring => {
            wal.disable_direct_for_test();
            wal.writer_for_test().enable_io_uring();
        }
        Path3::Buffered => {
            wal.writer_for_test().disable_io_uring();
            wal.disable_direct_for_test();
        }
        Path3::Direct => {
            wal.writer_for_test().disable_io_uring();
            eprintln!("wal: O_DIRECT in use: {}", wal.uses_direct_for_test());
        }
    }
}

fn check_poisoning(path: Path3) {
    let tmp = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(tmp.path(), METADATA, small_opts()).unwrap();
    force_path(&mut wal, path);
    wal.append(&[(RecordKind::Entry, b"durable")]).unwrap();
    wal.break_file_for_test();
    let err = wal.append(&[(RecordKind::Entry, b"lost")]).unwrap_err();
    assert!(matches!(err, WalError::Io { .. }), "{err}");
    assert!(err.to_string().contains("0000000000000000.wal"), "{err}");
    assert!(wal.is_poisoned());
    assert!(matches!(
        wal.append(&[(RecordKind::Entry, b"x")]),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(wal.append(&[]), Err(WalError::Poisoned)));
    drop(wal);
    let (_, recovered) = Wal::open(tmp.path(), small_opts()).unwrap();
    assert_eq!(
        recovered.records,
        vec![Record {
            kind: RecordKind::Entry,
            payload: b"durable".to_vec()
        }]
    );
}

#[test]
fn io_error_poisons_the_wal_io_uring_path() {
    check_poisoning(Path3::IoUring);
}

#[test]
fn io_error_poisons_the_wal_fallback_path() {
    check_poisoning(Path3::Buffered);
}

#[test]
fn io_error_poisons_the_wal_direct_path() {
    check_poisoning(Path3::Direct);
}

/// A direct write the device refuses for its alignment (EINVAL) is retried through
/// pwrite + fdatasync, which serves the WAL from then on: nothing is lost or poisoned.
#[test]
fn a_refused_direct_write_falls_back_to_the_buffered_path() {
    let tmp = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(tmp.path(), METADATA, small_opts()).unwrap();
    force_path(&mut wal, Path3::Direct);
    if !wal.uses_direct_for_test() {
        eprintln!("wal: this filesystem refuses O_DIRECT; the fallback is all there is");
    }
    let batches = make_batches(0, 20);
    append_all(&mut wal, &batches[..10]);
    wal.refuse_next_direct_write_for_test();
    append_all(&mut wal, &batches[10..]);
    assert!(!wal.uses_direct_for_test());
    assert!(!wal.is_poisoned());
    drop(wal);
    let (_, recovered) = Wal::open(tmp.path(), small_opts()).unwrap();
    assert_eq!(recovered.records, flatten(&batches));
}

/// Direct appends rewrite the block holding the append offset: batches that start and end
/// anywhere in a block, span blocks and cross segments read back exactly, after a reopen
/// (which reads the partial block back from the file) as well.
#[test]
fn direct_appends_round_trip_at_any_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size_bytes: 64 * 1024,
        record_size_bytes_max: 1 << 20,
    };
    let mut wal = Wal::create(tmp.path(), METADATA, opts).unwrap();
    force_path(&mut wal, Path3::Direct);
    // Sizes around the 4 KiB block: tiny, just under, at and over a block, several blocks.
    let sizes = [1usize, 13, 4000, 4087, 4096, 4097, 9000, 200, 70_000, 5];
    let batches: Vec<Vec<Record>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            vec![Record {
                kind: KINDS[i % 4],
                payload: payload(i, len),
            }]
        })
        .collect();
    append_all(&mut wal, &batches[..6]);
    drop(wal);
    let (mut wal, recovered) = Wal::open(tmp.path(), opts).unwrap();
    assert_eq!(recovered.records, flatten(&batches[..6]));
    force_path(&mut wal, Path3::Direct);
    append_all(&mut wal, &batches[6..]);
    let more = make_batches(100, 300);
    append_all(&mut wal, &more);
    assert!(wal.segment_seq() > 0, "the appends crossed segments");
    drop(wal);
    let (_, recovered) = Wal::open(tmp.path(), opts).unwrap();
    let mut expected = flatten(&batches);
    expected.extend(flatten(&more));
    assert_eq!(recovered.records, expected);
}

#[test]
fn failed_segment_creation_poisons_the_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut wal = Wal::create(&dir, METADATA, small_opts()).unwrap();
    // Replacing the directory with a file makes creating the next segment fail even as root.
    let moved = tmp.path().join("moved");
    fs::rename(&dir, &moved).unwrap();
    fs::write(&dir, b"not a directory").unwrap();
    let err = wal
        .append(&[(RecordKind::Entry, &[1u8; 5000])])
        .unwrap_err();
    assert!(matches!(err, WalError::Io { .. }), "{err}");
    assert!(matches!(
        wal.append(&[(RecordKind::Entry, b"x")]),
        Err(WalError::Poisoned)
    ));
}

#[test]
fn fallback_and_short_write_paths_round_trip() {
    for mode in ["fallback", "direct", "short-write"] {
        let tmp = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(tmp.path(), METADATA, small_opts()).unwrap();
        match mode {
            "fallback" => force_path(&mut wal, Path3::Buffered),
            "direct" => force_path(&mut wal, Path3::Direct),
            // A capped write completes in full, so the fsync runs too; the remainder then
            // goes through pwrite + fdatasync like after a real short write.
            _ => {
                force_path(&mut wal, Path3::IoUring);
                wal.writer_for_test().uring_write_cap_bytes = Some(7);
            }
        }
        let batches = make_batches(0, 40);
        append_all(&mut wal, &batches);
        drop(wal);
        let (_, recovered) = Wal::open(tmp.path(), small_opts()).unwrap();
        assert_eq!(recovered.records, flatten(&batches), "{mode}");
    }
}

#[test]
fn wal_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Wal>();
    assert_send::<WalError>();
}

#[test]
fn appends_round_trip_on_the_write_path_in_use() {
    // Reports which path this kernel gives (io_uring or the pwrite fallback) and checks that
    // what it wrote is what recovery reads back.
    let tmp = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(tmp.path(), METADATA, small_opts()).unwrap();
    eprintln!("wal: io_uring in use: {}", wal.uses_io_uring());
    wal.append(&[(RecordKind::Entry, b"one"), (RecordKind::HardState, b"two")])
        .unwrap();
    drop(wal);
    let (_, recovered) = Wal::open(tmp.path(), small_opts()).unwrap();
    let payloads: Vec<&[u8]> = recovered
        .records
        .iter()
        .map(|r| r.payload.as_slice())
        .collect();
    assert_eq!(payloads, vec![&b"one"[..], &b"two"[..]]);
}

/// Cuts a copy of the last segment at every byte of its data and checks that recovery keeps
/// exactly the records that end at or before the cut, and that appends continue.
#[test]
fn crash_at_every_byte_of_the_last_segment_recovers_the_complete_records() {
    let tmp = tempfile::tempdir().unwrap();
    let all = populated_wal(tmp.path(), 70);
    let last = last_segment(tmp.path());
    let last_name = last.file_name().unwrap().to_owned();
    let extents = frame_extents(&last);
    let in_last = extents.len() - 1; // minus the metadata frame
    assert!(in_last >= 5, "last segment should hold several records");
    let before_last = all.len() - in_last;
    let meta_end = extents[0].1;
    let data_end = extents.last().unwrap().1;

    for cut in meta_end..=data_end + 20 {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(tmp.path(), copy.path());
        let seg = copy.path().join(&last_name);
        truncate_file(&seg, cut);
        let complete = extents[1..].iter().filter(|&&(_, end)| end <= cut).count();
        // A partial frame whose surviving bytes are all zero reads as the end marker.
        let original = fs::read(&last).unwrap();
        let torn_start = extents[1..]
            .iter()
            .find(|&&(s, e)| s < cut && cut < e)
            .map(|&(s, _)| s)
            .filter(|&s| original[s as usize..cut as usize].iter().any(|&b| b != 0));

        let (mut wal, recovered) = Wal::open(copy.path(), small_opts()).unwrap();
        assert_eq!(
            recovered.records,
            all[..before_last + complete],
            "cut at {cut}"
        );
        assert_eq!(
            recovered.truncated_tail,
            torn_start.map(|s| (seg.clone(), s)),
            "cut at {cut}"
        );
        let repaired = fs::read(&seg).unwrap();
        let valid_end = extents
            .iter()
            .map(|&(_, e)| e)
            .filter(|&e| e <= cut)
            .max()
            .unwrap();
        assert!(
            repaired[valid_end as usize..].iter().all(|&b| b == 0),
            "cut at {cut}: tail not zeroed"
        );
        if cut % 97 == 0 {
            wal.append(&[(RecordKind::Entry, b"after-crash")]).unwrap();
            drop(wal);
            let (_, again) = Wal::open(copy.path(), small_opts()).unwrap();
            assert_eq!(
                again.records.len(),
                before_last + complete + 1,
                "cut at {cut}"
            );
            assert_eq!(again.truncated_tail, None);
        }
    }
}

/// Released segments are gone, what remains still opens, and recovery tells which segment
/// each record came from.
#[test]
fn release_before_drops_old_segments_and_reopen_works() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size_bytes: 4096,
        ..WalOptions::default()
    };
    let mut wal = Wal::create(dir.path(), b"meta", opts.clone()).unwrap();
    let payload = vec![7u8; 1000];
    for _ in 0..40 {
        wal.append(&[(RecordKind::Entry, &payload)]).unwrap();
    }
    let live = wal.segment_seq();
    assert!(live >= 3, "small segments roll over (live segment {live})");
    let before = wal.size_bytes();
    assert_eq!(wal.release_before(live - 1).unwrap(), (live - 1) as usize);
    assert!(wal.size_bytes() < before);
    assert_eq!(
        wal.release_before(live + 10).unwrap(),
        1,
        "the live segment always stays"
    );
    wal.append(&[(RecordKind::Entry, b"after")]).unwrap();
    drop(wal);
    let (wal, recovered) = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(recovered.metadata, b"meta");
    assert_eq!(
        recovered.segment_starts.first().map(|(seq, _)| *seq),
        Some(live)
    );
    assert_eq!(recovered.records.last().unwrap().payload, b"after");
    assert_eq!(wal.segment_seq(), live);
}

/// Once the live segment is half full a spare is written beside it; the roll renames the
/// spare into the next segment (a spare that failed would be left behind), and every
/// record reads back after a reopen, on each I/O path.
#[test]
fn rolls_adopt_the_spare_written_in_the_background() {
    for path in [Path3::Direct, Path3::Buffered] {
        let tmp = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            segment_size_bytes: 64 * 1024,
            record_size_bytes_max: 1 << 20,
        };
        let mut wal = Wal::create(tmp.path(), METADATA, opts).unwrap();
        force_path(&mut wal, path);
        let batches = make_batches(0, 1500);
        let mut rolls = 0;
        for batch in &batches {
            let seq_before = wal.segment_seq();
            let spare_started = wal.spare.started();
            append_batch(&mut wal, batch).unwrap();
            if wal.segment_seq() != seq_before {
                rolls += 1;
                assert!(spare_started, "a spare was under way before roll {rolls}");
                assert!(
                    !spare::spare_path(tmp.path()).exists() || wal.spare.started(),
                    "the spare was renamed into the new segment"
                );
            }
        }
        assert!(rolls >= 3, "the appends crossed several segments ({rolls})");
        assert_eq!(wal.spares_adopted, rolls, "every roll took the spare");
        drop(wal);
        let (wal, recovered) = Wal::open(tmp.path(), opts).unwrap();
        assert!(
            !spare::spare_path(tmp.path()).exists(),
            "open removes a leftover spare"
        );
        assert_eq!(recovered.records, flatten(&batches), "{path:?}");
        drop(wal);
    }
}

/// A batch larger than the spare gets a segment made to its measure instead of the spare,
/// and the WAL goes on rolling through spares afterwards.
#[test]
fn a_batch_larger_than_the_spare_gets_its_own_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size_bytes: 16 * 1024,
        record_size_bytes_max: 1 << 20,
    };
    let mut wal = Wal::create(tmp.path(), METADATA, opts).unwrap();
    let mut batches = make_batches(0, 60);
    append_all(&mut wal, &batches);
    assert!(wal.spare.started(), "the live segment is past half full");
    let big = vec![Record {
        kind: RecordKind::Snapshot,
        payload: payload(7, 40 * 1024),
    }];
    let seq_before = wal.segment_seq();
    append_batch(&mut wal, &big).unwrap();
    assert_eq!(wal.segment_seq(), seq_before + 1);
    let made = fs::metadata(tmp.path().join(segment::segment_name(wal.segment_seq())))
        .unwrap()
        .len();
    assert!(
        made > 40 * 1024,
        "the segment was made to measure ({made} bytes)"
    );
    batches.push(big);
    let more = make_batches(60, 200);
    append_all(&mut wal, &more);
    batches.extend(more);
    drop(wal);
    let (_, recovered) = Wal::open(tmp.path(), opts).unwrap();
    assert_eq!(recovered.records, flatten(&batches));
}

/// Dropping the WAL while its spare is being written stops and waits for the helper: the
/// directory can be reopened at once, the leftover spare is removed, and nothing was lost.
#[test]
fn dropping_the_wal_mid_spare_is_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size_bytes: 32 << 20,
        record_size_bytes_max: 20 << 20,
    };
    let mut wal = Wal::create(tmp.path(), METADATA, opts).unwrap();
    let half = vec![Record {
        kind: RecordKind::Snapshot,
        payload: payload(3, 17 << 20),
    }];
    append_batch(&mut wal, &half).unwrap();
    assert!(wal.spare.started(), "past half of the segment");
    drop(wal);
    let (_, recovered) = Wal::open(tmp.path(), opts).unwrap();
    assert_eq!(recovered.records, flatten(&[half]));
    assert!(!spare::spare_path(tmp.path()).exists());
}
