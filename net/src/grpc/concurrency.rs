//! The pieces of etcd's client-side concurrency recipes (clientv3/concurrency: Session,
//! Mutex, Election) that etcd's Lock and Election servers are built on, run here straight
//! against the core's shard: the same transactions, reads and watches etcd's embedded
//! client sends, so every revision and header a client sees is the one etcd would give.
//!
//! Every wait here ends when the key it waits for goes away, when the shard stops, or when
//! the caller drops the future (the gRPC client cancelled or disconnected). Watches close
//! themselves and keys a waiter created are removed on every one of those exits.

use std::sync::atomic::{AtomicU64, Ordering};

use corekv_engine::mvcc::CommandResponse;
use corekv_engine::pb::*;
use corekv_engine::request::Command;
use corekv_engine::KvError;
use tonic::Status;

use super::fill_header;
use crate::shard_api::{ReadOp, ReadResult, Reply, ShardClient};

/// TTL of the lease etcd's server grants for a request that names no lease (lease 0):
/// clientv3/concurrency's default session TTL.
pub(crate) const SESSION_TTL_SECS: i64 = 60;

/// Responses queued from the shard for one internal watch: it follows one key (or one
/// prefix until its first put), so a handful is plenty; a slower reader only falls back
/// to catch-up from history on the shard.
const WATCH_QUEUED_BYTES_MAX: usize = 256 * 1024;

/// Internal watch streams take ids from the top half of the id space so they never meet
/// the Watch service's streams (which count up from 1) in the shard's stream table.
static NEXT_STREAM_ID: AtomicU64 = AtomicU64::new(1 << 63);

const SORT_ASCEND: i32 = 1;
const SORT_DESCEND: i32 = 2;
const SORT_BY_CREATE: i32 = 2;
const COMPARE_EQUAL: i32 = 0;
const EVENT_DELETE: i32 = 1;

/// The end of the range holding every key that starts with `prefix` (etcd's
/// GetPrefixRangeEnd): the prefix with its last byte below 0xff incremented.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes (or empty): every key from the prefix on.
    vec![0]
}

/// `prefix` + the lease ID in lowercase hex, as Go's `%x` prints an int64.
pub(crate) fn session_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    [prefix, hex.as_bytes()].concat()
}

/// `name` + "/": the prefix under which every contender's key lives.
pub(crate) fn contenders_prefix(name: &[u8]) -> Vec<u8> {
    [name, b"/"].concat()
}

/// Compare: the key's create revision equals `rev` (0: the key does not exist).
pub(crate) fn created_at(key: &[u8], rev: i64) -> PbCompare {
    PbCompare {
        result: COMPARE_EQUAL,
        target: PbCompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(PbTargetUnion::CreateRevision(rev)),
    }
}

pub(crate) fn put_op(key: &[u8], value: &[u8], lease: i64) -> PbTxnRequestOp {
    let put = PbPutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..Default::default()
    };
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestPut(put)),
    }
}

pub(crate) fn get_op(key: &[u8]) -> PbTxnRequestOp {
    let get = PbRangeRequest {
        key: key.to_vec(),
        ..Default::default()
    };
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestRange(get)),
    }
}

pub(crate) fn delete_op(key: &[u8]) -> PbTxnRequestOp {
    let delete = PbDeleteRequest {
        key: key.to_vec(),
        ..Default::default()
    };
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestDeleteRange(delete)),
    }
}

/// The oldest key under `prefix` by create revision (etcd's WithFirstCreate): the owner.
pub(crate) fn first_created(prefix: &[u8]) -> PbRangeRequest {
    PbRangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SORT_ASCEND,
        sort_target: SORT_BY_CREATE,
        ..Default::default()
    }
}

/// The owner lookup as a txn op (it rides in the claim txn: one round trip uncontended).
pub(crate) fn owner_op(prefix: &[u8]) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestRange(first_created(prefix))),
    }
}

/// The youngest key under `prefix` created at or before `max_rev` (etcd's WithLastCreate
/// plus WithMaxCreateRev): the waiter just ahead in line.
fn last_created_up_to(prefix: &[u8], max_rev: i64) -> PbRangeRequest {
    PbRangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SORT_DESCEND,
        sort_target: SORT_BY_CREATE,
        max_create_revision: max_rev,
        ..Default::default()
    }
}

/// The key-values a txn's range op found (none for any other op).
pub(crate) fn range_kvs(op: Option<&PbResponseOp>) -> &[PbKeyValue] {
    match op.and_then(|op| op.response.as_ref()) {
        Some(PbTxnOpResponse::ResponseRange(r)) => &r.kvs,
        _ => &[],
    }
}

