//! Start-up: open or create the data directory, read the WAL back, rebuild the key space.
//!
//! The WAL's metadata record names the member and cluster the directory belongs to; the
//! log's entries are replayed into a fresh key space up to the recorded commit index (the
//! rest is committed again by raft after the election and applied then).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use corekv_engine::backend::{Backend, BackendMeta};

use corekv_engine::membership::{Member, Membership};
use corekv_engine::mvcc::Store;
use corekv_engine::request::InternalRequest;
use corekv_engine::wal::{RecordKind, Wal, WalOptions};
use corekv_raft::{codec, ConfChangeV2, ConfState, Entry, EntryType, HardState, Restored};
use prost::Message;

/// Who this data directory belongs to (the WAL's metadata record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
}

impl Identity {
    /// `member_id u64 LE | cluster_id u64 LE | name_len u32 LE | name (UTF-8)`
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.name.len());
        out.extend_from_slice(&self.member_id.to_le_bytes());
        out.extend_from_slice(&self.cluster_id.to_le_bytes());
        out.extend_from_slice(&(self.name.len() as u32).to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    fn decode(payload: &[u8]) -> Result<Identity, String> {
        if payload.len() < 20 {
            return Err("metadata record too short".into());
        }
        let member_id = u64::from_le_bytes(payload[0..8].try_into().expect("8 bytes"));
        let cluster_id = u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
        let name_len = u32::from_le_bytes(payload[16..20].try_into().expect("4 bytes")) as usize;
        let name = payload
            .get(20..20 + name_len)
            .ok_or("metadata name past the end")?;
        if payload.len() != 20 + name_len {
            return Err("metadata record has trailing bytes".into());
        }
        let name = String::from_utf8(name.to_vec()).map_err(|_| "metadata name is not UTF-8")?;
        Ok(Identity {
            member_id,
            cluster_id,
            name,
        })
    }
}

/// Everything start-up recovered.
pub struct Recovered {
    pub identity: Identity,
    pub wal: Wal,
    pub store: Store,
    pub raft: Restored,
    /// The on-disk revision store, and the log index its last commit holds.
    pub backend: Backend,
    pub backend_index: u64,
    /// Highest raft entry index in each live WAL segment (segment seq -> index).
    pub segment_last_index: BTreeMap<u64, u64>,
    /// Committed configuration changes after the last membership record in the WAL: the
    /// member crashed between applying them and recording the result. Raft must apply them
    /// again before it starts (the key space already holds their membership side).
    pub conf_changes_to_reapply: Vec<ConfChangeV2>,
}

/// How a data directory without a WAL starts.
pub enum Bootstrap {
    /// A member of a new cluster (--initial-cluster-state=new): every initial member
    /// derives the same membership from the flags.
    New { members: Vec<Member> },
    /// A member added to a running cluster (--initial-cluster-state=existing): it starts
    /// empty and learns the key space from the leader's snapshot. Until then it knows the
    /// membership its peers told it (so it can accept their connections).
    Join { members: Vec<Member> },
}

/// The WAL directory inside a data directory.
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("wal")
}

/// The revision store file inside a data directory (where etcd keeps its bbolt db).
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("snap").join("db")
}

fn open_backend(data_dir: &Path) -> Result<(Backend, Store, BackendMeta), String> {
    let path = db_path(data_dir);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    crate::store_writer::remove_leftovers(&path);
    let backend =
        Backend::open(&path).map_err(|e| format!("revision store {}: {e}", path.display()))?;
    let (store, meta) = backend
        .load()
        .map_err(|e| format!("revision store {}: {e}", path.display()))?;
    Ok((backend, store, meta))
}

/// Opens the data directory, creating and bootstrapping it if it holds no WAL yet.
pub fn open(
    data_dir: &Path,
    fresh: Identity,
    how: impl FnOnce() -> Result<(Identity, Bootstrap), String>,
) -> Result<Recovered, String> {
    let dir = wal_dir(data_dir);
    if !Wal::exists(&dir) {
        let (identity, how) = how()?;
        return bootstrap(data_dir, &dir, identity, how);
    }
    let (wal, recovered) = Wal::open(&dir, WalOptions::default()).map_err(|e| e.to_string())?;
    if let Some((path, offset)) = &recovered.truncated_tail {
        log::warn!(
            "WAL had a torn tail; truncated {} at offset {offset}",
            path.display()
        );
    }
    let identity = Identity::decode(&recovered.metadata)?;
    if identity.name != fresh.name {
        log::warn!(
            "data dir belongs to member {:?}; --name {:?} ignored as etcd does for an existing data dir",
            identity.name,
            fresh.name
        );
    }
    let (backend, mut store, meta) = open_backend(data_dir)?;
    let (mut raft, conf_index) = rebuild_raft_state(&recovered.records, identity.member_id)?;
    start_after_store(&mut raft, meta.consistent_index, meta.term)?;
    replay(&raft, &mut store)?;
    let conf_changes_to_reapply = raft
        .entries
        .iter()
        .filter(|e| e.index > conf_index && e.index <= raft.applied)
        .filter_map(conf_change_of)
        .collect();
    let segment_last_index = segment_last_index(&recovered);
    log::info!(
        "recovered: revision store at index {}, {} WAL entries after it (applied through index {}, term {}), revision {}",
        meta.consistent_index,
        raft.entries.len(),
        raft.applied,
        raft.hard_state.term,
        store.revision()
    );
    Ok(Recovered {
        identity,
        wal,
        store,
        raft,
        backend,
        backend_index: meta.consistent_index,
        segment_last_index,
        conf_changes_to_reapply,
    })
}

