//! The sequencer's lease duties: preparing grants before they are proposed, answering
//! keep-alive / time-to-live / list from the lessor, and, while leading, proposing the
//! revocation of expired leases and checkpoints of remaining TTLs.
//!
//! Everything here runs on the sequencer thread, so the lessor needs no lock.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use corekv_engine::mvcc::Applied;
use corekv_engine::pb::{
    PbLeaseGrantRequest, PbLeaseKeepAliveResponse, PbLeaseLeasesResponse, PbLeaseRevokeRequest,
    PbLeaseStatus, PbLeaseTimeToLiveResponse, PbResponseHeader,
};
use corekv_engine::request::{Command, LeaseCheckpoint, LeaseCheckpointRequest};
use corekv_engine::KvError;
use corekv_net::metrics;
use corekv_net::shard_api::{LeaseOp, LeaseResult, Reply};

use super::Sequencer;
use crate::lessor::Lessor;

/// etcd's default lease checkpoint interval.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// How often expired leases are looked for (etcd's lessor loop runs every 500 ms).
const REVOKE_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Revokes proposed per check: etcd's 1000 revokes per second, per 500 ms.
const REVOKES_PER_CHECK_MAX: usize = 500;
/// Lease checkpoints per proposal (etcd's maxLeaseCheckpointBatchSize).
const CHECKPOINTS_PER_PROPOSAL_MAX: usize = 1000;
/// Checkpoint proposals per sweep step; a longer sweep resumes at the next revoke check.
const CHECKPOINT_PROPOSALS_PER_STEP_MAX: usize = 8;
/// Renewed leases whose checkpoint waits to be cleared. Beyond it a clear is skipped: the
/// lease then keeps its last checkpoint until the next sweep overwrites it.
const CHECKPOINT_CLEARS_PENDING_MAX: usize = 100_000;
/// Attempts at a random lease ID not in use before giving up (the apply then reports
/// "lease already exists"); with 63 random bits one attempt practically always does.
const LEASE_ID_ATTEMPTS_MAX: usize = 8;

/// The reply channel of a lessor request.
pub use corekv_net::sequencer_api::LeaseReply;

/// Lease settings fixed at start.
#[derive(Debug, Clone, Copy)]
pub struct LeaseOptions {
    /// etcd's minLeaseTTL: grants asking for less get this, in seconds.
    pub min_ttl_secs: i64,
    /// Extra time every lease gets when this member becomes leader (clients need it to
    /// find the new leader and renew), as etcd's Promote(electionTimeout).
    pub promote_extend: Duration,
    /// How often remaining TTLs are recorded in the log.
    pub checkpoint_interval: Duration,
}

impl LeaseOptions {
    /// etcd's settings for an election timeout: minimum TTL ceil(1.5 x election timeout)
    /// seconds (2 s for the default 1000 ms), promotion extended by the election timeout.
    pub fn for_election_timeout(
        election_timeout_ms: u64,
        checkpoint_interval: Duration,
    ) -> LeaseOptions {
        LeaseOptions {
            min_ttl_secs: (3 * election_timeout_ms).div_ceil(2000) as i64,
            promote_extend: Duration::from_millis(election_timeout_ms),
            checkpoint_interval,
        }
    }
}

/// The lessor and the timers that drive it.
pub(super) struct LeaseDriver {
    opts: LeaseOptions,
    lessor: Lessor,
    next_revoke_check: Instant,
    next_checkpoint: Instant,
    /// Renewed leases whose store record still holds a checkpoint (to be cleared).
    clears: BTreeSet<i64>,
}

impl LeaseDriver {
    pub(super) fn new(opts: LeaseOptions) -> LeaseDriver {
        let now = Instant::now();
        LeaseDriver {
            opts,
            lessor: Lessor::new(),
            next_revoke_check: now,
            next_checkpoint: now + opts.checkpoint_interval,
            clears: BTreeSet::new(),
        }
    }
}

/// A lease ID for a grant that asked for 0: random, positive, not `taken`. The randomness
/// is the standard library's randomly keyed SipHash (no extra dependency) over a counter.
fn random_lease_id(mut taken: impl FnMut(i64) -> bool) -> i64 {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let mut id = 0;
    for _ in 0..LEASE_ID_ATTEMPTS_MAX {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(DRAWS.fetch_add(1, Relaxed));
        id = (h.finish() >> 1) as i64;
        if id != 0 && !taken(id) {
            break;
        }
    }
    id.max(1)
}

fn header(revision: i64) -> Option<PbResponseHeader> {
    Some(PbResponseHeader {
        revision,
        ..Default::default()
    })
}

