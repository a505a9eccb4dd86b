#!/usr/bin/env bash
# Load check through the pooler: 40 pgbench clients share a transaction-mode
# pool of 8 in front of a throwaway PostgreSQL. Each run (simple-protocol
# select-only, extended-protocol select-only, TPC-B) must finish with exit 0
# and no failed transactions, and PostgreSQL must never see more than 8
# client backends for the bench user (sampled every 0.5 s).
#
# Uses $TIDEPOOL_BIN if set, else builds target/release/tidepool.
# Prints one summary line per run, then "N passed, N failed".
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly POOL_SIZE=8
readonly CLIENTS=40
readonly THREADS=2
readonly DURATION=10
readonly BENCH_USER=bench
readonly BENCH_PASSWORD=benchpass
readonly BENCH_DB=bench
# A run that takes this much longer than DURATION is hung.
readonly RUN_GRACE=60

WORK_DIR=""
SAMPLER_PID=""
PGBENCH_PID=""

cleanup() {
    if [ -n "$PGBENCH_PID" ]; then
        kill "$PGBENCH_PID" 2>/dev/null || true
        wait "$PGBENCH_PID" 2>/dev/null || true
    fi
    if [ -n "$SAMPLER_PID" ]; then
        kill "$SAMPLER_PID" 2>/dev/null || true
        wait "$SAMPLER_PID" 2>/dev/null || true
    fi
    tp_tidepool_stop
    tp_pg_stop
    if [ -n "$WORK_DIR" ]; then
        rm -rf "$WORK_DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Appends the number of client backends of the bench user to $1 every 0.5 s
# until killed; "error" when a sample could not be taken.
sample_backends() {
    local out="$1" count
    while :; do
        count="$(tp_psql_super -c "SELECT count(*) FROM pg_stat_activity
            WHERE usename = '$BENCH_USER' AND backend_type = 'client backend'" 2>/dev/null)" ||
            count=error
        printf '%s\n' "$count" >>"$out"
        sleep 0.5
    done
}

# Runs pgbench through the pooler while sampling server connections.
# $1 is the run's name, the rest extra pgbench arguments.
# Returns 0 if the run passed.
run_case() {
    local name="$1" output samples status=0 tps failed processed max_seen errors verdict
    shift
    output="$WORK_DIR/$name.out"
    samples="$WORK_DIR/$name.samples"
    : >"$samples"

    sample_backends "$samples" &
    SAMPLER_PID=$!
    # In the background so that `wait` lets a Ctrl-C or TERM trap run at once.
    PGPASSWORD="$BENCH_PASSWORD" PGCONNECT_TIMEOUT=10 \
        timeout --kill-after=10 $((DURATION + RUN_GRACE)) "$PGBENCH" \
        -h 127.0.0.1 -p "$TIDEPOOL_PORT" -U "$BENCH_USER" \
        -n "$@" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" "$BENCH_DB" \
        >"$output" 2>&1 &
    PGBENCH_PID=$!
    wait "$PGBENCH_PID" || status=$?
    PGBENCH_PID=""
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""

    tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$output" | head -n 1)"
    failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$output" | head -n 1)"
    processed="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$output" | head -n 1)"
    max_seen="$(grep -E '^[0-9]+$' "$samples" | sort -n | tail -n 1 || true)"
    errors="$(grep -c -v -E '^[0-9]+$' "$samples" || true)"

    verdict=PASS
    local reasons=()
    [ "$status" -eq 0 ] || reasons+=("pgbench exited with $status")
    [ "${failed:-0}" -eq 0 ] || reasons+=("$failed failed transactions")
    [ "${processed:-0}" -gt 0 ] || reasons+=("no transactions processed")
    if [ -z "$max_seen" ]; then
        reasons+=("no server connection sample taken")
    elif [ "$max_seen" -gt "$POOL_SIZE" ]; then
        reasons+=("$max_seen server connections seen, pool size is $POOL_SIZE")
    fi
    [ "${#reasons[@]}" -eq 0 ] || verdict=FAIL

    printf '%s: %s tps=%s failed=%s processed=%s max_server_connections=%s (limit %s, %s samples failed)\n' \
        "$name" "$verdict" "${tps:-n/a}" "${failed:-n/a}" "${processed:-n/a}" \
        "${max_seen:-n/a}" "$POOL_SIZE" "$errors"
    if [ "$verdict" = FAIL ]; then
        printf '  reason: %s\n' "${reasons[@]}"
        echo "  --- pgbench output (last 25 lines) ---"
        tail -n 25 "$output" | sed 's/^/  /'
        echo "  --- tidepool log (last 25 lines) ---"
        tail -n 25 "$TP_TIDEPOOL_LOG" 2>/dev/null | sed 's/^/  /' || true
        return 1
    fi
}

tp_ensure_postgres
PGBENCH="$(tp_pg_tool pgbench)"
TIDEPOOL_BIN="${TIDEPOOL_BIN:-$(tp_build_release)}"
[ -x "$TIDEPOOL_BIN" ] || tp_die "$TIDEPOOL_BIN not found; run cargo build --release"

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tidepool-pgbench.XXXXXX")"
tp_pg_start
tp_pg_create_user_db "$BENCH_USER" "$BENCH_PASSWORD" "$BENCH_DB"
echo "pgbench -i -s 1 (directly on PostgreSQL)"
if ! PGPASSWORD="$BENCH_PASSWORD" timeout 300 "$PGBENCH" -i -s 1 -q \
    -h 127.0.0.1 -p "$TP_PG_PORT" -U "$BENCH_USER" "$BENCH_DB" >"$WORK_DIR/init.out" 2>&1; then
    cat "$WORK_DIR/init.out" >&2
    tp_die "pgbench -i failed"
fi

TIDEPOOL_PORT="$(tp_free_port)"
tp_tidepool_start "$TIDEPOOL_BIN" "$TIDEPOOL_PORT" "$WORK_DIR/tidepool.log" \
    --upstream "postgres://$BENCH_USER:$BENCH_PASSWORD@127.0.0.1:$TP_PG_PORT/$BENCH_DB" \
    --pool-size "$POOL_SIZE" --pool-mode transaction
echo "tidepool on 127.0.0.1:$TIDEPOOL_PORT: pool size $POOL_SIZE, transaction mode;" \
    "$CLIENTS clients, $THREADS threads, $DURATION s per run"

runs_passed=0
runs_failed=0
for case in "select-simple -S -M simple" "select-extended -S -M extended" "tpcb-simple -M simple"; do
    # shellcheck disable=SC2086 # the case string is split into name and flags on purpose
    if run_case $case; then
        runs_passed=$((runs_passed + 1))
    else
        runs_failed=$((runs_failed + 1))
    fi
done

echo "$runs_passed passed, $runs_failed failed"
[ "$runs_failed" -eq 0 ]
