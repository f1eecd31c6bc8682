#!/usr/bin/env bash
# Runs corekv's whole test suite: unit tests of every crate, then the integration tests in
# tests/ that start real corekv (and real etcd) processes on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# A one-off build gains nothing from incremental state, and that state alone was ~2 GB.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The integration tests start target/debug/corekv; build it first so they find it. Building the
# binaries together with the test targets resolves features once for both, so `cargo test`
# below reuses every artifact instead of compiling the dependency graph a second time.
cargo build --workspace --bins --tests
cargo test --workspace
