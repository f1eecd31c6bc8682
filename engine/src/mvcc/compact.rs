//! Compaction: drop the history no read at or after the compacted revision can see.

use std::ops::Bound;

use super::header;
use super::state::{HistKey, State};
use crate::pb::PbCompactionResponse;
use crate::KvError;

/// Compacts at `rev` as etcd's store.Compact + keyIndex.compact do: for each key, every
/// revision <= `rev` goes except the newest one <= `rev`, which stays unless it is a
/// tombstone. Does not change the revision; the header reports the current one. Also
/// returns the `(main, sub)` revisions it removed, for the on-disk store.
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
    let obsolete = obsolete(state, rev);
    let mut removed = Vec::with_capacity(obsolete.len());
    for key in obsolete {
        state.by_revision.remove(&(key.1, key.2));
        removed.push((key.1, key.2));
        state.history.remove(&key);
    }
    state.compact_revision = rev;
    Ok((
        PbCompactionResponse {
            header: header(state.revision),
        },
        removed,
    ))
}

/// The history entries compaction at `rev` removes, visiting each distinct key once.
fn obsolete(state: &State, rev: i64) -> Vec<HistKey> {
    let mut out = Vec::new();
    let mut lower = Bound::Unbounded;
    while let Some(((key, _, _), _)) = state.history.range((lower, Bound::Unbounded)).next() {
        let upto = (key.clone(), rev, i64::MAX);
        let mut old = state
            .history
            .range((key.clone(), i64::MIN, i64::MIN)..=upto);
        // The newest revision <= rev survives if it is a live value.
        if let Some((newest, record)) = old.next_back() {
            if record.tombstone {
                out.push(newest.clone());
            }
        }
        out.extend(old.map(|(k, _)| k.clone()));
        lower = Bound::Excluded((key.clone(), i64::MAX, i64::MAX));
    }
    out
}
