//! `corekvutl db info` and `corekvutl defrag`: the B+ tree file at `<data-dir>/member/snap/db`.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corekv_engine::btree::{BtreeError, Options, Stats, Store, VerifyReport, PAGE_SIZE};
use serde_json::{json, Value};

use crate::cli::CliError;
use crate::output::{self, write_table};
use crate::progress::{Progress, Unit};

/// Where the database file is: `--db FILE`, or `<data-dir>/member/snap/db`.
pub enum Target {
    DataDir(PathBuf),
    File(PathBuf),
}

impl Target {
    pub fn db_path(&self) -> PathBuf {
        match self {
            Target::DataDir(d) => d.join("member").join("snap").join("db"),
            Target::File(f) => f.clone(),
        }
    }
}

/// Opens the store without creating it, with clear messages for the usual problems.
fn open(path: &Path) -> Result<Store, CliError> {
    if !path.exists() {
        return Err(CliError::failed(format!(
            "no database file at {} (nothing to inspect: the data dir has no key-space file yet, or the path is wrong)",
            path.display()
        )));
    }
    if !path.is_file() {
        return Err(CliError::failed(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Store::open(path, Options { create_if_missing: false }).map_err(|e| match e {
        BtreeError::Locked(_) => CliError::failed(format!(
            "{} is locked by another process (a running corekv server?); stop it first: this tool works offline",
            path.display()
        )),
        e => CliError::failed(format!("cannot open {}: {e}", path.display())),
    })
}

/// Share of the high-water mark that is free, in percent.
fn fragmentation_pct(s: &Stats) -> f64 {
    if s.page_count == 0 {
        return 0.0;
    }
    (s.free_pages + s.freelist_pages) as f64 * 100.0 / s.page_count as f64
}

fn stats_json(s: &Stats) -> Value {
    json!({
        "txid": s.txid,
        "page_size": s.page_size,
        "page_count": s.page_count,
        "file_bytes": s.file_bytes,
        "free_pages": s.free_pages,
        "freelist_pages": s.freelist_pages,
        "fragmentation_percent": (fragmentation_pct(s) * 10.0).round() / 10.0,
        "depth": s.depth,
        "entries": s.entries,
    })
}

fn verify_json(v: &Result<VerifyReport, BtreeError>) -> Value {
    match v {
        Ok(r) => json!({
            "ok": true,
            "branch_pages": r.branch_pages,
            "leaf_pages": r.leaf_pages,
            "overflow_pages": r.overflow_pages,
            "freelist_pages": r.freelist_pages,
            "free_pages": r.free_pages,
        }),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    }
}

fn verify_with_spinner(store: &Store, label: &str) -> Result<VerifyReport, BtreeError> {
    let _p = Progress::start(label, None, Unit::Elapsed);
    store.verify()
}

pub fn info(target: &Target, format: &str) -> Result<(), CliError> {
    let path = target.db_path();
    let store = open(&path)?;
    let s = store.stats();
    let v = verify_with_spinner(&store, "db info: verifying");
    let mut out = std::io::stdout().lock();
    if format == "json" {
        let mut j = stats_json(&s);
        j["file"] = json!(path);
        j["verify"] = verify_json(&v);
        writeln!(out, "{j}")?;
    } else {
        let used = s.page_count - s.free_pages - s.freelist_pages;
        let rows = vec![
            ("file".to_string(), path.display().to_string()),
            ("page size".into(), s.page_size.to_string()),
            (
                "page count".into(),
                format!("{} (high-water mark, meta pages included)", s.page_count),
            ),
            ("file bytes".into(), output::bytes(s.file_bytes)),
            (
                "used pages".into(),
                format!("{used} ({})", output::human(used * PAGE_SIZE as u64)),
            ),
            (
                "free pages".into(),
                format!("{} (+{} free-list pages)", s.free_pages, s.freelist_pages),
            ),
            (
                "fragmentation".into(),
                format!("{:.1}%", fragmentation_pct(&s)),
            ),
            ("tree depth".into(), s.depth.to_string()),
            ("entries".into(), s.entries.to_string()),
            ("txid".into(), s.txid.to_string()),
            (
                "verify".into(),
                match &v {
                    Ok(r) => format!(
                        "OK ({} branch, {} leaf, {} overflow pages)",
                        r.branch_pages, r.leaf_pages, r.overflow_pages
                    ),
                    Err(e) => format!("FAILED: {e}"),
                },
            ),
        ];
        write_table(&mut out, &rows)?;
    }
    out.flush()?;
    v.map(|_| ())
        .map_err(|e| CliError::failed(format!("{}: {e}", path.display())))
}

/// Holds the WAL directory's lock (the one a running server holds) while defrag runs, so a
/// server cannot start in the middle.
struct DirLock(#[allow(dead_code)] File);

fn lock_wal_dir(data_dir: &Path) -> Result<Option<DirLock>, CliError> {
    let dir = crate::wal::wal_dir(data_dir);
    if !dir.is_dir() {
        return Ok(None);
    }
    let f = File::open(&dir)
        .map_err(|e| CliError::failed(format!("cannot open {}: {e}", dir.display())))?;
    // SAFETY: plain syscall on a valid descriptor.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(DirLock(f)));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(CliError::failed(format!(
            "data dir {} is in use: {} is locked by a running corekv server; stop it first (defrag works offline)",
            data_dir.display(),
            dir.display()
        )));
    }
    Err(CliError::failed(format!(
        "cannot lock {}: {err}",
        dir.display()
    )))
}