/// The caller's permissions for a Lock or Election call, checked as etcd checks the KV
/// requests its embedded client makes on the caller's behalf: read on each of `reads`
/// (key, range_end) and write on each of `writes`. Errors keep their gRPC code
/// (PermissionDenied), as etcd's do.
pub(crate) fn authorize(
    shard: &ShardClient,
    caller: &Result<crate::auth::Caller, KvError>,
    reads: &[(&[u8], &[u8])],
    writes: &[&[u8]],
) -> Result<(), Status> {
    let auth = &shard.cluster.auth;
    let caller = caller.as_ref().map_err(|e| super::to_status(e.clone()))?;
    for (key, range_end) in reads {
        auth.check_range(caller, key, range_end)
            .map_err(super::to_status)?;
    }
    auth.check_keys_writable(caller, writes.iter().copied())
        .map_err(super::to_status)
}

/// etcd's Lock and Election servers reach the store through an embedded clientv3, which
/// turns every etcdserver error into a plain error value: gRPC then sends it as code
/// Unknown with etcd's text (e.g. "etcdserver: requested lease not found").
fn client_error(err: KvError) -> Status {
    Status::unknown(err.message().to_string())
}

fn mismatch() -> Status {
    Status::internal("corekv: applied response does not match the request")
}

/// The key space as etcd's embedded client sees it: linearizable reads, writes through
/// the log, headers filled as the KV service fills them.
#[derive(Clone)]
pub(crate) struct Store {
    pub shard: ShardClient,
    /// The client the writes are made for, re-checked when they are applied (etcd's
    /// embedded client carries the caller's token); `None` for the server's own.
    pub caller: Option<crate::auth::Caller>,
}

impl Store {
    /// The store for one client call, whose writes are applied as `caller`.
    pub(crate) fn for_caller(&self, caller: &Result<crate::auth::Caller, KvError>) -> Store {
        Store {
            shard: self.shard.clone(),
            caller: caller.as_ref().ok().cloned(),
        }
    }

    async fn write(&self, command: Command) -> Result<Reply<CommandResponse>, KvError> {
        match &self.caller {
            Some(caller) => self.shard.write_as(command, caller).await,
            None => self.shard.write(command).await,
        }
    }

    pub(crate) async fn txn(&self, request: PbTxnRequest) -> Result<PbTxnResponse, Status> {
        let reply = self
            .write(Command::Txn(request))
            .await
            .map_err(client_error)?;
        let CommandResponse::Txn(mut resp) = reply.body else {
            return Err(mismatch());
        };
        fill_header(&mut resp.header, &self.shard.cluster, 0, reply.raft_term);
        Ok(resp)
    }

    pub(crate) async fn range(&self, request: PbRangeRequest) -> Result<PbRangeResponse, Status> {
        let reply = self
            .shard
            .read(ReadOp::Range(request), false)
            .await
            .map_err(client_error)?;
        let ReadResult::Range(answer) = reply.body else {
            return Err(mismatch());
        };
        let mut resp = answer.to_pb();
        fill_header(&mut resp.header, &self.shard.cluster, 0, reply.raft_term);
        Ok(resp)
    }

    pub(crate) async fn delete(&self, key: &[u8]) -> Result<PbDeleteResponse, Status> {
        let request = PbDeleteRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let reply = self
            .write(Command::DeleteRange(request))
            .await
            .map_err(client_error)?;
        let CommandResponse::DeleteRange(mut resp) = reply.body else {
            return Err(mismatch());
        };
        fill_header(&mut resp.header, &self.shard.cluster, 0, reply.raft_term);
        Ok(resp)
    }

    /// The lease a request runs under: its own, or (for lease 0) a fresh one with the
    /// session TTL that nobody keeps alive, as etcd's server does via an orphaned session.
    pub(crate) async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let grant = PbLeaseGrantRequest {
            ttl: SESSION_TTL_SECS,
            id: 0,
        };
        let reply = self
            .shard
            .write(Command::LeaseGrant(grant))
            .await
            .map_err(client_error)?;
        match reply.body {
            CommandResponse::LeaseGrant(resp) => Ok(resp.id),
            _ => Err(mismatch()),
        }
    }

    /// Waits until no key under `prefix` created at or before `max_rev` is left (etcd's
    /// waitDeletes): watches the youngest such key until it is deleted, then looks again.
    /// Answers the header of the read that found none.
    pub(crate) async fn wait_deletes(
        &self,
        prefix: &[u8],
        max_rev: i64,
    ) -> Result<PbResponseHeader, Status> {
        loop {
            let resp = self.range(last_created_up_to(prefix, max_rev)).await?;
            let header = resp.header.unwrap_or_default();
            let Some(ahead) = resp.kvs.first() else {
                return Ok(header);
            };
            self.wait_delete(&ahead.key, header.revision).await?;
        }
    }

    /// Waits for a delete of `key` at or after `from_rev`. A watch cancelled by compaction
    /// also ends the wait: the caller reads again and sees whether the key is still there.
    async fn wait_delete(&self, key: &[u8], from_rev: i64) -> Result<(), Status> {
        let mut watch = KeyWatch::open(&self.shard, key.to_vec(), Vec::new(), from_rev).await?;
        loop {
            match watch.next().await? {
                Watched::Events(_, events) if events.iter().any(|e| e.r#type == EVENT_DELETE) => {
                    return Ok(())
                }
                Watched::Events(..) => {}
                Watched::Compacted => return Ok(()),
            }
        }
    }
}

