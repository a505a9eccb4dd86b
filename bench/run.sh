#!/usr/bin/env bash
# Tidepool and PgBouncer side by side on loopback (issue 5).
#
#   bash bench/run.sh            full run: 3 rounds of 30 s per pgbench run (about an hour)
#   bash bench/run.sh --quick    1 round of 5 s, smaller client counts (a few minutes)
#
# Starts a throwaway PostgreSQL (pgbench scale 10), PgBouncer from the
# distribution's package (transaction mode, pool 20, SCRAM with the verifier
# from pg_authid) and Tidepool as shipped (release build, default logging,
# pool 20, transaction mode), all on 127.0.0.1. Then, interleaving the two
# poolers round by round (which one goes first turns each round):
#   - pgbench workloads, with each pooler's CPU time read from /proc before
#     and after every run (CPU microseconds per transaction); one of them over
#     TLS (both poolers given the same self-signed certificate; every other
#     run is plain TCP, PGSSLMODE=disable);
#   - added latency at 1 client against a direct connection (after a VACUUM
#     of the tables TPC-B writes and a CHECKPOINT);
#   - a scaling curve (-S -M extended at 10..5000 clients: tps, p99 from
#     pgbench's per-transaction log);
#   - resident memory per idle authenticated client (bench/pgclients), over
#     plain TCP and, when openssl made a certificate, over TLS;
#   - a connection storm (authenticated logins per second), plain and TLS.
# Writes results.md, results.json and chart.png to bench/out/<timestamp>/,
# next to the raw pgbench outputs, the server logs and run.log.
#
# Settings (environment, each overrides the --quick or full default):
#   BENCH_ROUNDS, BENCH_DURATION (s per pgbench run), BENCH_SCALE,
#   BENCH_SCALING_CLIENTS ("10 100 1000 5000"), BENCH_IDLE_COUNTS
#   ("5000 15000"), BENCH_STORM_SECS, BENCH_STORM_CONCURRENCY, BENCH_OUT
#   (output folder), TIDEPOOL_BIN (use this binary instead of building),
#   TIDEPOOL_ARGS (extra tidepool flags, e.g. "--worker-threads 1"),
#   BENCH_UPSTREAM ("tcp", the default and issue 5's setup: both poolers reach
#   PostgreSQL over 127.0.0.1; "unix": both over its Unix-domain socket, as a
#   pooler on the database's own machine would; clients use TCP either way).
#
# A benchmark, not a test: nothing here asserts a timing.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$BENCH_DIR/../scripts/lib.sh"
# shellcheck source=bench/pgbouncer.sh
source "$BENCH_DIR/pgbouncer.sh"

usage() {
    sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            tp_die "unknown argument: $1"
            ;;
    esac
    shift
done

if [ "$QUICK" -eq 1 ]; then
    ROUNDS="${BENCH_ROUNDS:-1}"
    DURATION="${BENCH_DURATION:-5}"
    SCALING_CLIENTS="${BENCH_SCALING_CLIENTS:-10 100 1000}"
    IDLE_COUNTS="${BENCH_IDLE_COUNTS:-1000 3000}"
    STORM_SECS="${BENCH_STORM_SECS:-3}"
    WARMUP_SECS=2
else
    ROUNDS="${BENCH_ROUNDS:-3}"
    DURATION="${BENCH_DURATION:-30}"
    SCALING_CLIENTS="${BENCH_SCALING_CLIENTS:-10 100 1000 5000}"
    IDLE_COUNTS="${BENCH_IDLE_COUNTS:-5000 15000}"
    STORM_SECS="${BENCH_STORM_SECS:-10}"
    WARMUP_SECS=5
fi
SCALE="${BENCH_SCALE:-10}"
STORM_CONCURRENCY="${BENCH_STORM_CONCURRENCY:-32}"
UPSTREAM="${BENCH_UPSTREAM:-tcp}"
case "$UPSTREAM" in tcp | unix) ;; *) tp_die "BENCH_UPSTREAM must be tcp or unix, got '$UPSTREAM'" ;; esac
readonly POOL_SIZE=20
readonly THREADS=2
readonly BENCH_USER=bench
readonly BENCH_PASSWORD=benchpass
readonly BENCH_DB=bench
readonly POOLERS="tidepool pgbouncer"
# libpq's default (prefer) would take TLS wherever it is offered: every run is
# plain TCP unless its workload asks for TLS.
export PGSSLMODE=disable
# Logins in flight while opening idle connections.
readonly IDLE_CONCURRENCY=64

