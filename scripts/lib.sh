# shellcheck shell=bash
# Shared helpers for scripts/test.sh, scripts/pgbench-check.sh and
# scripts/demo.sh; source it, don't run it.
#
# It owns: installing PostgreSQL when it is missing, finding its binaries,
# starting and stopping a throwaway server (initdb into a temp dir, 127.0.0.1
# only, a free port, SCRAM for TCP logins, trust on its private unix socket),
# and starting and stopping the tidepool binary. Every wait is bounded.
#
# initdb and postgres refuse to run as root, so as root they run as the
# `postgres` OS user (the Debian package creates it).

TP_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# State of the throwaway server and the tidepool process, for the stop
# functions (safe to call from a trap whether or not the start happened).
TP_PG_DIR=""
TP_PG_DATA=""
TP_PG_LOG=""
TP_PG_PORT=""
TP_PG_BIN=""
TP_TIDEPOOL_PID=""
TP_TIDEPOOL_LOG=""

tp_section() {
    printf '\n==== %s ====\n' "$*"
}

tp_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

tp_is_root() {
    [ "$(id -u)" -eq 0 ]
}

# Runs a command as root: directly when we are root, else through sudo.
tp_as_root() {
    if tp_is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        tp_die "need root (or sudo) to run: $*"
    fi
}

