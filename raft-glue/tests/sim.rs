//! Deterministic simulation of a raft cluster built from [`corekv_raft::RaftNode`]s.
//!
//! Each seed runs 3 or 5 members through message loss, duplication, delay and reordering,
//! partitions, crashes and restarts from what was persisted (and, on half the seeds, a
//! learner added, promoted, and a voter removed), with clients reading and writing through
//! random members. Safety invariants are checked throughout, liveness after the faults
//! stop, and the clients' history must be linearizable.
//!
//! `SIM_SEEDS=n` runs seeds 0..n (default 200); `SIM_SEED=s` replays one seed (the
//! `replay` test); `SIM_STEPS=n` changes the steps with faults per seed;
//! `SIM_BOOTSTRAP_SNAPSHOT=0` starts a fresh cluster the way `RaftNode` documents it (no
//! snapshot, log from index 1), which exposes the joining-member bug described below.

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
    let started = Instant::now();
    let mut total = Stats::default();
    for seed in 0..seeds {
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

#[test]
fn replay() {
    let Some(seed) = env_u64("SIM_SEED") else {
        return;
    };
    let stats = Sim::new(params(seed)).run();
    eprintln!("seed {seed}: {stats:?}");
}

/// RaftNode bug (found by seed 10): a member that joins with no membership, as `RaftNode`
/// documents ("it learns it from the leader's first append or snapshot"), and is sent the
/// log from index 1 instead of a snapshot, replays the conf changes onto an empty
/// membership: `AddLearnerNode(4)` fails ("removed all voters"), then `AddNode(4)` leaves
/// it believing it is the only voter. It elects itself, and two different entries are
/// committed at the same index. A fresh cluster's initial membership is not in the log
/// (it is only the bootstrap `ConfState`), so the log from index 1 does not describe it.
/// Run with `--ignored` to see it fail; it passes once a fresh cluster's log no longer
/// starts at index 1 without its membership (e.g. bootstrap from a snapshot at index 1,
/// which the default runs do via `bootstrap_snapshot`).
#[test]
#[ignore = "RaftNode bug: a joiner replaying the log from index 1 gets the wrong membership"]
fn joining_member_replaying_the_log_from_1() {
    let mut p = Params::for_seed(10);
    p.bootstrap_snapshot = false;
    Sim::new(p).run();
}
