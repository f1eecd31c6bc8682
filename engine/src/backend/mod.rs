//! The on-disk revision store: the key space kept in the B+ tree file ([`crate::btree`]),
//! like etcd's bbolt backend.
//!
//! - Every revision record is an entry keyed by its revision (`k` + main + sub, big-endian),
//!   every granted lease an entry keyed by its ID (`l` + ID). The layout is in
//!   `docs/storage-format.md`, "Key space".
//! - [`Backend::commit`] writes one [`ChangeSet`] (or several merged) in one B+ tree
//!   transaction, together with the consistent index (the last raft log index whose effects
//!   it includes) and the key space's revision and compacted revision in the tree's meta
//!   slot: after a crash the file holds the key space as of exactly one consistent index.
//! - [`Backend::load`] rebuilds the in-memory [`Store`] from the last commit; the server then
//!   replays only the log entries after [`BackendMeta::consistent_index`].

mod error;
mod import;
mod layout;
mod maintenance;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::btree::{self, ReadTxn, PAGE_SIZE};
use crate::mvcc::auth::AuthState;
use crate::mvcc::{
    resolve_hash_revision, ChangeSet, Hasher, KeyValue, KvHash, KvRef, Restorer, Store,
};

pub use error::BackendError;
pub use layout::BackendMeta;
pub use maintenance::Snapshot;

/// The key space's file. `Send`; one writer (commits take `&mut self`), and loads and hashes
/// read a snapshot of the last commit.
pub struct Backend {
    store: btree::Store,
    /// The meta record of the last commit.
    meta: BackendMeta,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("path", &self.store.path())
            .field("meta", &self.meta)
            .finish()
    }
}

impl Backend {
    /// Opens (or creates) the store file at `path` and reads its meta record. Takes the B+
    /// tree's exclusive lock on the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Backend, BackendError> {
        let store = btree::Store::open(path, btree::Options::default())?;
        let snap = store.read();
        let meta = decode_meta(&snap)?;
        // Entries under a never-written meta record: not a file this layout wrote.
        if snap.meta().iter().all(|b| *b == 0) && !snap.is_empty() {
            return Err(BackendError::Corrupt(format!(
                "{} entries but no commit record",
                snap.len()
            )));
        }
        drop(snap);
        Ok(Backend { store, meta })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// The meta record of the last commit ([`BackendMeta::FRESH`] before the first).
    pub fn meta(&self) -> BackendMeta {
        self.meta
    }

    /// The B+ tree's figures (entries, pages, file length, ...).
    pub fn stats(&self) -> btree::Stats {
        self.store.stats()
    }

    /// Reads every page of the last commit and checks the whole file (the B+ tree's
    /// `verify`; the key-space records themselves are checked by [`Self::load`]).
    pub fn verify(&self) -> Result<btree::VerifyReport, BackendError> {
        Ok(self.store.verify()?)
    }

    /// Writes `changes` and the log position `(consistent_index, term)` in one transaction;
    /// durable when it returns. Records are written before compaction's removals (a set may
    /// both write and remove a revision). An empty set still moves the consistent index.
    ///
    /// On error nothing of this commit is visible; after an I/O error the store refuses
    /// further commits until reopened (keep `changes` to retry).
    pub fn commit(
        &mut self,
        changes: &ChangeSet,
        consistent_index: u64,
        term: u64,
    ) -> Result<(), BackendError> {
        if consistent_index < self.meta.consistent_index {
            return Err(BackendError::IndexWentBack {
                committed: self.meta.consistent_index,
                given: consistent_index,
            });
        }
        let meta = BackendMeta {
            consistent_index,
            term,
            revision: changes.revision().unwrap_or(self.meta.revision),
            compact_revision: changes
                .compact_revision()
                .unwrap_or(self.meta.compact_revision),
        };
        let mut w = self.store.write()?;
        write_changes(&mut w, changes)?;
        w.set_meta(&meta.encode());
        w.commit()?;
        self.meta = meta;
        Ok(())
    }