impl Sequencer {
    /// Replaces the lease settings (the defaults follow etcd's for a 1 s election timeout).
    pub fn with_lease_options(mut self, opts: LeaseOptions) -> Sequencer {
        self.leases = LeaseDriver::new(opts);
        self
    }

    /// Makes a grant deterministic before it enters the log: picks the ID if the client
    /// left it 0 and raises the TTL to the minimum, as etcd's server and lessor do.
    pub(super) fn prepare_lease_grant(&self, command: &mut Command) {
        if let Command::LeaseGrant(PbLeaseGrantRequest { id, ttl }) = command {
            if *id == 0 {
                let view = self.store.view();
                *id = random_lease_id(|candidate| view.lease_ttl(candidate).is_some());
            }
            *ttl = (*ttl).max(self.leases.opts.min_ttl_secs);
        }
    }

    /// Answers a lessor request. Only the leader knows deadlines.
    pub(super) fn serve_lease(&mut self, op: LeaseOp, reply: LeaseReply) {
        let now = Instant::now();
        self.sync_lease_leadership(now);
        if !self.leases.lessor.is_primary() {
            if let Some(reply) = self.forward_lease(op, reply) {
                let _ = reply.send(Err(KvError::Unavailable("etcdserver: no leader".into())));
            }
            return;
        }
        let body = match op {
            LeaseOp::KeepAlive { id } => LeaseResult::KeepAlive(self.keep_alive(id, now)),
            LeaseOp::TimeToLive { id, keys } => {
                LeaseResult::TimeToLive(self.time_to_live(id, keys, now))
            }
            LeaseOp::Leases => LeaseResult::Leases(self.lease_list()),
        };
        let _ = reply.send(Ok(Reply {
            body,
            raft_term: self.raft.term(),
        }));
    }

    /// etcd's keep-alive answer: the TTL, or 0 for a lease that is unknown or expired.
    fn keep_alive(&mut self, id: i64, now: Instant) -> PbLeaseKeepAliveResponse {
        // The header is taken before the renewal, as etcd does.
        let revision = self.store.revision();
        let ttl = self.leases.lessor.renew(id, now);
        if ttl.is_some()
            && self
                .store
                .view()
                .lease_ttl(id)
                .is_some_and(|(_, remaining)| remaining > 0)
        {
            // A renewed lease must not come back from a restart with its old remaining TTL.
            if self.leases.clears.len() < CHECKPOINT_CLEARS_PENDING_MAX {
                self.leases.clears.insert(id);
            }
        }
        PbLeaseKeepAliveResponse {
            header: header(revision),
            id,
            ttl: ttl.unwrap_or(0),
        }
    }

    /// etcd's time-to-live answer; an unknown lease gets TTL -1 and no error.
    fn time_to_live(&self, id: i64, with_keys: bool, now: Instant) -> PbLeaseTimeToLiveResponse {
        let mut resp = PbLeaseTimeToLiveResponse {
            header: header(self.store.revision()),
            id,
            ttl: -1,
            ..Default::default()
        };
        if let Some(lease) = self.store.view().lease(id) {
            resp.ttl = self
                .leases
                .lessor
                .remaining_secs(id, now)
                .unwrap_or(lease.ttl_secs);
            resp.granted_ttl = lease.ttl_secs;
            if with_keys {
                resp.keys = lease.keys.iter().map(|k| k.to_vec()).collect();
            }
        }
        resp
    }

    /// Every lease, soonest expiry first (etcd sorts its list by remaining time).
    fn lease_list(&self) -> PbLeaseLeasesResponse {
        let view = self.store.view();
        let mut ids = view.leases();
        ids.sort_by_key(|id| (self.leases.lessor.expiry(*id), *id));
        let leases = ids.into_iter().map(|id| PbLeaseStatus { id }).collect();
        PbLeaseLeasesResponse {
            header: header(view.revision()),
            leases,
        }
    }

    /// Keeps the lessor's role in step with raft's: a new leader takes over every lease
    /// from the store (checkpointed TTLs included); a member that stops leading forgets.
    fn sync_lease_leadership(&mut self, now: Instant) {
        let leading = self.raft.is_leader() && self.failed.is_none();
        if leading == self.leases.lessor.is_primary() {
            return;
        }
        if leading {
            let extend = self.leases.opts.promote_extend;
            self.leases
                .lessor
                .promote(now, extend, self.store.view().lease_ttls());
            self.leases.next_revoke_check = now;
            self.leases.next_checkpoint = now + self.leases.opts.checkpoint_interval;
            let tracked = self.leases.lessor.len();
            metrics::global().leases_live.store(tracked as i64, Relaxed);
            log::info!("lessor promoted: tracking {tracked} leases");
        } else {
            self.leases.lessor.demote();
            self.leases.clears.clear();
        }
    }

