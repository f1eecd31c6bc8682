//! The Election service (etcd's v3electionpb.Election): Campaign, Proclaim, Leader,
//! Observe, Resign.
//!
//! etcd serves it with clientv3/concurrency's Election: a candidate's key is
//! `name/<lease in hex>` holding its value, the leader is the key under `name/` created
//! first, and the leader's (key, create revision) pair is what Proclaim and Resign check,
//! so a leader that lost its key cannot act on a key created again later.

use std::sync::Arc;
use std::task::{Context, Poll};

use corekv_engine::pb::{PbKeyValue, PbResponseHeader, PbTxnRequest};
use corekv_engine::request::Command;
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::concurrency::{
    authorize, contenders_prefix, created_at, delete_op, first_created, get_op, prefix_end, put_op,
    range_kvs, session_key, KeyWatch, Store, Undo, Watched,
};
use super::v3pb::{
    self, CampaignRequest, CampaignResponse, HttpFuture, LeaderKey, LeaderRequest, LeaderResponse,
    Limits, ProclaimRequest, ProclaimResponse, ResignRequest, ResignResponse,
};
use crate::shard_api::ShardClient;

/// Leader updates queued towards one Observe stream. A client that stops reading holds
/// its observer back (it waits to send); the shard's watch falls back to catch-up.
const OBSERVE_QUEUED_MAX: usize = 16;

const EVENT_PUT: i32 = 0;
const EVENT_DELETE: i32 = 1;

/// etcd's concurrency.ErrElectionNotLeader.
fn not_leader() -> Status {
    Status::unknown("election: not leader")
}

/// etcd's concurrency.ErrElectionNoLeader.
fn no_leader() -> Status {
    Status::unknown("election: no leader")
}

/// etcd's v3election.ErrMissingLeaderKey.
fn missing_leader() -> Status {
    Status::unknown("\"leader\" field must be provided")
}

/// The Election service, as tonic routes serve it.
#[derive(Clone)]
pub(crate) struct ElectionServer {
    service: Arc<ElectionService>,
    limits: Limits,
}

impl ElectionServer {
    pub(crate) fn new(shard: ShardClient, limits: Limits) -> ElectionServer {
        ElectionServer {
            service: Arc::new(ElectionService {
                store: Store {
                    shard,
                    caller: None,
                },
            }),
            limits,
        }
    }
}

impl tonic::server::NamedService for ElectionServer {
    const NAME: &'static str = "v3electionpb.Election";
}

impl tower::Service<http::Request<Body>> for ElectionServer {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = HttpFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> HttpFuture {
        let limits = self.limits;
        let caller = self
            .service
            .store
            .shard
            .cluster
            .auth
            .caller(req.headers(), req.extensions());
        let s = Arc::new(ElectionService {
            store: self.service.store.for_caller(&caller),
        });
        // The keys each call reads and writes, checked as etcd checks its embedded
        // client's requests (Campaign's own key is known only once its lease is).
        let contenders = |name: &[u8]| {
            let prefix = contenders_prefix(name);
            let end = prefix_end(&prefix);
            (prefix, end)
        };
        match req.uri().path() {
            "/v3electionpb.Election/Campaign" => {
                v3pb::unary(req, limits, move |r: CampaignRequest| async move {
                    let (prefix, end) = contenders(&r.name);
                    authorize(&s.store.shard, &caller, &[(&prefix, &end)], &[])?;
                    s.campaign(r, caller).await
                })
            }
            "/v3electionpb.Election/Proclaim" => {
                v3pb::unary(req, limits, move |r: ProclaimRequest| async move {
                    let key = r.leader.as_ref().map(|l| l.key.clone()).unwrap_or_default();
                    authorize(&s.store.shard, &caller, &[(&key, &[])], &[&key])?;
                    s.proclaim(r).await
                })
            }
            "/v3electionpb.Election/Leader" => {
                v3pb::unary(req, limits, move |r: LeaderRequest| async move {
                    let (prefix, end) = contenders(&r.name);
                    authorize(&s.store.shard, &caller, &[(&prefix, &end)], &[])?;
                    s.leader(r).await
                })
            }
            "/v3electionpb.Election/Observe" => {
                v3pb::server_streaming(req, limits, move |r: LeaderRequest| async move {
                    let (prefix, end) = contenders(&r.name);
                    authorize(&s.store.shard, &caller, &[(&prefix, &end)], &[])?;
                    Ok(s.observe(r))
                })
            }
            "/v3electionpb.Election/Resign" => {
                v3pb::unary(req, limits, move |r: ResignRequest| async move {
                    let key = r.leader.as_ref().map(|l| l.key.clone()).unwrap_or_default();
                    authorize(&s.store.shard, &caller, &[(&key, &[])], &[&key])?;
                    s.resign(r).await
                })
            }
            _ => v3pb::unknown_method(),
        }
    }
}

