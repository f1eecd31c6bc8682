//! The multi-version key space, with etcd 3.4's revision semantics.
//!
//! [`Store`] is the single writer: it applies committed [`Command`]s in log order, each one
//! atomically (a command that fails changes nothing). [`ReadView`] is an immutable snapshot
//! taken in O(1); readers keep it as long as they like and never block the writer.
//!
//! The state lives in persistent structures (`imbl` maps, a chunked log), so a snapshot is a clone of the
//! roots and a write copies only the paths it touches (once per published view: a command
//! runs in place and undoes itself if it fails, see `txn.rs`):
//! - `keys`: each key's newest record (a tombstone if deleted), the fast path for ordinary
//!   reads; older revisions of the key are a chain of revision links back from it, for
//!   reads in the past;
//! - `by_revision`: every record by `(main, sub)` revision, an append-only chunked log
//!   (`revlog.rs`): watchers catching up read it in order, and every history link (past
//!   reads, compaction, HashKV) is looked up in it.
//!
//! Persistence: every applied command's changes are recorded (`changes.rs`) and drained
//! with [`Store::take_changes`] for the on-disk revision store (`crate::backend`), which
//! rebuilds a store on start through [`Store::restore`] / [`Restorer`] (`restore.rs`).
//!
//! Behaviour follows etcd's `applierV3backend` and `mvcc` packages rule by rule, quirks
//! included (see the submodules), because clients and tests compare us with real etcd.

pub mod alarm;
pub mod auth;
mod changes;
mod compact;
mod compare;
mod gosort;
mod hash;
pub mod lease;
mod map_key;
mod range;
mod range_encode;
mod restore;
mod revlog;
mod state;
mod txn;
pub mod validate;

#[cfg(test)]
mod alarm_tests;
#[cfg(test)]
mod changes_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod range_encode_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;

use crate::pb;
use crate::request::Command;
use crate::KvError;
use state::State;

pub use changes::{ChangeSet, LeaseTtl, WrittenRecord};
pub use hash::KvHash;
pub(crate) use hash::{resolve_hash_revision, Hasher, KvRef};
pub use range::RangeAnswer;
pub use range_encode::HeaderFields;
pub use restore::{RestoreError, Restorer};

/// `mvccpb.Event.EventType` values.
const EVENT_PUT: i32 = 0;
const EVENT_DELETE: i32 = 1;

/// The single writer of the key space.
///
/// It also records what each applied command changed, for the on-disk revision store:
/// drain it with [`Store::take_changes`] (see [`ChangeSet`] for the memory this holds).
pub struct Store {
    state: State,
    /// Changes since the last [`Store::take_changes`].
    changes: ChangeSet,
    /// Whether `apply` records changes (on unless switched off).
    tracking: bool,
    /// The auth state as applied, for the network layer's permission checks.
    auth_shared: std::sync::Arc<auth::AuthShared>,
}

/// The outcome of one applied command.
#[derive(Debug)]
pub struct Applied {
    /// etcd's response for the command; the top-level header carries only the revision.
    pub response: CommandResponse,
    /// The changes, in the order they were made (sub revision order); empty if none.
    pub events: Vec<Event>,
    /// The store's revision after the command.
    pub revision: i64,
}

/// The response to a [`Command`], one variant per command kind.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandResponse {
    Put(pb::PbPutResponse),
    DeleteRange(pb::PbDeleteResponse),
    Txn(pb::PbTxnResponse),
    Compact(pb::PbCompactionResponse),
    LeaseGrant(pb::PbLeaseGrantResponse),
    LeaseRevoke(pb::PbLeaseRevokeResponse),
    /// A checkpoint has no etcd response message; the header carries the revision.
    LeaseCheckpoint(Option<pb::PbResponseHeader>),
    /// etcd's alarm response carries no header.
    Alarm(pb::PbAlarmResponse),
    /// A membership change or update: the members after it.
    Members(Vec<crate::membership::Member>),
    /// An auth change: the header carries the revision; the network layer builds the
    /// method's response message.
    Auth(Option<pb::PbResponseHeader>),
}

