//! Explicit little-endian encodings of raft records as they are stored in WAL payloads.
//!
//! ```text
//! Entry:     term u64 | index u64 | entry_type u8 | data_len u32 | data | context_len u32 | context
//! HardState: term u64 | vote u64 | commit u64
//! ConfState: voter_count u32 | voters u64* | learner_count u32 | learners u64*
//! ```
//! Decoders never trust a length: every read is bounds-checked and a short or over-long
//! payload is an error, so a corrupt record cannot make recovery allocate or panic.

use raft::eraftpb::{ConfState, Entry, EntryType, HardState};

/// A payload that does not decode as the record it claims to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad raft record: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Encodes an entry into `out` (appending).
pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    out.reserve(29 + entry.data.len() + entry.context.len());
    out.extend_from_slice(&entry.term.to_le_bytes());
    out.extend_from_slice(&entry.index.to_le_bytes());
    out.push(entry.entry_type as u8);
    out.extend_from_slice(&(entry.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&entry.data);
    out.extend_from_slice(&(entry.context.len() as u32).to_le_bytes());
    out.extend_from_slice(&entry.context);
}

/// Decodes an entry written by [`encode_entry`].
pub fn decode_entry(payload: &[u8]) -> Result<Entry, DecodeError> {
    let mut r = Reader(payload);
    let term = r.u64()?;
    let index = r.u64()?;
    let entry_type = match r.u8()? {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => return Err(DecodeError("unknown entry type")),
    };
    let data_len = r.u32()? as usize;
    let data = r.bytes(data_len)?.to_vec();
    let context_len = r.u32()? as usize;
    let context = r.bytes(context_len)?.to_vec();
    r.finish()?;
    let mut entry = Entry {
        term,
        index,
        data,
        context,
        ..Default::default()
    };
    entry.set_entry_type(entry_type);
    Ok(entry)
}

/// Encodes a hard state (24 bytes).
pub fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&hs.term.to_le_bytes());
    out.extend_from_slice(&hs.vote.to_le_bytes());
    out.extend_from_slice(&hs.commit.to_le_bytes());
    out
}

/// Decodes a hard state written by [`encode_hard_state`].
pub fn decode_hard_state(payload: &[u8]) -> Result<HardState, DecodeError> {
    let mut r = Reader(payload);
    let hs = HardState {
        term: r.u64()?,
        vote: r.u64()?,
        commit: r.u64()?,
    };
    r.finish()?;
    Ok(hs)
}

/// Encodes a raft message for a peer (raft's own protobuf encoding).
pub fn encode_message(message: &raft::eraftpb::Message) -> Vec<u8> {
    prost_raft::Message::encode_to_vec(message)
}

/// Decodes a message a peer sent with [`encode_message`].
pub fn decode_message(payload: &[u8]) -> Result<raft::eraftpb::Message, DecodeError> {
    <raft::eraftpb::Message as prost_raft::Message>::decode(payload)
        .map_err(|_| DecodeError("raft message does not decode"))
}

/// Encodes a configuration change for a log entry.
pub fn encode_conf_change(change: &raft::eraftpb::ConfChangeV2) -> Vec<u8> {
    prost_raft::Message::encode_to_vec(change)
}

/// Decodes a configuration change from a committed entry's data.
pub fn decode_conf_change(payload: &[u8]) -> Result<raft::eraftpb::ConfChangeV2, DecodeError> {
    <raft::eraftpb::ConfChangeV2 as prost_raft::Message>::decode(payload)
        .map_err(|_| DecodeError("configuration change does not decode"))
}

/// Encodes a snapshot marker: the log now starts after `(index, term)`, whose effects the
/// revision store holds (16 bytes: index u64 LE, term u64 LE).
pub fn encode_snapshot_marker(index: u64, term: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&term.to_le_bytes());
    out
}

/// Decodes a marker written by [`encode_snapshot_marker`]: `(index, term)`.
pub fn decode_snapshot_marker(payload: &[u8]) -> Result<(u64, u64), DecodeError> {
    let mut r = Reader(payload);
    let marker = (r.u64()?, r.u64()?);
    r.finish()?;
    Ok(marker)
}

/// Encodes a membership configuration (voters and learners).
pub fn encode_conf_state(cs: &ConfState) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 8 * (cs.voters.len() + cs.learners.len()));
    for list in [&cs.voters, &cs.learners] {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for id in list {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    out
}

/// Decodes a membership configuration written by [`encode_conf_state`].
pub fn decode_conf_state(payload: &[u8]) -> Result<ConfState, DecodeError> {
    let mut r = Reader(payload);
    let mut lists = [Vec::new(), Vec::new()];
    for list in lists.iter_mut() {
        let count = r.u32()? as usize;
        if count > r.0.len() / 8 {
            return Err(DecodeError("member count past the end"));
        }
        for _ in 0..count {
            list.push(r.u64()?);
        }
    }
    r.finish()?;
    let [voters, learners] = lists;
    Ok(ConfState {
        voters,
        learners,
        ..Default::default()
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < len {
            return Err(DecodeError("payload too short"));
        }
        let (head, tail) = self.0.split_at(len);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn finish(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips() {
        let mut entry = Entry {
            term: 7,
            index: 42,
            data: b"put k v".to_vec(),
            context: vec![1, 2],
            ..Default::default()
        };
        entry.set_entry_type(EntryType::EntryConfChange);
        let mut buf = Vec::new();
        encode_entry(&entry, &mut buf);
        assert_eq!(decode_entry(&buf).unwrap(), entry);
        for cut in 0..buf.len() {
            assert!(
                decode_entry(&buf[..cut]).is_err(),
                "cut at {cut} must not decode"
            );
        }
        buf.push(0);
        assert!(decode_entry(&buf).is_err(), "trailing byte must not decode");
    }

    #[test]
    fn snapshot_marker_round_trips() {
        let buf = encode_snapshot_marker(1_000, 7);
        assert_eq!(decode_snapshot_marker(&buf).unwrap(), (1_000, 7));
        assert!(decode_snapshot_marker(&buf[..15]).is_err());
        let mut long = buf;
        long.push(0);
        assert!(decode_snapshot_marker(&long).is_err());
    }

    #[test]
    fn hard_and_conf_state_round_trip() {
        let hs = HardState {
            term: 3,
            vote: 9,
            commit: 100,
        };
        assert_eq!(decode_hard_state(&encode_hard_state(&hs)).unwrap(), hs);
        assert!(decode_hard_state(&[0; 23]).is_err());
        let cs = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..Default::default()
        };
        assert_eq!(decode_conf_state(&encode_conf_state(&cs)).unwrap(), cs);
        // A count claiming more members than bytes left must be refused, not allocated.
        let mut bad = encode_conf_state(&cs);
        bad[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_conf_state(&bad).is_err());
    }
}