/// Drops the entries the store already holds and starts raft's log just after them.
fn start_after_store(raft: &mut Restored, store_index: u64, store_term: u64) -> Result<(), String> {
    if store_index == 0 {
        if raft.entries.first().is_some_and(|e| e.index != 1) {
            return Err(format!(
                "WAL starts at index {} but the revision store holds nothing",
                raft.entries[0].index
            ));
        }
        return Ok(());
    }
    if raft
        .entries
        .first()
        .is_some_and(|e| e.index > store_index + 1)
    {
        return Err(format!(
            "WAL starts at index {} but the revision store only holds up to {store_index}: entries are missing",
            raft.entries[0].index
        ));
    }
    raft.entries.retain(|e| e.index > store_index);
    raft.snapshot = Some((store_index, store_term));
    raft.hard_state.commit = raft.hard_state.commit.max(store_index);
    raft.applied = raft.applied.max(store_index);
    Ok(())
}

/// The highest entry index each live segment holds (0 for a segment with no entry).
fn segment_last_index(recovered: &corekv_engine::wal::Recovered) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    let starts = &recovered.segment_starts;
    for (i, (seq, first)) in starts.iter().enumerate() {
        let end = starts
            .get(i + 1)
            .map_or(recovered.records.len(), |(_, next)| *next);
        let last = recovered.records[*first..end]
            .iter()
            .filter(|r| r.kind == RecordKind::Entry)
            .filter_map(|r| codec::decode_entry(&r.payload).ok())
            .map(|e| e.index)
            .max()
            .unwrap_or(0);
        out.insert(*seq, last);
    }
    out
}

fn bootstrap(
    data_dir: &Path,
    dir: &Path,
    identity: Identity,
    how: Bootstrap,
) -> Result<Recovered, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", data_dir.display()))?;
    restrict_permissions(data_dir);
    // A store left from an earlier attempt without a WAL cannot be trusted to match.
    let _ = std::fs::remove_file(db_path(data_dir));
    let (mut backend, mut store, _) = open_backend(data_dir)?;
    let mut raft = Restored::default();
    let mut backend_index = 0;
    if let Bootstrap::New { members } = how {
        // The log of a new cluster starts after index 1, which stands for the initial
        // membership (held by the store): a member that joins later has nothing at index
        // 1 to replay, so the leader must send it a snapshot, membership included.
        raft.conf_state = ConfState {
            voters: members.iter().map(|m| m.id).collect(),
            ..Default::default()
        };
        raft.snapshot = Some((1, 1));
        raft.hard_state = HardState {
            term: 1,
            vote: 0,
            commit: 1,
        };
        raft.applied = 1;
        store.seed_membership(Membership::with_members(members));
        backend
            .commit(&store.take_changes(), 1, 1)
            .map_err(|e| format!("revision store: {e}"))?;
        backend_index = 1;
    } else if let Bootstrap::Join { members } = how {
        store.seed_membership(Membership::with_members(members));
        backend
            .commit(&store.take_changes(), 0, 0)
            .map_err(|e| format!("revision store: {e}"))?;
    }
    let mut wal =
        Wal::create(dir, &identity.encode(), WalOptions::default()).map_err(|e| e.to_string())?;
    let conf = codec::encode_conf_state(&raft.conf_state);
    let hard = codec::encode_hard_state(&raft.hard_state);
    wal.append(&[
        (RecordKind::ConfState, &conf),
        (RecordKind::HardState, &hard),
    ])
    .map_err(|e| e.to_string())?;
    log::info!(
        "bootstrapped member {:x} of cluster {:x} in {} ({})",
        identity.member_id,
        identity.cluster_id,
        data_dir.display(),
        if backend_index == 0 {
            "joining: waiting for the leader's snapshot"
        } else {
            "new cluster"
        }
    );
    Ok(Recovered {
        identity,
        wal,
        store,
        raft,
        backend,
        backend_index,
        segment_last_index: BTreeMap::new(),
        conf_changes_to_reapply: Vec::new(),
    })
}

