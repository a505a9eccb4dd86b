#!/usr/bin/env bash
# The test command (what CI runs): on a Debian machine with Rust installed,
# installs what is missing (PostgreSQL server, psql, pgbench), then runs
# formatting, lints, the release build, all tests against real Postgres
# servers, and the pgbench load check through the pooler. Idempotent; exits
# non-zero on the first failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

tp_section "Install missing system packages"
tp_ensure_postgres
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 || tp_die "cargo fmt / cargo clippy missing and no rustup to add them"
    rustup component add rustfmt clippy
fi

tp_section "Raise the open-files limit"
tp_raise_nofile

tp_section "cargo fmt --all -- --check"
cargo fmt --all -- --check

tp_section "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

tp_section "cargo build --release"
cargo build --release

tp_section "cargo test --workspace"
cargo test --workspace

tp_section "pgbench through Tidepool (scripts/pgbench-check.sh)"
TIDEPOOL_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/tidepool" bash scripts/pgbench-check.sh

# --- driver matrix (scripts/drivers.sh): keep it last, its "N passed, M failed"
# line ends the output ---
tp_section "Driver matrix through Tidepool (scripts/drivers.sh)"
TIDEPOOL_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/tidepool" bash scripts/drivers.sh
# --- end of driver matrix ---