/// A lease as a [`ReadView`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    /// The TTL granted, in seconds.
    pub ttl_secs: i64,
    /// The remaining TTL recorded by the last checkpoint; 0 if none.
    pub remaining_ttl_secs: i64,
    /// The live keys attached to the lease, in key order.
    pub keys: Vec<Bytes>,
}

/// One change to one key, for watch fan-out. It shares the store's records, so making and
/// cloning one copies no bytes (and leaves the records' buffers unshared: a key-value
/// cloned into an event cost each value a 24-byte sharing header for life).
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    record: Arc<state::Record>,
    prev: Option<Arc<state::Record>>,
}

/// Whether an [`Event`] put or deleted its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One revision of one key, as etcd's `mvccpb.KeyValue` but with shared bytes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    /// Main revision of the first put of the key's current generation.
    pub create_revision: i64,
    /// Main revision of the key's last change.
    pub mod_revision: i64,
    /// Number of puts in the current generation (1 on create).
    pub version: i64,
    pub lease: i64,
}

/// An immutable snapshot of the key space. Cloning is O(1).
#[derive(Clone)]
pub struct ReadView {
    state: State,
}

impl Store {
    /// An empty store: revision 1 and nothing compacted, as a fresh etcd.
    pub fn new() -> Store {
        Store::from_state(State::new())
    }

    fn from_state(state: State) -> Store {
        let auth_shared = std::sync::Arc::new(auth::AuthShared::default());
        auth_shared.publish(&state.auth);
        Store {
            state,
            changes: ChangeSet::default(),
            tracking: true,
            auth_shared,
        }
    }

    /// The applied auth state, kept current by every auth change this store applies:
    /// hand it to the network layer before the store goes to its writer.
    pub fn auth_shared(&self) -> std::sync::Arc<auth::AuthShared> {
        self.auth_shared.clone()
    }

    /// Applies a client's committed write atomically, after etcd's auth checks against the
    /// state it applies to (`header` from the log entry; see
    /// [`crate::request::InternalRequest::auth_header`]). A refused command changes nothing
    /// and fails with etcd's error ("permission denied", "user name is empty", ...).
    /// Without a header the command is the server's own and is applied unchecked.
    pub fn apply_as(
        &mut self,
        command: &Command,
        header: Option<&crate::request::AuthHeader>,
    ) -> Result<Applied, KvError> {
        if let Some(header) = header {
            let caller = (!header.username.is_empty()).then(|| auth::AuthInfo {
                username: header.username.clone(),
                revision: header.revision,
            });
            auth::check_command(&self.state, caller.as_ref(), command)?;
        }
        self.apply(command)
    }

    /// Applies one committed write atomically: on `Err` nothing changed. No auth check:
    /// for the server's own requests and stores without auth (see [`Store::apply_as`]).
    pub fn apply(&mut self, command: &Command) -> Result<Applied, KvError> {
        // An active alarm refuses some writes outright (etcd's capped / corrupt appliers).
        if let Some(err) = alarm::refusal(&self.state, command) {
            return Err(err);
        }
        let before = self.state.revision;
        // Key-space writes run in place and undo themselves on failure (txn.rs); the rare
        // other commands work on an O(1) copy that replaces the state only on success.
        let in_place = matches!(
            command,
            Command::Put(_) | Command::DeleteRange(_) | Command::Txn(_)
        );
        let (mut alarms_changed, mut members_changed, mut auth_changed) = (false, false, false);
        let (response, events, removed) = if in_place {
            run(&mut self.state, command)?
        } else {
            let mut work = self.state.clone();
            let outcome = run(&mut work, command)?;
            alarms_changed =
                matches!(command, Command::Alarm(_)) && work.alarms != self.state.alarms;
            members_changed = !Arc::ptr_eq(&work.membership, &self.state.membership);
            auth_changed = matches!(command, Command::Auth(_)) && work.auth != self.state.auth;
            self.state = work;
            outcome
        };
        if auth_changed {
            self.auth_shared.publish(&self.state.auth);
            if self.tracking {
                self.changes.note_auth(self.state.auth.clone());
            }
        }
        if self.tracking {
            self.track(command, before, removed);
            if alarms_changed {
                self.changes
                    .note_alarms(self.state.alarms.iter().copied().collect());
            }
            if members_changed {
                self.changes.note_membership(self.state.membership.clone());
            }
        }
        Ok(Applied {
            response,
            events,
            revision: self.state.revision,
        })
    }

