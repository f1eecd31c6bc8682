//! What a core's network runtime asks of the sequencer directly, and the latest view the
//! sequencer publishes for reads.
//!
//! Writes, read-index requests and the other requests that only the sequencer can answer go
//! straight from the connection's runtime to the sequencer's bounded queue: a hop through the
//! core's shard cost two thread wake-ups per request and bought nothing. Serializable reads
//! need no other thread at all: they read [`LatestView`], which the sequencer replaces after
//! every applied batch and before it answers that batch's writers, so a client that saw its
//! write acknowledged reads it on any core afterwards.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use corekv_engine::mvcc::ReadView;
use corekv_engine::request::{AuthHeader, Command};
use corekv_engine::KvError;
use tokio::sync::oneshot;

use crate::shard_api::{ClusterOp, LeaseOp, LeaseResult, MaintenanceOp, Reply, StatusInfo};

/// The reply channel of a proposal.
pub type WriteReply = crate::answer::Answer<crate::answer::WriteResult>;
/// The reply channel of a read-index request: a view at or after the read index.
pub type ReadReply = crate::answer::Answer<crate::answer::ReadResult>;
/// The reply channel of a lease request served without a log entry.
pub type LeaseReply = oneshot::Sender<Result<Reply<LeaseResult>, KvError>>;

/// What the sequencer's queue carries.
pub enum SequencerMsg {
    Propose {
        command: Command,
        /// The client's caller, logged with the command (`None`: the server's own write).
        auth: Option<AuthHeader>,
        reply: WriteReply,
    },
    ReadIndex {
        reply: ReadReply,
    },
    Status {
        reply: oneshot::Sender<StatusInfo>,
    },
    /// Keep-alive, time-to-live or lease list, answered by the lessor (no log entry).
    Lease {
        op: LeaseOp,
        reply: LeaseReply,
    },
    /// Work on the store file, passed to its writer behind everything applied so far.
    Maintenance(MaintenanceOp),
    /// Something from a peer (raft messages, snapshots, forwarded lease requests).
    Peer(crate::peer::PeerEvent),
    /// A membership change or leader transfer.
    Cluster(ClusterOp),
}

/// Source of [`LatestView::id`]: tells the cells of one process apart in the readers' caches.
static NEXT_CELL_ID: AtomicU64 = AtomicU64::new(1);

/// The newest published state of the key space: one writer (the sequencer), read by every
/// core's network runtime.
///
/// Readers keep a copy per thread and look at the shared cell only when its sequence number
/// moved, so a read costs one atomic load, not a lock or a reference-count increment on a
/// cache line every core writes.
pub struct LatestView {
    id: u64,
    /// Increases with every publication; stored after `slot` is replaced.
    seq: AtomicU64,
    slot: Mutex<(u64, ReadView, u64)>,
}

thread_local! {
    /// This thread's copy: (cell id, seq, view, raft term).
    static CACHED: RefCell<Option<(u64, u64, ReadView, u64)>> = const { RefCell::new(None) };
}

impl LatestView {
    /// A cell holding `view` (at `raft_term`) as publication 0.
    pub fn new(view: ReadView, raft_term: u64) -> LatestView {
        LatestView {
            id: NEXT_CELL_ID.fetch_add(1, Ordering::Relaxed),
            seq: AtomicU64::new(0),
            slot: Mutex::new((0, view, raft_term)),
        }
    }

    /// Replaces the view. Called by the single writer with increasing `seq`.
    pub fn publish(&self, seq: u64, view: ReadView, raft_term: u64) {
        let old = {
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            assert!(seq > slot.0, "publications replace the view in order");
            std::mem::replace(&mut *slot, (seq, view, raft_term))
        };
        // Release: a reader that sees `seq` finds the new view in the slot.
        self.seq.store(seq, Ordering::Release);
        // The old view's versions are freed here, outside the lock.
        drop(old);
    }

