'use strict'
// One side of a multi-process Redis scenario over the messaging service configured by CDS_CONFIG
// (ours or @sap/cds's redis-messaging). Prints `{"ready":true}` once consuming, and — unless it is
// killed — one JSON line with the result last.
//   receive: records every processed message as a JSON line in args.record (before the handler
//            returns, so a record exists for every acknowledged message), ends after args.n
//            distinct messages (or never with args.forever).
//            With args.crashOn, message { i: crashOn } kills the process with SIGKILL.
//   emit:    emits args.n messages { i } in chunks of args.chunk.
//   script:  emits args.n messages { i } at once, awaits them, prints the result and ends without
//            process.exit or disconnect, as a short script does (the process must stay until the
//            emits are done, and then exit by itself).
const fs = require('node:fs')
const cds = require('@sap/cds')
const [role, argsJson] = process.argv.slice(2)
const args = JSON.parse(argsJson || '{}')
const sleep = ms => new Promise(r => setTimeout(r, ms))

async function emit(m) {
  const { n, from = 0, topic = 'reviewed', chunk = 100, pauseMs = 0 } = args
  const t0 = Date.now()
  for (let k = 0; k < n; k += chunk) {
    const size = Math.min(chunk, n - k)
    await Promise.all(Array.from({ length: size }, (_, j) => m.emit(topic, { i: from + k + j }, { 'x-sender': String(process.pid) })))
    if (pauseMs) await sleep(pauseMs)
  }
  console.log(JSON.stringify({ emitted: n, ms: Date.now() - t0 }))
  process.exit(0)
}

async function script(m) {
  const { n, topic = 'reviewed' } = args
  await Promise.all(Array.from({ length: n }, (_, i) => m.emit(topic, { i })))
  console.log(JSON.stringify({ emitted: n }))
}

async function receive(m) {
  const { n = Infinity, topic = 'reviewed', record, delayMs = 0, idleMs = 2000, timeoutMs = 50000, forever = false, crashOn } = args
  const seen = new Map()
  let dup = 0
  let last = Date.now()
  const t0 = Date.now()
  m.on(topic, async msg => {
    if (delayMs) await sleep(delayMs)
    const i = msg.data && msg.data.i
    if (i === crashOn) process.kill(process.pid, 'SIGKILL') // a handler that takes the process down
    if (record) fs.appendFileSync(record, JSON.stringify({ i, event: msg.event, data: msg.data, headers: msg.headers, inbound: msg.inbound }) + '\n')
    if (seen.has(i)) dup++
    seen.set(i, (seen.get(i) || 0) + 1)
    last = Date.now()
  })
  await m.startListening()
  console.log(JSON.stringify({ ready: true }))
  if (forever) return
  await new Promise(resolve => {
    const t = setInterval(() => {
      const done = seen.size >= n && Date.now() - last > Math.min(idleMs, 300)
      if (done || Date.now() - t0 > timeoutMs) {
        clearInterval(t)
        resolve()
      }
    }, 50)
  })
  const ids = [...seen.keys()].sort((a, b) => a - b)
  console.log(JSON.stringify({ received: seen.size, dup, ids }))
  process.exit(0)
}

cds.connect
  .to('messaging')
  .then(m => (role === 'emit' ? emit(m) : role === 'script' ? script(m) : receive(m)))
  .catch(e => {
    console.error('peer failed:', e)
    process.exit(2)
  })
