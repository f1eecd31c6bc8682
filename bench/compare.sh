#!/usr/bin/env bash
# compare.sh: run the same corekv-bench scenarios against a real etcd, against corekv over
# gRPC and against corekv over its binary protocol (docs/protocol.md), interleaved (for
# each scenario and round: etcd, corekv, corekv-bin), and print a markdown table.
#
# Every run gets a freshly started server with a fresh data dir on free loopback ports,
# and only that one server runs while it is measured (the machine has 2 cores: an idle
# second server would still cost CPU). Servers are stopped by PID, also on error or ^C,
# and the temp dirs are removed.
#
# Usage: bench/compare.sh [--rounds N] [--scenarios LIST] [--scale F] [--total N]
#                         [--warmup-pct P] [--no-build] [--keep-logs] [--raw FILE]
#                         [--systems LIST] [--plots DIR] [--doc FILE]
#
#   --rounds N        rounds per scenario (cells show the median; with N > 1 also min..max) [1]
#   --scenarios LIST  comma-separated subset of: put-lat, put-tput, range-s, range-l, txn-put,
#                     watch-latency [all]
#   --scale F         multiply every scenario's request count by F (e.g. 0.05 for a smoke run)
#   --total N         use N requests for every scenario instead
#   --warmup-pct P    uncounted warmup requests, as a percentage of the measured ones [5]
#   --no-build        do not run cargo; use the binaries as they are
#   --keep-logs       keep the temp dir (server logs, raw JSON) and print its path
#   --raw FILE        also append every run's JSON (with scenario/system/round) to FILE
#   --systems LIST    comma-separated subset of: etcd, corekv (gRPC), corekv-bin (corekv
#                     over the binary protocol) [etcd,corekv,corekv-bin]
#   --plots DIR       write corekv-bench's SVG plot (latency by percentile, throughput over
#                     time) of round 1 of every corekv and corekv-bin run into DIR, named
#                     <UTC date and time>-<scenario>-<system>.svg
#   --doc FILE        append the table, the fdatasync floor and links to the plots (when
#                     --plots is under FILE's directory) to FILE as a dated section, e.g.
#                     --doc docs/performance.md --plots docs/perf
#
# Before the scenarios, the disk's write+fdatasync latency is measured in the work dir
# (corekv-bench fsync-floor); the table ends with single-client put p50 / that floor.
#
# Environment: COREKV_BIN (default target/release/corekv), BENCH_BIN (default
# target/release/corekv-bench), ETCD_BIN (default: etcd on PATH), ROUNDS, SCENARIOS, SCALE,
# KEY_SPACE (key space of the put scenarios, default 100000), PREFILL (keys put before the
# range scenarios, default 1000), READY_TIMEOUT (s to wait for a server, default 30),
# WORK_PARENT (where the temp dir goes, default ${TMPDIR:-/tmp}; put it on the disk you
# mean to measure), ETCD_EXTRA_FLAGS, COREKV_EXTRA_FLAGS.
#
# Needs: etcd (Debian package etcd-server), jq (or python3), cargo unless --no-build.
#
# Ratios: corekv / etcd (gRPC both) and binary / gRPC (corekv both), for every row: above
# 1 is better for throughput rows (req/s), below 1 is better for latency rows (ms).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-1}
SCENARIOS=${SCENARIOS:-put-lat,put-tput,range-s,range-l,txn-put,watch-latency}
SCALE=${SCALE:-1}
TOTAL_OVERRIDE=""
WARMUP_PCT=${WARMUP_PCT:-5}
BUILD=1
KEEP_LOGS=0
RAW_OUT=""
KEY_SPACE=${KEY_SPACE:-100000}
PREFILL=${PREFILL:-1000}
READY_TIMEOUT=${READY_TIMEOUT:-30}
COREKV_BIN=${COREKV_BIN:-$ROOT/target/release/corekv}
BENCH_BIN=${BENCH_BIN:-$ROOT/target/release/corekv-bench}
ETCD_BIN=${ETCD_BIN:-etcd}
ALL_SCENARIOS="put-lat put-tput range-s range-l txn-put watch-latency"
SYSTEMS=${SYSTEMS:-etcd,corekv,corekv-bin}
PLOTS_DIR=""
DOC_OUT=""