    /// The newest view and its raft term.
    pub fn read(&self) -> Reply<ReadView> {
        let seq = self.seq.load(Ordering::Acquire);
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            match &*cached {
                Some((id, at, view, term)) if *id == self.id && *at >= seq => Reply {
                    body: view.clone(),
                    raft_term: *term,
                },
                _ => {
                    let (at, view, term) = {
                        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
                        (slot.0, slot.1.clone(), slot.2)
                    };
                    *cached = Some((self.id, at, view.clone(), term));
                    Reply {
                        body: view,
                        raft_term: term,
                    }
                }
            }
        })
    }

    /// The newest publication: (sequence number, view, raft term).
    pub fn snapshot(&self) -> (u64, ReadView, u64) {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        (slot.0, slot.1.clone(), slot.2)
    }

    /// Runs `f` on the newest view without copying it out of this thread's cache. `f` must
    /// not read this cell again (the cache is borrowed while it runs).
    pub fn with<R>(&self, f: impl FnOnce(&ReadView, u64) -> R) -> R {
        let seq = self.seq.load(Ordering::Acquire);
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            let fresh = matches!(&*cached, Some((id, at, _, _)) if *id == self.id && *at >= seq);
            if !fresh {
                let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
                *cached = Some((self.id, slot.0, slot.1.clone(), slot.2));
            }
            let (_, _, view, term) = cached.as_ref().expect("filled above");
            f(view, *term)
        })
    }
}

/// Drops this thread's cached view. A thread that stops reading would otherwise keep an
/// old key space (and every record replaced since) alive; network runtimes call this on a
/// timer.
pub fn forget_cached_view() {
    CACHED.with(|cached| cached.borrow_mut().take());
}

/// A shared handle on a [`LatestView`].
pub type SharedView = Arc<LatestView>;

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_engine::mvcc::Store;
    use corekv_engine::pb::PbPutRequest;

    fn put(store: &mut Store, key: &str) {
        let put = PbPutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        store.apply(&Command::Put(put)).unwrap();
    }

    #[test]
    fn readers_see_each_publication_once_it_is_made() {
        let mut store = Store::new();
        let cell = Arc::new(LatestView::new(store.view(), 1));
        assert_eq!(cell.read().body.revision(), 1);
        for n in 2..=20i64 {
            put(&mut store, &format!("k{n}"));
            cell.publish(n as u64, store.view(), 3);
            // Same thread (cached copy must be refreshed) and another thread (fresh cache).
            assert_eq!(cell.read().body.revision(), n);
            assert_eq!(cell.with(|v, term| (v.revision(), term)), (n, 3));
            let other = cell.clone();
            let seen = std::thread::spawn(move || other.read().body.revision())
                .join()
                .unwrap();
            assert_eq!(seen, n);
        }
    }

    #[test]
    fn a_forgotten_cache_releases_the_view() {
        let mut store = Store::new();
        put(&mut store, "a");
        let cell = LatestView::new(store.view(), 1);
        let probe = cell.read().body;
        drop(cell.read());
        put(&mut store, "b");
        cell.publish(1, store.view(), 1);
        // The cache still holds the first view until the next read or a forget.
        forget_cached_view();
        assert!(CACHED.with(|c| c.borrow().is_none()));
        assert_eq!(probe.revision(), 2);
        assert_eq!(cell.read().body.revision(), 3);
    }

    #[test]
    fn two_cells_on_one_thread_do_not_share_a_cache() {
        let mut a = Store::new();
        put(&mut a, "only-in-a");
        let b = Store::new();
        let cell_a = LatestView::new(a.view(), 1);
        let cell_b = LatestView::new(b.view(), 1);
        assert_eq!(cell_a.read().body.revision(), 2);
        assert_eq!(cell_b.read().body.revision(), 1);
        assert_eq!(cell_a.read().body.revision(), 2);
    }

    #[test]
    #[should_panic(expected = "in order")]
    fn an_older_publication_is_refused() {
        let store = Store::new();
        let cell = LatestView::new(store.view(), 1);
        cell.publish(2, store.view(), 1);
        cell.publish(2, store.view(), 1);
    }
}
