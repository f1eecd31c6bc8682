//! The Lock service (etcd's v3lockpb.Lock): Lock and Unlock.
//!
//! etcd serves Lock with clientv3/concurrency's Mutex on an orphaned session: the lock is
//! the key `name/<lease in hex>`, held by whoever's key under `name/` was created first.
//! A locker waits until every key created before its own is gone; the lease it names (or
//! a 60 s one granted for it) is what frees the lock if the holder disappears.

use std::sync::Arc;
use std::task::{Context, Poll};

use corekv_engine::pb::{PbDeleteRequest, PbTxnRequest};
use corekv_engine::request::Command;
use tonic::body::Body;
use tonic::Status;

use super::concurrency::{
    authorize, contenders_prefix, created_at, get_op, owner_op, prefix_end, put_op, range_kvs,
    session_key, Store, Undo,
};

/// The caller of a call, or why its token did not verify.
type Caller = Result<crate::auth::Caller, corekv_engine::KvError>;
use super::v3pb::{
    self, HttpFuture, Limits, LockRequest, LockResponse, UnlockRequest, UnlockResponse,
};
use crate::shard_api::ShardClient;

/// The Lock service, as tonic routes serve it.
#[derive(Clone)]
pub(crate) struct LockServer {
    service: Arc<LockService>,
    limits: Limits,
}

impl LockServer {
    pub(crate) fn new(shard: ShardClient, limits: Limits) -> LockServer {
        LockServer {
            service: Arc::new(LockService {
                store: Store {
                    shard,
                    caller: None,
                },
            }),
            limits,
        }
    }
}

impl tonic::server::NamedService for LockServer {
    const NAME: &'static str = "v3lockpb.Lock";
}

impl tower::Service<http::Request<Body>> for LockServer {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = HttpFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> HttpFuture {
        let caller = self
            .service
            .store
            .shard
            .cluster
            .auth
            .caller(req.headers(), req.extensions());
        let service = Arc::new(LockService {
            store: self.service.store.for_caller(&caller),
        });
        match req.uri().path() {
            "/v3lockpb.Lock/Lock" => {
                v3pb::unary(req, self.limits, move |r: LockRequest| async move {
                    service.lock(r, caller).await
                })
            }
            "/v3lockpb.Lock/Unlock" => {
                v3pb::unary(req, self.limits, move |r: UnlockRequest| async move {
                    authorize(&service.store.shard, &caller, &[], &[&r.key])?;
                    service.unlock(r).await
                })
            }
            _ => v3pb::unknown_method(),
        }
    }
}

struct LockService {
    store: Store,
}

impl LockService {
    /// Mutex.Lock: claim `name/<lease>` (or find the claim this lease already has), then
    /// wait for every older claim to go.
    async fn lock(&self, req: LockRequest, caller: Caller) -> Result<LockResponse, Status> {
        let prefix = contenders_prefix(&req.name);
        let contenders = (prefix.as_slice(), prefix_end(&prefix));
        // Read on the contenders before anything is written (a session lease included).
        authorize(
            &self.store.shard,
            &caller,
            &[(contenders.0, &contenders.1)],
            &[],
        )?;
        let lease = self.store.session_lease(req.lease).await?;
        let key = session_key(&prefix, lease);
        authorize(&self.store.shard, &caller, &[], &[&key])?;
        let claim = PbTxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put_op(&key, b"", lease), owner_op(&prefix)],
            failure: vec![get_op(&key), owner_op(&prefix)],
        };
        let resp = self.store.txn(claim).await?;
        let header = resp.header.unwrap_or_default();
        let my_rev = match resp.succeeded {
            true => header.revision,
            false => range_kvs(resp.responses.first())
                .first()
                .map_or(header.revision, |kv| kv.create_revision),
        };
        let owner = range_kvs(resp.responses.get(1))
            .first()
            .map(|kv| kv.create_revision);
        if owner.is_none() || owner == Some(my_rev) {
            return Ok(LockResponse {
                header: Some(header),
                key,
            });
        }
        // Waiting: if the client gives up (this future is dropped) or the wait fails, the
        // claim is deleted so it does not block the lockers behind it, as etcd's Unlock does.
        let delete = PbDeleteRequest {
            key: key.clone(),
            ..Default::default()
        };
        let undo = Undo::new(&self.store.shard, Command::DeleteRange(delete));
        match self.store.wait_deletes(&prefix, my_rev - 1).await {
            Ok(header) => {
                undo.disarm();
                Ok(LockResponse {
                    header: Some(header),
                    key,
                })
            }
            Err(err) => {
                undo.run().await;
                Err(err)
            }
        }
    }

    /// Unlock: a plain delete of the key Lock returned.
    async fn unlock(&self, req: UnlockRequest) -> Result<UnlockResponse, Status> {
        let resp = self.store.delete(&req.key).await?;
        Ok(UnlockResponse {
            header: resp.header,
        })
    }
}
