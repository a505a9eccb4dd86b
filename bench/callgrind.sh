#!/usr/bin/env bash
# Instructions Tidepool executes per transaction, counted by valgrind's callgrind:
# a stable figure for comparing two builds of the hot path, where CPU time on a
# shared 2-core machine moves by 20% from run to run.
#
#   bash bench/callgrind.sh [BINARY | --pgbouncer] [-- PGBENCH MODE ARGS]
#   bash bench/callgrind.sh target/release/tidepool -- -S -M extended
#   bash bench/callgrind.sh --pgbouncer -- -S
#
# Starts a throwaway PostgreSQL (pgbench scale 1) and the binary (default
# target/release/tidepool, built if missing) under callgrind with
# instrumentation off, warms it up, then counts two pgbench runs of 10 clients
# (CALLGRIND_CLIENTS): 200 and 1,200 transactions per client. The difference,
# divided by the 1,000 transactions per client between them, leaves logins
# and start-up out. Prints instructions per transaction and keeps the callgrind file
# (callgrind_annotate reads it) in the output folder it names.
#
# --pgbouncer counts PgBouncer (the distribution's package, same pool) the same
# way, except that its idle event loop never takes callgrind_control's
# commands: it runs twice under callgrind from the start, once per pgbench run,
# and the difference of the two totals is divided.
#
# CALLGRIND_CLIENTS (default 10) sets pgbench's client count; above the pool size
# of 20, clients queue for a server connection as in the full benchmark.
# CALLGRIND_ARGS adds valgrind options, e.g. "--cache-sim=yes" to count cache
# misses too (callgrind_annotate shows them per function).
#
# A benchmark, not a test: nothing here asserts a count.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$BENCH_DIR/../scripts/lib.sh"
# shellcheck source=bench/pgbouncer.sh
source "$BENCH_DIR/pgbouncer.sh"
readonly BENCH_USER=bench BENCH_DB=bench POOL_SIZE=20
CLIENTS="${CALLGRIND_CLIENTS:-10}"
read -r -a EXTRA_VALGRIND <<<"${CALLGRIND_ARGS:-}"
[[ "$CLIENTS" =~ ^[1-9][0-9]*$ ]] || tp_die "CALLGRIND_CLIENTS must be a positive integer"

BINARY=""
PGBOUNCER=""
MODE=(-S)
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; MODE=("$@"); break ;;
        --pgbouncer) PGBOUNCER=1 ;;
        -h | --help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) BINARY="$1" ;;
    esac
    shift
done
[ ${#MODE[@]} -gt 0 ] || MODE=(-S)

tp_ensure_postgres
tp_ensure_commands valgrind
if [ -n "$PGBOUNCER" ]; then
    ensure_pgbouncer
else
    [ -n "$BINARY" ] || BINARY="$(tp_build_release)" || tp_die "release build failed"
    [ -x "$BINARY" ] || tp_die "$BINARY is not an executable"
fi
PGBENCH="$(tp_pg_tool pgbench)"

OUT="$(mktemp -d "${TMPDIR:-/tmp}/tidepool-callgrind.XXXXXX")"
VG_PID=""
cleanup() {
    if [ -n "$VG_PID" ]; then
        kill -TERM "$VG_PID" 2>/dev/null || true
        wait "$VG_PID" 2>/dev/null || true
    fi
    stop_pgbouncer
    tp_pg_stop
}
trap cleanup EXIT

tp_pg_start
tp_pg_create_user_db bench benchpass bench
PGPASSWORD=benchpass timeout 300 "$PGBENCH" -i -s 1 -q -h 127.0.0.1 -p "$TP_PG_PORT" -U bench bench \
    >"$OUT/init.txt" 2>&1 || tp_die "pgbench -i failed (see $OUT/init.txt)"

# Runs pgbench against $PORT with $1 transactions per client; prints the
# processed count.
pgbench_run() {
    PGPASSWORD=benchpass timeout 600 "$PGBENCH" -n -h 127.0.0.1 -p "$PORT" -U bench \
        "${MODE[@]}" -c "$CLIENTS" -j 2 -t "$1" bench 2>&1 |
        sed -n 's/^number of transactions actually processed: //p'
}

# The total of a callgrind file.
total() {
    callgrind_annotate "$1" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
}

if [ -n "$PGBOUNCER" ]; then
    VERIFIER="$(tp_psql_super -c "SELECT rolpassword FROM pg_authid WHERE rolname = '$BENCH_USER'")"
    PGB_PORT="$(tp_free_port)"
    PORT="$PGB_PORT"
    # PgBouncer runs as postgres: its profile goes to a folder of its own.
    mkdir "$OUT/pgbouncer"
    ! tp_is_root || chown postgres: "$OUT" "$OUT/pgbouncer"
    declare -A TOTAL
    for run in short long; do
        case "$run" in short) per_client=200 ;; *) per_client=1200 ;; esac
        start_pgbouncer "$VERIFIER" valgrind --tool=callgrind "${EXTRA_VALGRIND[@]}" \
            --callgrind-out-file="$OUT/pgbouncer/callgrind.out.$run"
        echo "$run run: $(pgbench_run "$per_client")"
        tp_stop_pid "$PGB_PID"
        cp "$OUT/pgbouncer/callgrind.out.$run" "$OUT/callgrind.out.$run"
        TOTAL[$run]="$(total "$OUT/callgrind.out.$run")"
        stop_pgbouncer
    done
    [ -n "${TOTAL[short]}" ] && [ -n "${TOTAL[long]}" ] || tp_die "no callgrind totals in $OUT"
    echo "PgBouncer, mode: ${MODE[*]}"
    echo "instructions per transaction: $(((TOTAL[long] - TOTAL[short]) / (CLIENTS * 1000)))"
    echo "callgrind files: $OUT/callgrind.out.short (whole run, 200 per client), $OUT/callgrind.out.long (1,200)"
    exit 0
fi

PORT="$(tp_free_port)"
valgrind --tool=callgrind "${EXTRA_VALGRIND[@]}" --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
    "$BINARY" --listen "127.0.0.1:$PORT" \
    --upstream "postgres://bench:benchpass@127.0.0.1:$TP_PG_PORT/bench" \
    --pool-size 20 --pool-mode transaction >"$OUT/tidepool.log" 2>&1 &
VG_PID=$!
tp_wait_port "$PORT" 60 "$VG_PID" || tp_die "tidepool under valgrind did not listen (see $OUT/tidepool.log)"

echo "warm-up: $(pgbench_run 300)"
callgrind_control -i on "$VG_PID" >/dev/null
echo "short run: $(pgbench_run 200)"
callgrind_control -d short "$VG_PID" >/dev/null
callgrind_control -z "$VG_PID" >/dev/null
echo "long run: $(pgbench_run 1200)"
callgrind_control -d long "$VG_PID" >/dev/null
callgrind_control -i off "$VG_PID" >/dev/null

SHORT="$(total "$OUT/callgrind.out.1")"
LONG="$(total "$OUT/callgrind.out.2")"
[ -n "$SHORT" ] && [ -n "$LONG" ] || tp_die "no callgrind totals in $OUT"
echo "mode: ${MODE[*]}"
echo "instructions per transaction: $(((LONG - SHORT) / (CLIENTS * 1000)))"
echo "callgrind files: $OUT/callgrind.out.1 (200 per client), $OUT/callgrind.out.2 (1,200 per client)"
