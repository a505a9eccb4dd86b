#!/usr/bin/env bash
# Driver matrix: real client drivers, unmodified, through Tidepool in
# transaction mode with more clients (10, pgbench 20) than server connections
# (a pool of 3) in front of a throwaway PostgreSQL.
#
# Installs what is missing, each from its own registry: psycopg 3 and asyncpg
# (PyPI, into drivers/.venv), pg and postgres.js (npm, drivers/node from its
# lock file), pgjdbc (Debian's libpostgresql-jdbc-java, plus a JDK if javac is
# missing), sqlx and tokio-postgres (crates.io, drivers/rust, its own
# workspace). Then runs each driver's checks (drivers/*, at most 300 s each)
# and `pgbench -M prepared -S`, samples the server connections the pooler
# opens, and checks session state that outlives a transaction (LISTEN, a
# session advisory lock, a TEMP table). Then the TLS pass: the same checks of
# every driver, pgbench and the LISTEN check, against a Tidepool started with
# --require-tls, every client verifying its throwaway certificate
# (sslmode=verify-full). Last the Unix-socket pass: every driver that can reach
# a Unix socket (all but pgjdbc), pgbench and the LISTEN check, with PGHOST set
# to the directory of a Tidepool started with --unix-socket-dir.
#
# Prints one line per check and last `N passed, M failed`; exits non-zero if
# any check failed.
# Uses $TIDEPOOL_BIN if set, else builds target/release/tidepool. Tidepool's
# log (RUST_LOG, default tidepool_core=debug) is shown for a failed driver.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

readonly POOL_SIZE=3
readonly DRIVERS_USER=drivers
readonly DRIVERS_PASSWORD=driverspass
readonly DRIVERS_DB=drivers
readonly RUN_TIMEOUT=300
readonly DRIVERS_DIR="$TP_REPO_ROOT/drivers"
readonly VENV="$DRIVERS_DIR/.venv"
readonly RUST_TARGET="$DRIVERS_DIR/rust/target"
readonly JDBC_JAR=/usr/share/java/postgresql.jar

WORK_DIR=""
# Extra environment of every run: the TLS settings in the TLS pass, the socket
# directory in the Unix-socket pass.
PASS_ENV=()
# Appended to each result's name in the TLS pass.
PASS_SUFFIX=""
SAMPLER_PID=""
RUN_PID=""
APT_UPDATED=""
# Why a driver cannot run (install or build failure), by driver name.
declare -A BROKEN=()
# The result lines, printed together at the end.
RESULTS=()
PASSED=0
FAILED=0

cleanup() {
    if [ -n "$RUN_PID" ]; then
        kill "$RUN_PID" 2>/dev/null || true
        wait "$RUN_PID" 2>/dev/null || true
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

# apt-get install, with one apt-get update first per run.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || {
        echo "no apt-get to install $*" >&2
        return 1
    }
    if [ -z "$APT_UPDATED" ]; then
        tp_as_root env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update || return 1
        APT_UPDATED=1
    fi
    tp_as_root env DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y --no-install-recommends "$@"
}

install_python() {
    if [ ! -x "$VENV/bin/python" ]; then
        if ! python3 -m venv "$VENV"; then
            rm -rf "$VENV"
            apt_install python3-venv && python3 -m venv "$VENV" || return 1
        fi
    fi
    # A no-op when the pinned versions are there already.
    timeout 600 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$DRIVERS_DIR/python/requirements.txt"
}

install_node() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm || return 1
    fi
    local marker="$DRIVERS_DIR/node/node_modules/.package-lock.json"
    if [ ! -f "$marker" ] || [ "$DRIVERS_DIR/node/package-lock.json" -nt "$marker" ]; then
        (cd "$DRIVERS_DIR/node" && timeout 600 npm ci --no-audit --no-fund) || return 1
    fi
}

install_java() {
    local packages=()
    command -v javac >/dev/null 2>&1 || packages+=(default-jdk-headless)
    [ -f "$JDBC_JAR" ] || packages+=(libpostgresql-jdbc-java)
    if [ "${#packages[@]}" -gt 0 ]; then
        apt_install "${packages[@]}" || return 1
    fi
    command -v javac >/dev/null 2>&1 && [ -f "$JDBC_JAR" ]
}

build_rust() {
    timeout 1200 cargo build --locked --quiet --manifest-path "$DRIVERS_DIR/rust/Cargo.toml" \
        --target-dir "$RUST_TARGET"
}

