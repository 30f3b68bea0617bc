#!/usr/bin/env bash
# Runs every fuzz target for a short, bounded time: FUZZ_SECONDS each (default 10), and at most
# FUZZ_INPUT_SECONDS (default 10) on any one input, so a hang fails fast instead of waiting out
# libFuzzer's 20-minute default.
# Skips (exit 0) when the nightly toolchain or cargo-fuzz is missing.
# New corpus entries go to a scratch directory, so fuzz/corpus/ (the committed seeds) is not
# touched; a crash is written to fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-10}"
input_seconds="${FUZZ_INPUT_SECONDS:-10}"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/smoke.sh: skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz/smoke.sh: skipped: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)"
    exit 0
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cargo +nightly fuzz build
mapfile -t targets < <(cargo +nightly fuzz list)
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz/smoke.sh: no fuzz targets found"
    exit 1
fi
for target in "${targets[@]}"; do
    echo "== $target: ${seconds}s"
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    if cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout="$input_seconds" -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^(#[0-9]+[[:space:]]+DONE|Done [0-9]+ runs)' "$log" || true
    else
        status=$?
        tail -n 40 "$log"
        grep -A2 'panicked' "$log" || true
        echo "fuzz/smoke.sh: $target FAILED (exit $status); the input is in fuzz/artifacts/$target/"
        exit "$status"
    fi
done
echo "fuzz/smoke.sh: all targets ran ${seconds}s without a crash"
