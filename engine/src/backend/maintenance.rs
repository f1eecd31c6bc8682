//! Maintenance on a pinned snapshot of the store: Maintenance.Hash's hash, and compacted
//! copies (online defragmentation, Maintenance.Snapshot images). A [`Snapshot`] is `Send`
//! and `Sync`, so the work runs on a helper thread while the writer goes on committing (the
//! snapshot's pages are not reused until it is dropped).

use std::ops::Bound;
use std::path::Path;

use super::{decode_meta, Backend, BackendError, BackendMeta};
use crate::btree::{self, ReadTxn};

/// The last commit of a [`Backend`], pinned.
pub struct Snapshot {
    txn: ReadTxn,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("txid", &self.txn.txid())
            .finish()
    }
}

impl Backend {
    /// Pins the last commit.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            txn: self.store.read(),
        }
    }
}

impl Snapshot {
    /// The meta record of the pinned commit.
    pub fn meta(&self) -> Result<BackendMeta, BackendError> {
        decode_meta(&self.txn)
    }

    /// corekv's Maintenance.Hash: CRC-32C (Castagnoli) over every entry of the store, key
    /// then value, in key order (revision records, leases, alarms). The meta record (log
    /// position) is left out, as etcd leaves out its consistent index: members holding the
    /// same data hash alike. Reads the whole snapshot.
    pub fn hash(&self) -> Result<u32, BackendError> {
        let mut crc = 0u32;
        for entry in self.txn.range(Bound::Unbounded, Bound::Unbounded) {
            let (k, v) = entry?;
            crc = crc32c::crc32c_append(crc, k);
            crc = crc32c::crc32c_append(crc, v);
        }
        Ok(crc)
    }

