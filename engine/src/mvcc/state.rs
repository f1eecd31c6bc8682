//! The versioned maps and the primitive reads and writes on them.

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use imbl::OrdMap;

use super::map_key::MapKey;
use super::KeyValue;
use crate::KvError;

/// One revision of one key. A tombstone marks a delete; its kv holds only key and
/// mod_revision, like the tombstone etcd writes.
///
/// Packed to 112 bytes so that with its reference counts it takes a 128-byte allocation
/// (one per record: 32 MB less per million keys than the plain layout's 160).
#[derive(Debug)]
pub(super) struct Record {
    pub kv: KeyValue,
    /// The main revision of the key's previous record (see [`Record::prev`]); 0 if none.
    prev_main: i64,
    /// The sub revision, with [`TOMBSTONE_BIT`] set for a tombstone.
    sub_and_tombstone: u32,
    /// The sub revision of the key's previous record.
    prev_sub: u32,
}

/// Marks a tombstone in `Record::sub_and_tombstone`. Sub revisions count the changes of
/// one command, one per key it wrote or deleted: 2^31 of them would need hundreds of GiB
/// of records in memory. Records read from disk with a larger one are refused as corrupt.
const TOMBSTONE_BIT: u32 = 1 << 31;

impl Record {
    pub(super) fn new(kv: KeyValue, tombstone: bool, sub: i64, prev: Option<(i64, i64)>) -> Record {
        let sub = u32::try_from(sub).expect("sub revision below 2^31");
        assert!(sub < TOMBSTONE_BIT, "sub revision below 2^31");
        let (prev_main, prev_sub) = prev.unwrap_or((0, 0));
        assert!(prev.is_none() || prev_main >= 1, "revisions start at 1");
        Record {
            kv,
            prev_main,
            sub_and_tombstone: sub | if tombstone { TOMBSTONE_BIT } else { 0 },
            prev_sub: u32::try_from(prev_sub).expect("sub revision below 2^31"),
        }
    }

    /// True if this record marks a delete.
    pub fn tombstone(&self) -> bool {
        self.sub_and_tombstone & TOMBSTONE_BIT != 0
    }

    /// The sub revision; the main revision is `kv.mod_revision`.
    pub fn sub(&self) -> i64 {
        i64::from(self.sub_and_tombstone & !TOMBSTONE_BIT)
    }

    /// The key's revision `(main, sub)` before this one, if it had one: a key's history is
    /// this chain, followed through `by_revision`. A revision rather than a pointer, so a
    /// record compaction removed is freed even while a newer one still names it (the link
    /// then leads nowhere, which is where the key's history ends).
    pub fn prev(&self) -> Option<(i64, i64)> {
        (self.prev_main != 0).then(|| (self.prev_main, i64::from(self.prev_sub)))
    }
}

const _: () = assert!(std::mem::size_of::<Record>() == 112);

/// What one [`State::write`] changed, enough to take it back.
#[must_use = "a write that may have to be undone keeps its Written"]
pub(super) struct Written {
    main: i64,
    sub: i64,
    /// The key's entry in `keys` before the write.
    previous: Option<Arc<Record>>,
    /// `(lease before, lease after)`: the key moved between these key sets if they differ.
    leases: (i64, i64),
    /// The record written.
    pub record: Arc<Record>,
}

impl Written {
    /// The live record this change replaced, if the key was live before it.
    pub fn replaced_live(&self) -> Option<Arc<Record>> {
        self.previous.clone().filter(|r| !r.tombstone())
    }
}

