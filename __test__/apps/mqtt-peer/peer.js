'use strict'
// One side of a multi-process MQTT scenario: `emit` or `receive` over the messaging service
// configured by CDS_CONFIG. Prints progress lines and, last, one JSON line with the result.
//
// receive: subscribes `topic`, proves the subscription with a probe message to itself, prints
// {"ready":true}; then records every processed `data.i` (appended to `out` before the handler
// returns, so a processed message is on disk before it is acknowledged).
const fs = require('node:fs')
const cds = require('@sap/cds')
const [role, argsJson] = process.argv.slice(2)
const args = JSON.parse(argsJson || '{}')

async function emit(m) {
  const { n, from = 0, topic = 'reviewed', sequential = false } = args
  const t0 = Date.now()
  if (sequential) for (let i = from; i < from + n; i++) await m.emit(topic, { i }, { sender: process.pid })
  else {
    const chunk = 500
    for (let k = 0; k < n; k += chunk)
      await Promise.all(Array.from({ length: Math.min(chunk, n - k) }, (_, j) => m.emit(topic, { i: from + k + j }, { sender: process.pid })))
  }
  console.log(JSON.stringify({ emitted: n, ms: Date.now() - t0 }))
  await m.disconnect()
  process.exit(0)
}

async function receive(m) {
  const { n, topic = 'reviewed', idleMs = 3000, timeoutMs = 45000, out, delayMs = 0 } = args
  const fd = out ? fs.openSync(out, 'a') : undefined
  const seen = new Map()
  let dup = 0
  let redelivered = 0
  let last = Date.now()
  const t0 = Date.now()
  m.on(topic, async msg => {
    if (delayMs) await new Promise(r => setTimeout(r, delayMs))
    const i = msg.data.i
    if (seen.has(i)) dup++
    seen.set(i, (seen.get(i) || 0) + 1)
    if (fd !== undefined) fs.writeSync(fd, `${i}\n`)
    last = Date.now()
  })
  const probe = `probe/${process.pid}/${Date.now()}`
  let probed
  const gotProbe = new Promise(r => (probed = r))
  m.on(probe, () => probed())
  await m.startListening()
  await m.emit(probe, {})
  await gotProbe
  console.log(JSON.stringify({ ready: true }))
  last = Date.now()
  await new Promise(resolve => {
    const t = setInterval(() => {
      const done = seen.size >= n && Date.now() - last > Math.min(idleMs, 500)
      if (done || Date.now() - last > idleMs * 4 || Date.now() - t0 > timeoutMs) {
        clearInterval(t)
        resolve()
      }
    }, 50)
  })
  const ids = [...seen.keys()].sort((a, b) => a - b)
  await m.disconnect()
  console.log(JSON.stringify({ received: seen.size, dup, redelivered, ids, ms: last - t0 }))
  process.exit(0)
}

cds
  .connect.to('messaging')
  .then(m => (role === 'emit' ? emit(m) : receive(m)))
  .catch(e => {
    console.error('peer failed:', e)
    process.exit(2)
  })
