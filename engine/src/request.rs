//! What travels through the raft log: one client write request, tagged with an id.
//!
//! Encoded with prost (protobuf wire format), like etcd's `InternalRaftRequest`, so a WAL dump
//! can decode any entry without knowing which server version wrote it.

use crate::pb::{PbCompactionRequest, PbDeleteRequest, PbPutRequest, PbTxnRequest};

/// A write request as it is proposed to raft and recorded in the WAL.
/// Exactly one of the request fields is set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InternalRequest {
    /// Proposer-chosen id; lets the proposer match the applied result to its waiting client.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(message, optional, tag = "2")]
    pub put: Option<PbPutRequest>,
    #[prost(message, optional, tag = "3")]
    pub delete_range: Option<PbDeleteRequest>,
    #[prost(message, optional, tag = "4")]
    pub txn: Option<PbTxnRequest>,
    #[prost(message, optional, tag = "5")]
    pub compaction: Option<PbCompactionRequest>,
}

/// The one request an [`InternalRequest`] carries, by value.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Put(PbPutRequest),
    DeleteRange(PbDeleteRequest),
    Txn(PbTxnRequest),
    Compact(PbCompactionRequest),
}

impl InternalRequest {
    /// Wraps a command for proposal.
    pub fn new(id: u64, command: Command) -> InternalRequest {
        let mut request = InternalRequest { id, ..Default::default() };
        match command {
            Command::Put(r) => request.put = Some(r),
            Command::DeleteRange(r) => request.delete_range = Some(r),
            Command::Txn(r) => request.txn = Some(r),
            Command::Compact(r) => request.compaction = Some(r),
        }
        request
    }

    /// The carried command; `None` for an empty (malformed) request.
    pub fn into_command(self) -> Option<Command> {
        if let Some(r) = self.put {
            return Some(Command::Put(r));
        }
        if let Some(r) = self.delete_range {
            return Some(Command::DeleteRange(r));
        }
        if let Some(r) = self.txn {
            return Some(Command::Txn(r));
        }
        self.compaction.map(Command::Compact)
    }
}
