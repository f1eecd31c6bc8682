//! corekv's binary protocol (specified in `docs/protocol.md`): length-prefixed frames
//! carrying etcd's protobuf messages, many requests in flight per connection, answers in
//! any order by request id, watch responses pushed.
//!
//! - [`frame`]: which message each frame kind carries, answer and error frames (the frame
//!   layout itself is `corekv_client::frame`, shared with the client).
//! - [`conn`]: the per-core accept loop and the connection loop (reader, request tasks,
//!   writer, watch task), serving through the same [`crate::shard_api::ShardClient`] calls
//!   as the gRPC services.

pub mod conn;
pub mod frame;

pub use conn::serve;
