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
cargo test --workspace
