//! corekv's network layer.
//!
//! - [`binary`]: the binary protocol (docs/protocol.md) on its own per-core listeners.
//! - [`shard_api`]: what a core's network runtime asks of the data path (reads on the
//!   latest view, the sequencer's queue, the core's shard for watches).
//! - [`sequencer_api`]: the sequencer's queue and the latest published view.
//! - [`grpc`]: etcd's gRPC services (KV, Maintenance, Cluster) at etcd's method paths.
//! - [`gateway`]: etcd's HTTP/JSON gateway (`POST /v3/...`), served by the gRPC services' code.
//! - [`http`]: `/health`, `/version`, `/metrics` on the client port (and metrics URLs).
//! - [`serve`]: one core's accept loop: HTTP/1.1 and HTTP/2 (gRPC) on the same port.
//! - [`peer`]: the raft transport between members (--listen-peer-urls).
//! - [`park`]: network threads poll for wakes and readable sockets before they park.
//! - [`metrics`]: lock-free counters and histograms rendered as Prometheus text.

pub mod answer;
pub mod auth;
mod authority;
pub mod binary;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod park;
pub mod peer;
pub mod sequencer_api;
pub mod serve;
pub mod shard_api;
pub mod tls;

/// The etcd release whose API and behaviour corekv follows (reported by Status and /version).
pub const ETCD_COMPAT_VERSION: &str = "3.4.0";
/// The etcd cluster version reported by /version.
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";
