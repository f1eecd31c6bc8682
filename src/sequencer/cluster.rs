//! The sequencer's cluster duties: raft messages to and from peers, snapshots (sending the
//! store image to a follower that is too far behind; installing one from the leader),
//! membership changes (Cluster service) with etcd's safety checks, publishing this
//! member's attributes, leader transfer, and the leadership metrics.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use corekv_engine::membership::{ConfChangeKind, Member};
use corekv_engine::mvcc::CommandResponse;
use corekv_engine::request::{
    Command, InternalRequest, MemberAttributesRequest, MemberConfRequest, MemberUpdateRequest,
};
use corekv_engine::wal::RecordKind;
use corekv_engine::{KvError, StatusCode};
use corekv_net::metrics;
use corekv_net::peer::{PeerEvent, PeerTransport};
use corekv_net::shard_api::{
    ClusterAnswer, ClusterOp, ClusterReply, LeaseResult, MaintenanceOp, Reply,
};
use corekv_raft::{
    codec, ConfChangeSingle, ConfChangeType, ConfChangeV2, Message, MessageType, Snapshot,
};
use prost::Message as _;
use tokio::sync::oneshot;

use super::Sequencer;

/// How long this member must have been connected to a peer for the peer to count as
/// healthy in a membership change (etcd's HealthInterval).
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// How often this member retries publishing its attributes until they are applied.
const PUBLISH_RETRY: Duration = Duration::from_secs(2);
/// etcd allows one learner at a time.
const LEARNERS_MAX: usize = 1;
/// A learner may be promoted once it has at least this share of the leader's log.
const LEARNER_READY_PERCENT: u64 = 90;
/// Membership changes waiting for their entry to apply.
const CLUSTER_WAITS_MAX: usize = 64;

/// What this member tells the cluster about itself once it runs.
#[derive(Debug, Clone, Default)]
pub struct SelfAttributes {
    pub name: String,
    pub client_urls: Vec<String>,
}

/// A membership change waiting for its entry to apply.
struct ClusterWait {
    rx: oneshot::Receiver<Result<Reply<CommandResponse>, KvError>>,
    member_id: u64,
    reply: ClusterReply,
}

/// Cluster state kept by the sequencer.
#[derive(Default)]
pub(super) struct ClusterState {
    peers: Option<PeerTransport>,
    attributes: SelfAttributes,
    /// When this member last proposed its attributes.
    published_at: Option<Instant>,
    /// The applied membership showed this member's attributes: nothing left to publish.
    published: bool,
    /// This member was removed from the cluster: it serves nothing any more.
    removed: bool,
    /// The next publication must make every watcher catch up from history.
    pub resync_watchers: bool,
    /// Snapshot files received and stepped but not installed yet.
    received: Vec<PathBuf>,
    /// Peers a snapshot is being sent to.
    sending: HashSet<u64>,
    waits: Vec<ClusterWait>,
    /// A leader transfer in progress: (target, deadline, reply).
    transfer: Option<(u64, Instant, ClusterReply)>,
    /// The leader seen at the last turn (for the leader-change metric).
    leader_seen: u64,
}

impl ClusterState {
    /// The error every request gets once this member was removed.
    pub(super) fn refusal(&self) -> Option<KvError> {
        self.removed.then(removed_error)
    }
}

fn removed_error() -> KvError {
    KvError::Cluster(
        StatusCode::FailedPrecondition,
        "etcdserver: the member has been permanently removed from the cluster".into(),
    )
}

fn not_enough_started() -> KvError {
    KvError::Cluster(
        StatusCode::FailedPrecondition,
        "etcdserver: re-configuration failed due to not enough started members".into(),
    )
}

impl Sequencer {
    /// Connects the sequencer to its peers and says what this member publishes about itself.
    pub fn with_peers(mut self, peers: Option<PeerTransport>, attributes: SelfAttributes) -> Self {
        self.cluster.peers = peers;
        self.cluster.attributes = attributes;
        self
    }

    /// At start: the peers to talk to are the members the store holds.
    pub(super) fn cluster_started(&mut self) {
        self.membership_changed();
    }

