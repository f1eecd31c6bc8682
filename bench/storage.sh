#!/usr/bin/env bash
# storage.sh: loads N keys into a fresh etcd and a fresh corekv (one at a time), then
# reports for each: on-disk size of the data dir, RSS after the load, and the time a
# restart on that data dir takes until a linearizable read succeeds.
#
# Usage: bench/storage.sh [--keys N] [--val-size B] [--no-build]
#   --keys N       keys to load (default 1000000); 8-byte keys, --val-size byte values
#   --val-size B   value size (default 256)
#   --no-build     use target/release binaries as they are
# Environment: COREKV_BIN, BENCH_BIN, ETCD_BIN, WORK_PARENT (default ${TMPDIR:-/tmp}).
# Every process started is stopped by PID; the temp dir is removed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KEYS=1000000
VAL_SIZE=256
BUILD=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --keys) KEYS=$2; shift 2 ;;
    --val-size) VAL_SIZE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) echo "storage.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
COREKV_BIN=${COREKV_BIN:-$ROOT/target/release/corekv}
BENCH_BIN=${BENCH_BIN:-$ROOT/target/release/corekv-bench}
ETCD_BIN=${ETCD_BIN:-$(command -v etcd || true)}
[[ -x "$ETCD_BIN" ]] || { echo "storage.sh: etcd not found (apt-get install etcd-server)" >&2; exit 1; }
if [[ $BUILD == 1 ]]; then
  cargo build --release -p corekv -p corekv-bench --manifest-path "$ROOT/Cargo.toml" >&2
fi

WORK=$(mktemp -d "${WORK_PARENT:-${TMPDIR:-/tmp}}/corekv-storage.XXXXXX")
PID=""
cleanup() {
  if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
    kill "$PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM

start() { # system dir client_port peer_port
  local bin=$COREKV_BIN
  [[ $1 == etcd ]] && bin=$ETCD_BIN
  "$bin" --name n1 --data-dir "$2" \
    --listen-client-urls "http://127.0.0.1:$3" --advertise-client-urls "http://127.0.0.1:$3" \
    --listen-peer-urls "http://127.0.0.1:$4" --initial-advertise-peer-urls "http://127.0.0.1:$4" \
    --initial-cluster "n1=http://127.0.0.1:$4" >>"$WORK/$1.log" 2>&1 &
  PID=$!
}

wait_ready() { # port -> prints seconds until a linearizable read succeeds
  local t0 t1
  t0=$(date +%s.%N)
  for _ in $(seq 1 3000); do
    if "$BENCH_BIN" --endpoints "127.0.0.1:$1" range --total 1 --key 00000000 >/dev/null 2>&1; then
      t1=$(date +%s.%N)
      echo "$t1 - $t0" | bc
      return 0
    fi
    sleep 0.05
  done
  echo "storage.sh: server on $1 not ready" >&2
  return 1
}

stop() {
  kill "$PID"
  for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  PID=""
}

measure() { # system
  local sys=$1 dir="$WORK/$1.data" ports cport pport rss size restart
  ports=$("$BENCH_BIN" free-ports 2 | tr '\n' ' ')
  read -r cport pport _ <<<"$ports"
  start "$sys" "$dir" "$cport" "$pport"
  wait_ready "$cport" >/dev/null
  "$BENCH_BIN" --endpoints "127.0.0.1:$cport" --conns 16 --clients 256 put --total "$KEYS" \
    --key-size 8 --val-size "$VAL_SIZE" --key-space-size "$KEYS" --sequential-keys --json >"$WORK/$sys.load.json"
  sleep 2
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
  stop
  size=$(du -sk "$dir" | cut -f1)
  start "$sys" "$dir" "$cport" "$pport"
  restart=$(wait_ready "$cport")
  stop
  echo "$sys $size $rss $restart"
}

E=$(measure etcd)
C=$(measure corekv)
echo
echo "| $KEYS keys, ${VAL_SIZE} B values | etcd | corekv | ratio |"
echo "|---|---:|---:|---:|"
read -r _ es er et <<<"$E"
read -r _ cs cr ct <<<"$C"
printf '| data dir on disk (MiB) | %.1f | %.1f | %.2f |\n' "$(echo "$es/1024" | bc -l)" "$(echo "$cs/1024" | bc -l)" "$(echo "$cs/$es" | bc -l)"
printf '| RSS after load (MiB) | %.1f | %.1f | %.2f |\n' "$(echo "$er/1024" | bc -l)" "$(echo "$cr/1024" | bc -l)" "$(echo "$cr/$er" | bc -l)"
printf '| restart until a read succeeds (s) | %.2f | %.2f | %.2f |\n' "$et" "$ct" "$(echo "$ct/$et" | bc -l)"
