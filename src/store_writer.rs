//! The revision store's writer: a thread that commits what the sequencer applied to the
//! on-disk B+ tree in batches, off the write path, and does the maintenance that needs the
//! store file (hash, online defragmentation, snapshot images).
//!
//! The WAL already makes every acknowledged write durable; the store is what lets the WAL
//! be released and restarts skip replaying it. So the store may lag: the sequencer hands
//! over each applied batch's changes and moves on, and this thread folds them together and
//! commits every `COMMIT_INTERVAL_MS` or `COMMIT_CHANGES_MAX` changes, whichever comes
//! first (etcd's backend batch interval and limit). After each commit it publishes the
//! highest log index the store durably holds; the sequencer releases WAL segments below it.
//!
//! Maintenance requests come on the same queue as the batches, so each sees everything
//! applied before it was asked for: the writer commits what it holds first.
//!
//! Online defragmentation: the writer pins the last commit, and a helper thread writes a
//! compacted copy of it to `<db>.defrag`. Meanwhile the writer keeps taking batches and
//! folds them into one change set without committing (memory grows only with the writes
//! made during the defragmentation; reads and writes are served from memory and the WAL as
//! always). When the copy is done the folded changes are committed into it, it is renamed
//! over the store file (the directory fsynced) and reopened. A crash at any point leaves a
//! loadable store: before the rename the old file is untouched; after it the new file holds
//! at least as much. The durable index moves only once the new file is in place, so the
//! WAL keeps every entry either file may lack.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv_engine::backend::{Backend, BackendMeta, Snapshot};
use corekv_engine::btree::PAGE_SIZE;
use corekv_engine::mvcc::{ChangeSet, Store};
use corekv_engine::KvError;
use corekv_net::shard_api::{DefragOutcome, MaintenanceOp, SnapshotImage, StoreHash};

/// Longest a change waits before it is committed to the store.
pub const COMMIT_INTERVAL_MS: u64 = 100;
/// Most changes folded into one store commit.
pub const COMMIT_CHANGES_MAX: usize = 10_000;
/// Messages queued from the sequencer; a full queue makes the sequencer wait (backpressure).
pub const JOBS_QUEUED_MAX: usize = 256;

/// Suffix of the compacted copy a defragmentation writes next to the store file.
const DEFRAG_SUFFIX: &str = ".defrag";
/// Prefix (after the store file's name) of snapshot images being written.
const SNAPSHOT_INFIX: &str = ".snapshot.";

/// One applied batch: its changes and the log position they bring the store to.
pub struct StoreJob {
    pub changes: ChangeSet,
    pub applied_index: u64,
    pub term: u64,
}

/// What the writer's queue carries.
enum WriterMsg {
    Job(StoreJob),
    Maintenance(MaintenanceOp),
    /// Replace the store with a snapshot image received from the leader.
    Install {
        image: PathBuf,
        reply: std::sync::mpsc::Sender<Result<(Store, BackendMeta), String>>,
    },
}

/// What the sequencer keeps of the store writer.
pub struct StoreLink {
    msgs: crossbeam_channel::Sender<WriterMsg>,
    durable_index: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    sizes: Arc<Sizes>,
}

/// The store file's size and the part of it in use, after the last commit.
struct Sizes {
    /// Shared with the network layer, which checks the quota against it.
    file_bytes: Arc<AtomicU64>,
    in_use_bytes: AtomicU64,
}

impl StoreLink {
    /// Hands a batch over; waits if the writer is `JOBS_QUEUED_MAX` messages behind.
    pub fn submit(&self, job: StoreJob) {
        // A writer that stopped has logged why; the WAL keeps everything meanwhile.
        let _ = self.msgs.send(WriterMsg::Job(job));
    }

    /// Queues a maintenance request behind every batch handed over so far.
    pub fn maintain(&self, op: MaintenanceOp) {
        if self.failed() {
            op.fail(store_failed());
            return;
        }
        if let Err(crossbeam_channel::SendError(WriterMsg::Maintenance(op))) =
            self.msgs.send(WriterMsg::Maintenance(op))
        {
            op.fail(store_failed());
        }
    }

