//! The multi-version key space, with etcd 3.4's revision semantics.
//!
//! [`Store`] is the single writer: it applies committed [`Command`]s in log order, each one
//! atomically (a command that fails changes nothing). [`ReadView`] is an immutable snapshot
//! taken in O(1); readers keep it as long as they like and never block the writer.
//!
//! The state lives in persistent ordered maps (`imbl`), so a snapshot is a clone of two map
//! roots and a write copies only the paths it touches:
//! - `latest`: the live keys at the current revision (the fast path for ordinary reads);
//! - `history`: every revision of every key, tombstones included, for reads in the past.
//!
//! Behaviour follows etcd's `applierV3backend` and `mvcc` packages rule by rule, quirks
//! included (see the submodules), because clients and tests compare us with real etcd.

mod compact;
pub mod lease;
mod compare;
mod gosort;
mod range;
mod state;
mod txn;
pub mod validate;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod tests;

use bytes::Bytes;

use crate::pb;
use crate::request::Command;
use crate::KvError;
use state::State;

/// `mvccpb.Event.EventType` values.
const EVENT_PUT: i32 = 0;
const EVENT_DELETE: i32 = 1;

/// The single writer of the key space.
pub struct Store {
    state: State,
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

/// One change to one key, cheap to clone (the bytes are shared), for watch fan-out.
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    /// For a put the new key-value; for a delete the key and the deleting revision only.
    pub kv: KeyValue,
    /// The key-value this change replaced, if the key was live before it.
    pub prev_kv: Option<KeyValue>,
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
        Store { state: State::new() }
    }

    /// Applies one committed write atomically: on `Err` nothing changed.
    pub fn apply(&mut self, command: &Command) -> Result<Applied, KvError> {
        // Work on an O(1) copy and publish it only on success: that is the atomicity.
        let mut work = self.state.clone();
        let (response, events) = match command {
            Command::Put(r) => {
                let (resp, events) = txn::apply_put(&mut work, r)?;
                (CommandResponse::Put(resp), events)
            }
            Command::DeleteRange(r) => {
                let (resp, events) = txn::apply_delete(&mut work, r)?;
                (CommandResponse::DeleteRange(resp), events)
            }
            Command::Txn(r) => {
                let (resp, events) = txn::apply_txn(&mut work, r)?;
                (CommandResponse::Txn(resp), events)
            }
            Command::Compact(r) => {
                let resp = compact::compact(&mut work, r.revision)?;
                (CommandResponse::Compact(resp), Vec::new())
            }
            Command::LeaseGrant(r) => (CommandResponse::LeaseGrant(lease::grant(&mut work, r)?), Vec::new()),
            Command::LeaseRevoke(r) => {
                let (resp, events) = lease::revoke(&mut work, r)?;
                (CommandResponse::LeaseRevoke(resp), events)
            }
            Command::LeaseCheckpoint(r) => {
                let revision = lease::checkpoint(&mut work, r);
                (CommandResponse::LeaseCheckpoint(header(revision)), Vec::new())
            }
        };
        self.state = work;
        Ok(Applied { response, events, revision: self.state.revision })
    }

    /// An O(1) immutable snapshot of the current state.
    pub fn view(&self) -> ReadView {
        ReadView { state: self.state.clone() }
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

    /// etcd's Txn for a read-only txn (see [`validate::is_read_only`]), read from this
    /// snapshot: compares and ranges see this view; nothing is written.
    pub fn txn_read_only(&self, req: &pb::PbTxnRequest) -> Result<pb::PbTxnResponse, KvError> {
        debug_assert!(validate::is_read_only(req), "only read-only txns are served from a view");
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
        Ok(self.state.changes(&state::KeyRange::new(key, range_end), after, up_to, events_max))
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
        self.state.leases.get(&id).map(|l| (l.ttl_secs, l.remaining_ttl_secs))
    }

    /// Every lease as `(id, granted TTL, checkpointed remaining TTL or 0)`, ascending by ID,
    /// without the key sets (what the lessor needs to take over deadlines).
    pub fn lease_ttls(&self) -> Vec<(i64, i64, i64)> {
        self.state.leases.iter().map(|(id, l)| (*id, l.ttl_secs, l.remaining_ttl_secs)).collect()
    }

    /// Number of live keys in this snapshot.
    pub fn key_count(&self) -> usize {
        self.state.latest.len()
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
    /// The protobuf form. As etcd, a delete's kv carries only the key and mod_revision.
    pub fn to_pb(&self, with_prev_kv: bool) -> pb::PbEvent {
        let (r#type, kv) = match self.kind {
            EventKind::Put => (EVENT_PUT, self.kv.to_pb()),
            EventKind::Delete => (
                EVENT_DELETE,
                pb::PbKeyValue {
                    key: self.kv.key.to_vec(),
                    mod_revision: self.kv.mod_revision,
                    ..Default::default()
                },
            ),
        };
        let prev_kv = if with_prev_kv { self.prev_kv.as_ref().map(KeyValue::to_pb) } else { None };
        pb::PbEvent { r#type, kv: Some(kv), prev_kv }
    }
}

/// A response header carrying only a revision; the network layer fills the rest.
fn header(revision: i64) -> Option<pb::PbResponseHeader> {
    Some(pb::PbResponseHeader { revision, ..Default::default() })
}
