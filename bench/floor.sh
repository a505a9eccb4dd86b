#!/usr/bin/env bash
# The floor under issue 5's CPU bar: what a program that only moves pgbench's
# bytes costs per transaction, next to PgBouncer and Tidepool, in one run.
#
#   bash bench/floor.sh                      -S -M extended -c 50, 3 rounds of 10 s
#   bash bench/floor.sh -- -S -M simple -c 400
#
# Starts a throwaway PostgreSQL (pgbench scale 10, max_connections 1100),
# PgBouncer from the distribution's package and Tidepool as bench/run.sh does
# (transaction mode, pool 20, SCRAM), and bench/floor's forwarder twice: over
# epoll and over io_uring. The forwarder gives each client its own PostgreSQL
# connection and never looks at a byte: no protocol, no pool, no allocation on
# the way, one thread. Then, round by round in turning order, the same pgbench
# run against each, with each process's CPU time read from /proc before and
# after: CPU microseconds per transaction, medians, and their ratio to
# PgBouncer's.
#
# The forwarder is a fair floor only while PostgreSQL takes one backend per
# client in its stride (the default 50 clients: all four reach about the same
# tps). With hundreds of clients the forwarder's PostgreSQL slows down under
# its own backends (400 clients: half the tps, and fewer transactions per
# wake-up), which the poolers' pools of 20 spare it. max_connections is 1100.
#
# Settings (environment): FLOOR_ROUNDS (3), FLOOR_DURATION (s, 10),
# TIDEPOOL_BIN (use this binary instead of building), TIDEPOOL_ARGS (extra
# tidepool flags, e.g. "--worker-threads 1").
#
# A benchmark, not a test: nothing here asserts a timing.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$BENCH_DIR/../scripts/lib.sh"
# shellcheck source=bench/pgbouncer.sh
source "$BENCH_DIR/pgbouncer.sh"
readonly BENCH_USER=bench BENCH_DB=bench BENCH_PASSWORD=benchpass POOL_SIZE=20
ROUNDS="${FLOOR_ROUNDS:-3}"
DURATION="${FLOOR_DURATION:-10}"
for n in "$ROUNDS" "$DURATION"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || tp_die "FLOOR_ROUNDS and FLOOR_DURATION must be positive integers"
done

WORKLOAD=(-S -M extended -c 50)
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; [ $# -eq 0 ] || WORKLOAD=("$@"); break ;;
        -h | --help) sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) tp_die "unknown argument: $1 (pgbench arguments go after --)" ;;
    esac
done

tp_ensure_postgres
ensure_pgbouncer
TIDEPOOL_BIN="${TIDEPOOL_BIN:-$(tp_build_release)}" || tp_die "release build failed"
FLOOR_TARGET="${CARGO_TARGET_DIR:-$TP_REPO_ROOT/target}/bench-floor"
echo "building bench/floor"
(cd "$BENCH_DIR/floor" && cargo build --release --quiet --target-dir "$FLOOR_TARGET") ||
    tp_die "bench/floor did not build"
FLOOR_BIN="$FLOOR_TARGET/release/floor"
PGBENCH="$(tp_pg_tool pgbench)"
tp_raise_nofile >/dev/null