struct ElectionService {
    store: Store,
}

/// The txn that gives up leadership: delete the key only if it is still the same claim.
fn resign_txn(key: &[u8], rev: i64) -> PbTxnRequest {
    PbTxnRequest {
        compare: vec![created_at(key, rev)],
        success: vec![delete_op(key)],
        failure: Vec::new(),
    }
}

impl ElectionService {
    /// Election.Campaign: put the candidate's key (or find the one this lease already has,
    /// proclaiming the new value on it), then wait until every older candidate is gone.
    async fn campaign(
        &self,
        req: CampaignRequest,
        caller: Result<crate::auth::Caller, corekv_engine::KvError>,
    ) -> Result<CampaignResponse, Status> {
        let lease = self.store.session_lease(req.lease).await?;
        let prefix = contenders_prefix(&req.name);
        let key = session_key(&prefix, lease);
        authorize(&self.store.shard, &caller, &[], &[&key])?;
        let claim = PbTxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put_op(&key, &req.value, lease)],
            failure: vec![get_op(&key)],
        };
        let resp = self.store.txn(claim).await?;
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        let mut leader = LeaderKey {
            name: req.name,
            key,
            rev,
            lease,
        };
        if !resp.succeeded {
            self.rejoin(&mut leader, range_kvs(resp.responses.first()), &req.value)
                .await?;
        }
        // A client that gives up while waiting resigns, as etcd does on a cancelled
        // context; other failures leave the candidacy in place, as etcd does too.
        let undo = Undo::new(
            &self.store.shard,
            Command::Txn(resign_txn(&leader.key, leader.rev)),
        );
        let waited = self.store.wait_deletes(&prefix, leader.rev - 1).await;
        undo.disarm();
        waited?;
        Ok(CampaignResponse {
            header: resp.header,
            leader: Some(leader),
        })
    }

    /// A re-campaign on a key this lease already holds: keep its create revision and
    /// proclaim the new value if it differs (resigning if that fails).
    async fn rejoin(
        &self,
        leader: &mut LeaderKey,
        existing: &[PbKeyValue],
        value: &[u8],
    ) -> Result<(), Status> {
        let Some(kv) = existing.first() else {
            return Ok(());
        };
        leader.rev = kv.create_revision;
        if kv.value == value {
            return Ok(());
        }
        if let Err(err) = self.proclaim_as(leader, value).await {
            let _ = self.store.txn(resign_txn(&leader.key, leader.rev)).await;
            return Err(err);
        }
        Ok(())
    }

    /// Election.Proclaim: a new value on the leader's key, only if it is still that claim.
    async fn proclaim(&self, req: ProclaimRequest) -> Result<ProclaimResponse, Status> {
        let mut leader = req.leader.ok_or_else(missing_leader)?;
        // etcd resumes the election on a session for the named lease; lease 0 gets a fresh
        // session lease, which the proclaimed value is then attached to.
        leader.lease = self.store.session_lease(leader.lease).await?;
        let header = self.proclaim_as(&leader, &req.value).await?;
        Ok(ProclaimResponse {
            header: Some(header),
        })
    }

    async fn proclaim_as(
        &self,
        leader: &LeaderKey,
        value: &[u8],
    ) -> Result<PbResponseHeader, Status> {
        let txn = PbTxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![put_op(&leader.key, value, leader.lease)],
            failure: Vec::new(),
        };
        let resp = self.store.txn(txn).await?;
        if !resp.succeeded {
            return Err(not_leader());
        }
        Ok(resp.header.unwrap_or_default())
    }

    /// Election.Leader: the oldest candidate's key-value.
    async fn leader(&self, req: LeaderRequest) -> Result<LeaderResponse, Status> {
        let resp = self
            .store
            .range(first_created(&contenders_prefix(&req.name)))
            .await?;
        let kv = resp.kvs.into_iter().next().ok_or_else(no_leader)?;
        Ok(LeaderResponse {
            header: resp.header,
            kv: Some(kv),
        })
    }

    /// Election.Resign: delete the leader's key if it is still that claim. A stale claim is
    /// not an error (etcd answers the txn's header either way).
    async fn resign(&self, req: ResignRequest) -> Result<ResignResponse, Status> {
        let leader = req.leader.ok_or_else(missing_leader)?;
        let resp = self.store.txn(resign_txn(&leader.key, leader.rev)).await?;
        Ok(ResignResponse {
            header: resp.header,
        })
    }

    /// Election.Observe: a task follows the leadership and feeds the stream; it ends when
    /// the client goes away (the stream is dropped) or the shard stops.
    fn observe(&self, req: LeaderRequest) -> ReceiverStream<Result<LeaderResponse, Status>> {
        let (tx, rx) = mpsc::channel(OBSERVE_QUEUED_MAX);
        let observer = Observer {
            store: self.store.clone(),
            prefix: contenders_prefix(&req.name),
        };
        tokio::spawn(async move {
            tokio::select! {
                _ = tx.closed() => {}
                _ = observer.run(&tx) => {}
            }
        });
        ReceiverStream::new(rx)
    }
}