die() { echo "compare.sh: $*" >&2; exit 2; }
log() { echo "compare.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
        --scenarios) SCENARIOS=${2:?--scenarios needs a value}; shift 2 ;;
        --scale) SCALE=${2:?--scale needs a value}; shift 2 ;;
        --total) TOTAL_OVERRIDE=${2:?--total needs a value}; shift 2 ;;
        --warmup-pct) WARMUP_PCT=${2:?--warmup-pct needs a value}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep-logs) KEEP_LOGS=1; shift ;;
        --raw) RAW_OUT=${2:?--raw needs a value}; shift 2 ;;
        --systems) SYSTEMS=${2:?--systems needs a value}; shift 2 ;;
        --plots) PLOTS_DIR=${2:?--plots needs a value}; shift 2 ;;
        --doc) DOC_OUT=${2:?--doc needs a value}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ "$WARMUP_PCT" =~ ^[0-9]+$ ]] || die "--warmup-pct must be a non-negative integer"
[[ -z "$TOTAL_OVERRIDE" || "$TOTAL_OVERRIDE" =~ ^[1-9][0-9]*$ ]] || die "--total must be a positive integer"
awk -v s="$SCALE" 'BEGIN { exit !(s + 0 > 0) }' || die "--scale must be > 0"
SCENARIO_LIST=()
for s in ${SCENARIOS//,/ }; do
    case " $ALL_SCENARIOS " in *" $s "*) SCENARIO_LIST+=("$s") ;; *) die "unknown scenario $s (known: $ALL_SCENARIOS)" ;; esac
