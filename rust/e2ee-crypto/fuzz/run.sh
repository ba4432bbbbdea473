#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target of e2ee-crypto on STABLE Rust.
#
#   run.sh [SECONDS_PER_TARGET]        (default 10)
#   run.sh --build-only                build the targets, run none
#
# Environment:
#   FUZZ_SANITIZER  address | none     (default: address when the toolchain ships the
#                                       ASan runtime, else none)
#   FUZZ_JOBS       libFuzzer -jobs/-workers per target (default 1)
#
# Prints one line per target and exits non-zero if any target crashed or failed to run.
# Crash inputs land in artifacts/<target>/; the growing corpus in corpus/<target>/.
set -euo pipefail

BUILD_ONLY=0
if [ "${1:-}" = --build-only ]; then
    BUILD_ONLY=1
    shift
fi
SECS="${1:-10}"
case "$SECS" in '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;; esac
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
fi

# cargo-fuzz passes nightly-only rustc flags (-Zsanitizer=..., and -Z options of its own).
# RUSTC_BOOTSTRAP=1 lets the stable compiler accept them; the code built is the same.
export RUSTC_BOOTSTRAP=1

if [ -z "${FUZZ_SANITIZER:-}" ]; then
    host="$(rustc -vV | sed -n 's/^host: //p')"
    if ls "$(rustc --print sysroot)/lib/rustlib/$host/lib/"librustc-*_rt.asan.* >/dev/null 2>&1; then
        FUZZ_SANITIZER=address
    else
        FUZZ_SANITIZER=none
    fi
fi
JOBS="${FUZZ_JOBS:-1}"

echo "building fuzz targets (sanitizer: $FUZZ_SANITIZER)" >&2
cargo fuzz build --sanitizer "$FUZZ_SANITIZER" >&2
[ "$BUILD_ONLY" = 0 ] || exit 0

logs="$(mktemp -d "${TMPDIR:-/tmp}/e2ee-fuzz.XXXXXX")"
status=0
for t in $(cargo fuzz list); do
    mkdir -p "corpus/$t"
    log="$logs/$t.log"
    extra=()
    [ "$JOBS" -gt 1 ] && extra=(-jobs="$JOBS" -workers="$JOBS")
    if cargo fuzz run --sanitizer "$FUZZ_SANITIZER" "$t" -- \
        -max_total_time="$SECS" -print_final_stats=1 "${extra[@]}" >"$log" 2>&1; then
        done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
        runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
        eps="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
        cov="$(sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\) corp: \([^ ]*\) .*/cov=\1 ft=\2 corpus=\3/p' <<<"$done_line")"
        printf '%-8s ok     %ss runs=%s exec/s=%s %s\n' "$t" "$SECS" "${runs:-?}" "${eps:-?}" "$cov"
    else
        status=1
        art="$(grep -Eo 'artifacts/[^ ]*' "$log" | tail -n 1 || true)"
        why="$(grep -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)' "$log" | head -n 1 || true)"
        printf '%-8s FAILED %s %s (log: %s)\n' "$t" "${art:-no artifact}" "$why" "$log"
    fi
done
[ "$status" -eq 0 ] && rm -rf "$logs"
exit "$status"