/// The whole key space at one revision. Cloning is O(1) (map and log roots).
#[derive(Clone)]
pub(super) struct State {
    /// Every key with history not yet compacted away, to its newest record: the value at
    /// `revision`, or a tombstone if the key is deleted now. Older revisions of the key
    /// hang off it by [`Record::prev`]. One map for current and past reads means a write
    /// copies one path of a key-ordered map, not two.
    pub keys: OrdMap<MapKey, Arc<Record>>,
    /// How many of `keys` are live (newest record not a tombstone).
    pub live_keys: usize,
    /// Every record not yet compacted away, tombstones included, by `(main, sub)`
    /// revision: what a watcher catching up reads, in time order, and where `prev` leads.
    pub by_revision: super::revlog::RevisionLog,
    /// The current revision. Inside a txn that already wrote, this is the txn's revision,
    /// so reads at "current" see the txn's own writes, as etcd's write txn does.
    pub revision: i64,
    /// etcd's `compactMainRev`: -1 until the first compaction, which is why a fresh
    /// etcd accepts `compact 0` once.
    pub compact_revision: i64,
    /// Granted leases by ID. A put naming any other lease fails as in etcd.
    pub leases: OrdMap<i64, LeaseRecord>,
    /// Active alarms as `(alarm type, member ID)` (etcd's alarm store; see `alarm.rs`).
    pub alarms: imbl::OrdSet<(i32, u64)>,
    /// The cluster's members (shared: it changes rarely, and the state is cloned per apply).
    pub membership: Arc<crate::membership::Membership>,
    /// Users, roles, permissions and the auth switch (see `auth.rs`).
    pub auth: super::auth::AuthState,
}

/// A granted lease as the replicated state holds it. Cloning is O(1) (the key set is shared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LeaseRecord {
    /// The TTL granted, in seconds.
    pub ttl_secs: i64,
    /// The remaining TTL recorded by the last checkpoint; 0 means none (a restart then
    /// starts the lease over with its full TTL).
    pub remaining_ttl_secs: i64,
    /// The live keys attached to the lease.
    pub keys: imbl::OrdSet<Bytes>,
}

impl LeaseRecord {
    /// A fresh lease with no keys and no checkpoint.
    pub fn new(ttl_secs: i64) -> LeaseRecord {
        LeaseRecord {
            ttl_secs,
            remaining_ttl_secs: 0,
            keys: imbl::OrdSet::new(),
        }
    }
}

/// Bounds on `keys`' keys.
type ByteBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The keys a request names: etcd's key + range_end encoding.
#[derive(Clone, Debug)]
pub(super) enum KeyRange {
    /// range_end empty: just `key`.
    Single(Bytes),
    /// range_end == "\0": every key >= `key`.
    From(Bytes),
    /// `[key, range_end)`, with range_end > key.
    Between(Bytes, Bytes),
    /// range_end <= key: nothing.
    Empty,
}

impl KeyRange {
    pub fn new(key: &[u8], range_end: &[u8]) -> KeyRange {
        let start = Bytes::copy_from_slice(key);
        match range_end {
            [] => KeyRange::Single(start),
            [0] => KeyRange::From(start),
            end if end <= key => KeyRange::Empty,
            end => KeyRange::Between(start, Bytes::copy_from_slice(end)),
        }
    }

    /// True if `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => key == k.as_ref(),
            KeyRange::From(k) => key >= k.as_ref(),
            KeyRange::Between(k, end) => key >= k.as_ref() && key < end.as_ref(),
            KeyRange::Empty => false,
        }
    }

    fn bounds(&self) -> Option<ByteBounds<'_>> {
        match self {
            KeyRange::Single(k) => Some((Bound::Included(k), Bound::Included(k))),
            KeyRange::From(k) => Some((Bound::Included(k), Bound::Unbounded)),
            KeyRange::Between(k, end) => Some((Bound::Included(k), Bound::Excluded(end))),
            KeyRange::Empty => None,
        }
    }
}

impl State {
    pub fn new() -> State {
        State {
            keys: OrdMap::new(),
            live_keys: 0,
            by_revision: Default::default(),
            revision: 1,
            compact_revision: -1,
            leases: OrdMap::new(),
            alarms: imbl::OrdSet::new(),
            membership: Arc::default(),
            auth: super::auth::AuthState::default(),
        }
    }

    /// The compacted revision as the API shows it (0 before any compaction).
    pub fn reported_compact_revision(&self) -> i64 {
        self.compact_revision.max(0)
    }

    /// Resolves a requested read revision like etcd's `rangeKeys`: <= 0 means current.
    pub fn read_revision(&self, requested: i64) -> Result<i64, KvError> {
        if requested > self.revision {
            return Err(KvError::FutureRevision);
        }
        let rev = if requested <= 0 {
            self.revision
        } else {
            requested
        };
        if rev < self.compact_revision {
            return Err(KvError::Compacted);
        }
        Ok(rev)
    }

