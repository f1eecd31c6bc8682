#!/usr/bin/env bash
# Starts a single corekv member with etcd's defaults: client URL http://localhost:2379,
# data dir ./default.corekv. Extra arguments are passed through (etcd's flags).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/deps.sh" --server-only
cargo build --release --bin corekv --manifest-path "$root/Cargo.toml"
exec "$root/target/release/corekv" "$@"
