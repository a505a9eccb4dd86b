#!/usr/bin/env bash
# PgBouncer for the benchmarks (bench/run.sh, bench/callgrind.sh): installed from
# the distribution's package when missing, started on loopback with a SCRAM
# auth file, stopped. Sourced after scripts/lib.sh; the caller sets BENCH_USER,
# BENCH_DB and POOL_SIZE (and MAX_CLIENT_CONN, PGB_PORT, OUT_DIR and
# PGB_EXTRA_INI, lines added to the [pgbouncer] section, if it wants).

PGB_DIR="${PGB_DIR:-}"
PGB_PID="${PGB_PID:-}"

ensure_pgbouncer() {
    if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || tp_die "pgbouncer is missing and there is no apt-get: install it by hand"
    echo "installing: pgbouncer"
    tp_as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    tp_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y pgbouncer
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || tp_die "pgbouncer still not found after installing"
}

pgbouncer_bin() {
    command -v pgbouncer 2>/dev/null || printf '/usr/sbin/pgbouncer\n'
}

# Starts PgBouncer for $BENCH_USER (SCRAM verifier $1) on $BENCH_DB at
# PostgreSQL's $TP_PG_PORT (over 127.0.0.1, or over the Unix-domain socket in
# $TP_PG_DIR when UPSTREAM is "unix"), in transaction mode with $POOL_SIZE servers, on
# $PGB_PORT (a free port when unset); sets PGB_PID and PGB_DIR. Any further
# arguments are a command PgBouncer runs under (valgrind, for one), so PGB_PID is
# that command's.
start_pgbouncer() {
    local verifier="$1" deadline
    shift
    local wrapper=("$@")
    PGB_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tidepool-bench-pgbouncer.XXXXXX")"
    [ -n "${PGB_PORT:-}" ] || PGB_PORT="$(tp_free_port)"
    printf '"%s" "%s"\n' "$BENCH_USER" "$verifier" >"$PGB_DIR/userlist.txt"
    cat >"$PGB_DIR/pgbouncer.ini" <<EOF
[databases]
$BENCH_DB = host=$([ "${UPSTREAM:-tcp}" = unix ] && printf '%s' "$TP_PG_DIR" || printf 127.0.0.1) port=$TP_PG_PORT dbname=$BENCH_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $PGB_DIR/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = ${MAX_CLIENT_CONN:-1000}
logfile = $PGB_DIR/pgbouncer.log
pidfile = $PGB_DIR/pgbouncer.pid
${PGB_EXTRA_INI:-}
EOF
    chmod 600 "$PGB_DIR/userlist.txt"
    # PgBouncer refuses to run as root; setpriv execs it as postgres, so $!
    # is PgBouncer itself (its CPU and memory are read from /proc/$!).
    if tp_is_root; then
        chown -R postgres: "$PGB_DIR"
        (cd / && exec setpriv --reuid=postgres --regid=postgres --init-groups -- \
            "${wrapper[@]}" "$(pgbouncer_bin)" "$PGB_DIR/pgbouncer.ini") >"$PGB_DIR/stderr.log" 2>&1 &
    else
        "${wrapper[@]}" "$(pgbouncer_bin)" "$PGB_DIR/pgbouncer.ini" >"$PGB_DIR/stderr.log" 2>&1 &
    fi
    PGB_PID=$!
    if ! tp_wait_port "$PGB_PORT" 60 "$PGB_PID"; then
        tail -n 30 "$PGB_DIR/pgbouncer.log" "$PGB_DIR/stderr.log" >&2 2>/dev/null || true
        tp_die "PgBouncer did not listen on 127.0.0.1:$PGB_PORT"
    fi
    [ ${#wrapper[@]} -eq 0 ] || return 0
    deadline=$((SECONDS + 5))
    while [ "$(cat "/proc/$PGB_PID/comm" 2>/dev/null)" != pgbouncer ] && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.1
    done
    [ "$(cat "/proc/$PGB_PID/comm" 2>/dev/null)" = pgbouncer ] || tp_die "process $PGB_PID is not pgbouncer"
}

# Stops PgBouncer; its log is kept in $OUT_DIR/logs when that folder exists.
stop_pgbouncer() {
    tp_stop_pid "$PGB_PID"
    PGB_PID=""
    if [ -n "$PGB_DIR" ] && [ -d "$PGB_DIR" ]; then
        if [ -n "${OUT_DIR:-}" ] && [ -d "$OUT_DIR/logs" ]; then
            cat "$PGB_DIR/pgbouncer.log" >>"$OUT_DIR/logs/pgbouncer.log" 2>/dev/null || true
        fi
        rm -rf "$PGB_DIR"
    fi
    PGB_DIR=""
}

