#!/usr/bin/env bash
# Many tenants in one Tidepool (issue 6): creates TENANTS (default 10000) tenants
# through the management API, reports the time it took and the process's memory,
# then logs in to SAMPLE (default 100) of them at random and runs SELECT 1.
#
#   bash bench/tenants-scale.sh
#   TENANTS=2000 SAMPLE=20 bash bench/tenants-scale.sh
#
# Starts a throwaway PostgreSQL holding both the metadata store and the one
# database every tenant points at, and Tidepool as shipped (release build) with
# the store and the API. A benchmark, not a test: nothing asserts a timing.
# Results go to bench/out/tenants-<timestamp>.json.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$BENCH_DIR/../scripts/lib.sh"

tp_ensure_postgres
TIDEPOOL_BIN="${TIDEPOOL_BIN:-$(tp_build_release)}"
WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tidepool-tenants.XXXXXX")"
TP_TIDEPOOL_PID=""

cleanup() {
    tp_tidepool_stop || true
    tp_pg_stop || true
    rm -rf "$WORK_DIR"
}
trap cleanup EXIT

tp_section "PostgreSQL"
tp_pg_start
tp_pg_create_user_db scale scale-pass scale
tp_psql_super -c "CREATE DATABASE tidepool_meta" >/dev/null

tp_section "Tidepool with a metadata store and the API"
POOLER_PORT="$(tp_free_port)"
API_PORT="$(tp_free_port)"
cat >"$WORK_DIR/tidepool.toml" <<CONF
[server]
listen = "127.0.0.1:$POOLER_PORT"
[api]
listen = "127.0.0.1:$API_PORT"
[metadata]
url = "postgres://postgres:postgres@127.0.0.1:$TP_PG_PORT/tidepool_meta"
CONF
export API_JWT_SECRET="bench-secret-$RANDOM$RANDOM"
TIDEPOOL_ENCRYPTION_KEY="$(head -c 32 /dev/urandom | base64)"
export TIDEPOOL_ENCRYPTION_KEY
tp_tidepool_start "$TIDEPOOL_BIN" "$POOLER_PORT" "$WORK_DIR/tidepool.log" --config "$WORK_DIR/tidepool.toml"
tp_wait_port "$API_PORT" 15 "$TP_TIDEPOOL_PID" || tp_die "the API did not listen"

tp_section "Creating ${TENANTS:-10000} tenants"
mkdir -p "$BENCH_DIR/out"
OUT="$BENCH_DIR/out/tenants-$(date -u +%Y%m%dT%H%M%SZ).json"
API_PORT="$API_PORT" POOLER_PORT="$POOLER_PORT" PG_PORT="$TP_PG_PORT" \
    TIDEPOOL_PID="$TP_TIDEPOOL_PID" PSQL="$(tp_pg_tool psql)" \
    python3 "$BENCH_DIR/tenants_scale.py" | tee "$OUT"
echo "server connections open: $(tp_psql_super -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'scale'")"
echo "results: $OUT"
