#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (docs/TESTING.md), each for a bounded time, starting
# from its committed corpus (fuzz/corpus/<target>) and every input that ever crashed it
# (fuzz/regressions/<target>). New inputs go to fuzz/work/<target> (not committed).
# Installs cargo-fuzz into target/tools when missing. Exits non-zero if any target crashed,
# naming the crashing input (also kept under fuzz/artifacts/<target>/).
#
# Usage: bash scripts/fuzz.sh [--seconds N] [--nice N] [--sanitizer address|none]
#                             [--no-overflow-checks] [--seed] [--cmin] [TARGET...]
#   --seconds N   fuzzing time per target (default 10)
#   --nice N      run the fuzzers at this niceness (default 0; use 19 for long runs)
#   --sanitizer S passed to cargo fuzz (default address)
#   --no-overflow-checks  plain release build, as the broker ships (default: release with
#                 overflow checks and debug assertions, cargo fuzz's default)
#   --seed        first regenerate fuzz/seeds/<target> (real requests, batches, segment
#                 images, metadata files) and fuzz from them too
#   --cmin        afterwards, minimise corpus + seeds + new inputs into fuzz/corpus/<target>
#   TARGET...     default: every target in fuzz/fuzz_targets
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

die() { echo "error: $*" >&2; exit 1; }

seconds=10
niceness=0
sanitizer=address
checks=1
seed=0
cmin=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=${2:?--seconds needs a value}; shift 2 ;;
        --nice) niceness=${2:?--nice needs a value}; shift 2 ;;
        --sanitizer) sanitizer=${2:?--sanitizer needs a value}; shift 2 ;;
        --no-overflow-checks) checks=0; shift ;;
        --seed) seed=1; shift ;;
        --cmin) cmin=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) targets+=("$1"); shift ;;
    esac
done
if [ ${#targets[@]} -eq 0 ]; then
    for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

cargo +nightly --version >/dev/null 2>&1 \
    || die "the fuzz targets need a nightly toolchain: rustup toolchain install nightly"
export PATH="$root/target/tools/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz into target/tools"
    cargo install cargo-fuzz --locked --root "$root/target/tools" \
        || die "cargo install cargo-fuzz failed"
fi

if [ "$seed" -eq 1 ]; then
    echo "== writing seeds to fuzz/seeds"
    rm -rf fuzz/seeds
    cargo test -q -p spate-net --test fuzz_corpus -- --ignored write_seeds >/dev/null \
        && cargo test -q -p spate-engine --test fuzz_corpus -- --ignored write_seeds >/dev/null \
        || die "writing the seeds failed"
fi

# Overflow checks and debug assertions on by default (cargo fuzz's default): an overflow is
# a panic in every debug build and a wrong value in release, so it is a finding.
build_flags=(-s "$sanitizer" -a)
[ "$checks" -eq 0 ] && build_flags=(-s "$sanitizer" -O)
echo "== building the fuzz targets (${build_flags[*]})"
start=$(date +%s)
(cd fuzz && cargo +nightly fuzz build "${build_flags[@]}") || die "cargo fuzz build failed"
echo "built in $(( $(date +%s) - start )) s"
# The binaries are run directly: `cargo fuzz run` would rebuild whenever a source file changed
# meanwhile, and every target of a run should test the same code.
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir="$root/fuzz/target/$host/release"

crashed=()
summary=()
for t in "${targets[@]}"; do
    [ -f "fuzz/fuzz_targets/$t.rs" ] || die "no fuzz target $t"
    mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
    dirs=("fuzz/work/$t")
    for d in "fuzz/corpus/$t" "fuzz/regressions/$t" "fuzz/seeds/$t"; do
        [ -d "$d" ] && dirs+=("$d")
    done
    echo "== fuzzing $t for ${seconds}s (inputs from ${dirs[*]})"
    log="fuzz/work/$t.log"
    # -rss_limit_mb and -malloc_limit_mb: one input using 1 GiB is a finding, not a pass.
    # The fuzzer runs from fuzz/, so its paths are relative to it.
    (cd fuzz && nice -n "$niceness" "$bin_dir/$t" "${dirs[@]/#fuzz\//}" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -timeout=10 -print_final_stats=1 -artifact_prefix="artifacts/$t/") >"$log" 2>&1
    status=$?
    runs=$(grep -oE '^Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' | tail -1)
    if [ -z "$runs" ]; then
        runs=$(grep -E '^stat::number_of_executed_units:' "$log" | grep -oE '[0-9]+' | tail -1)
    fi
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
    summary+=("$(printf '%-16s %12s execs  cov %6s' "$t" "${runs:-?}" "${cov:-?}")")
    if [ "$status" -ne 0 ]; then
        artifact=$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -1 | sed 's/Test unit written to //')
        echo "!! $t crashed (exit $status); its log: $log"
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' -A3 "$log" | head -20
        if [ -n "$artifact" ]; then
            echo "!! crashing input: fuzz/$artifact"
            echo "   replay it: (cd fuzz && cargo +nightly fuzz run ${build_flags[*]} $t $artifact)"
            echo "   keep it:   cp fuzz/$artifact fuzz/regressions/$t/ (the replay test then covers it)"
        fi
        crashed+=("$t")
    fi
done

if [ "$cmin" -eq 1 ]; then
    for t in "${targets[@]}"; do
        echo "== minimising the corpus of $t"
        mkdir -p "fuzz/corpus/$t"
        for d in "fuzz/seeds/$t" "fuzz/work/$t"; do
            [ -d "$d" ] && find "$d" -maxdepth 1 -type f -exec cp -n {} "fuzz/corpus/$t/" \;
        done
        # libFuzzer's merge: the smallest set of inputs that keeps every edge covered (hit
        # counts ignored: with them the request corpus is twice as large for no new code).
        rm -rf "fuzz/work/$t-min" && mkdir -p "fuzz/work/$t-min"
        if (cd fuzz && nice -n "$niceness" "$bin_dir/$t" -merge=1 -use_counters=0 -max_len=8192 \
            -rss_limit_mb=2048 -timeout=10 "work/$t-min" "corpus/$t") \
            >"fuzz/work/$t-cmin.log" 2>&1; then
            rm -rf "fuzz/corpus/$t" && mv "fuzz/work/$t-min" "fuzz/corpus/$t"
        else
            echo "!! minimising $t failed (fuzz/work/$t-cmin.log); corpus left unminimised"
        fi
        echo "   $(find "fuzz/corpus/$t" -type f | wc -l) inputs kept"
    done
fi

echo "== fuzzing summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#crashed[@]} -ne 0 ]; then
    echo "error: fuzz targets crashed: ${crashed[*]}" >&2
    exit 1
fi
