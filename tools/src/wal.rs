//! `corekvutl wal verify` and `corekvutl wal dump`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use corekv_engine::request::InternalRequest;
use corekv_engine::wal::{self, RecordKind, VerifyReport, WalError, WalOptions};
use corekv_raft::{codec, ConfState, Entry, EntryType, HardState};
use prost::Message;
use serde_json::{json, Value};

use crate::cli::CliError;
use crate::describe::{self, Identity};
use crate::output::{self, write_table};
use crate::progress::{Progress, Unit};
use crate::walread::{self, Bounds, End, RecordRef};

/// The WAL directory of a data directory (as `src/recovery.rs` lays it out).
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("wal")
}

fn opts() -> WalOptions {
    WalOptions::default()
}

/// Fails clearly when there is no WAL where one is expected.
fn check_wal_present(data_dir: &Path, dir: &Path) -> Result<(), CliError> {
    if !data_dir.is_dir() {
        return Err(CliError::failed(format!(
            "data dir {} does not exist",
            data_dir.display()
        )));
    }
    if !dir.is_dir() || walread::list_segments(dir)?.is_empty() {
        return Err(CliError::failed(format!(
            "no WAL in {} (expected segment files {}/<16 hex digits>.wal; is {} a corekv data dir?)",
            data_dir.display(),
            dir.display(),
            data_dir.display()
        )));
    }
    Ok(())
}

/// Runs the engine's read-only verify with a spinner.
fn engine_verify(dir: &Path) -> Result<VerifyReport, WalError> {
    let _p = Progress::start("wal verify: checking segments", None, Unit::Elapsed);
    wal::verify(dir, &opts())
}

fn segment_count(dir: &Path) -> u64 {
    walread::list_segments(dir).map_or(0, |s| s.len() as u64)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

// ---------------------------------------------------------------------------------------
// Decoding checks shared by verify (which checks) and dump (which shows).

/// What a record decodes to.
enum Decoded {
    Metadata(Identity),
    Entry {
        entry: Entry,
        request: Option<Box<InternalRequest>>,
    },
    HardState(HardState),
    ConfState(ConfState),
    Snapshot,
}

fn bad_record(r: &RecordRef, what: impl std::fmt::Display) -> String {
    format!(
        "bad record in {} at offset {}: {what}",
        r.path.display(),
        r.offset
    )
}

/// Decodes one record's payload; an error names the file and offset.
fn decode(r: &RecordRef) -> Result<Decoded, String> {
    match r.kind {
        RecordKind::Metadata => Identity::decode(r.payload)
            .map(Decoded::Metadata)
            .map_err(|e| bad_record(r, e)),
        RecordKind::Entry => {
            let entry = codec::decode_entry(r.payload)
                .map_err(|e| bad_record(r, format!("entry does not decode: {e}")))?;
            let request =
                if entry.entry_type == EntryType::EntryNormal as i32 && !entry.data.is_empty() {
                    let req = InternalRequest::decode(entry.data.as_slice()).map_err(|e| {
                        bad_record(
                            r,
                            format!("entry {} data is not a request: {e}", entry.index),
                        )
                    })?;
                    Some(Box::new(req))
                } else {
                    None
                };
            Ok(Decoded::Entry { entry, request })
        }
        RecordKind::HardState => codec::decode_hard_state(r.payload)
            .map(Decoded::HardState)
            .map_err(|e| bad_record(r, format!("hard state does not decode: {e}"))),
        RecordKind::ConfState => codec::decode_conf_state(r.payload)
            .map(Decoded::ConfState)
            .map_err(|e| bad_record(r, format!("conf state does not decode: {e}"))),
        RecordKind::Snapshot => Ok(Decoded::Snapshot),
    }
}

fn entry_type_name(t: i32) -> &'static str {
    match t {
        0 => "normal",
        1 => "conf_change",
        2 => "conf_change_v2",
        _ => "unknown",
    }
}