    /// Calls `f` on each key live at `rev` in `range`, in key order, until `f` returns false.
    pub fn visit(&self, range: &KeyRange, rev: i64, mut f: impl FnMut(&Arc<Record>) -> bool) {
        if rev == self.revision {
            self.visit_latest(range, &mut f)
        } else {
            self.visit_past(range, rev, &mut f)
        }
    }

    fn visit_latest(&self, range: &KeyRange, f: &mut impl FnMut(&Arc<Record>) -> bool) {
        let Some(bounds) = range.bounds() else { return };
        for (_, record) in self.keys.range::<_, [u8]>(bounds) {
            if !record.tombstone() && !f(record) {
                return;
            }
        }
    }

    fn visit_past(&self, range: &KeyRange, rev: i64, f: &mut impl FnMut(&Arc<Record>) -> bool) {
        let Some(bounds) = range.bounds() else { return };
        for (_, head) in self.keys.range::<_, [u8]>(bounds) {
            if let Some(record) = self.version_at(head, rev) {
                if !f(record) {
                    return;
                }
            }
        }
    }

    /// The live record of `key` at the current revision.
    pub fn live(&self, key: &[u8]) -> Option<&Arc<Record>> {
        self.keys.get(key).filter(|r| !r.tombstone())
    }

    /// The revision of `key` visible at `rev`, unless the key is absent or deleted there.
    pub fn live_at(&self, key: &[u8], rev: i64) -> Option<&Arc<Record>> {
        self.version_at(self.keys.get(key)?, rev)
    }

    /// The revision of `head`'s key visible at `rev`, unless absent or deleted there:
    /// walks back from the newest record one change at a time, so it costs as many lookups
    /// as the key changed after `rev` (the chain's revisions strictly decrease, and it
    /// ends at the oldest record compaction kept).
    pub fn version_at<'a>(&'a self, head: &'a Arc<Record>, rev: i64) -> Option<&'a Arc<Record>> {
        let mut record = head;
        while record.kv.mod_revision > rev {
            let prev = record.prev()?;
            debug_assert!(
                prev < (record.kv.mod_revision, record.sub()),
                "history goes back"
            );
            record = self.by_revision.get(&prev)?;
        }
        (!record.tombstone()).then_some(record)
    }

    /// The record a change replaced, if history still holds it and it was live.
    pub fn previous_live(&self, record: &Record) -> Option<&Arc<Record>> {
        let prev = self.by_revision.get(&record.prev()?)?;
        (!prev.tombstone()).then_some(prev)
    }

    /// Live keys in `range` at the current revision, in key order.
    pub fn live_in(&self, range: &KeyRange) -> Vec<Arc<Record>> {
        let mut out = Vec::new();
        self.visit(range, self.revision, |r| {
            out.push(r.clone());
            true
        });
        out
    }

    /// Every change to a key in `range` with `after < main revision <= up_to`, in revision
    /// order, the earliest `events_max` of them. Each carries the key's previous revision
    /// when history still holds it (a watcher's prev_kv). Callers bound `up_to - after`:
    /// the changes in that window are gathered before they are ordered.
    pub fn changes(
        &self,
        range: &KeyRange,
        after: i64,
        up_to: i64,
        events_max: usize,
    ) -> Vec<super::Event> {
        let mut out = Vec::new();
        for ((main, sub), record) in self
            .by_revision
            .iter_from((after.saturating_add(1), i64::MIN))
            .take_while(|(rev, _)| rev.0 <= up_to)
        {
            if out.len() >= events_max {
                break;
            }
            if !range.contains(&record.kv.key) {
                continue;
            }
            debug_assert_eq!((*main, *sub), (record.kv.mod_revision, record.sub()));
            let prev = self.previous_live(record).cloned();
            out.push(super::Event::new(record.clone(), prev));
        }
        out
    }

    /// Records one change at sub revision `sub` and keeps `keys`, `live_keys` and the
    /// leases' key sets in step: a put moves the key to its new lease, a delete detaches
    /// it. Returns what it takes to undo the change ([`State::unwrite`]).
    pub fn write(&mut self, mut kv: KeyValue, tombstone: bool, sub: i64) -> Written {
        // Moved, not cloned: cloning a Bytes made from a Vec allocates a shared header,
        // and the record keeps the key for good (32 MB per million keys).
        let key = std::mem::take(&mut kv.key);
        self.write_with(key, tombstone, sub, move |_, key| {
            Ok(KeyValue { key, ..kv })
        })
        .expect("a write without checks cannot fail")
    }

