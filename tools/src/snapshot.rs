//! `corekvutl snapshot status` and `corekvutl snapshot restore`.
//!
//! A snapshot file is either
//! - a **corekv snapshot**: a corekv store image (the B+ tree file of
//!   `docs/storage-format.md`, starting with `CKVBTREE`, whole 4096-byte pages) followed by
//!   the 32-byte SHA-256 of the image, as corekv's Maintenance.Snapshot streams it; without
//!   the hash it is a bare store image (a copy of `<data-dir>/member/snap/db`); or
//! - an **etcd snapshot**: a bbolt file, followed by its SHA-256 when `etcdctl snapshot save`
//!   wrote it (etcd's rule: a hash is present when the size is 32 past a multiple of 512).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use corekv_engine::backend::{Backend, BackendMeta};
use corekv_engine::btree::{self, PAGE_SIZE};
use corekv_engine::sha256::Sha256;
use corekv_engine::wal::{RecordKind, Wal, WalOptions};
use corekv_raft::{codec, ConfState};
use serde_json::{json, Value};

use crate::cli::CliError;
use crate::cluster;
use crate::describe::Identity;
use crate::etcd_snapshot::{self, EtcdSnapshot};
use crate::output::{self, write_table};
use crate::progress::{Progress, Unit};

const HASH_BYTES: u64 = 32;
const COREKV_MAGIC: &[u8] = b"CKVBTREE";
/// The log position a restored store is given: the restored member starts a new raft log,
/// as etcdutl's restore does (its new log holds the membership at indexes 1..=members, term
/// 1, and the store's consistent index is set there). With an empty WAL the server's
/// recovery starts raft just after it, at a term of at least 1.
const RESTORED_INDEX: u64 = 1;
const RESTORED_TERM: u64 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Corekv,
    Etcd,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Corekv => "corekv",
            Format::Etcd => "etcd",
        }
    }
}

/// What was done about the trailing SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HashCheck {
    Verified,
    /// The file has no hash (a bare store or database file).
    Absent,
    /// `--skip-hash-check`: present but not checked.
    Skipped,
}

impl HashCheck {
    fn name(self) -> &'static str {
        match self {
            HashCheck::Verified => "verified",
            HashCheck::Absent => "absent",
            HashCheck::Skipped => "not checked",
        }
    }
}

/// A snapshot file, sniffed.
struct Source {
    path: PathBuf,
    format: Format,
    len: u64,
    has_hash: bool,
}

impl Source {
    fn image_len(&self) -> u64 {
        if self.has_hash {
            self.len - HASH_BYTES
        } else {
            self.len
        }
    }

    fn fail(&self, what: impl std::fmt::Display) -> CliError {
        CliError::failed(format!("{}: {what}", self.path.display()))
    }
}