    /// Replaces the store file with `image` (a snapshot from the leader, durable on disk)
    /// and returns the key space it holds. Blocks until done: the member has nothing else
    /// to apply meanwhile. Changes handed over before it are dropped (the image supersedes
    /// them).
    pub fn install(&self, image: PathBuf) -> Result<(Store, BackendMeta), String> {
        let (reply, rx) = std::sync::mpsc::channel();
        self.msgs
            .send(WriterMsg::Install { image, reply })
            .map_err(|_| "the revision store writer stopped".to_string())?;
        rx.recv()
            .map_err(|_| "the revision store writer stopped".to_string())?
    }

    /// The highest log index the store durably holds.
    pub fn durable_index(&self) -> u64 {
        self.durable_index.load(Ordering::Acquire)
    }

    /// (file bytes, bytes in use) of the store after its last commit.
    pub fn size_bytes(&self) -> (u64, u64) {
        (
            self.sizes.file_bytes.load(Ordering::Acquire),
            self.sizes.in_use_bytes.load(Ordering::Acquire),
        )
    }

    /// Whether the store failed (it then refuses further commits; the WAL still holds all).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

fn store_failed() -> KvError {
    KvError::Unavailable("etcdserver: the revision store failed; see the server log".into())
}

fn maintenance_failed(what: &str, err: impl std::fmt::Display) -> KvError {
    log::error!("{what} failed: {err}");
    KvError::Unavailable(format!("etcdserver: {what} failed: {err}"))
}

/// Starts the writer thread over an open backend whose last commit holds `durable_index`.
/// `size_gauge` is kept at the store file's size after each commit.
pub fn spawn(
    backend: Backend,
    durable_index: u64,
    cpu: usize,
    size_gauge: Arc<AtomicU64>,
) -> std::io::Result<StoreLink> {
    let (msgs, inbox) = crossbeam_channel::bounded::<WriterMsg>(JOBS_QUEUED_MAX);
    let durable = Arc::new(AtomicU64::new(durable_index));
    let failed = Arc::new(AtomicBool::new(false));
    let sizes = Arc::new(Sizes {
        file_bytes: size_gauge,
        in_use_bytes: AtomicU64::new(0),
    });
    record_sizes(&backend, &sizes);
    let link = StoreLink {
        msgs,
        durable_index: durable.clone(),
        failed: failed.clone(),
        sizes: sizes.clone(),
    };
    let mut writer = Writer {
        backend,
        inbox,
        durable,
        failed,
        sizes,
        pending: None,
        deferred: VecDeque::new(),
        images: 0,
        deferred_install: None,
    };
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let _ = crate::cores::pin_current_thread(cpu);
            writer.run();
        })?;
    Ok(link)
}

/// Removes what an interrupted defragmentation or snapshot left next to the store file
/// `db` (called before the store is opened; nothing else uses these names).
pub fn remove_leftovers(db: &Path) {
    let (Some(dir), Some(name)) = (db.parent(), db.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let defrag = format!("{name}{DEFRAG_SUFFIX}");
    let snapshot = format!("{name}{SNAPSHOT_INFIX}");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if file == defrag || file == format!("{defrag}.tmp") || file.starts_with(&snapshot) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => log::info!(
                    "removed {}, left by an interrupted defragmentation or snapshot",
                    entry.path().display()
                ),
                Err(err) => log::warn!("cannot remove {}: {err}", entry.path().display()),
            }
        }
    }
}

struct Writer {
    backend: Backend,
    inbox: crossbeam_channel::Receiver<WriterMsg>,
    durable: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    sizes: Arc<Sizes>,
    /// Applied changes not committed yet, folded into one job.
    pending: Option<StoreJob>,
    /// Maintenance requests that arrived during a defragmentation, served after it.
    deferred: VecDeque<MaintenanceOp>,
    /// Snapshot images started (names their temporary files).
    images: u64,
    /// A snapshot install that arrived during a defragmentation.
    deferred_install: Option<InstallRequest>,
}

