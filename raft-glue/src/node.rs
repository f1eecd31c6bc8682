//! [`RaftNode`]: one member's raft state machine, driven in cycles by the sequencer.
//!
//! A cycle is: take what raft wants persisted ([`RaftNode::cycle`]), make it durable (the
//! caller's WAL append: one write + one fdatasync for the whole batch), then hand the cycle
//! back ([`RaftNode::persisted`]) to learn which entries are committed and which read
//! requests may be served. Entries are applied in log order and acknowledged with
//! [`RaftNode::applied`]. Pre-vote and check-quorum are on, as the cluster design requires.

use raft::eraftpb::{ConfChangeV2, ConfState, Entry, HardState, Message, Snapshot};
use raft::storage::MemStorage;
use raft::{RawNode, ReadOnlyOption, SnapshotStatus, StateRole};

/// How this member's raft is configured.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// This member's raft id (etcd's member id); never 0.
    pub id: u64,
    /// Ticks between heartbeats (etcd: 1 tick = --heartbeat-interval).
    pub heartbeat_ticks: usize,
    /// Ticks without a leader before an election.
    pub election_ticks: usize,
    /// Entries kept in memory behind the applied index, so lagging followers can be served
    /// without a snapshot. Older entries live only in the WAL.
    pub entries_kept_max: u64,
}

/// The durable raft state found in the WAL on start.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// Log entries in index order, conflicts already resolved: from index 1, or from just
    /// after `snapshot` when there is one.
    pub entries: Vec<Entry>,
    /// Where the log starts when its head was released: (index, term) of the last entry
    /// whose effects a durable store already holds. Entries up to it are not in `entries`.
    pub snapshot: Option<(u64, u64)>,
    /// Highest index already applied to the key space (entries up to it are not re-delivered).
    pub applied: u64,
}

/// Why a proposal was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// No leader is known, so the proposal cannot be forwarded.
    NoLeader,
    /// Only the leader may do this (membership changes, leader transfer).
    NotLeader { leader_id: u64 },
    /// raft refused it (e.g. the uncommitted log is over its size limit).
    Dropped(String),
}

/// What raft wants made durable before anything else happens.
pub struct Cycle {
    ready: raft::Ready,
}

impl Cycle {
    /// Messages that may leave before this cycle is durable: a leader's appends go to the
    /// followers before its own fdatasync (raft's asynchronous persistence). Nothing may be
    /// stepped into raft between [`RaftNode::cycle`] and [`RaftNode::persisted`].
    pub fn take_early_messages(&mut self) -> Vec<Message> {
        self.ready.take_messages()
    }
    /// A snapshot from the leader to install before this cycle's entries, if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        let snap = self.ready.snapshot();
        (!snap.is_empty()).then_some(snap)
    }
    /// New log entries to append to the WAL, in index order.
    pub fn entries(&self) -> &[Entry] {
        self.ready.entries()
    }
    /// The hard state to record, if it changed.
    pub fn hard_state(&self) -> Option<&HardState> {
        self.ready.hs()
    }
    /// Whether this cycle must be fdatasync'ed before it is handed back.
    pub fn must_sync(&self) -> bool {
        self.ready.must_sync()
    }
}

/// What became true once a cycle was durable.
#[derive(Debug, Default)]
pub struct ReadReady {
    /// Entries committed and ready to apply, in log order.
    pub committed: Vec<Entry>,
    /// Linearizable reads that may be served once `applied >= index`: (request context, index).
    pub read_states: Vec<(Vec<u8>, u64)>,
    /// Messages for peers (empty on a single member).
    pub messages: Vec<Message>,
    /// The commit index, when it advanced after this cycle was persisted. raft-rs does not
    /// put this advance in a later cycle's hard state, so the caller records it itself.
    pub commit_advanced: Option<u64>,
}

/// One member's raft, without I/O.
pub struct RaftNode {
    raw: RawNode<MemStorage>,
    opts: NodeOptions,
}

impl RaftNode {
    /// Builds the node from recovered state. A fresh member passes a conf state naming the
    /// initial voters and no entries.
    pub fn new(opts: NodeOptions, restored: Restored) -> Result<RaftNode, raft::Error> {
        RaftNode::build(opts, restored, false)
    }

    /// Like [`RaftNode::new`], but the election timeout is exactly `election_ticks` rather
    /// than drawn from raft-rs's unseeded thread RNG in `[election_ticks, 2 *
    /// election_ticks)`: for deterministic simulation, where the caller jitters the
    /// timeouts itself (e.g. a different `election_ticks` per member) from its own seed.
    pub fn new_with_fixed_election_timeout(
        opts: NodeOptions,
        restored: Restored,
    ) -> Result<RaftNode, raft::Error> {
        RaftNode::build(opts, restored, true)
    }

