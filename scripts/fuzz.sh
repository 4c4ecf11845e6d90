#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets, cargo fuzz + libFuzzer) for a bounded time each
# (default 20 s, at most 60 s) from its seed corpus in fuzz/corpus/<target>, and fails on a crash.
#
#   scripts/fuzz.sh [seconds] [target ...]
#
# Needs a nightly toolchain (libFuzzer's instrumentation flags) and cargo-fuzz; it installs
# cargo-fuzz when it is missing. Sanitizer: none (the library has no unsafe code of its own; a
# build without ASan is twice as fast), `FUZZ_SANITIZER=address` to change that. Without a nightly
# toolchain, RUSTC_BOOTSTRAP=1 lets a stable rustc accept the same flags (FUZZ_TOOLCHAIN=stable).
# New inputs found are written to fuzz/corpus/<target> only with FUZZ_GROW=1 (keep the corpora small);
# a crash is saved under fuzz/artifacts/<target>/ and named in the output.
# FUZZ_BUILD_ONLY=1 builds and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
shift || true
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ] || [ "$secs" -gt 60 ]; then
  echo "fuzz.sh: seconds must be 1..60, got '$secs'" >&2
  exit 2
fi
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
sanitizer="${FUZZ_SANITIZER:-none}"
# The fuzz crate is a workspace of its own; building for the host target only.
unset CARGO_BUILD_TARGET
if [ "$toolchain" = stable ]; then export RUSTC_BOOTSTRAP=1; fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then cargo install cargo-fuzz --locked; fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo "+$toolchain" fuzz list)
fi
cd fuzz
if ! cargo "+$toolchain" fuzz build -O -s "$sanitizer" >/tmp/fuzz-build-$$.log 2>&1; then
  tail -n 40 /tmp/fuzz-build-$$.log
  exit 1
fi
rm -f /tmp/fuzz-build-$$.log
# FUZZ_BUILD_ONLY=1: build cargo-fuzz and the targets, run nothing (npm test builds them in the
# background while jest runs, then runs them).
if [ "${FUZZ_BUILD_ONLY:-0}" = 1 ]; then echo "fuzz: ${#targets[@]} targets built"; exit 0; fi
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  work="$(mktemp -d)"
  corpora=("$work")
  [ "${FUZZ_GROW:-0}" = 1 ] && corpora=("corpus/$t")
  cp -r "corpus/$t/." "$work/" 2>/dev/null || true
  printf '== fuzz %s (%s s)\n' "$t" "$secs"
  if cargo "+$toolchain" fuzz run -O -s "$sanitizer" "$t" "${corpora[@]}" -- -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 >"$work.log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^Done' "$work.log" | tr '\n' ' '
    echo
  else
    failed+=("$t")
    tail -n 40 "$work.log"
  fi
  rm -rf "$work" "$work.log"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crash in ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${secs} s each, no crash"