for setting in ROUNDS DURATION SCALE STORM_SECS STORM_CONCURRENCY; do
    case "${!setting}" in '' | *[!0-9]*) tp_die "BENCH_$setting must be a whole number" ;; esac
    [ "${!setting}" -gt 0 ] || tp_die "BENCH_$setting must be positive"
done
for count in $SCALING_CLIENTS $IDLE_COUNTS; do
    case "$count" in '' | *[!0-9]*) tp_die "client counts must be whole numbers, got '$count'" ;; esac
done

# --- state for the cleanup trap ---------------------------------------------
WORK_DIR=""
PGB_DIR=""
PGB_PID=""
CHILD_PID=""
OUT_DIR=""
TIDEPOOL_STARTS=0

cleanup() {
    tp_stop_pid "$CHILD_PID"
    CHILD_PID=""
    stop_pgbouncer
    tp_tidepool_stop
    if [ -n "$OUT_DIR" ] && [ -d "$OUT_DIR/logs" ]; then
        [ -z "$TP_PG_LOG" ] || cp "$TP_PG_LOG" "$OUT_DIR/logs/postgres.log" 2>/dev/null || true
    fi
    tp_pg_stop
    [ -z "$PGB_DIR" ] || rm -rf "$PGB_DIR"
    [ -z "$WORK_DIR" ] || rm -rf "$WORK_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- small measurements -----------------------------------------------------

# Prints utime+stime of process $1 in clock ticks (all its threads).
cpu_ticks() {
    # Fields after the command name's closing parenthesis: 12 is utime, 13 stime.
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# Prints stime (kernel CPU) of process $1 in clock ticks (all its threads).
sys_ticks() {
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $13}'
}

# Prints the resident memory of process $1 in KB.
rss_kb() {
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

# Writes the highest resident memory (KB) process $1 reaches to file $2, read
# every 0.2 s until the process ends or this sampler is killed.
sample_peak_rss() {
    local pid="$1" file="$2" peak=0 rss
    while rss="$(rss_kb "$pid" 2>/dev/null)" && [ -n "$rss" ]; do
        if [ "$rss" -gt "$peak" ]; then
            peak="$rss"
            printf '%s\n' "$peak" >"$file"
        fi
        sleep 0.2
    done
}

# Appends one record (tab-separated key=value pairs) to runs.tsv.
record() {
    local IFS=$'\t'
    printf '%s\n' "$*" >>"$OUT_DIR/runs.tsv"
}

# Prints value of key $2 from a key=value file $1.
value_of() {
    sed -n "s/^$2=//p" "$1" | head -n 1
}

pooler_port() {
    case "$1" in
        tidepool) printf '%s\n' "$TIDEPOOL_PORT" ;;
        pgbouncer) printf '%s\n' "$PGB_PORT" ;;
        direct) printf '%s\n' "$TP_PG_PORT" ;;
    esac
}

pooler_pid() {
    case "$1" in
        tidepool) printf '%s\n' "$TP_TIDEPOOL_PID" ;;
        pgbouncer) printf '%s\n' "$PGB_PID" ;;
        direct) printf '\n' ;;
    esac
}

# --- installing what is missing ---------------------------------------------

# Prints a python that has matplotlib (a venv under target/ gets it from
# PyPI), or the plain python3 when that fails (the chart is then skipped).
ensure_python() {
    local venv="${CARGO_TARGET_DIR:-$TP_REPO_ROOT/target}/bench-venv"
    if ! command -v python3 >/dev/null 2>&1; then
        echo "installing: python3 python3-venv" >&2
        tp_as_root env DEBIAN_FRONTEND=noninteractive apt-get update >&2
        tp_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv >&2
    fi
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
        printf '%s\n' "$venv/bin/python"
        return 0
    fi
    if ! python3 -m venv "$venv" >&2 2>&1; then
        rm -rf "$venv"
        if command -v apt-get >/dev/null 2>&1; then
            tp_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2 || true
        fi
        python3 -m venv "$venv" >&2 2>&1 || true
    fi
    if [ -x "$venv/bin/python" ] &&
        timeout 600 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check matplotlib >&2 &&
        "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
        printf '%s\n' "$venv/bin/python"
        return 0
    fi
    echo "warning: matplotlib could not be installed; the chart will be skipped" >&2
    command -v python3
}

