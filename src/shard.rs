//! A core's shard: a glommio executor pinned to the core, serving the requests of the
//! connections that core owns. Serializable reads run here on the latest published view;
//! writes and read-index requests go to the sequencer over its bounded queue.

use std::cell::RefCell;
use std::rc::Rc;

use corekv_engine::mvcc::ReadView;
use corekv_engine::KvError;
use corekv_net::shard_api::{ReadOp, ReadResult, Reply, ShardRequest};
use glommio::{LocalExecutorBuilder, Placement};
use tokio::sync::oneshot;

use crate::sequencer::{Publication, SequencerMsg};
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
    pub sequencer: flume::Sender<SequencerMsg>,
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
        sequencer,
        initial,
        max_request_bytes,
        ..
    } = setup;
    let facts = HeaderFacts {
        raft_term: initial.raft_term,
        fragment_bytes_max: max_request_bytes,
    };
    let hub = Rc::new(RefCell::new(WatchHub::new(initial.view.clone(), facts)));
    let current = Rc::new(RefCell::new(initial));
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
        let hub = hub.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(std::time::Duration::from_millis(WATCH_TICK_MS)).await;
                hub.borrow_mut().tick(now_ms());
            }
        })
    };
    while let Ok(request) = requests.recv_async().await {
        // Publications are sent before writers are answered, so catching up here first
        // means a client always reads its own acknowledged writes on any core.
        while let Ok(publication) = publications.try_recv() {
            adopt(&current, &hub, publication, now_ms());
        }
        if let Some(request) = serve_watch(request, &hub, now_ms()) {
            serve(request, &current, &sequencer).await;
        }
    }
    drop((follower, ticker));
}

/// Takes a publication: the new view for reads, and its events for this core's watchers.
fn adopt(
    current: &Rc<RefCell<Publication>>,
    hub: &Rc<RefCell<WatchHub>>,
    publication: Publication,
    now_ms: u64,
) {
    let mut slot = current.borrow_mut();
    // Publications arrive in order on one channel; each is taken exactly once.
    assert!(
        publication.seq > slot.seq,
        "publications are taken once, in order"
    );
    if publication.resync {
        hub.borrow_mut().resync();
    }
    hub.borrow_mut().publish(
        publication.view.clone(),
        publication.raft_term,
        &publication.events,
        now_ms,
    );
    *slot = publication;
}

/// Serves watch-stream requests; hands every other request back.
fn serve_watch(
    request: ShardRequest,
    hub: &Rc<RefCell<WatchHub>>,
    now_ms: u64,
) -> Option<ShardRequest> {
    match request {
        ShardRequest::WatchOpen {
            stream_id,
            responses,
        } => hub.borrow_mut().open(stream_id, responses),
        ShardRequest::Watch { stream_id, request } => {
            hub.borrow_mut().request(stream_id, request, now_ms)
        }
        ShardRequest::WatchClose { stream_id } => hub.borrow_mut().close(stream_id),
        other => return Some(other),
    }
    None
}

async fn serve(
    request: ShardRequest,
    current: &Rc<RefCell<Publication>>,
    sequencer: &flume::Sender<SequencerMsg>,
) {
    match request {
        ShardRequest::Read {
            op,
            serializable: true,
            reply,
        } => {
            let now = current.borrow();
            let _ = reply.send(read(&now.view, &op, now.raft_term));
        }
        ShardRequest::Read {
            op,
            serializable: false,
            reply,
        } => {
            // Linearizable: wait for a read index without holding up this core's other work.
            let sequencer = sequencer.clone();
            glommio::spawn_local(async move {
                let result = match read_index(&sequencer).await {
                    Ok((view, raft_term)) => read(&view, &op, raft_term),
                    Err(err) => Err(err),
                };
                let _ = reply.send(result);
            })
            .detach();
        }
        ShardRequest::Write {
            command,
            auth,
            reply,
        } => {
            // Waiting here when the sequencer's queue is full is the backpressure.
            if let Err(flume::SendError(SequencerMsg::Propose { reply, .. })) = sequencer
                .send_async(SequencerMsg::Propose {
                    command,
                    auth,
                    reply,
                })
                .await
            {
                let _ = reply.send(Err(stopped()));
            }
        }
        ShardRequest::WatchOpen { .. }
        | ShardRequest::Watch { .. }
        | ShardRequest::WatchClose { .. } => {
            debug_assert!(false, "watch requests are served by serve_watch");
        }
        ShardRequest::Status { reply } => {
            let _ = sequencer.send_async(SequencerMsg::Status { reply }).await;
        }
        ShardRequest::View { reply } => {
            let now = current.borrow();
            let _ = reply.send(Reply {
                body: now.view.clone(),
                raft_term: now.raft_term,
            });
        }
        ShardRequest::Maintenance(op) => {
            if let Err(flume::SendError(SequencerMsg::Maintenance(op))) =
                sequencer.send_async(SequencerMsg::Maintenance(op)).await
            {
                op.fail(stopped());
            }
        }
        ShardRequest::Cluster(op) => {
            if let Err(flume::SendError(SequencerMsg::Cluster(op))) =
                sequencer.send_async(SequencerMsg::Cluster(op)).await
            {
                op.fail(stopped());
            }
        }
        ShardRequest::Lease { op, reply } => {
            if let Err(flume::SendError(SequencerMsg::Lease { reply, .. })) = sequencer
                .send_async(SequencerMsg::Lease { op, reply })
                .await
            {
                let _ = reply.send(Err(stopped()));
            }
        }
    }
}

fn read(view: &ReadView, op: &ReadOp, raft_term: u64) -> Result<Reply<ReadResult>, KvError> {
    let body = match op {
        ReadOp::Range(request) => ReadResult::Range(view.range_answer(request)?),
        ReadOp::Txn(request) => ReadResult::Txn(view.txn_read_only(request)?),
    };
    Ok(Reply { body, raft_term })
}

async fn read_index(sequencer: &flume::Sender<SequencerMsg>) -> Result<(ReadView, u64), KvError> {
    let (reply, rx) = oneshot::channel();
    sequencer
        .send_async(SequencerMsg::ReadIndex { reply })
        .await
        .map_err(|_| stopped())?;
    rx.await.map_err(|_| stopped())?
}

fn stopped() -> KvError {
    KvError::Unavailable("etcdserver: server stopped".into())
}
