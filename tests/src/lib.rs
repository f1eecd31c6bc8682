//! Integration tests for corekv live in tests/tests; the shared harness is
//! tests/tests/common/mod.rs. This library holds what the tools tests share with it
//! (`free_ports`).
//!
//! etcd's observable behaviour is the spec. Every test starts real server
//! processes on loopback (free ports, fresh temp data dirs) and most run the
//! same checks against a real etcd 3.4 (`/usr/bin/etcd`, `/usr/bin/etcdctl`;
//! required — tests fail if they are missing) to prove what they assert.
//!
//! ```text
//! cargo build --bin corekv                      # the server under test
//! cargo test -p corekv-tests                    # target = corekv (default)
//! COREKV_TEST_TARGET=etcd cargo test -p corekv-tests   # validate the suite on etcd
//! COREKV_BIN=/path/to/corekv cargo test -p corekv-tests  # another build
//! ```
//!
//! Files: etcd_parity.rs (etcdctl scenarios, etcd vs target, outputs compared),
//! kv_client.rs (etcd-client, exact values), durability.rs (kill -9 mid-load),
//! cli.rs (flags, member/endpoint commands), http.rs (/health, /version, /metrics).

mod ports;
pub use ports::free_ports;