# --- servers ----------------------------------------------------------------

# Restarts PostgreSQL with benchmark settings (postgresql.auto.conf wins
# over lib.sh's postgresql.conf).
tune_postgres() {
    tp_psql_super >/dev/null <<EOF
ALTER SYSTEM SET max_connections = 300;
ALTER SYSTEM SET shared_buffers = '512MB';
EOF
    tp_as_pg "$TP_PG_BIN/pg_ctl" restart --wait --timeout=60 --silent --mode=fast \
        -D "$TP_PG_DATA" -l "$TP_PG_LOG" >/dev/null || tp_die "PostgreSQL did not restart"
}

start_tidepool() {
    [ -n "${TIDEPOOL_PORT:-}" ] || TIDEPOOL_PORT="$(tp_free_port)"
    TIDEPOOL_STARTS=$((TIDEPOOL_STARTS + 1))
    local upstream="postgres://$BENCH_USER:$BENCH_PASSWORD@127.0.0.1:$TP_PG_PORT/$BENCH_DB"
    # A host that is a directory: PostgreSQL's Unix-domain socket in it.
    [ "$UPSTREAM" = tcp ] || upstream="$upstream?host=$TP_PG_DIR"
    tp_tidepool_start "$TIDEPOOL_BIN" "$TIDEPOOL_PORT" "$OUT_DIR/logs/tidepool-$TIDEPOOL_STARTS.log" \
        --upstream "$upstream" \
        --pool-size "$POOL_SIZE" --pool-mode transaction "${TLS_ARGS[@]}" ${TIDEPOOL_ARGS:-} # shellcheck disable=SC2086
}

# Stops and starts pooler $1 (a fresh process, for the memory measurements).
restart_pooler() {
    case "$1" in
        tidepool)
            tp_tidepool_stop
            start_tidepool
            ;;
        pgbouncer)
            stop_pgbouncer
            start_pgbouncer "$VERIFIER"
            ;;
    esac
}

# --- pgbench ----------------------------------------------------------------

RUN_NUMBER=0
# pgbench's -T clock starts before its clients have connected (PostgreSQL 15:
# they connect one after another per thread, each with a full SCRAM login),
# while its tps counts only the time after. So each run gets -T = DURATION
# plus 1.3 times the connection time per client that the last run through
# that target took, plus 3 s; tps stays correct, and steady_secs records how
# long was measured.
declare -A LOGIN_MS_PER_CLIENT=([tidepool]=15 [pgbouncer]=15 [direct]=15)

