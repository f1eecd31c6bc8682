//! The leader's lease clock: when each lease expires. No I/O and no clock of its own:
//! every call takes `now`, so tests drive it with a fake clock.
//!
//! The replicated state (the key space's leases) says which leases exist and their TTLs;
//! this says when they run out. Only the leader (the "primary", as etcd calls it) keeps
//! deadlines: it renews leases on keep-alive, finds expired ones and proposes their
//! revocation through the log. A new leader, or the member after a restart, gives every
//! lease `remaining TTL + extend`, where remaining is the last checkpointed value if there
//! is one: that is etcd's lease checkpointing, which keeps a restart from handing long
//! leases a fresh TTL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long a revoke proposed for an expired lease may take to be applied before it is
/// proposed again (etcd's expiredLeaseRetryInterval).
pub const REVOKE_RETRY: Duration = Duration::from_secs(3);

/// One lease the leader tracks.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    ttl_secs: i64,
    /// When the lease runs out.
    expiry: Instant,
    /// When the lease next needs attention: its expiry, or, once its revoke is in flight,
    /// when to propose the revoke again. The key of `by_due`.
    due: Instant,
    /// A revoke for this lease was proposed and not yet applied.
    revoking: bool,
}

/// Lease deadlines, kept only while this member leads.
#[derive(Debug, Default)]
pub struct Lessor {
    primary: bool,
    leases: BTreeMap<i64, Tracked>,
    /// `(due, id)` for every tracked lease, soonest first.
    by_due: BTreeSet<(Instant, i64)>,
    /// Where the last checkpoint sweep stopped (sweeps are bounded and resume here).
    checkpoint_cursor: Option<i64>,
}

/// `now + secs`, saturating far in the future instead of overflowing (TTLs reach 285 years).
fn after(now: Instant, extend: Duration, secs: i64) -> Instant {
    let span = extend.saturating_add(Duration::from_secs(secs.max(0) as u64));
    now.checked_add(span)
        .unwrap_or_else(|| now + Duration::from_secs(u32::MAX as u64))
}

/// Whole seconds from `now` to `expiry`, truncated toward zero (negative once past).
fn secs_left(expiry: Instant, now: Instant) -> i64 {
    match expiry.checked_duration_since(now) {
        Some(left) => left.as_secs() as i64,
        None => -((now - expiry).as_secs() as i64),
    }
}

impl Lessor {
    /// A lessor that is not primary and tracks nothing.
    pub fn new() -> Lessor {
        Lessor::default()
    }

    /// Whether this member keeps deadlines (it leads).
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Number of tracked leases.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Becomes primary and gives every lease `(id, granted TTL, checkpointed remaining TTL
    /// or 0)` the deadline `now + extend + (remaining if checkpointed, else TTL)`. `extend`
    /// is etcd's grace for clients to find the new leader (its election timeout).
    pub fn promote(
        &mut self,
        now: Instant,
        extend: Duration,
        leases: impl IntoIterator<Item = (i64, i64, i64)>,
    ) {
        self.demote();
        self.primary = true;
        for (id, ttl_secs, remaining_secs) in leases {
            let left = if remaining_secs > 0 {
                remaining_secs
            } else {
                ttl_secs
            };
            self.track(id, ttl_secs, after(now, extend, left));
        }
    }

    /// Stops keeping deadlines (another member leads); the next promote starts over.
    pub fn demote(&mut self) {
        self.primary = false;
        self.leases.clear();
        self.by_due.clear();
        self.checkpoint_cursor = None;
    }

    /// A grant was applied: the lease runs from now.
    pub fn granted(&mut self, id: i64, ttl_secs: i64, now: Instant) {
        if self.primary {
            self.forget(id);
            self.track(id, ttl_secs, after(now, Duration::ZERO, ttl_secs));
        }
    }

    /// A revoke was applied (or found the lease gone). Returns whether this lessor had
    /// proposed it because the lease expired.
    pub fn revoked(&mut self, id: i64) -> bool {
        self.forget(id).is_some_and(|t| t.revoking)
    }

