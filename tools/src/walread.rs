//! A read-only walk over the records of a WAL directory, with their positions.
//!
//! The engine's `wal::verify` decides whether the directory is sound (and where a torn tail
//! starts) but hands out no records, and `Wal::open` repairs what it finds; so the tools
//! read the frames themselves, following docs/wal-format.md, *after* `verify` has passed
//! (or up to the point where it found corruption). The walk is bounded by what `verify`
//! saw, so a WAL that a running server keeps appending to reads consistently.

use std::fs;
use std::path::{Path, PathBuf};

use corekv_engine::wal::RecordKind;

use crate::cli::CliError;
use crate::progress::Progress;

const SEGMENT_MAGIC: &[u8; 8] = b"CKVWAL\r\n";
const FORMAT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: u64 = 24;
const FRAME_HEADER_BYTES: usize = 9;

/// One record with where it sits.
pub struct RecordRef<'a> {
    pub path: &'a Path,
    /// Byte offset of the record's frame in its segment file.
    pub offset: u64,
    pub kind: RecordKind,
    pub payload: &'a [u8],
    /// The first record of a segment: its copy of the metadata.
    pub segment_metadata: bool,
}

/// How far to read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bounds {
    /// Stop after this many records (not counting the per-segment metadata); with 0, the
    /// first segment's metadata is still read.
    pub max_records: Option<u64>,
    /// Stop before this (segment seq, offset).
    pub stop_at: Option<(u64, u64)>,
}

/// Why a walk ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Every segment was read to its end of data.
    Complete,
    /// `Bounds::max_records` reached, or the callback asked to stop.
    Stopped,
    /// `Bounds::stop_at` reached.
    StopPoint,
    /// A frame that is not a valid record.
    Invalid {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

/// Segment file name -> sequence number (`{seq:016x}.wal`).
pub fn segment_seq(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Live segments of `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, CliError> {
    let entries = fs::read_dir(dir).map_err(|e| {
        CliError::failed(format!("cannot read WAL directory {}: {e}", dir.display()))
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            CliError::failed(format!("cannot read WAL directory {}: {e}", dir.display()))
        })?;
        if let Some(seq) = entry.file_name().to_str().and_then(segment_seq) {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

enum Frame<'a> {
    End,
    Record {
        kind: RecordKind,
        payload: &'a [u8],
        end: usize,
    },
    Invalid(String),
}

fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"))
}

fn parse_frame(data: &[u8], offset: usize, record_bytes_max: u32) -> Frame<'_> {
    let rest = &data[offset.min(data.len())..];
    if rest.len() < FRAME_HEADER_BYTES {
        return if rest.iter().all(|&b| b == 0) {
            Frame::End
        } else {
            Frame::Invalid("truncated record header".into())
        };
    }
    let len = read_u32(rest, 0);
    let crc = read_u32(rest, 4);
    let kind_byte = rest[8];
    if len == 0 && crc == 0 && kind_byte == 0 {
        return Frame::End;
    }
    if len > record_bytes_max {
        return Frame::Invalid(format!(
            "record length {len} over the maximum {record_bytes_max}"
        ));
    }
    let end = FRAME_HEADER_BYTES + len as usize;
    if end > rest.len() {
        return Frame::Invalid(format!("record length {len} runs past the end of the file"));
    }
    let Some(kind) = RecordKind::from_u8(kind_byte) else {
        return Frame::Invalid(format!("unknown record type {kind_byte}"));
    };
    let payload = &rest[FRAME_HEADER_BYTES..end];
    if crc32c::crc32c_append(crc32c::crc32c(&[kind_byte]), payload) != crc {
        return Frame::Invalid("record checksum mismatch".into());
    }
    Frame::Record {
        kind,
        payload,
        end: offset + end,
    }
}

fn check_header(data: &[u8], seq: u64) -> Result<(), String> {
    if data.len() < SEGMENT_HEADER_BYTES as usize {
        return Err("segment header truncated".into());
    }
    if &data[0..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    if read_u32(data, 20) != crc32c::crc32c(&data[0..20]) {
        return Err("segment header checksum mismatch".into());
    }
    let version = read_u32(data, 8);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    let header_seq = u64::from_le_bytes(data[12..20].try_into().expect("8 bytes"));
    if header_seq != seq {
        return Err(format!(
            "header says segment {header_seq}, file name says {seq}"
        ));
    }
    Ok(())
}

/// Reads the records of `dir` in order within `bounds`, handing each to `on_record`, which
/// returns `Ok(false)` to stop. `progress` advances by one per segment.
pub fn walk(
    dir: &Path,
    record_bytes_max: u32,
    bounds: Bounds,
    progress: Option<&Progress>,
    on_record: &mut dyn FnMut(&RecordRef) -> Result<bool, CliError>,
) -> Result<End, CliError> {
    let mut count = 0u64;
    for (seq, path) in list_segments(dir)? {
        if bounds.stop_at.is_some_and(|(s, _)| seq > s) {
            return Ok(End::StopPoint);
        }
        let limit = match bounds.stop_at {
            Some((s, off)) if s == seq => off,
            _ => u64::MAX,
        };
        let data = fs::read(&path)
            .map_err(|e| CliError::failed(format!("cannot read {}: {e}", path.display())))?;
        if limit == 0 {
            return Ok(End::StopPoint);
        }
        if let Err(reason) = check_header(&data, seq) {
            return Ok(End::Invalid {
                path,
                offset: 0,
                reason,
            });
        }
        let mut offset = SEGMENT_HEADER_BYTES as usize;
        loop {
            if offset as u64 >= limit {
                return Ok(End::StopPoint);
            }
            match parse_frame(&data, offset, record_bytes_max) {
                Frame::End => break,
                Frame::Invalid(reason) => {
                    return Ok(End::Invalid {
                        path,
                        offset: offset as u64,
                        reason,
                    })
                }
                Frame::Record { kind, payload, end } => {
                    let segment_metadata = offset == SEGMENT_HEADER_BYTES as usize;
                    if segment_metadata && kind != RecordKind::Metadata {
                        return Ok(End::Invalid {
                            path,
                            offset: offset as u64,
                            reason: format!("first record is {kind:?}, not Metadata"),
                        });
                    }
                    if !segment_metadata {
                        if bounds.max_records.is_some_and(|m| count >= m) {
                            return Ok(End::Stopped);
                        }
                        count += 1;
                    }
                    let record = RecordRef {
                        path: &path,
                        offset: offset as u64,
                        kind,
                        payload,
                        segment_metadata,
                    };
                    if !on_record(&record)? {
                        return Ok(End::Stopped);
                    }
                    // Stop right at the bound: what follows may be a torn tail (or a record
                    // appended since `verify` looked).
                    if !segment_metadata && bounds.max_records.is_some_and(|m| count >= m) {
                        return Ok(End::Stopped);
                    }
                    offset = end;
                }
            }
        }
        if let Some(p) = progress {
            p.inc(1);
        }
    }
    Ok(End::Complete)
}