# Runs pgbench against target $4 and records it.
#   $1 kind (workload, latency, scaling)  $2 workload name  $3 round
#   $4 target (tidepool, pgbouncer, direct)  $5 clients  $6 per-transaction
#   log for p99 (log or nolog); the rest are pgbench arguments.
run_pgbench() {
    local kind="$1" workload="$2" round="$3" target="$4" clients="$5" logging="$6"
    shift 6
    local port pid out threads before="" after="" cpu="" sys="" sys_before="" sys_after="" status=0 started wall p99="" log_dir="" tps failed
    local allowance seconds connect_ms steady="" sampler="" rss_before="" rss_peak=""
    port="$(pooler_port "$target")"
    pid="$(pooler_pid "$target")"
    out="raw/$kind-$workload-$target-r$round.txt"
    threads=$((clients < THREADS ? clients : THREADS))
    RUN_NUMBER=$((RUN_NUMBER + 1))
    printf '[%d/%d] %-9s %-22s round %s: ' "$RUN_NUMBER" "$TOTAL_RUNS" "$target" "$workload" "$round"
    local extra=()
    if [ "$logging" = log ]; then
        log_dir="$WORK_DIR/txlog-$RUN_NUMBER"
        mkdir -p "$log_dir"
        extra=(--log "--log-prefix=$log_dir/tx")
    fi
    allowance="$(awk -v n="$clients" -v ms="${LOGIN_MS_PER_CLIENT[$target]}" \
        'BEGIN { s = n * ms * 1.3 / 1000 + 3; printf "%d", (s == int(s) ? s : int(s) + 1) }')"
    seconds=$((DURATION + allowance))
    if [ -n "$pid" ]; then
        before="$(cpu_ticks "$pid")"
        sys_before="$(sys_ticks "$pid")"
    fi
    if [ "$kind" = scaling ] && [ -n "$pid" ]; then
        # The pooler's memory while all these clients work (a high-water mark:
        # what earlier runs left allocated is in it too).
        rss_before="$(rss_kb "$pid")"
        rm -f "$WORK_DIR/peak-rss"
        sample_peak_rss "$pid" "$WORK_DIR/peak-rss" &
        sampler=$!
    fi
    started=$SECONDS
    # In the background so that `wait` lets a Ctrl-C or TERM trap run at once.
    PGPASSWORD="$BENCH_PASSWORD" PGCONNECT_TIMEOUT=30 PGSSLMODE="${RUN_SSLMODE:-disable}" \
        timeout --kill-after=10 $((seconds + 120)) "$PGBENCH" \
        -h 127.0.0.1 -p "$port" -U "$BENCH_USER" -n -c "$clients" -j "$threads" -T "$seconds" \
        "${extra[@]}" "$@" "$BENCH_DB" >"$OUT_DIR/$out" 2>&1 &
    CHILD_PID=$!
    wait "$CHILD_PID" || status=$?
    CHILD_PID=""
    wall=$((SECONDS - started))
    if [ -n "$sampler" ]; then
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
        rss_peak="$(cat "$WORK_DIR/peak-rss" 2>/dev/null || true)"
    fi
    if [ -n "$pid" ]; then
        after="$(cpu_ticks "$pid" 2>/dev/null || true)"
        [ -z "$after" ] || cpu=$((after - before))
        sys_after="$(sys_ticks "$pid" 2>/dev/null || true)"
        [ -z "$sys_after" ] || sys=$((sys_after - sys_before))
    fi
    if [ -n "$log_dir" ]; then
        p99="$("$PYTHON" "$BENCH_DIR/report.py" p99 "$log_dir"/tx.* 2>/dev/null || true)"
        rm -rf "$log_dir"
    fi
    connect_ms="$(sed -n 's/^initial connection time = \([0-9.]*\) ms.*/\1/p' "$OUT_DIR/$out" | head -n 1)"
    if [ -n "$connect_ms" ]; then
        steady="$(awk -v t="$seconds" -v c="$connect_ms" 'BEGIN { printf "%.1f", t - c / 1000 }')"
        if [ "$clients" -ge 20 ]; then
            LOGIN_MS_PER_CLIENT[$target]="$(awk -v c="$connect_ms" -v n="$clients" \
                'BEGIN { v = c / n; printf "%.2f", (v < 2 ? 2 : v) }')"
        fi
    fi
    record kind="$kind" workload="$workload" round="$round" target="$target" clients="$clients" \
        exit="$status" cpu_ticks="$cpu" sys_ticks="$sys" wall_secs="$wall" p99_ms="$p99" pgbench_secs="$seconds" \
        connect_ms="$connect_ms" steady_secs="$steady" rss_before_kb="$rss_before" rss_peak_kb="$rss_peak" \
        out="$out" args="$*"
    tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$OUT_DIR/$out" | head -n 1)"
    failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$OUT_DIR/$out" | head -n 1)"
    printf 'tps=%s failed=%s exit=%s%s%s connect=%ss measured=%ss\n' "${tps:-n/a}" "${failed:-n/a}" \
        "$status" "${p99:+ p99_ms=$p99}" "${cpu:+ cpu_ticks=$cpu}" \
        "$(awk -v c="${connect_ms:-0}" 'BEGIN { printf "%.1f", c / 1000 }')" "${steady:-?}"
    if [ -n "$steady" ] && awk -v s="$steady" -v d="$DURATION" 'BEGIN { exit !(s < d / 2) }'; then
        echo "    warning: only ${steady}s measured after the clients connected (wanted ${DURATION}s)"
    fi
    if [ "$status" -ne 0 ]; then
        grep -m 1 -E 'error|fatal' "$OUT_DIR/$out" | sed 's/^/    /' || true
    fi
}