    /// Rebuilds the key space of the last commit: leases, then every revision record in
    /// revision order, at the stored revision and compacted revision. The store's change
    /// tracking starts empty.
    pub fn load(&self) -> Result<(Store, BackendMeta), BackendError> {
        let snap = self.store.read();
        let meta = decode_meta(&snap)?;
        let mut r = Restorer::new();
        for entry in prefix_range(&snap, layout::ALARM_PREFIX) {
            let (k, v) = entry?;
            let (alarm, member_id) = layout::decode_alarm(k, v).map_err(BackendError::Corrupt)?;
            r.alarm(member_id, alarm);
        }
        let mut membership = crate::membership::Membership::default();
        for entry in prefix_range(&snap, layout::MEMBER_PREFIX) {
            let (k, v) = entry?;
            let id = layout::decode_member_key(layout::MEMBER_PREFIX, k)
                .map_err(BackendError::Corrupt)?;
            let member = crate::membership::decode_member(id, v).map_err(BackendError::Corrupt)?;
            membership.restore_member(member);
        }
        for entry in prefix_range(&snap, layout::REMOVED_PREFIX) {
            let (k, _) = entry?;
            let id = layout::decode_member_key(layout::REMOVED_PREFIX, k)
                .map_err(BackendError::Corrupt)?;
            membership.restore_removed(id);
        }
        r.membership(membership);
        r.auth(load_auth(&snap)?);
        let leases = prefix_range(&snap, layout::LEASE_PREFIX);
        for entry in leases {
            let (k, v) = entry?;
            r.lease(layout::decode_lease(k, v).map_err(BackendError::Corrupt)?)?;
        }
        for_each_record(&snap, i64::MAX, |main, sub, kv, tombstone| {
            let kv = KeyValue {
                key: Bytes::copy_from_slice(kv.key),
                value: Bytes::copy_from_slice(kv.value),
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
                lease: kv.lease,
            };
            r.record(main, sub, kv, tombstone)
                .map_err(BackendError::from)
        })?;
        let store = r.finish(meta.revision, meta.compact_revision)?;
        drop(snap);
        // The scan mapped in every page of the file; the key space is in memory now. If the
        // advice fails the pages merely stay resident: no reason to refuse to start.
        let _ = self.store.forget_resident_pages();
        Ok((store, meta))
    }

    /// etcd's dbSize: the bytes up to the file's high-water mark (bbolt's `tx.Size()`; the
    /// file itself may be longer, as it grows in steps).
    pub fn size_bytes(&self) -> u64 {
        self.stats().page_count * PAGE_SIZE as u64
    }

    /// etcd's dbSizeInUse: [`Self::size_bytes`] less the pages on the free list.
    pub fn size_in_use_bytes(&self) -> u64 {
        let s = self.stats();
        s.page_count.saturating_sub(s.free_pages) * PAGE_SIZE as u64
    }

    /// etcd's HashKV at `revision` (0 = the committed revision) over the last commit; the
    /// same hash as `ReadView::hash_kv` on the key space it holds (see `mvcc/hash.rs`).
    /// Holds each distinct key up to `revision` in memory while it runs, as etcd's `keep`
    /// map does.
    pub fn hash_kv(&self, revision: i64) -> Result<KvHash, BackendError> {
        let snap = self.store.read();
        let meta = decode_meta(&snap)?;
        let compact = meta.compact_revision;
        let rev =
            resolve_hash_revision(revision, meta.revision, compact).map_err(BackendError::Kv)?;
        let mut h = Hasher::new();
        if rev > 0 {
            let newest = newest_per_key(&snap, rev)?;
            let any_live = newest.values().any(|(_, tombstone)| !tombstone);
            for_each_record(&snap, rev, |main, sub, kv, tombstone| {
                let kept = || newest.get(kv.key) == Some(&((main, sub), false));
                if !(main <= compact && any_live && !kept()) {
                    h.add(main, sub, kv, tombstone);
                }
                Ok(())
            })?;
        }
        Ok(KvHash {
            hash: h.finish(),
            revision: meta.revision,
            compact_revision: compact,
        })
    }
}

fn decode_meta(snap: &ReadTxn) -> Result<BackendMeta, BackendError> {
    BackendMeta::decode(&snap.meta()).map_err(|e| match e {
        Some(format) => BackendError::UnsupportedFormat(format),
        None => BackendError::Corrupt("meta record is malformed".into()),
    })
}

/// Inserts the written records, then removes compaction's, then writes the leases, then
/// replaces the alarms if the set changed them.
fn write_changes(w: &mut btree::WriteTxn<'_>, changes: &ChangeSet) -> Result<(), BackendError> {
    let mut buf = Vec::new();
    for r in changes.written() {
        layout::encode_record(&mut buf, &r);
        w.insert_ascending(&layout::revision_key(r.main, r.sub), &buf)?;
    }
    for &(main, sub) in changes.removed() {
        w.remove(&layout::revision_key(main, sub))?;
    }
    for (id, lease) in changes.leases() {
        match lease {
            Some(l) => w.insert(&layout::lease_key(id), &layout::encode_lease(&l))?,
            None => {
                w.remove(&layout::lease_key(id))?;
            }
        }
    }
    if let Some(ms) = changes.membership() {
        write_membership(w, ms)?;
    }
    if let Some(auth) = changes.auth() {
        write_auth(w, auth)?;
    }
    if let Some(alarms) = changes.alarms() {
        let (start, end) = ([layout::ALARM_PREFIX], [layout::ALARM_PREFIX + 1]);
        let stored: Vec<Vec<u8>> = w
            .range(Bound::Included(&start[..]), Bound::Excluded(&end[..]))
            .map(|entry| entry.map(|(k, _)| k.to_vec()))
            .collect::<Result<_, _>>()?;
        for k in stored {
            w.remove(&k)?;
        }
        for &(alarm, member_id) in alarms {
            w.insert(&layout::alarm_key(alarm, member_id), &[])?;
        }
    }
    Ok(())
}

