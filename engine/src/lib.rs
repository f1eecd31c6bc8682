//! corekv storage engine.
//!
//! - [`wal`]: the write-ahead log (segment files, framed records, io_uring write + fdatasync).
//! - [`mvcc`]: the multi-version key space with etcd's revision semantics. One writer
//!   ([`mvcc::Store`]) applies committed requests in log order; readers hold cheap immutable
//!   snapshots ([`mvcc::ReadView`]) and never block the writer.
//! - [`backend`]: the key space on disk: revision records and leases in the B+ tree
//!   ([`btree`]), committed in batches with the raft index they include, loaded on start.
//! - [`membership`]: the cluster's members (ids, names, URLs, learners), replicated state.
//! - [`request`]: what travels through the raft log ([`request::InternalRequest`]).
//! - [`sha256`]: SHA-256, for the digest that ends a snapshot image.
//! - [`error`]: the errors a client can see from the key space, with etcd's texts.
//!
//! Requests and responses are etcd's own protobuf messages (re-exported as [`pb`]), so the
//! engine's semantics can be read side by side with etcd's applier.

pub mod backend;
pub mod btree;
pub mod error;
pub mod membership;
pub mod mvcc;
pub mod request;
pub mod sha256;
pub mod wal;

/// etcd's protobuf messages (from the `etcd-client` crate, compiled from etcd's .proto files).
pub use etcd_client::proto as pb;

pub use error::{KvError, StatusCode};

#[cfg(test)]
mod test_rng;