    /// Tells the transport about the current membership.
    pub(super) fn membership_changed(&mut self) {
        let view = self.store.view();
        let ms = view.membership();
        let members: Vec<Member> = ms.members().cloned().collect();
        let removed: Vec<u64> = ms.removed().collect();
        if let Some(peers) = &mut self.cluster.peers {
            peers.set_members(&members, &removed);
        }
        if ms.is_removed(self.member_id) && !self.cluster.removed {
            self.cluster.removed = true;
            log::error!(
                "this member ({:x}) has been permanently removed from the cluster; it stops serving",
                self.member_id
            );
            self.fail_all_waiting(removed_error());
        }
    }

    /// Sends raft messages; snapshots go with a store image, on their own connection.
    pub(super) fn send_messages(&mut self, messages: Vec<Message>) {
        if messages.is_empty() || self.cluster.removed {
            return;
        }
        let (snapshots, rest): (Vec<Message>, Vec<Message>) = messages
            .into_iter()
            .partition(|m| m.get_msg_type() == MessageType::MsgSnapshot);
        let Some(peers) = &self.cluster.peers else {
            return;
        };
        for id in peers.send(rest) {
            self.raft.report_unreachable(id);
        }
        for message in snapshots {
            self.send_snapshot(message);
        }
    }

    fn send_snapshot(&mut self, message: Message) {
        let to = message.to;
        if !self.cluster.sending.insert(to) {
            // raft asks again only after a report; one image per peer at a time.
            return;
        }
        log::info!(
            "peer {to:x} is too far behind (needs index {}); sending it a snapshot",
            message
                .snapshot
                .as_ref()
                .and_then(|s| s.metadata.as_ref())
                .map_or(0, |m| m.index)
        );
        // Everything applied goes to the store first, so the image is at or past the
        // index raft asked for.
        self.hand_off_changes(true);
        let (reply, rx) = oneshot::channel();
        match &self.durability {
            Some(d) => d.link.maintain(MaintenanceOp::Snapshot { reply }),
            None => drop(reply),
        }
        if let Some(peers) = &self.cluster.peers {
            peers.send_snapshot(message, rx);
        }
    }

