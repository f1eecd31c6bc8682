//! Compaction: drop the history no read at or after the compacted revision can see.

use std::sync::Arc;

use super::header;
use super::map_key::MapKey;
use super::state::{Record, State};
use crate::pb::PbCompactionResponse;
use crate::KvError;

/// Compacts at `rev` as etcd's store.Compact + keyIndex.compact do: for each key, every
/// revision <= `rev` goes except the newest one <= `rev`, which stays unless it is a
/// tombstone; a key left with no history leaves `keys`. Does not change the revision; the
/// header reports the current one. Also returns the `(main, sub)` revisions it removed,
/// ascending, for the on-disk store.
pub(super) fn compact(
    state: &mut State,
    rev: i64,
) -> Result<(PbCompactionResponse, Vec<(i64, i64)>), KvError> {
    if rev <= state.compact_revision {
        return Err(KvError::Compacted);
    }
    if rev > state.revision {
        return Err(KvError::FutureRevision);
    }
    let (mut removed, emptied) = obsolete(state, rev);
    for key in &emptied {
        let gone = state.keys.remove(key);
        assert!(
            gone.is_some_and(|r| r.tombstone()),
            "only deleted keys empty out"
        );
    }
    removed.sort_unstable();
    state.by_revision.remove_sorted(&removed);
    state.compact_revision = rev;
    Ok((
        PbCompactionResponse {
            header: header(state.revision),
        },
        removed,
    ))
}

/// The records compaction at `rev` removes, and the keys it leaves without history.
/// Visits every key once (as etcd's treeIndex.Compact does) and walks each key's chain
/// back only from its first record at or below `rev`.
fn obsolete(state: &State, rev: i64) -> (Vec<(i64, i64)>, Vec<MapKey>) {
    let mut removed = Vec::new();
    let mut emptied = Vec::new();
    let revision_of = |r: &Record| (r.kv.mod_revision, r.sub());
    for (key, head) in state.keys.iter() {
        // A key written once and live, at or below `rev`: nothing to drop (the common case).
        if head.prev().is_none() && !head.tombstone() {
            continue;
        }
        let mut newest_kept = Some(head);
        while let Some(record) = newest_kept.filter(|r| r.kv.mod_revision > rev) {
            newest_kept = record.prev().and_then(|p| state.by_revision.get(&p));
        }
        let Some(newest_kept) = newest_kept else {
            continue;
        };
        let mut older = newest_kept.prev();
        while let Some(record) = older.and_then(|p| state.by_revision.get(&p)) {
            removed.push(revision_of(record));
            older = record.prev();
        }
        if newest_kept.tombstone() {
            removed.push(revision_of(newest_kept));
            if Arc::ptr_eq(newest_kept, head) {
                emptied.push(key.clone());
            }
        }
    }
    (removed, emptied)
}