    /// [`State::write`] of the record `make` builds from the key's newest record (live or
    /// a tombstone), found in the same descent that makes room for the new one. `make` gets
    /// `key` back to put in the record. If `make` refuses, nothing changes (the descent may
    /// have copied the key's path; the map still holds the same records).
    pub fn write_with(
        &mut self,
        key: Bytes,
        tombstone: bool,
        sub: i64,
        make: impl FnOnce(Option<&Arc<Record>>, Bytes) -> Result<KeyValue, KvError>,
    ) -> Result<Written, KvError> {
        // An existing key's slot is replaced in place: one descent copies the shared nodes
        // on its path and finds it (a lookup and then an insert took two).
        let (previous, record) = match self.keys.get_mut(&key[..]) {
            Some(slot) => {
                let kv = make(Some(slot), key)?;
                assert!(slot.kv.key == kv.key, "a write keeps its key");
                let (main, prev) = (kv.mod_revision, (slot.kv.mod_revision, slot.sub()));
                assert!(prev < (main, sub), "a key's revisions only go forward");
                let record = Arc::new(Record::new(kv, tombstone, sub, Some(prev)));
                (Some(std::mem::replace(slot, record.clone())), record)
            }
            None => {
                let kv = make(None, key)?;
                let map_key = MapKey::new(&kv.key);
                let record = Arc::new(Record::new(kv, tombstone, sub, None));
                self.keys.insert(map_key, record.clone());
                (None, record)
            }
        };
        let main = record.kv.mod_revision;
        let was_live = previous.as_ref().is_some_and(|r| !r.tombstone());
        let old_lease = match &previous {
            Some(r) if was_live => r.kv.lease,
            _ => 0,
        };
        let new_lease = if tombstone { 0 } else { record.kv.lease };
        if old_lease != new_lease {
            self.detach(old_lease, &record.kv.key);
            self.attach(new_lease, &record.kv.key);
        }
        self.live_keys = self.live_keys + usize::from(!tombstone) - usize::from(was_live);
        self.by_revision.push((main, sub), record.clone());
        Ok(Written {
            main,
            sub,
            previous,
            leases: (old_lease, new_lease),
            record,
        })
    }

    /// Takes back one [`State::write`]. Undoing a command's writes newest first restores
    /// the maps, the live count and the lease key sets exactly as they were before it.
    pub fn unwrite(&mut self, written: Written) {
        let Written {
            main,
            sub,
            previous,
            leases: (old_lease, new_lease),
            record,
        } = written;
        let key = &record.kv.key;
        let gone = self.by_revision.pop((main, sub));
        assert!(gone.is_some(), "unwrite of a change that was not written");
        if old_lease != new_lease {
            self.detach(new_lease, key);
            self.attach(old_lease, key);
        }
        let was_live = previous.as_ref().is_some_and(|r| !r.tombstone());
        let undone = match previous {
            Some(record) => self.keys.insert(MapKey::new(key), record),
            None => self.keys.remove(&key[..]),
        };
        let undone = undone.expect("the written record is the key's newest");
        assert_eq!((undone.kv.mod_revision, undone.sub()), (main, sub));
        self.live_keys = self.live_keys + usize::from(was_live) - usize::from(!undone.tombstone());
    }

    /// Every `(key, main, sub)` history holds, ordered by key then revision (tests).
    #[cfg(test)]
    pub fn history_keys(&self) -> Vec<(Bytes, i64, i64)> {
        let mut out: Vec<_> = self
            .by_revision
            .iter()
            .map(|(_, r)| (r.kv.key.clone(), r.kv.mod_revision, r.sub()))
            .collect();
        out.sort();
        out
    }

    /// Adds `key` to lease `id`'s keys. Lease 0 (none) and unknown leases are skipped:
    /// puts check their lease exists before writing.
    fn attach(&mut self, id: i64, key: &Bytes) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key.clone());
        }
    }

    /// Removes `key` from lease `id`'s keys, if both exist.
    fn detach(&mut self, id: i64, key: &Bytes) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }
}
