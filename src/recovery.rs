//! Start-up: open or create the data directory, read the WAL back, rebuild the key space.
//!
//! The WAL's metadata record names the member and cluster the directory belongs to; the
//! log's entries are replayed into a fresh key space up to the recorded commit index (the
//! rest is committed again by raft after the election and applied then).

use std::path::{Path, PathBuf};

use corekv_engine::mvcc::Store;
use corekv_engine::request::InternalRequest;
use corekv_engine::wal::{RecordKind, Wal, WalOptions};
use corekv_raft::{codec, ConfState, Entry, Restored};
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
        let name = payload.get(20..20 + name_len).ok_or("metadata name past the end")?;
        if payload.len() != 20 + name_len {
            return Err("metadata record has trailing bytes".into());
        }
        let name = String::from_utf8(name.to_vec()).map_err(|_| "metadata name is not UTF-8")?;
        Ok(Identity { member_id, cluster_id, name })
    }
}

/// Everything start-up recovered.
pub struct Recovered {
    pub identity: Identity,
    pub wal: Wal,
    pub store: Store,
    pub raft: Restored,
}

/// The WAL directory inside a data directory.
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("wal")
}

/// Opens the data directory, creating and bootstrapping it if it holds no WAL yet.
pub fn open(data_dir: &Path, fresh: Identity) -> Result<Recovered, String> {
    let dir = wal_dir(data_dir);
    if !Wal::exists(&dir) {
        return bootstrap(data_dir, &dir, fresh);
    }
    let (wal, recovered) = Wal::open(&dir, WalOptions::default()).map_err(|e| e.to_string())?;
    if let Some((path, offset)) = &recovered.truncated_tail {
        log::warn!("WAL had a torn tail; truncated {} at offset {offset}", path.display());
    }
    let identity = Identity::decode(&recovered.metadata)?;
    if identity.name != fresh.name {
        log::warn!(
            "data dir belongs to member {:?}; --name {:?} ignored as etcd does for an existing data dir",
            identity.name,
            fresh.name
        );
    }
    let raft = rebuild_raft_state(&recovered.records, identity.member_id)?;
    let store = replay(&raft)?;
    log::info!(
        "recovered {} entries (applied through index {}, term {}), revision {}",
        raft.entries.len(),
        raft.applied,
        raft.hard_state.term,
        store.revision()
    );
    Ok(Recovered { identity, wal, store, raft })
}

fn bootstrap(data_dir: &Path, dir: &Path, identity: Identity) -> Result<Recovered, String> {
    std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create data dir {}: {e}", data_dir.display()))?;
    restrict_permissions(data_dir);
    let mut wal = Wal::create(dir, &identity.encode(), WalOptions::default()).map_err(|e| e.to_string())?;
    let conf_state = ConfState { voters: vec![identity.member_id], ..Default::default() };
    wal.append(&[(RecordKind::ConfState, &codec::encode_conf_state(&conf_state))]).map_err(|e| e.to_string())?;
    log::info!("bootstrapped new member {:x} in {}", identity.member_id, data_dir.display());
    let raft = Restored { conf_state, ..Default::default() };
    Ok(Recovered { identity, wal, store: Store::new(), raft })
}

/// etcd refuses world-readable data dirs; corekv tightens them to 0700 at creation.
fn restrict_permissions(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

/// Folds the WAL's records into raft's durable state. A later entry with an index at or
/// below the last one replaces the conflicting suffix (raft truncation).
fn rebuild_raft_state(records: &[corekv_engine::wal::Record], member_id: u64) -> Result<Restored, String> {
    let mut out = Restored::default();
    for record in records {
        match record.kind {
            RecordKind::Entry => append_entry(&mut out.entries, codec::decode_entry(&record.payload).map_err(|e| e.to_string())?)?,
            RecordKind::HardState => out.hard_state = codec::decode_hard_state(&record.payload).map_err(|e| e.to_string())?,
            RecordKind::ConfState => out.conf_state = codec::decode_conf_state(&record.payload).map_err(|e| e.to_string())?,
            RecordKind::Metadata | RecordKind::Snapshot => {}
        }
    }
    if out.conf_state.voters.is_empty() {
        return Err("WAL holds no membership (ConfState) record".into());
    }
    let last = out.entries.last().map_or(0, |e| e.index);
    out.hard_state.commit = out.hard_state.commit.min(last);
    if out.conf_state.voters == [member_id] && out.conf_state.learners.is_empty() {
        // A lone voter's quorum is itself: every entry it made durable is committed, so
        // serve them all at once instead of after the election re-commits them.
        out.hard_state.commit = last;
    }
    out.applied = out.hard_state.commit;
    Ok(out)
}

fn append_entry(entries: &mut Vec<Entry>, entry: Entry) -> Result<(), String> {
    while entries.last().is_some_and(|last| last.index >= entry.index) {
        entries.pop();
    }
    let expected = entries.last().map_or(1, |last| last.index + 1);
    if entry.index != expected {
        return Err(format!("WAL entries are not contiguous: expected index {expected}, found {}", entry.index));
    }
    entries.push(entry);
    Ok(())
}

/// Applies every committed entry to a fresh key space. Apply is deterministic, so requests
/// that failed the first time fail again and change nothing.
fn replay(raft: &Restored) -> Result<Store, String> {
    let mut store = Store::new();
    for entry in raft.entries.iter().take_while(|e| e.index <= raft.applied) {
        if let Some(command) = decode_command(entry)? {
            let _ = store.apply(&command);
        }
    }
    Ok(store)
}

/// The client command an entry carries (`None` for raft's own empty entries).
pub fn decode_command(entry: &Entry) -> Result<Option<corekv_engine::request::Command>, String> {
    if entry.data.is_empty() || entry.entry_type != corekv_raft::EntryType::EntryNormal as i32 {
        return Ok(None);
    }
    let request = InternalRequest::decode(entry.data.as_slice())
        .map_err(|e| format!("entry {} does not decode: {e}", entry.index))?;
    Ok(request.into_command())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_rejects_garbage() {
        let id = Identity { member_id: 1, cluster_id: 2, name: "n1".into() };
        assert_eq!(Identity::decode(&id.encode()).unwrap(), id);
        let mut bad = id.encode();
        bad.push(0);
        assert!(Identity::decode(&bad).is_err());
        assert!(Identity::decode(&bad[..10]).is_err());
    }

    #[test]
    fn later_entries_replace_a_conflicting_suffix() {
        let e = |index, term| Entry { index, term, ..Default::default() };
        let mut log = Vec::new();
        for entry in [e(1, 1), e(2, 1), e(3, 1), e(2, 2), e(3, 2)] {
            append_entry(&mut log, entry).unwrap();
        }
        assert_eq!(log.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(1, 1), (2, 2), (3, 2)]);
        assert!(append_entry(&mut log, e(5, 2)).is_err(), "a gap is corruption");
    }
}
