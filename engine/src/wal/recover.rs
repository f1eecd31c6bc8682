//! Reading a whole WAL directory: shared by `Wal::open` (which then repairs the tail) and
//! `verify` (which only reports).

use std::fs;
use std::path::{Path, PathBuf};

use super::segment::{self, Tail};
use super::{RecordKind, VerifyReport, WalError, WalOptions};

/// One live segment found by the scan.
pub(crate) struct ScannedSegment {
    pub seq: u64,
    pub path: PathBuf,
    pub data_end_bytes: u64,
}

/// Everything a scan learns, apart from the records it hands out.
pub(crate) struct DirScan {
    pub metadata: Vec<u8>,
    pub segments: Vec<ScannedSegment>,
    /// Tail to drop in the last segment.
    pub tail: Option<Tail>,
}

impl DirScan {
    pub fn last(&self) -> &ScannedSegment {
        self.segments
            .last()
            .expect("a scan has at least one segment")
    }

    pub fn data_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.data_end_bytes).sum()
    }
}

/// Reads every segment of `dir` in order without modifying anything, passing each record
/// after the per-segment metadata to `on_record` with the segment's sequence number.
pub(crate) fn scan_dir(
    dir: &Path,
    opts: &WalOptions,
    on_record: &mut dyn FnMut(u64, RecordKind, &[u8]),
) -> Result<DirScan, WalError> {
    let seqs = segment::list_segments(dir)?;
    if seqs.is_empty() {
        return Err(WalError::NotFound(dir.to_path_buf()));
    }
    segment::check_contiguous(dir, &seqs)?;
    let mut metadata: Option<Vec<u8>> = None;
    let mut segments = Vec::with_capacity(seqs.len());
    let mut tail = None;
    for (i, &seq) in seqs.iter().enumerate() {
        let path = dir.join(segment::segment_name(seq));
        let is_last = i + 1 == seqs.len();
        // One segment in memory at a time: segments are bounded by the segment size.
        let data = fs::read(&path).map_err(|e| WalError::io(&path, "read", e))?;
        let scan =
            segment::scan_segment(&path, seq, &data, is_last, opts, &mut |kind, payload| {
                on_record(seq, kind, payload)
            })?;
        check_same_metadata(&path, &mut metadata, scan.metadata)?;
        tail = scan.tail;
        segments.push(ScannedSegment {
            seq,
            path,
            data_end_bytes: scan.data_end_bytes,
        });
    }
    Ok(DirScan {
        metadata: metadata.expect("at least one segment"),
        segments,
        tail,
    })
}

/// Every segment repeats the metadata written at creation; a different copy is damage.
fn check_same_metadata(
    path: &Path,
    first: &mut Option<Vec<u8>>,
    this: Vec<u8>,
) -> Result<(), WalError> {
    match first {
        None => *first = Some(this),
        Some(first) if *first == this => {}
        Some(_) => {
            let offset = super::format::SEGMENT_HEADER_BYTES as u64;
            return Err(WalError::corrupt(
                path,
                offset,
                "metadata differs from the first segment's",
            ));
        }
    }
    Ok(())
}

/// Read-only verification for tools: reads every segment without modifying anything and
/// reports what it found. Corruption is returned as `WalError::Corrupt`; a torn tail (which
/// `Wal::open` would truncate) is reported in `torn_tail`.
pub fn verify(dir: &Path, opts: &WalOptions) -> Result<VerifyReport, WalError> {
    let mut records = 0u64;
    let scan = scan_dir(dir, opts, &mut |_, _, _| records += 1)?;
    Ok(VerifyReport {
        segments: scan.segments.len(),
        records,
        bytes: scan.data_bytes(),
        torn_tail: scan
            .tail
            .map(|t| (scan.last().path.clone(), t.offset_bytes)),
    })
}
