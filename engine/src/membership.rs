//! The cluster's membership as the replicated state holds it: who the members are (raft
//! ids with their names and URLs, voters and learners) and which ids were removed for good.
//!
//! Raft's own `ConfState` says who votes; this says how to reach them and what
//! `Cluster.MemberList` shows. Both change only by applying log entries, so every member
//! holds the same membership at the same index, and it travels in snapshots with the key
//! space (the revision store persists it beside the key space).

use std::collections::{BTreeMap, BTreeSet};

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Member {
    /// The member's raft id (etcd's member ID); never 0.
    pub id: u64,
    /// Empty until the member has started and published its attributes (etcd shows such a
    /// member as "unstarted").
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Published by the member itself when it starts.
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// A membership change carried by a raft configuration-change entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfChangeKind {
    AddVoter,
    AddLearner,
    Remove,
    /// A learner becomes a voter.
    Promote,
}

/// Why a membership change or update does not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipError {
    /// etcd: "etcdserver: member ID already exist".
    IdExists,
    /// etcd: "etcdserver: Peer URLs already exists".
    PeerUrlExists,
    /// etcd: "etcdserver: member not found".
    NotFound,
    /// etcd: "etcdserver: the member has been permanently removed from the cluster".
    Removed,
    /// etcd: "etcdserver: can only promote a learner member".
    NotLearner,
}

impl std::fmt::Display for MembershipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MembershipError::IdExists => "etcdserver: member ID already exist",
            MembershipError::PeerUrlExists => "etcdserver: Peer URLs already exists",
            MembershipError::NotFound => "etcdserver: member not found",
            MembershipError::Removed => {
                "etcdserver: the member has been permanently removed from the cluster"
            }
            MembershipError::NotLearner => "etcdserver: can only promote a learner member",
        })
    }
}

/// The members and the removed ids.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    members: BTreeMap<u64, Member>,
    removed: BTreeSet<u64>,
}

impl Membership {
    /// A membership of `members` (a new cluster's initial members).
    pub fn with_members(members: impl IntoIterator<Item = Member>) -> Membership {
        let mut out = Membership::default();
        for m in members {
            assert!(m.id != 0, "member id 0 is reserved");
            out.members.insert(m.id, m);
        }
        out
    }

    /// The members in id order.
    pub fn members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.members.values()
    }

    /// The member with `id`, if it is one.
    pub fn get(&self, id: u64) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Whether `id` was removed from the cluster (it may never come back).
    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// The removed ids, ascending.
    pub fn removed(&self) -> impl Iterator<Item = u64> + '_ {
        self.removed.iter().copied()
    }

    /// Whether no member is known (a store that has never been part of a cluster).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Checks a change before it is proposed, as etcd's `ValidateConfigurationChange`.
    pub fn validate(&self, kind: ConfChangeKind, member: &Member) -> Result<(), MembershipError> {
        if self.removed.contains(&member.id) {
            return Err(MembershipError::Removed);
        }
        match kind {
            ConfChangeKind::AddVoter | ConfChangeKind::AddLearner => {
                if self.members.contains_key(&member.id) {
                    return Err(MembershipError::IdExists);
                }
                let taken = self
                    .members
                    .values()
                    .flat_map(|m| m.peer_urls.iter())
                    .any(|u| member.peer_urls.contains(u));
                if taken {
                    return Err(MembershipError::PeerUrlExists);
                }
            }
            ConfChangeKind::Remove => {
                if !self.members.contains_key(&member.id) {
                    return Err(MembershipError::NotFound);
                }
            }
            ConfChangeKind::Promote => match self.members.get(&member.id) {
                None => return Err(MembershipError::NotFound),
                Some(m) if !m.is_learner => return Err(MembershipError::NotLearner),
                Some(_) => {}
            },
        }
        Ok(())
    }

    /// Applies a committed change. A change that no longer validates (two racing changes)
    /// is refused and leaves the membership as it was.
    pub fn apply_change(
        &mut self,
        kind: ConfChangeKind,
        member: &Member,
    ) -> Result<(), MembershipError> {
        self.validate(kind, member)?;
        match kind {
            ConfChangeKind::AddVoter | ConfChangeKind::AddLearner => {
                let mut m = member.clone();
                m.is_learner = kind == ConfChangeKind::AddLearner;
                self.members.insert(m.id, m);
            }
            ConfChangeKind::Remove => {
                self.members.remove(&member.id);
                self.removed.insert(member.id);
            }
            ConfChangeKind::Promote => {
                if let Some(m) = self.members.get_mut(&member.id) {
                    m.is_learner = false;
                }
            }
        }
        Ok(())
    }

    /// A member publishes its name and client URLs once it runs (etcd's attributes).
    pub fn set_attributes(
        &mut self,
        id: u64,
        name: &str,
        client_urls: &[String],
    ) -> Result<(), MembershipError> {
        let m = self.members.get_mut(&id).ok_or(MembershipError::NotFound)?;
        m.name = name.to_string();
        m.client_urls = client_urls.to_vec();
        Ok(())
    }

    /// Cluster.MemberUpdate: new peer URLs for a member.
    pub fn set_peer_urls(&mut self, id: u64, peer_urls: &[String]) -> Result<(), MembershipError> {
        if !self.members.contains_key(&id) {
            return Err(MembershipError::NotFound);
        }
        let taken = self
            .members
            .values()
            .filter(|m| m.id != id)
            .flat_map(|m| m.peer_urls.iter())
            .any(|u| peer_urls.contains(u));
        if taken {
            return Err(MembershipError::PeerUrlExists);
        }
        if let Some(m) = self.members.get_mut(&id) {
            m.peer_urls = peer_urls.to_vec();
        }
        Ok(())
    }

    /// Restores a member read back from disk.
    pub fn restore_member(&mut self, member: Member) {
        self.members.insert(member.id, member);
    }

    /// Restores a removed id read back from disk.
    pub fn restore_removed(&mut self, id: u64) {
        self.removed.insert(id);
    }
}

