#!/usr/bin/env bash
# Runs corekv's whole test suite: unit tests of every crate, then the integration tests in
# tests/ that start real corekv (and real etcd) processes on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# The integration tests start target/debug/corekv; build it first so they find it.
cargo build --bin corekv
cargo test --workspace