/// What an internal watch delivers.
pub(crate) enum Watched {
    /// Events, with the header of the response that carried them.
    Events(PbResponseHeader, Vec<PbEvent>),
    /// The watch's start was compacted away; the watch is over.
    Compacted,
}

/// One watcher on its own watch stream of this core's shard. Dropping it closes the stream.
pub(crate) struct KeyWatch {
    shard: ShardClient,
    stream_id: u64,
    responses: crate::shard_api::WatchReceiver,
}

impl KeyWatch {
    /// Watches `key` (to `range_end`, as etcd ranges) from revision `start`.
    pub(crate) async fn open(
        shard: &ShardClient,
        key: Vec<u8>,
        range_end: Vec<u8>,
        start: i64,
    ) -> Result<KeyWatch, Status> {
        let stream_id = NEXT_STREAM_ID.fetch_add(1, Ordering::Relaxed);
        let (tx, responses) = crate::shard_api::watch_channel(WATCH_QUEUED_BYTES_MAX);
        shard
            .watch_open(stream_id, tx)
            .await
            .map_err(client_error)?;
        // Built before the create request goes out, so that a failure below still closes.
        let watch = KeyWatch {
            shard: shard.clone(),
            stream_id,
            responses,
        };
        let mut create = PbWatchRequestUnion::CreateRequest(Default::default());
        if let PbWatchRequestUnion::CreateRequest(c) = &mut create {
            c.key = key;
            c.range_end = range_end;
            c.start_revision = start;
        }
        let request = PbWatchRequest {
            request_union: Some(create),
        };
        shard
            .watch_request(stream_id, request)
            .await
            .map_err(client_error)?;
        Ok(watch)
    }

    /// The next events (or the end by compaction). Waits as long as nothing happens.
    pub(crate) async fn next(&mut self) -> Result<Watched, Status> {
        loop {
            let resp = self
                .responses
                .recv_async()
                .await
                .map_err(|_| client_error(watch_lost()))?
                .into_response();
            if resp.canceled {
                if resp.compact_revision > 0 {
                    return Ok(Watched::Compacted);
                }
                return Err(client_error(watch_lost()));
            }
            if resp.events.is_empty() {
                continue; // the creation notice, or a progress notice
            }
            let mut header = resp.header;
            fill_header(&mut header, &self.shard.cluster, 0, 0);
            return Ok(Watched::Events(header.unwrap_or_default(), resp.events));
        }
    }
}

/// The shard closed the watch (it is stopping, or refused the watch).
fn watch_lost() -> KvError {
    KvError::Unavailable("etcdserver: server stopped".to_string())
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        let (shard, stream_id) = (self.shard.clone(), self.stream_id);
        // Without a runtime (never in the server) the shard still drops the stream the
        // first time it finds the receiver gone.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = shard.watch_close(stream_id).await;
            });
        }
    }
}

/// A write that undoes a waiter's claim (its key) unless disarmed. Dropped armed (the
/// client gave up while the request waited), it is proposed in the background; on an
/// error path, call [`Undo::run`] so it is applied before the error is answered, as etcd
/// does.
pub(crate) struct Undo {
    shard: Option<ShardClient>,
    command: Option<Command>,
}

impl Undo {
    pub(crate) fn new(shard: &ShardClient, command: Command) -> Undo {
        Undo {
            shard: Some(shard.clone()),
            command: Some(command),
        }
    }

    /// The claim stands: nothing to undo.
    pub(crate) fn disarm(mut self) {
        self.shard = None;
    }

    /// Undoes now and waits for it (its own failure is not the caller's error).
    pub(crate) async fn run(mut self) {
        if let (Some(shard), Some(command)) = (self.shard.take(), self.command.take()) {
            let _ = shard.write(command).await;
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        let (Some(shard), Some(command)) = (self.shard.take(), self.command.take()) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = shard.write(command).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_follow_etcd() {
        assert_eq!(prefix_end(b"lock/"), b"lock0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn session_keys_print_the_lease_like_go() {
        assert_eq!(
            session_key(b"m/", 0x694d7e5a1c2b3f01),
            b"m/694d7e5a1c2b3f01".to_vec()
        );
        assert_eq!(session_key(b"m/", 255), b"m/ff".to_vec());
        assert_eq!(session_key(b"m/", -1), b"m/-1".to_vec());
    }
}
