//! The write path: the sequencer owns raft, the WAL and the key space's single writer.
//!
//! One loop, on its own thread pinned to core 0:
//! 1. wait for a message (or the next raft tick);
//! 2. drain everything else that arrived, up to the batch bounds: this is group commit with
//!    no timer: all proposals that arrived while the previous batch was being made durable
//!    go into the next one;
//! 3. raft cycle: append the batch's entries (and hard state) to the WAL with one write and
//!    one fdatasync (io_uring, linked), then apply the committed entries in log order;
//! 4. publish the new read view to every core, and only then answer the writers, so a
//!    client that saw its write acknowledged reads it on any core afterwards.
//!
//! The thread blocks in the WAL's fdatasync on purpose: that wait is the batching window.
//! Keeping it off the shards' executors means reads keep being served meanwhile.
//!
//! In a cluster (see `sequencer/cluster.rs`) the leader's appends leave for the followers
//! before its own fdatasync; a follower forwards proposals to the leader through raft and
//! answers its client when it applies the entry (matched by the proposal's origin and id);
//! every request waits at most `request_timeout`, so a member cut off from the quorum
//! answers with an error, never with stale data.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use std::sync::Arc;

use corekv_engine::mvcc::{CommandResponse, Event, ReadView, Store};
use corekv_engine::request::{Command, InternalRequest};
use corekv_engine::wal::{RecordKind, Wal};
use corekv_engine::KvError;
use corekv_net::metrics;
use corekv_net::shard_api::{MaintenanceOp, Reply, StatusInfo};
use corekv_raft::{codec, Entry, ProposeError, RaftNode};
use prost::Message;
use tokio::sync::oneshot;

mod cluster;
mod compactor;
mod lease;
pub use cluster::SelfAttributes;
pub use compactor::AutoCompaction;
pub use lease::{LeaseOptions, CHECKPOINT_INTERVAL};

/// Most proposals folded into one WAL batch.
pub const BATCH_PROPOSALS_MAX: usize = 4096;
/// Most proposal bytes folded into one WAL batch (~1 MiB, as the architecture says).
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Proposals waiting in the sequencer's queue before senders wait (backpressure).
pub const QUEUE_DEPTH_MAX: usize = 8192;
/// Raft cycles run per loop turn before the loop looks at its queue again.
const CYCLES_PER_TURN_MAX: usize = 8;

pub use corekv_net::sequencer_api::{ReadReply, SequencerMsg, WriteReply};

/// A new state of the key space, sent to every shard after each applied batch.
#[derive(Clone)]
pub struct Publication {
    /// Increases with every publication; a shard never goes back to an older one.
    pub seq: u64,
    pub view: ReadView,
    pub raft_term: u64,
    /// The batch's changes in revision order (shared, not copied, across shards): every
    /// event with a revision above the previous publication's view, up to this view's.
    pub events: Arc<Vec<Event>>,
    /// The view did not follow from the previous one by `events` (a snapshot from the
    /// leader replaced the key space): every watcher must catch up from the view's history.
    pub resync: bool,
}

/// A request held until a leader is known.
enum Leaderless {
    Write(
        Command,
        Option<corekv_engine::request::AuthHeader>,
        WriteReply,
    ),
    Reads(Vec<ReadReply>),
}