# Prints the installed driver versions (for docs/compatibility.md).
print_versions() {
    echo "-- versions"
    "$VENV/bin/python" -c 'import psycopg, asyncpg; print(f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}), asyncpg {asyncpg.__version__}")' 2>/dev/null || true
    # shellcheck disable=SC2016 # JavaScript template strings, not shell
    (cd "$DRIVERS_DIR/node" && node -p 'const v = (p) => JSON.parse(require("fs").readFileSync(`node_modules/${p}/package.json`)).version;
        `node ${process.version}, pg ${v("pg")}, postgres ${v("postgres")}`') 2>/dev/null || true
    printf 'pgjdbc %s, %s\n' "$(dpkg-query -W -f '${Version}' libpostgresql-jdbc-java 2>/dev/null || echo '?')" \
        "$(javac -version 2>&1 || true)"
    sed -n '/^name = "\(sqlx\|tokio-postgres\)"$/{N;s/name = "\(.*\)"\nversion = "\(.*\)"/\1 \2/p}' \
        "$DRIVERS_DIR/rust/Cargo.lock" | paste -sd, - | sed 's/,/, /g'
    "$PGBENCH" --version
}

# Writes a throwaway certificate authority (ca.pem) and a server certificate
# it signed for localhost and 127.0.0.1 (cert.pem, key.pem) into directory $1,
# installing openssl if it is missing. A CA and a leaf, as in production:
# webpki (the Rust drivers' rustls) refuses a self-signed CA certificate as
# the server's own.
make_certificate() {
    local dir="$1"
    mkdir -p "$dir"
    command -v openssl >/dev/null 2>&1 || apt_install openssl || return 1
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$dir/leaf.ext"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Tidepool drivers test CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" >/dev/null 2>&1 &&
        openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
            -keyout "$dir/key.pem" -out "$dir/cert.csr" >/dev/null 2>&1 &&
        openssl x509 -req -in "$dir/cert.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
            -CAcreateserial -days 2 -extfile "$dir/leaf.ext" -out "$dir/cert.pem" >/dev/null 2>&1
}

# Runs an install step; on failure marks the drivers that need it broken.
install_step() {
    local what="$1" step="$2" driver
    shift 2
    echo "-- $what"
    if ! "$step"; then
        echo "!! $what failed" >&2
        for driver in "$@"; do
            BROKEN[$driver]="$what failed (see above)"
        done
    fi
}

# Appends the number of server connections of the drivers user to $1 every
# 0.5 s until killed; "error" when a sample could not be taken.
sample_backends() {
    local out="$1" count
    while :; do
        count="$(tp_psql_super -c "SELECT count(*) FROM pg_stat_activity
            WHERE usename = '$DRIVERS_USER' AND backend_type = 'client backend'" 2>/dev/null)" ||
            count=error
        printf '%s\n' "$count" >>"$out"
        sleep 0.5
    done
}

# Runs a command under the run timeout with the libpq variables pointing at
# Tidepool; its output goes to $1. In the background, so that `wait` lets a
# Ctrl-C or TERM trap run at once.
run_bounded() {
    local output="$1" status=0
    shift
    env -u PGSERVICE -u PGSERVICEFILE -u PGOPTIONS -u PGSSLMODE -u PGSSLROOTCERT \
        PGHOST=127.0.0.1 PGPORT="$TIDEPOOL_PORT" PGUSER="$DRIVERS_USER" \
        PGPASSWORD="$DRIVERS_PASSWORD" PGDATABASE="$DRIVERS_DB" PGCONNECT_TIMEOUT=10 \
        "${PASS_ENV[@]}" timeout --kill-after=10 "$RUN_TIMEOUT" "$@" >"$output" 2>&1 &
    RUN_PID=$!
    wait "$RUN_PID" || status=$?
    RUN_PID=""
    return "$status"
}

record() {
    local verdict="$1" line="$2"
    RESULTS+=("$(printf '%s  %s' "$verdict" "$line")")
    if [ "$verdict" = PASS ]; then
        PASSED=$((PASSED + 1))
    else
        FAILED=$((FAILED + 1))
    fi
}

# Shows what a failed run printed and the end of Tidepool's log.
show_failure() {
    local output="$1"
    echo "  --- output ---"
    tail -n 60 "$output" | sed 's/^/  /'
    echo "  --- tidepool log (last 30 lines of $TP_TIDEPOOL_LOG) ---"
    tail -n 30 "$TP_TIDEPOOL_LOG" 2>/dev/null | sed 's/^/  /' || true
}

# Runs one driver's checks: $1 its name, the rest the command. The command
# prints `ok ...` / `FAIL ...` lines and exits 0 when all passed.
run_driver() {
    local driver="$1" name="$1$PASS_SUFFIX" output status=0 started checks failures elapsed
    shift
    tp_section "$name"
    if [ -n "${BROKEN[$driver]:-}" ]; then
        echo "${BROKEN[$driver]}"
        record FAIL "$(printf '%-15s %s' "$name" "${BROKEN[$driver]}")"
        return
    fi
    output="$WORK_DIR/$name.out"
    started=$SECONDS
    run_bounded "$output" "$@" || status=$?
    elapsed=$((SECONDS - started))
    grep -E '^(ok|FAIL) ' "$output" || true
    checks="$(grep -cE '^(ok|FAIL) ' "$output" || true)"
    failures="$(grep -cE '^FAIL ' "$output" || true)"
    if [ "$status" -eq 0 ] && [ "$failures" -eq 0 ] && [ "$checks" -gt 0 ]; then
        record PASS "$(printf '%-15s %s checks passed in %s s' "$name" "$checks" "$elapsed")"
        return
    fi
    show_failure "$output"
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        record FAIL "$(printf '%-15s timed out after %s s' "$name" "$RUN_TIMEOUT")"
    elif [ "$failures" -gt 0 ]; then
        record FAIL "$(printf '%-15s %s of %s checks failed, first: %s' "$name" "$failures" "$checks" \
            "$(grep -m 1 -E '^FAIL ' "$output" | cut -c6- | cut -c1-300)")"
    else
        record FAIL "$(printf '%-15s exited with status %s' "$name" "$status")"
    fi
}

# pgbench -M prepared -S through the pooler: exit 0 and no failed transaction.
run_pgbench() {
    local name="pgbench$PASS_SUFFIX" output="$WORK_DIR/pgbench$PASS_SUFFIX.out" status=0 processed failed
    tp_section "pgbench -M prepared$PASS_SUFFIX"
    run_bounded "$output" "$PGBENCH" -n -M prepared -S -c 20 -j 2 -T 5 || status=$?
    grep -E '^(number of|latency average|tps)' "$output" || true
    processed="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$output")"
    failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$output")"
    if [ "$status" -eq 0 ] && [ "${processed:-0}" -gt 0 ] && [ "${failed:-0}" -eq 0 ]; then
        record PASS "$(printf '%-15s %s transactions by 20 clients, 0 failed' "$name" "$processed")"
    else
        show_failure "$output"
        record FAIL "$(printf '%-15s exit %s, %s transactions, %s failed' "$name" "$status" \
            "${processed:-no}" "${failed:-unknown}")"
    fi
}