fn sync_dir(dir: &Path) -> Result<(), CliError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CliError::failed(format!("fsync directory {}: {e}", dir.display())))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub fn defrag(target: &Target, format: &str) -> Result<(), CliError> {
    let path = target.db_path();
    let _wal_lock = match target {
        Target::DataDir(d) => lock_wal_dir(d)?,
        Target::File(_) => None,
    };
    let src = open(&path)?;
    let before = src.stats();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = with_suffix(&path, ".defrag.tmp");
    // Leftovers of an interrupted defrag (we hold the locks, so nobody else is writing them).
    for stale in [tmp.clone(), with_suffix(&tmp, ".tmp")] {
        if stale.exists() {
            eprintln!("removing {} left by an interrupted defrag", stale.display());
            fs::remove_file(&stale)
                .map_err(|e| CliError::failed(format!("cannot remove {}: {e}", stale.display())))?;
        }
    }
    let result = copy_compacted(&src, &tmp);
    let after = match result {
        Ok(after) => after,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // The copy is verified and durable: put it in place.
    fs::rename(&tmp, &path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CliError::failed(format!(
            "rename {} over {}: {e}",
            tmp.display(),
            path.display()
        ))
    })?;
    sync_dir(&dir)?;
    drop(src);

    let mut out = std::io::stdout().lock();
    if format == "json" {
        let j = json!({
            "file": path,
            "entries": after.entries,
            "before": {"file_bytes": before.file_bytes, "page_count": before.page_count,
                       "free_pages": before.free_pages, "freelist_pages": before.freelist_pages},
            "after": {"file_bytes": after.file_bytes, "page_count": after.page_count,
                      "free_pages": after.free_pages, "freelist_pages": after.freelist_pages},
        });
        writeln!(out, "{j}")?;
    } else {
        let saved = before.file_bytes.saturating_sub(after.file_bytes);
        let pct = if before.file_bytes > 0 {
            saved as f64 * 100.0 / before.file_bytes as f64
        } else {
            0.0
        };
        let rows = vec![
            ("file".to_string(), path.display().to_string()),
            ("entries".into(), after.entries.to_string()),
            (
                "size before".into(),
                format!(
                    "{} ({} pages, {} free)",
                    output::bytes(before.file_bytes),
                    before.page_count,
                    before.free_pages
                ),
            ),
            (
                "size after".into(),
                format!(
                    "{} ({} pages, {} free)",
                    output::bytes(after.file_bytes),
                    after.page_count,
                    after.free_pages
                ),
            ),
            (
                "reclaimed".into(),
                format!("{} ({pct:.1}%)", output::human(saved)),
            ),
        ];
        write_table(&mut out, &rows)?;
    }
    out.flush()?;
    Ok(())
}

/// Writes the compacted copy to `tmp`, trims it to its high-water mark, fsyncs it, and
/// checks it (whole-file verify, same entries and metadata as the source). Returns its
/// figures.
fn copy_compacted(src: &Store, tmp: &Path) -> Result<Stats, CliError> {
    let compacted = {
        let progress = Progress::start("defrag: writing compacted copy", None, Unit::Bytes);
        std::thread::scope(|scope| {
            let job = scope.spawn(|| src.compact_to(tmp));
            while !job.is_finished() {
                if let Ok(m) = fs::metadata(tmp) {
                    progress.set(m.len());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            job.join().expect("compaction thread panicked")
        })
    };
    let stats = compacted.map_err(|e| {
        CliError::failed(format!("writing the compacted copy {}: {e}", tmp.display()))
    })?;
    // The store grows its file in steps; the copy needs only its high-water mark.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(tmp)
        .map_err(|e| CliError::failed(format!("cannot open {}: {e}", tmp.display())))?;
    let want = stats.page_count * PAGE_SIZE as u64;
    let len = f
        .metadata()
        .map_err(|e| CliError::failed(format!("stat {}: {e}", tmp.display())))?
        .len();
    if len > want {
        f.set_len(want)
            .map_err(|e| CliError::failed(format!("ftruncate {}: {e}", tmp.display())))?;
    }
    f.sync_all()
        .map_err(|e| CliError::failed(format!("fsync {}: {e}", tmp.display())))?;
    drop(f);

    let copy = Store::open(
        tmp,
        Options {
            create_if_missing: false,
        },
    )
    .map_err(|e| {
        CliError::failed(format!(
            "cannot reopen the compacted copy {}: {e}",
            tmp.display()
        ))
    })?;
    let report = verify_with_spinner(&copy, "defrag: verifying the copy").map_err(|e| {
        CliError::failed(format!(
            "the compacted copy {} does not verify: {e}",
            tmp.display()
        ))
    })?;
    let (a, b) = (src.read(), copy.read());
    if report.entries != a.len() || a.meta() != b.meta() {
        return Err(CliError::failed(format!(
            "the compacted copy {} does not match the original ({} entries vs {}, metadata {})",
            tmp.display(),
            report.entries,
            a.len(),
            if a.meta() == b.meta() {
                "equal"
            } else {
                "differs"
            }
        )));
    }
    Ok(copy.stats())
}
