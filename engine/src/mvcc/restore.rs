//! Rebuilding a [`Store`] from the records the on-disk revision store holds.
//!
//! The records are replayed in revision order through `State::write`, the same primitive
//! `apply` uses, so `keys`, `by_revision`, the live count and the leases' key sets are built by
//! the one set of attach/detach rules. Leases come first so that keys can attach to them.

use std::fmt;

use super::changes::LeaseTtl;
use super::state::{LeaseRecord, State};
use super::{KeyValue, Store};

/// Records or metadata that cannot come from a store: out of order, inconsistent, or out
/// of range. The backend reports it as corruption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreError(String);

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot restore the key space: {}", self.0)
    }
}

impl std::error::Error for RestoreError {}

fn fail<T>(reason: String) -> Result<T, RestoreError> {
    Err(RestoreError(reason))
}

/// Builds a [`Store`] piece by piece: every lease, then every revision record in
/// revision order, then [`Restorer::finish`]. Streaming, so a loader need not hold the
/// records twice.
pub struct Restorer {
    state: State,
    /// The last record's `(main, sub)`.
    last: Option<(i64, i64)>,
}

impl Default for Restorer {
    fn default() -> Self {
        Restorer::new()
    }
}

impl Restorer {
    /// An empty key space with no lease.
    pub fn new() -> Restorer {
        Restorer {
            state: State::new(),
            last: None,
        }
    }

    /// Adds a granted lease. Leases must all come before the first record.
    pub fn lease(&mut self, lease: LeaseTtl) -> Result<(), RestoreError> {
        if self.last.is_some() {
            return fail(format!(
                "lease {} after the first revision record",
                lease.id
            ));
        }
        if lease.id == 0 || self.state.leases.contains_key(&lease.id) {
            return fail(format!("lease ID {} is zero or repeated", lease.id));
        }
        let mut record = LeaseRecord::new(lease.ttl_secs);
        record.remaining_ttl_secs = lease.remaining_ttl_secs;
        self.state.leases.insert(lease.id, record);
        Ok(())
    }

    /// Sets the cluster membership read back from disk.
    pub fn membership(&mut self, membership: crate::membership::Membership) {
        self.state.membership = std::sync::Arc::new(membership);
    }

    /// Sets the auth state (users, roles, switch, auth revision).
    pub fn auth(&mut self, auth: super::auth::AuthState) {
        self.state.auth = auth;
    }

    /// Adds an active alarm (`alarm` type raised by member `member_id`).
    pub fn alarm(&mut self, member_id: u64, alarm: i32) {
        self.state.alarms.insert((alarm, member_id));
    }

    /// Adds the revision record `(main, sub)`; records must come in ascending revision
    /// order, and `kv.mod_revision` must be `main` (tombstones included).
    pub fn record(
        &mut self,
        main: i64,
        sub: i64,
        kv: KeyValue,
        tombstone: bool,
    ) -> Result<(), RestoreError> {
        if main < 1 || !(0..1 << 31).contains(&sub) || kv.mod_revision != main {
            return fail(format!(
                "record at revision ({main}, {sub}) has mod_revision {}",
                kv.mod_revision
            ));
        }
        if self.last.is_some_and(|last| last >= (main, sub)) {
            return fail(format!(
                "record at revision ({main}, {sub}) after {:?}",
                self.last
            ));
        }
        let _ = self.state.write(kv, tombstone, sub);
        self.last = Some((main, sub));
        Ok(())
    }

    /// The store at `revision` with `compact_revision` (etcd's `compactMainRev`: -1 before
    /// any compaction). The revision is stored rather than derived from the records: a
    /// compaction may have removed the newest ones (tombstones), and it must not go back.
    pub fn finish(mut self, revision: i64, compact_revision: i64) -> Result<Store, RestoreError> {
        let newest = self.last.map_or(1, |(main, _)| main);
        if revision < newest {
            return fail(format!(
                "revision {revision} is below the newest record's {newest}"
            ));
        }
        if compact_revision < -1 || compact_revision > revision {
            return fail(format!(
                "compacted revision {compact_revision} outside -1..={revision}"
            ));
        }
        self.state.revision = revision;
        self.state.compact_revision = compact_revision;
        Ok(Store::from_state(self.state))
    }
}

impl Store {
    /// A store rebuilt from persisted state: `leases`, then `records` as `(main, sub, kv,
    /// tombstone)` in ascending revision order, at `revision` with `compact_revision` (-1
    /// before any compaction). Change tracking starts empty: what was restored is already
    /// persisted. See [`Restorer`] for the checks.
    pub fn restore(
        records: impl IntoIterator<Item = (i64, i64, KeyValue, bool)>,
        leases: impl IntoIterator<Item = LeaseTtl>,
        compact_revision: i64,
        revision: i64,
    ) -> Result<Store, RestoreError> {
        let mut r = Restorer::new();
        for lease in leases {
            r.lease(lease)?;
        }
        for (main, sub, kv, tombstone) in records {
            r.record(main, sub, kv, tombstone)?;
        }
        r.finish(revision, compact_revision)
    }
}
