'use strict'
// One process of a multi-process conformance scenario, for every kind: the messaging service
// (its kind included) comes from CDS_CONFIG (or, with argv[3], from that JSON), the role and its
// arguments from argv. Prints progress lines and, unless it is killed, one JSON line last.
//   receive: subscribes args.topic, proves it consumes by receiving one of its own probes
//            (`<topic>.probe`, emitted until one arrives), prints {"ready":true}, then appends every
//            processed data.i as a JSON line {"i":…} to args.record before the handler returns
//            (so a record exists for every acknowledged message). Ends after args.n distinct messages and
//            args.idleMs of quiet, or never with args.forever.
//   emit:    emits args.n messages { i } (from args.from) in chunks of args.chunk.
//   config:  connects, subscribes, listens and emits once per args.variants entry and prints { ok } or
//            { code, message } for each (option checks that may take a process down).
// With PEER_APP_DIR (a directory with its own package.json) the process runs as that CAP app, so
// two "apps" with default configuration can be started from this one peer.
const fs = require('node:fs')
const [role, argsJson, configJson] = process.argv.slice(2)
const args = JSON.parse(argsJson || '{}')
if (configJson) process.env.CDS_CONFIG = JSON.stringify({ requires: { messaging: JSON.parse(configJson) } })
if (process.env.PEER_APP_DIR) process.chdir(process.env.PEER_APP_DIR)
const cds = require('@sap/cds')
const sleep = ms => new Promise(r => setTimeout(r, ms))

async function emit(m) {
  const { n, from = 0, topic, chunk = 500 } = args
  const t0 = Date.now()
  const codes = {}
  let failed = 0
  for (let k = 0; k < n; k += chunk) {
    const size = Math.min(chunk, n - k)
    await Promise.all(
      Array.from({ length: size }, (_, j) =>
        m.emit(topic, { i: from + k + j }, { 'x-sender': String(process.pid) }).catch(e => {
          failed++
          codes[e.code] = (codes[e.code] || 0) + 1
          if (failed < 5) console.error('emit failed:', e.code, e.message)
        })
      )
    )
  }
  console.log(JSON.stringify({ emitted: n - failed, failed, codes, ms: Date.now() - t0 }))
  await m.disconnect?.()
  process.exit(0)
}

async function receive(m) {
  const { n = Infinity, topic, record, forever = false, idleMs = 2000, timeoutMs = 120000, delayMs = 0 } = args
  const fd = record ? fs.openSync(record, 'a') : undefined
  const seen = new Set()
  let dup = 0
  let last = Date.now()
  m.on(topic, async msg => {
    if (delayMs) await sleep(delayMs)
    const i = msg.data.i
    if (seen.has(i)) dup++
    seen.add(i)
    if (fd !== undefined) fs.writeSync(fd, `{"i":${i}}\n`)
    last = Date.now()
  })
  let ready = false
  m.on(`${topic}.probe`, () => {
    ready = true
  })
  await m.startListening()
  for (let k = 0; !ready; k++) {
    if (k % 15 === 0) await m.emit(`${topic}.probe`, { probe: process.pid }).catch(e => console.error('probe failed:', e.code, e.message))
    await sleep(20)
  }
  console.log(JSON.stringify({ ready: true }))
  if (forever) return
  const t0 = Date.now()
  last = Date.now()
  while (!(seen.size >= n && Date.now() - last > idleMs) && Date.now() - t0 < timeoutMs) await sleep(50)
  await m.disconnect?.()
  console.log(JSON.stringify({ received: seen.size, dup }))
  process.exit(0)
}

async function config() {
  // One line before each attempt, so a variant that takes the process down is known by the last line.
  for (const [k, options] of (args.variants || []).entries()) {
    console.log(JSON.stringify({ variant: k, start: true }))
    try {
      const m = await cds.connect.to(options)
      m.on(`config.check.${process.pid}`, () => {})
      await m.startListening?.()
      await m.emit(`config.check.${process.pid}`, {})
      await m.disconnect?.()
      console.log(JSON.stringify({ variant: k, ok: true }))
    } catch (e) {
      console.log(JSON.stringify({ variant: k, code: e.code, message: e.message, name: e.constructor?.name }))
    }
  }
  console.log(JSON.stringify({ done: true }))
  process.exit(0)
}

if (role === 'config') config()
else
  cds.connect
    .to('messaging')
    .then(m => (role === 'emit' ? emit(m) : receive(m)))
    .catch(e => {
      console.error('peer failed:', e)
      process.exit(2)
    })
