//! The records of the key space in revision order: an append-only, persistent log.
//!
//! Records are appended in strictly increasing `(main, sub)` revision and only compaction
//! removes any, so the log is a run of full, immutable chunks plus one open tail chunk.
//! A snapshot clones two roots; an append copies at most the tail (once per published
//! view, as any persistent map copies a leaf). Against an ordered map (`imbl::OrdMap`),
//! whose leaves split in half and so stay half empty under appends, the chunks are full:
//! 24 bytes per record instead of about 48, and no path of branch nodes to copy.

use std::sync::Arc;

use imbl::OrdMap;

use super::state::Record;

/// A `(main, sub)` revision.
pub(super) type Rev = (i64, i64);

/// Records per chunk: a 1.5 KiB allocation, and the most an append copies.
const CHUNK_LEN: usize = 64;

type Chunk = Vec<(Rev, Arc<Record>)>;

/// The records in revision order (see the module docs). Cloning is O(1).
#[derive(Clone, Default)]
pub(super) struct RevisionLog {
    /// Full chunks (a compaction rebuilds them full, the remainder going to the tail),
    /// keyed by their first revision. Every revision in them is below `tail`'s.
    sealed: OrdMap<Rev, Arc<Chunk>>,
    /// The newest records, fewer than [`CHUNK_LEN`].
    tail: Arc<Chunk>,
}

