//! Writing a whole key space into a new store file at once (`corekvutl snapshot restore`
//! of an etcd snapshot), and moving a store's log position for a member whose raft log
//! starts over.
//!
//! The records are encoded by the same `layout` functions [`Backend::commit`] uses; only the
//! source differs (an iterator instead of a [`crate::mvcc::ChangeSet`]). The import checks
//! what it can while streaming (order, `mod_revision`, lease IDs, the revision bounds) so
//! that bad input fails here rather than at the server's first load; [`Backend::load`]
//! remains the full check.

use std::path::Path;

use super::{layout, Backend, BackendError, BackendMeta};
use crate::btree::{self, BtreeError};
use crate::mvcc::{KeyValue, LeaseTtl, WrittenRecord};

/// Encoded bytes written per B+ tree transaction during an import (as `compact_to` does):
/// bounds the memory the pending pages take.
const IMPORT_BATCH_BYTES: usize = 64 << 20;

fn bad(reason: String) -> BackendError {
    BackendError::Corrupt(format!("import: {reason}"))
}

impl Backend {
    /// Creates the store file `path` (which must not exist) holding `leases` and `records`
    /// (`(main, sub, kv, tombstone)` in ascending revision order; `kv.mod_revision` must be
    /// `main`, and a tombstone's `kv` holds the key only) with the meta record `meta`
    /// (consistent index, term, revision, compacted revision).
    ///
    /// Large imports are written in several B+ tree transactions; the meta record is set by
    /// the last one only, so a file left by an interrupted import either holds no entry or
    /// is refused by [`Backend::open`] (entries without a commit record). Write to a
    /// temporary name and rename it when the file must appear whole.
    pub fn import(
        path: impl AsRef<Path>,
        records: impl IntoIterator<Item = (i64, i64, KeyValue, bool)>,
        leases: impl IntoIterator<Item = LeaseTtl>,
        meta: BackendMeta,
    ) -> Result<Backend, BackendError> {
        let path = path.as_ref();
        if path.exists() {
            return Err(BackendError::Btree(BtreeError::AlreadyExists(
                path.to_path_buf(),
            )));
        }
        if meta.compact_revision < -1 || meta.compact_revision > meta.revision {
            return Err(bad(format!(
                "compacted revision {} outside -1..={}",
                meta.compact_revision, meta.revision
            )));
        }
        let store = btree::Store::open(path, btree::Options::default())?;
        let mut w = store.write()?;
        let mut seen_leases = std::collections::BTreeSet::new();
        for lease in leases {
            if lease.id == 0 || !seen_leases.insert(lease.id) {
                return Err(bad(format!("lease ID {} is zero or repeated", lease.id)));
            }
            w.insert(&layout::lease_key(lease.id), &layout::encode_lease(&lease))?;
        }
        let mut buf = Vec::new();
        let mut batch = 0usize;
        let mut last: Option<(i64, i64)> = None;
        for (main, sub, kv, tombstone) in records {
            if main < 1 || !(0..1 << 31).contains(&sub) || kv.mod_revision != main {
                return Err(bad(format!(
                    "record at revision ({main}, {sub}) has mod_revision {}",
                    kv.mod_revision
                )));
            }
            if last.is_some_and(|l| l >= (main, sub)) {
                return Err(bad(format!(
                    "record at revision ({main}, {sub}) after {last:?}"
                )));
            }
            last = Some((main, sub));
            layout::encode_record(
                &mut buf,
                &WrittenRecord {
                    main,
                    sub,
                    kv: &kv,
                    tombstone,
                },
            );
            w.insert_ascending(&layout::revision_key(main, sub), &buf)?;
            batch += layout::REVISION_KEY_BYTES + buf.len();
            if batch >= IMPORT_BATCH_BYTES {
                w.commit()?;
                w = store.write()?;
                batch = 0;
            }
        }
        if let Some((newest, _)) = last {
            if meta.revision < newest {
                return Err(bad(format!(
                    "revision {} is below the newest record's {newest}",
                    meta.revision
                )));
            }
        }
        w.set_meta(&meta.encode());
        w.commit()?;
        drop(store);
        Backend::open(path)
    }

    /// Replaces the stored cluster membership, keeping everything else: a store restored
    /// from a snapshot belongs to the new member's cluster, not the one it was taken in.
    /// One transaction; durable when it returns.
    pub fn replace_membership(
        &mut self,
        membership: &crate::membership::Membership,
    ) -> Result<(), BackendError> {
        let mut w = self.store.write()?;
        super::write_membership(&mut w, membership)?;
        w.set_meta(&self.meta.encode());
        w.commit()?;
        Ok(())
    }

