//! Bodies of the requests a follower forwards to the leader (lease keep-alives and lease
//! queries: only the leader's lessor knows deadlines), and of the membership answer a
//! joining member gets. Explicit little-endian encodings; prost for etcd's messages.

use corekv_engine::membership::{decode_member, encode_member, Member};
use corekv_engine::pb::{
    PbLeaseKeepAliveResponse, PbLeaseLeasesResponse, PbLeaseTimeToLiveResponse,
};
use corekv_engine::{KvError, StatusCode};
use prost::Message;

use crate::shard_api::{LeaseOp, LeaseResult};

/// `tag u8 | fields`: 1 KeepAlive `id i64`; 2 TimeToLive `id i64 | keys u8`; 3 Leases.
pub fn encode_lease_op(op: &LeaseOp) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    match op {
        LeaseOp::KeepAlive { id } => {
            out.push(1);
            out.extend_from_slice(&id.to_le_bytes());
        }
        LeaseOp::TimeToLive { id, keys } => {
            out.push(2);
            out.extend_from_slice(&id.to_le_bytes());
            out.push(u8::from(*keys));
        }
        LeaseOp::Leases => out.push(3),
    }
    out
}

pub fn decode_lease_op(b: &[u8]) -> Result<LeaseOp, String> {
    let id = || -> Result<i64, String> {
        b.get(1..9)
            .map(|s| i64::from_le_bytes(s.try_into().expect("8")))
            .ok_or_else(|| "lease request truncated".to_string())
    };
    match (b.first(), b.len()) {
        (Some(1), 9) => Ok(LeaseOp::KeepAlive { id: id()? }),
        (Some(2), 10) => Ok(LeaseOp::TimeToLive {
            id: id()?,
            keys: b[9] != 0,
        }),
        (Some(3), 1) => Ok(LeaseOp::Leases),
        _ => Err(format!("malformed lease request of {} bytes", b.len())),
    }
}

/// `0 | tag u8 | prost response` on success, `1 | code u8 | UTF-8 text` on error.
pub fn encode_lease_result(result: &Result<LeaseResult, KvError>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match result {
        Ok(r) => {
            out.push(0);
            match r {
                LeaseResult::KeepAlive(m) => {
                    out.push(1);
                    m.encode(&mut out).expect("vec grows");
                }
                LeaseResult::TimeToLive(m) => {
                    out.push(2);
                    m.encode(&mut out).expect("vec grows");
                }
                LeaseResult::Leases(m) => {
                    out.push(3);
                    m.encode(&mut out).expect("vec grows");
                }
            }
        }
        Err(err) => {
            out.push(1);
            out.push(code_byte(err.code()));
            out.extend_from_slice(err.message().as_bytes());
        }
    }
    out
}

pub fn decode_lease_result(b: &[u8]) -> Result<Result<LeaseResult, KvError>, String> {
    let bad = || format!("malformed lease answer of {} bytes", b.len());
    if b.len() < 2 {
        return Err(bad());
    }
    let body = &b[2..];
    match b[0] {
        0 => {
            let r = match b[1] {
                1 => LeaseResult::KeepAlive(
                    PbLeaseKeepAliveResponse::decode(body).map_err(|_| bad())?,
                ),
                2 => LeaseResult::TimeToLive(
                    PbLeaseTimeToLiveResponse::decode(body).map_err(|_| bad())?,
                ),
                3 => LeaseResult::Leases(PbLeaseLeasesResponse::decode(body).map_err(|_| bad())?),
                _ => return Err(bad()),
            };
            Ok(Ok(r))
        }
        1 => {
            let text = String::from_utf8(body.to_vec()).map_err(|_| bad())?;
            Ok(Err(error_from(b[1], text)))
        }
        _ => Err(bad()),
    }
}

fn code_byte(code: StatusCode) -> u8 {
    match code {
        StatusCode::InvalidArgument => 1,
        StatusCode::OutOfRange => 2,
        StatusCode::NotFound => 3,
        StatusCode::ResourceExhausted => 4,
        StatusCode::FailedPrecondition => 5,
        StatusCode::Unavailable => 6,
        StatusCode::Internal => 7,
        StatusCode::DataLoss => 8,
        StatusCode::PermissionDenied => 9,
        StatusCode::Unauthenticated => 10,
        StatusCode::Unknown => 11,
    }
}