impl RevisionLog {
    /// Number of records.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sealed.values().map(|c| c.len()).sum::<usize>() + self.tail.len()
    }

    /// The newest revision held.
    fn last(&self) -> Option<Rev> {
        match self.tail.last() {
            Some((rev, _)) => Some(*rev),
            None => self
                .sealed
                .get_max()
                .and_then(|(_, c)| c.last().map(|(rev, _)| *rev)),
        }
    }

    /// Appends `record` at `rev`, which must be above every revision held.
    pub fn push(&mut self, rev: Rev, record: Arc<Record>) {
        assert!(
            self.last().is_none_or(|last| last < rev),
            "revisions are appended in order"
        );
        let tail = Arc::make_mut(&mut self.tail);
        tail.push((rev, record));
        if tail.len() == CHUNK_LEN {
            let full = std::mem::replace(&mut self.tail, Arc::new(Vec::with_capacity(CHUNK_LEN)));
            self.sealed.insert(full[0].0, full);
        }
    }

    /// Removes the newest record if it is at `rev` (undoing the last [`RevisionLog::push`]).
    pub fn pop(&mut self, rev: Rev) -> Option<Arc<Record>> {
        if self.tail.is_empty() {
            let (first, chunk) = self.sealed.get_max().map(|(k, c)| (*k, c.clone()))?;
            if chunk.last().map(|(r, _)| *r) != Some(rev) {
                return None;
            }
            // Reopen the last full chunk as the tail; the pop leaves it below CHUNK_LEN.
            self.sealed.remove(&first);
            self.tail = chunk;
        }
        if self.tail.last().map(|(r, _)| *r) != Some(rev) {
            return None;
        }
        Arc::make_mut(&mut self.tail)
            .pop()
            .map(|(_, record)| record)
    }

    /// The chunk that would hold `rev`.
    fn chunk_of(&self, rev: Rev) -> Option<&Chunk> {
        match self.tail.first() {
            Some((first, _)) if *first <= rev => Some(&self.tail),
            _ => self.sealed.range(..=rev).next_back().map(|(_, c)| &**c),
        }
    }

    /// The record at `rev`, if held.
    pub fn get(&self, rev: &Rev) -> Option<&Arc<Record>> {
        let chunk = self.chunk_of(*rev)?;
        let i = chunk.binary_search_by(|(r, _)| r.cmp(rev)).ok()?;
        Some(&chunk[i].1)
    }

    /// True if a record is held at `rev`.
    #[cfg(test)]
    pub fn contains_key(&self, rev: &Rev) -> bool {
        self.get(rev).is_some()
    }

    /// The records at `from` and after, in revision order.
    pub fn iter_from(&self, from: Rev) -> impl Iterator<Item = (&Rev, &Arc<Record>)> + '_ {
        let start = self.sealed.range(..=from).next_back().map(|(k, _)| *k);
        let sealed = match start {
            Some(k) => self.sealed.range(k..),
            None => self.sealed.range::<_, Rev>(..),
        };
        sealed
            .map(|(_, c)| c.as_slice())
            .chain(std::iter::once(self.tail.as_slice()))
            .flat_map(|c| c.iter())
            .skip_while(move |(rev, _)| *rev < from)
            // `&(rev, record)` as `(&rev, &record)`, the shape map iterators give.
            .map(|(rev, record)| (rev, record))
    }

    /// Every record, in revision order.
    pub fn iter(&self) -> impl Iterator<Item = (&Rev, &Arc<Record>)> + '_ {
        self.iter_from((i64::MIN, i64::MIN))
    }

    /// Removes the records at `revs` (ascending, each held), as compaction does: the
    /// chunks from the first of them on are rebuilt full from what stays.
    pub fn remove_sorted(&mut self, revs: &[Rev]) {
        let Some(&first) = revs.first() else { return };
        debug_assert!(revs.windows(2).all(|w| w[0] < w[1]), "ascending");
        // Rebuild from the start of the chunk holding `first`: what precedes it stays.
        let start = self
            .chunk_of(first)
            .and_then(|c| c.first())
            .map_or(first, |(rev, _)| *rev);
        let mut gone = revs.iter().peekable();
        let mut kept: Chunk = Vec::new();
        for (rev, record) in self.iter_from(start) {
            if gone.peek() == Some(&rev) {
                gone.next();
            } else {
                kept.push((*rev, record.clone()));
            }
        }
        assert!(
            gone.next().is_none(),
            "compaction removes records the log holds"
        );
        let rebuilt: Vec<Rev> = self.sealed.range(start..).map(|(k, _)| *k).collect();
        for k in rebuilt {
            self.sealed.remove(&k);
        }
        self.tail = Arc::new(Vec::with_capacity(CHUNK_LEN));
        for (rev, record) in kept {
            self.push(rev, record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::KeyValue;

    fn record(main: i64) -> Arc<Record> {
        Arc::new(Record::new(
            KeyValue {
                mod_revision: main,
                ..Default::default()
            },
            false,
            0,
            None,
        ))
    }

    fn revs(log: &RevisionLog) -> Vec<i64> {
        log.iter().map(|(r, _)| r.0).collect()
    }

    /// Against a plain sorted Vec: pushes, pops (undo), lookups, iteration from any point
    /// and compactions, across chunk boundaries, with snapshots kept unchanged.
    #[test]
    fn log_matches_a_sorted_vec() {
        let mut rng = crate::test_rng::Rng::new(7);
        let mut log = RevisionLog::default();
        let mut model: Vec<i64> = Vec::new();
        let mut next = 2;
        let mut snapshots: Vec<(RevisionLog, Vec<i64>)> = Vec::new();
        for step in 0..4000 {
            match rng.below(100) {
                0..=69 => {
                    log.push((next, 0), record(next));
                    model.push(next);
                    next += 1 + rng.below(3) as i64;
                }
                70..=84 => {
                    let last = model.last().copied().unwrap_or(0);
                    assert!(log.pop((last + 1, 0)).is_none(), "step {step}");
                    if let Some(last) = model.pop() {
                        assert_eq!(log.pop((last, 0)).unwrap().kv.mod_revision, last);
                    }
                }
                85..=89 if !model.is_empty() => {
                    let gone: Vec<i64> = model
                        .iter()
                        .copied()
                        .filter(|_| rng.below(3) == 0)
                        .collect();
                    let revs: Vec<Rev> = gone.iter().map(|m| (*m, 0)).collect();
                    log.remove_sorted(&revs);
                    model.retain(|m| !gone.contains(m));
                }
                90..=94 => snapshots.push((log.clone(), model.clone())),
                _ => {
                    let probe = rng.below(next as u64 + 2) as i64;
                    assert_eq!(log.contains_key(&(probe, 0)), model.contains(&probe));
                    let from: Vec<i64> = log.iter_from((probe, 0)).map(|(r, _)| r.0).collect();
                    let want: Vec<i64> = model.iter().copied().filter(|m| *m >= probe).collect();
                    assert_eq!(from, want, "step {step}: from {probe}");
                }
            }
            assert_eq!(
                log.len(),
                model.len(),
                "step {step}: {:?} vs {model:?}",
                revs(&log)
            );
        }
        assert_eq!(revs(&log), model);
        for (snap, model) in &snapshots {
            assert_eq!(&revs(snap), model);
            assert_eq!(snap.len(), model.len());
        }
    }

    #[test]
    fn chunks_are_full() {
        let mut log = RevisionLog::default();
        for main in 2..2 + 10 * CHUNK_LEN as i64 + 5 {
            log.push((main, 0), record(main));
        }
        assert_eq!(log.sealed.len(), 10);
        assert!(log.sealed.values().all(|c| c.len() == CHUNK_LEN));
        assert_eq!(log.tail.len(), 5);
        // A pop that finds nothing leaves the chunks as they are.
        let mut full = RevisionLog::default();
        for main in 2..2 + CHUNK_LEN as i64 {
            full.push((main, 0), record(main));
        }
        assert!(full.pop((1, 0)).is_none());
        assert_eq!((full.sealed.len(), full.tail.len()), (1, 0));
        // A compaction keeps the rebuilt chunks full.
        let gone: Vec<Rev> = (2..2 + 5 * CHUNK_LEN as i64).map(|m| (m, 0)).collect();
        log.remove_sorted(&gone);
        assert_eq!(log.len(), 5 * CHUNK_LEN + 5);
        assert!(log.sealed.values().all(|c| c.len() == CHUNK_LEN));
    }
}