    fn build(
        opts: NodeOptions,
        restored: Restored,
        fixed_election_timeout: bool,
    ) -> Result<RaftNode, raft::Error> {
        assert!(opts.id != 0, "raft id 0 is reserved");
        // A member joining an existing cluster starts with no membership and must learn it
        // from a snapshot: replaying membership changes from index 1 onto an empty
        // membership gives a wrong one (the simulation found two leaders that way). The
        // server guarantees the snapshot by starting every new cluster's log after index 1.
        let log_start = restored.snapshot.map_or(0, |(index, _)| index);
        assert!(
            restored
                .entries
                .first()
                .is_none_or(|e| e.index == log_start + 1),
            "entries follow the snapshot"
        );
        assert!(restored.applied <= restored.entries.last().map_or(log_start, |e| e.index));
        let storage = MemStorage::new();
        {
            let mut core = storage.wl();
            if let Some((index, term)) = restored.snapshot {
                let mut snapshot = raft::eraftpb::Snapshot::default();
                let meta = snapshot.metadata.get_or_insert_with(Default::default);
                meta.index = index;
                meta.term = term;
                meta.conf_state = Some(restored.conf_state.clone());
                core.apply_snapshot(snapshot)?;
            }
            core.set_conf_state(restored.conf_state.clone());
            core.append(&restored.entries)?;
            let mut hard_state = restored.hard_state.clone();
            hard_state.commit = hard_state.commit.max(log_start);
            hard_state.term = hard_state
                .term
                .max(restored.snapshot.map_or(0, |(_, term)| term));
            core.set_hardstate(hard_state);
        }
        let mut config = raft::Config {
            id: opts.id,
            heartbeat_tick: opts.heartbeat_ticks,
            election_tick: opts.election_ticks,
            applied: restored.applied,
            pre_vote: true,
            check_quorum: true,
            read_only_option: ReadOnlyOption::Safe,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_uncommitted_size: 64 * 1024 * 1024,
            ..Default::default()
        };
        if fixed_election_timeout {
            // raft-rs draws from [min, max); a range of one is a fixed timeout.
            config.min_election_tick = opts.election_ticks;
            config.max_election_tick = opts.election_ticks + 1;
        }
        config.validate()?;
        let raw = RawNode::new(&config, storage, &crate::log_bridge::logger())?;
        Ok(RaftNode { raw, opts })
    }

    /// Starts an election now (a single member elects itself at once).
    pub fn campaign(&mut self) -> Result<(), raft::Error> {
        self.raw.campaign()
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// Proposes a client write. On the leader, returns the log index it will have if
    /// committed; a follower forwards it to the leader (raft's MsgProp) and learns its
    /// fate by applying it (or not, if the leader changes meanwhile), so gets `None`.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<Option<u64>, ProposeError> {
        let leading = self.raw.raft.state == StateRole::Leader;
        if !leading && self.raw.raft.leader_id == raft::INVALID_ID {
            return Err(ProposeError::NoLeader);
        }
        self.raw
            .propose(Vec::new(), data)
            .map_err(|e| ProposeError::Dropped(e.to_string()))?;
        Ok(leading.then(|| self.raw.raft.raft_log.last_index()))
    }

    /// Proposes a membership change; `context` travels with the entry. Like
    /// [`Self::propose`], a follower forwards it to the leader and gets no index.
    pub fn propose_conf_change(
        &mut self,
        context: Vec<u8>,
        change: ConfChangeV2,
    ) -> Result<Option<u64>, ProposeError> {
        let leading = self.raw.raft.state == StateRole::Leader;
        if !leading && self.raw.raft.leader_id == raft::INVALID_ID {
            return Err(ProposeError::NoLeader);
        }
        self.raw
            .propose_conf_change(context, change)
            .map_err(|e| ProposeError::Dropped(e.to_string()))?;
        Ok(leading.then(|| self.raw.raft.raft_log.last_index()))
    }

    /// Applies a committed membership change; returns the membership after it.
    pub fn apply_conf_change(&mut self, change: &ConfChangeV2) -> Result<ConfState, raft::Error> {
        let conf = self.raw.apply_conf_change(change)?;
        self.raw.store().wl().set_conf_state(conf.clone());
        Ok(conf)
    }