# Session state that outlives a transaction (once known gaps, now counted):
# $1 the check's name in known_gaps.py.
run_state_check() {
    local check="$1" name="$1$PASS_SUFFIX" output="$WORK_DIR/state-$1$PASS_SUFFIX.out" status=0
    if [ -n "${BROKEN[psycopg]:-}" ]; then
        record FAIL "$(printf '%-15s not run (%s)' "$name" "${BROKEN[psycopg]}")"
        return
    fi
    run_bounded "$output" "$VENV/bin/python" "$DRIVERS_DIR/python/known_gaps.py" "$check" || status=$?
    if [ "$status" -eq 0 ] && grep -q '^ok ' "$output"; then
        record PASS "$(printf '%-15s %s' "$name" "$(grep -m 1 '^ok ' "$output" | cut -c4-)")"
    elif [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        record FAIL "$(printf '%-15s timed out after %s s' "$name" "$RUN_TIMEOUT")"
    else
        show_failure "$output"
        record FAIL "$(printf '%-15s %s' "$name" "$(grep -m 1 '^FAIL ' "$output" | cut -c6- | cut -c1-300 || echo "exit $status")")"
    fi
}

# Every driver's checks and pgbench, against $TIDEPOOL_PORT (pgjdbc's check is
# compiled into $WORK_DIR/pgjdbc-classes; again in the TLS pass, harmlessly).
run_every_driver() {
    run_driver psycopg "$VENV/bin/python" "$DRIVERS_DIR/python/psycopg_check.py"
    run_driver asyncpg "$VENV/bin/python" "$DRIVERS_DIR/python/asyncpg_check.py"
    run_driver node-postgres node "$DRIVERS_DIR/node/pg_check.js"
    run_driver postgres.js node "$DRIVERS_DIR/node/postgresjs_check.js"
    # pgjdbc reaches no Unix socket by itself (it needs junixsocket).
    if [ "$PASS_SUFFIX" != -unix ]; then
        # shellcheck disable=SC2016 # expanded by the inner bash, from its arguments
        run_driver pgjdbc bash -c 'javac -d "$1" -cp "$2" "$3" && exec java -cp "$1:$2" DriverCheck' \
            javac "$WORK_DIR/pgjdbc-classes" "$JDBC_JAR" "$DRIVERS_DIR/pgjdbc/DriverCheck.java"
    fi
    run_driver sqlx "$RUST_TARGET/debug/tidepool-driver-tests" sqlx
    run_driver tokio-postgres "$RUST_TARGET/debug/tidepool-driver-tests" tokio-postgres
    run_pgbench
}

tp_section "Install missing drivers"
STARTED=$SECONDS
tp_ensure_postgres
install_step "python venv: psycopg 3, asyncpg (PyPI)" install_python psycopg asyncpg
install_step "node: pg, postgres (npm ci)" install_node node-postgres postgres.js
install_step "java: javac, pgjdbc (Debian)" install_java pgjdbc
install_step "rust: sqlx, tokio-postgres (crates.io, cargo build)" build_rust sqlx tokio-postgres

PGBENCH="$(tp_pg_tool pgbench)"
print_versions
TIDEPOOL_BIN="${TIDEPOOL_BIN:-$(tp_build_release)}"
[ -x "$TIDEPOOL_BIN" ] || tp_die "$TIDEPOOL_BIN not found; run cargo build --release"
INSTALL_SECONDS=$((SECONDS - STARTED))

tp_section "Start PostgreSQL and Tidepool"
WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tidepool-drivers.XXXXXX")"
tp_pg_start
tp_pg_create_user_db "$DRIVERS_USER" "$DRIVERS_PASSWORD" "$DRIVERS_DB"
if ! PGPASSWORD="$DRIVERS_PASSWORD" timeout 300 "$PGBENCH" -i -s 1 -q \
    -h 127.0.0.1 -p "$TP_PG_PORT" -U "$DRIVERS_USER" "$DRIVERS_DB" >"$WORK_DIR/pgbench-init.out" 2>&1; then
    cat "$WORK_DIR/pgbench-init.out" >&2
    tp_die "pgbench -i failed (directly on PostgreSQL)"
fi
TIDEPOOL_PORT="$(tp_free_port)"
RUST_LOG="${RUST_LOG:-tidepool_core=debug}" tp_tidepool_start "$TIDEPOOL_BIN" "$TIDEPOOL_PORT" \
    "$WORK_DIR/tidepool.log" \
    --upstream "postgres://$DRIVERS_USER:$DRIVERS_PASSWORD@127.0.0.1:$TP_PG_PORT/$DRIVERS_DB" \
    --pool-size "$POOL_SIZE" --pool-mode transaction
echo "tidepool on 127.0.0.1:$TIDEPOOL_PORT: pool size $POOL_SIZE, transaction mode"

SAMPLES="$WORK_DIR/backends.samples"
: >"$SAMPLES"
sample_backends "$SAMPLES" &
SAMPLER_PID=$!

run_every_driver

kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
max_seen="$(grep -E '^[0-9]+$' "$SAMPLES" | sort -n | tail -n 1)"
if grep -q error "$SAMPLES" || [ -z "$max_seen" ]; then
    record FAIL "$(printf '%-15s could not sample pg_stat_activity' 'server conns')"
elif [ "$max_seen" -le "$POOL_SIZE" ]; then
    record PASS "$(printf '%-15s at most %s seen by PostgreSQL (pool size %s)' 'server conns' "$max_seen" "$POOL_SIZE")"
else
    record FAIL "$(printf '%-15s %s seen by PostgreSQL, pool size is %s' 'server conns' "$max_seen" "$POOL_SIZE")"
fi

# Last: a client pinned by session state must not disturb the other runs.
tp_section "Session state across transactions (LISTEN, advisory lock, temp table)"
for check in listen advisory-lock temp-table; do
    run_state_check "$check"
done

# The TLS pass: a Tidepool that refuses clients without TLS (so a pass is a
# pass over TLS), and clients that check its certificate (verify-full against
# the throwaway CA; the certificate names localhost and 127.0.0.1).
tp_section "Over TLS: a Tidepool with --require-tls, clients with sslmode=verify-full"
tp_tidepool_stop
TIDEPOOL_PORT="$(tp_free_port)"
if ! make_certificate "$WORK_DIR/tls"; then
    record FAIL "$(printf '%-15s openssl could not make a certificate' 'TLS pass')"
elif ! RUST_LOG="${RUST_LOG:-tidepool_core=debug}" tp_tidepool_try_start "$TIDEPOOL_BIN" \
    "$TIDEPOOL_PORT" "$WORK_DIR/tidepool-tls.log" \
    --upstream "postgres://$DRIVERS_USER:$DRIVERS_PASSWORD@127.0.0.1:$TP_PG_PORT/$DRIVERS_DB" \
    --pool-size "$POOL_SIZE" --pool-mode transaction \
    --tls-cert "$WORK_DIR/tls/cert.pem" --tls-key "$WORK_DIR/tls/key.pem" --require-tls; then
    record FAIL "$(printf '%-15s %s' 'TLS pass' "$TP_TIDEPOOL_FAILURE")"
else
    echo "tidepool on 127.0.0.1:$TIDEPOOL_PORT: TLS required, pool size $POOL_SIZE, transaction mode"
    PASS_ENV=(PGSSLMODE=verify-full PGSSLROOTCERT="$WORK_DIR/tls/ca.pem"
        NODE_EXTRA_CA_CERTS="$WORK_DIR/tls/ca.pem")
    PASS_SUFFIX="-tls"
    run_every_driver
    run_state_check listen
fi

# The Unix-socket pass: clients find Tidepool's socket file from a directory and
# a port, as they find Postgres's.
tp_section "Over Tidepool's Unix socket: a Tidepool with --unix-socket-dir, PGHOST the directory"
tp_tidepool_stop
TIDEPOOL_PORT="$(tp_free_port)"
SOCKET_DIR="$WORK_DIR/socket"
mkdir -p "$SOCKET_DIR"
PASS_ENV=()
# Debug logging whatever RUST_LOG says: each login's line names its transport.
if ! RUST_LOG=tidepool_core=debug tp_tidepool_try_start "$TIDEPOOL_BIN" \
    "$TIDEPOOL_PORT" "$WORK_DIR/tidepool-unix.log" \
    --upstream "postgres://$DRIVERS_USER:$DRIVERS_PASSWORD@127.0.0.1:$TP_PG_PORT/$DRIVERS_DB" \
    --pool-size "$POOL_SIZE" --pool-mode transaction --unix-socket-dir "$SOCKET_DIR"; then
    record FAIL "$(printf '%-15s %s' 'Unix pass' "$TP_TIDEPOOL_FAILURE")"
else
    echo "tidepool on $SOCKET_DIR/.s.PGSQL.$TIDEPOOL_PORT: pool size $POOL_SIZE, transaction mode"
    PASS_ENV=(PGHOST="$SOCKET_DIR")
    PASS_SUFFIX="-unix"
    run_every_driver
    run_state_check listen
    # A driver that ignored the directory would have reached the TCP port.
    unix_logins="$(grep 'client logged in' "$WORK_DIR/tidepool-unix.log" | grep -c 'peer=unix' || true)"
    tcp_logins="$(grep 'client logged in' "$WORK_DIR/tidepool-unix.log" | grep -vc 'peer=unix' || true)"
    if [ "$unix_logins" -gt 0 ] && [ "$tcp_logins" -eq 0 ]; then
        record PASS "$(printf '%-15s %s logins, all through the socket file' 'unix transport' "$unix_logins")"
    else
        record FAIL "$(printf '%-15s %s logins through the socket file, %s over TCP' 'unix transport' \
            "$unix_logins" "$tcp_logins")"
    fi
fi

tp_section "Results"
echo "install and build: ${INSTALL_SECONDS} s; runs: $((SECONDS - STARTED - INSTALL_SECONDS)) s"
printf '%s\n' "${RESULTS[@]}"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
