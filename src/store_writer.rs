//! The revision store's writer: a thread that commits what the sequencer applied to the
//! on-disk B+ tree in batches, off the write path.
//!
//! The WAL already makes every acknowledged write durable; the store is what lets the WAL
//! be released and restarts skip replaying it. So the store may lag: the sequencer hands
//! over each applied batch's changes and moves on, and this thread folds them together and
//! commits every `COMMIT_INTERVAL_MS` or `COMMIT_CHANGES_MAX` changes, whichever comes
//! first (etcd's backend batch interval and limit). After each commit it publishes the
//! highest log index the store durably holds; the sequencer releases WAL segments below it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv_engine::backend::Backend;
use corekv_engine::mvcc::ChangeSet;

/// Longest a change waits before it is committed to the store.
pub const COMMIT_INTERVAL_MS: u64 = 100;
/// Most changes folded into one store commit.
pub const COMMIT_CHANGES_MAX: usize = 10_000;
/// Jobs queued from the sequencer; a full queue makes the sequencer wait (backpressure).
pub const JOBS_QUEUED_MAX: usize = 256;

/// One applied batch: its changes and the log position they bring the store to.
pub struct StoreJob {
    pub changes: ChangeSet,
    pub applied_index: u64,
    pub term: u64,
}

/// What the sequencer keeps of the store writer.
pub struct StoreLink {
    jobs: crossbeam_channel::Sender<StoreJob>,
    durable_index: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    sizes: Arc<Sizes>,
}

/// The store file's size and the part of it in use, after the last commit.
#[derive(Default)]
struct Sizes {
    file_bytes: AtomicU64,
    in_use_bytes: AtomicU64,
}

impl StoreLink {
    /// Hands a batch over; waits if the writer is `JOBS_QUEUED_MAX` batches behind.
    pub fn submit(&self, job: StoreJob) {
        // A writer that stopped has logged why; the WAL keeps everything meanwhile.
        let _ = self.jobs.send(job);
    }

    /// The highest log index the store durably holds.
    pub fn durable_index(&self) -> u64 {
        self.durable_index.load(Ordering::Acquire)
    }

    /// (file bytes, bytes in use) of the store after its last commit.
    pub fn size_bytes(&self) -> (u64, u64) {
        (self.sizes.file_bytes.load(Ordering::Acquire), self.sizes.in_use_bytes.load(Ordering::Acquire))
    }

    /// Whether the store failed (it then refuses further commits; the WAL still holds all).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// Starts the writer thread over an open backend whose last commit holds `durable_index`.
pub fn spawn(mut backend: Backend, durable_index: u64, cpu: usize) -> std::io::Result<StoreLink> {
    let (jobs, inbox) = crossbeam_channel::bounded::<StoreJob>(JOBS_QUEUED_MAX);
    let durable = Arc::new(AtomicU64::new(durable_index));
    let failed = Arc::new(AtomicBool::new(false));
    let sizes = Arc::new(Sizes::default());
    record_sizes(&backend, &sizes);
    let link = StoreLink { jobs, durable_index: durable.clone(), failed: failed.clone(), sizes: sizes.clone() };
    std::thread::Builder::new().name("store-writer".into()).spawn(move || {
        let _ = crate::cores::pin_current_thread(cpu);
        run(&mut backend, &inbox, &durable, &failed, &sizes);
    })?;
    Ok(link)
}

fn run(
    backend: &mut Backend,
    inbox: &crossbeam_channel::Receiver<StoreJob>,
    durable: &AtomicU64,
    failed: &AtomicBool,
    sizes: &Sizes,
) {
    let interval = Duration::from_millis(COMMIT_INTERVAL_MS);
    while let Ok(first) = inbox.recv() {
        let deadline = Instant::now() + interval;
        let mut pending = first;
        while pending.changes.len() < COMMIT_CHANGES_MAX {
            match inbox.recv_deadline(deadline) {
                Ok(next) => fold(&mut pending, next),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        let started = Instant::now();
        if let Err(err) = backend.commit(&pending.changes, pending.applied_index, pending.term) {
            // Like the WAL: after an I/O error the store is not trusted with more writes.
            log::error!("revision store commit failed: {err}; WAL segments are kept from now on");
            failed.store(true, Ordering::Release);
            return;
        }
        corekv_net::metrics::global().backend_commit_seconds.observe_duration(started.elapsed());
        durable.store(pending.applied_index, Ordering::Release);
        record_sizes(backend, sizes);
    }
}

fn record_sizes(backend: &Backend, sizes: &Sizes) {
    sizes.file_bytes.store(backend.size_bytes(), Ordering::Release);
    sizes.in_use_bytes.store(backend.size_in_use_bytes(), Ordering::Release);
}

fn fold(into: &mut StoreJob, next: StoreJob) {
    debug_assert!(next.applied_index >= into.applied_index, "jobs arrive in log order");
    into.changes.merge(next.changes);
    into.applied_index = next.applied_index;
    into.term = next.term;
}
