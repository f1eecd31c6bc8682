#!/usr/bin/env bash
# cluster.sh: a 3-member etcd and a 3-member corekv cluster on loopback, measured the same
# way, interleaved (etcd, then corekv, per round): put throughput with 16 connections and
# 256 clients spread over all three members, and failover time (SIGKILL of the leader until
# a put through a surviving member succeeds). Prints a markdown table.
#
# Only one cluster runs at a time; every process is stopped by PID (also on error or ^C)
# and the temp dir is removed.
#
# Usage: bench/cluster.sh [--rounds N] [--total N] [--no-build]
# Environment: COREKV_BIN (default target/release/corekv), BENCH_BIN (default
# target/release/corekv-bench), ETCD_BIN / ETCDCTL_BIN (default on PATH), WORK_PARENT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=2
TOTAL=50000
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --total) TOTAL=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
COREKV_BIN=${COREKV_BIN:-$ROOT/target/release/corekv}
BENCH_BIN=${BENCH_BIN:-$ROOT/target/release/corekv-bench}
ETCD_BIN=${ETCD_BIN:-$(command -v etcd)}
ETCDCTL_BIN=${ETCDCTL_BIN:-$(command -v etcdctl)}
if [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && cargo build --release -p corekv -p corekv-bench >&2)
fi
WORK=$(mktemp -d "${WORK_PARENT:-${TMPDIR:-/tmp}}/corekv-cluster-bench.XXXXXX")
PIDS=()
stop_all() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_cluster SYSTEM DIR: starts 3 members; sets CLIENTS (comma list) and NODE_PIDS.
start_cluster() {
  local system=$1 dir=$2 ic="" i
  mkdir -p "$dir"
  CPORTS=(); PPORTS=()
  for i in 0 1 2; do CPORTS+=("$(free_port)"); PPORTS+=("$(free_port)"); done
  for i in 0 1 2; do ic="$ic${ic:+,}m$i=http://127.0.0.1:${PPORTS[$i]}"; done
  NODE_PIDS=()
  for i in 0 1 2; do
    local bin=$ETCD_BIN
    [ "$system" = corekv ] && bin=$COREKV_BIN
    "$bin" --name "m$i" --data-dir "$dir/m$i" \
      --listen-client-urls "http://127.0.0.1:${CPORTS[$i]}" --advertise-client-urls "http://127.0.0.1:${CPORTS[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${PPORTS[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${PPORTS[$i]}" \
      --initial-cluster "$ic" --initial-cluster-token bench >"$dir/m$i.log" 2>&1 &
    NODE_PIDS+=("$!"); PIDS+=("$!")
  done
  CLIENTS="127.0.0.1:${CPORTS[0]},127.0.0.1:${CPORTS[1]},127.0.0.1:${CPORTS[2]}"
  local deadline=$((SECONDS + 30))
  until ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints "$CLIENTS" --command-timeout=1s put ready 1 >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "$system cluster did not start" >&2; tail "$dir"/m*.log >&2; exit 1; }
    sleep 0.2
  done
}

leader_index() {
  local i
  for i in 0 1 2; do
    if ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints "127.0.0.1:${CPORTS[$i]}" endpoint status 2>/dev/null | grep -q ', true,'; then
      echo "$i"; return
    fi
  done
  echo -1
}

put_tput() {
  "$BENCH_BIN" --endpoints "$CLIENTS" --conns 16 --clients 256 --json put --total "$TOTAL" \
    --key-size 8 --val-size 256 --key-space-size 100000 2>/dev/null |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["rps"]))'
}

# failover_ms: kill the leader, put through a survivor until it works; prints ms.
failover_ms() {
  local l s start end
  l=$(leader_index)
  [ "$l" -ge 0 ] || { echo "no leader" >&2; echo nan; return; }
  s=$(( (l + 1) % 3 ))
  kill -9 "${NODE_PIDS[$l]}"
  start=$(date +%s%N)
  until ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints "127.0.0.1:${CPORTS[$s]}" --command-timeout=500ms put after-kill 1 >/dev/null 2>&1; do
    [ $(( ($(date +%s%N) - start) / 1000000 )) -lt 30000 ] || { echo nan; return; }
  done
  end=$(date +%s%N)
  echo $(( (end - start) / 1000000 ))
}

declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
  for system in etcd corekv; do
    dir="$WORK/$system-$round"
    start_cluster "$system" "$dir"
    t=$(put_tput)
    f=$(failover_ms)
    stop_all
    RESULTS[$system,tput]="${RESULTS[$system,tput]:-} $t"
    RESULTS[$system,fail]="${RESULTS[$system,fail]:-} $f"
    echo "round $round $system: put 16/256 $t req/s, failover $f ms" >&2
  done
done

median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
et=$(median "${RESULTS[etcd,tput]}"); ct=$(median "${RESULTS[corekv,tput]}")
ef=$(median "${RESULTS[etcd,fail]}"); cf=$(median "${RESULTS[corekv,fail]}")
echo "| 3-member cluster, median of $ROUNDS | etcd | corekv | ratio |"
echo "|---|---|---|---|"
echo "| put 16 conns / 256 clients, all members (req/s) | $et | $ct | $(python3 -c "print(round($ct/$et,2))") |"
echo "| failover: leader SIGKILL to a put through a survivor (ms) | $ef | $cf | $(python3 -c "print(round($cf/$ef,2))") |"