impl Leaderless {
    /// Answers the held request(s) with `err`.
    fn fail(self, err: KvError) {
        match self {
            Leaderless::Write(_, _, reply) => drop(reply.send(Err(err))),
            Leaderless::Reads(replies) => {
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// A proposal waiting to be applied.
struct Waiting {
    /// Its log index, when this member leads and knows it.
    index: Option<u64>,
    deadline: Instant,
    reply: WriteReply,
}

/// The sequencer's state. See the module docs for the loop.
pub struct Sequencer {
    raft: RaftNode,
    wal: Wal,
    store: Store,
    inbox: flume::Receiver<SequencerMsg>,
    /// Each shard's publication queue and its count of open watch streams: a shard with
    /// none is not sent publications (it catches up from `latest` when one opens).
    shards: Vec<(
        flume::Sender<Publication>,
        Arc<std::sync::atomic::AtomicUsize>,
    )>,
    /// What serializable reads read: replaced before the writers of a batch are answered.
    latest: corekv_net::sequencer_api::SharedView,
    tick: Duration,
    /// This member's raft id.
    member_id: u64,
    /// Proposals not yet applied, by proposal id (the id in their InternalRequest).
    waiting: BTreeMap<u64, Waiting>,
    /// This turn's answers to writers and linearizable readers, one list per network
    /// thread, handed over at the end of the turn (see `corekv_net::answer`).
    outbox: corekv_net::answer::Outbox,
    /// `(log index, proposal id)` of proposals this member made as leader, in index order:
    /// applying another entry at such an index means the proposal was lost.
    leader_proposals: VecDeque<(u64, u64)>,
    /// How long a write or linearizable read may wait (etcd: 5 s + 2 election timeouts).
    request_timeout: Duration,
    /// Reads that arrived this turn and have no read index yet.
    reads_unissued: Vec<ReadReply>,
    /// Requests that arrived while no leader was known: etcd makes them wait for one (up to
    /// the request timeout) rather than fail at once. Bounded by `QUEUE_DEPTH_MAX`.
    leaderless: VecDeque<(Instant, Leaderless)>,
    /// Reads whose read index was requested: (context sequence, deadline, replies).
    reads_issued: VecDeque<(u64, Instant, Vec<ReadReply>)>,
    /// Reads with a known read index, waiting for apply to reach it.
    reads_ready: VecDeque<(u64, Vec<ReadReply>)>,
    read_seq: u64,
    proposal_seq: u64,
    /// Proposal bytes taken this loop turn (the batch-size bound).
    turn_bytes: usize,
    publication_seq: u64,
    /// Events applied since the last publication, in revision order.
    unpublished_events: Vec<Event>,
    /// A commit index raft advanced to that no WAL record holds yet.
    commit_unrecorded: Option<u64>,
    applied_index: u64,
    /// The term of the entry at `applied_index` (what the store records with it).
    applied_term: u64,
    /// A snapshot installed in this cycle: raft learns it is applied once persisted.
    pending_snapshot_applied: Option<u64>,
    /// Set after a WAL failure: the member refuses all further work rather than guess.
    failed: Option<String>,
    /// Lease deadlines (while leading) and the timers that revoke and checkpoint.
    leases: lease::LeaseDriver,
    /// The revision store's writer and what the WAL may release once it is durable.
    durability: Option<Durability>,
    /// Auto-compaction (--auto-compaction-mode/-retention), if on.
    compactor: Option<compactor::Compactor>,
    /// The outcome of the compaction the compactor proposed, while awaited.
    compaction_reply: Option<oneshot::Receiver<Result<Reply<CommandResponse>, KvError>>>,
    /// Peers, membership changes and snapshots.
    cluster: cluster::ClusterState,
    /// The store file's size as the quota check sees it: the store writer sets it after
    /// each commit; writes applied since add their cost, so a burst of large puts between
    /// two commits cannot run past --quota-backend-bytes.
    size_gauge: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// Hand-off of applied changes to the revision store, and WAL release behind it.
pub struct Durability {
    pub link: crate::store_writer::StoreLink,
    /// When applied changes are next handed to the store writer.
    pub next_handoff: Instant,
    /// The applied index the last hand-off carried.
    pub handed_off_index: u64,
    /// Highest entry index in each live WAL segment.
    pub segment_last_index: std::collections::BTreeMap<u64, u64>,
    pub next_release_check: Instant,
}

/// Longest applied changes wait in the sequencer before going to the store writer.
const HANDOFF_INTERVAL_MS: u64 = 20;
/// Changes that make a hand-off due at once.
const HANDOFF_CHANGES_MAX: usize = 10_000;

/// How often the sequencer looks for WAL segments the store has passed.
const RELEASE_CHECK_INTERVAL_MS: u64 = 1000;
/// How long the sequencer goes without a message before it hands freed memory back.
const IDLE_BEFORE_RELEASE: Duration = Duration::from_secs(1);
/// How long the sequencer polls its empty inbox (yielding the CPU to anything runnable)
/// before it blocks. A blocked thread is woken by a futex wake, and on a VM a wake across
/// CPUs is an inter-processor interrupt that took ~0.04 ms here; a request that arrives
/// while the sequencer polls costs no wake at all.
const POLL_BEFORE_BLOCK: Duration = Duration::from_micros(100);

impl Sequencer {
    /// Builds the sequencer from recovered state.
    pub fn new(
        raft: RaftNode,
        wal: Wal,
        store: Store,
        applied_index: u64,
        inbox: flume::Receiver<SequencerMsg>,
        shards: Vec<(
            flume::Sender<Publication>,
            Arc<std::sync::atomic::AtomicUsize>,
        )>,
        latest: corekv_net::sequencer_api::SharedView,
        heartbeat_interval_ms: u64,
    ) -> Sequencer {
        let member_id = raft.id();
        Sequencer {
            raft,
            wal,
            store,
            inbox,
            shards,
            latest,
            tick: Duration::from_millis(heartbeat_interval_ms.max(1)),
            member_id,
            waiting: BTreeMap::new(),
            outbox: Default::default(),
            leader_proposals: VecDeque::new(),
            request_timeout: Duration::from_secs(7),
            reads_unissued: Vec::new(),
            leaderless: VecDeque::new(),
            reads_issued: VecDeque::new(),
            reads_ready: VecDeque::new(),
            read_seq: 0,
            proposal_seq: 0,
            turn_bytes: 0,
            publication_seq: 0,
            commit_unrecorded: None,
            unpublished_events: Vec::new(),
            applied_index,
            applied_term: 0,
            pending_snapshot_applied: None,
            failed: None,
            leases: lease::LeaseDriver::new(LeaseOptions::for_election_timeout(
                1000,
                CHECKPOINT_INTERVAL,
            )),
            durability: None,
            compactor: None,
            compaction_reply: None,
            cluster: cluster::ClusterState::default(),
            size_gauge: None,
        }
    }

    /// Shares the quota check's size gauge (see the field's docs).
    pub fn with_size_gauge(mut self, gauge: Arc<std::sync::atomic::AtomicU64>) -> Sequencer {
        self.size_gauge = Some(gauge);
        self
    }

    /// How long writes and linearizable reads may wait before "request timed out".
    pub fn with_request_timeout(mut self, timeout: Duration) -> Sequencer {
        self.request_timeout = timeout;
        self
    }

    /// Turns auto-compaction on (etcd's compactor; the leader proposes compactions).
    pub fn with_auto_compaction(mut self, mode: Option<AutoCompaction>) -> Sequencer {
        self.compactor =
            mode.map(|m| compactor::Compactor::new(m, Instant::now(), self.store.revision()));
        self
    }

    /// The compactor's work of one loop turn: take the outcome of the compaction it asked
    /// for, or propose the next one when it is due.
    fn compaction_turn(&mut self, now: Instant) {
        let Some(compactor) = &mut self.compactor else {
            return;
        };
        if let Some(rx) = &mut self.compaction_reply {
            let done = match rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => return,
                Ok(Ok(_)) | Ok(Err(KvError::Compacted)) => true,
                Ok(Err(err)) => {
                    log::warn!("auto compaction failed: {err}");
                    false
                }
                Err(oneshot::error::TryRecvError::Closed) => false,
            };
            compactor.finished(now, done, self.store.revision());
            self.compaction_reply = None;
            if done {
                log::info!(
                    "completed auto compaction; compacted revision {}",
                    self.store.compact_revision()
                );
            }
        }
        let leading = self.raft.is_leader() && self.failed.is_none();
        if let Some(revision) = compactor.poll(now, self.store.revision(), leading) {
            log::info!("starting auto compaction at revision {revision}");
            let (reply, rx) = corekv_net::answer::Answer::channel();
            self.compaction_reply = Some(rx);
            let request = corekv_engine::pb::PbCompactionRequest {
                revision,
                physical: false,
            };
            self.propose(Command::Compact(request), reply);
        }
    }

    /// Passes a maintenance request to the store writer, behind every batch handed over.
    fn maintain(&mut self, op: MaintenanceOp) {
        self.hand_off_changes(true);
        match &self.durability {
            Some(durability) => durability.link.maintain(op),
            None => op.fail(KvError::Unavailable(
                "etcdserver: this member has no revision store".into(),
            )),
        }
    }

    /// Commits applied changes to the revision store through `link`, and releases WAL
    /// segments it has durably passed.
    pub fn with_store_writer(
        mut self,
        link: crate::store_writer::StoreLink,
        segment_last_index: std::collections::BTreeMap<u64, u64>,
    ) -> Sequencer {
        self.durability = Some(Durability {
            link,
            next_handoff: Instant::now(),
            handed_off_index: 0,
            segment_last_index,
            next_release_check: Instant::now(),
        });
        self
    }

    /// Hands what was applied since the last hand-off to the store writer: when `forced`,
    /// or every `HANDOFF_INTERVAL_MS`, or once `HANDOFF_CHANGES_MAX` changes wait. Handing
    /// over every batch woke the writer thread once per put, which cost single-client
    /// latency; the store commits only every 100 ms anyway.
    fn hand_off_changes(&mut self, forced: bool) {
        let Some(durability) = &mut self.durability else {
            return;
        };
        let now = Instant::now();
        let due =
            now >= durability.next_handoff || self.store.pending_changes() >= HANDOFF_CHANGES_MAX;
        if !forced && !due {
            return;
        }
        if !forced
            && self.store.pending_changes() == 0
            && self.applied_index == durability.handed_off_index
        {
            durability.next_handoff = now + Duration::from_millis(HANDOFF_INTERVAL_MS);
            return;
        }
        durability.next_handoff = now + Duration::from_millis(HANDOFF_INTERVAL_MS);
        durability.handed_off_index = self.applied_index;
        let changes = self.store.take_changes();
        let job = crate::store_writer::StoreJob {
            changes,
            applied_index: self.applied_index,
            term: self.applied_term,
        };
        durability.link.submit(job);
    }

    /// Releases the WAL segments whose every entry the store durably holds.
    fn release_wal(&mut self) {
        let Some(durability) = &mut self.durability else {
            return;
        };
        if Instant::now() < durability.next_release_check || durability.link.failed() {
            return;
        }
        durability.next_release_check =
            Instant::now() + Duration::from_millis(RELEASE_CHECK_INTERVAL_MS);
        let durable = durability.link.durable_index();
        let live = self.wal.segment_seq();
        // The first segment still holding an entry the store lacks, or the live one.
        let keep_from = durability
            .segment_last_index
            .iter()
            .find(|(seq, last)| **seq >= live || **last > durable)
            .map_or(live, |(seq, _)| *seq);
        match self.wal.release_before(keep_from) {
            Ok(0) => {}
            Ok(released) => {
                durability
                    .segment_last_index
                    .retain(|seq, _| *seq >= keep_from);
                log::info!("released {released} WAL segment(s) below {keep_from}: the revision store holds index {durable}");
            }
            Err(err) => log::warn!("cannot release WAL segments: {err}"),
        }
    }

    /// Runs the loop until every sender is gone.
    pub fn run(mut self) {
        self.raft.applied(self.applied_index);
        self.cluster_started();
        // A lone voter elects itself at once; in a cluster the election timer decides.
        if self.raft.conf_state().voters == [self.member_id] {
            if let Err(err) = self.raft.campaign() {
                log::error!("campaign failed: {err}");
            }
        }
        // What recovery replayed from the WAL is not in the store yet.
        self.hand_off_changes(true);
        self.drive();
        self.publish();
        let mut next_tick = Instant::now() + self.tick;
        // Ticks without a message; after a second of them, freed memory is handed back once.
        let mut idle_ticks = 0u32;
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            let polled = self.poll_inbox(timeout.min(POLL_BEFORE_BLOCK));
            match polled.map_or_else(|| self.inbox.recv_timeout(timeout), Ok) {
                Ok(msg) => {
                    idle_ticks = 0;
                    self.turn_bytes = 0;
                    self.take(msg);
                }
                Err(flume::RecvTimeoutError::Timeout) => {
                    let idle_before = self.tick.saturating_mul(idle_ticks);
                    idle_ticks = idle_ticks.saturating_add(1);
                    let idle = self.tick.saturating_mul(idle_ticks);
                    if idle_before < IDLE_BEFORE_RELEASE && idle >= IDLE_BEFORE_RELEASE {
                        crate::release_idle_memory();
                    }
                }
                Err(flume::RecvTimeoutError::Disconnected) => return,
            }
            self.drain_inbox();
            if Instant::now() >= next_tick {
                self.raft.tick();
                next_tick = Instant::now() + self.tick;
            }
            self.lease_turn(Instant::now());
            self.compaction_turn(Instant::now());
            self.release_leaderless();
            self.drive();
            self.cluster_turn(Instant::now());
            self.expire(Instant::now());
            self.hand_off_changes(false);
            self.release_wal();
        }
    }

    /// The next message if one arrives within `budget`, polling without blocking; the CPU
    /// is yielded between polls, so a thread that shares it loses (almost) nothing.
    fn poll_inbox(&self, budget: Duration) -> Option<SequencerMsg> {
        let deadline = Instant::now() + budget;
        loop {
            if let Ok(msg) = self.inbox.try_recv() {
                return Some(msg);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::yield_now();
        }
    }

    /// Folds in whatever else is queued, up to the batch bounds.
    fn drain_inbox(&mut self) {
        let mut taken = 1;
        while taken < BATCH_PROPOSALS_MAX {
            match self.inbox.try_recv() {
                Ok(msg) => self.take(msg),
                Err(_) => break,
            }
            taken += 1;
            if self.turn_bytes >= BATCH_BYTES_MAX {
                break;
            }
        }
    }

    fn take(&mut self, msg: SequencerMsg) {
        if let Some(reason) = &self.failed {
            let err = KvError::Unavailable(reason.clone());
            match msg {
                SequencerMsg::Propose { reply, .. } => drop(reply.send(Err(err))),
                SequencerMsg::ReadIndex { reply } => drop(reply.send(Err(err))),
                SequencerMsg::Status { reply } => drop(reply.send(self.status())),
                SequencerMsg::Lease { reply, .. } => drop(reply.send(Err(err))),
                SequencerMsg::Maintenance(op) => op.fail(err),
                SequencerMsg::Cluster(op) => op.fail(err),
                SequencerMsg::Peer(_) => {}
            }
            return;
        }
        match msg {
            SequencerMsg::Propose {
                mut command,
                auth,
                reply,
            } => {
                self.prepare_lease_grant(&mut command);
                self.propose_as(command, auth, reply)
            }
            SequencerMsg::ReadIndex { reply } => self.reads_unissued.push(reply),
            SequencerMsg::Status { reply } => drop(reply.send(self.status())),
            SequencerMsg::Lease { op, reply } => self.serve_lease(op, reply),
            SequencerMsg::Maintenance(op) => self.maintain(op),
            SequencerMsg::Peer(event) => self.peer_event(event),
            SequencerMsg::Cluster(op) => self.cluster_op(op),
        }
    }

    fn propose(&mut self, command: Command, reply: WriteReply) {
        self.propose_as(command, None, reply)
    }

    /// Proposes `command` with its caller (`auth`), which the applier checks.
    fn propose_as(
        &mut self,
        command: Command,
        auth: Option<corekv_engine::request::AuthHeader>,
        reply: WriteReply,
    ) {
        if let Some(refusal) = self.cluster.refusal() {
            let _ = reply.send(Err(refusal));
            return;
        }
        self.proposal_seq += 1;
        let id = self.proposal_seq;
        let mut request = InternalRequest::new(id, command);
        request.origin = self.member_id;
        request.auth_header = auth;
        let data = request.encode_to_vec();
        self.turn_bytes += data.len();
        match self.raft.propose(data) {
            Ok(index) => self.wait_for(id, index, reply),
            Err(ProposeError::NoLeader) => {
                // Not proposed: the id is not reused, the command goes back to wait.
                let auth = request.auth_header.take();
                let command = request
                    .into_command()
                    .expect("a request built from a command carries it");
                self.hold_until_leader(Leaderless::Write(command, auth, reply));
            }
            Err(err) => {
                metrics::global()
                    .proposals_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = reply.send(Err(propose_error(err)));
            }
        }
    }

    /// Registers proposal `id` (at `index` if this member leads) to be answered on apply.
    fn wait_for(&mut self, id: u64, index: Option<u64>, reply: WriteReply) {
        if let Some(index) = index {
            debug_assert!(self
                .leader_proposals
                .back()
                .is_none_or(|(last, _)| *last < index));
            self.leader_proposals.push_back((index, id));
        }
        let deadline = Instant::now() + self.request_timeout;
        let previous = self.waiting.insert(
            id,
            Waiting {
                index,
                deadline,
                reply,
            },
        );
        debug_assert!(previous.is_none(), "proposal ids are unique");
        metrics::global().proposals_pending.store(
            self.waiting.len() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Holds a request until a leader is known (or its time is up).
    fn hold_until_leader(&mut self, held: Leaderless) {
        if self.leaderless.len() >= QUEUE_DEPTH_MAX {
            held.fail(KvError::Unavailable("etcdserver: no leader".into()));
            return;
        }
        let deadline = Instant::now() + self.request_timeout;
        self.leaderless.push_back((deadline, held));
    }

    /// Proposes (or asks a read index for) what waited for a leader, now that there is one.
    fn release_leaderless(&mut self) {
        if self.leaderless.is_empty() || self.raft.leader_id() == 0 {
            return;
        }
        for (_, held) in std::mem::take(&mut self.leaderless) {
            match held {
                Leaderless::Write(command, auth, reply) => self.propose_as(command, auth, reply),
                Leaderless::Reads(replies) => self.reads_unissued.extend(replies),
            }
        }
    }

    /// Answers what waited too long: a member cut off from the quorum (or a proposal lost
    /// in a leader change) answers "request timed out", as etcd does.
    fn expire(&mut self, now: Instant) {
        while self.leaderless.front().is_some_and(|(d, _)| *d <= now) {
            let (_, held) = self.leaderless.pop_front().expect("front exists");
            held.fail(timed_out());
        }
        // Ids grow with time and every wait has the same length: the expired are a prefix.
        while let Some(entry) = self.waiting.first_entry() {
            if entry.get().deadline > now {
                break;
            }
            let waiting = entry.remove();
            metrics::global()
                .proposals_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = waiting.reply.send(Err(timed_out()));
        }
        while self
            .reads_issued
            .front()
            .is_some_and(|(_, deadline, _)| *deadline <= now)
        {
            let (_, _, replies) = self.reads_issued.pop_front().expect("front exists");
            for reply in replies {
                let _ = reply.send(Err(timed_out()));
            }
        }
    }

    /// Runs raft cycles: persist, apply, answer. Bounded per turn so the queue is looked at.
    fn drive(&mut self) {
        if !self.reads_unissued.is_empty() {
            let batch = std::mem::take(&mut self.reads_unissued);
            if self.raft.leader_id() == 0 && self.cluster.refusal().is_none() {
                self.hold_until_leader(Leaderless::Reads(batch));
            } else if let Some(refusal) = self.cluster.refusal() {
                for reply in batch {
                    let _ = reply.send(Err(refusal.clone()));
                }
            } else {
                self.read_seq += 1;
                self.raft.read_index(self.read_seq.to_le_bytes().to_vec());
                let deadline = Instant::now() + self.request_timeout;
                self.reads_issued
                    .push_back((self.read_seq, deadline, batch));
            }
        }
        let mut applied_any = false;
        for _ in 0..CYCLES_PER_TURN_MAX {
            if self.failed.is_some() {
                break;
            }
            let Some(mut cycle) = self.raft.cycle() else {
                break;
            };
            // A leader's appends go out now, while its own fdatasync runs.
            let early = cycle.take_early_messages();
            self.send_messages(early);
            if let Some(snapshot) = cycle.snapshot().cloned() {
                if let Err(err) = self.install_snapshot(&snapshot) {
                    self.fail(err);
                    break;
                }
            }
            // A commit advance raft reported earlier rides along with the next write; it
            // never costs an fdatasync of its own (recovery re-derives it if lost).
            let mut hard_state = cycle.hard_state().cloned();
            let writes = !cycle.entries().is_empty() || hard_state.is_some();
            if writes && self.commit_unrecorded.take().is_some() && hard_state.is_none() {
                hard_state = Some(self.raft.hard_state());
            }
            if let Err(err) = self.persist(cycle.entries(), hard_state.as_ref()) {
                self.fail(err);
                break;
            }
            let mut ready = self.raft.persisted(cycle);
            if let Some(index) = self.pending_snapshot_applied.take() {
                self.raft.applied(index);
                applied_any = true;
            }
            if ready.commit_advanced.is_some() {
                self.commit_unrecorded = ready.commit_advanced;
            }
            let messages = std::mem::take(&mut ready.messages);
            self.send_messages(messages);
            for (context, index) in ready.read_states {
                self.read_index_known(&context, index);
            }
            if let Some(last) = ready.committed.last().map(|e| e.index) {
                metrics::global()
                    .proposals_committed
                    .store(last, std::sync::atomic::Ordering::Relaxed);
                for entry in &ready.committed {
                    if self.failed.is_some() {
                        break;
                    }
                    self.apply(entry);
                }
                if self.failed.is_some() {
                    break;
                }
                self.raft.applied(last);
                applied_any = true;
            }
        }
        if applied_any {
            self.publish();
            self.hand_off_changes(false);
        }
        self.serve_ready_reads();
        // Writers hear back only after every core can read what they wrote: their answers
        // waited in the outbox since their entries were applied.
        self.outbox.flush();
    }

    fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&corekv_raft::HardState>,
    ) -> Result<(), String> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut payloads: Vec<(RecordKind, Vec<u8>)> = Vec::with_capacity(entries.len() + 1);
        let mut bytes = 0;
        for entry in entries {
            let mut buf = Vec::with_capacity(32 + entry.data.len());
            codec::encode_entry(entry, &mut buf);
            bytes += buf.len();
            payloads.push((RecordKind::Entry, buf));
        }
        if let Some(hs) = hard_state {
            payloads.push((RecordKind::HardState, codec::encode_hard_state(hs)));
        }
        let records: Vec<(RecordKind, &[u8])> =
            payloads.iter().map(|(k, p)| (*k, p.as_slice())).collect();
        let started = Instant::now();
        let segment_before = self.wal.segment_seq();
        self.wal
            .append(&records)
            .map_err(|e| format!("etcdserver: WAL append failed: {e}"))?;
        if self.wal.segment_seq() != segment_before {
            self.restate_in_new_segment()?;
        }
        if let (Some(durability), Some(last)) = (&mut self.durability, entries.last()) {
            let seq = self.wal.segment_seq();
            let slot = durability.segment_last_index.entry(seq).or_insert(0);
            *slot = (*slot).max(last.index);
        }
        let m = metrics::global();
        m.wal_fsync_seconds.observe_duration(started.elapsed());
        if !entries.is_empty() {
            m.batch_entries.observe(entries.len() as f64);
            m.batch_bytes.observe(bytes as f64);
        }
        let db_bytes = self
            .durability
            .as_ref()
            .map_or(self.wal.size_bytes(), |d| d.link.size_bytes().0);
        m.db_size_bytes
            .store(db_bytes as i64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// A new WAL segment restates the membership and hard state, so that releasing older
    /// segments never takes the only copy with it.
    fn restate_in_new_segment(&mut self) -> Result<(), String> {
        let conf = codec::encode_conf_state(&self.raft.conf_state());
        let hard = codec::encode_hard_state(&self.raft.hard_state());
        let records = [
            (RecordKind::ConfState, conf.as_slice()),
            (RecordKind::HardState, hard.as_slice()),
        ];
        self.wal
            .append(&records)
            .map_err(|e| format!("etcdserver: WAL append failed: {e}"))
    }

    /// After a storage failure nothing is acknowledged again: what is on disk is unknown.
    fn fail(&mut self, reason: String) {
        log::error!("{reason}; this member refuses further writes and linearizable reads");
        self.fail_all_waiting(KvError::Unavailable(reason.clone()));
        self.failed = Some(reason);
    }

    /// Answers every request that waits for raft (proposals, reads, requests held for a
    /// leader) with `err`: the member will not serve them.
    fn fail_all_waiting(&mut self, err: KvError) {
        for (_, waiting) in std::mem::take(&mut self.waiting) {
            let _ = waiting.reply.send(Err(err.clone()));
        }
        self.leader_proposals.clear();
        let issued = self.reads_issued.drain(..).map(|(_, _, r)| r);
        for replies in issued.chain(self.reads_ready.drain(..).map(|(_, r)| r)) {
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
        for (_, held) in std::mem::take(&mut self.leaderless) {
            held.fail(err.clone());
        }
    }

    /// Applies one committed entry; the answer to this member's proposal, if it is one,
    /// waits in the outbox until the turn's view is published.
    fn apply(&mut self, entry: &Entry) {
        debug_assert!(
            entry.index > self.applied_index,
            "entries apply once, in order"
        );
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        let decoded = match crate::recovery::decode_request(entry) {
            Ok(decoded) => decoded,
            Err(err) => {
                // A committed entry we cannot decode means a bug or corruption: stop.
                self.fail(err);
                return;
            }
        };
        let mut proposal = None;
        let mut result = None;
        if let Some((mut request, conf_change)) = decoded {
            proposal = (request.origin == self.member_id).then_some(request.id);
            let auth = request.auth_header.take();
            if let Some(command) = request.into_command() {
                let outcome = self
                    .store
                    .apply_as(&command, auth.as_ref())
                    .map(|mut applied| {
                        self.unpublished_events.append(&mut applied.events);
                        applied
                    });
                self.lease_applied(&command, &outcome);
                if let (Some(gauge), Ok(_)) = (&self.size_gauge, &outcome) {
                    let cost = match &command {
                        Command::Put(r) => corekv_engine::mvcc::alarm::put_cost(r),
                        Command::Txn(t) => corekv_engine::mvcc::alarm::txn_cost(t),
                        _ => 0,
                    };
                    gauge.fetch_add(cost, std::sync::atomic::Ordering::Relaxed);
                }
                match conf_change {
                    Some(change) => self.conf_change_applied(&change, outcome.is_ok()),
                    None if outcome.is_ok()
                        && matches!(
                            command,
                            Command::MemberAttributes(_) | Command::MemberUpdate(_)
                        ) =>
                    {
                        self.membership_changed()
                    }
                    None => {}
                }
                result = Some(outcome);
            }
        }
        let m = metrics::global();
        if result.is_some() {
            m.proposals_applied
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // This member's proposals made as leader at or below this index that were not this
        // entry were lost (e.g. overwritten after a leader change).
        while let Some(&(index, id)) = self.leader_proposals.front() {
            if index > entry.index {
                break;
            }
            self.leader_proposals.pop_front();
            if Some(id) != proposal {
                if let Some(waiting) = self.waiting.remove(&id) {
                    self.outbox.push(waiting.reply, Err(lost()));
                }
            }
        }
        if let Some(waiting) = proposal.and_then(|id| self.waiting.remove(&id)) {
            let outcome = match result {
                Some(Ok(applied)) => Ok(Reply {
                    body: applied.response,
                    raft_term: self.raft.term(),
                }),
                Some(Err(err)) => Err(err),
                None => Err(KvError::Unavailable(
                    "etcdserver: entry carried no request".into(),
                )),
            };
            debug_assert!(waiting.index.is_none_or(|i| i == entry.index));
            self.outbox.push(waiting.reply, outcome);
        }
        m.proposals_pending.store(
            self.waiting.len() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn read_index_known(&mut self, context: &[u8], index: u64) {
        let Ok(seq) = <[u8; 8]>::try_from(context).map(u64::from_le_bytes) else {
            return;
        };
        // Read indexes come back in request order; earlier unanswered batches share this one.
        while let Some((issued, _, _)) = self.reads_issued.front() {
            if *issued > seq {
                break;
            }
            let (_, _, replies) = self.reads_issued.pop_front().expect("front exists");
            self.reads_ready.push_back((index, replies));
        }
    }

    fn serve_ready_reads(&mut self) {
        while self
            .reads_ready
            .front()
            .is_some_and(|(index, _)| *index <= self.applied_index)
        {
            let (_, replies) = self.reads_ready.pop_front().expect("front exists");
            let (view, term) = (self.store.view(), self.raft.term());
            for reply in replies {
                self.outbox.push(reply, Ok((view.clone(), term)));
            }
        }
    }

    fn publish(&mut self) {
        let view = self.store.view();
        let m = metrics::global();
        m.current_revision
            .store(view.revision(), std::sync::atomic::Ordering::Relaxed);
        m.compact_revision.store(
            view.compact_revision(),
            std::sync::atomic::Ordering::Relaxed,
        );
        m.keys.store(
            view.key_count() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.publication_seq += 1;
        let events = Arc::new(std::mem::take(&mut self.unpublished_events));
        let publication = Publication {
            seq: self.publication_seq,
            view,
            raft_term: self.raft.term(),
            events,
            resync: std::mem::take(&mut self.cluster.resync_watchers),
        };
        self.latest.publish(
            publication.seq,
            publication.view.clone(),
            publication.raft_term,
        );
        for (shard, streams_open) in &self.shards {
            // SeqCst pairs with the shard's announcement of its first stream (shard.rs).
            if streams_open.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                continue;
            }
            // Bounded: a shard that stops draining makes the sequencer wait, not grow memory.
            let _ = shard.send(publication.clone());
        }
    }

    fn status(&self) -> StatusInfo {
        // dbSize is the revision store's file, as etcd reports its bbolt file.
        let (size, in_use) = match &self.durability {
            Some(d) => {
                let (file, used) = d.link.size_bytes();
                (file as i64, used as i64)
            }
            None => (self.wal.size_bytes() as i64, self.wal.size_bytes() as i64),
        };
        StatusInfo {
            leader: self.raft.leader_id(),
            raft_index: self.raft.last_index(),
            raft_term: self.raft.term(),
            raft_applied_index: self.applied_index,
            db_size_bytes: size,
            db_size_in_use_bytes: in_use,
            revision: self.store.revision(),
            is_learner: self.raft.conf_state().learners.contains(&self.member_id),
            alarms: self.store.view().alarms(),
        }
    }
}

fn timed_out() -> KvError {
    KvError::Unavailable("etcdserver: request timed out".into())
}

fn lost() -> KvError {
    KvError::Unavailable(
        "etcdserver: request timed out, possibly due to previous leader failure".into(),
    )
}

fn propose_error(err: ProposeError) -> KvError {
    match err {
        ProposeError::NoLeader => KvError::Unavailable("etcdserver: no leader".into()),
        ProposeError::NotLeader { .. } => KvError::Cluster(
            corekv_engine::StatusCode::FailedPrecondition,
            "etcdserver: not leader".into(),
        ),
        ProposeError::Dropped(why) => {
            KvError::Unavailable(format!("etcdserver: request dropped: {why}"))
        }
    }
}
