#!/usr/bin/env bash
# Runs every test of the workspace, after installing what the tests need.
# Usage: bash scripts/test.sh   (from anywhere; CI runs it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests need beyond the Rust toolchain. Nothing yet: the engine and `spate serve`
# tests use only the toolchain, real files and loopback sockets. (fio is for the benchmark,
# not for tests: see docs/BENCHMARKS.md.)

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
# No doc tests in the workspace yet: --lib --bins --tests runs everything else, so the last
# runner line is a real suite, and the summary below counts every suite.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --lib --bins --tests 2>&1 | tee "$log"
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$log")
echo "tests: ${passed} passed, ${failed} failed"