    /// The lease work of one loop turn: cheap unless a timer is due.
    pub(super) fn lease_turn(&mut self, now: Instant) {
        self.sync_lease_leadership(now);
        if !self.leases.lessor.is_primary() {
            return;
        }
        if now >= self.leases.next_revoke_check {
            self.leases.next_revoke_check = now + REVOKE_CHECK_INTERVAL;
            for id in self.leases.lessor.take_expired(now, REVOKES_PER_CHECK_MAX) {
                self.propose_internal(Command::LeaseRevoke(PbLeaseRevokeRequest { id }));
            }
        }
        if now >= self.leases.next_checkpoint {
            self.checkpoint_step(now);
        }
        self.flush_checkpoint_clears();
    }

    /// Proposes the next part of the checkpoint sweep; an unfinished sweep resumes soon.
    fn checkpoint_step(&mut self, now: Instant) {
        let interval = self.leases.opts.checkpoint_interval;
        let max = CHECKPOINTS_PER_PROPOSAL_MAX * CHECKPOINT_PROPOSALS_PER_STEP_MAX;
        let (points, done) = self.leases.lessor.checkpoints(now, interval, max);
        for batch in points.chunks(CHECKPOINTS_PER_PROPOSAL_MAX) {
            let checkpoints = batch
                .iter()
                .map(|&(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                .collect();
            self.propose_internal(Command::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints,
            }));
        }
        self.leases.next_checkpoint = now
            + if done {
                interval
            } else {
                REVOKE_CHECK_INTERVAL
            };
    }

    /// Proposes the clears queued by renewals, in bounded batches.
    fn flush_checkpoint_clears(&mut self) {
        while !self.leases.clears.is_empty() {
            let batch: Vec<LeaseCheckpoint> = std::iter::from_fn(|| self.leases.clears.pop_first())
                .take(CHECKPOINTS_PER_PROPOSAL_MAX)
                .map(|id| LeaseCheckpoint {
                    id,
                    remaining_ttl: 0,
                })
                .collect();
            self.propose_internal(Command::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints: batch,
            }));
        }
    }

    /// A proposal of the server's own: nobody waits for its answer.
    fn propose_internal(&mut self, command: Command) {
        let (reply, _) = corekv_net::answer::Answer::channel();
        self.propose(command, reply);
    }

    /// Keeps the lessor and the lease metrics in step with an applied command.
    pub(super) fn lease_applied(&mut self, command: &Command, result: &Result<Applied, KvError>) {
        let m = metrics::global();
        match (command, result) {
            (Command::LeaseGrant(r), Ok(_)) => {
                self.leases.lessor.granted(r.id, r.ttl, Instant::now());
                m.leases_granted.fetch_add(1, Relaxed);
            }
            (Command::LeaseRevoke(r), result) => {
                // Forgotten either way: an error means the lease was already gone.
                if self.leases.lessor.revoked(r.id) && result.is_ok() {
                    m.lease_expirations.fetch_add(1, Relaxed);
                }
            }
            _ => return,
        }
        m.leases_live
            .store(self.store.view().lease_count() as i64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_ttl_is_etcds() {
        // (election timeout ms, min TTL s): ceil(1.5 x election timeout)
        for (election_ms, min) in [
            (1000, 2),
            (500, 1),
            (1001, 2),
            (1334, 3),
            (2000, 3),
            (5000, 8),
            (50_000, 75),
        ] {
            let opts = LeaseOptions::for_election_timeout(election_ms, CHECKPOINT_INTERVAL);
            assert_eq!(opts.min_ttl_secs, min, "election timeout {election_ms} ms");
            assert_eq!(opts.promote_extend, Duration::from_millis(election_ms));
        }
    }

    #[test]
    fn random_ids_are_positive_and_avoid_taken_ones() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = random_lease_id(|_| false);
            assert!(id > 0);
            seen.insert(id);
        }
        assert!(
            seen.len() > 990,
            "ids repeat: {} distinct of 1000",
            seen.len()
        );
        // The first three candidates are in use: the fourth is taken.
        let mut offered = Vec::new();
        let id = random_lease_id(|candidate| {
            offered.push(candidate);
            offered.len() <= 3
        });
        assert_eq!((offered.len(), offered.last()), (4, Some(&id)));
    }
}
