//! A deterministic simulated cluster of [`RaftNode`]s.
//!
//! Everything runs on one thread in discrete steps driven by one seeded RNG: a step may
//! inject a fault, ticks every live node, delivers the network's due messages in random
//! order, lets clients invoke operations, and drives every node's cycles (a crash may come
//! between a cycle's early messages and its persistence, losing it). Safety invariants are
//! checked as the run goes; at the end the faults stop, the cluster must make progress and
//! converge within a bound, and the clients' history must be linearizable.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use corekv_linearizability::{check, History, Op, OpId, Outcome, Response};
use corekv_raft::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Cycle, Entry,
    EntryType, HardState, Message, MessageType, NodeOptions, RaftNode, Restored,
};

use super::kv::{read_ctx, Cmd, Image, Key, Reply, Request, Value};
use super::rng::Rng;

/// What a run looks like. Everything else follows from the seed.
#[derive(Debug, Clone)]
pub struct Params {
    pub seed: u64,
    /// Initial voters (ids 1..=nodes).
    pub nodes: usize,
    pub clients: usize,
    pub keys: u8,
    /// Steps with faults; then the faults stop.
    pub fault_steps: u64,
    /// After the faults stop, steps within which the cluster must commit a new client
    /// write and then converge.
    pub calm_bound: u64,
    /// Steps before a client gives up on an operation (its outcome is then unknown).
    pub client_timeout: u64,
    pub entries_kept_max: u64,
    /// Election timeouts are drawn per incarnation from `10..=10 + election_jitter` ticks;
    /// little jitter means contested elections (split votes, competing candidates).
    pub election_jitter: u64,
    /// Per-mille chances.
    pub drop: u32,
    pub duplicate: u32,
    pub long_delay: u32,
    pub crash: u32,
    /// Chance, per cycle taken, that the node crashes after sending the cycle's early
    /// messages but before the cycle is durable.
    pub crash_in_cycle: u32,
    /// Chance, per cycle that records a vote, of a crash and reboot right after it.
    pub crash_after_vote: u32,
    pub restart: u32,
    pub partition: u32,
    pub heal: u32,
    /// Add a learner, promote it, then remove a voter while the faults run.
    pub membership: bool,
    /// Bootstrap the initial voters from a snapshot at index 1 holding the membership (as
    /// raft-rs's examples do), so the log starts at 2 and a member that joins later with
    /// an empty log must be sent a snapshot, which carries the membership. Without it, a
    /// joiner replays the conf changes from index 1 onto an empty membership and ends up
    /// believing it is the only voter (see `joining_member_replaying_the_log_from_1`).
    pub bootstrap_snapshot: bool,
    /// Stop a member once it applies its own removal (as etcd does). raft-rs cannot run a
    /// removed leader: it panics on the next append response (see
    /// `removed_leader_left_running`).
    pub shut_down_removed: bool,
    /// Chance per step that the leader is asked to hand leadership to a random voter.
    pub transfer: u32,
    /// Record a commit advance only with the member's next write, not at once, as the
    /// sequencer does (a crash in between loses it; recovery must cope).
    pub lazy_commit: bool,
    /// Deliberate harness bugs, to prove the checks catch them (see the self-tests):
    /// serve reads from local state without a read index,
    pub bug_stale_reads: bool,
    /// and lose the vote on restart.
    pub bug_forget_votes: bool,
}

impl Params {
    /// The configuration a seed runs with: 3 or 5 voters, membership changes on half the
    /// seeds, so a seed alone replays a run.
    pub fn for_seed(seed: u64) -> Params {
        Params {
            seed,
            nodes: if seed & 1 == 0 { 3 } else { 5 },
            clients: 5,
            keys: 3,
            fault_steps: 1500,
            calm_bound: 1000,
            client_timeout: 60,
            entries_kept_max: 4,
            election_jitter: if matches!(seed % 3, 0) { 1 } else { 10 },
            drop: 50,
            duplicate: 30,
            long_delay: 10,
            crash: 4,
            crash_in_cycle: 2,
            crash_after_vote: 30,
            restart: 15,
            partition: 5,
            heal: 10,
            membership: seed % 4 >= 2,
            bootstrap_snapshot: true,
            shut_down_removed: true,
            transfer: 3,
            lazy_commit: matches!((seed / 2) % 2, 1),
            bug_stale_reads: false,
            bug_forget_votes: false,
        }
    }
}

/// What happened in a run (for the test's summary).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub steps: u64,
    pub ops: u64,
    pub ok: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub leader_terms: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    /// Snapshots raft asked for at an index whose image the sender no longer (or not yet)
    /// had: refused with `report_snapshot(.., false)`.
    pub snapshots_unavailable: u64,
    pub conf_changes: u64,
    pub messages: u64,
    /// A hash of every committed entry (term, data) in index order: equal across two runs
    /// of one seed iff they committed the same log.
    pub log_digest: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.ops += o.ops;
        self.ok += o.ok;
        self.failed += o.failed;
        self.timed_out += o.timed_out;
        self.crashes += o.crashes;
        self.partitions += o.partitions;
        self.leader_terms += o.leader_terms;
        self.snapshots_sent += o.snapshots_sent;
        self.snapshots_installed += o.snapshots_installed;
        self.snapshots_unavailable += o.snapshots_unavailable;
        self.conf_changes += o.conf_changes;
        self.messages += o.messages;
        self.log_digest = self.log_digest.rotate_left(5) ^ o.log_digest;
    }
}