    /// Writes the pinned commit, compacted (every page full, no free list), into a new
    /// store file at `path`, which must not exist. Durable when it returns; the image is the
    /// first `page_count` pages of the returned figures.
    pub fn compact_to(&self, path: impl AsRef<Path>) -> Result<btree::Stats, BackendError> {
        Ok(self.txn.compact_to(path)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::alarm::{ACTION_ACTIVATE, ACTION_DEACTIVATE, ALARM_CORRUPT, ALARM_NOSPACE};
    use crate::mvcc::Store;
    use crate::pb::{
        PbAlarmRequest, PbCompactionRequest, PbDeleteRequest, PbLeaseGrantRequest, PbPutRequest,
        PbRangeRequest,
    };
    use crate::request::Command;

    fn put(key: &str, value: Vec<u8>, lease: i64) -> Command {
        Command::Put(PbPutRequest {
            key: key.into(),
            value,
            lease,
            ..Default::default()
        })
    }

    fn alarm(action: i32, member_id: u64, alarm: i32) -> Command {
        Command::Alarm(PbAlarmRequest {
            action,
            member_id,
            alarm,
        })
    }

    /// Applies `commands` and commits what they changed at the next index.
    fn apply_commit(backend: &mut Backend, store: &mut Store, commands: &[Command]) {
        for c in commands {
            store.apply(c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        }
        let index = backend.meta().consistent_index + 1;
        backend.commit(&store.take_changes(), index, 1).unwrap();
    }

    fn everything(store: &Store) -> crate::pb::PbRangeResponse {
        store
            .view()
            .range(&PbRangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            })
            .unwrap()
    }

    /// A store with history, leases, an alarm, deletions and a compaction.
    fn populated(dir: &std::path::Path) -> (Backend, Store) {
        let mut backend = Backend::open(dir.join("db")).unwrap();
        let (mut store, _) = backend.load().unwrap();
        apply_commit(
            &mut backend,
            &mut store,
            &[Command::LeaseGrant(PbLeaseGrantRequest { id: 9, ttl: 100 })],
        );
        for round in 0..4 {
            let batch: Vec<Command> = (0..50)
                .map(|i| {
                    put(
                        &format!("k{i:03}"),
                        vec![round as u8; 100 + 40 * i],
                        if i % 7 == 0 { 9 } else { 0 },
                    )
                })
                .collect();
            apply_commit(&mut backend, &mut store, &batch);
        }
        apply_commit(
            &mut backend,
            &mut store,
            &[
                Command::DeleteRange(PbDeleteRequest {
                    key: b"k01".to_vec(),
                    range_end: b"k04".to_vec(),
                    ..Default::default()
                }),
                alarm(ACTION_ACTIVATE, 77, ALARM_NOSPACE),
            ],
        );
        let rev = store.revision();
        apply_commit(
            &mut backend,
            &mut store,
            &[Command::Compact(PbCompactionRequest {
                revision: rev,
                physical: false,
            })],
        );
        (backend, store)
    }

    #[test]
    fn alarms_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut backend = Backend::open(dir.path().join("db")).unwrap();
        let (mut store, _) = backend.load().unwrap();
        apply_commit(
            &mut backend,
            &mut store,
            &[
                put("a", b"1".to_vec(), 0),
                alarm(ACTION_ACTIVATE, 5, ALARM_NOSPACE),
                alarm(ACTION_ACTIVATE, 3, ALARM_CORRUPT),
            ],
        );
        drop(backend);
        let mut backend = Backend::open(dir.path().join("db")).unwrap();
        let (mut loaded, _) = backend.load().unwrap();
        assert_eq!(
            loaded.view().alarms(),
            vec![(5, ALARM_NOSPACE), (3, ALARM_CORRUPT)]
        );
        // Still in force after the reload: CORRUPT refuses writes.
        assert!(loaded.apply(&put("b", b"1".to_vec(), 0)).is_err());
        apply_commit(
            &mut backend,
            &mut loaded,
            &[alarm(ACTION_DEACTIVATE, 3, ALARM_CORRUPT)],
        );
        let (again, _) = backend.load().unwrap();
        assert_eq!(again.view().alarms(), vec![(5, ALARM_NOSPACE)]);
    }

    #[test]
    fn membership_survives_a_reload_and_a_compacted_copy() {
        use crate::membership::{ConfChangeKind, Member, Membership};
        use crate::request::{Command, MemberAttributesRequest, MemberConfRequest};
        let dir = tempfile::tempdir().unwrap();
        let mut backend = Backend::open(dir.path().join("db")).unwrap();
        let (mut store, _) = backend.load().unwrap();
        let member = |id: u64, url: &str| Member {
            id,
            peer_urls: vec![url.into()],
            ..Default::default()
        };
        store.seed_membership(Membership::with_members([
            member(1, "http://a:2380"),
            member(2, "http://b:2380"),
        ]));
        let commands = [
            Command::MemberAttributes(MemberAttributesRequest {
                id: 1,
                name: "a".into(),
                client_urls: vec!["http://a:2379".into()],
            }),
            Command::MemberConf(MemberConfRequest::new(
                ConfChangeKind::AddLearner,
                &member(3, "http://c:2380"),
            )),
            Command::MemberConf(MemberConfRequest::new(
                ConfChangeKind::Remove,
                &member(2, ""),
            )),
        ];
        apply_commit(&mut backend, &mut store, &commands);
        let want = store.view().membership().clone();
        assert_eq!(want.members().count(), 2);
        assert!(want.get(3).unwrap().is_learner && want.is_removed(2));
        assert_eq!(want.get(1).unwrap().name, "a");
        drop(backend);
        let backend = Backend::open(dir.path().join("db")).unwrap();
        let (loaded, _) = backend.load().unwrap();
        assert_eq!(loaded.view().membership(), &want);
        let copy = dir.path().join("copy");
        backend.snapshot().compact_to(&copy).unwrap();
        let (from_copy, _) = Backend::open(&copy).unwrap().load().unwrap();
        assert_eq!(from_copy.view().membership(), &want);
    }

    #[test]
    fn compacted_copy_holds_the_same_key_space_in_fewer_pages() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, store) = populated(dir.path());
        let copy = dir.path().join("copy");
        let snap = backend.snapshot();
        let stats = snap.compact_to(&copy).unwrap();
        assert!(matches!(
            snap.compact_to(&copy),
            Err(BackendError::Btree(
                crate::btree::BtreeError::AlreadyExists(_)
            ))
        ));
        assert_eq!(stats.free_pages, 0);
        assert!(
            stats.page_count < backend.stats().page_count,
            "{} !< {}",
            stats.page_count,
            backend.stats().page_count
        );
        let copied = Backend::open(&copy).unwrap();
        assert_eq!(copied.meta(), backend.meta());
        assert_eq!(
            copied.size_bytes(),
            stats.page_count * crate::btree::PAGE_SIZE as u64
        );
        copied.verify().unwrap();
        let (loaded, _) = copied.load().unwrap();
        assert_eq!(everything(&loaded), everything(&store));
        assert_eq!(loaded.view().alarms(), store.view().alarms());
        assert_eq!(loaded.view().lease_ttls(), store.view().lease_ttls());
        assert_eq!(
            loaded.view().hash_kv(0).unwrap(),
            store.view().hash_kv(0).unwrap()
        );
        assert_eq!(
            copied.snapshot().hash().unwrap(),
            snap.hash().unwrap(),
            "same entries, same hash"
        );
    }

    #[test]
    fn the_hash_covers_every_entry_of_the_pinned_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut backend, mut store) = populated(dir.path());
        let pinned = backend.snapshot();
        let before = pinned.hash().unwrap();
        assert_eq!(backend.snapshot().hash().unwrap(), before, "deterministic");
        // A later commit does not change what the pinned snapshot hashes.
        apply_commit(
            &mut backend,
            &mut store,
            &[alarm(ACTION_DEACTIVATE, 77, ALARM_NOSPACE)],
        );
        assert_eq!(pinned.hash().unwrap(), before);
        assert_eq!(pinned.meta().unwrap().revision, backend.meta().revision);
        let no_alarm = backend.snapshot().hash().unwrap();
        assert_ne!(no_alarm, before, "alarms are entries too");
        apply_commit(&mut backend, &mut store, &[put("k000", b"x".to_vec(), 0)]);
        let changed = backend.snapshot().hash().unwrap();
        assert_ne!(changed, no_alarm);
        // The empty store hashes to CRC-32C of nothing.
        let empty = Backend::open(dir.path().join("empty")).unwrap();
        assert_eq!(empty.snapshot().hash().unwrap(), 0);
    }
}
