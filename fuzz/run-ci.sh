#!/usr/bin/env bash
# Runs every fuzz target for a short, bounded time (CI). Usage: fuzz/run-ci.sh [SECONDS]
# (default 20 per target). Needs the nightly toolchain; installs cargo-fuzz when missing.
# Seeds come from fuzz/corpus/<target>/; inputs found during the run go to
# fuzz/target/corpus-work/<target>/ (not committed). A crash exits non-zero and leaves the
# reproducer in fuzz/artifacts/<target>/ (`cargo +nightly fuzz run <target> <file>`).
set -euo pipefail

SECONDS_PER_TARGET="${1:-20}"
cd "$(dirname "$0")"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is required (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cargo +nightly fuzz build -O
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in $(cargo +nightly fuzz list); do
    echo "== fuzz $t for ${SECONDS_PER_TARGET}s"
    mkdir -p "corpus/$t" "target/corpus-work/$t"
    status=0
    # -timeout: one input taking over 10 s is a hang; -rss_limit_mb bounds memory.
    cargo +nightly fuzz run -O "$t" "target/corpus-work/$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE|Done [0-9]+ runs)" "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -60 "$log" >&2
        echo "fuzz: $t failed (reproducer in fuzz/artifacts/$t/)" >&2
        exit 1
    fi
done
echo "fuzz: every target ran ${SECONDS_PER_TARGET}s without a crash"