/// What a member has made durable: its raft log and hard state, and the state machine image
/// at the point where the log's head was released.
#[derive(Default)]
struct Disk {
    hs: HardState,
    conf: ConfState,
    entries: Vec<Entry>,
    snapshot: Option<(u64, u64)>,
    image: Image,
}

impl Disk {
    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.map_or(0, |s| s.0), |e| e.index)
    }

    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let start = self.snapshot.map_or(0, |s| s.0);
        assert!(
            first.index > start && first.index <= self.last_index() + 1,
            "entries at {} do not follow the durable log ({}..={})",
            first.index,
            start,
            self.last_index()
        );
        self.entries.retain(|e| e.index < first.index);
        self.entries.extend_from_slice(entries);
    }
}

struct PendingRead {
    client: u64,
    seq: u64,
    key: Key,
    index: Option<u64>,
}

struct Node {
    id: u64,
    /// `None` while crashed.
    raft: Option<RaftNode>,
    disk: Disk,
    sm: Image,
    applied: u64,
    commit_seen: u64,
    /// State machine image and membership after each recent applied index (to fill in the
    /// data of snapshots raft asks this node to send).
    images: BTreeMap<u64, (Image, ConfState)>,
    /// Writes proposed here, answered when they apply here: (client, seq).
    writes: BTreeSet<(u64, u64)>,
    /// Proposals made here as leader: (client, seq) -> the index `propose` returned.
    leader_proposals: BTreeMap<(u64, u64), u64>,
    reads: Vec<PendingRead>,
    /// When a crashed node comes back by itself (a quick reboot); otherwise it restarts
    /// at random.
    restart_at: Option<u64>,
    /// A commit advance not yet on disk (with `lazy_commit`).
    commit_unrecorded: bool,
    /// Applied its own removal from the cluster: shut down for good, as etcd does (raft-rs
    /// cannot run a leader that is not a member: it panics on the next append response).
    removed: bool,
}

struct Packet {
    at: u64,
    msg: Message,
}

struct Call {
    seq: u64,
    op: OpId,
    node: u64,
    deadline: u64,
    write: bool,
    invoked_at: u64,
}

struct Client {
    id: u64,
    next_seq: u64,
    call: Option<Call>,
}

/// The membership changes a run walks through, one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Idle,
    AddLearner(u64),
    Promote(u64),
    Remove(u64),
    Done,
}

pub struct Sim {
    p: Params,
    rng: Rng,
    now: u64,
    nodes: BTreeMap<u64, Node>,
    net: Vec<Packet>,
    /// Which side of a partition each node is on (all 0 when healed).
    side: BTreeMap<u64, u8>,
    /// A member whose outgoing (`true`) or incoming messages are all lost.
    one_way: Option<(u64, bool)>,
    faults: bool,
    clients: Vec<Client>,
    history: History,
    /// Values written per key (for compare-and-set's expected values).
    written: BTreeMap<Key, Vec<Value>>,
    leaders: BTreeMap<u64, u64>,
    /// The first node to apply each index records it; all others must agree.
    canon: BTreeMap<u64, (u64, EntryType, Vec<u8>, Image)>,
    stage: Stage,
    stage_retry_at: u64,
    membership_rounds: u32,
    /// When the faults stopped, and whether a write invoked since has completed.
    calm_start: Option<u64>,
    progressed: bool,
    trace: VecDeque<String>,
    pub stats: Stats,
}

const TRACE_KEPT: usize = 120;
/// Rounds of add-learner, promote, remove-a-voter per run (membership seeds only).
const MEMBERSHIP_ROUNDS: u32 = 4;
const IMAGES_KEPT: usize = 256;
const CHECK_BUDGET: u64 = 5_000_000;

fn key_bytes(key: Key) -> Vec<u8> {
    vec![b'a' + key]
}

