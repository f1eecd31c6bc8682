//! The write-ahead log.
//!
//! A WAL is a directory of segment files `{seq:016x}.wal`, each preallocated to
//! [`WalOptions::segment_size_bytes`] and holding a fixed header, the caller's metadata
//! record, then framed records `[u32 len LE][u32 crc32c LE][u8 type][payload]`. The byte
//! layout and the recovery rules are written down in `docs/wal-format.md`.
//!
//! Durability: [`Wal::append`] encodes a batch into one buffer and issues one write plus one
//! fdatasync (linked io_uring operations, or pwrite + fdatasync where io_uring is
//! unavailable). It returns only once the batch is durable. After any I/O error the WAL is
//! poisoned: what reached the disk is unknown, so it refuses further appends and the owner
//! must reopen it (recovery then decides from the bytes on disk).
//!
//! Recovery: [`Wal::open`] reads every segment; a torn tail of the last segment (a write cut
//! short by a crash) is dropped and zeroed, any other damage is a [`WalError::Corrupt`]
//! naming file and offset.

mod direct;
mod error;
mod format;
mod io;
mod recover;
mod segment;
mod spare;

#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use error::WalError;
pub use recover::verify;

use io::{BatchWriter, WalIo};
use segment::Tail;

/// Sizing of a WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Size each segment file is preallocated to (a batch bigger than this gets a segment
    /// of its own size). Default 64 MiB.
    pub segment_size_bytes: u64,
    /// Largest record payload accepted at append; a larger length read back is corruption.
    /// Default 64 MiB.
    pub record_size_bytes_max: u32,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size_bytes: 64 << 20,
            record_size_bytes_max: 64 << 20,
        }
    }
}

/// Record kinds; the payload format belongs to the caller (raft entries, hard state, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// The caller's metadata; written as the first record of every segment.
    Metadata = 1,
    /// A raft log entry.
    Entry = 2,
    /// Raft hard state (term, vote, commit).
    HardState = 3,
    /// Raft configuration state.
    ConfState = 4,
    /// A snapshot marker.
    Snapshot = 5,
}

impl RecordKind {
    /// Every kind, in type-byte order.
    pub const ALL: [RecordKind; 5] = [
        RecordKind::Metadata,
        RecordKind::Entry,
        RecordKind::HardState,
        RecordKind::ConfState,
        RecordKind::Snapshot,
    ];

    /// The kind with this type byte, if any.
    pub fn from_u8(byte: u8) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|&kind| kind as u8 == byte)
    }
}

/// One record read back from the WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: RecordKind,
    pub payload: Vec<u8>,
}

/// What [`Wal::open`] recovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The metadata given to [`Wal::create`].
    pub metadata: Vec<u8>,
    /// Every valid record after the metadata, in write order, across segments.
    pub records: Vec<Record>,
    /// Where each live segment's records start in `records`: (segment seq, first record
    /// position), in segment order. Lets the caller learn what each segment holds, to
    /// release segments later.
    pub segment_starts: Vec<(u64, usize)>,
    /// Segment and offset where a torn tail was cut off, if there was one.
    pub truncated_tail: Option<(PathBuf, u64)>,
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Live segment files.
    pub segments: usize,
    /// Valid records after the per-segment metadata (what `Recovered::records` would hold).
    pub records: u64,
    /// Bytes of valid data (headers, metadata and records) across segments.
    pub bytes: u64,
    /// A torn tail that [`Wal::open`] would truncate: segment and offset.
    pub torn_tail: Option<(PathBuf, u64)>,
}