# --- idle clients and connection storm -----------------------------------------

# Opens $2 idle clients to pooler $1 (restarted first), over TLS when $3 is
# "on", and records its RSS.
measure_idle() {
    local target="$1" count="$2" tls="${3:-off}" pid port base loaded ready status=0 deadline over=""
    [ "$tls" = off ] || over=TLS
    local name="idle-$target-$count${over:+-tls}"
    restart_pooler "$target"
    pid="$(pooler_pid "$target")"
    port="$(pooler_port "$target")"
    # One short pgbench run so that the pool and its server connections exist.
    PGPASSWORD="$BENCH_PASSWORD" timeout 60 "$PGBENCH" -h 127.0.0.1 -p "$port" -U "$BENCH_USER" \
        -n -S -c 4 -j 1 -t 50 "$BENCH_DB" >/dev/null 2>&1 || true
    sleep 1
    base="$(rss_kb "$pid")"
    ready="$WORK_DIR/$name.ready"
    printf 'idle %-4s %-9s %6d clients: ' "$over" "$target" "$count"
    PGPASSWORD="$BENCH_PASSWORD" "$PGCLIENTS" idle --server "127.0.0.1:$port" --user "$BENCH_USER" \
        --database "$BENCH_DB" --count "$count" --concurrency "$IDLE_CONCURRENCY" \
        --ready-file "$ready" --open-timeout-secs 300 --hold-secs 900 --tls "$tls" \
        >"$OUT_DIR/raw/$name.txt" 2>&1 &
    CHILD_PID=$!
    deadline=$((SECONDS + 400))
    while [ ! -f "$ready" ] && kill -0 "$CHILD_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.2
    done
    if [ ! -f "$ready" ]; then
        echo "client did not get ready"
        tp_stop_pid "$CHILD_PID"
        CHILD_PID=""
        record kind=idle target="$target" tls="$tls" count="$count" rss0_kb="$base" rss_kb= opened=0 \
            failed="$count" still_open=0 open_secs= first_error="client did not get ready"
        return 0
    fi
    # Let the pooler finish whatever follows a login before reading its memory.
    sleep 3
    loaded="$(rss_kb "$pid")"
    kill -TERM "$CHILD_PID" 2>/dev/null || true
    wait "$CHILD_PID" || status=$?
    CHILD_PID=""
    local result="$OUT_DIR/raw/$name.txt"
    record kind=idle target="$target" tls="$tls" count="$count" rss0_kb="$base" rss_kb="$loaded" \
        opened="$(value_of "$result" opened)" failed="$(value_of "$result" failed)" \
        still_open="$(value_of "$result" still_open)" open_secs="$(value_of "$result" open_secs)" \
        client_exit="$status" tls_version="$(value_of "$result" tls)" \
        first_error="$(value_of "$result" first_error)"
    printf 'opened=%s failed=%s rss %s -> %s KB (%s KB per client) still_open=%s\n' \
        "$(value_of "$result" opened)" "$(value_of "$result" failed)" "$base" "$loaded" \
        "$(awk -v a="$base" -v b="$loaded" -v n="$(value_of "$result" opened)" \
            'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "n/a" }')" \
        "$(value_of "$result" still_open)"
}