    /// Hands raft a message from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), raft::Error> {
        self.raw.step(message)
    }

    /// Asks the leader to hand leadership to `transferee` (leader only; raft checks it).
    pub fn transfer_leader(&mut self, transferee: u64) {
        self.raw.transfer_leader(transferee);
    }

    /// Tells raft a peer could not be reached, so it probes instead of streaming appends.
    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    /// Tells raft how sending a snapshot to `id` ended.
    pub fn report_snapshot(&mut self, id: u64, delivered: bool) {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(id, status);
    }

    /// The term of the entry at `index`, if the in-memory log still holds it.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        self.raw.raft.raft_log.term(index).ok()
    }

    /// The highest log index known to be replicated on `id` (leader only).
    pub fn matched(&self, id: u64) -> Option<u64> {
        if self.raw.raft.state != StateRole::Leader {
            return None;
        }
        self.raw.raft.prs().get(id).map(|p| p.matched)
    }

    /// Whether this member may campaign (it is a voter).
    pub fn is_voter(&self) -> bool {
        self.conf_state().voters.contains(&self.opts.id)
    }

    /// Asks for a read index; the answer comes back in a later [`ReadReady::read_states`]
    /// carrying the same context. One call serves every read waiting at that moment.
    pub fn read_index(&mut self, context: Vec<u8>) {
        self.raw.read_index(context);
    }

    /// Takes the next cycle of work, if raft has any.
    pub fn cycle(&mut self) -> Option<Cycle> {
        if !self.raw.has_ready() {
            return None;
        }
        Some(Cycle {
            ready: self.raw.ready(),
        })
    }

    /// Hands back a cycle whose entries and hard state are now durable.
    pub fn persisted(&mut self, cycle: Cycle) -> ReadReady {
        let mut ready = cycle.ready;
        if !ready.snapshot().is_empty() {
            // The caller installed the snapshot's data; the log now starts after it.
            self.raw
                .store()
                .wl()
                .apply_snapshot(ready.snapshot().clone())
                .expect("a snapshot raft accepted is newer than the log");
        }
        let mut out = ReadReady {
            committed: ready.take_committed_entries(),
            read_states: take_read_states(&mut ready),
            messages: ready.take_messages(),
            commit_advanced: None,
        };
        out.messages.extend(ready.take_persisted_messages());
        {
            let store = self.raw.store().clone();
            let mut core = store.wl();
            core.append(ready.entries())
                .expect("entries follow the log");
            if let Some(hs) = ready.hs() {
                core.set_hardstate(hs.clone());
            }
        }
        let mut light = self.raw.advance_append(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.store().wl().mut_hard_state().commit = commit;
            out.commit_advanced = Some(commit);
        }
        out.committed.extend(light.take_committed_entries());
        out.messages.extend(light.take_messages());
        out
    }

    /// Records that every entry up to `index` has been applied, and trims the in-memory log.
    pub fn applied(&mut self, index: u64) {
        self.raw.advance_apply_to(index);
        let keep = self.opts.entries_kept_max;
        let store = self.raw.store().clone();
        let first = raft::Storage::first_index(&store).unwrap_or(1);
        if index > keep && index - keep > first + keep {
            // Trim in chunks of `keep` so compaction cost is amortised.
            store
                .wl()
                .compact(index - keep)
                .expect("compact below applied");
        }
    }

    /// The current membership (voters and learners).
    pub fn conf_state(&self) -> ConfState {
        self.raw.raft.prs().conf().to_conf_state()
    }

    /// The durable raft state as it stands (term, vote, commit).
    pub fn hard_state(&self) -> HardState {
        self.raw.raft.hard_state()
    }
    /// The current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }
    /// The leader this member knows of (0 if none).
    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }
    /// Whether this member leads.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }
    /// The highest committed index.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }
    /// The highest index in the log.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }
    /// This member's raft id.
    pub fn id(&self) -> u64 {
        self.opts.id
    }
}