/// etcd refuses world-readable data dirs; corekv tightens them to 0700 at creation.
fn restrict_permissions(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

/// Folds the WAL's records into raft's durable state. A later entry with an index at or
/// below the last one replaces the conflicting suffix (raft truncation); a snapshot marker
/// (a snapshot from the leader was installed) drops everything before it. Also returns the
/// index of the last entry written before the last membership record.
fn rebuild_raft_state(
    records: &[corekv_engine::wal::Record],
    member_id: u64,
) -> Result<(Restored, u64), String> {
    let mut out = Restored::default();
    let mut conf_index = 0;
    for record in records {
        match record.kind {
            RecordKind::Entry => append_entry(
                &mut out.entries,
                codec::decode_entry(&record.payload).map_err(|e| e.to_string())?,
            )?,
            RecordKind::HardState => {
                out.hard_state =
                    codec::decode_hard_state(&record.payload).map_err(|e| e.to_string())?
            }
            RecordKind::ConfState => {
                out.conf_state =
                    codec::decode_conf_state(&record.payload).map_err(|e| e.to_string())?;
                conf_index = out.entries.last().map_or(conf_index, |e| e.index);
            }
            RecordKind::Snapshot => {
                let (index, term) =
                    codec::decode_snapshot_marker(&record.payload).map_err(|e| e.to_string())?;
                out.entries.clear();
                out.snapshot = Some((index, term));
                conf_index = index;
            }
            RecordKind::Metadata => {}
        }
    }
    let last = out
        .entries
        .last()
        .map_or(out.snapshot.map_or(0, |(i, _)| i), |e| e.index);
    out.hard_state.commit = out.hard_state.commit.min(last);
    if out.conf_state.voters == [member_id] && out.conf_state.learners.is_empty() {
        // A lone voter's quorum is itself: every entry it made durable is committed, so
        // serve them all at once instead of after the election re-commits them.
        out.hard_state.commit = last;
    }
    out.applied = out.hard_state.commit;
    Ok((out, conf_index))
}

fn append_entry(entries: &mut Vec<Entry>, entry: Entry) -> Result<(), String> {
    while entries.last().is_some_and(|last| last.index >= entry.index) {
        entries.pop();
    }
    // The first entry may follow released segments or a snapshot; the store's index is
    // checked later.
    let expected = entries.last().map_or(entry.index, |last| last.index + 1);
    if entry.index != expected {
        return Err(format!(
            "WAL entries are not contiguous: expected index {expected}, found {}",
            entry.index
        ));
    }
    entries.push(entry);
    Ok(())
}

/// Applies every committed entry after the store's index. Apply is deterministic, so
/// requests that failed the first time fail again and change nothing.
fn replay(raft: &Restored, store: &mut Store) -> Result<(), String> {
    for entry in raft.entries.iter().take_while(|e| e.index <= raft.applied) {
        if let Some((mut request, _)) = decode_request(entry)? {
            let auth = request.auth_header.take();
            let Some(command) = request.into_command() else {
                continue;
            };
            let _ = store.apply_as(&command, auth.as_ref());
        }
    }
    Ok(())
}

/// The request an entry carries (`None` for raft's own empty entries), with the raft
/// configuration change when it is one (the request then travels as the change's context).
pub fn decode_request(
    entry: &Entry,
) -> Result<Option<(InternalRequest, Option<ConfChangeV2>)>, String> {
    if entry.data.is_empty() {
        return Ok(None);
    }
    if entry.entry_type == EntryType::EntryConfChangeV2 as i32 {
        let change = codec::decode_conf_change(&entry.data)
            .map_err(|e| format!("entry {}: {e}", entry.index))?;
        let request = InternalRequest::decode(change.context.as_slice()).map_err(|e| {
            format!(
                "entry {}'s membership change does not decode: {e}",
                entry.index
            )
        })?;
        return Ok(Some((request, Some(change))));
    }
    if entry.entry_type != EntryType::EntryNormal as i32 {
        return Err(format!(
            "entry {} has a type this build does not write ({})",
            entry.index, entry.entry_type
        ));
    }
    let request = InternalRequest::decode(entry.data.as_slice())
        .map_err(|e| format!("entry {} does not decode: {e}", entry.index))?;
    Ok(Some((request, None)))
}

/// The configuration change a committed entry carries, if any.
pub fn conf_change_of(entry: &Entry) -> Option<ConfChangeV2> {
    if entry.entry_type != EntryType::EntryConfChangeV2 as i32 || entry.data.is_empty() {
        return None;
    }
    codec::decode_conf_change(&entry.data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_rejects_garbage() {
        let id = Identity {
            member_id: 1,
            cluster_id: 2,
            name: "n1".into(),
        };
        assert_eq!(Identity::decode(&id.encode()).unwrap(), id);
        let mut bad = id.encode();
        bad.push(0);
        assert!(Identity::decode(&bad).is_err());
        assert!(Identity::decode(&bad[..10]).is_err());
    }

    #[test]
    fn later_entries_replace_a_conflicting_suffix() {
        let e = |index, term| Entry {
            index,
            term,
            ..Default::default()
        };
        let mut log = Vec::new();
        for entry in [e(1, 1), e(2, 1), e(3, 1), e(2, 2), e(3, 2)] {
            append_entry(&mut log, entry).unwrap();
        }
        assert_eq!(
            log.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            vec![(1, 1), (2, 2), (3, 2)]
        );
        assert!(
            append_entry(&mut log, e(5, 2)).is_err(),
            "a gap is corruption"
        );
        let mut released = Vec::new();
        append_entry(&mut released, e(40, 3)).unwrap();
        append_entry(&mut released, e(41, 3)).unwrap();
        assert_eq!(released.len(), 2, "a log may start after released segments");
    }
}