# One connection storm against pooler $1, round $2, over TLS when $3 is "on".
measure_storm() {
    local target="$1" round="$2" tls="${3:-off}" pid port before after status=0 result over=""
    pid="$(pooler_pid "$target")"
    port="$(pooler_port "$target")"
    [ "$tls" = off ] || over=TLS
    result="$OUT_DIR/raw/storm-$target-r$round${over:+-tls}.txt"
    printf 'storm %-3s %-9s round %s: ' "$over" "$target" "$round"
    before="$(cpu_ticks "$pid")"
    PGPASSWORD="$BENCH_PASSWORD" timeout --kill-after=10 $((STORM_SECS + 60)) "$PGCLIENTS" storm \
        --server "127.0.0.1:$port" --user "$BENCH_USER" --database "$BENCH_DB" \
        --secs "$STORM_SECS" --concurrency "$STORM_CONCURRENCY" --tls "$tls" >"$result" 2>&1 &
    CHILD_PID=$!
    wait "$CHILD_PID" || status=$?
    CHILD_PID=""
    after="$(cpu_ticks "$pid")"
    record kind=storm target="$target" tls="$tls" round="$round" exit="$status" cpu_ticks=$((after - before)) \
        ok="$(value_of "$result" ok)" failed="$(value_of "$result" failed)" secs="$(value_of "$result" secs)" \
        rate="$(value_of "$result" rate)" login_p50_ms="$(value_of "$result" login_p50_ms)" \
        login_p99_ms="$(value_of "$result" login_p99_ms)" first_error="$(value_of "$result" first_error)"
    printf 'logins/s=%s ok=%s failed=%s cpu_ticks=%s\n' "$(value_of "$result" rate)" \
        "$(value_of "$result" ok)" "$(value_of "$result" failed)" $((after - before))
    if [ "$(value_of "$result" failed)" != 0 ]; then
        printf '    first error: %s\n' "$(value_of "$result" first_error)"
    fi
}

# --- main -------------------------------------------------------------------

OUT_DIR="${BENCH_OUT:-$BENCH_DIR/out/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT_DIR/raw" "$OUT_DIR/logs"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
: >"$OUT_DIR/runs.tsv"
exec > >(tee -a "$OUT_DIR/run.log") 2>&1
echo "output: $OUT_DIR"

tp_section "setup"
tp_ensure_postgres
ensure_pgbouncer
PGBENCH="$(tp_pg_tool pgbench)"
PYTHON="$(ensure_python)"
TIDEPOOL_BIN="${TIDEPOOL_BIN:-$(tp_build_release)}"
[ -x "$TIDEPOOL_BIN" ] || tp_die "$TIDEPOOL_BIN not found; run cargo build --release"
echo "building bench/pgclients"
(cd "$BENCH_DIR/pgclients" && cargo build --release --quiet \
    --target-dir "${CARGO_TARGET_DIR:-$TP_REPO_ROOT/target}/bench-pgclients") ||
    tp_die "bench/pgclients did not build"
PGCLIENTS="${CARGO_TARGET_DIR:-$TP_REPO_ROOT/target}/bench-pgclients/release/pgclients"

tp_raise_nofile
NOFILE="$(ulimit -n)"
[ "$NOFILE" = unlimited ] && NOFILE=1048576
# Each idle client is one descriptor in the pooler and one in pgclients.
capped_counts=""
for count in $IDLE_COUNTS; do
    if [ "$count" -gt $((NOFILE - 500)) ]; then
        echo "warning: $count idle clients need more open files than $NOFILE; using $((NOFILE - 500))"
        count=$((NOFILE - 500))
    fi
    capped_counts="$capped_counts $count"
done
IDLE_COUNTS="${capped_counts# }"
MAX_CLIENT_CONN=$((NOFILE - 100))

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tidepool-bench.XXXXXX")"
tp_pg_start
tune_postgres
tp_pg_create_user_db "$BENCH_USER" "$BENCH_PASSWORD" "$BENCH_DB"
echo "pgbench -i -s $SCALE (directly on PostgreSQL)"
if ! PGPASSWORD="$BENCH_PASSWORD" timeout 900 "$PGBENCH" -i -s "$SCALE" -q \
    -h 127.0.0.1 -p "$TP_PG_PORT" -U "$BENCH_USER" "$BENCH_DB" >"$OUT_DIR/raw/init.txt" 2>&1; then
    cat "$OUT_DIR/raw/init.txt" >&2
    tp_die "pgbench -i failed"
fi
VERIFIER="$(tp_psql_super -c "SELECT rolpassword FROM pg_authid WHERE rolname = '$BENCH_USER'")"
case "$VERIFIER" in SCRAM-SHA-256\$*) ;; *) tp_die "no SCRAM verifier found for $BENCH_USER" ;; esac