    /// Sets the log position of the last commit to `(consistent_index, term)`, keeping its
    /// contents, revision and compacted revision: for a store restored from a snapshot into
    /// a member whose raft log starts over (so, unlike [`Backend::commit`], the index may go
    /// back). One transaction; durable when it returns.
    pub fn reset_log_position(
        &mut self,
        consistent_index: u64,
        term: u64,
    ) -> Result<(), BackendError> {
        let mut w = self.store.write()?;
        let meta = BackendMeta {
            consistent_index,
            term,
            ..self.meta
        };
        w.set_meta(&meta.encode());
        w.commit()?;
        self.meta = meta;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn kv(key: &str, value: &str, create: i64, main: i64, version: i64, lease: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: create,
            mod_revision: main,
            version,
            lease,
        }
    }

    fn tomb(key: &str, main: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            mod_revision: main,
            ..Default::default()
        }
    }

    #[test]
    fn imported_store_loads_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let big = "v".repeat(10_000);
        let records = vec![
            (2, 0, kv("a", "1", 2, 2, 1, 0), false),
            (3, 0, kv("b", &big, 3, 3, 1, 7), false),
            (4, 0, kv("a", "2", 2, 4, 2, 0), false),
            (5, 0, tomb("a", 5), true),
            (5, 1, kv("c", "x", 5, 5, 1, 7), false),
        ];
        let leases = vec![LeaseTtl {
            id: 7,
            ttl_secs: 600,
            remaining_ttl_secs: 0,
        }];
        let meta = BackendMeta {
            consistent_index: 1,
            term: 1,
            revision: 6,
            compact_revision: 3,
        };
        let backend = Backend::import(&path, records, leases, meta).unwrap();
        assert_eq!(backend.meta(), meta);
        let (store, loaded) = backend.load().unwrap();
        assert_eq!(loaded, meta);
        let view = store.view();
        assert_eq!(view.revision(), 6);
        let lease = view.lease(7).expect("lease 7");
        assert_eq!(
            lease.keys,
            vec![Bytes::from_static(b"b"), Bytes::from_static(b"c")]
        );
        assert_eq!(backend.verify().unwrap().entries, 6);
        drop(backend);
        let mut again = Backend::open(&path).unwrap();
        again.reset_log_position(1, 1).unwrap();
        assert_eq!(again.meta(), meta);
        again.reset_log_position(0, 0).unwrap();
        assert!(Backend::open(&path).is_err(), "still locked by `again`");
        drop(again);
        let b = Backend::open(&path).unwrap();
        assert_eq!(
            b.meta(),
            BackendMeta {
                consistent_index: 0,
                term: 0,
                ..meta
            }
        );
        assert_eq!(b.load().unwrap().0.revision(), 6);
    }

    #[test]
    fn refuses_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let meta = BackendMeta {
            consistent_index: 1,
            term: 1,
            revision: 5,
            compact_revision: -1,
        };
        let cases: Vec<(
            Vec<(i64, i64, KeyValue, bool)>,
            Vec<LeaseTtl>,
            BackendMeta,
            &str,
        )> = vec![
            (
                vec![
                    (3, 0, kv("a", "1", 3, 3, 1, 0), false),
                    (2, 0, kv("b", "1", 2, 2, 1, 0), false),
                ],
                vec![],
                meta,
                "after",
            ),
            (
                vec![(3, 0, kv("a", "1", 3, 4, 1, 0), false)],
                vec![],
                meta,
                "mod_revision",
            ),
            (
                vec![(6, 0, kv("a", "1", 6, 6, 1, 0), false)],
                vec![],
                meta,
                "below the newest",
            ),
            (
                vec![],
                vec![LeaseTtl {
                    id: 0,
                    ttl_secs: 1,
                    remaining_ttl_secs: 0,
                }],
                meta,
                "zero or repeated",
            ),
            (
                vec![],
                vec![],
                BackendMeta {
                    compact_revision: 6,
                    ..meta
                },
                "compacted revision",
            ),
        ];
        for (i, (records, leases, meta, want)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("db{i}"));
            let err = Backend::import(&path, records, leases, meta)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "case {i}: {err}");
        }
        let path = dir.path().join("db0");
        assert!(matches!(
            Backend::import(&path, vec![], vec![], meta),
            Err(BackendError::Btree(BtreeError::AlreadyExists(_)))
        ));
    }
}
