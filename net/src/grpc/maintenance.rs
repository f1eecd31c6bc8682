//! The Maintenance service: Alarm, Status, Defragment, Hash, HashKV, Snapshot.
//!
//! - Alarm goes through the log (GET included), as in etcd 3.4; its response has no header.
//! - Hash, Defragment and Snapshot are done by the revision store's writer, ordered after
//!   every change applied before the request. Defragment is online: reads and writes go on
//!   while it runs (etcd's blocks the member).
//! - HashKV hashes the core's latest view on a blocking thread, so the core keeps serving.
//! - Snapshot streams a compacted image of the store in 32 KiB chunks from an unlinked
//!   temporary file, then the image's SHA-256, exactly as etcd frames its bbolt snapshot.
//!   The image is a corekv store file (`docs/storage-format.md`), not a bbolt file.

use std::os::unix::fs::FileExt;

use corekv_engine::mvcc::alarm;
use corekv_engine::mvcc::CommandResponse;
use corekv_engine::pb::*;
use corekv_engine::request::Command;
use corekv_engine::sha256::Sha256;
use corekv_engine::KvError;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::{fill_header, to_status, unimplemented, Timer};
use crate::metrics::Method;
use crate::shard_api::{ShardClient, SnapshotImage};

/// Bytes of image per SnapshotResponse (etcd's 32 KiB).
pub const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// Chunks queued towards a snapshot stream's client: the stream's memory bound.
const SNAPSHOT_CHUNKS_QUEUED_MAX: usize = 4;

pub(crate) struct MaintenanceService {
    shard: ShardClient,
}

impl MaintenanceService {
    pub(crate) fn new(shard: ShardClient) -> MaintenanceService {
        MaintenanceService { shard }
    }
}

impl MaintenanceService {
    /// etcd 3.4's `authMaintenanceServer`: root only, with the auth package's texts.
    fn admin_only<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let auth = &self.shard.cluster.auth;
        auth.check_maintenance_admin(auth.caller_of(request))
            .map_err(to_status)
    }
}