type InstallRequest = (
    PathBuf,
    std::sync::mpsc::Sender<Result<(Store, BackendMeta), String>>,
);

impl Writer {
    fn run(&mut self) {
        let interval = Duration::from_millis(COMMIT_INTERVAL_MS);
        loop {
            if let Some((image, reply)) = self.deferred_install.take() {
                let result = self.install_image(&image);
                let failed = result.is_err();
                let _ = reply.send(result);
                if failed {
                    self.fail();
                    return;
                }
            }
            if let Some(op) = self.deferred.pop_front() {
                if !self.maintain(op) {
                    return;
                }
                continue;
            }
            if self.inbox.is_empty() {
                // About to wait: what the last commit freed can go back to the OS.
                crate::release_idle_memory();
            }
            match self.inbox.recv() {
                Ok(WriterMsg::Job(job)) => self.fold(job),
                Ok(WriterMsg::Maintenance(op)) => {
                    if !self.maintain(op) {
                        return;
                    }
                    continue;
                }
                Ok(WriterMsg::Install { image, reply }) => {
                    if !self.install_and_answer(&image, reply) {
                        return;
                    }
                    continue;
                }
                Err(_) => {
                    self.commit_pending();
                    return;
                }
            }
            let deadline = Instant::now() + interval;
            while self
                .pending
                .as_ref()
                .is_some_and(|p| p.changes.len() < COMMIT_CHANGES_MAX)
            {
                match self.inbox.recv_deadline(deadline) {
                    Ok(WriterMsg::Job(job)) => self.fold(job),
                    // Served once this batch is committed, in arrival order.
                    Ok(WriterMsg::Maintenance(op)) => {
                        self.deferred.push_back(op);
                        break;
                    }
                    Ok(WriterMsg::Install { image, reply }) => {
                        if !self.install_and_answer(&image, reply) {
                            return;
                        }
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !self.commit_pending() {
                return;
            }
        }
    }

    fn fold(&mut self, next: StoreJob) {
        match &mut self.pending {
            None => self.pending = Some(next),
            Some(into) => {
                debug_assert!(
                    next.applied_index >= into.applied_index,
                    "jobs arrive in log order"
                );
                into.changes.merge(next.changes);
                into.applied_index = next.applied_index;
                into.term = next.term;
            }
        }
    }

    /// Commits the folded changes, if any. False once the store has failed: like the WAL,
    /// after an I/O error it is not trusted with more writes.
    fn commit_pending(&mut self) -> bool {
        let Some(pending) = self.pending.take() else {
            return true;
        };
        let started = Instant::now();
        if let Err(err) = self
            .backend
            .commit(&pending.changes, pending.applied_index, pending.term)
        {
            log::error!("revision store commit failed: {err}; WAL segments are kept from now on");
            self.fail();
            return false;
        }
        corekv_net::metrics::global()
            .backend_commit_seconds
            .observe_duration(started.elapsed());
        self.durable.store(pending.applied_index, Ordering::Release);
        record_sizes(&self.backend, &self.sizes);
        true
    }

    /// Stops for good: refuses what is queued and what comes.
    fn fail(&mut self) {
        self.failed.store(true, Ordering::Release);
        for op in self.deferred.drain(..) {
            op.fail(store_failed());
        }
    }

    /// Serves one maintenance request after committing what it must see. False once the
    /// store has failed.
    fn maintain(&mut self, op: MaintenanceOp) -> bool {
        if !self.commit_pending() {
            op.fail(store_failed());
            return false;
        }
        match op {
            MaintenanceOp::Hash { reply } => {
                let snap = self.backend.snapshot();
                spawn_helper("store-hash", move || {
                    let result = snap
                        .meta()
                        .and_then(|meta| {
                            snap.hash().map(|hash| StoreHash {
                                hash,
                                revision: meta.revision,
                            })
                        })
                        .map_err(|e| maintenance_failed("hash", e));
                    let _ = reply.send(result);
                });
                true
            }
            MaintenanceOp::Snapshot { reply } => {
                self.images += 1;
                let path = sibling(
                    self.backend.path(),
                    &format!("{SNAPSHOT_INFIX}{}", self.images),
                );
                let snap = self.backend.snapshot();
                spawn_helper("store-snapshot", move || {
                    let _ = reply.send(
                        write_image(snap, &path).map_err(|e| maintenance_failed("snapshot", e)),
                    );
                });
                true
            }
            MaintenanceOp::Defragment { reply } => self.defragment(reply),
        }
    }

    /// Online defragmentation (see the module docs). False once the store has failed.
    fn defragment(
        &mut self,
        reply: tokio::sync::oneshot::Sender<Result<DefragOutcome, KvError>>,
    ) -> bool {
        let started = Instant::now();
        let before = self.backend.size_bytes();
        let db = self.backend.path().to_path_buf();
        let copy = sibling(&db, DEFRAG_SUFFIX);
        remove_stale(&copy);
        log::info!("defragmenting the revision store ({before} bytes)");
        let snap = self.backend.snapshot();
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let target = copy.clone();
        spawn_helper("store-defrag", move || {
            let _ = done_tx.send(
                snap.compact_to(&target)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
        });
        // Keep taking batches (folded, not committed) until the copy is written.
        let copied = loop {
            crossbeam_channel::select! {
                recv(self.inbox) -> msg => match msg {
                    Ok(WriterMsg::Job(job)) => self.fold(job),
                    Ok(WriterMsg::Maintenance(op)) => self.deferred.push_back(op),
                    // Installed right after: the copy being written is about to be stale.
                    Ok(WriterMsg::Install { image, reply }) => self.deferred_install = Some((image, reply)),
                    Err(_) => break done_rx.recv().unwrap_or_else(|_| Err("the copying thread died".into())),
                },
                recv(done_rx) -> done => break done.unwrap_or_else(|_| Err("the copying thread died".into())),
            }
        };
        if let Err(err) = copied {
            remove_stale(&copy);
            let _ = reply.send(Err(maintenance_failed("defragment", err)));
            return true;
        }
        match self.install(&copy, &db) {
            Ok(()) => {
                let after = self.backend.size_bytes();
                log::info!(
                    "defragmented the revision store in {:?}: {before} -> {after} bytes",
                    started.elapsed()
                );
                let _ = reply.send(Ok(DefragOutcome {
                    size_before_bytes: before,
                    size_after_bytes: after,
                }));
                true
            }
            Err(Install::Abandoned(err)) => {
                remove_stale(&copy);
                let _ = reply.send(Err(maintenance_failed("defragment", err)));
                true
            }
            Err(Install::Failed(err)) => {
                log::error!("defragment: {err}; the store refuses further commits, WAL segments are kept from now on");
                let _ = reply.send(Err(store_failed()));
                self.fail();
                false
            }
        }
    }

    /// Puts a received snapshot image in place of the store file and loads it. Pending
    /// changes are older than the image and dropped.
    /// Installs a snapshot image and answers `reply`; false (the writer has failed and
    /// stops) if it could not.
    fn install_and_answer(
        &mut self,
        image: &Path,
        reply: std::sync::mpsc::Sender<Result<(Store, BackendMeta), String>>,
    ) -> bool {
        let result = self.install_image(image);
        let failed = result.is_err();
        let _ = reply.send(result);
        if failed {
            self.fail();
        }
        !failed
    }

    fn install_image(&mut self, image: &Path) -> Result<(Store, BackendMeta), String> {
        self.pending = None;
        let db = self.backend.path().to_path_buf();
        {
            let fresh = Backend::open(image).map_err(|e| format!("snapshot image: {e}"))?;
            fresh.verify().map_err(|e| format!("snapshot image: {e}"))?;
        }
        std::fs::rename(image, &db)
            .map_err(|e| format!("rename {} -> {}: {e}", image.display(), db.display()))?;
        sync_dir(&db).map_err(|e| format!("fsync of {}'s directory: {e}", db.display()))?;
        self.backend =
            Backend::open(&db).map_err(|e| format!("reopening {}: {e}", db.display()))?;
        let (store, meta) = self
            .backend
            .load()
            .map_err(|e| format!("loading {}: {e}", db.display()))?;
        self.durable.store(meta.consistent_index, Ordering::Release);
        record_sizes(&self.backend, &self.sizes);
        Ok((store, meta))
    }

    /// Brings the compacted copy up to date with the folded changes and puts it in place of
    /// the store file.
    fn install(&mut self, copy: &Path, db: &Path) -> Result<(), Install> {
        {
            let mut fresh = Backend::open(copy).map_err(|e| Install::Abandoned(e.to_string()))?;
            if let Some(p) = &self.pending {
                fresh
                    .commit(&p.changes, p.applied_index, p.term)
                    .map_err(|e| Install::Abandoned(e.to_string()))?;
            }
        }
        std::fs::rename(copy, db).map_err(|e| {
            Install::Abandoned(format!(
                "rename {} -> {}: {e}",
                copy.display(),
                db.display()
            ))
        })?;
        // The file at `db` is the copy from here on: the old one must not take commits.
        sync_dir(db)
            .map_err(|e| Install::Failed(format!("fsync of {}'s directory: {e}", db.display())))?;
        self.backend = Backend::open(db)
            .map_err(|e| Install::Failed(format!("reopening {}: {e}", db.display())))?;
        if let Some(p) = self.pending.take() {
            self.durable.store(p.applied_index, Ordering::Release);
        }
        record_sizes(&self.backend, &self.sizes);
        Ok(())
    }
}

/// How putting a compacted copy in place failed.
enum Install {
    /// Before the rename: the store file is untouched; carry on with it.
    Abandoned(String),
    /// After the rename: the old file is gone from the directory; stop committing.
    Failed(String),
}

/// Writes a compacted image of `snap` to `path`, opens it and unlinks it: the image lives
/// as long as the returned file is open.
fn write_image(snap: Snapshot, path: &Path) -> Result<SnapshotImage, String> {
    remove_stale(path);
    let meta = snap.meta().map_err(|e| e.to_string())?;
    let stats = snap.compact_to(path).map_err(|e| e.to_string());
    drop(snap);
    let stats = match stats {
        Ok(stats) => stats,
        Err(err) => {
            remove_stale(path);
            return Err(err);
        }
    };
    let file = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()));
    let _ = std::fs::remove_file(path);
    Ok(SnapshotImage {
        file: file?,
        size_bytes: stats.page_count * PAGE_SIZE as u64,
        revision: meta.revision,
        index: meta.consistent_index,
        term: meta.term,
    })
}

fn spawn_helper(name: &str, work: impl FnOnce() + Send + 'static) {
    // If the thread cannot start, `work` (and the reply it holds) is dropped: the caller
    // hears that the request was not served.
    if let Err(err) = std::thread::Builder::new().name(name.into()).spawn(work) {
        log::error!("cannot start thread {name}: {err}");
    }
}

/// `<db><suffix>` in the store file's directory.
fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes `path` and the `.tmp` the B+ tree creates it through, if present.
fn remove_stale(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(sibling(path, ".tmp"));
}

fn sync_dir(file: &Path) -> std::io::Result<()> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

fn record_sizes(backend: &Backend, sizes: &Sizes) {
    sizes
        .file_bytes
        .store(backend.size_bytes(), Ordering::Release);
    sizes
        .in_use_bytes
        .store(backend.size_in_use_bytes(), Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        for name in [
            "db",
            "db.defrag",
            "db.defrag.tmp",
            "db.snapshot.1",
            "db.snapshot.7.tmp",
            "db.tmp",
            "dbx.defrag",
            "other",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        remove_leftovers(&db);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["db", "db.tmp", "dbx.defrag", "other"]);
    }
}