    /// etcd's Renew: the lease runs a full TTL from now. `None` if the lease is unknown or
    /// already expired (its revoke is due or in flight, so it cannot be saved).
    pub fn renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let tracked = *self.leases.get(&id)?;
        if tracked.revoking || tracked.expiry <= now {
            return None;
        }
        self.forget(id);
        self.track(
            id,
            tracked.ttl_secs,
            after(now, Duration::ZERO, tracked.ttl_secs),
        );
        Some(tracked.ttl_secs)
    }

    /// Seconds left, truncated toward zero like etcd's `int64(Remaining().Seconds())`
    /// (negative once expired and not yet revoked). `None` if not tracked.
    pub fn remaining_secs(&self, id: i64, now: Instant) -> Option<i64> {
        self.leases.get(&id).map(|t| secs_left(t.expiry, now))
    }

    /// When lease `id` expires, if tracked.
    pub fn expiry(&self, id: i64) -> Option<Instant> {
        self.leases.get(&id).map(|t| t.expiry)
    }

    /// Up to `max` leases whose revoke is due now: expired ones, and ones whose earlier
    /// revoke was not applied within [`REVOKE_RETRY`]. Each is marked in flight until
    /// [`Lessor::revoked`] or the retry time.
    pub fn take_expired(&mut self, now: Instant, max: usize) -> Vec<i64> {
        let due: Vec<i64> = self
            .by_due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(max)
            .map(|(_, id)| *id)
            .collect();
        for &id in &due {
            let tracked = self.forget(id).expect("every due lease is tracked");
            let retry = Tracked {
                revoking: true,
                due: now + REVOKE_RETRY,
                ..tracked
            };
            self.insert(id, retry);
        }
        due
    }

    /// The next part of a checkpoint sweep: `(id, remaining TTL)` of up to `max` leases,
    /// resuming where the last call stopped. A lease qualifies if its TTL is longer than
    /// `interval` (shorter ones lose little on restart, as in etcd) and part of it is used
    /// up. Returns whether the sweep reached the end of the leases.
    pub fn checkpoints(
        &mut self,
        now: Instant,
        interval: Duration,
        max: usize,
    ) -> (Vec<(i64, i64)>, bool) {
        let start = self
            .checkpoint_cursor
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let mut out = Vec::new();
        for (&id, tracked) in self.leases.range((start, std::ops::Bound::Unbounded)) {
            if out.len() >= max {
                return (out, false);
            }
            self.checkpoint_cursor = Some(id);
            if tracked.revoking || tracked.ttl_secs as u64 <= interval.as_secs() {
                continue;
            }
            let left = secs_left(tracked.expiry, now);
            if left > 0 && left < tracked.ttl_secs {
                out.push((id, left));
            }
        }
        self.checkpoint_cursor = None;
        (out, true)
    }

    fn track(&mut self, id: i64, ttl_secs: i64, expiry: Instant) {
        self.insert(
            id,
            Tracked {
                ttl_secs,
                expiry,
                due: expiry,
                revoking: false,
            },
        );
    }

    fn insert(&mut self, id: i64, tracked: Tracked) {
        self.by_due.insert((tracked.due, id));
        self.leases.insert(id, tracked);
    }

    fn forget(&mut self, id: i64) -> Option<Tracked> {
        let tracked = self.leases.remove(&id)?;
        self.by_due.remove(&(tracked.due, id));
        Some(tracked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn primary(t0: Instant, leases: &[(i64, i64, i64)]) -> Lessor {
        let mut l = Lessor::new();
        l.promote(t0, Duration::ZERO, leases.iter().copied());
        l
    }

    #[test]
    fn deadlines_follow_grant_renew_and_revoke() {
        let t0 = Instant::now();
        let mut l = primary(t0, &[]);
        l.granted(1, 10, t0);
        l.granted(2, 5, t0);
        // (at, action, expected remaining of leases 1 and 2 afterwards)
        type Step = (Duration, &'static str, [Option<i64>; 2]);
        let steps: Vec<Step> = vec![
            (Duration::ZERO, "", [Some(10), Some(5)]),
            (S / 2, "", [Some(9), Some(4)]),
            (3 * S, "renew 2", [Some(7), Some(5)]),
            (9 * S, "renew 1", [Some(10), Some(-1)]),
            (9 * S, "revoke 2", [Some(10), None]),
            (9 * S, "regrant 2", [Some(10), Some(5)]),
        ];
        for (at, action, want) in steps {
            let now = t0 + at;
            match action {
                "renew 1" => assert_eq!(l.renew(1, now), Some(10)),
                "renew 2" => assert_eq!(l.renew(2, now), Some(5)),
                "revoke 2" => assert!(!l.revoked(2), "not revoked for expiry"),
                "regrant 2" => l.granted(2, 5, now),
                _ => {}
            }
            assert_eq!(
                [l.remaining_secs(1, now), l.remaining_secs(2, now)],
                want,
                "{action} at {at:?}"
            );
        }
        assert_eq!(l.renew(42, t0), None, "unknown lease");
    }

    #[test]
    fn expired_leases_are_taken_once_then_retried() {
        let t0 = Instant::now();
        let mut l = primary(t0, &[]);
        for (id, ttl) in [(1, 2), (2, 2), (3, 5), (4, 2)] {
            l.granted(id, ttl, t0);
        }
        assert_eq!(l.take_expired(t0 + S, 10), Vec::<i64>::new());
        assert_eq!(
            l.take_expired(t0 + 2 * S, 2),
            vec![1, 2],
            "at most max per call"
        );
        assert_eq!(
            l.take_expired(t0 + 2 * S, 10),
            vec![4],
            "taken ones wait for their retry"
        );
        assert_eq!(
            l.renew(1, t0 + 2 * S),
            None,
            "an expired lease cannot be renewed"
        );
        assert_eq!(l.renew(3, t0 + 2 * S), Some(5));
        assert!(l.revoked(1), "revoked after expiry");
        assert_eq!(
            l.take_expired(t0 + 2 * S + REVOKE_RETRY, 10),
            vec![2, 4],
            "unapplied revokes are retried"
        );
        assert_eq!(l.take_expired(t0 + 7 * S, 10), vec![3]);
        assert_eq!(
            l.remaining_secs(3, t0 + 8 * S),
            Some(-1),
            "expiry stays the real one while revoking"
        );
    }

    #[test]
    fn an_expired_lease_not_yet_taken_cannot_be_renewed() {
        let t0 = Instant::now();
        let mut l = primary(t0, &[(1, 2, 0)]);
        assert_eq!(l.renew(1, t0 + 2 * S), None);
        assert_eq!(l.take_expired(t0 + 2 * S, 10), vec![1]);
    }

    #[test]
    fn promotion_uses_checkpoints_and_extends() {
        let t0 = Instant::now();
        let mut l = Lessor::new();
        assert!(!l.is_primary());
        l.granted(9, 10, t0);
        assert_eq!(l.len(), 0, "a non-primary keeps no deadlines");
        // (id, ttl, checkpointed remaining)
        l.promote(t0, 2 * S, [(1, 60, 0), (2, 60, 20), (3, 5, 0)]);
        assert!(l.is_primary());
        let left: Vec<Option<i64>> = (1..=3).map(|id| l.remaining_secs(id, t0)).collect();
        assert_eq!(
            left,
            vec![Some(62), Some(22), Some(7)],
            "checkpointed leases do not start over"
        );
        assert_eq!(l.take_expired(t0 + 7 * S, 10), vec![3]);
        l.demote();
        assert_eq!(
            (l.is_primary(), l.len(), l.remaining_secs(1, t0)),
            (false, 0, None)
        );
        assert_eq!(l.renew(1, t0), None);
    }

    #[test]
    fn checkpoint_sweeps_are_bounded_and_resume() {
        let t0 = Instant::now();
        let interval = 5 * S;
        // Lease 4's TTL is not above the interval; lease 5 is kept at its full TTL.
        let mut l = primary(t0, &[(1, 60, 0), (2, 60, 0), (3, 60, 0), (4, 5, 0)]);
        l.granted(5, 60, t0 + 10 * S);
        let now = t0 + 10 * S;
        assert_eq!(
            l.checkpoints(now, interval, 2),
            (vec![(1, 50), (2, 50)], false)
        );
        assert_eq!(
            l.checkpoints(now, interval, 2),
            (vec![(3, 50)], true),
            "resumes after 2, skips 4 and 5"
        );
        assert_eq!(
            l.checkpoints(now, interval, 10),
            (vec![(1, 50), (2, 50), (3, 50)], true),
            "starts over"
        );
        l.take_expired(t0 + 60 * S, 1);
        assert_eq!(
            l.checkpoints(t0 + 60 * S, interval, 10),
            (vec![(5, 10)], true),
            "revoking and expired leases are skipped"
        );
    }

    #[test]
    fn huge_ttls_do_not_overflow() {
        let t0 = Instant::now();
        let mut l = primary(t0, &[(1, 9_000_000_000, 0)]);
        assert_eq!(l.remaining_secs(1, t0), Some(9_000_000_000));
        assert_eq!(l.renew(1, t0 + S), Some(9_000_000_000));
    }
}