    /// Installs a snapshot from the leader before the cycle that carries it is persisted:
    /// the received image replaces the store, the key space is reloaded from it, and the
    /// WAL records that the log now starts after it.
    pub(super) fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let meta = snapshot.metadata.clone().unwrap_or_default();
        let path = PathBuf::from(
            String::from_utf8(snapshot.data.clone())
                .map_err(|_| "snapshot data names no file".to_string())?,
        );
        let Some(durability) = &self.durability else {
            return Err(
                "etcdserver: this member has no revision store to install a snapshot into".into(),
            );
        };
        // What was applied but not handed over is older than the image: drop it.
        let _ = self.store.take_changes();
        let (store, stored) = durability.link.install(path.clone())?;
        self.cluster.received.retain(|p| *p != path);
        if stored.consistent_index < meta.index {
            return Err(format!(
                "snapshot image holds index {} but raft expected at least {}",
                stored.consistent_index, meta.index
            ));
        }
        log::info!(
            "installed a snapshot from the leader at index {} (term {}), revision {}",
            meta.index,
            meta.term,
            store.revision()
        );
        self.store = store;
        self.applied_index = meta.index;
        self.applied_term = meta.term;
        if let Some(d) = &mut self.durability {
            d.handed_off_index = meta.index;
        }
        self.unpublished_events.clear();
        let conf = codec::encode_conf_state(&meta.conf_state.clone().unwrap_or_default());
        let marker = codec::encode_snapshot_marker(meta.index, meta.term);
        let mut hard = self.raft.hard_state();
        hard.commit = hard.commit.max(meta.index);
        let hard = codec::encode_hard_state(&hard);
        self.wal
            .append(&[
                (RecordKind::Snapshot, marker.as_slice()),
                (RecordKind::ConfState, conf.as_slice()),
                (RecordKind::HardState, hard.as_slice()),
            ])
            .map_err(|e| format!("etcdserver: WAL append failed: {e}"))?;
        self.cluster.resync_watchers = true;
        self.pending_snapshot_applied = Some(meta.index);
        metrics::global().snapshot_installs.fetch_add(1, Relaxed);
        self.membership_changed();
        self.publish();
        Ok(())
    }

    /// Handles what the transport delivered.
    pub(super) fn peer_event(&mut self, event: PeerEvent) {
        if self.cluster.removed {
            return;
        }
        match event {
            PeerEvent::Raft(m) => self.step(m),
            PeerEvent::SnapshotReceived { mut message, path } => {
                if let Some(snap) = message.snapshot.as_mut() {
                    snap.data = path.to_string_lossy().into_owned().into_bytes();
                }
                self.cluster.received.push(path);
                self.step(message);
            }
            PeerEvent::SnapshotSent { to, delivered } => {
                self.cluster.sending.remove(&to);
                self.raft.report_snapshot(to, delivered);
            }
            PeerEvent::Unreachable(id) => self.raft.report_unreachable(id),
            PeerEvent::Removed => {
                log::error!("a peer says this member was removed from the cluster");
                self.cluster.removed = true;
                self.fail_all_waiting(removed_error());
            }
            PeerEvent::LeaseRequest { from, id, op } => {
                let result = if self.raft.is_leader() {
                    let (tx, mut rx) = oneshot::channel();
                    self.serve_lease(op, tx);
                    match rx.try_recv() {
                        Ok(r) => r.map(|reply| reply.body),
                        Err(_) => Err(KvError::Unavailable("etcdserver: no leader".into())),
                    }
                } else {
                    Err(KvError::Unavailable("etcdserver: no leader".into()))
                };
                if let Some(peers) = &self.cluster.peers {
                    peers.respond_lease(from, id, &result);
                }
            }
        }
    }

    fn step(&mut self, message: Message) {
        if let Err(err) = self.raft.step(message) {
            log::debug!("raft refused a message: {err}");
        }
    }

    /// Forwards a lease request to the leader (a follower's lessor knows no deadlines).
    /// Returns the reply back if there is no leader to forward to.
    pub(super) fn forward_lease(
        &mut self,
        op: corekv_net::shard_api::LeaseOp,
        reply: super::lease::LeaseReply,
    ) -> Option<super::lease::LeaseReply> {
        let leader = self.raft.leader_id();
        let Some(peers) = &self.cluster.peers else {
            return Some(reply);
        };
        if leader == 0 || leader == self.member_id {
            return Some(reply);
        }
        let raft_term = self.raft.term();
        peers.forward_lease(
            leader,
            &op,
            Box::new(move |result: Result<LeaseResult, KvError>| {
                let _ = reply.send(result.map(|body| Reply { body, raft_term }));
            }),
        );
        None
    }

    /// Periodic cluster work: metrics, publishing attributes, waiting membership changes,
    /// leader transfer, cleanup of snapshots raft did not take.
    pub(super) fn cluster_turn(&mut self, now: Instant) {
        let leader = self.raft.leader_id();
        let m = metrics::global();
        if leader != self.cluster.leader_seen {
            if leader != 0 {
                m.leader_changes.fetch_add(1, Relaxed);
                log::info!("raft leader is now {leader:x} (term {})", self.raft.term());
            }
            self.cluster.leader_seen = leader;
        }
        m.has_leader.store(i64::from(leader != 0), Relaxed);
        m.is_leader.store(i64::from(self.raft.is_leader()), Relaxed);
        if self.cluster.removed {
            // etcd stops a removed member: its data dir must not be used again.
            log::error!(
                "member {:x} was removed from the cluster; stopping. Its data dir must not be reused",
                self.member_id
            );
            std::process::exit(0);
        }
        self.publish_attributes(now);
        self.poll_cluster_waits();
        if let Some((target, deadline, _)) = &self.cluster.transfer {
            let done = leader == *target;
            if done || now >= *deadline {
                let (target, _, reply) = self.cluster.transfer.take().expect("checked");
                let result = if done {
                    Ok(ClusterAnswer {
                        member_id: target,
                        members: Vec::new(),
                    })
                } else {
                    Err(KvError::Unavailable("etcdserver: request timed out".into()))
                };
                let _ = reply.send(result);
            }
        }
        // A received snapshot raft did not take (it was stale) is not kept.
        for path in std::mem::take(&mut self.cluster.received) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Proposes this member's name and client URLs until the applied membership shows them.
    fn publish_attributes(&mut self, now: Instant) {
        let attrs = &self.cluster.attributes;
        if self.cluster.published || attrs.name.is_empty() || self.raft.leader_id() == 0 {
            return;
        }
        let view = self.store.view();
        let Some(me) = view.membership().get(self.member_id) else {
            return;
        };
        if me.name == attrs.name && me.client_urls == attrs.client_urls {
            self.cluster.published = true;
            return;
        }
        if self
            .cluster
            .published_at
            .is_some_and(|at| now < at + PUBLISH_RETRY)
        {
            return;
        }
        self.cluster.published_at = Some(now);
        let command = Command::MemberAttributes(MemberAttributesRequest {
            id: self.member_id,
            name: attrs.name.clone(),
            client_urls: attrs.client_urls.clone(),
        });
        let (reply, _) = corekv_net::answer::Answer::channel();
        self.propose(command, reply);
    }

    fn poll_cluster_waits(&mut self) {
        let mut i = 0;
        while i < self.cluster.waits.len() {
            match self.cluster.waits[i].rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => i += 1,
                outcome => {
                    let wait = self.cluster.waits.swap_remove(i);
                    let result = match outcome {
                        Ok(Ok(Reply {
                            body: CommandResponse::Members(members),
                            ..
                        })) => Ok(ClusterAnswer {
                            member_id: wait.member_id,
                            members,
                        }),
                        Ok(Ok(_)) => Err(KvError::Unavailable(
                            "etcdserver: unexpected answer to a membership change".into(),
                        )),
                        Ok(Err(err)) => Err(err),
                        Err(_) => Err(KvError::Unavailable("etcdserver: server stopped".into())),
                    };
                    let _ = wait.reply.send(result);
                }
            }
        }
    }

    /// Serves a Cluster service request (or MoveLeader).
    pub(super) fn cluster_op(&mut self, op: ClusterOp) {
        if let Some(refusal) = self.cluster.refusal() {
            op.fail(refusal);
            return;
        }
        if self.cluster.waits.len() >= CLUSTER_WAITS_MAX {
            op.fail(KvError::Unavailable("etcdserver: too many requests".into()));
            return;
        }
        match op {
            ClusterOp::Add {
                peer_urls,
                is_learner,
                reply,
            } => self.member_add(peer_urls, is_learner, reply),
            ClusterOp::Remove { id, reply } => {
                let member = Member {
                    id,
                    ..Default::default()
                };
                self.member_conf(ConfChangeKind::Remove, member, reply)
            }
            ClusterOp::Promote { id, reply } => {
                let member = Member {
                    id,
                    ..Default::default()
                };
                self.member_conf(ConfChangeKind::Promote, member, reply)
            }
            ClusterOp::Update {
                id,
                peer_urls,
                reply,
            } => {
                let view = self.store.view();
                if view.membership().get(id).is_none() {
                    let _ = reply.send(Err(
                        corekv_engine::membership::MembershipError::NotFound.into()
                    ));
                    return;
                }
                let command = Command::MemberUpdate(MemberUpdateRequest { id, peer_urls });
                let (tx, rx) = corekv_net::answer::Answer::channel();
                self.propose(command, tx);
                self.cluster.waits.push(ClusterWait {
                    rx,
                    member_id: id,
                    reply,
                });
            }
            ClusterOp::MoveLeader { target, reply } => self.move_leader(target, reply),
        }
    }

    fn member_add(&mut self, peer_urls: Vec<String>, is_learner: bool, reply: ClusterReply) {
        if peer_urls.is_empty() {
            let _ = reply.send(Err(KvError::Cluster(
                StatusCode::InvalidArgument,
                "etcdserver: given member URLs are invalid".into(),
            )));
            return;
        }
        // etcd derives a new member's ID from its peer URLs and the time (NewMember).
        let mut sorted = peer_urls.clone();
        sorted.sort();
        let mut bytes = sorted.concat().into_bytes();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes.extend_from_slice(&nanos.to_le_bytes());
        let digest = sha1_smol::Sha1::from(bytes).digest().bytes();
        let id = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")).max(1);
        let member = Member {
            id,
            peer_urls,
            is_learner,
            ..Default::default()
        };
        let kind = if is_learner {
            ConfChangeKind::AddLearner
        } else {
            ConfChangeKind::AddVoter
        };
        self.member_conf(kind, member, reply);
    }

    /// Checks a membership change as etcd does, then proposes it as a raft configuration
    /// change whose context carries the membership side.
    fn member_conf(&mut self, kind: ConfChangeKind, member: Member, reply: ClusterReply) {
        let view = self.store.view();
        let ms = view.membership();
        if let Err(err) = ms.validate(kind, &member) {
            let _ = reply.send(Err(err.into()));
            return;
        }
        if let Err(err) = self.reconfig_safety(kind, &member) {
            let _ = reply.send(Err(err));
            return;
        }
        let (change_type, node_id) = match kind {
            ConfChangeKind::AddVoter | ConfChangeKind::Promote => {
                (ConfChangeType::AddNode, member.id)
            }
            ConfChangeKind::AddLearner => (ConfChangeType::AddLearnerNode, member.id),
            ConfChangeKind::Remove => (ConfChangeType::RemoveNode, member.id),
        };
        self.proposal_seq += 1;
        let id = self.proposal_seq;
        let mut request = InternalRequest::new(
            id,
            Command::MemberConf(MemberConfRequest::new(kind, &member)),
        );
        request.origin = self.member_id;
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change_type);
        single.node_id = node_id;
        let change = ConfChangeV2 {
            changes: vec![single],
            context: request.encode_to_vec(),
            ..Default::default()
        };
        let (tx, rx) = corekv_net::answer::Answer::channel();
        match self.raft.propose_conf_change(Vec::new(), change) {
            Ok(index) => self.wait_for(id, index, tx),
            Err(err) => {
                let _ = reply.send(Err(super::propose_error(err)));
                return;
            }
        }
        self.cluster.waits.push(ClusterWait {
            rx,
            member_id: member.id,
            reply,
        });
    }

    /// etcd's strict reconfiguration checks (on by default): a change must leave enough
    /// started members (members that published their attributes) for a quorum; adding or
    /// removing needs this member to have been connected to the voters for a while
    /// (etcd's "unhealthy cluster"); one learner at a time; a learner is promoted only
    /// once it has nearly all of the leader's log (only the leader knows that).
    fn reconfig_safety(&self, kind: ConfChangeKind, member: &Member) -> Result<(), KvError> {
        let view = self.store.view();
        let ms = view.membership();
        let voters: Vec<&Member> = ms.members().filter(|m| !m.is_learner).collect();
        let started = |m: &&&Member| !m.name.is_empty();
        let connected_since = |id: u64| {
            id == self.member_id
                || self
                    .cluster
                    .peers
                    .as_ref()
                    .is_some_and(|p| p.connected_for(id, HEALTH_INTERVAL))
        };
        let unhealthy = || {
            KvError::Cluster(
                StatusCode::Unavailable,
                "etcdserver: unhealthy cluster".into(),
            )
        };
        match kind {
            ConfChangeKind::AddVoter | ConfChangeKind::AddLearner => {
                if kind == ConfChangeKind::AddLearner
                    && ms.members().filter(|m| m.is_learner).count() >= LEARNERS_MAX
                {
                    return Err(KvError::Cluster(
                        StatusCode::FailedPrecondition,
                        "etcdserver: too many learner members in cluster".into(),
                    ));
                }
                if kind == ConfChangeKind::AddVoter {
                    let n = voters.len() + 1;
                    if voters.iter().filter(started).count() < n / 2 + 1 {
                        return Err(not_enough_started());
                    }
                }
                if !voters.iter().all(|m| connected_since(m.id)) {
                    return Err(unhealthy());
                }
            }
            ConfChangeKind::Promote => {
                if !self.raft.is_leader() {
                    return Err(KvError::Cluster(
                        StatusCode::FailedPrecondition,
                        "etcdserver: not leader".into(),
                    ));
                }
                if let Some(learner_match) = self.raft.matched(member.id) {
                    let leader_match = self.raft.last_index();
                    if learner_match * 100 < leader_match * LEARNER_READY_PERCENT {
                        return Err(KvError::Cluster(
                            StatusCode::FailedPrecondition,
                            "etcdserver: can only promote a learner member which is in sync with leader"
                                .into(),
                        ));
                    }
                }
                let n = voters.len() + 1;
                if voters.iter().filter(started).count() + 1 < n / 2 + 1 {
                    return Err(not_enough_started());
                }
            }
            ConfChangeKind::Remove => {
                let is_voter = voters.iter().any(|m| m.id == member.id);
                if is_voter {
                    let n = voters.len() - 1;
                    let left = voters
                        .iter()
                        .filter(|m| m.id != member.id)
                        .filter(|m| !m.name.is_empty())
                        .count();
                    if left < n / 2 + 1 {
                        return Err(not_enough_started());
                    }
                }
                // A member that is down is safe to remove: it is not in the active quorum.
                let down = member.id != self.member_id
                    && !self
                        .cluster
                        .peers
                        .as_ref()
                        .is_some_and(|p| p.connected_for(member.id, Duration::ZERO));
                if is_voter && !down {
                    let active = voters.iter().filter(|m| connected_since(m.id)).count();
                    if active < 1 + (voters.len() - 1) / 2 + 1 {
                        return Err(unhealthy());
                    }
                }
            }
        }
        Ok(())
    }

    /// The raft half of a committed membership change, after the store applied its
    /// membership half (`accepted`): raft's configuration changes, the WAL records it, the
    /// transport follows it.
    pub(super) fn conf_change_applied(&mut self, change: &ConfChangeV2, accepted: bool) {
        if !accepted {
            // Refused on apply (e.g. two racing changes); raft's configuration stays too.
            return;
        }
        match self.raft.apply_conf_change(change) {
            Ok(conf) => {
                let record = codec::encode_conf_state(&conf);
                if let Err(err) = self.wal.append(&[(RecordKind::ConfState, &record)]) {
                    self.fail(format!("etcdserver: WAL append failed: {err}"));
                    return;
                }
                log::info!(
                    "membership changed: voters {:x?}, learners {:x?}",
                    conf.voters,
                    conf.learners
                );
            }
            Err(err) => log::error!("raft refused a committed membership change: {err}"),
        }
        self.membership_changed();
    }

    /// Raft applies the configuration changes the WAL lacks a record for (see recovery).
    pub fn reapply_conf_changes(mut self, changes: Vec<ConfChangeV2>) -> Self {
        for change in changes {
            if let Err(err) = self.raft.apply_conf_change(&change) {
                log::warn!("re-applying a membership change at start failed: {err}");
            }
        }
        self
    }

    fn move_leader(&mut self, target: u64, reply: ClusterReply) {
        if !self.raft.is_leader() {
            let _ = reply.send(Err(KvError::Cluster(
                StatusCode::FailedPrecondition,
                "etcdserver: not leader".into(),
            )));
            return;
        }
        if !self.raft.conf_state().voters.contains(&target) {
            let _ = reply.send(Err(KvError::Cluster(
                StatusCode::FailedPrecondition,
                "etcdserver: bad leader transferee".into(),
            )));
            return;
        }
        if target == self.member_id {
            let _ = reply.send(Ok(ClusterAnswer {
                member_id: target,
                members: Vec::new(),
            }));
            return;
        }
        if let Some((_, _, previous)) = self.cluster.transfer.take() {
            let _ = previous.send(Err(KvError::Unavailable(
                "etcdserver: leader transfer superseded".into(),
            )));
        }
        self.raft.transfer_leader(target);
        let deadline = Instant::now() + self.request_timeout;
        self.cluster.transfer = Some((target, deadline, reply));
    }
}
