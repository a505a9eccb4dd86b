#!/usr/bin/env bash
# Demo: a throwaway PostgreSQL with user demo/demo and database demo, and
# Tidepool in front of it on 127.0.0.1:6432 (or a free port if that is
# taken), with its management API on 127.0.0.1:4000 (or a free port) and a
# metadata store in the same PostgreSQL. Creates tenant "demo" (transaction
# pooling, pool size 10) through the API, prints how to connect and the one
# curl line that adds another tenant, then runs until Ctrl-C and cleans
# everything up.
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
readonly PREFERRED_API_PORT=4000

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
tp_ensure_commands curl openssl

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

tp_psql_super -c "CREATE DATABASE tidepool_meta" >/dev/null

port="$PREFERRED_PORT"
if tp_port_in_use "$port"; then
    port="$(tp_free_port)"
    echo "127.0.0.1:$PREFERRED_PORT is taken; using $port"
fi
api_port="$PREFERRED_API_PORT"
if tp_port_in_use "$api_port"; then
    api_port="$(tp_free_port)"
    echo "127.0.0.1:$PREFERRED_API_PORT is taken; the API uses $api_port"
fi
API_JWT_SECRET="$(head -c 32 /dev/urandom | base64)"
TIDEPOOL_ENCRYPTION_KEY="$(head -c 32 /dev/urandom | base64)"
TIDEPOOL_ADMIN_PASSWORD="$(head -c 12 /dev/urandom | base64 | tr -d '/+=')"
export API_JWT_SECRET TIDEPOOL_ENCRYPTION_KEY TIDEPOOL_ADMIN_PASSWORD
SOCKET_DIR="$WORK_DIR/socket"
mkdir -p "$SOCKET_DIR"
tp_tidepool_start "$TIDEPOOL_BIN" "$port" "$WORK_DIR/tidepool.log" \
    --metadata-url "postgres://postgres:postgres@127.0.0.1:$TP_PG_PORT/tidepool_meta" \
    --api-listen "127.0.0.1:$api_port" --unix-socket-dir "$SOCKET_DIR" --admin-user admin
tp_wait_port "$api_port" 15 "$TP_TIDEPOOL_PID" || tp_die "the API did not listen on 127.0.0.1:$api_port"

token="$(tp_jwt "$API_JWT_SECRET" 86400)"
tenant_json() {
    printf '{"tenant":{"db_host":"127.0.0.1","db_port":%s,"db_database":"%s","default_pool_size":%s,"users":[{"db_user":"%s","db_password":"%s","mode_type":"transaction"}]}}' \
        "$TP_PG_PORT" "$DEMO_DB" "$POOL_SIZE" "$DEMO_USER" "$DEMO_PASSWORD"
}
curl -fsS -o /dev/null -X PUT "http://127.0.0.1:$api_port/api/tenants/demo" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "$(tenant_json)" || tp_die "creating tenant demo through the API failed"

cat <<EOF

Tidepool listens on 127.0.0.1:$port, in front of PostgreSQL on 127.0.0.1:$TP_PG_PORT.
Its management API listens on 127.0.0.1:$api_port; tenant "demo" was created through
it (transaction pooling, pool size $POOL_SIZE).

Connect through Tidepool (user "demo" of tenant "demo"):

    psql "postgres://$DEMO_USER.demo:$DEMO_PASSWORD@127.0.0.1:$port/$DEMO_DB"

or through its Unix socket:

    PGPASSWORD=$DEMO_PASSWORD psql -h $SOCKET_DIR -p $port -U $DEMO_USER.demo $DEMO_DB

Admin console (PgBouncer's SHOW POOLS, SHOW STATS, PAUSE, RESUME, ...):

    PGPASSWORD=$TIDEPOOL_ADMIN_PASSWORD psql -h 127.0.0.1 -p $port -U admin pgbouncer -c 'SHOW POOLS'

Add tenant "acme" (here the same database) with one line, then connect as $DEMO_USER.acme:

    curl -X PUT http://127.0.0.1:$api_port/api/tenants/acme -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '$(tenant_json)'

List tenants:   curl -H "Authorization: Bearer $token" http://127.0.0.1:$api_port/api/tenants
Metrics:        curl http://127.0.0.1:$api_port/metrics
API reference:  http://127.0.0.1:$api_port/swaggerui (and docs/api.md)

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