    /// Notes what the command just applied changed: the records at the new revision (if
    /// it moved: only a write moves it), compaction's removals, and the leases it touched.
    fn track(&mut self, command: &Command, before: i64, removed: Vec<(i64, i64)>) {
        let now = self.state.revision;
        if now > before {
            for ((_, sub), record) in self
                .state
                .by_revision
                .iter_from((now, i64::MIN))
                .take_while(|(rev, _)| rev.0 == now)
            {
                self.changes.note_written(*sub, record.clone());
            }
        }
        if !removed.is_empty() {
            self.changes.note_removed(removed);
        }
        let ttl = |state: &State, id: i64| {
            state.leases.get(&id).map(|l| LeaseTtl {
                id,
                ttl_secs: l.ttl_secs,
                remaining_ttl_secs: l.remaining_ttl_secs,
            })
        };
        match command {
            Command::LeaseGrant(r) => self.changes.note_lease(r.id, ttl(&self.state, r.id)),
            Command::LeaseRevoke(r) => self.changes.note_lease(r.id, None),
            Command::LeaseCheckpoint(r) => {
                for cp in &r.checkpoints {
                    if let Some(lease) = ttl(&self.state, cp.id) {
                        self.changes.note_lease(cp.id, Some(lease));
                    }
                }
            }
            _ => {}
        }
    }

    /// Sets the membership of a new cluster before its first entry (every initial member
    /// derives the same one from its flags). Tracked, so the revision store persists it.
    pub fn seed_membership(&mut self, membership: crate::membership::Membership) {
        assert!(
            self.state.membership.is_empty(),
            "membership is seeded once, into an empty store"
        );
        self.state.membership = Arc::new(membership);
        if self.tracking {
            self.changes.note_membership(self.state.membership.clone());
        }
    }

    /// How many changes are waiting for [`Store::take_changes`].
    pub fn pending_changes(&self) -> usize {
        self.changes.len()
    }

    /// Everything applied since the last call, for the on-disk revision store, stamped
    /// with the current revision and compacted revision. Leaves an empty set behind.
    pub fn take_changes(&mut self) -> ChangeSet {
        let mut changes = std::mem::take(&mut self.changes);
        changes.set_position(self.state.revision, self.state.compact_revision);
        changes
    }

    /// Switches change tracking on or off (it is on from [`Store::new`] and
    /// [`Store::restore`]). Off suits a store that is never persisted (tools, tests): a
    /// store whose changes are not drained keeps them all. Switching off drops what is
    /// pending; a store persisted by a backend must keep tracking on.
    pub fn set_change_tracking(&mut self, on: bool) {
        self.tracking = on;
        if !on {
            self.changes = ChangeSet::default();
        }
    }
    /// An O(1) immutable snapshot of the current state.
    pub fn view(&self) -> ReadView {
        ReadView {
            state: self.state.clone(),
        }
    }

    /// The current revision (1 for an empty store).
    pub fn revision(&self) -> i64 {
        self.state.revision
    }

    /// The last compacted revision; 0 before any compaction.
    pub fn compact_revision(&self) -> i64 {
        self.state.reported_compact_revision()
    }
}

#[cfg(test)]
impl Store {
    /// Grants leases (TTL 60 s) directly, without a command, so key-space tests can attach
    /// them without going through grant.
    pub(crate) fn grant_leases_for_tests(&mut self, ids: impl IntoIterator<Item = i64>) {
        for id in ids {
            self.state.leases.insert(id, state::LeaseRecord::new(60));
        }
    }