done
[ ${#SCENARIO_LIST[@]} -gt 0 ] || die "no scenario selected"
SYSTEM_LIST=()
for y in ${SYSTEMS//,/ }; do
    case "$y" in etcd|corekv|corekv-bin) SYSTEM_LIST+=("$y") ;; *) die "unknown system $y (known: etcd corekv corekv-bin)" ;; esac
done
[ ${#SYSTEM_LIST[@]} -gt 0 ] || die "no system selected"
has_system() { case " ${SYSTEM_LIST[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if [ -n "$PLOTS_DIR" ]; then mkdir -p "$PLOTS_DIR" && PLOTS_DIR=$(cd "$PLOTS_DIR" && pwd); fi

# --- prerequisites -----------------------------------------------------------------------
ETCD_PATH=$(command -v "$ETCD_BIN" || true)
if has_system etcd; then
    [ -n "$ETCD_PATH" ] || die "etcd not found (ETCD_BIN=$ETCD_BIN); install it: apt-get install etcd-server"
fi
if command -v jq >/dev/null; then
    jget() { jq -r "$2" "$1"; }
elif command -v python3 >/dev/null; then
    jget() {
        python3 - "$1" "$2" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
for part in sys.argv[2].lstrip('.').split('.'):
    v = v[part]
print('null' if v is None else v)
EOF
    }
else
    die "need jq (apt-get install jq) or python3 to read the bench's JSON"
fi

if [ "$BUILD" = 1 ]; then
    command -v cargo >/dev/null || die "cargo not found (or pass --no-build)"
    log "building corekv and corekv-bench (release)"
    (cd "$ROOT" && cargo build --release -p corekv -p corekv-bench) >&2 || die "cargo build failed"
fi
[ -x "$COREKV_BIN" ] || die "corekv binary not found: $COREKV_BIN (set COREKV_BIN)"
[ -x "$BENCH_BIN" ] || die "corekv-bench binary not found: $BENCH_BIN (set BENCH_BIN)"

# --- process and temp dir bookkeeping ------------------------------------------------------
WORK=$(mktemp -d "${WORK_PARENT:-${TMPDIR:-/tmp}}/corekv-compare.XXXXXX")
SERVER_PID=""
BENCH_PID=""

stop_server() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop on SIGTERM within 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    if [ -n "$BENCH_PID" ]; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
        BENCH_PID=""
    fi
    if [ -n "$SERVER_PID" ]; then
        stop_server "$SERVER_PID"
        SERVER_PID=""
    fi
    if [ "$KEEP_LOGS" = 1 ]; then
        log "kept logs and raw results in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- servers ---------------------------------------------------------------------------
# start_server SYSTEM RUNDIR: starts etcd or corekv (for corekv and corekv-bin, with a
# binary-protocol listener too), sets SERVER_PID, ENDPOINT (gRPC) and BIN_ENDPOINT;
# returns non-zero (with the log's tail on stderr) when it does not come up.
start_server() {
    local sys=$1 dir=$2 bin extra ports p q r deadline
    ports=$("$BENCH_BIN" free-ports 3) || return 1
    read -r p q r <<<"$ports"
    BIN_ENDPOINT="127.0.0.1:$r"
    case "$sys" in
        etcd) bin=$ETCD_PATH; extra=${ETCD_EXTRA_FLAGS:-} ;;
        corekv|corekv-bin) bin=$COREKV_BIN; extra="--listen-binary-urls http://$BIN_ENDPOINT ${COREKV_EXTRA_FLAGS:-}" ;;
    esac
    mkdir -p "$dir"
    # shellcheck disable=SC2086 # extra flags are meant to split
    "$bin" --name n1 --data-dir "$dir/data" \
        --listen-client-urls "http://127.0.0.1:$p" --advertise-client-urls "http://127.0.0.1:$p" \
        --listen-peer-urls "http://127.0.0.1:$q" --initial-advertise-peer-urls "http://127.0.0.1:$q" \
        --initial-cluster "n1=http://127.0.0.1:$q" $extra >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    ENDPOINT="127.0.0.1:$p"
    deadline=$((SECONDS + READY_TIMEOUT))
    while :; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "$sys exited during startup; last log lines:"
            tail -n 15 "$dir/server.log" >&2
            wait "$SERVER_PID" 2>/dev/null || true
            SERVER_PID=""
            return 1
        fi
        # Ready = answers a linearizable read (needs a leader).
        if "$BENCH_BIN" range --endpoints "$ENDPOINT" --key corekv-compare-ready --total 1 --timeout 2 \
            --json >/dev/null 2>"$dir/ready.err"; then
            return 0
        fi
        if [ $SECONDS -ge $deadline ]; then
            log "$sys not ready after ${READY_TIMEOUT}s: $(tail -n 1 "$dir/ready.err")"
            log "last log lines:"
            tail -n 15 "$dir/server.log" >&2
            stop_server "$SERVER_PID"
            SERVER_PID=""
            return 1
        fi
        sleep 0.2
    done
}

# --- scenarios -------------------------------------------------------------------------
# scenario_total NAME DEFAULT
scaled() {
    if [ -n "$TOTAL_OVERRIDE" ]; then echo "$TOTAL_OVERRIDE"; return; fi
    awk -v n="$1" -v s="$SCALE" 'BEGIN { t = int(n * s + 0.5); print (t < 1 ? 1 : t) }'
}

# scenario_args NAME: the corekv-bench arguments (without endpoints/json/warmup)
scenario_args() {
    local common="--key-size 8 --val-size 256"
    case "$1" in
        put-lat) echo "put --conns 1 --clients 1 --total $(scaled 2000) $common --key-space-size $KEY_SPACE" ;;
        put-tput) echo "put --conns 16 --clients 256 --total $(scaled 50000) $common --key-space-size $KEY_SPACE" ;;
        range-s) echo "range --conns 16 --clients 256 --total $(scaled 100000) $common --consistency s --prefill $PREFILL --key 00000000" ;;
        range-l) echo "range --conns 16 --clients 256 --total $(scaled 100000) $common --consistency l --prefill $PREFILL --key 00000000" ;;
        txn-put) echo "txn-put --conns 4 --clients 16 --total $(scaled 20000) $common --txn-ops 1 --key-space-size $KEY_SPACE" ;;
        # One watcher on one key; one writer on its own connection, paced. Latency is put
        # sent -> event received; the bench fails the run if an event is lost or repeated.
        watch-latency) echo "watch-latency --watchers 1 --conns 1 --total $(scaled 2000) --rate 200 $common" ;;
    esac
}

