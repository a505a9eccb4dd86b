#!/usr/bin/env bash
# Demo: a throwaway PostgreSQL with user demo/demo and database demo, and
# Tidepool in front of it on 127.0.0.1:6432 (or a free port if that is
# taken), transaction pooling, pool size 10. Prints the psql line to
# connect, then runs until Ctrl-C and cleans everything up.
#
# Uses $TIDEPOOL_BIN if set, else builds target/release/tidepool.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly DEMO_USER=demo
readonly DEMO_PASSWORD=demo
readonly DEMO_DB=demo
readonly POOL_SIZE=10
readonly PREFERRED_PORT=6432

WORK_DIR=""

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    echo
    echo "stopping tidepool and PostgreSQL"
    tp_tidepool_stop
    tp_pg_stop
    if [ -n "$WORK_DIR" ]; then
        rm -rf "$WORK_DIR"
    fi
}

tp_section "PostgreSQL"
tp_ensure_postgres

if [ -z "${TIDEPOOL_BIN:-}" ]; then
    tp_section "Build tidepool (release)"
    TIDEPOOL_BIN="$(tp_build_release)"
fi

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tp_section "Start PostgreSQL and Tidepool"
WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tidepool-demo.XXXXXX")"
tp_pg_start
tp_pg_create_user_db "$DEMO_USER" "$DEMO_PASSWORD" "$DEMO_DB"

port="$PREFERRED_PORT"
if tp_port_in_use "$port"; then
    port="$(tp_free_port)"
    echo "127.0.0.1:$PREFERRED_PORT is taken; using $port"
fi
tp_tidepool_start "$TIDEPOOL_BIN" "$port" "$WORK_DIR/tidepool.log" \
    --upstream "postgres://$DEMO_USER:$DEMO_PASSWORD@127.0.0.1:$TP_PG_PORT/$DEMO_DB" \
    --pool-size "$POOL_SIZE" --pool-mode transaction

cat <<EOF

Tidepool listens on 127.0.0.1:$port (transaction pooling, pool size $POOL_SIZE),
in front of PostgreSQL on 127.0.0.1:$TP_PG_PORT.

Connect through Tidepool with:

    psql "postgres://$DEMO_USER:$DEMO_PASSWORD@127.0.0.1:$port/$DEMO_DB"

Tidepool log:   $TP_TIDEPOOL_LOG
PostgreSQL log: $TP_PG_LOG

Press Ctrl-C to stop.
EOF

# `wait` returns early when a trapped signal arrives, so Ctrl-C is prompt.
status=0
wait "$TP_TIDEPOOL_PID" || status=$?
TP_TIDEPOOL_PID=""
echo "tidepool exited by itself (status $status); last lines of its log:" >&2
tail -n 20 "$WORK_DIR/tidepool.log" >&2 || true
exit 1