/// The leader's error as the follower's client sees it: the same code and text. A lease
/// that is not found keeps its own variant so handlers that match on it still do.
fn error_from(code: u8, text: String) -> KvError {
    if text == KvError::LeaseNotFound.message() {
        return KvError::LeaseNotFound;
    }
    let code = match code {
        1 => StatusCode::InvalidArgument,
        2 => StatusCode::OutOfRange,
        3 => StatusCode::NotFound,
        4 => StatusCode::ResourceExhausted,
        5 => StatusCode::FailedPrecondition,
        7 => StatusCode::Internal,
        8 => StatusCode::DataLoss,
        9 => StatusCode::PermissionDenied,
        10 => StatusCode::Unauthenticated,
        11 => StatusCode::Unknown,
        _ => StatusCode::Unavailable,
    };
    KvError::Cluster(code, text)
}

/// The answer to a Join: `cluster_id u64 | count u32 | (id u64 | len u32 | member)*`.
pub fn encode_join_answer(cluster_id: u64, members: &[Member]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + 64 * members.len());
    out.extend_from_slice(&cluster_id.to_le_bytes());
    out.extend_from_slice(&(members.len() as u32).to_le_bytes());
    for m in members {
        let body = encode_member(m);
        out.extend_from_slice(&m.id.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
    }
    out
}

/// Most members a join answer may list (a bound against a corrupt count).
const JOIN_MEMBERS_MAX: usize = 1024;

pub fn decode_join_answer(b: &[u8]) -> Result<(u64, Vec<Member>), String> {
    let bad = || "malformed membership answer".to_string();
    let u32_at = |at: usize| -> Result<usize, String> {
        b.get(at..at + 4)
            .map(|s| u32::from_le_bytes(s.try_into().expect("4")) as usize)
            .ok_or_else(bad)
    };
    let u64_at = |at: usize| -> Result<u64, String> {
        b.get(at..at + 8)
            .map(|s| u64::from_le_bytes(s.try_into().expect("8")))
            .ok_or_else(bad)
    };
    let cluster_id = u64_at(0)?;
    let count = u32_at(8)?;
    if count > JOIN_MEMBERS_MAX {
        return Err(bad());
    }
    let mut at = 12;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let id = u64_at(at)?;
        let len = u32_at(at + 8)?;
        let body = b.get(at + 12..at + 12 + len).ok_or_else(bad)?;
        members.push(decode_member(id, body)?);
        at += 12 + len;
    }
    if at != b.len() {
        return Err(bad());
    }
    Ok((cluster_id, members))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ops_and_answers_round_trip() {
        for op in [
            LeaseOp::KeepAlive { id: -3 },
            LeaseOp::TimeToLive { id: 9, keys: true },
            LeaseOp::Leases,
        ] {
            let b = encode_lease_op(&op);
            assert_eq!(
                format!("{:?}", decode_lease_op(&b).unwrap()),
                format!("{op:?}")
            );
            assert!(decode_lease_op(&b[..b.len() - 1]).is_err());
        }
        let ok = Ok(LeaseResult::KeepAlive(PbLeaseKeepAliveResponse {
            id: 5,
            ttl: 10,
            ..Default::default()
        }));
        let back = decode_lease_result(&encode_lease_result(&ok)).unwrap();
        assert!(matches!(back, Ok(LeaseResult::KeepAlive(r)) if r.id == 5 && r.ttl == 10));
        let err = Err(KvError::LeaseNotFound);
        let back = decode_lease_result(&encode_lease_result(&err)).unwrap();
        assert_eq!(back.unwrap_err(), KvError::LeaseNotFound);
        assert!(decode_lease_result(&[7]).is_err());
    }

    #[test]
    fn join_answers_round_trip() {
        let members = vec![
            Member {
                id: 1,
                name: "a".into(),
                peer_urls: vec!["http://127.0.0.1:2380".into()],
                client_urls: vec![],
                is_learner: false,
            },
            Member {
                id: 2,
                is_learner: true,
                ..Default::default()
            },
        ];
        let b = encode_join_answer(77, &members);
        assert_eq!(decode_join_answer(&b).unwrap(), (77, members));
        assert!(decode_join_answer(&b[..b.len() - 1]).is_err());
    }
}