fn take_read_states(ready: &mut raft::Ready) -> Vec<(Vec<u8>, u64)> {
    ready
        .take_read_states()
        .into_iter()
        .map(|rs| (rs.request_ctx, rs.index))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(id: u64) -> RaftNode {
        let opts = NodeOptions {
            id,
            heartbeat_ticks: 1,
            election_ticks: 10,
            entries_kept_max: 4,
        };
        let restored = Restored {
            conf_state: ConfState {
                voters: vec![id],
                ..Default::default()
            },
            ..Default::default()
        };
        RaftNode::new(opts, restored).unwrap()
    }

    /// Runs cycles until raft is idle, "persisting" to nowhere; returns what was committed.
    fn drain(node: &mut RaftNode, persisted_log: &mut Vec<Entry>) -> ReadReady {
        let mut all = ReadReady::default();
        for _ in 0..16 {
            let Some(cycle) = node.cycle() else { break };
            persisted_log.extend(cycle.entries().iter().cloned());
            let out = node.persisted(cycle);
            if let Some(last) = out.committed.last() {
                node.applied(last.index);
            }
            all.committed.extend(out.committed);
            all.read_states.extend(out.read_states);
        }
        all
    }

    #[test]
    fn single_member_elects_itself_and_commits_in_order() {
        let mut node = single(1);
        let mut log = Vec::new();
        node.campaign().unwrap();
        drain(&mut node, &mut log);
        assert!(node.is_leader());
        let idx: Vec<u64> = (0..3)
            .map(|i| node.propose(vec![i]).unwrap().unwrap())
            .collect();
        assert_eq!(idx, vec![idx[0], idx[0] + 1, idx[0] + 2]);
        let out = drain(&mut node, &mut log);
        let data: Vec<Vec<u8>> = out
            .committed
            .iter()
            .filter(|e| !e.data.is_empty())
            .map(|e| e.data.clone())
            .collect();
        assert_eq!(data, vec![vec![0], vec![1], vec![2]]);
        assert_eq!(out.committed.last().unwrap().index, idx[2]);
        // Every committed entry was handed out for persistence first.
        assert!(log.iter().any(|e| e.index == idx[2]));
    }

    #[test]
    fn read_index_is_answered_at_commit() {
        let mut node = single(1);
        let mut log = Vec::new();
        node.campaign().unwrap();
        drain(&mut node, &mut log);
        node.propose(b"x".to_vec()).unwrap();
        drain(&mut node, &mut log);
        node.read_index(b"r1".to_vec());
        let out = drain(&mut node, &mut log);
        assert_eq!(out.read_states, vec![(b"r1".to_vec(), node.commit_index())]);
    }

    #[test]
    fn restart_from_a_released_log_head_continues_after_it() {
        let opts = NodeOptions {
            id: 3,
            heartbeat_ticks: 1,
            election_ticks: 10,
            entries_kept_max: 4,
        };
        let tail: Vec<Entry> = (101..=103)
            .map(|index| Entry {
                index,
                term: 2,
                data: vec![index as u8],
                ..Default::default()
            })
            .collect();
        let restored = Restored {
            hard_state: HardState {
                term: 2,
                vote: 3,
                commit: 103,
            },
            conf_state: ConfState {
                voters: vec![3],
                ..Default::default()
            },
            entries: tail,
            snapshot: Some((100, 2)),
            applied: 103,
        };
        let mut node = RaftNode::new(opts, restored).unwrap();
        let mut log = Vec::new();
        node.campaign().unwrap();
        drain(&mut node, &mut log);
        assert!(node.is_leader());
        let index = node.propose(b"next".to_vec()).unwrap().unwrap();
        assert!(
            index > 104,
            "new entries follow the recovered tail (got {index})"
        );
        let out = drain(&mut node, &mut log);
        assert_eq!(out.committed.last().unwrap().data, b"next".to_vec());
    }

    #[test]
    fn follower_refuses_proposals() {
        let mut node = single(1);
        assert_eq!(node.propose(vec![1]), Err(ProposeError::NoLeader));
    }

    #[test]
    fn restart_keeps_the_log_and_does_not_reapply() {
        let mut node = single(7);
        let mut log = Vec::new();
        node.campaign().unwrap();
        drain(&mut node, &mut log);
        for i in 0..10u8 {
            node.propose(vec![i]).unwrap();
        }
        drain(&mut node, &mut log);
        let applied = node.commit_index();
        let restored = Restored {
            hard_state: HardState {
                term: node.term(),
                vote: 7,
                commit: applied,
            },
            conf_state: ConfState {
                voters: vec![7],
                ..Default::default()
            },
            entries: log.clone(),
            snapshot: None,
            applied,
        };
        let opts = NodeOptions {
            id: 7,
            heartbeat_ticks: 1,
            election_ticks: 10,
            entries_kept_max: 4,
        };
        let mut again = RaftNode::new(opts, restored).unwrap();
        again.campaign().unwrap();
        let out = drain(&mut again, &mut log);
        // Only the new term's empty entry is delivered; nothing applied before comes back.
        assert!(out
            .committed
            .iter()
            .all(|e| e.index > applied && e.data.is_empty()));
        assert!(again.is_leader());
        assert!(again.term() > node.term() - 1);
    }
}
