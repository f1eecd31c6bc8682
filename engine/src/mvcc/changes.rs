//! Change tracking for the on-disk revision store (`crate::backend`).
//!
//! Every successful [`super::Store::apply`] notes what it changed; [`super::Store::take_changes`]
//! hands the notes over as a [`ChangeSet`], which the server commits to the backend together
//! with the raft index it covers. The notes share the records the key space already holds
//! (`Arc`s), so tracking costs a pointer copy per written revision and nothing is encoded on
//! the apply path: encoding happens when the backend commits.
//!
//! Memory: a `ChangeSet` holds every record written since the last drain (alive even if a
//! compaction has since dropped it from the key space) and the revisions compaction removed.
//! It is bounded only by how often the owner drains it; the server drains after each applied
//! batch and commits every ~100 ms or 10,000 changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::state::Record;
use super::KeyValue;

/// A lease as the revision store keeps it: its TTLs. The keys attached to it are not stored;
/// they follow from the live keys' `lease` fields when the key space is restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTtl {
    pub id: i64,
    /// The TTL granted, in seconds.
    pub ttl_secs: i64,
    /// The remaining TTL recorded by the last checkpoint; 0 if none.
    pub remaining_ttl_secs: i64,
}

/// One revision record written by an applied command, borrowed from a [`ChangeSet`].
#[derive(Clone, Copy, Debug)]
pub struct WrittenRecord<'a> {
    /// Main revision (equal to `kv.mod_revision`).
    pub main: i64,
    /// Sub revision: the change's position within its command.
    pub sub: i64,
    /// For a tombstone only `key` and `mod_revision` are set.
    pub kv: &'a KeyValue,
    pub tombstone: bool,
}

/// What the key space changed since the last [`super::Store::take_changes`]: revision
/// records written, history entries compaction removed, leases granted, checkpointed or
/// revoked, and the store's revision and compacted revision at the time it was taken.
///
/// Pass it to `Backend::commit`. Several sets can be folded into one with
/// [`ChangeSet::merge`] (older first) before a single commit.
#[derive(Clone, Default)]
pub struct ChangeSet {
    /// Revision records in the order they were written (revision order): `(sub, record)`;
    /// the main revision is the record's `mod_revision`.
    written: Vec<(i64, Arc<Record>)>,
    /// `(main, sub)` revisions compaction removed. Applied after `written`: a removed
    /// revision may have been written in this same set, never rewritten after removal.
    removed: Vec<(i64, i64)>,
    /// The last state of every lease touched: `None` = revoked.
    leases: BTreeMap<i64, Option<LeaseTtl>>,
    /// `(revision, raw compacted revision)` of the store when taken; `None` for a set that
    /// did not come from a store (the backend then keeps what it has).
    position: Option<(i64, i64)>,
    /// The whole set of active alarms as `(alarm type, member ID)` if an alarm request
    /// changed it; `None` if untouched.
    alarms: Option<Vec<(i32, u64)>>,
    /// The whole membership if a command changed it; `None` if untouched.
    membership: Option<Arc<crate::membership::Membership>>,
    /// The whole auth state if an auth command changed it; `None` if untouched.
    auth: Option<super::auth::AuthState>,
}

impl std::fmt::Debug for ChangeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeSet")
            .field("written", &self.written.len())
            .field("removed", &self.removed.len())
            .field("leases", &self.leases.len())
            .field("position", &self.position)
            .field("alarms", &self.alarms)
            .field("auth", &self.auth.is_some())
            .finish()
    }
}

impl ChangeSet {
    /// Number of changes: records written, history entries removed, leases touched, and
    /// one for a changed alarm set.
    pub fn len(&self) -> usize {
        self.written.len()
            + self.removed.len()
            + self.leases.len()
            + usize::from(self.alarms.is_some())
            + usize::from(self.membership.is_some())
            + usize::from(self.auth.is_some())
    }

    /// True if nothing changed (the set may still move the revision: commit it anyway to
    /// advance the consistent index).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store's revision when this set was taken (`None` for a default set).
    pub fn revision(&self) -> Option<i64> {
        self.position.map(|(rev, _)| rev)
    }

    /// The store's compacted revision when this set was taken: etcd's `compactMainRev`,
    /// -1 before any compaction (`None` for a default set).
    pub fn compact_revision(&self) -> Option<i64> {
        self.position.map(|(_, compact)| compact)
    }

    /// Folds `later`, a set taken after this one, into this one.
    pub fn merge(&mut self, later: ChangeSet) {
        if self.written.is_empty() {
            self.written = later.written;
        } else {
            self.written.extend(later.written);
        }
        if self.removed.is_empty() {
            self.removed = later.removed;
        } else {
            self.removed.extend(later.removed);
        }
        self.leases.extend(later.leases);
        if later.position.is_some() {
            self.position = later.position;
        }
        if later.alarms.is_some() {
            self.alarms = later.alarms;
        }
        if later.membership.is_some() {
            self.membership = later.membership;
        }
        if later.auth.is_some() {
            self.auth = later.auth;
        }
    }

    /// The records written, in revision order.
    pub fn written(&self) -> impl Iterator<Item = WrittenRecord<'_>> + '_ {
        self.written.iter().map(|(sub, r)| WrittenRecord {
            main: r.kv.mod_revision,
            sub: *sub,
            kv: &r.kv,
            tombstone: r.tombstone(),
        })
    }

    /// The `(main, sub)` revisions compaction removed, to be applied after [`Self::written`].
    pub fn removed(&self) -> &[(i64, i64)] {
        &self.removed
    }

    /// Every lease touched, ascending by ID, with its last state (`None` = revoked).
    pub fn leases(&self) -> impl Iterator<Item = (i64, Option<LeaseTtl>)> + '_ {
        self.leases.iter().map(|(id, l)| (*id, *l))
    }

    /// The whole set of active alarms as `(alarm type, member ID)`, ascending, if this set
    /// changed it (`None`: the stored alarms stay as they are).
    pub fn alarms(&self) -> Option<&[(i32, u64)]> {
        self.alarms.as_deref()
    }

    /// The whole membership, if this set changed it.
    pub fn membership(&self) -> Option<&crate::membership::Membership> {
        self.membership.as_deref()
    }

    pub(super) fn note_membership(&mut self, membership: Arc<crate::membership::Membership>) {
        self.membership = Some(membership);
    }

    /// The whole auth state if this set changed it (`None`: the stored auth state stays).
    pub fn auth(&self) -> Option<&super::auth::AuthState> {
        self.auth.as_ref()
    }

    pub(super) fn note_auth(&mut self, auth: super::auth::AuthState) {
        self.auth = Some(auth);
    }

    pub(super) fn note_alarms(&mut self, alarms: Vec<(i32, u64)>) {
        self.alarms = Some(alarms);
    }

    pub(super) fn note_written(&mut self, sub: i64, record: Arc<Record>) {
        self.written.push((sub, record));
    }

    pub(super) fn note_removed(&mut self, removed: Vec<(i64, i64)>) {
        if self.removed.is_empty() {
            self.removed = removed;
        } else {
            self.removed.extend(removed);
        }
    }

    pub(super) fn note_lease(&mut self, id: i64, lease: Option<LeaseTtl>) {
        self.leases.insert(id, lease);
    }

    pub(super) fn set_position(&mut self, revision: i64, compact_revision: i64) {
        self.position = Some((revision, compact_revision));
    }
}
