#!/usr/bin/env bash
# Runs each fuzz target for a bounded time on its corpus (fuzz/corpus/<target>/, which grows
# with what the run finds), one after the other. Not part of CI (.ci/run never calls it).
#
#   fuzz/run.sh                 every target, 60 s each
#   fuzz/run.sh 300             every target, 300 s each (or FUZZ_SECONDS=300)
#   fuzz/run.sh 120 inbound     only the named targets
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a C++ compiler (libFuzzer is built from
# source). cargo-fuzz passes nightly-only flags to rustc: on a stable toolchain,
# RUSTC_BOOTSTRAP=1 (set here) lets it. A crash stops the run; its input is kept under
# fuzz/artifacts/<target>/ and `cargo fuzz run -O -a <target> <that file>` replays it. Builds are
# optimized with debug assertions on (-O -a), so that an integer overflow is a crash too.
# Inputs go up to 8 KiB (-max_len), past the 4,096-byte token limit: libFuzzer's default stops
# at 4 KiB, where a token too long cannot even be written.
# Shrink a grown corpus before committing it, keeping the inputs that add an edge:
# `RUSTC_BOOTSTRAP=1 cargo fuzz cmin -O -a <target> -- -use_counters=0`.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1

seconds="${FUZZ_SECONDS:-60}"
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
    seconds="$1"
    shift
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build -O -a
for target in "${targets[@]}"; do
    echo "== $target: ${seconds}s"
    mkdir -p "corpus/$target"
    cargo fuzz run -O -a "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=8192 -dict=json.dict -print_final_stats=1
done