fn ids(list: &[u64]) -> String {
    list.iter()
        .map(|id| format!("{id:x}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn hard_state_simple(hs: &HardState) -> String {
    format!("term={} vote={:x} commit={}", hs.term, hs.vote, hs.commit)
}

fn conf_state_simple(cs: &ConfState) -> String {
    format!(
        "voters=[{}] learners=[{}]",
        ids(&cs.voters),
        ids(&cs.learners)
    )
}

/// Folds entries as recovery does: a later entry with an index at or below the last one
/// replaces the conflicting suffix; after that, indexes must be contiguous. The first entry
/// may be above 1 once old segments have been released (the revision store holds the
/// entries before it); `first_segment_seq` tells whether any were.
#[derive(Default)]
struct Log {
    first: u64,
    /// Term of each entry from `first` on.
    terms: Vec<u64>,
    overwritten: u64,
}

impl Log {
    fn last(&self) -> u64 {
        if self.terms.is_empty() {
            0
        } else {
            self.first + self.terms.len() as u64 - 1
        }
    }

    fn last_term(&self) -> u64 {
        self.terms.last().copied().unwrap_or(0)
    }

    /// Appends; returns a warning if raft's term order is broken.
    fn append(&mut self, index: u64, term: u64) -> Result<Option<String>, String> {
        if !self.terms.is_empty() && index <= self.last() {
            let keep = index.saturating_sub(self.first) as usize;
            self.overwritten += (self.terms.len() - keep) as u64;
            self.terms.truncate(keep);
        }
        let expected = if self.terms.is_empty() {
            index
        } else {
            self.last() + 1
        };
        if index != expected {
            return Err(format!(
                "WAL entries are not contiguous: expected index {expected}, found {index}"
            ));
        }
        if self.terms.is_empty() {
            self.first = index;
        }
        let warning = (term < self.last_term()).then(|| {
            format!(
                "entry {index} has term {term}, below the term {} of the entry before it",
                self.last_term()
            )
        });
        self.terms.push(term);
        Ok(warning)
    }
}

/// Everything `wal verify` learns from the records.
#[derive(Default)]
struct Checker {
    identity: Option<Identity>,
    log: Log,
    entry_records: u64,
    hard_state: Option<HardState>,
    hard_states: u64,
    conf_state: Option<ConfState>,
    conf_states: u64,
    snapshots: u64,
    requests: BTreeMap<&'static str, u64>,
    warnings: Vec<String>,
}

impl Checker {
    fn record(&mut self, r: &RecordRef) -> Result<(), String> {
        match decode(r)? {
            Decoded::Metadata(id) => match &self.identity {
                None => self.identity = Some(id),
                Some(first) if *first == id => {}
                Some(_) => return Err(bad_record(r, "metadata differs from the first segment's")),
            },
            Decoded::Entry { entry, request } => {
                self.entry_records += 1;
                if let Some(w) = self
                    .log
                    .append(entry.index, entry.term)
                    .map_err(|e| bad_record(r, e))?
                {
                    self.warnings.push(w);
                }
                let kind = match (&request, entry.entry_type) {
                    (Some(req), _) => {
                        let (kind, n) = describe::request_kind(req);
                        if n == 0 {
                            self.warnings.push(format!(
                                "entry {} carries a request with no operation set (unknown to this version?)",
                                entry.index
                            ));
                        } else if n > 1 {
                            self.warnings.push(format!(
                                "entry {} carries a request with {n} operations set",
                                entry.index
                            ));
                        }
                        kind
                    }
                    (None, 0) => "raft_empty",
                    (None, _) => "conf_change",
                };
                *self.requests.entry(kind).or_insert(0) += 1;
            }
            Decoded::HardState(hs) => {
                self.hard_states += 1;
                self.hard_state = Some(hs);
            }
            Decoded::ConfState(cs) => {
                self.conf_states += 1;
                self.conf_state = Some(cs);
            }
            Decoded::Snapshot => {
                self.snapshots += 1;
                self.warnings.push(format!(
                    "snapshot record in {} at offset {} (not written by this version; ignored by recovery)",
                    r.path.display(),
                    r.offset
                ));
            }
        }
        Ok(())
    }

    /// Checks that need the whole log; returns the failure that would stop a server start.
    fn finish(&mut self, first_segment_seq: u64) -> Option<String> {
        if first_segment_seq == 0 && !self.log.terms.is_empty() && self.log.first != 1 {
            self.warnings.push(format!(
                "the log starts at index {} although no segment was released (segment 0 is present); \
                 the entries before it must be in the revision store (as in a data dir made by \
                 `corekvutl snapshot restore`, whose log starts after the restored store)",
                self.log.first
            ));
        }
        if let Some(hs) = &self.hard_state {
            if hs.commit > self.log.last() {
                self.warnings.push(format!(
                    "hard state commit {} is beyond the last entry {} (recovery clamps it)",
                    hs.commit,
                    self.log.last()
                ));
            }
        }
        match &self.conf_state {
            None => Some(
                "WAL holds no membership (ConfState) record; the server would refuse to start"
                    .into(),
            ),
            Some(cs) if cs.voters.is_empty() => {
                Some("the last ConfState record has no voters".into())
            }
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// wal verify

pub fn verify(data_dir: &Path, format: &str) -> Result<(), CliError> {
    let dir = wal_dir(data_dir);
    check_wal_present(data_dir, &dir)?;
    let json_out = format == "json";
    let report = match engine_verify(&dir) {
        Ok(r) => r,
        Err(e) => {
            if json_out {
                let mut j = json!({"wal_dir": dir, "ok": false, "error": e.to_string()});
                if let WalError::Corrupt {
                    path,
                    offset,
                    reason,
                } = &e
                {
                    j["corruption"] = json!({"file": path, "offset": offset, "reason": reason});
                }
                let mut out = std::io::stdout().lock();
                writeln!(out, "{j}")?;
            }
            return Err(CliError::failed(e.to_string()));
        }
    };

    let mut checker = Checker::default();
    let mut failure: Option<String> = None;
    {
        let progress = Progress::start(
            "wal verify: decoding",
            Some(report.segments as u64),
            Unit::Items("segments"),
        );
        let bounds = Bounds {
            max_records: Some(report.records),
            stop_at: None,
        };
        let mut seen = 0u64;
        let end = walread::walk(
            &dir,
            opts().record_size_bytes_max,
            bounds,
            Some(&progress),
            &mut |r| {
                if !r.segment_metadata {
                    seen += 1;
                }
                match checker.record(r) {
                    Ok(()) => Ok(true),
                    Err(e) => {
                        failure = Some(e);
                        Ok(false)
                    }
                }
            },
        )?;
        if failure.is_none() && seen < report.records {
            failure = Some(match end {
                End::Invalid { path, offset, reason } => format!(
                    "wal: {} at offset {offset}: {reason} (the WAL changed while it was read?)",
                    path.display()
                ),
                _ => format!(
                    "read {seen} records where verify counted {}; the WAL changed while it was read?",
                    report.records
                ),
            });
        }
    }
    if failure.is_none() {
        let first_seq = walread::list_segments(&dir)?
            .first()
            .map_or(0, |(seq, _)| *seq);
        failure = checker.finish(first_seq);
    }

    let mut out = std::io::stdout().lock();
    if json_out {
        writeln!(
            out,
            "{}",
            verify_json(&dir, &report, &checker, failure.as_deref())
        )?;
    } else {
        write_table(
            &mut out,
            &verify_rows(&dir, &report, &checker, failure.as_deref()),
        )?;
        for w in &checker.warnings {
            writeln!(out, "warning: {w}")?;
        }
    }
    out.flush()?;
    match failure {
        Some(f) => Err(CliError::failed(f)),
        None => Ok(()),
    }
}

fn torn_tail_text(report: &VerifyReport) -> String {
    match &report.torn_tail {
        None => "none".into(),
        Some((path, offset)) => format!(
            "{} at offset {offset} (a write cut short by a crash; the server drops it at start)",
            path.display()
        ),
    }
}

fn verify_rows(
    dir: &Path,
    report: &VerifyReport,
    c: &Checker,
    failure: Option<&str>,
) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = vec![
        ("wal dir".into(), dir.display().to_string()),
        ("segments".into(), report.segments.to_string()),
        ("records".into(), report.records.to_string()),
        ("bytes".into(), output::bytes(report.bytes)),
        ("torn tail".into(), torn_tail_text(report)),
    ];
    if let Some(id) = &c.identity {
        rows.push(("member id".into(), format!("{:x}", id.member_id)));
        rows.push(("cluster id".into(), format!("{:x}", id.cluster_id)));
        rows.push(("name".into(), id.name.clone()));
    }
    let entries = if c.log.terms.is_empty() {
        format!("0 ({})", output::count(c.entry_records, "entry record"))
    } else {
        format!(
            "{} (index {}..{}, last term {}; {}, {} overwritten)",
            c.log.terms.len(),
            c.log.first,
            c.log.last(),
            c.log.last_term(),
            output::count(c.entry_records, "record"),
            c.log.overwritten
        )
    };
    rows.push(("entries".into(), entries));
    rows.push((
        "hard state".into(),
        c.hard_state.as_ref().map_or("none".into(), |hs| {
            format!(
                "{} ({})",
                hard_state_simple(hs),
                output::count(c.hard_states, "record")
            )
        }),
    ));
    rows.push((
        "conf state".into(),
        c.conf_state.as_ref().map_or("none".into(), |cs| {
            format!(
                "{} ({})",
                conf_state_simple(cs),
                output::count(c.conf_states, "record")
            )
        }),
    ));
    let requests: Vec<String> = c.requests.iter().map(|(k, n)| format!("{k}={n}")).collect();
    rows.push((
        "requests".into(),
        if requests.is_empty() {
            "none".into()
        } else {
            requests.join(" ")
        },
    ));
    if c.snapshots > 0 {
        rows.push(("snapshot records".into(), c.snapshots.to_string()));
    }
    rows.push(("warnings".into(), c.warnings.len().to_string()));
    rows.push((
        "result".into(),
        match failure {
            None => "OK".into(),
            Some(f) => format!("FAILED: {f}"),
        },
    ));
    rows
}

fn verify_json(dir: &Path, report: &VerifyReport, c: &Checker, failure: Option<&str>) -> Value {
    json!({
        "wal_dir": dir,
        "segments": report.segments,
        "records": report.records,
        "bytes": report.bytes,
        "torn_tail": report.torn_tail.as_ref().map(|(p, o)| json!({"file": p, "offset": o})),
        "metadata": c.identity.as_ref().map(Identity::json),
        "entries": {
            "count": c.log.terms.len(),
            "first_index": (!c.log.terms.is_empty()).then_some(c.log.first),
            "last_index": c.log.last(),
            "last_term": c.log.last_term(),
            "records": c.entry_records,
            "overwritten": c.log.overwritten,
        },
        "hard_state": c.hard_state.as_ref().map(|hs| json!({"term": hs.term, "vote": hs.vote, "commit": hs.commit})),
        "conf_state": c.conf_state.as_ref().map(|cs| json!({"voters": cs.voters, "learners": cs.learners})),
        "requests": c.requests,
        "snapshot_records": c.snapshots,
        "warnings": c.warnings,
        "ok": failure.is_none(),
        "error": failure,
    })
}

// ---------------------------------------------------------------------------------------
// wal dump

pub struct DumpArgs {
    pub start_index: Option<u64>,
    pub limit: Option<u64>,
    pub json: bool,
}

pub fn dump(data_dir: &Path, args: &DumpArgs) -> Result<(), CliError> {
    let dir = wal_dir(data_dir);
    check_wal_present(data_dir, &dir)?;
    // Verify first: it bounds the walk (to the records that were there, or up to the damage).
    let (bounds, corruption, torn_tail) = match engine_verify(&dir) {
        Ok(report) => (
            Bounds {
                max_records: Some(report.records),
                stop_at: None,
            },
            None,
            report.torn_tail,
        ),
        Err(e @ WalError::Corrupt { .. }) => {
            let WalError::Corrupt { path, offset, .. } = &e else {
                unreachable!()
            };
            let seq = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(walread::segment_seq);
            (
                Bounds {
                    max_records: None,
                    stop_at: seq.map(|s| (s, *offset)),
                },
                Some(e),
                None,
            )
        }
        Err(e) => return Err(CliError::failed(e.to_string())),
    };

    // First pass: entry indexes in write order, to mark entries a later one overwrote.
    let mut indexes = Vec::new();
    {
        let progress = Progress::start(
            "wal dump: indexing",
            Some(segment_count(&dir)),
            Unit::Items("segments"),
        );
        walread::walk(
            &dir,
            opts().record_size_bytes_max,
            bounds,
            Some(&progress),
            &mut |r| {
                if r.kind == RecordKind::Entry && r.payload.len() >= 16 {
                    indexes.push(u64::from_le_bytes(
                        r.payload[8..16].try_into().expect("8 bytes"),
                    ));
                }
                Ok(true)
            },
        )?;
    }
    // overwritten[i]: a later entry has an index <= entry i's.
    let mut overwritten = vec![false; indexes.len()];
    let mut min_later = u64::MAX;
    for i in (0..indexes.len()).rev() {
        overwritten[i] = min_later <= indexes[i];
        min_later = min_later.min(indexes[i]);
    }

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    let mut entry_no = 0usize;
    let mut started = args.start_index.is_none();
    let mut shown_metadata = false;
    let mut failure: Option<String> = None;
    let mut write_err: Option<std::io::Error> = None;
    let end = walread::walk(&dir, opts().record_size_bytes_max, bounds, None, &mut |r| {
        let decoded = match decode(r) {
            Ok(d) => d,
            Err(e) => {
                failure = Some(e);
                return Ok(false);
            }
        };
        let line = match decoded {
            Decoded::Metadata(id) => {
                if shown_metadata {
                    return Ok(true);
                }
                shown_metadata = true;
                // The data dir's identity heads the dump whatever the filters.
                if args.json {
                    let mut j = json!({"record": "metadata", "segment": file_name(r.path), "offset": r.offset});
                    merge(&mut j, id.json());
                    j.to_string()
                } else {
                    format!("metadata {}", id.simple())
                }
            }
            decoded => {
                if let Decoded::Entry { entry, .. } = &decoded {
                    entry_no += 1;
                    if args.start_index.is_some_and(|s| entry.index < s) {
                        return Ok(true);
                    }
                    started = true;
                }
                if !started {
                    return Ok(true);
                }
                if args.limit.is_some_and(|l| printed >= l) {
                    return Ok(false);
                }
                printed += 1;
                let over = entry_no > 0 && overwritten.get(entry_no - 1).copied().unwrap_or(false);
                if args.json {
                    record_json(r, &decoded, over).to_string()
                } else {
                    record_simple(&decoded, over)
                }
            }
        };
        if let Err(e) = writeln!(out, "{line}") {
            write_err = Some(e);
            return Ok(false);
        }
        Ok(true)
    })?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    out.flush()?;
    drop(out);
    if let Some(f) = failure {
        return Err(CliError::failed(f));
    }
    if let Some(e) = corruption {
        return Err(CliError::failed(format!(
            "{e} (records before the damage were dumped)"
        )));
    }
    if let End::Invalid {
        path,
        offset,
        reason,
    } = end
    {
        return Err(CliError::failed(format!(
            "wal: {} at offset {offset}: {reason} (the WAL changed while it was read?)",
            path.display()
        )));
    }
    if let Some((path, offset)) = torn_tail {
        eprintln!(
            "note: torn tail in {} at offset {offset} (a write cut short by a crash; not dumped)",
            path.display()
        );
    }
    Ok(())
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

fn record_simple(d: &Decoded, overwritten: bool) -> String {
    match d {
        Decoded::Metadata(id) => format!("metadata {}", id.simple()),
        Decoded::Entry { entry, request } => {
            let over = if overwritten { " overwritten" } else { "" };
            let body = match request {
                Some(req) => describe::request_simple(req),
                None if entry.entry_type == EntryType::EntryNormal as i32 => "(empty)".to_string(),
                None => format!("({} bytes, not decoded)", entry.data.len()),
            };
            format!(
                "entry index={} term={} type={}{over} {body}",
                entry.index,
                entry.term,
                entry_type_name(entry.entry_type)
            )
        }
        Decoded::HardState(hs) => format!("hardstate {}", hard_state_simple(hs)),
        Decoded::ConfState(cs) => format!("confstate {}", conf_state_simple(cs)),
        Decoded::Snapshot => "snapshot (not decoded)".to_string(),
    }
}

fn record_json(r: &RecordRef, d: &Decoded, overwritten: bool) -> Value {
    let mut j = json!({"segment": file_name(r.path), "offset": r.offset});
    let body = match d {
        Decoded::Metadata(id) => {
            let mut m = json!({"record": "metadata"});
            merge(&mut m, id.json());
            m
        }
        Decoded::Entry { entry, request } => json!({
            "record": "entry",
            "index": entry.index,
            "term": entry.term,
            "entry_type": entry_type_name(entry.entry_type),
            "overwritten": overwritten,
            "data_size": entry.data.len(),
            "request": request.as_deref().map(describe::request_json),
        }),
        Decoded::HardState(hs) => {
            json!({"record": "hardstate", "term": hs.term, "vote": hs.vote, "commit": hs.commit})
        }
        Decoded::ConfState(cs) => {
            json!({"record": "confstate", "voters": cs.voters, "learners": cs.learners})
        }
        Decoded::Snapshot => json!({"record": "snapshot", "size": r.payload.len()}),
    };
    merge(&mut j, body);
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_resolves_overwrites_and_refuses_gaps() {
        let mut log = Log::default();
        for (i, t) in [(1, 1), (2, 1), (3, 1), (2, 2), (3, 2), (4, 2)] {
            assert_eq!(log.append(i, t), Ok(None));
        }
        assert_eq!(
            (log.first, log.last(), log.last_term(), log.overwritten),
            (1, 4, 2, 2)
        );
        assert!(log.append(6, 2).is_err(), "a gap");
        assert!(
            log.append(5, 1).unwrap().is_some(),
            "term going backwards is a warning"
        );
        let mut log = Log::default();
        assert_eq!(
            log.append(7, 1),
            Ok(None),
            "after released segments the log starts anywhere"
        );
        assert!(log.append(9, 1).is_err());
        let mut log = Log::default();
        log.append(1, 1).unwrap();
        log.append(1, 2).unwrap();
        assert_eq!((log.first, log.last(), log.overwritten), (1, 1, 1));
    }
}