OUT="$(mktemp -d "${TMPDIR:-/tmp}/tidepool-floor.XXXXXX")"
FLOOR_PIDS=()
cleanup() {
    local pid
    for pid in "${FLOOR_PIDS[@]}"; do tp_stop_pid "$pid"; done
    stop_pgbouncer
    tp_tidepool_stop
    tp_pg_stop
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tp_pg_start
tp_pg_create_user_db "$BENCH_USER" "$BENCH_PASSWORD" "$BENCH_DB"
tp_psql_super >/dev/null <<EOF
ALTER SYSTEM SET max_connections = 1100;
ALTER SYSTEM SET shared_buffers = '512MB';
EOF
tp_as_pg "$TP_PG_BIN/pg_ctl" restart --wait --timeout=60 --silent --mode=fast \
    -D "$TP_PG_DATA" -l "$TP_PG_LOG" >/dev/null || tp_die "PostgreSQL did not restart"
PGPASSWORD="$BENCH_PASSWORD" timeout 600 "$PGBENCH" -i -s 10 -q -h 127.0.0.1 -p "$TP_PG_PORT" \
    -U "$BENCH_USER" "$BENCH_DB" >"$OUT/init.txt" 2>&1 || tp_die "pgbench -i failed (see $OUT/init.txt)"

start_pgbouncer "$(tp_psql_super -c "SELECT rolpassword FROM pg_authid WHERE rolname = '$BENCH_USER'")"
TIDEPOOL_PORT="$(tp_free_port)"
# shellcheck disable=SC2086 # TIDEPOOL_ARGS is split on purpose
tp_tidepool_start "$TIDEPOOL_BIN" "$TIDEPOOL_PORT" "$OUT/tidepool.log" \
    --upstream "postgres://$BENCH_USER:$BENCH_PASSWORD@127.0.0.1:$TP_PG_PORT/$BENCH_DB" \
    --pool-size "$POOL_SIZE" --pool-mode transaction ${TIDEPOOL_ARGS:-}

declare -A PORT PID
PORT[pgbouncer]="$PGB_PORT" PID[pgbouncer]="$PGB_PID"
PORT[tidepool]="$TIDEPOOL_PORT" PID[tidepool]="$TP_TIDEPOOL_PID"
for mode in epoll uring; do
    port="$(tp_free_port)"
    "$FLOOR_BIN" "$mode" "127.0.0.1:$port" "127.0.0.1:$TP_PG_PORT" >"$OUT/floor-$mode.log" 2>&1 &
    FLOOR_PIDS+=($!)
    tp_wait_port "$port" 10 $! || tp_die "floor $mode did not listen: $(cat "$OUT/floor-$mode.log")"
    PORT[floor-$mode]="$port" PID[floor-$mode]=$!
done
TARGETS=(pgbouncer tidepool floor-epoll floor-uring)

# utime + stime of process $1, in clock ticks.
cpu_ticks() {
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

HZ="$(getconf CLK_TCK)"
echo "workload: pgbench ${WORKLOAD[*]}, $ROUNDS rounds of ${DURATION}s; output in $OUT"
: >"$OUT/runs.tsv"
for round in $(seq 1 "$ROUNDS"); do
    for i in "${!TARGETS[@]}"; do
        target="${TARGETS[$(((round - 1 + i) % ${#TARGETS[@]}))]}"
        before="$(cpu_ticks "${PID[$target]}")"
        PGPASSWORD="$BENCH_PASSWORD" timeout $((DURATION + 120)) "$PGBENCH" -n -j 2 -T "$DURATION" \
            "${WORKLOAD[@]}" -h 127.0.0.1 -p "${PORT[$target]}" -U "$BENCH_USER" "$BENCH_DB" \
            >"$OUT/$target-$round.txt" 2>&1 || true
        after="$(cpu_ticks "${PID[$target]}")"
        tx="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$OUT/$target-$round.txt")"
        failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$OUT/$target-$round.txt")"
        if [ -z "$tx" ] || [ "$tx" -eq 0 ]; then
            echo "round $round $target: pgbench failed (see $OUT/$target-$round.txt)"
            continue
        fi
        us="$(awk -v t=$((after - before)) -v hz="$HZ" -v tx="$tx" 'BEGIN { printf "%.1f", t / hz * 1e6 / tx }')"
        tps="$(sed -n 's/^tps = \([0-9]*\).*/\1/p' "$OUT/$target-$round.txt" | head -n 1)"
        printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$target" "$tps" "$us" "${failed:-0}" >>"$OUT/runs.tsv"
        printf 'round %s %-12s tps=%-7s failed=%-3s CPU %s µs/tx\n' "$round" "$target" "$tps" "${failed:-0}" "$us"
    done
done

echo
echo "| Process | tps (median) | CPU µs/tx (median) | CPU ratio to PgBouncer |"
echo "|---|---:|---:|---:|"
awk -F'\t' '
    function median(list,    n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { tps[$2] = tps[$2] " " $3; cpu[$2] = cpu[$2] " " $4 }
    END {
        split("pgbouncer tidepool floor-epoll floor-uring", order, " ")
        base = median(cpu["pgbouncer"])
        for (k = 1; k <= 4; k++) {
            t = order[k]
            if (!(t in cpu)) continue
            c = median(cpu[t])
            ratio = base > 0 ? sprintf("%.2fx", c / base) : "n/a"
            printf "| %s | %d | %.1f | %s |\n", t, median(tps[t]), c, ratio
        }
    }' "$OUT/runs.tsv"
