//! Deterministic simulation of a raft cluster built from [`corekv_raft::RaftNode`]s.
//!
//! Each seed runs 3 or 5 members through message loss, duplication, delay and reordering,
//! partitions, crashes and restarts from what was persisted, leader transfers, and (on
//! half the seeds) rounds of adding a learner, promoting it and removing a voter, with
//! clients reading and writing through random members. Safety invariants are checked
//! throughout, liveness after the faults stop, and the clients' history must be
//! linearizable. See docs/raft-simulation.md.
//!
//! - `SIM_SEEDS=n` runs n seeds (default 200) from `SIM_FIRST_SEED` (default 0).
//! - `SIM_SEED=s` replays one seed in the `replay` test (default: seed 1).
//! - `SIM_STEPS=n` changes the steps with faults per seed (default 1500).
//! - `SIM_BOOTSTRAP_SNAPSHOT=0` starts a fresh cluster the way `RaftNode` documents it (no
//!   snapshot, log from index 1), which exposes the joining-member bug described below.

mod sim {
    pub mod cluster;
    pub mod kv;
    pub mod rng;
}

use sim::cluster::{Params, Sim, Stats};
use std::time::Instant;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

fn params(seed: u64) -> Params {
    let mut p = Params::for_seed(seed);
    if let Some(steps) = env_u64("SIM_STEPS") {
        p.fault_steps = steps;
    }
    if let Some(b) = env_u64("SIM_BOOTSTRAP_SNAPSHOT") {
        p.bootstrap_snapshot = b != 0;
    }
    p
}

#[test]
fn many_seeds() {
    let seeds = env_u64("SIM_SEEDS").unwrap_or(200);
    let first = env_u64("SIM_FIRST_SEED").unwrap_or(0);
    let started = Instant::now();
    let mut total = Stats::default();
    for seed in first..first + seeds {
        total.add(&Sim::new(params(seed)).run());
    }
    eprintln!("{seeds} seeds in {:.1?}: {total:?}", started.elapsed());
    // The faults must actually have exercised the paths the run claims to cover.
    assert!(total.crashes > 0 && total.partitions > 0, "{total:?}");
    assert!(
        total.snapshots_installed > 0,
        "no snapshot was ever installed: {total:?}"
    );
    assert!(
        total.ok > total.ops / 4,
        "too few operations succeeded: {total:?}"
    );
    assert!(total.timed_out > 0 && total.failed > 0, "{total:?}");
    if seeds >= 4 {
        assert!(total.conf_changes > 0, "{total:?}");
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [7, 10] {
        let first = Sim::new(params(seed)).run();
        let second = Sim::new(params(seed)).run();
        assert_eq!(first, second, "seed {seed} ran differently twice");
        assert!(first.ok > 0 && first.log_digest != 0, "{first:?}");
    }
}

/// Replays `SIM_SEED` (the seed a failure names), or seed 1, printing its statistics.
#[test]
fn replay() {
    let seed = env_u64("SIM_SEED").unwrap_or(1);
    let stats = Sim::new(params(seed)).run();
    eprintln!("seed {seed}: {stats:?}");
    assert!(stats.ok > 0, "{stats:?}");
}

/// RaftNode bug: a member that joins with no membership, as `RaftNode::new` documents
/// ("it learns it from the leader's first append or snapshot"), and is sent the log from
/// index 1 rather than a snapshot, replays the conf changes onto an empty membership:
/// `AddLearnerNode(4)` fails ("removed all voters"), then `AddNode(4)` leaves it believing
/// it is the only voter. It elects itself alone, and two leaders share a term (or two
/// entries are committed at one index). A fresh cluster's initial membership is only the
/// bootstrap `ConfState`, never a log entry, so the log from index 1 does not describe it.
/// Seed 82 shows it ("two leaders in term 5: 4 and 1"). Run with `--ignored`; it passes
/// once a fresh cluster's log no longer starts at index 1 without its membership (e.g. a
/// bootstrap snapshot at index 1, as the other tests do via `bootstrap_snapshot`).
#[test]
#[ignore = "RaftNode bug: a joiner replaying the log from index 1 gets the wrong membership"]
fn joining_member_replaying_the_log_from_1() {
    for seed in 0..200 {
        let mut p = Params::for_seed(seed);
        p.bootstrap_snapshot = false;
        Sim::new(p).run();
    }
}

/// raft-rs limitation the sequencer must handle: a leader that applies its own removal
/// keeps leading, and panics in `maybe_commit` (unwrap of its own missing progress) on the
/// next append response. etcd stops a member once it applies its own removal; the other
/// tests do the same (`shut_down_removed`). Run with `--ignored` to see the panic.
#[test]
#[ignore = "raft-rs panics when a removed leader keeps running; the caller must stop it"]
fn removed_leader_left_running() {
    for seed in 0..200 {
        let mut p = Params::for_seed(seed);
        p.shut_down_removed = false;
        Sim::new(p).run();
    }
}

/// The checks have teeth: a harness that serves reads from a member's local state without
/// a read index returns stale values, and the linearizability check must say so.
#[test]
#[should_panic(expected = "history not linearizable")]
fn self_test_stale_reads_are_caught() {
    for seed in 0..50 {
        let mut p = params(seed);
        p.bug_stale_reads = true;
        Sim::new(p).run();
    }
}

/// The checks have teeth: members that forget their vote on restart can elect two leaders
/// in one term, and election safety must say so.
#[test]
#[should_panic(expected = "two leaders in term")]
fn self_test_forgotten_votes_are_caught() {
    for seed in 0..200 {
        let mut p = params(seed);
        p.bug_forget_votes = true;
        Sim::new(p).run();
    }
}
