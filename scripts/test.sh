#!/usr/bin/env bash
# Runs every test of the workspace, after installing what the tests need:
#   - kcat, the Debian package (built on librdkafka 2.0.2: an old client, on purpose);
#   - confluent-kafka and kafka-python from PyPI, in a virtualenv (target/test-venv);
#   - quixstreams from PyPI, in a virtualenv of its own (target/quix-venv: it pins an older
#     confluent-kafka), which tests/clients/test_quixstreams.py runs its application in;
#   - azurite from npm, into target/azurite: the Azure Blob API the Azure tier is tested
#     against (tests/clients/test_tiered_azure.py);
#   - cargo-fuzz from crates.io, into target/tools (scripts/fuzz.sh, with the nightly
#     toolchain the machine has), for a bounded run of every fuzz target (docs/TESTING.md).
# Usage: bash scripts/test.sh   (from anywhere; CI runs it through .ci/run)
set -uo pipefail
cd "$(dirname "$0")/.."

die() { echo "error: $*" >&2; exit 1; }

if ! command -v kcat >/dev/null 2>&1; then
    echo "== installing kcat (Debian package)"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q kcat >/dev/null 2>&1 \
        || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q kcat >/dev/null; } \
        || die "cannot install kcat with apt-get; install the Debian package kcat by hand"
fi

venv="${SPATE_TEST_VENV:-target/test-venv}"
if ! "$venv/bin/python" -c 'import confluent_kafka, kafka, pytest, lz4, snappy, zstandard, azure.storage.blob' >/dev/null 2>&1; then
    echo "== installing the Python Kafka clients into $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install -q --disable-pip-version-check -r tests/clients/requirements.txt \
        || die "pip install -r tests/clients/requirements.txt failed"
fi
quix_venv="${SPATE_QUIX_VENV:-target/quix-venv}"
case "$quix_venv" in /*) ;; *) quix_venv="$PWD/$quix_venv" ;; esac
if ! "$quix_venv/bin/python" -c 'import quixstreams' >/dev/null 2>&1; then
    echo "== installing quixstreams into $quix_venv"
    python3 -m venv "$quix_venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$quix_venv/bin/pip" install -q --disable-pip-version-check -r tests/clients/requirements-quix.txt \
        || die "pip install -r tests/clients/requirements-quix.txt failed"
fi
export SPATE_QUIX_PYTHON="$quix_venv/bin/python"
# Azurite, Microsoft's Azure Storage emulator (npm), for the Azure tier's test.
azurite_dir="$PWD/target/azurite"
if [ ! -x "$azurite_dir/node_modules/.bin/azurite-blob" ]; then
    echo "== installing azurite (npm) into $azurite_dir"
    if ! command -v npm >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q nodejs npm >/dev/null 2>&1 \
            || die "npm is missing and apt-get cannot install it: install the Debian packages nodejs and npm"
    fi
    npm install --prefix "$azurite_dir" --no-audit --no-fund --silent azurite@3.35.0 >/dev/null \
        || die "npm install azurite failed"
fi
export SPATE_AZURITE_BLOB="$azurite_dir/node_modules/.bin/azurite-blob"

# The build (~5 GB in target/) and the brokers' data (in pytest's temporary directory) need
# room: a full disk shows up as brokers refusing produce (KAFKA_STORAGE_ERROR "disk full").
echo "== free disk: $(df -h --output=avail . | tail -1 | tr -d ' ') here (target/), $(df -h --output=avail "${TMPDIR:-/tmp}" | tail -1 | tr -d ' ') in ${TMPDIR:-/tmp}"

set -e
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
set +e

echo "== cargo test"
# No doc tests in the workspace: --lib --bins --tests runs everything else, and the summary
# below counts every suite.
log=$(mktemp)
pylog=$(mktemp)
trap 'rm -f "$log" "$pylog"' EXIT
cargo test --workspace --lib --bins --tests --no-fail-fast 2>&1 | tee "$log"
cargo_status=${PIPESTATUS[0]}
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$log")

echo "== client tests: kcat, confluent-kafka, kafka-python, quixstreams against target/debug/spate"
cargo build --bin spate || die "cargo build --bin spate failed"
SPATE_BIN="$PWD/target/debug/spate" "$venv/bin/python" -m pytest tests/clients -q -p no:cacheprovider -rfEs 2>&1 | tee "$pylog"
py_status=${PIPESTATUS[0]}
summary=$(grep -E '(passed|failed|error).* in [0-9.]+s' "$pylog" | tail -1)
count() { echo "$summary" | grep -oE "[0-9]+ $1" | grep -oE '^[0-9]+' || echo 0; }
py_passed=$(count passed)
py_failed=$(( $(count failed) + $(count error) ))
py_skipped=$(count skipped)

# Every fuzz target for a few seconds (docs/TESTING.md); its corpus is also replayed by the
# cargo tests above (net/tests/fuzz_corpus.rs, engine/tests/fuzz_corpus.rs).
echo "== fuzz targets: ${SPATE_FUZZ_SECONDS:-10} s each (scripts/fuzz.sh)"
fuzz_status=0
bash scripts/fuzz.sh --seconds "${SPATE_FUZZ_SECONDS:-10}" || fuzz_status=1

passed=$((passed + py_passed))
failed=$((failed + py_failed))
echo "tests: ${passed} passed, ${failed} failed (cargo and pytest; ${py_skipped} skipped)"
if [ "$cargo_status" -ne 0 ] || [ "$py_status" -ne 0 ] || [ "$fuzz_status" -ne 0 ] || [ "$failed" -ne 0 ]; then
    exit 1
fi
if [ "$py_skipped" -ne 0 ]; then
    echo "error: ${py_skipped} client test(s) skipped; a skipped test is not a pass" >&2
    exit 1
fi