# Runs a server-side command (initdb, pg_ctl) as the postgres OS user when we
# are root, from / so the working directory is always enterable.
tp_as_pg() {
    if tp_is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# Prints the directory with initdb/pg_ctl/postgres, or fails:
# $TIDEPOOL_PG_BIN, else `pg_config --bindir`, else the newest
# /usr/lib/postgresql/*/bin, else wherever initdb on PATH really lives.
tp_pg_bindir() {
    local dir version newest="" newest_version=0
    if [ -n "${TIDEPOOL_PG_BIN:-}" ]; then
        [ -x "$TIDEPOOL_PG_BIN/initdb" ] || return 1
        printf '%s\n' "$TIDEPOOL_PG_BIN"
        return 0
    fi
    if command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null || true)"
        if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
            printf '%s\n' "$dir"
            return 0
        fi
    fi
    for dir in /usr/lib/postgresql/*/bin; do
        version="${dir#/usr/lib/postgresql/}"
        version="${version%/bin}"
        case "$version" in '' | *[!0-9]*) continue ;; esac
        if [ -x "$dir/initdb" ] && [ "$version" -gt "$newest_version" ]; then
            newest_version="$version"
            newest="$dir"
        fi
    done
    if [ -n "$newest" ]; then
        printf '%s\n' "$newest"
        return 0
    fi
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    return 1
}

# Prints the path of a client tool (psql, pgbench): the server's own version
# if it has one, else the one on PATH; fails if there is none.
tp_pg_tool() {
    local name="$1" dir
    if dir="$(tp_pg_bindir)" && [ -x "$dir/$name" ]; then
        printf '%s\n' "$dir/$name"
    else
        command -v "$name"
    fi
}

# Installs PostgreSQL (server, psql, pgbench) with apt-get if any is missing.
# Idempotent: does nothing when all are there.
tp_ensure_postgres() {
    local packages=()
    tp_pg_bindir >/dev/null || packages+=(postgresql postgresql-contrib)
    tp_pg_tool psql >/dev/null || packages+=(postgresql-client)
    tp_pg_tool pgbench >/dev/null || packages+=(postgresql-contrib)
    if [ "${#packages[@]}" -eq 0 ]; then
        echo "PostgreSQL found in $(tp_pg_bindir); psql and pgbench found"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 ||
        tp_die "PostgreSQL is missing and there is no apt-get: install ${packages[*]} by hand, or set TIDEPOOL_PG_BIN"
    echo "installing: ${packages[*]}"
    tp_as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    tp_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}"
    tp_pg_bindir >/dev/null || tp_die "PostgreSQL server binaries (initdb) still not found after installing"
    tp_pg_tool psql >/dev/null || tp_die "psql still not found after installing"
    tp_pg_tool pgbench >/dev/null || tp_die "pgbench still not found after installing"
}

# Installs the Debian packages named like the commands given (curl, openssl, ...)
# for those that are missing.
tp_ensure_commands() {
    local missing=() name
    for name in "$@"; do
        command -v "$name" >/dev/null 2>&1 || missing+=("$name")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || tp_die "missing commands: ${missing[*]}; install them by hand"
    echo "installing: ${missing[*]}"
    tp_as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    tp_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

# Prints an HS256 JSON Web Token signed with secret $1, valid for $2 seconds.
tp_jwt() {
    local header payload signature
    b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
    header="$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)"
    payload="$(printf '{"role":"admin","exp":%d}' "$(($(date +%s) + $2))" | b64url)"
    signature="$(printf '%s.%s' "$header" "$payload" |
        openssl dgst -sha256 -hmac "$1" -binary | b64url)"
    printf '%s.%s.%s\n' "$header" "$payload" "$signature"
}

# Succeeds if something accepts TCP connections on 127.0.0.1:$1.
tp_port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints a TCP port on 127.0.0.1 that nothing listens on right now.
tp_free_port() {
    local port attempt low=32768 base=20000 span=40000
    # Stay below the kernel's ephemeral range: a port there may be the local end
    # of some outgoing connection, which no accept test sees, and binding it then
    # fails with "Address already in use".
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    if [ "$low" -gt 12000 ]; then
        base=10000
        span=$((low - 10000))
    fi
    for attempt in $(seq 1 200); do
        port=$((base + RANDOM % span))
        if ! tp_port_in_use "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    tp_die "no free TCP port found after $attempt tries"
}

# Waits until 127.0.0.1:$1 accepts TCP, for at most $2 seconds; if $3 is a
# pid, fails early when that process exits.
tp_wait_port() {
    local port="$1" timeout="$2" pid="${3:-}" deadline
    deadline=$((SECONDS + timeout))
    while ! tp_port_in_use "$port"; do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# Raises the open-files soft limit to the hard limit (many clients, many fds).
tp_raise_nofile() {
    local hard
    hard="$(ulimit -Hn)"
    if ulimit -n "$hard" 2>/dev/null; then
        echo "open files limit: $(ulimit -n)"
    else
        echo "warning: could not raise the open files limit to $hard; it stays $(ulimit -n)" >&2
    fi
}

# Starts a throwaway PostgreSQL; sets TP_PG_DIR, TP_PG_DATA, TP_PG_LOG,
# TP_PG_PORT and TP_PG_BIN. The superuser is postgres/postgres.
tp_pg_start() {
    local base attempt
    TP_PG_BIN="$(tp_pg_bindir)" || tp_die "no PostgreSQL server binaries found (run scripts/test.sh to install them)"
    base="${TMPDIR:-/tmp}"
    if tp_is_root; then
        id postgres >/dev/null 2>&1 || tp_die "running as root but there is no postgres OS user"
        # The postgres user must be able to reach its data directory.
        runuser -u postgres -- test -x "$base" 2>/dev/null || base=/tmp
    fi
    TP_PG_DIR="$(mktemp -d "$base/tidepool-pg.XXXXXX")"
    TP_PG_DATA="$TP_PG_DIR/data"
    TP_PG_LOG="$TP_PG_DIR/postgres.log"
    printf 'postgres' >"$TP_PG_DIR/password"
    if tp_is_root; then
        chown -R postgres: "$TP_PG_DIR"
    fi

    if ! tp_as_pg "$TP_PG_BIN/initdb" -D "$TP_PG_DATA" --username=postgres \
        --pwfile="$TP_PG_DIR/password" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C --no-sync --no-instructions >"$TP_PG_DIR/initdb.log" 2>&1; then
        cat "$TP_PG_DIR/initdb.log" >&2
        tp_die "initdb failed"
    fi
    rm -f "$TP_PG_DIR/password"
    cat >>"$TP_PG_DATA/postgresql.conf" <<EOF
# --- tidepool throwaway server ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TP_PG_DIR'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
include_if_exists = 'instance.conf'
EOF
    cat >"$TP_PG_DATA/pg_hba.conf" <<EOF
local all all trust
host all all 127.0.0.1/32 scram-sha-256
EOF

    for attempt in 1 2 3 4 5; do
        TP_PG_PORT="$(tp_free_port)"
        printf 'port = %s\n' "$TP_PG_PORT" >"$TP_PG_DATA/instance.conf"
        if tp_as_pg "$TP_PG_BIN/pg_ctl" start --wait --timeout=60 --silent \
            -D "$TP_PG_DATA" -l "$TP_PG_LOG" >/dev/null; then
            echo "PostgreSQL $("$TP_PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$TP_PG_PORT (data in $TP_PG_DATA)"
            return 0
        fi
        if ! grep -qE 'could not bind|already in use' "$TP_PG_LOG" 2>/dev/null; then
            break
        fi
    done
    tail -n 40 "$TP_PG_LOG" >&2 || true
    tp_die "PostgreSQL did not start"
}

# Stops the throwaway server (immediate mode) and removes its directory.
tp_pg_stop() {
    local pid
    if [ -n "$TP_PG_DATA" ] && [ -f "$TP_PG_DATA/postmaster.pid" ]; then
        if ! tp_as_pg "$TP_PG_BIN/pg_ctl" stop --mode=immediate --wait --timeout=20 \
            --silent -D "$TP_PG_DATA" >/dev/null 2>&1; then
            pid="$(head -n 1 "$TP_PG_DATA/postmaster.pid" 2>/dev/null || true)"
            [ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    if [ -n "$TP_PG_DIR" ]; then
        rm -rf "$TP_PG_DIR"
    fi
    TP_PG_DIR=""
    TP_PG_DATA=""
}

# psql as the superuser over the server's private unix socket (trust).
tp_psql_super() {
    PGCONNECT_TIMEOUT=5 timeout 30 "$(tp_pg_tool psql)" -X -q -A -t -v ON_ERROR_STOP=1 \
        -h "$TP_PG_DIR" -p "$TP_PG_PORT" -U postgres -d postgres "$@"
}

# Creates LOGIN role $1 with SCRAM password $2 and database $3 owned by it.
tp_pg_create_user_db() {
    tp_psql_super -v user="$1" -v password="$2" -v db="$3" >/dev/null <<'EOF'
SET password_encryption = 'scram-sha-256';
CREATE ROLE :"user" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"user";
EOF
}

# Builds target/release/tidepool (a no-op when up to date) and prints its path.
tp_build_release() {
    (cd "$TP_REPO_ROOT" && cargo build --release --bin tidepool) >&2 || return 1
    printf '%s\n' "${CARGO_TARGET_DIR:-$TP_REPO_ROOT/target}/release/tidepool"
}

# Starts tidepool: $1 binary, $2 listen port, $3 log file, the rest its
# arguments after `--listen 127.0.0.1:PORT`. Sets TP_TIDEPOOL_PID and waits
# (at most 15 s) until the port accepts TCP.
tp_tidepool_start() {
    tp_tidepool_try_start "$@" || tp_die "$TP_TIDEPOOL_FAILURE"
}

# tp_tidepool_start, but on failure it returns 1 with the reason in
# TP_TIDEPOOL_FAILURE (the process stopped) instead of exiting.
tp_tidepool_try_start() {
    local binary="$1" port="$2"
    TP_TIDEPOOL_LOG="$3"
    shift 3
    if [ ! -x "$binary" ]; then
        TP_TIDEPOOL_FAILURE="$binary not found; build it with cargo build --release"
        return 1
    fi
    "$binary" --listen "127.0.0.1:$port" "$@" >"$TP_TIDEPOOL_LOG" 2>&1 &
    TP_TIDEPOOL_PID=$!
    if ! tp_wait_port "$port" 15 "$TP_TIDEPOOL_PID"; then
        echo "--- tidepool log ($TP_TIDEPOOL_LOG) ---" >&2
        tail -n 40 "$TP_TIDEPOOL_LOG" >&2 || true
        if kill -0 "$TP_TIDEPOOL_PID" 2>/dev/null; then
            TP_TIDEPOOL_FAILURE="tidepool did not listen on 127.0.0.1:$port within 15 s"
        else
            TP_TIDEPOOL_FAILURE="tidepool exited before listening on 127.0.0.1:$port"
        fi
        tp_tidepool_stop
        return 1
    fi
}

# Stops process $1 (a child of this shell, or none when empty): SIGTERM, then
# SIGKILL after 10 s.
tp_stop_pid() {
    local pid="$1" deadline
    [ -n "$pid" ] || return 0
    if kill -TERM "$pid" 2>/dev/null; then
        deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# Stops tidepool: SIGTERM, then SIGKILL after 10 s.
tp_tidepool_stop() {
    tp_stop_pid "$TP_TIDEPOOL_PID"
    TP_TIDEPOOL_PID=""
}