/// etcd's Status `errors`: no leader, then every alarm as `AlarmMember.String()`.
pub(crate) fn status_errors(leader: u64, alarms: &[(u64, i32)]) -> Vec<String> {
    let mut errors = Vec::new();
    if leader == 0 {
        errors.push("etcdserver: no leader".to_string());
    }
    errors.extend(
        alarms
            .iter()
            .map(|(member, kind)| alarm::describe(*member, *kind)),
    );
    errors
}

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        let timer = Timer::start(Method::Alarm);
        let result = async {
            let reply = self
                .shard
                .write(Command::Alarm(request.into_inner()))
                .await
                .map_err(to_status)?;
            match reply.body {
                // etcd 3.4 answers alarms without a header.
                CommandResponse::Alarm(resp) => Ok(Response::new(resp)),
                _ => Err(Status::internal(
                    "corekv: applied response does not match the request",
                )),
            }
        }
        .await;
        timer.finish(result)
    }

    async fn status(
        &self,
        _: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        let timer = Timer::start(Method::Status);
        let result = async {
            let s = self.shard.status().await.map_err(to_status)?;
            let mut resp = PbStatusResponse {
                version: crate::ETCD_COMPAT_VERSION.to_string(),
                db_size: s.db_size_bytes,
                leader: s.leader,
                raft_index: s.raft_index,
                raft_term: s.raft_term,
                raft_applied_index: s.raft_applied_index,
                errors: status_errors(s.leader, &s.alarms),
                db_size_in_use: s.db_size_in_use_bytes,
                is_learner: s.is_learner,
                db_size_quota: self.shard.cluster.quota_backend_bytes as i64,
                ..Default::default()
            };
            fill_header(
                &mut resp.header,
                &self.shard.cluster,
                s.revision,
                s.raft_term,
            );
            Ok(Response::new(resp))
        }
        .await;
        timer.finish(result)
    }

    async fn defragment(
        &self,
        request: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        let timer = Timer::start(Method::Defragment);
        let result = async {
            self.admin_only(&request)?;
            // The store writer logs the sizes before and after.
            self.shard.defragment().await.map_err(to_status)?;
            // etcd answers an empty response, without a header.
            Ok(Response::new(PbDefragmentResponse::default()))
        }
        .await;
        timer.finish(result)
    }

    async fn hash(
        &self,
        request: Request<PbHashRequest>,
    ) -> Result<Response<PbHashResponse>, Status> {
        let timer = Timer::start(Method::Hash);
        let result = async {
            self.admin_only(&request)?;
            let h = self.shard.store_hash().await.map_err(to_status)?;
            let term = self.shard.status().await.map_err(to_status)?.raft_term;
            let mut resp = PbHashResponse {
                header: None,
                hash: h.hash,
            };
            fill_header(&mut resp.header, &self.shard.cluster, h.revision, term);
            Ok(Response::new(resp))
        }
        .await;
        timer.finish(result)
    }

    async fn hash_kv(
        &self,
        request: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        let timer = Timer::start(Method::HashKv);
        let result = async {
            self.admin_only(&request)?;
            let revision = request.into_inner().revision;
            let view = self.shard.view().await.map_err(to_status)?;
            let term = view.raft_term;
            // A whole-history walk: off the core's network thread.
            let h = tokio::task::spawn_blocking(move || view.body.hash_kv(revision))
                .await
                .map_err(|e| Status::internal(format!("corekv: HashKV failed: {e}")))?
                .map_err(to_status)?;
            // hash_revision is etcd 3.5's; 3.4 leaves it 0.
            let mut resp = PbHashKvResponse {
                hash: h.hash,
                compact_revision: h.compact_revision,
                ..Default::default()
            };
            fill_header(&mut resp.header, &self.shard.cluster, h.revision, term);
            Ok(Response::new(resp))
        }
        .await;
        timer.finish(result)
    }

    type SnapshotStream = BoxStream<PbSnapshotResponse>;

    async fn snapshot(
        &self,
        request: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let timer = Timer::start(Method::Snapshot);
        let result = async {
            self.admin_only(&request)?;
            let image = self.shard.snapshot().await.map_err(to_status)?;
            log::info!(
                "sending a snapshot of {} bytes at revision {}",
                image.size_bytes,
                image.revision
            );
            let (chunks, stream) = flume::bounded(SNAPSHOT_CHUNKS_QUEUED_MAX);
            std::thread::Builder::new()
                .name("snapshot-send".into())
                .spawn(move || send_image(image, &chunks))
                .map_err(|e| {
                    Status::internal(format!("corekv: cannot start the snapshot sender: {e}"))
                })?;
            let stream: Self::SnapshotStream = Box::pin(stream.into_stream());
            Ok(Response::new(stream))
        }
        .await;
        timer.finish(result)
    }

    async fn move_leader(
        &self,
        request: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        self.admin_only(&request)?;
        let timer = Timer::start(Method::MoveLeader);
        let result = async {
            let target = request.into_inner().target_id;
            self.shard
                .cluster(|reply| crate::shard_api::ClusterOp::MoveLeader { target, reply })
                .await
                .map_err(super::to_status)?;
            let status = self.shard.status().await.map_err(super::to_status)?;
            let mut resp = PbMoveLeaderResponse::default();
            fill_header(
                &mut resp.header,
                &self.shard.cluster,
                status.revision,
                status.raft_term,
            );
            Ok(Response::new(resp))
        }
        .await;
        timer.finish(result)
    }

    async fn downgrade(
        &self,
        _: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(unimplemented("Maintenance.Downgrade"))
    }
}

/// Streams the image in chunks, then its SHA-256, as etcd's Snapshot handler does. Stops
/// early when the client goes away; the image file vanishes when `image` is dropped.
fn send_image(image: SnapshotImage, chunks: &flume::Sender<Result<PbSnapshotResponse, Status>>) {
    let mut sha = Sha256::new();
    let mut sent = 0u64;
    while sent < image.size_bytes {
        let len = (image.size_bytes - sent).min(SNAPSHOT_CHUNK_BYTES as u64) as usize;
        let mut blob = vec![0u8; len];
        if let Err(err) = image.file.read_exact_at(&mut blob, sent) {
            log::error!("snapshot: cannot read the image: {err}");
            let _ = chunks.send(Err(to_status(KvError::Unavailable(format!(
                "etcdserver: snapshot failed: {err}"
            )))));
            return;
        }
        sha.update(&blob);
        sent += len as u64;
        let resp = PbSnapshotResponse {
            header: None,
            remaining_bytes: image.size_bytes - sent,
            blob,
            version: String::new(),
        };
        if chunks.send(Ok(resp)).is_err() {
            log::info!(
                "snapshot: the client went away after {sent} of {} bytes",
                image.size_bytes
            );
            return;
        }
    }
    let digest = PbSnapshotResponse {
        header: None,
        remaining_bytes: 0,
        blob: sha.finish().to_vec(),
        version: String::new(),
    };
    let _ = chunks.send(Ok(digest));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_are_etcds() {
        assert!(status_errors(7, &[]).is_empty());
        assert_eq!(
            status_errors(0, &[]),
            vec!["etcdserver: no leader".to_string()]
        );
        assert_eq!(
            status_errors(7, &[(7, alarm::ALARM_NOSPACE), (9, alarm::ALARM_CORRUPT)]),
            vec![
                "memberID:7 alarm:NOSPACE ".to_string(),
                "memberID:9 alarm:CORRUPT ".to_string()
            ]
        );
    }
}
