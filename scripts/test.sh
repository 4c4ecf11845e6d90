#!/usr/bin/env bash
# `npm test`: formatting, lints, Rust unit tests, then the jest suite with @sap/cds 9 on this
# machine's Node (20) and with @sap/cds 10 on Node 22.
set -euo pipefail
cd "$(dirname "$0")/.."
# napi build passes --target <host>; the same target here reuses its dependency builds.
export CARGO_BUILD_TARGET="${CARGO_BUILD_TARGET:-x86_64-unknown-linux-gnu}"
step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
step "eslint"
npx eslint .
step "cargo test"
cargo test
step "jest with @sap/cds $(node -p "require('@sap/cds/package.json').version") on Node $(node -v)"
node scripts/jest-each.js
step "jest with @sap/cds 10 on Node 22"
bash scripts/test-cds10.sh