# One self-signed certificate for both poolers' TLS workload (throwaway: the
# key is readable by PgBouncer's user, and removed with WORK_DIR).
TLS_ARGS=()
if command -v openssl >/dev/null 2>&1 &&
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
        -keyout "$WORK_DIR/tls.key" -out "$WORK_DIR/tls.crt" >/dev/null 2>&1; then
    chmod 755 "$WORK_DIR"
    chmod 644 "$WORK_DIR/tls.key" "$WORK_DIR/tls.crt"
    TLS_ARGS=(--tls-cert "$WORK_DIR/tls.crt" --tls-key "$WORK_DIR/tls.key")
    PGB_EXTRA_INI="client_tls_sslmode = allow
client_tls_cert_file = $WORK_DIR/tls.crt
client_tls_key_file = $WORK_DIR/tls.key"
else
    echo "warning: openssl could not make a certificate; the TLS workload is skipped"
fi

start_pgbouncer "$VERIFIER"
start_tidepool
echo "PostgreSQL 127.0.0.1:$TP_PG_PORT, PgBouncer 127.0.0.1:$PGB_PORT (pid $PGB_PID)," \
    "Tidepool 127.0.0.1:$TIDEPOOL_PORT (pid $TP_TIDEPOOL_PID)"

{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "quick=$QUICK"
    echo "nproc=$(nproc)"
    echo "cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "memory=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel=$(uname -sr)"
    echo "os=$(. /etc/os-release 2>/dev/null && printf '%s' "${PRETTY_NAME:-unknown}")"
    echo "postgres=$("$TP_PG_BIN/postgres" --version)"
    echo "pgbench=$("$PGBENCH" --version)"
    echo "pgbouncer=$("$(pgbouncer_bin)" --version 2>&1 | head -n 1)"
    echo "tidepool_rev=$(git -C "$TP_REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
        git -C "$TP_REPO_ROOT" diff --quiet HEAD -- crates src Cargo.toml Cargo.lock 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "tidepool_bin=$TIDEPOOL_BIN"
    echo "rustc=$(rustc --version 2>/dev/null || echo unknown)"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "clk_tck=$(getconf CLK_TCK)"
    echo "rounds=$ROUNDS"
    echo "duration=$DURATION"
    echo "scale=$SCALE"
    echo "pool_size=$POOL_SIZE"
    echo "upstream=$UPSTREAM"
    echo "threads=$THREADS"
    echo "scaling_clients=$SCALING_CLIENTS"
    echo "idle_counts=$IDLE_COUNTS"
    echo "storm_secs=$STORM_SECS"
    echo "storm_concurrency=$STORM_CONCURRENCY"
    echo "nofile=$NOFILE"
} >"$OUT_DIR/machine.txt"
sed 's/^/  /' "$OUT_DIR/machine.txt"