fn value_bytes(value: Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

impl Sim {
    pub fn new(p: Params) -> Sim {
        let voters: Vec<u64> = (1..=p.nodes as u64).collect();
        let mut sim = Sim {
            rng: Rng::new(p.seed),
            now: 0,
            nodes: BTreeMap::new(),
            net: Vec::new(),
            side: BTreeMap::new(),
            one_way: None,
            faults: true,
            clients: (1..=p.clients as u64)
                .map(|id| Client {
                    id,
                    next_seq: 1,
                    call: None,
                })
                .collect(),
            history: History::new(),
            written: BTreeMap::new(),
            leaders: BTreeMap::new(),
            canon: BTreeMap::new(),
            stage: if p.membership {
                Stage::Idle
            } else {
                Stage::Done
            },
            stage_retry_at: 0,
            membership_rounds: 0,
            calm_start: None,
            progressed: false,
            trace: VecDeque::new(),
            stats: Stats::default(),
            p,
        };
        for &id in &voters {
            let conf = ConfState {
                voters: voters.clone(),
                ..Default::default()
            };
            let mut disk = Disk {
                conf,
                ..Default::default()
            };
            if sim.p.bootstrap_snapshot {
                disk.snapshot = Some((1, 1));
                disk.hs = HardState {
                    term: 1,
                    vote: 0,
                    commit: 1,
                };
            }
            sim.add_node(id, disk);
        }
        sim
    }

    fn add_node(&mut self, id: u64, disk: Disk) {
        let mut node = Node {
            id,
            raft: None,
            disk,
            sm: Image::default(),
            applied: 0,
            commit_seen: 0,
            images: BTreeMap::new(),
            writes: BTreeSet::new(),
            leader_proposals: BTreeMap::new(),
            reads: Vec::new(),
            removed: false,
            restart_at: None,
            commit_unrecorded: false,
        };
        self.start(&mut node);
        self.side.insert(id, 0);
        self.nodes.insert(id, node);
    }

    /// Builds a node's raft from its disk alone.
    fn start(&mut self, node: &mut Node) {
        // Each incarnation gets its own fixed election timeout from the seed (raft-rs's own
        // randomisation is unseeded, which would make runs unrepeatable).
        let election_ticks = self.rng.range(10, 10 + self.p.election_jitter) as usize;
        let opts = NodeOptions {
            id: node.id,
            heartbeat_ticks: 2,
            election_ticks,
            entries_kept_max: self.p.entries_kept_max,
        };
        let applied = node.disk.snapshot.map_or(0, |s| s.0);
        let restored = Restored {
            hard_state: node.disk.hs.clone(),
            conf_state: node.disk.conf.clone(),
            entries: node.disk.entries.clone(),
            snapshot: node.disk.snapshot,
            applied,
        };
        let raft = RaftNode::new_with_fixed_election_timeout(opts, restored)
            .expect("a node restarts from its disk");
        node.sm = node.disk.image.clone();
        node.applied = applied;
        node.commit_seen = raft.commit_index();
        node.images.clear();
        node.images
            .insert(applied, (node.sm.clone(), node.disk.conf.clone()));
        node.writes.clear();
        node.leader_proposals.clear();
        node.reads.clear();
        node.restart_at = None;
        node.commit_unrecorded = false;
        node.raft = Some(raft);
    }

    fn note(&mut self, event: String) {
        if self.trace.len() == TRACE_KEPT {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("[{}] {event}", self.now));
    }

    /// Fails the run with the seed (to replay it) and the recent events.
    fn fail(&self, why: String) -> ! {
        let mut out = String::new();
        for line in &self.trace {
            let _ = writeln!(out, "  {line}");
        }
        panic!(
            "sim seed {} (replay: SIM_SEED={} cargo test -p corekv-raft --test sim replay) \
             failed at step {}: {why}\nrecent events:\n{out}",
            self.p.seed, self.p.seed, self.now
        );
    }

    /// Runs the whole scenario: faults, then calm, then the checks.
    pub fn run(mut self) -> Stats {
        let _guard = SeedGuard(self.p.seed);
        for _ in 0..self.p.fault_steps {
            self.step(true);
        }
        self.calm();
        self.stats.steps = self.now;
        self.check_history();
        self.stats.leader_terms = self.leaders.len() as u64;
        let mut digest = 0xcbf2_9ce4_8422_2325u64;
        for (index, (term, _, data, _)) in &self.canon {
            for b in index
                .to_le_bytes()
                .iter()
                .chain(&term.to_le_bytes())
                .chain(data)
            {
                digest = (digest ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
        }
        self.stats.log_digest = digest;
        self.stats
    }

    fn step(&mut self, clients_active: bool) {
        self.now += 1;
        if self.faults {
            self.inject_faults();
        }
        self.membership();
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for &id in &ids {
            // A node's clock occasionally lags (skew between members).
            if self.faults && self.rng.chance(30) {
                continue;
            }
            if let Some(raft) = self.nodes.get_mut(&id).unwrap().raft.as_mut() {
                raft.tick();
            }
        }
        self.deliver();
        self.expire_calls();
        if clients_active {
            for c in 0..self.clients.len() {
                if self.clients[c].call.is_none() && self.rng.chance(300) {
                    self.invoke(c);
                }
            }
        }
        for &id in &ids {
            self.drive(id);
        }
        self.check_leaders();
    }

    fn inject_faults(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        let leader = self.leader();
        // Crashes are likelier while there is no leader, to hit elections in progress.
        let crash = if leader.is_some() {
            self.p.crash
        } else {
            self.p.crash * 5
        };
        if self.rng.chance(crash) {
            let alive: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| self.nodes[id].raft.is_some())
                .collect();
            if !alive.is_empty() {
                let victim = match leader {
                    Some(l) if self.rng.chance(500) => l,
                    _ => self.rng.pick(&alive),
                };
                self.crash(victim);
                self.note(format!("crash {victim}"));
            }
        }
        for &id in &ids {
            let node = &self.nodes[&id];
            let due = node.restart_at.is_some_and(|t| t <= self.now);
            if node.raft.is_none() && !node.removed && (due || self.rng.chance(self.p.restart)) {
                let mut node = self.nodes.remove(&id).unwrap();
                self.start(&mut node);
                let applied = node.applied;
                self.nodes.insert(id, node);
                self.note(format!("restart {id} from disk (applied {applied})"));
            }
        }
        if let Some(l) = self.leader() {
            if self.rng.chance(self.p.transfer) {
                let voters = self.nodes[&l].raft.as_ref().unwrap().conf_state().voters;
                let to = self.rng.pick(&voters);
                self.nodes
                    .get_mut(&l)
                    .unwrap()
                    .raft
                    .as_mut()
                    .unwrap()
                    .transfer_leader(to);
                self.note(format!("{l} asked to transfer leadership to {to}"));
            }
        }
        let healed = self.side.values().all(|&s| s == 0) && self.one_way.is_none();
        if healed && self.rng.chance(self.p.partition) && self.rng.chance(250) {
            // A one-way fault: a member's outgoing (or incoming) messages are all lost.
            let id = self.rng.pick(&ids);
            let outgoing = self.rng.chance(500);
            self.one_way = Some((id, outgoing));
            self.stats.partitions += 1;
            let dir = if outgoing { "from" } else { "to" };
            self.note(format!("one-way loss: everything {dir} {id}"));
        } else if healed && self.rng.chance(self.p.partition) {
            let mode = self.rng.below(3);
            let lone = self.rng.pick(&ids);
            for &id in &ids {
                let s = match (mode, leader) {
                    (0, Some(l)) => u8::from(id == l),
                    (1, _) => self.rng.below(2) as u8,
                    _ => u8::from(id == lone),
                };
                self.side.insert(id, s);
            }
            self.stats.partitions += 1;
            let desc = format!("{:?}", self.side);
            self.note(format!("partition {desc}"));
        } else if !healed && self.rng.chance(self.p.heal) {
            self.heal();
        }
    }

    fn heal(&mut self) {
        for s in self.side.values_mut() {
            *s = 0;
        }
        self.one_way = None;
        self.note("heal".to_string());
    }

    /// The leader of the highest term among live nodes.
    fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter_map(|n| n.raft.as_ref())
            .filter(|r| r.is_leader())
            .max_by_key(|r| r.term())
            .map(|r| r.id())
    }

    fn deliver(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].at <= now {
                due.push(self.net.swap_remove(i).msg);
            } else {
                i += 1;
            }
        }
        // Random order among the due messages: the network reorders.
        for i in (1..due.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            due.swap(i, j);
        }
        for msg in due {
            let (from, to) = (msg.from, msg.to);
            let snapshot = msg.msg_type() == MessageType::MsgSnapshot;
            let cut_one_way =
                self.one_way
                    .is_some_and(|(id, outgoing)| if outgoing { from == id } else { to == id });
            let reachable = self.side.get(&from) == self.side.get(&to)
                && !cut_one_way
                && self.nodes.get(&to).is_some_and(|n| n.raft.is_some());
            if !reachable {
                // The sender's transport notices the broken connection.
                if let Some(sender) = self.nodes.get_mut(&from).and_then(|n| n.raft.as_mut()) {
                    if snapshot {
                        sender.report_snapshot(to, false);
                    } else if self.rng.chance(500) {
                        sender.report_unreachable(to);
                    }
                }
                continue;
            }
            let target = self.nodes.get_mut(&to).unwrap().raft.as_mut().unwrap();
            // Errors are raft refusing a message (e.g. from a peer it does not know).
            let _ = target.step(msg);
            if snapshot {
                if let Some(sender) = self.nodes.get_mut(&from).and_then(|n| n.raft.as_mut()) {
                    sender.report_snapshot(to, true);
                }
            }
        }
    }

    fn send(&mut self, from: u64, msgs: Vec<Message>) {
        for mut msg in msgs {
            self.stats.messages += 1;
            if msg.msg_type() == MessageType::MsgSnapshot && !self.attach_image(from, &mut msg) {
                continue;
            }
            if self.faults && self.rng.chance(self.p.drop) {
                if msg.msg_type() == MessageType::MsgSnapshot {
                    if let Some(r) = self.nodes.get_mut(&from).unwrap().raft.as_mut() {
                        r.report_snapshot(msg.to, false);
                    }
                }
                continue;
            }
            let copies = if self.faults && self.rng.chance(self.p.duplicate) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay = if self.faults && self.rng.chance(self.p.long_delay) {
                    self.rng.range(10, 60)
                } else {
                    self.rng.range(1, 3)
                };
                self.net.push(Packet {
                    at: self.now + delay,
                    msg: msg.clone(),
                });
            }
        }
    }

    /// Fills a snapshot message with the sender's state machine at the snapshot's index.
    /// raft-rs builds the message from storage with no data: the caller supplies it.
    fn attach_image(&mut self, from: u64, msg: &mut Message) -> bool {
        let node = self.nodes.get_mut(&from).unwrap();
        let snap = msg
            .snapshot
            .as_mut()
            .expect("MsgSnapshot carries a snapshot");
        let meta = snap.metadata.clone().unwrap_or_default();
        let Some((image, conf)) = node.images.get(&meta.index) else {
            // Not applied yet (or no longer kept): tell raft it failed; it will retry.
            let to = msg.to;
            node.raft.as_mut().unwrap().report_snapshot(to, false);
            let applied = node.applied;
            self.stats.snapshots_unavailable += 1;
            self.note(format!(
                "{from} cannot send snapshot at {} (applied {applied})",
                meta.index
            ));
            return false;
        };
        let meta_conf = meta.conf_state.clone().unwrap_or_default();
        if !same_conf(&meta_conf, conf) {
            let conf = conf.clone();
            self.fail(format!(
                "{from} sends a snapshot at {} whose membership {meta_conf:?} is not the \
                 one at that index {conf:?}",
                meta.index
            ));
        }
        snap.data = image.encode();
        self.stats.snapshots_sent += 1;
        let to = msg.to;
        self.note(format!("{from} sends snapshot at {} to {to}", meta.index));
        true
    }

    /// Runs a node's cycles. raft-rs requires that nothing reaches raft between taking a
    /// cycle and handing it back (a follower that stepped a message meanwhile dies in
    /// `advance_append`: "not leader but has new msg after advance"), so the only thing
    /// that can come between is the early messages leaving and, as a fault, a crash that
    /// loses the cycle.
    fn drive(&mut self, id: u64) {
        for _ in 0..4 {
            let node = self.nodes.get_mut(&id).unwrap();
            let Some(raft) = node.raft.as_mut() else {
                return;
            };
            let Some(mut cycle) = raft.cycle() else {
                return;
            };
            let early = cycle.take_early_messages();
            self.send(id, early);
            if self.faults && self.rng.chance(self.p.crash_in_cycle) {
                let lost = cycle.entries().len();
                self.crash(id);
                self.note(format!(
                    "crash {id} before its cycle was durable ({lost} entries lost)"
                ));
                return;
            }
            let voted = cycle.hard_state().is_some_and(|hs| hs.vote != 0);
            self.persist(id, cycle);
            if voted && self.faults && self.rng.chance(self.p.crash_after_vote) {
                // Crash right after a vote was made durable and sent, and come straight
                // back: the vote must survive, or the member could vote twice in a term.
                self.crash(id);
                self.nodes.get_mut(&id).unwrap().restart_at = Some(self.now + 1);
                self.note(format!("crash {id} just after voting"));
                return;
            }
        }
    }

    fn crash(&mut self, id: u64) {
        // Some crashes are quick reboots: back within a few steps, while the election that
        // the crash may have interrupted is still going (a lost vote would show then).
        let restart_at = self
            .rng
            .chance(400)
            .then(|| self.now + self.rng.range(1, 8));
        let node = self.nodes.get_mut(&id).unwrap();
        node.raft = None;
        node.writes.clear();
        node.reads.clear();
        node.restart_at = restart_at;
        self.stats.crashes += 1;
    }

    /// Makes a cycle durable, hands it back, applies what committed.
    fn persist(&mut self, id: u64, cycle: Cycle) {
        let node = self.nodes.get_mut(&id).unwrap();
        let mut installed = None;
        if let Some(snap) = cycle.snapshot() {
            let meta = snap.metadata.clone().unwrap_or_default();
            let image = Image::decode(&snap.data);
            let conf = meta.conf_state.clone().unwrap_or_default();
            node.disk.snapshot = Some((meta.index, meta.term));
            node.disk.conf = conf.clone();
            node.disk.image = image.clone();
            node.disk.entries.clear();
            installed = Some((meta.index, image, conf));
        }
        node.disk.append(cycle.entries());
        let mut hard_state = cycle.hard_state().cloned();
        let writes = !cycle.entries().is_empty() || hard_state.is_some();
        if writes && hard_state.is_none() && std::mem::take(&mut node.commit_unrecorded) {
            // The commit advance raft reported earlier rides along with this write.
            hard_state = Some(node.raft.as_ref().unwrap().hard_state());
        }
        if let Some(hs) = hard_state {
            node.disk.hs = hs;
            if self.p.bug_forget_votes {
                node.disk.hs.vote = 0;
            }
        }
        let raft = node.raft.as_mut().unwrap();
        let out = raft.persisted(cycle);
        if let Some((index, image, conf)) = installed {
            if index < node.applied {
                let applied = node.applied;
                self.fail(format!(
                    "{id} installs a snapshot at {index} behind its applied {applied}"
                ));
            }
            node.sm = image;
            node.applied = index;
            node.images.clear();
            node.images.insert(index, (node.sm.clone(), conf));
            node.raft.as_mut().unwrap().applied(index);
            self.stats.snapshots_installed += 1;
            self.note(format!("{id} installed snapshot at {index}"));
            self.check_canon(id, index, None);
        }
        let node = self.nodes.get_mut(&id).unwrap();
        if let Some(commit) = out.commit_advanced {
            if self.p.lazy_commit {
                node.commit_unrecorded = true;
            } else {
                node.disk.hs.commit = node.disk.hs.commit.max(commit);
            }
        }
        if node.disk.hs.commit > node.disk.last_index() {
            let (c, l) = (node.disk.hs.commit, node.disk.last_index());
            self.fail(format!(
                "{id} records commit {c} past its durable log (last {l})"
            ));
        }
        for entry in &out.committed {
            self.apply(id, entry);
        }
        let node = self.nodes.get_mut(&id).unwrap();
        if !out.committed.is_empty() {
            let applied = node.applied;
            node.raft.as_mut().unwrap().applied(applied);
            while node.images.len() > IMAGES_KEPT {
                node.images.pop_first();
            }
            self.compact_disk(id);
        }
        let node = self.nodes.get_mut(&id).unwrap();
        for (ctx, index) in out.read_states {
            for read in node.reads.iter_mut() {
                if read_ctx(read.client, read.seq) == ctx {
                    read.index = Some(index);
                }
            }
        }
        self.serve_reads(id);
        let node = self.nodes.get_mut(&id).unwrap();
        if node.removed && self.p.shut_down_removed {
            // Its last messages still go out (e.g. the commit of its own removal).
            self.send(id, out.messages);
            self.crash(id);
            self.note(format!("{id} applied its own removal and shuts down"));
            return;
        }
        let commit = node.raft.as_ref().unwrap().commit_index();
        if commit < node.commit_seen {
            let seen = node.commit_seen;
            self.fail(format!(
                "{id}'s commit index went back from {seen} to {commit}"
            ));
        }
        node.commit_seen = commit;
        self.send(id, out.messages);
    }

    fn apply(&mut self, id: u64, entry: &Entry) {
        let node = self.nodes.get_mut(&id).unwrap();
        if entry.index != node.applied + 1 {
            let applied = node.applied;
            self.fail(format!(
                "{id} is handed entry {} to apply after applying {applied}",
                entry.index
            ));
        }
        let mut answer = None;
        match entry.entry_type() {
            EntryType::EntryNormal => {
                if !entry.data.is_empty() {
                    let req = Request::decode(&entry.data);
                    // A proposal made as leader applies at the index `propose` returned, or
                    // never (the sequencer relies on this to detect lost proposals).
                    if let Some(want) = node.leader_proposals.remove(&(req.client, req.seq)) {
                        if want != entry.index {
                            self.fail(format!(
                                "{id}'s proposal {:?} was promised index {want} but applied at {}",
                                (req.client, req.seq),
                                entry.index
                            ));
                        }
                    }
                    let node = self.nodes.get_mut(&id).unwrap();
                    if let Some(reply) = node.sm.apply(&req) {
                        if node.writes.remove(&(req.client, req.seq)) {
                            answer = Some((req.client, req.seq, reply));
                        }
                    }
                }
            }
            EntryType::EntryConfChangeV2 => {
                let cc = <ConfChangeV2 as prost_raft::Message>::decode(entry.data.as_slice())
                    .expect("a conf change entry decodes");
                let raft = node.raft.as_mut().unwrap();
                match raft.apply_conf_change(&cc) {
                    Ok(conf) => {
                        if !conf.voters.contains(&id) && !conf.learners.contains(&id) {
                            node.removed = true;
                        }
                        self.stats.conf_changes += 1;
                        self.note(format!("{id} applied conf change -> {conf:?}"));
                    }
                    Err(e) => self.note(format!("{id} refused conf change {cc:?}: {e}")),
                }
            }
            EntryType::EntryConfChange => self.fail("unexpected v1 conf change".into()),
        }
        let node = self.nodes.get_mut(&id).unwrap();
        node.applied = entry.index;
        let conf = node.raft.as_ref().unwrap().conf_state();
        node.images.insert(entry.index, (node.sm.clone(), conf));
        self.check_canon(id, entry.index, Some(entry));
        if let Some((client, seq, reply)) = answer {
            let response = match reply {
                Reply::Done => Response::Done,
                Reply::Swapped(s) => Response::Swapped(s),
            };
            self.answer(client, seq, response);
        }
    }

    /// State machine safety: every node applies the same entry at an index and ends up
    /// with the same state machine after it.
    fn check_canon(&mut self, id: u64, index: u64, entry: Option<&Entry>) {
        let image = self.nodes[&id].sm.clone();
        match (self.canon.get(&index), entry) {
            (Some((term, kind, data, canon_image)), _) => {
                if let Some(e) = entry {
                    if (e.term, e.entry_type(), &e.data) != (*term, *kind, data) {
                        self.fail(format!(
                            "{id} applied a different entry at {index}: term {} vs {term}",
                            e.term
                        ));
                    }
                }
                if &image != canon_image {
                    self.fail(format!(
                        "{id}'s state machine after {index} differs: {image:?} vs {canon_image:?}"
                    ));
                }
            }
            (None, Some(e)) => {
                self.canon
                    .insert(index, (e.term, e.entry_type(), e.data.clone(), image));
            }
            // A snapshot at an index nobody applied entry by entry: nothing to compare.
            (None, None) => {}
        }
    }

    /// Releases the durable log's head once well behind what is applied, keeping the
    /// image there instead (what a restart then rebuilds from).
    fn compact_disk(&mut self, id: u64) {
        let keep = self.p.entries_kept_max;
        let node = self.nodes.get_mut(&id).unwrap();
        let start = node.disk.snapshot.map_or(0, |s| s.0);
        if node.applied < start + 3 * keep {
            return;
        }
        let at = node.applied;
        let Some(term) = node
            .disk
            .entries
            .iter()
            .find(|e| e.index == at)
            .map(|e| e.term)
        else {
            return;
        };
        node.disk.snapshot = Some((at, term));
        node.disk.image = node.sm.clone();
        node.disk.conf = node.raft.as_ref().unwrap().conf_state();
        node.disk.entries.retain(|e| e.index > at);
    }

    fn serve_reads(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        let applied = node.applied;
        let mut served = Vec::new();
        node.reads.retain(|r| match r.index {
            Some(index) if index <= applied => {
                served.push((r.client, r.seq, node.sm.data.get(&r.key).copied()));
                false
            }
            _ => true,
        });
        for (client, seq, value) in served {
            self.answer(client, seq, Response::Value(value.map(value_bytes)));
        }
    }

    /// A client gets its answer, if it is still waiting for it.
    fn answer(&mut self, client: u64, seq: u64, response: Response) {
        let c = &mut self.clients[client as usize - 1];
        if c.call.as_ref().is_some_and(|call| call.seq == seq) {
            let call = c.call.take().unwrap();
            if call.write && self.calm_start.is_some_and(|t| call.invoked_at > t) {
                self.progressed = true;
            }
            self.history.ok(call.op, response);
            self.stats.ok += 1;
        }
    }

    fn expire_calls(&mut self) {
        for c in 0..self.clients.len() {
            let expired = self.clients[c]
                .call
                .as_ref()
                .is_some_and(|call| call.deadline <= self.now);
            if expired {
                let call = self.clients[c].call.take().unwrap();
                self.history.timeout(call.op);
                self.stats.timed_out += 1;
                let client = self.clients[c].id;
                if let Some(node) = self.nodes.get_mut(&call.node) {
                    node.writes.remove(&(client, call.seq));
                    node.reads
                        .retain(|r| (r.client, r.seq) != (client, call.seq));
                }
            }
        }
    }

    fn invoke(&mut self, c: usize) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        let node_id = self.rng.pick(&ids);
        let client = self.clients[c].id;
        let seq = self.clients[c].next_seq;
        self.clients[c].next_seq += 1;
        let key = self.rng.below(u64::from(self.p.keys)) as Key;
        let roll = self.rng.below(100);
        self.stats.ops += 1;
        let deadline = self.now + self.p.client_timeout;
        if roll < 40 {
            let op = self.history.invoke(client, Op::get(key_bytes(key)));
            let node = self.nodes.get_mut(&node_id).unwrap();
            let Some(raft) = node.raft.as_mut() else {
                // Connection refused: the read never started.
                self.history.fail(op);
                self.stats.failed += 1;
                return;
            };
            raft.read_index(read_ctx(client, seq));
            node.reads.push(PendingRead {
                client,
                seq,
                key,
                index: self.p.bug_stale_reads.then_some(0),
            });
            self.clients[c].call = Some(Call {
                seq,
                op,
                node: node_id,
                deadline,
                write: false,
                invoked_at: self.now,
            });
            return;
        }
        let value = client * 1_000_000 + seq;
        let cmd = if roll < 70 {
            Cmd::Put { key, value }
        } else if roll < 90 {
            let seen = self.written.get(&key).map_or(&[][..], |v| &v[..]);
            let expected = if seen.is_empty() || self.rng.chance(200) {
                None
            } else {
                // Mostly recent values, so swaps often succeed.
                let back = self.rng.below(seen.len().min(3) as u64) as usize;
                Some(seen[seen.len() - 1 - back])
            };
            Cmd::Cas {
                key,
                expected,
                new: value,
            }
        } else {
            Cmd::Delete { key }
        };
        let op = match &cmd {
            Cmd::Put { key, value } => Op::put(key_bytes(*key), value_bytes(*value)),
            Cmd::Cas { key, expected, new } => Op::cas(
                key_bytes(*key),
                expected.map(value_bytes),
                value_bytes(*new),
            ),
            Cmd::Delete { key } => Op::delete(key_bytes(*key)),
        };
        if !matches!(cmd, Cmd::Delete { .. }) {
            self.written.entry(cmd.key()).or_default().push(value);
        }
        let op = self.history.invoke(client, op);
        let req = Request { client, seq, cmd };
        let node = self.nodes.get_mut(&node_id).unwrap();
        let (accepted, index) = match node.raft.as_mut().map(|r| r.propose(req.encode())) {
            None | Some(Err(_)) => (false, None),
            Some(Ok(index)) => (true, index),
        };
        if let Some(index) = index {
            node.leader_proposals.insert((client, seq), index);
        }
        if !accepted {
            // Refused up front (down, no leader, raft dropped it): it never entered a log.
            self.history.fail(op);
            self.stats.failed += 1;
            return;
        }
        node.writes.insert((client, seq));
        self.clients[c].call = Some(Call {
            seq,
            op,
            node: node_id,
            deadline,
            write: true,
            invoked_at: self.now,
        });
    }

    /// Election safety: at most one leader per term, ever.
    fn check_leaders(&mut self) {
        let mut new_terms = Vec::new();
        for node in self.nodes.values() {
            let Some(raft) = node.raft.as_ref() else {
                continue;
            };
            if raft.is_leader() {
                match self.leaders.get(&raft.term()) {
                    Some(&l) if l != node.id => self.fail(format!(
                        "two leaders in term {}: {l} and {}",
                        raft.term(),
                        node.id
                    )),
                    Some(_) => {}
                    None => new_terms.push((raft.term(), node.id)),
                }
            }
        }
        for (term, id) in new_terms {
            self.leaders.insert(term, id);
            self.note(format!("{id} leads term {term}"));
        }
    }

    /// Walks the membership changes, one at a time, through whichever node leads.
    fn membership(&mut self) {
        if self.stage == Stage::Done || self.now < self.stage_retry_at {
            return;
        }
        if self.stage == Stage::Idle {
            if self.now < 200 {
                return;
            }
            // A new member starts empty and learns everything from the leader.
            let spare = self.nodes.keys().max().unwrap() + 1;
            self.add_node(spare, Disk::default());
            self.note(format!("spare {spare} starts"));
            self.stage = Stage::AddLearner(spare);
        }
        self.stage_retry_at = self.now + 40;
        let Some(leader) = self.leader() else { return };
        let conf = self.nodes[&leader].raft.as_ref().unwrap().conf_state();
        let (done, change) = match self.stage {
            Stage::AddLearner(id) => (
                conf.learners.contains(&id),
                (ConfChangeType::AddLearnerNode, id),
            ),
            Stage::Promote(id) => (conf.voters.contains(&id), (ConfChangeType::AddNode, id)),
            Stage::Remove(id) => (!conf.voters.contains(&id), (ConfChangeType::RemoveNode, id)),
            Stage::Idle | Stage::Done => return,
        };
        if done {
            self.stage = match self.stage {
                Stage::AddLearner(id) => Stage::Promote(id),
                // Any voter may go, the leader and the newcomer included.
                Stage::Promote(_) => Stage::Remove(self.rng.pick(&conf.voters)),
                _ => {
                    self.membership_rounds += 1;
                    if self.membership_rounds < MEMBERSHIP_ROUNDS {
                        Stage::Idle
                    } else {
                        Stage::Done
                    }
                }
            };
            let stage = self.stage;
            self.note(format!("membership stage now {stage:?}"));
            self.stage_retry_at = self.now + 20;
            return;
        }
        let cc = ConfChangeV2 {
            transition: ConfChangeTransition::Auto as i32,
            changes: vec![ConfChangeSingle {
                change_type: change.0 as i32,
                node_id: change.1,
            }],
            context: Vec::new(),
        };
        let raft = self.nodes.get_mut(&leader).unwrap().raft.as_mut().unwrap();
        let result = raft.propose_conf_change(Vec::new(), cc);
        self.note(format!("{leader} proposes {change:?}: {result:?}"));
    }

    /// Stops the faults, then requires progress and convergence within the bound.
    fn calm(&mut self) {
        self.faults = false;
        self.heal();
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.nodes[&id].raft.is_none() && !self.nodes[&id].removed {
                let mut node = self.nodes.remove(&id).unwrap();
                self.start(&mut node);
                self.nodes.insert(id, node);
            }
        }
        self.calm_start = Some(self.now);
        let deadline = self.now + self.p.calm_bound;
        // Progress: a write invoked after the faults stopped completes.
        while !self.progressed {
            if self.now >= deadline {
                self.fail(format!(
                    "no client write completed within {} steps of healing",
                    self.p.calm_bound
                ));
            }
            self.step(true);
        }
        // Convergence: no client waits, and every member has applied the same thing.
        loop {
            if self.now >= deadline {
                self.fail(format!(
                    "members did not converge within {} steps of healing",
                    self.p.calm_bound
                ));
            }
            self.step(false);
            if self.clients.iter().all(|c| c.call.is_none()) && self.converged() {
                break;
            }
        }
    }

    fn converged(&self) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let raft = self.nodes[&leader].raft.as_ref().unwrap();
        let conf = raft.conf_state();
        let target = raft.commit_index();
        let mut images = conf.voters.iter().chain(conf.learners.iter()).map(|id| {
            let n = &self.nodes[id];
            (n.applied, &n.sm)
        });
        let first = images.next();
        first.is_some_and(|(a, sm)| a == target && images.all(|(b, other)| b == a && other == sm))
    }

    fn check_history(&mut self) {
        match check(&self.history, CHECK_BUDGET) {
            Outcome::Linearizable => {}
            Outcome::NotLinearizable(v) => self.fail(format!("history not linearizable: {v}")),
            Outcome::Unknown { key } => self.fail(format!(
                "linearizability check of key {key:?} ran out of budget ({CHECK_BUDGET} steps)"
            )),
        }
    }
}

/// Names the seed when anything panics during a run (raft-rs's own assertions included).
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "sim seed {} panicked (replay: SIM_SEED={} cargo test -p corekv-raft --test \
                 sim replay)",
                self.0, self.0
            );
        }
    }
}

fn same_conf(a: &ConfState, b: &ConfState) -> bool {
    let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
    set(&a.voters) == set(&b.voters) && set(&a.learners) == set(&b.learners)
}
