#!/usr/bin/env bash
# `npm test`: formatting, lints, Rust unit tests, then the jest suite with @sap/cds 9 on this
# machine's Node (20) and with @sap/cds 10 on Node 22, then the release check (scripts/release-check.js).
set -euo pipefail
cd "$(dirname "$0")/.."
# napi build passes --target <host>; the same target here reuses its dependency builds.
export CARGO_BUILD_TARGET="${CARGO_BUILD_TARGET:-x86_64-unknown-linux-gnu}"
step() { printf '\n== %s\n' "$*"; }

# The @sap/cds 10 matrix and the @sap/cds 9 multitenancy companions (scripts/matrix.sh) are
# installed in the background while the Rust checks run; jest waits for them.
mkdir -p .matrix
step "test matrices: installing in the background (log .matrix/matrix-install.log)"
setsid bash scripts/matrix.sh cds10 mt9 >.matrix/matrix-install.log 2>&1 &
matrix_pid=$!
fuzz_pid=""
# Background jobs run in process groups of their own (setsid); an early exit stops them with it.
stop_background() { for pid in $matrix_pid $fuzz_pid; do kill -- "-$pid" 2>/dev/null || true; done; }
trap stop_background EXIT
step "cargo fmt --check"
cargo fmt --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
step "eslint"
npx eslint .
step "tsc: index.d.ts and a TypeScript consumer (__test__/types)"
npx tsc -p __test__/types
step "cargo test"
cargo test
# Fuzzing (scripts/fuzz.sh, nightly + cargo-fuzz, a cold build of its own in fuzz/target): the
# targets are built in the background at the lowest CPU priority while jest runs (the suites wait on
# brokers and timers much of the time), then each runs FUZZ_SECONDS (default 20, at most 60;
# FUZZ_SECONDS=0 skips fuzzing).
fuzz_secs="${FUZZ_SECONDS:-20}"
if [ "$fuzz_secs" != 0 ]; then
  mkdir -p .matrix
  step "fuzz targets: building in the background (nice 19, log .matrix/fuzz-build.log)"
  FUZZ_BUILD_ONLY=1 setsid nice -n 19 bash scripts/fuzz.sh "$fuzz_secs" >.matrix/fuzz-build.log 2>&1 &
  fuzz_pid=$!
fi
step "test matrices: waiting for the background install"
if ! wait "$matrix_pid"; then
  tail -n 60 .matrix/matrix-install.log
  echo "installing the test matrices failed (see above)" >&2
  exit 1
fi
step "jest with @sap/cds $(node -p "require('@sap/cds/package.json').version") on Node $(node -v)"
node scripts/jest-each.js
step "jest with @sap/cds 10 on Node 22"
bash scripts/test-cds10.sh
step "release check (tarballs installed into a fresh CAP app)"
node scripts/release-check.js
if [ -n "$fuzz_pid" ]; then
  step "fuzz, ${fuzz_secs} s per target"
  if ! wait "$fuzz_pid"; then
    tail -n 60 .matrix/fuzz-build.log
    echo "fuzz: building the fuzz targets failed (see above)" >&2
    exit 1
  fi
  bash scripts/fuzz.sh "$fuzz_secs"
fi
