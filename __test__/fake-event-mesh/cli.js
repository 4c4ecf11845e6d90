#!/usr/bin/env node
'use strict'
// Runs the FAKE Event Mesh on loopback for manual tries and prints a service binding for it:
//   node __test__/fake-event-mesh/cli.js [--https443] [--namespace my/ns/1]
// Put the printed credentials into the app's cds.requires.messaging.credentials (or default-env.json)
// and use inbound: 'pull', or webhook with cds.env.app.url = http://127.0.0.1:<app port>.
const { startFakeEventMesh } = require('.')

const args = process.argv.slice(2)
const arg = name => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : undefined
}
startFakeEventMesh({ https443: args.includes('--https443') }).then(fake => {
  const https = args.includes('--https443')
  console.log(JSON.stringify({ credentials: fake.binding({ namespace: arg('--namespace') || 'my/ns/1', https }) }, null, 2))
  if (https) console.log(`# @sap/cds needs NODE_EXTRA_CA_CERTS=${fake.caFile}`)
  console.log(`# fake Event Mesh on ${fake.url}; Ctrl-C stops it`)
  const stop = () => fake.close().then(() => process.exit(0))
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
})
