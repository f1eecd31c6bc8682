//! A core's shard: a glommio executor pinned to the core, holding the watch streams of the
//! connections that core owns. It takes every publication of the sequencer in order and
//! fans its events out to the core's watchers. (Reads and writes do not come here: the
//! network runtime reads the latest view itself and talks to the sequencer directly.)

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use corekv_net::sequencer_api::{LatestView, SharedView};

use corekv_net::shard_api::ShardRequest;
use glommio::{LocalExecutorBuilder, Placement};

use crate::sequencer::Publication;
use crate::watch::{HeaderFacts, WatchHub};

/// How often a shard flushes watch streams and advances unsynced watchers.
const WATCH_TICK_MS: u64 = 50;

/// Memory glommio registers for its io_uring buffers. Small so the server starts under the
/// common 8 MiB RLIMIT_MEMLOCK; the shards do no bulk file I/O of their own.
const IO_MEMORY_BYTES: usize = 1024 * 1024;

/// Everything one shard needs.
pub struct ShardSetup {
    pub core: usize,
    pub cpu: usize,
    pub requests: flume::Receiver<ShardRequest>,
    pub publications: flume::Receiver<Publication>,
    /// Open watch streams on this core, as the sequencer sees it: with none, it sends this
    /// shard no publications (waking an idle core per batch cost every write latency), and
    /// the shard catches up from `latest` when a stream opens.
    pub streams_open: Arc<AtomicUsize>,
    /// The newest view (see `streams_open`).
    pub latest: SharedView,
    pub initial: Publication,
    /// --max-request-bytes: the size past which a fragmenting watcher's batch is split.
    pub max_request_bytes: usize,
}

/// Starts the shard on its own pinned thread.
pub fn spawn(setup: ShardSetup) -> glommio::Result<glommio::ExecutorJoinHandle<()>, ()> {
    LocalExecutorBuilder::new(Placement::Fixed(setup.cpu))
        .name(&format!("shard-{}", setup.core))
        .io_memory(IO_MEMORY_BYTES)
        .spawn(move || run(setup))
}

async fn run(setup: ShardSetup) {
    let ShardSetup {
        requests,
        publications,
        streams_open,
        latest,
        initial,
        max_request_bytes,
        ..
    } = setup;
    let facts = HeaderFacts {
        raft_term: initial.raft_term,
        fragment_bytes_max: max_request_bytes,
    };
    let hub = Rc::new(RefCell::new(WatchHub::new(initial.view.clone(), facts)));
    let current = Rc::new(Cell::new(initial.seq));
    let started = std::time::Instant::now();
    let now_ms = move || started.elapsed().as_millis() as u64;
    let follower = {
        let (current, hub) = (current.clone(), hub.clone());
        let publications = publications.clone();
        glommio::spawn_local(async move {
            while let Ok(publication) = publications.recv_async().await {
                adopt(&current, &hub, publication, now_ms());
                // Watch fan-out can be long: let this core's requests in between batches.
                glommio::yield_if_needed().await;
            }
        })
    };
    let ticker = {
        let (hub, current) = (hub.clone(), current.clone());
        let (streams_open, latest) = (streams_open.clone(), latest.clone());
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(std::time::Duration::from_millis(WATCH_TICK_MS)).await;
                hub.borrow_mut().tick(now_ms());
                let streams = hub.borrow().streams();
                streams_open.store(streams, Ordering::SeqCst);
                if streams == 0 {
                    // Without publications the hub's view would pin an old key space (and
                    // every record replaced since) in memory: keep it recent instead.
                    follow_latest(&current, &hub, &latest, now_ms());
                }
            }
        })
    };
    while let Ok(request) = requests.recv_async().await {
        // Publications are sent before writers are answered, so catching up here first
        // means a watch created after an acknowledged write starts at or after it.
        while let Ok(publication) = publications.try_recv() {
            adopt(&current, &hub, publication, now_ms());
        }
        if matches!(request, ShardRequest::WatchOpen { .. }) && hub.borrow().streams() == 0 {
            catch_up(&current, &hub, &streams_open, &latest, now_ms());
        }
        serve_watch(request, &hub, now_ms());
        streams_open.store(hub.borrow().streams(), Ordering::SeqCst);
    }
    drop((follower, ticker));
}

/// Takes a publication: the new view and its events for this core's watchers. One this
/// shard already passed (it caught up from the latest view meanwhile) is skipped.
fn adopt(current: &Cell<u64>, hub: &RefCell<WatchHub>, publication: Publication, now_ms: u64) {
    if publication.seq <= current.get() {
        return;
    }
    if publication.resync {
        hub.borrow_mut().resync();
    }
    hub.borrow_mut().publish(
        publication.view,
        publication.raft_term,
        &publication.events,
        now_ms,
    );
    current.set(publication.seq);
}

/// The first stream opens on a shard the sequencer sent nothing while it had none: announce
/// the stream, then take the newest view. Both sides use SeqCst, so either the sequencer
/// saw the announcement (and sends what follows) or its publication is in the view read
/// here; publications that arrive anyway are skipped by sequence number.
fn catch_up(
    current: &Cell<u64>,
    hub: &RefCell<WatchHub>,
    streams_open: &AtomicUsize,
    latest: &LatestView,
    now_ms: u64,
) {
    debug_assert_eq!(hub.borrow().streams(), 0);
    streams_open.store(1, Ordering::SeqCst);
    follow_latest(current, hub, latest, now_ms);
}

/// Takes the newest view into a hub with no stream (so no watcher: there is nobody to give
/// the skipped events to).
fn follow_latest(current: &Cell<u64>, hub: &RefCell<WatchHub>, latest: &LatestView, now_ms: u64) {
    let (seq, view, raft_term) = latest.snapshot();
    if seq > current.get() {
        hub.borrow_mut().publish(view, raft_term, &[], now_ms);
        current.set(seq);
    }
}

/// Serves one watch-stream request.
fn serve_watch(request: ShardRequest, hub: &Rc<RefCell<WatchHub>>, now_ms: u64) {
    match request {
        ShardRequest::WatchOpen {
            stream_id,
            responses,
        } => hub.borrow_mut().open(stream_id, responses),
        ShardRequest::Watch { stream_id, request } => {
            hub.borrow_mut().request(stream_id, request, now_ms)
        }
        ShardRequest::WatchClose { stream_id } => hub.borrow_mut().close(stream_id),
    }
}