# system_args SYSTEM: how corekv-bench reaches the system just started
system_args() {
    case "$1" in
        corekv-bin) echo "--endpoints $BIN_ENDPOINT --protocol binary" ;;
        *) echo "--endpoints $ENDPOINT" ;;
    esac
}

# scenario_rows NAME: lines "label|jq-path|kind" (kind: tput or lat)
scenario_rows() {
    case "$1" in
        put-lat)
            echo "put, 1 conn / 1 client, p50 latency (ms)|.latency_ms.p50|lat"
            echo "put, 1 conn / 1 client, p99 latency (ms)|.latency_ms.p99|lat"
            echo "put, 1 conn / 1 client: corekv's WAL write+fdatasync, mean (ms, its /metrics)|wal_fsync|lat" ;;
        put-tput) echo "put, 16 conns / 256 clients (req/s)|.rps|tput" ;;
        range-s) echo "range serializable, 16 conns / 256 clients (req/s)|.rps|tput" ;;
        range-l) echo "range linearizable, 16 conns / 256 clients (req/s)|.rps|tput" ;;
        txn-put) echo "txn-put 1 op, 4 conns / 16 clients (req/s)|.rps|tput" ;;
        watch-latency)
            echo "watch, 1 watcher, puts at 200/s, p50 put-to-event latency (ms)|.latency_ms.p50|lat"
            echo "watch, 1 watcher, puts at 200/s, p99 put-to-event latency (ms)|.latency_ms.p99|lat" ;;
    esac
}

declare -A VALUES   # "scenario|system|jqpath" -> space-separated values, one per good round
RUN_STAMP=$(date -u +%Y-%m-%dT%H%M)   # names this run's plots
PLOT_FILES=()
NOTES=()
FAILED=0