# name|pgbench arguments (clients last, read by the loop below)
WORKLOADS=(
    "select-simple-c50|-S -M simple|50"
    "select-extended-c50|-S -M extended|50"
    "select-prepared-c50|-S -M prepared|50"
    "select-simple-c400|-S -M simple|400"
    "tpcb-c50|-M simple|50"
)
# name|arguments|clients|PGSSLMODE: over TLS, when the poolers were given a certificate.
[ ${#TLS_ARGS[@]} -eq 0 ] || WORKLOADS+=("select-extended-tls-c50|-S -M extended|50|require")
scaling_count=0
for _ in $SCALING_CLIENTS; do scaling_count=$((scaling_count + 1)); done
TOTAL_RUNS=$((ROUNDS * (${#WORKLOADS[@]} * 2 + 3 + scaling_count * 2)))

tp_section "warm-up (not recorded)"
for target in $POOLERS; do
    PGPASSWORD="$BENCH_PASSWORD" timeout 120 "$PGBENCH" -h 127.0.0.1 -p "$(pooler_port "$target")" \
        -U "$BENCH_USER" -n -S -c 50 -j "$THREADS" -T "$WARMUP_SECS" "$BENCH_DB" >"$OUT_DIR/raw/warmup-$target.txt" 2>&1 ||
        echo "warning: warm-up through $target failed (see raw/warmup-$target.txt)"
    echo "$target: $(sed -n 's/^tps = \([0-9.]*\).*/tps=\1/p' "$OUT_DIR/raw/warmup-$target.txt")"
    # What the server connection behind this pooler is, as PostgreSQL sees it.
    echo "$target reaches PostgreSQL over: $(PGPASSWORD="$BENCH_PASSWORD" PGCONNECT_TIMEOUT=10 timeout 30 \
        "$(tp_pg_tool psql)" -X -At -h 127.0.0.1 -p "$(pooler_port "$target")" -U "$BENCH_USER" -d "$BENCH_DB" \
        -c "SELECT coalesce(host(inet_server_addr()) || ' (TCP)', 'a Unix-domain socket')" 2>&1 | head -n 1)"
done

# The targets of round $1, in the order they run: rotated by one each round, so
# that no target always runs first after another workload (or right after the
# writes of TPC-B).
round_order() {
    local round="$1" i
    shift
    local targets=("$@")
    for ((i = 0; i < ${#targets[@]}; i++)); do
        printf '%s ' "${targets[$(((round - 1 + i) % ${#targets[@]}))]}"
    done
}

# Writes out what TPC-B left dirty and vacuums its tables, so that neither a
# checkpoint nor autovacuum lands on the latency runs that follow (the same for
# every target).
settle_postgres() {
    PGCONNECT_TIMEOUT=5 timeout 120 "$(tp_pg_tool psql)" -X -q -v ON_ERROR_STOP=1 \
        -h "$TP_PG_DIR" -p "$TP_PG_PORT" -U postgres -d "$BENCH_DB" \
        -c "VACUUM pgbench_branches, pgbench_tellers, pgbench_history" -c "CHECKPOINT" >/dev/null ||
        echo "warning: could not vacuum and checkpoint before the latency runs"
}

for round in $(seq 1 "$ROUNDS"); do
    tp_section "workloads, round $round of $ROUNDS"
    # shellcheck disable=SC2086 # the target list is split on purpose
    order="$(round_order "$round" $POOLERS)"
    for entry in "${WORKLOADS[@]}"; do
        IFS='|' read -r name arguments clients sslmode <<<"$entry"
        for target in $order; do
            # shellcheck disable=SC2086 # the argument string is split on purpose
            RUN_SSLMODE="${sslmode:-disable}" run_pgbench workload "$name" "$round" "$target" "$clients" nolog $arguments
        done
    done
    tp_section "latency at 1 client, round $round of $ROUNDS"
    settle_postgres
    # shellcheck disable=SC2086
    for target in $(round_order "$round" $POOLERS direct); do
        run_pgbench latency select-simple-c1 "$round" "$target" 1 nolog -S -M simple
    done
    tp_section "scaling, -S -M extended, round $round of $ROUNDS"
    for clients in $SCALING_CLIENTS; do
        for target in $order; do
            run_pgbench scaling "select-extended-c$clients" "$round" "$target" "$clients" log -S -M extended
        done
    done
done

# Clients over TLS too, when the poolers were given a certificate.
CLIENT_TLS_MODES="off"
[ ${#TLS_ARGS[@]} -eq 0 ] || CLIENT_TLS_MODES="off on"

tp_section "idle clients (each pooler restarted before each count)"
for tls in $CLIENT_TLS_MODES; do
    for count in $IDLE_COUNTS; do
        for target in $POOLERS; do
            measure_idle "$target" "$count" "$tls"
        done
    done
done

tp_section "connection storm: $STORM_CONCURRENCY concurrent clients, $STORM_SECS s"
for round in $(seq 1 "$ROUNDS"); do
    for tls in $CLIENT_TLS_MODES; do
        # shellcheck disable=SC2086
        for target in $(round_order "$round" $POOLERS); do
            measure_storm "$target" "$round" "$tls"
        done
    done
done

echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT_DIR/machine.txt"
tp_section "report"
"$PYTHON" "$BENCH_DIR/report.py" report "$OUT_DIR"
echo
cat "$OUT_DIR/results.md"
echo
echo "results: $OUT_DIR/results.md, $OUT_DIR/chart.png"
