//! A core's shard: a glommio executor pinned to the core, serving the requests of the
//! connections that core owns. Serializable reads run here on the latest published view;
//! writes and read-index requests go to the sequencer over its bounded queue.

use std::cell::RefCell;
use std::rc::Rc;

use corekv_engine::KvError;
use corekv_engine::mvcc::ReadView;
use corekv_net::shard_api::{ReadOp, ReadResult, Reply, ShardRequest};
use glommio::{LocalExecutorBuilder, Placement};
use tokio::sync::oneshot;

use crate::sequencer::{Publication, SequencerMsg};

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
}

/// Starts the shard on its own pinned thread.
pub fn spawn(setup: ShardSetup) -> glommio::Result<glommio::ExecutorJoinHandle<()>, ()> {
    LocalExecutorBuilder::new(Placement::Fixed(setup.cpu))
        .name(&format!("shard-{}", setup.core))
        .io_memory(IO_MEMORY_BYTES)
        .spawn(move || run(setup))
}

async fn run(setup: ShardSetup) {
    let ShardSetup { requests, publications, sequencer, initial, .. } = setup;
    let current = Rc::new(RefCell::new(initial));
    let follower = {
        let current = current.clone();
        let publications = publications.clone();
        glommio::spawn_local(async move {
            while let Ok(publication) = publications.recv_async().await {
                adopt(&current, publication);
            }
        })
    };
    while let Ok(request) = requests.recv_async().await {
        // Publications are sent before writers are answered, so catching up here first
        // means a client always reads its own acknowledged writes on any core.
        while let Ok(publication) = publications.try_recv() {
            adopt(&current, publication);
        }
        serve(request, &current, &sequencer).await;
    }
    drop(follower);
}

fn adopt(current: &Rc<RefCell<Publication>>, publication: Publication) {
    let mut slot = current.borrow_mut();
    if publication.seq > slot.seq {
        *slot = publication;
    }
}

async fn serve(request: ShardRequest, current: &Rc<RefCell<Publication>>, sequencer: &flume::Sender<SequencerMsg>) {
    match request {
        ShardRequest::Read { op, serializable: true, reply } => {
            let now = current.borrow();
            let _ = reply.send(read(&now.view, &op, now.raft_term));
        }
        ShardRequest::Read { op, serializable: false, reply } => {
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
        ShardRequest::Write { command, reply } => {
            // Waiting here when the sequencer's queue is full is the backpressure.
            if let Err(flume::SendError(SequencerMsg::Propose { reply, .. })) =
                sequencer.send_async(SequencerMsg::Propose { command, reply }).await
            {
                let _ = reply.send(Err(stopped()));
            }
        }
        ShardRequest::Status { reply } => {
            let _ = sequencer.send_async(SequencerMsg::Status { reply }).await;
        }
    }
}

fn read(view: &ReadView, op: &ReadOp, raft_term: u64) -> Result<Reply<ReadResult>, KvError> {
    let body = match op {
        ReadOp::Range(request) => ReadResult::Range(view.range(request)?),
        ReadOp::Txn(request) => ReadResult::Txn(view.txn_read_only(request)?),
    };
    Ok(Reply { body, raft_term })
}

async fn read_index(sequencer: &flume::Sender<SequencerMsg>) -> Result<(ReadView, u64), KvError> {
    let (reply, rx) = oneshot::channel();
    sequencer.send_async(SequencerMsg::ReadIndex { reply }).await.map_err(|_| stopped())?;
    rx.await.map_err(|_| stopped())?
}

fn stopped() -> KvError {
    KvError::Unavailable("etcdserver: server stopped".into())
}