/// Encodes a member for the revision store: flags u8 (bit 0 learner), name, then the peer
/// URL list and the client URL list; a string is len u32 LE + UTF-8 bytes, a list is
/// count u32 LE + strings. The id is the tree key.
pub fn encode_member(m: &Member) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(u8::from(m.is_learner));
    put_str(&mut out, &m.name);
    for list in [&m.peer_urls, &m.client_urls] {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for s in list {
            put_str(&mut out, s);
        }
    }
    out
}

/// Decodes what [`encode_member`] wrote.
pub fn decode_member(id: u64, bytes: &[u8]) -> Result<Member, String> {
    let mut r = Reader { bytes, at: 0 };
    let flags = r.u8()?;
    if flags & !1 != 0 {
        return Err(format!("member {id:x} has unknown flags {flags:#04x}"));
    }
    let name = r.string()?;
    let peer_urls = r.list()?;
    let client_urls = r.list()?;
    if r.at != bytes.len() {
        return Err(format!("member {id:x} record has trailing bytes"));
    }
    Ok(Member {
        id,
        name,
        peer_urls,
        client_urls,
        is_learner: flags & 1 == 1,
    })
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Most strings in one list of a member record (a bound against a corrupt count).
const LIST_LEN_MAX: usize = 1024;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| "member record is truncated".to_string())?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "member string is not UTF-8".into())
    }
    fn list(&mut self) -> Result<Vec<String>, String> {
        let n = self.u32()?;
        if n > LIST_LEN_MAX {
            return Err(format!("member record lists {n} URLs"));
        }
        (0..n).map(|_| self.string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, url: &str) -> Member {
        Member {
            id,
            peer_urls: vec![url.into()],
            ..Default::default()
        }
    }

    #[test]
    fn changes_follow_etcds_rules() {
        let mut ms = Membership::with_members([member(1, "http://a:2380")]);
        let cases: Vec<(ConfChangeKind, Member, Result<(), MembershipError>)> = vec![
            (
                ConfChangeKind::AddVoter,
                member(1, "http://x:1"),
                Err(MembershipError::IdExists),
            ),
            (
                ConfChangeKind::AddVoter,
                member(2, "http://a:2380"),
                Err(MembershipError::PeerUrlExists),
            ),
            (
                ConfChangeKind::AddLearner,
                member(2, "http://b:2380"),
                Ok(()),
            ),
            (
                ConfChangeKind::Promote,
                member(1, ""),
                Err(MembershipError::NotLearner),
            ),
            (ConfChangeKind::Promote, member(2, ""), Ok(())),
            (
                ConfChangeKind::Remove,
                member(9, ""),
                Err(MembershipError::NotFound),
            ),
            (ConfChangeKind::Remove, member(2, ""), Ok(())),
            (
                ConfChangeKind::AddVoter,
                member(2, "http://c:2380"),
                Err(MembershipError::Removed),
            ),
        ];
        for (i, (kind, m, want)) in cases.into_iter().enumerate() {
            assert_eq!(ms.apply_change(kind, &m), want, "case {i}: {kind:?} {m:?}");
        }
        assert_eq!(ms.members().count(), 1);
        assert!(ms.is_removed(2));
    }

    #[test]
    fn member_records_round_trip_and_reject_damage() {
        let m = Member {
            id: 7,
            name: "n7".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into(), "http://h:1".into()],
            client_urls: vec!["http://127.0.0.1:2379".into()],
            is_learner: true,
        };
        let bytes = encode_member(&m);
        assert_eq!(decode_member(7, &bytes).unwrap(), m);
        for cut in 0..bytes.len() {
            assert!(decode_member(7, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_member(7, &extra).is_err());
        let mut flags = bytes;
        flags[0] = 4;
        assert!(decode_member(7, &flags).is_err());
    }
}