/// An open write-ahead log. One writer: appends take `&mut self`.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    metadata: Vec<u8>,
    /// The live segment appends go to.
    file: File,
    path: PathBuf,
    seq: u64,
    /// Next append offset in the live segment (= its valid data length).
    write_offset_bytes: u64,
    /// Length the live segment is preallocated to.
    allocated_bytes: u64,
    /// Valid data bytes in the segments before the live one.
    sealed_bytes: u64,
    /// Valid data bytes of each sealed segment still on disk, by sequence number.
    sealed_sizes: std::collections::BTreeMap<u64, u64>,
    poisoned: bool,
    writer: BatchWriter,
    /// The live segment opened for direct appends (see `direct.rs`); `None` where the
    /// filesystem refuses O_DIRECT, or when `COREKV_WAL_IO` picks another path.
    direct: Option<direct::DirectAppender>,
    /// The next segment's file, written on a helper thread once the live one is half full.
    /// Declared before `_lock`: dropping it joins the helper and removes the spare while
    /// the directory is still locked.
    spare: spare::Spare,
    /// Rolls that took the spare (tests check the spare is really used).
    #[cfg(test)]
    spares_adopted: u64,
    /// Holds the directory's flock for as long as the WAL is open.
    _lock: File,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("seq", &self.seq)
            .field("write_offset_bytes", &self.write_offset_bytes)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Does dir contain a WAL?
    pub fn exists(dir: &Path) -> bool {
        segment::list_segments(dir).is_ok_and(|seqs| !seqs.is_empty())
    }

    /// Creates a new WAL in dir (created if missing; must not already hold a WAL). metadata
    /// is written as the first record of every segment, so it survives when old segments
    /// are released later.
    pub fn create(dir: &Path, metadata: &[u8], opts: WalOptions) -> Result<Wal, WalError> {
        check_record_size(metadata.len(), &opts)?;
        create_dir_durable(dir)?;
        let lock = segment::lock_dir(dir)?;
        if Wal::exists(dir) {
            return Err(WalError::AlreadyExists(dir.to_path_buf()));
        }
        segment::remove_tmp_segments(dir)?;
        let seg = segment::create_segment(dir, 0, metadata, &opts, 0)?;
        let direct = open_direct(&seg.path, &seg.file, seg.data_end_bytes)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            opts,
            metadata: metadata.to_vec(),
            file: seg.file,
            path: seg.path,
            seq: 0,
            write_offset_bytes: seg.data_end_bytes,
            allocated_bytes: seg.allocated_bytes,
            sealed_bytes: 0,
            sealed_sizes: Default::default(),
            poisoned: false,
            writer: BatchWriter::new(),
            direct,
            spare: spare::Spare::default(),
            #[cfg(test)]
            spares_adopted: 0,
            _lock: lock,
        })
    }

    /// Opens an existing WAL, recovering every record; truncates a torn tail of the last
    /// segment; appends continue after the last valid record.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovered), WalError> {
        if !Wal::exists(dir) {
            return Err(WalError::NotFound(dir.to_path_buf()));
        }
        let lock = segment::lock_dir(dir)?;
        segment::remove_tmp_segments(dir)?;
        let mut records = Vec::new();
        let mut segment_starts: Vec<(u64, usize)> = Vec::new();
        let scan = recover::scan_dir(dir, &opts, &mut |seq, kind, payload| {
            if segment_starts.last().is_none_or(|(last, _)| *last != seq) {
                segment_starts.push((seq, records.len()));
            }
            records.push(Record {
                kind,
                payload: payload.to_vec(),
            });
        })?;
        for segment in &scan.segments {
            // Segments holding no record (only metadata) still count as live segments.
            if !segment_starts.iter().any(|(seq, _)| *seq == segment.seq) {
                let at = segment_starts.partition_point(|(seq, _)| *seq < segment.seq);
                let first = segment_starts
                    .get(at)
                    .map_or(records.len(), |(_, first)| *first);
                segment_starts.insert(at, (segment.seq, first));
            }
        }
        let last = scan.last();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&last.path)
            .map_err(|e| WalError::io(&last.path, "open", e))?;
        if let Some(tail) = scan.tail {
            drop_tail(&file, &last.path, tail)?;
        }
        let allocated_bytes = prepare_for_appends(&file, &last.path, &opts)?;
        let direct = open_direct(&last.path, &file, last.data_end_bytes)?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            metadata: scan.metadata.clone(),
            file,
            path: last.path.clone(),
            seq: last.seq,
            write_offset_bytes: last.data_end_bytes,
            allocated_bytes,
            sealed_bytes: scan.data_bytes() - last.data_end_bytes,
            sealed_sizes: scan.segments[..scan.segments.len() - 1]
                .iter()
                .map(|s| (s.seq, s.data_end_bytes))
                .collect(),
            poisoned: false,
            writer: BatchWriter::new(),
            direct,
            spare: spare::Spare::default(),
            #[cfg(test)]
            spares_adopted: 0,
            _lock: lock,
        };
        let truncated_tail = scan.tail.map(|t| (last.path.clone(), t.offset_bytes));
        Ok((
            wal,
            Recovered {
                metadata: scan.metadata,
                records,
                segment_starts,
                truncated_tail,
            },
        ))
    }

    /// Appends the records as one write + one fdatasync. Returns only after the data is
    /// durable. An oversized record is refused (`RecordTooLarge`) without side effects; an
    /// I/O error poisons the WAL.
    pub fn append(&mut self, records: &[(RecordKind, &[u8])]) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        if records.is_empty() {
            return Ok(());
        }
        for (_, payload) in records {
            check_record_size(payload.len(), &self.opts)?;
        }
        self.encode_batch(records);
        let batch_bytes = self.writer.buf.len() as u64;
        if self.write_offset_bytes + batch_bytes > self.allocated_bytes {
            self.start_next_segment(batch_bytes)
                .map_err(|e| self.poison(e))?;
        }
        let mut written = match &mut self.direct {
            Some(direct) => direct.write_durable(&self.writer.buf, self.write_offset_bytes),
            None => self
                .writer
                .write_durable(&self.file, self.write_offset_bytes),
        };
        // A device that wants a larger alignment than ours refuses the write before doing
        // any I/O: the buffered path takes over (rewriting the same bytes is harmless).
        if let Err(e) = &written {
            if self.direct.is_some() && e.source.raw_os_error() == Some(libc::EINVAL) {
                log::warn!(
                    "wal: O_DIRECT write refused ({}); using pwrite + fdatasync",
                    e.source
                );
                self.direct = None;
                written = self
                    .writer
                    .write_durable(&self.file, self.write_offset_bytes);
            }
        }
        if let Err(e) = written {
            return Err(self.poison(WalError::io(&self.path, e.op, e.source)));
        }
        self.write_offset_bytes += batch_bytes;
        if !self.spare.started() && self.write_offset_bytes * 2 >= self.allocated_bytes {
            self.spare.start(&self.dir, self.opts.segment_size_bytes);
        }
        Ok(())
    }

    /// The sequence number of the segment appends go to now.
    pub fn segment_seq(&self) -> u64 {
        self.seq
    }

    /// Deletes every segment with a sequence number below `seq` (never the live one), once
    /// the caller knows nothing in them is needed again (the revision store has durably
    /// passed them). Returns how many files went. Recovery accepts a WAL whose first
    /// segments are gone.
    pub fn release_before(&mut self, seq: u64) -> Result<usize, WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        let limit = seq.min(self.seq);
        let mut released = 0;
        for old in segment::list_segments(&self.dir)?
            .into_iter()
            .filter(|s| *s < limit)
        {
            let path = self.dir.join(segment::segment_name(old));
            fs::remove_file(&path).map_err(|e| WalError::io(&path, "remove", e))?;
            let data_bytes = self.sealed_sizes.remove(&old).unwrap_or(0);
            self.sealed_bytes = self.sealed_bytes.saturating_sub(data_bytes);
            released += 1;
        }
        if released > 0 {
            segment::sync_dir(&self.dir)?;
        }
        Ok(released)
    }

    /// Bytes written so far in all live segments (for metrics).
    pub fn size_bytes(&self) -> u64 {
        self.sealed_bytes + self.write_offset_bytes
    }

    /// Has an I/O error made this WAL refuse appends?
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Whether appends go through io_uring (false: pwrite + fdatasync fallback).
    pub fn uses_io_uring(&self) -> bool {
        self.writer.uses_io_uring()
    }

    fn encode_batch(&mut self, records: &[(RecordKind, &[u8])]) {
        let buf = &mut self.writer.buf;
        buf.clear();
        buf.reserve(
            records
                .iter()
                .map(|(_, p)| format::frame_bytes(p.len()))
                .sum(),
        );
        for &(kind, payload) in records {
            format::encode_record(buf, kind, payload);
        }
    }

    /// Seals the live segment (its zero tail is the end marker) and makes a new one with
    /// room for at least `batch_bytes`.
    fn start_next_segment(&mut self, batch_bytes: u64) -> Result<(), WalError> {
        let seq = self.seq + 1;
        let seg = match self.spare.take() {
            Some(spare) if spare.size_bytes >= self.segment_bytes_for(batch_bytes) => {
                #[cfg(test)]
                {
                    self.spares_adopted += 1;
                }
                segment::adopt_spare(&self.dir, seq, &self.metadata, spare)?
            }
            spare => {
                if let Some(spare) = spare {
                    // Too small for this batch: the segment is made to measure instead. A
                    // spare left behind is harmless (the next one truncates it, open
                    // deletes it), so failing to remove it does not fail the append.
                    drop(spare.file);
                    if let Err(e) = fs::remove_file(&spare.path) {
                        log::warn!("wal: cannot remove {}: {e}", spare.path.display());
                    }
                }
                segment::create_segment(&self.dir, seq, &self.metadata, &self.opts, batch_bytes)?
            }
        };
        self.sealed_bytes += self.write_offset_bytes;
        self.sealed_sizes.insert(self.seq, self.write_offset_bytes);
        self.file = seg.file;
        self.path = seg.path;
        self.seq = seq;
        self.write_offset_bytes = seg.data_end_bytes;
        self.allocated_bytes = seg.allocated_bytes;
        if self.direct.is_some() {
            self.direct = open_direct(&self.path, &self.file, self.write_offset_bytes)?;
        }
        Ok(())
    }

    /// The length a new segment needs to take a batch of `batch_bytes` after its header
    /// and metadata record.
    fn segment_bytes_for(&self, batch_bytes: u64) -> u64 {
        let head_bytes =
            format::SEGMENT_HEADER_BYTES as u64 + format::frame_bytes(self.metadata.len()) as u64;
        head_bytes + batch_bytes
    }

    fn poison(&mut self, err: WalError) -> WalError {
        log::error!("{err}; WAL poisoned, refusing further appends");
        self.poisoned = true;
        err
    }

    /// Test hook: swaps the live segment's handle for a read-only one so the next write fails.
    #[cfg(test)]
    fn break_file_for_test(&mut self) {
        self.file = File::open(&self.path).expect("reopen read-only");
        if let Some(direct) = &mut self.direct {
            direct.break_for_test(&self.path);
        }
    }

    /// Test hook: appends take the writer's path (pwrite + fdatasync, or io_uring).
    #[cfg(test)]
    fn disable_direct_for_test(&mut self) {
        self.direct = None;
    }

    /// Test hook: the next direct write fails with EINVAL, as on a device that needs a
    /// larger alignment.
    #[cfg(test)]
    fn refuse_next_direct_write_for_test(&mut self) {
        if let Some(direct) = &mut self.direct {
            direct.refuse_next_write = true;
        }
    }

    /// Whether appends go through O_DIRECT (tests report it: tmpfs refuses it).
    #[cfg(test)]
    fn uses_direct_for_test(&self) -> bool {
        self.direct.is_some()
    }

    /// Test hook: the writer, to force the fallback or cap io_uring writes.
    #[cfg(test)]
    fn writer_for_test(&mut self) -> &mut BatchWriter {
        &mut self.writer
    }
}