/// Replaces the stored membership with `ms`.
fn write_membership(
    w: &mut btree::WriteTxn<'_>,
    ms: &crate::membership::Membership,
) -> Result<(), BackendError> {
    for prefix in [layout::MEMBER_PREFIX, layout::REMOVED_PREFIX] {
        remove_prefix(w, prefix)?;
    }
    for m in ms.members() {
        let k = layout::member_key(layout::MEMBER_PREFIX, m.id);
        w.insert(&k, &crate::membership::encode_member(m))?;
    }
    for id in ms.removed() {
        w.insert(&layout::member_key(layout::REMOVED_PREFIX, id), &[])?;
    }
    Ok(())
}

/// Removes every entry whose key starts with `prefix`.
fn remove_prefix(w: &mut btree::WriteTxn<'_>, prefix: u8) -> Result<(), BackendError> {
    let (start, end) = ([prefix], [prefix + 1]);
    let stored: Vec<Vec<u8>> = w
        .range(Bound::Included(&start[..]), Bound::Excluded(&end[..]))
        .map(|entry| entry.map(|(k, _)| k.to_vec()))
        .collect::<Result<_, _>>()?;
    for k in stored {
        w.remove(&k)?;
    }
    Ok(())
}

/// Replaces the stored users, roles and auth meta with `auth` (auth changes are rare and
/// small: rewriting them whole keeps one rule for every kind of change).
fn write_auth(w: &mut btree::WriteTxn<'_>, auth: &AuthState) -> Result<(), BackendError> {
    for prefix in [layout::USER_PREFIX, layout::ROLE_PREFIX] {
        let (start, end) = ([prefix], [prefix + 1]);
        let stored: Vec<Vec<u8>> = w
            .range(Bound::Included(&start[..]), Bound::Excluded(&end[..]))
            .map(|entry| entry.map(|(k, _)| k.to_vec()))
            .collect::<Result<_, _>>()?;
        for k in stored {
            w.remove(&k)?;
        }
    }
    for user in auth.users.values() {
        w.insert(&layout::user_key(&user.name), &layout::encode_user(user))?;
    }
    for role in auth.roles.values() {
        w.insert(&layout::role_key(&role.name), &layout::encode_role(role))?;
    }
    w.insert(layout::AUTH_META_KEY, &layout::encode_auth_meta(auth))?;
    Ok(())
}

/// The stored auth state; a store that never had an auth change holds the fresh one.
fn load_auth(snap: &ReadTxn) -> Result<AuthState, BackendError> {
    let mut auth = AuthState::default();
    if let Some(v) = snap.get(layout::AUTH_META_KEY)? {
        let (enabled, revision) = layout::decode_auth_meta(v).map_err(BackendError::Corrupt)?;
        auth.enabled = enabled;
        auth.revision = revision;
    }
    for entry in prefix_range(snap, layout::USER_PREFIX) {
        let (k, v) = entry?;
        let user = layout::decode_user(k, v).map_err(BackendError::Corrupt)?;
        auth.users.insert(user.name.clone(), Arc::new(user));
    }
    for entry in prefix_range(snap, layout::ROLE_PREFIX) {
        let (k, v) = entry?;
        let role = layout::decode_role(k, v).map_err(BackendError::Corrupt)?;
        auth.roles.insert(role.name.clone(), Arc::new(role));
    }
    Ok(auth)
}

/// Every entry whose key starts with `prefix`.
fn prefix_range(snap: &ReadTxn, prefix: u8) -> btree::Range<'_> {
    let (start, end) = ([prefix], [prefix + 1]);
    snap.range(Bound::Included(&start[..]), Bound::Excluded(&end[..]))
}

/// Calls `f(main, sub, kv, tombstone)` on each revision record with `main <= upto`, in
/// revision order, stopping at the first error.
fn for_each_record<'a>(
    snap: &'a ReadTxn,
    upto: i64,
    mut f: impl FnMut(i64, i64, KvRef<'a>, bool) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    let start = [layout::REVISION_PREFIX];
    let end = layout::revision_key(upto, i64::MAX);
    for entry in snap.range(Bound::Included(&start[..]), Bound::Included(&end[..])) {
        let (k, v) = entry?;
        let (main, sub) = layout::decode_revision_key(k).map_err(BackendError::Corrupt)?;
        let (kv, tombstone) = layout::decode_record(v)
            .map_err(|e| BackendError::Corrupt(format!("revision ({main}, {sub}): {e}")))?;
        f(main, sub, kv, tombstone)?;
    }
    Ok(())
}

/// Key -> its newest record's `(main, sub)` and whether that is a tombstone.
type NewestByKey = HashMap<Vec<u8>, ((i64, i64), bool)>;

/// Each key's newest record with `main <= rev`.
fn newest_per_key(snap: &ReadTxn, rev: i64) -> Result<NewestByKey, BackendError> {
    let mut newest = HashMap::new();
    for_each_record(snap, rev, |main, sub, kv, tombstone| {
        // Revision order: a later record of a key replaces the earlier one.
        newest.insert(kv.key.to_vec(), ((main, sub), tombstone));
        Ok(())
    })?;
    Ok(newest)
}