run_one() {
    local scen=$1 sys=$2 round=$3 dir args total warmup out rc errors
    dir="$WORK/$scen-r$round-$sys"
    args=$(scenario_args "$scen")
    total=$(sed -E 's/.*--total ([0-9]+).*/\1/' <<<"$args")
    warmup=$((total * WARMUP_PCT / 100))
    log "[$scen round $round] $sys: starting server"
    if ! start_server "$sys" "$dir"; then
        NOTES+=("$scen round $round, $sys: server did not start")
        FAILED=1
        return
    fi
    out="$dir/result.json"
    local target plot=""
    target=$(system_args "$sys")
    if [ -n "$PLOTS_DIR" ] && [ "$sys" != etcd ] && [ "$round" = 1 ]; then
        plot="--plot $PLOTS_DIR/$RUN_STAMP-$scen-$sys.svg"
        PLOT_FILES+=("$PLOTS_DIR/$RUN_STAMP-$scen-$sys.svg")
    fi
    log "[$scen round $round] $sys: corekv-bench $target $args --warmup $warmup $plot"
    rc=0
    # In the background + wait, so that a signal to this script is handled at once
    # (bash defers traps while a foreground command runs); cleanup stops it too.
    # shellcheck disable=SC2086 # args are meant to split
    "$BENCH_BIN" $target $args --warmup "$warmup" --json $plot >"$out" 2>"$dir/bench.err" &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    local wal_fsync=""
    if [ "$sys" != etcd ] && command -v curl >/dev/null; then
        # corekv's own WAL write+fdatasync during the run (mean, ms), from its /metrics.
        wal_fsync=$(curl -s --max-time 5 "http://$ENDPOINT/metrics" | awk '
            /^corekv_wal_fsync_duration_seconds_sum / { s = $2 }
            /^corekv_wal_fsync_duration_seconds_count / { c = $2 }
            END { if (c > 0) printf "%.4f", s / c * 1000 }')
    fi
    stop_server "$SERVER_PID"
    SERVER_PID=""
    rm -rf "$dir/data"
    if [ $rc -ne 0 ] || ! [ -s "$out" ]; then
        NOTES+=("$scen round $round, $sys: corekv-bench failed (exit $rc): $(tail -n 1 "$dir/bench.err")")
        FAILED=1
        return
    fi
    if [ -n "$RAW_OUT" ]; then
        jq -c --arg s "$scen" --arg y "$sys" --argjson r "$round" '. + {scenario: $s, system: $y, round: $r}' \
            "$out" >>"$RAW_OUT" 2>/dev/null || cat "$out" >>"$RAW_OUT"
    fi
    errors=$(jget "$out" .errors)
    if [ "$errors" != 0 ]; then
        NOTES+=("$scen round $round, $sys: $errors errors; first: $(jget "$out" .first_error)")
    fi
    log "[$scen round $round] $sys: $(jget "$out" .rps) req/s, p50 $(jget "$out" .latency_ms.p50) ms, p99 $(jget "$out" .latency_ms.p99) ms, $errors errors"
    local path
    while IFS='|' read -r _ path _; do
        if [ "$path" = wal_fsync ]; then
            [ -n "$wal_fsync" ] && VALUES["$scen|$sys|$path"]+="$wal_fsync "
            continue
        fi
        VALUES["$scen|$sys|$path"]+="$(jget "$out" "$path") "
    done < <(scenario_rows "$scen")
}

ETCD_VERSION="(not run)"
if has_system etcd; then ETCD_VERSION=$("$ETCD_PATH" --version 2>/dev/null | sed -n 1p); fi
log "work dir $WORK ($(df -T "$WORK" | awk 'NR==2 { print $2 }')), etcd: $ETCD_VERSION, corekv: $COREKV_BIN"
FSYNC_P50=""
if "$BENCH_BIN" fsync-floor --dir "$WORK" --count 2000 --json >"$WORK/fsync.json" 2>"$WORK/fsync.err"; then
    FSYNC_P50=$(jget "$WORK/fsync.json" .latency_ms.p50)
    log "disk floor (write + fdatasync, $WORK): p50 $FSYNC_P50 ms, p99 $(jget "$WORK/fsync.json" .latency_ms.p99) ms"
else
    NOTES+=("fsync-floor failed: $(tail -n 1 "$WORK/fsync.err")")
fi
for scen in "${SCENARIO_LIST[@]}"; do
    for round in $(seq 1 "$ROUNDS"); do
        for sys in "${SYSTEM_LIST[@]}"; do
            run_one "$scen" "$sys" "$round"
        done
    done
done

# --- table -----------------------------------------------------------------------------
# cell VALUES KIND: median (and min..max when several) formatted for the kind
cell() {
    local vals=$1 kind=$2
    [ -n "${vals// /}" ] || { echo "FAIL"; return; }
    tr ' ' '\n' <<<"$vals" | grep -v '^$' | sort -g | awk -v kind="$kind" '
        { a[NR] = $1 }
        END {
            med = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
            fmt = (kind == "lat") ? "%.4f" : "%.0f"
            s = sprintf(fmt, med)
            if (NR > 1) s = s sprintf(" (" fmt ".." fmt ")", a[1], a[NR])
            print s
        }'
}
median() {
    [ -n "${1// /}" ] || return 0
    tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { if (NR) print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# ratio A B: A / B of two medians, or "-"
ratio() {
    if [ -n "$1" ] && [ -n "$2" ]; then
        awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
    else
        echo "-"
    fi
}

TABLE="$WORK/table.md"
{
    echo "| scenario | etcd | corekv gRPC | corekv binary | corekv / etcd | binary / gRPC |"
    echo "|---|---:|---:|---:|---:|---:|"
    for scen in "${SCENARIO_LIST[@]}"; do
        while IFS='|' read -r label path kind; do
            e=${VALUES["$scen|etcd|$path"]:-}
            c=${VALUES["$scen|corekv|$path"]:-}
            b=${VALUES["$scen|corekv-bin|$path"]:-}
            em=$(median "$e"); cm=$(median "$c"); bm=$(median "$b")
            ec="-"; cc="-"; bc="-"
            # (etcd has no such metric: the WAL row is corekv's only.)
            if has_system etcd && [ "$path" != wal_fsync ]; then ec=$(cell "$e" "$kind"); fi
            has_system corekv && cc=$(cell "$c" "$kind")
            has_system corekv-bin && bc=$(cell "$b" "$kind")
            echo "| $label | $ec | $cc | $bc | $(ratio "$cm" "$em") | $(ratio "$bm" "$cm") |"
        done < <(scenario_rows "$scen")
    done
    if [ -n "$FSYNC_P50" ]; then
        for sys in corekv corekv-bin; do
            pm=$(median "${VALUES["put-lat|$sys|.latency_ms.p50"]:-}")
            [ -n "$pm" ] || continue
            wm=$(median "${VALUES["put-lat|$sys|wal_fsync"]:-}")
            echo
            echo -n "single-client put p50 over $( [ "$sys" = corekv ] && echo gRPC || echo binary ): $pm ms = $(ratio "$pm" "$FSYNC_P50") x the disk's write+fdatasync p50 ($FSYNC_P50 ms, corekv-bench fsync-floor --dir <work dir> --count 2000)"
            if [ -n "$wm" ]; then echo "; $(ratio "$pm" "$wm") x the server's own WAL write+fdatasync mean in that run ($wm ms)"; else echo; fi
        done
    fi
    echo
    echo "corekv / etcd compares gRPC with gRPC; binary / gRPC compares corekv's two protocols on the same server (higher is better for req/s, lower is better for ms); $ROUNDS round(s), median shown; keys 8 B, values 256 B; warmup ${WARMUP_PCT}%."
    if [ ${#NOTES[@]} -gt 0 ]; then
        echo
        echo "Notes:"
        for n in "${NOTES[@]}"; do echo "- $n"; done
    fi
} >"$TABLE"
echo
cat "$TABLE"

if [ -n "$DOC_OUT" ]; then
    doc_dir=$(cd "$(dirname "$DOC_OUT")" && pwd)
    {
        echo
        echo "## $(date -u +%Y-%m-%d), compare.sh: etcd, corekv gRPC, corekv binary"
        echo
        echo "\`bench/compare.sh --rounds $ROUNDS --scenarios $(IFS=,; echo "${SCENARIO_LIST[*]}") --systems $(IFS=,; echo "${SYSTEM_LIST[*]}")$( [ "$SCALE" != 1 ] && echo " --scale $SCALE")\`"
        echo "($(nproc) cores shared by the servers and the load generator; etcd: $ETCD_VERSION)"
        echo
        cat "$TABLE"
        if [ -n "$PLOTS_DIR" ] && [ "${PLOTS_DIR#"$doc_dir"/}" != "$PLOTS_DIR" ]; then
            rel=${PLOTS_DIR#"$doc_dir"/}
            echo
            for f in "${PLOT_FILES[@]}"; do
                [ -e "$f" ] || continue
                name=$(basename "$f" .svg)
                echo "![$name]($rel/$name.svg)"
            done
        fi
    } >>"$DOC_OUT"
    log "appended the results to $DOC_OUT"
fi
[ "$FAILED" = 0 ] || exit 1