/// The direct appender of the live segment at `path`, if chosen and the filesystem allows.
fn open_direct(
    path: &Path,
    file: &File,
    offset_bytes: u64,
) -> Result<Option<direct::DirectAppender>, WalError> {
    if io::chosen_path() != WalIo::Direct {
        return Ok(None);
    }
    direct::DirectAppender::open(path, file, offset_bytes)
}

fn check_record_size(size_bytes: usize, opts: &WalOptions) -> Result<(), WalError> {
    if size_bytes > opts.record_size_bytes_max as usize {
        return Err(WalError::RecordTooLarge { size_bytes });
    }
    Ok(())
}

/// Creates `dir` (and missing parents) and makes its entry durable in the parent.
fn create_dir_durable(dir: &Path) -> Result<(), WalError> {
    fs::create_dir_all(dir).map_err(|e| WalError::io(dir, "create dir", e))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    segment::sync_dir(parent)
}

/// Drops a torn tail: zeroes it so that neither the next recovery nor a crash after later,
/// shorter appends can mistake its bytes for records.
fn drop_tail(file: &File, path: &Path, tail: Tail) -> Result<(), WalError> {
    log::warn!(
        "wal: torn tail in {} at offset {} (non-zero up to {}); truncating",
        path.display(),
        tail.offset_bytes,
        tail.dirty_end_bytes
    );
    let zeros = vec![0u8; (tail.dirty_end_bytes - tail.offset_bytes) as usize];
    file.write_all_at(&zeros, tail.offset_bytes)
        .map_err(|e| WalError::io(path, "pwrite", e))?;
    file.sync_data()
        .map_err(|e| WalError::io(path, "fdatasync", e))
}

/// Restores the preallocation of the live segment (a cut file may be shorter than the
/// segment size) and returns its length.
fn prepare_for_appends(file: &File, path: &Path, opts: &WalOptions) -> Result<u64, WalError> {
    if segment::preallocate(file, path, opts.segment_size_bytes)? {
        file.sync_all()
            .map_err(|e| WalError::io(path, "fsync", e))?;
    }
    let len = file
        .metadata()
        .map_err(|e| WalError::io(path, "stat", e))?
        .len();
    Ok(len)
}