    /// A store where leases 1..=16 exist (TTL 60 s).
    pub(crate) fn with_test_leases() -> Store {
        let mut store = Store::new();
        store.grant_leases_for_tests(1..=16);
        store
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl ReadView {
    /// The revision this snapshot was taken at.
    pub fn revision(&self) -> i64 {
        self.state.revision
    }

    /// The compacted revision when this snapshot was taken; 0 before any compaction.
    pub fn compact_revision(&self) -> i64 {
        self.state.reported_compact_revision()
    }

    /// etcd's Range, read from this snapshot.
    pub fn range(&self, req: &pb::PbRangeRequest) -> Result<pb::PbRangeResponse, KvError> {
        range::range(&self.state, req)
    }

    /// etcd's Range, read from this snapshot, as an answer not yet put in a message: the
    /// selected records are shared with the snapshot, nothing is copied. Encode it with
    /// [`RangeAnswer::encode`] (or build the message with [`RangeAnswer::to_pb`]).
    pub fn range_answer(&self, req: &pb::PbRangeRequest) -> Result<RangeAnswer, KvError> {
        range::answer(&self.state, req)
    }

    /// etcd's Range, read from this snapshot, as the protobuf encoding of its
    /// `RangeResponse` with `header` filled in: the same bytes as prost-encoding
    /// [`ReadView::range`]'s response after the network layer fills its header, written
    /// from the records into one buffer of the final size.
    pub fn range_encoded(
        &self,
        req: &pb::PbRangeRequest,
        header: HeaderFields,
    ) -> Result<Bytes, KvError> {
        Ok(self.range_answer(req)?.encode_to_bytes(&header))
    }

    /// etcd's Txn for a read-only txn (see [`validate::is_read_only`]), read from this
    /// snapshot: compares and ranges see this view; nothing is written.
    pub fn txn_read_only(&self, req: &pb::PbTxnRequest) -> Result<pb::PbTxnResponse, KvError> {
        debug_assert!(
            validate::is_read_only(req),
            "only read-only txns are served from a view"
        );
        let mut work = self.state.clone();
        let (resp, events) = txn::apply_txn(&mut work, req)?;
        assert!(events.is_empty(), "a read-only txn produced events");
        Ok(resp)
    }

    /// The changes a watcher of `key`/`range_end` (etcd's range encoding) missed: every
    /// event with `after < revision <= up_to` (clamped to this view), in revision order, at
    /// most `events_max`. Fails with `Compacted` if history after `after` is gone.
    pub fn changes(
        &self,
        key: &[u8],
        range_end: &[u8],
        after: i64,
        up_to: i64,
        events_max: usize,
    ) -> Result<Vec<Event>, KvError> {
        if after + 1 < self.state.compact_revision {
            return Err(KvError::Compacted);
        }
        let up_to = up_to.min(self.state.revision);
        if up_to <= after {
            return Ok(Vec::new());
        }
        Ok(self.state.changes(
            &state::KeyRange::new(key, range_end),
            after,
            up_to,
            events_max,
        ))
    }

    /// The IDs of every granted lease, ascending.
    pub fn leases(&self) -> Vec<i64> {
        self.state.leases.keys().copied().collect()
    }

    /// Number of granted leases.
    pub fn lease_count(&self) -> usize {
        self.state.leases.len()
    }

    /// One lease with its attached keys, if granted.
    pub fn lease(&self, id: i64) -> Option<LeaseInfo> {
        self.state.leases.get(&id).map(|l| LeaseInfo {
            id,
            ttl_secs: l.ttl_secs,
            remaining_ttl_secs: l.remaining_ttl_secs,
            keys: l.keys.iter().cloned().collect(),
        })
    }

    /// `(granted TTL, checkpointed remaining TTL or 0)` of lease `id`, without its keys.
    pub fn lease_ttl(&self, id: i64) -> Option<(i64, i64)> {
        self.state
            .leases
            .get(&id)
            .map(|l| (l.ttl_secs, l.remaining_ttl_secs))
    }

    /// Every lease as `(id, granted TTL, checkpointed remaining TTL or 0)`, ascending by ID,
    /// without the key sets (what the lessor needs to take over deadlines).
    pub fn lease_ttls(&self) -> Vec<(i64, i64, i64)> {
        self.state
            .leases
            .iter()
            .map(|(id, l)| (*id, l.ttl_secs, l.remaining_ttl_secs))
            .collect()
    }

    /// The cluster's members as of this view.
    pub fn membership(&self) -> &crate::membership::Membership {
        &self.state.membership
    }

    /// Users, roles, permissions and the auth switch in this snapshot.
    pub fn auth(&self) -> &auth::AuthState {
        &self.state.auth
    }

    /// The active alarms as `(member ID, alarm type)`, ordered by type then member.
    pub fn alarms(&self) -> Vec<(u64, i32)> {
        self.state
            .alarms
            .iter()
            .map(|(alarm, member)| (*member, *alarm))
            .collect()
    }

    /// Number of live keys in this snapshot.
    pub fn key_count(&self) -> usize {
        self.state.live_keys
    }

    /// etcd's HashKV at `revision` (0 = current) over this snapshot: the same CRC-32C etcd
    /// computes over the same history (see `hash.rs` for what is hashed). Fails as etcd
    /// does for `0 < revision <= compacted` and for a future revision.
    pub fn hash_kv(&self, revision: i64) -> Result<KvHash, KvError> {
        hash::hash_state(&self.state, revision)
    }
}

/// Everything a snapshot holds, for tests that compare two stores structurally.
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Dump {
    pub revision: i64,
    pub compact_revision: i64,
    /// `(main, sub, kv, tombstone, previous revision of the key if history holds it)`
    /// from `by_revision`.
    pub by_revision: Vec<(i64, i64, KeyValue, bool, Option<(i64, i64)>)>,
    /// `keys`: key, revision of its newest record, and whether that record is the one
    /// `by_revision` holds at that revision.
    pub keys: Vec<(Bytes, i64, i64, bool)>,
    /// The live keys and the mod_revision of each.
    pub latest: Vec<(Bytes, i64)>,
    pub live_keys: usize,
    pub leases: Vec<(i64, i64, i64, Vec<Bytes>)>,
}

#[cfg(test)]
impl ReadView {
    pub(crate) fn dump(&self) -> Dump {
        let s = &self.state;
        let by_revision = s
            .by_revision
            .iter()
            .map(|((m, sub), r)| {
                let prev = r.prev().filter(|p| s.by_revision.contains_key(p));
                (*m, *sub, r.kv.clone(), r.tombstone(), prev)
            })
            .collect();
        let keys = s
            .keys
            .iter()
            .map(|(k, r)| {
                let at = (r.kv.mod_revision, r.sub());
                let same = s
                    .by_revision
                    .get(&at)
                    .is_some_and(|b| std::sync::Arc::ptr_eq(b, r));
                assert_eq!(k.as_slice(), &r.kv.key[..], "a key maps to its own records");
                (Bytes::copy_from_slice(k.as_slice()), at.0, at.1, same)
            })
            .collect();
        Dump {
            revision: s.revision,
            compact_revision: s.compact_revision,
            by_revision,
            keys,
            latest: s
                .keys
                .iter()
                .filter(|(_, r)| !r.tombstone())
                .map(|(k, r)| (Bytes::copy_from_slice(k.as_slice()), r.kv.mod_revision))
                .collect(),
            live_keys: s.live_keys,
            leases: s
                .leases
                .iter()
                .map(|(id, l)| {
                    (
                        *id,
                        l.ttl_secs,
                        l.remaining_ttl_secs,
                        l.keys.iter().cloned().collect(),
                    )
                })
                .collect(),
        }
    }
}

impl KeyValue {
    /// The protobuf form (copies the bytes).
    pub fn to_pb(&self) -> pb::PbKeyValue {
        pb::PbKeyValue {
            key: self.key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: self.value.to_vec(),
            lease: self.lease,
        }
    }
}

impl Event {
    /// The change `record` made; `prev` is the key's record it replaced, if that was live.
    fn new(record: Arc<state::Record>, prev: Option<Arc<state::Record>>) -> Event {
        debug_assert!(prev.as_ref().is_none_or(|p| !p.tombstone()));
        let kind = if record.tombstone() {
            EventKind::Delete
        } else {
            EventKind::Put
        };
        Event { kind, record, prev }
    }

    /// For a put the new key-value; for a delete the key and the deleting revision only.
    pub fn kv(&self) -> &KeyValue {
        &self.record.kv
    }

    /// The key-value this change replaced, if the key was live before it.
    pub fn prev_kv(&self) -> Option<&KeyValue> {
        self.prev.as_ref().map(|r| &r.kv)
    }

    /// The protobuf form. As etcd, a delete's kv carries only the key and mod_revision.
    pub fn to_pb(&self, with_prev_kv: bool) -> pb::PbEvent {
        let (r#type, kv) = match self.kind {
            EventKind::Put => (EVENT_PUT, self.kv().to_pb()),
            EventKind::Delete => (
                EVENT_DELETE,
                pb::PbKeyValue {
                    key: self.kv().key.to_vec(),
                    mod_revision: self.kv().mod_revision,
                    ..Default::default()
                },
            ),
        };
        let prev_kv = if with_prev_kv {
            self.prev_kv().map(KeyValue::to_pb)
        } else {
            None
        };
        pb::PbEvent {
            r#type,
            kv: Some(kv),
            prev_kv,
        }
    }
}

/// Runs one command on `work`: its response, its events and the history compaction
/// removed. Put, DeleteRange and Txn change nothing when they fail; the others may leave
/// `work` half-changed on failure, so the caller gives them a copy.
fn run(
    work: &mut State,
    command: &Command,
) -> Result<(CommandResponse, Vec<Event>, Vec<(i64, i64)>), KvError> {
    let mut removed = Vec::new();
    let (response, events) = match command {
        Command::Put(r) => {
            let (resp, events) = txn::apply_put(work, r)?;
            (CommandResponse::Put(resp), events)
        }
        Command::DeleteRange(r) => {
            let (resp, events) = txn::apply_delete(work, r)?;
            (CommandResponse::DeleteRange(resp), events)
        }
        Command::Txn(r) => {
            let (resp, events) = txn::apply_txn(work, r)?;
            (CommandResponse::Txn(resp), events)
        }
        Command::Compact(r) => {
            let (resp, gone) = compact::compact(work, r.revision)?;
            removed = gone;
            (CommandResponse::Compact(resp), Vec::new())
        }
        Command::LeaseGrant(r) => (
            CommandResponse::LeaseGrant(lease::grant(work, r)?),
            Vec::new(),
        ),
        Command::LeaseRevoke(r) => {
            let (resp, events) = lease::revoke(work, r)?;
            (CommandResponse::LeaseRevoke(resp), events)
        }
        Command::LeaseCheckpoint(r) => {
            let revision = lease::checkpoint(work, r);
            (
                CommandResponse::LeaseCheckpoint(header(revision)),
                Vec::new(),
            )
        }
        Command::Alarm(r) => (CommandResponse::Alarm(alarm::apply(work, r)), Vec::new()),
        Command::MemberAttributes(_) | Command::MemberUpdate(_) | Command::MemberConf(_) => (
            CommandResponse::Members(apply_membership(work, command)?),
            Vec::new(),
        ),
        Command::Auth(a) => {
            work.auth.apply(a)?;
            (CommandResponse::Auth(header(work.revision)), Vec::new())
        }
    };
    Ok((response, events, removed))
}

/// A response header carrying only a revision; the network layer fills the rest.
fn header(revision: i64) -> Option<pb::PbResponseHeader> {
    Some(pb::PbResponseHeader {
        revision,
        ..Default::default()
    })
}

/// Applies a membership command to `work`'s membership (copied on write).
fn apply_membership(
    work: &mut State,
    command: &Command,
) -> Result<Vec<crate::membership::Member>, KvError> {
    let mut ms = (*work.membership).clone();
    match command {
        Command::MemberAttributes(r) => ms.set_attributes(r.id, &r.name, &r.client_urls)?,
        Command::MemberUpdate(r) => ms.set_peer_urls(r.id, &r.peer_urls)?,
        Command::MemberConf(r) => {
            let kind = r.kind().ok_or_else(|| {
                KvError::Unavailable(format!("unknown membership change kind {}", r.kind))
            })?;
            let member = ms.get(r.id).cloned().unwrap_or(crate::membership::Member {
                id: r.id,
                peer_urls: r.peer_urls.clone(),
                ..Default::default()
            });
            ms.apply_change(kind, &member)?;
        }
        _ => unreachable!("only membership commands come here"),
    }
    let members = ms.members().cloned().collect();
    work.membership = Arc::new(ms);
    Ok(members)
}
