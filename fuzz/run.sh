#!/usr/bin/env bash
# Runs each fuzz target for a while, starting from the committed seeds.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     (default: 60 seconds, every target)
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). New inputs go to
# fuzz/corpus/<target>/ and crashes to fuzz/artifacts/<target>/, both git-ignored.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(startup frames scanner scram)
fi

for target in "${targets[@]}"; do
    extra=()
    # Let inputs reach past the crates' own bounds: 10,000 bytes for a startup packet,
    # 4,096 for one SCRAM message (and the scram input carries several).
    case "$target" in
        startup) extra=(-max_len=12000) ;;
        scram) extra=(-max_len=16384) ;;
    esac
    mkdir -p "fuzz/corpus/$target"
    echo "== $target: ${seconds}s"
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" "${extra[@]}"
done