fn inspect(path: &Path) -> Result<Source, CliError> {
    let md = fs::metadata(path)
        .map_err(|e| CliError::failed(format!("cannot read snapshot {}: {e}", path.display())))?;
    if !md.is_file() {
        return Err(CliError::failed(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let len = md.len();
    let mut head = Vec::new();
    File::open(path)
        .and_then(|f| f.take(70_000).read_to_end(&mut head))
        .map_err(|e| CliError::failed(format!("cannot read snapshot {}: {e}", path.display())))?;
    let fail = |m: String| CliError::failed(format!("{}: {m}", path.display()));
    if head.starts_with(COREKV_MAGIC) {
        let has_hash = match len % PAGE_SIZE as u64 {
            0 => false,
            HASH_BYTES => true,
            r => {
                return Err(fail(format!(
                    "a corekv snapshot is whole {PAGE_SIZE}-byte pages, optionally followed by a {HASH_BYTES}-byte sha256; \
                     this file of {len} bytes has {r} bytes more: truncated or damaged"
                )))
            }
        };
        if len < 2 * PAGE_SIZE as u64 {
            return Err(fail(format!(
                "a corekv snapshot holds at least two pages; this file has {len} bytes: truncated"
            )));
        }
        return Ok(Source {
            path: path.to_path_buf(),
            format: Format::Corekv,
            len,
            has_hash,
        });
    }
    if crate::bbolt::looks_like_bbolt(&head) {
        // etcd's rule (etcdutl snapshot restore): a hash follows when the size is 32 bytes past
        // a multiple of 512.
        let has_hash = len % 512 == HASH_BYTES;
        return Ok(Source {
            path: path.to_path_buf(),
            format: Format::Etcd,
            len,
            has_hash,
        });
    }
    Err(fail(
        "not a snapshot: neither a corekv store image (magic CKVBTREE) nor an etcd bbolt file (magic 0xED0CDAED)"
            .into(),
    ))
}

/// Compares the computed and stored hashes.
fn check_hash(
    src: &Source,
    computed: Option<[u8; 32]>,
    stored: Option<[u8; 32]>,
) -> Result<HashCheck, CliError> {
    match (computed, stored) {
        (_, None) => Ok(HashCheck::Absent),
        (None, Some(_)) => Ok(HashCheck::Skipped),
        (Some(c), Some(s)) if c == s => Ok(HashCheck::Verified),
        (Some(c), Some(s)) => Err(src.fail(format!(
            "sha256 mismatch: the file ends with {} but its first {} bytes hash to {} (damaged or truncated snapshot)",
            hex(&s),
            src.image_len(),
            hex(&c)
        ))),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads the image (copying it to `dst` when given) and the trailing hash. Computes the
/// image's SHA-256 unless `skip`.
fn copy_image(src: &Source, dst: Option<&Path>, skip: bool) -> Result<HashCheck, CliError> {
    let mut f = File::open(&src.path).map_err(|e| src.fail(format!("cannot open: {e}")))?;
    let mut out = match dst {
        Some(p) => Some(
            File::create(p)
                .map_err(|e| CliError::failed(format!("cannot create {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let mut hasher = Sha256::new();
    let mut left = src.image_len();
    let mut buf = vec![0u8; 1 << 20];
    let progress = Progress::start("reading the snapshot", Some(left), Unit::Bytes);
    while left > 0 {
        let n = (left as usize).min(buf.len());
        f.read_exact(&mut buf[..n])
            .map_err(|e| src.fail(format!("read: {e}")))?;
        if !skip {
            hasher.update(&buf[..n]);
        }
        if let (Some(o), Some(p)) = (out.as_mut(), dst) {
            o.write_all(&buf[..n])
                .map_err(|e| CliError::failed(format!("write {}: {e}", p.display())))?;
        }
        left -= n as u64;
        progress.inc(n as u64);
    }
    drop(progress);
    if let (Some(o), Some(p)) = (out, dst) {
        o.sync_all()
            .map_err(|e| CliError::failed(format!("fsync {}: {e}", p.display())))?;
    }
    let stored = if src.has_hash {
        let mut h = [0u8; 32];
        f.read_exact(&mut h)
            .map_err(|e| src.fail(format!("read the sha256: {e}")))?;
        Some(h)
    } else {
        None
    };
    let computed = (!skip).then(|| hasher.finish());
    check_hash(src, computed, stored)
}

/// Reads an etcd snapshot into memory and checks its hash (unless `skip`).
fn read_etcd(src: &Source, skip: bool) -> Result<(EtcdSnapshot, HashCheck), CliError> {
    let data = {
        let _p = Progress::start("reading the snapshot", None, Unit::Elapsed);
        fs::read(&src.path).map_err(|e| src.fail(format!("read: {e}")))?
    };
    if data.len() as u64 != src.len {
        return Err(src.fail("the file changed size while being read"));
    }
    let (image, stored) = data.split_at(src.image_len() as usize);
    let stored: Option<[u8; 32]> = src.has_hash.then(|| stored.try_into().expect("32 bytes"));
    let computed = (!skip && src.has_hash).then(|| Sha256::digest(image));
    let check = check_hash(src, computed, stored)?;
    let snap = {
        let _p = Progress::start("reading the etcd database", None, Unit::Elapsed);
        etcd_snapshot::read(image)
            .map_err(|e| src.fail(format!("etcd snapshot is damaged: {e}")))?
    };
    Ok((snap, check))
}

/// A directory removed (with its contents) when dropped, unless kept.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    fn create(path: PathBuf) -> Result<Scratch, CliError> {
        fs::create_dir(&path)
            .map_err(|e| CliError::failed(format!("cannot create {}: {e}", path.display())))?;
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o700));
        Ok(Scratch { path, keep: false })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn temp_scratch() -> Result<Scratch, CliError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Scratch::create(
        std::env::temp_dir().join(format!("corekvutl-snapshot-{}-{nanos}", std::process::id())),
    )
}

/// Status figures, etcdutl's columns.
struct Status {
    hash: u32,
    revision: i64,
    total_keys: u64,
    total_size: u64,
}

/// A corekv image's figures, after the B+ tree's whole-file check and a full load of the key
/// space (as the server's start-up does). The hash is the member's Maintenance.Hash: CRC-32C
/// of every entry's key and value in order (etcdutl's hash, over corekv's one tree).
fn corekv_status(db: &Path, src: &Source) -> Result<(Status, BackendMeta, Counts), CliError> {
    let damaged = |e: &dyn std::fmt::Display| src.fail(format!("corekv snapshot is damaged: {e}"));
    let stats = {
        let store = btree::Store::open(
            db,
            btree::Options {
                create_if_missing: false,
            },
        )
        .map_err(|e| damaged(&e))?;
        let _p = Progress::start("verifying the store", None, Unit::Elapsed);
        store.verify().map_err(|e| damaged(&e))?;
        store.stats()
    };
    let backend = Backend::open(db).map_err(|e| damaged(&e))?;
    let (store, meta) = {
        let _p = Progress::start("loading the key space", None, Unit::Elapsed);
        backend.load().map_err(|e| damaged(&e))?
    };
    let view = store.view();
    let counts = Counts {
        keys: view.key_count(),
        leases: view.lease_count(),
        alarms: view.alarms().len(),
    };
    drop((view, store));
    // The same hash as the member's Maintenance.Hash.
    let hash = backend.snapshot().hash().map_err(|e| damaged(&e))?;
    let status = Status {
        hash,
        revision: meta.revision,
        total_keys: stats.entries,
        total_size: stats.page_count * PAGE_SIZE as u64,
    };
    Ok((status, meta, counts))
}

/// Live keys, leases and alarms of a loaded key space.
struct Counts {
    keys: usize,
    leases: usize,
    alarms: usize,
}

pub fn status(path: &Path, format: &str) -> Result<(), CliError> {
    let src = inspect(path)?;
    let (st, check, extra) = match src.format {
        Format::Corekv => {
            let scratch = temp_scratch()?;
            let db = scratch.path.join("db");
            let check = copy_image(&src, Some(&db), false)?;
            let (st, meta, _) = corekv_status(&db, &src)?;
            (
                st,
                check,
                json!({"compactRevision": meta.compact_revision, "consistentIndex": meta.consistent_index}),
            )
        }
        Format::Etcd => {
            let (snap, check) = read_etcd(&src, false)?;
            let st = Status {
                hash: snap.hash,
                revision: snap.revision(),
                total_keys: snap.total_keys,
                total_size: snap.size,
            };
            let extra = json!({
                "compactRevision": snap.compact_revision(),
                "consistentIndex": snap.consistent_index,
                "leases": snap.leases.len(),
                "pageSize": snap.page_size,
            });
            (st, check, extra)
        }
    };
    let mut out = std::io::stdout().lock();
    if format == "json" {
        let mut j = json!({
            "hash": st.hash,
            "revision": st.revision,
            "totalKey": st.total_keys,
            "totalSize": st.total_size,
            "format": src.format.name(),
            "sha256": check.name(),
        });
        if let (Value::Object(m), Value::Object(x)) = (&mut j, extra) {
            m.extend(x);
        }
        writeln!(out, "{j}")?;
    } else {
        output::write_grid(
            &mut out,
            &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
            &[vec![
                format!("{:x}", st.hash),
                st.revision.to_string(),
                st.total_keys.to_string(),
                output::human(st.total_size),
            ]],
        )?;
    }
    out.flush()?;
    Ok(())
}

/// `snapshot restore` flags.
pub struct RestoreArgs<'a> {
    pub file: &'a Path,
    pub data_dir: &'a Path,
    pub member: cluster::Flags<'a>,
    pub skip_hash_check: bool,
}

/// What a restore wrote, for the report.
struct Restored {
    check: HashCheck,
    meta: BackendMeta,
    records: u64,
    leases: usize,
    keys: usize,
    ignored: Vec<(String, u64)>,
    compacted_now: usize,
}

fn dir_is_empty(d: &Path) -> Result<bool, CliError> {
    let mut it = fs::read_dir(d)
        .map_err(|e| CliError::failed(format!("cannot read {}: {e}", d.display())))?;
    Ok(it.next().is_none())
}

fn sync_dir(dir: &Path) -> Result<(), CliError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CliError::failed(format!("fsync directory {}: {e}", dir.display())))
}

pub fn restore(a: &RestoreArgs<'_>, format: &str) -> Result<(), CliError> {
    let member = cluster::resolve(&a.member).map_err(CliError::usage)?;
    let src = inspect(a.file)?;
    if !src.has_hash && !a.skip_hash_check {
        return Err(src.fail(
            "snapshot has no sha256 (a copied database file, not a saved snapshot?): \
             pass --skip-hash-check to restore it anyway",
        ));
    }
    let data_dir = a.data_dir;
    let created_dir = match fs::metadata(data_dir) {
        Ok(md) if !md.is_dir() => {
            return Err(CliError::failed(format!(
                "data dir {} exists and is not a directory",
                data_dir.display()
            )))
        }
        Ok(_) => {
            if !dir_is_empty(data_dir)? {
                let leftover = data_dir.join("member.restore.tmp");
                let hint = if leftover.exists() && !data_dir.join("member").exists() {
                    format!(
                        " ({} was left by an interrupted restore: remove it)",
                        leftover.display()
                    )
                } else {
                    String::new()
                };
                return Err(CliError::failed(format!(
                    "data dir {} exists and is not empty; restore writes a new data dir only{hint}",
                    data_dir.display()
                )));
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir).map_err(|e| {
                CliError::failed(format!(
                    "cannot create data dir {}: {e}",
                    data_dir.display()
                ))
            })?;
            true
        }
        Err(e) => {
            return Err(CliError::failed(format!(
                "cannot stat {}: {e}",
                data_dir.display()
            )))
        }
    };
    // The server tightens a new data dir to 0700 too.
    let _ = fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700));
    // Everything is built in DIR/member.restore.tmp and renamed to DIR/member at the end, so
    // a failed or interrupted restore never leaves a member directory the server would use.
    let staging = data_dir.join("member.restore.tmp");
    let result = Scratch::create(staging.clone()).and_then(|mut scratch| {
        let r = build_member(a, &src, &member, &staging)?;
        fs::rename(&staging, data_dir.join("member")).map_err(|e| {
            CliError::failed(format!("rename {} to member: {e}", staging.display()))
        })?;
        scratch.keep = true;
        sync_dir(data_dir)?;
        if created_dir {
            match data_dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => sync_dir(p)?,
                _ => sync_dir(Path::new("."))?,
            }
        }
        Ok(r)
    });
    let restored = match result {
        Ok(r) => r,
        Err(e) => {
            if created_dir {
                let _ = fs::remove_dir_all(data_dir);
            }
            return Err(e);
        }
    };
    report(a, &src, &member, &restored, format)
}

/// Writes `staging/snap/db` and `staging/wal`.
fn build_member(
    a: &RestoreArgs<'_>,
    src: &Source,
    member: &cluster::Member,
    staging: &Path,
) -> Result<Restored, CliError> {
    let snap_dir = staging.join("snap");
    fs::create_dir(&snap_dir)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", snap_dir.display())))?;
    let db = snap_dir.join("db");
    let restored = match src.format {
        Format::Corekv => {
            let check = copy_image(src, Some(&db), a.skip_hash_check)?;
            // Checked whole and loaded once, as the server's start-up would.
            let (st, _, counts) = corekv_status(&db, src)?;
            let mut backend = Backend::open(&db).map_err(|e| src.fail(e))?;
            backend
                .reset_log_position(RESTORED_INDEX, RESTORED_TERM)
                .map_err(|e| CliError::failed(format!("{}: {e}", db.display())))?;
            if counts.alarms > 0 {
                eprintln!(
                    "warning: the snapshot carries {} active alarm(s) of its source member; \
                     after starting the restored member, check them with `etcdctl alarm list` (and `alarm disarm`)",
                    counts.alarms
                );
            }
            Restored {
                check,
                meta: backend.meta(),
                records: st.total_keys - (counts.leases + counts.alarms) as u64,
                leases: counts.leases,
                keys: counts.keys,
                ignored: Vec::new(),
                compacted_now: 0,
            }
        }
        Format::Etcd => {
            let (snap, check) = read_etcd(src, a.skip_hash_check)?;
            if snap.auth_enabled {
                eprintln!(
                    "warning: authentication was enabled in this etcd snapshot; corekv has no authentication yet, \
                     so the restored key space is open to every client"
                );
            }
            let ignored = snap.ignored.clone();
            let plan = snap.into_plan();
            let meta = BackendMeta {
                consistent_index: RESTORED_INDEX,
                term: RESTORED_TERM,
                revision: plan.revision,
                compact_revision: plan.compact_revision,
            };
            let records = plan.records.len() as u64;
            let compacted_now = plan.compacted_now;
            let backend = {
                let _p = Progress::start("writing the store", None, Unit::Elapsed);
                Backend::import(&db, plan.records, plan.leases, meta)
                    .map_err(|e| src.fail(format!("cannot import: {e}")))?
            };
            // The check the server's start-up makes: the whole file, then the key space.
            backend.verify().map_err(|e| {
                CliError::failed(format!("the restored store does not verify: {e}"))
            })?;
            let (store, loaded) = {
                let _p = Progress::start("checking the restored key space", None, Unit::Elapsed);
                backend
                    .load()
                    .map_err(|e| src.fail(format!("the restored key space does not load: {e}")))?
            };
            let view = store.view();
            Restored {
                check,
                meta: loaded,
                records,
                leases: view.lease_count(),
                keys: view.key_count(),
                ignored,
                compacted_now,
            }
        }
    };
    // The restored member is the whole membership of its new cluster.
    {
        let mut backend = Backend::open(&db).map_err(|e| src.fail(e))?;
        let ms = corekv_engine::membership::Membership::with_members([
            corekv_engine::membership::Member {
                id: member.member_id,
                name: member.name.clone(),
                peer_urls: member.peer_urls.clone(),
                client_urls: Vec::new(),
                is_learner: false,
            },
        ]);
        backend
            .replace_membership(&ms)
            .map_err(|e| CliError::failed(format!("{}: {e}", db.display())))?;
    }
    // The WAL as the server's bootstrap writes it: the identity, then the membership. No
    // entries: the server starts raft just after the store's consistent index.
    let identity = Identity {
        member_id: member.member_id,
        cluster_id: member.cluster_id,
        name: member.name.clone(),
    };
    let wal_dir = staging.join("wal");
    let mut wal =
        Wal::create(&wal_dir, &identity.encode(), WalOptions::default()).map_err(|e| {
            CliError::failed(format!(
                "cannot create the WAL in {}: {e}",
                wal_dir.display()
            ))
        })?;
    let conf_state = ConfState {
        voters: vec![member.member_id],
        ..Default::default()
    };
    wal.append(&[(
        RecordKind::ConfState,
        &codec::encode_conf_state(&conf_state),
    )])
    .map_err(|e| {
        CliError::failed(format!(
            "cannot write the WAL in {}: {e}",
            wal_dir.display()
        ))
    })?;
    drop(wal);
    sync_dir(&snap_dir)?;
    sync_dir(staging)?;
    Ok(restored)
}

fn report(
    a: &RestoreArgs<'_>,
    src: &Source,
    m: &cluster::Member,
    r: &Restored,
    format: &str,
) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let ignored: Vec<&str> = r
        .ignored
        .iter()
        .filter(|(_, c)| *c > 0)
        .map(|(n, _)| n.as_str())
        .collect();
    if format == "json" {
        let j = json!({
            "data_dir": a.data_dir,
            "snapshot": src.path,
            "format": src.format.name(),
            "sha256": r.check.name(),
            "name": m.name,
            "member_id": m.member_id,
            "cluster_id": m.cluster_id,
            "peer_urls": m.peer_urls,
            "revision": r.meta.revision,
            "compact_revision": r.meta.compact_revision,
            "consistent_index": r.meta.consistent_index,
            "term": r.meta.term,
            "records": r.records,
            "keys": r.keys,
            "leases": r.leases,
            "compacted_records": r.compacted_now,
            "ignored_buckets": r.ignored.iter().map(|(n, c)| json!({"name": n, "entries": c})).collect::<Vec<_>>(),
        });
        writeln!(out, "{j}")?;
    } else {
        let mut rows = vec![
            ("data dir".to_string(), a.data_dir.display().to_string()),
            (
                "snapshot".into(),
                format!(
                    "{} ({} snapshot, sha256 {})",
                    src.path.display(),
                    src.format.name(),
                    r.check.name()
                ),
            ),
            (
                "member".into(),
                format!("{} {:x} ({})", m.name, m.member_id, m.peer_urls.join(",")),
            ),
            ("cluster id".into(), format!("{:x}", m.cluster_id)),
            ("revision".into(), r.meta.revision.to_string()),
            (
                "compacted revision".into(),
                r.meta.compact_revision.to_string(),
            ),
            (
                "records".into(),
                format!("{} ({} live keys)", r.records, r.keys),
            ),
            ("leases".into(), r.leases.to_string()),
            (
                "raft log".into(),
                format!(
                    "starts after index {}, term {}",
                    r.meta.consistent_index, r.meta.term
                ),
            ),
        ];
        if r.compacted_now > 0 {
            rows.push((
                "compaction".into(),
                format!(
                    "finished etcd's scheduled compaction: {} records dropped",
                    r.compacted_now
                ),
            ));
        }
        if !ignored.is_empty() {
            rows.push((
                "not restored".into(),
                format!(
                    "buckets {} (etcd's membership, alarms and auth)",
                    ignored.join(", ")
                ),
            ));
        }
        write_table(&mut out, &rows)?;
    }
    out.flush()?;
    Ok(())
}