type Updates = mpsc::Sender<Result<LeaderResponse, Status>>;

/// etcd's Election.observe loop: report the leader, follow its key's puts until it is
/// deleted, then look for the next leader.
struct Observer {
    store: Store,
    prefix: Vec<u8>,
}

/// The observer stops (the stream ends, as etcd's does when its loop gives up).
struct Stop;

impl Observer {
    async fn run(&self, tx: &Updates) {
        while let Ok((header, kv)) = self.current_leader().await {
            let from = header.revision + 1;
            let key = kv.key.clone();
            if send(tx, header, kv).await.is_err() || self.follow(&key, from, tx).await.is_err() {
                return;
            }
        }
    }

    /// The leader now, or (if none) the first candidate to appear, with etcd's header for it.
    async fn current_leader(&self) -> Result<(PbResponseHeader, PbKeyValue), Stop> {
        loop {
            let resp = self
                .store
                .range(first_created(&self.prefix))
                .await
                .map_err(|_| Stop)?;
            let header = resp.header.unwrap_or_default();
            if let Some(kv) = resp.kvs.into_iter().next() {
                return Ok((header, kv));
            }
            if let Some(found) = self.first_put(header.revision).await? {
                return Ok(found);
            }
            // The watch's start was compacted away: read again.
        }
    }

    /// The first put under the prefix from revision `from`; `None` if compaction ended the watch.
    async fn first_put(&self, from: i64) -> Result<Option<(PbResponseHeader, PbKeyValue)>, Stop> {
        let range_end = prefix_end(&self.prefix);
        let mut watch = KeyWatch::open(&self.store.shard, self.prefix.clone(), range_end, from)
            .await
            .map_err(|_| Stop)?;
        loop {
            let Watched::Events(mut header, events) = watch.next().await.map_err(|_| Stop)? else {
                return Ok(None);
            };
            if let Some(kv) = events
                .into_iter()
                .find(|e| e.r#type == EVENT_PUT)
                .and_then(|e| e.kv)
            {
                // The response may hold several puts; etcd reports the one it takes.
                header.revision = kv.mod_revision;
                return Ok(Some((header, kv)));
            }
        }
    }

    /// Reports every put of the leader's `key` from revision `from` until it is deleted.
    async fn follow(&self, key: &[u8], from: i64, tx: &Updates) -> Result<(), Stop> {
        let mut watch = KeyWatch::open(&self.store.shard, key.to_vec(), Vec::new(), from)
            .await
            .map_err(|_| Stop)?;
        loop {
            // Compaction under the watch: look the leader up afresh.
            let Watched::Events(header, events) = watch.next().await.map_err(|_| Stop)? else {
                return Ok(());
            };
            for event in events {
                if event.r#type == EVENT_DELETE {
                    return Ok(());
                }
                send(tx, header, event.kv.unwrap_or_default()).await?;
            }
        }
    }
}

async fn send(tx: &Updates, header: PbResponseHeader, kv: PbKeyValue) -> Result<(), Stop> {
    tx.send(Ok(LeaderResponse {
        header: Some(header),
        kv: Some(kv),
    }))
    .await
    .map_err(|_| Stop)
}
