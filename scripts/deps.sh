#!/usr/bin/env bash
# Installs what building and testing corekv needs, from Debian's apt, if it is missing:
#   protoc (protobuf-compiler)  - the etcd-client crate compiles etcd's .proto files
#   etcdctl (etcd-client)       - compatibility tests drive corekv with etcd's own CLI
#   etcd (etcd-server)          - tests compare corekv's answers with a real etcd
# Usage: scripts/deps.sh [--server-only]   (--server-only: just what building needs)
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if [[ "${1:-}" != "--server-only" ]]; then
  command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
fi
if [[ ${#need[@]} -eq 0 ]]; then
  exit 0
fi
echo "installing: ${need[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${need[@]}" >/dev/null
# Debian's etcd-server package starts a system etcd on 2379; tests never use it, and it
# would take the default port from `scripts/run.sh`, so stop it when systemd is there.
if [[ " ${need[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl stop etcd >/dev/null 2>&1 || true
  $SUDO systemctl disable etcd >/dev/null 2>&1 || true
fi
