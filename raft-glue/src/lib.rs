//! corekv's use of raft-rs.
//!
//! raft-rs is a state machine with no I/O of its own, and so is this crate: [`RaftNode`] turns
//! proposals and read requests into [`Cycle`]s that tell the caller what to persist, and after
//! the caller has made that durable, which entries are committed and may be applied. The
//! sequencer (in the server) owns the WAL and does the I/O; tests drive a node with no disk.
//!
//! [`codec`] holds the explicit little-endian encodings of raft's records in the WAL.

pub mod codec;
mod log_bridge;
mod node;

pub use node::{Cycle, NodeOptions, ProposeError, RaftNode, ReadReady, Restored};
pub use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry,
    EntryType, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};
