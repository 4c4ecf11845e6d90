'use strict'
// One side of a multi-process scenario: `emit` or `receive` over the messaging service configured
// by CDS_CONFIG. Prints progress lines and, last, one JSON line with the result.
const fs = require('node:fs')
const cds = require('@sap/cds')
const [role, argsJson] = process.argv.slice(2)
const args = JSON.parse(argsJson || '{}')

async function emit(m) {
  const { n, from = 0, topic = 'reviewed', sequential = false, exit = true } = args
  const t0 = Date.now()
  // @sap/cds's file-based emitter waits for its lock on unref'd timers: without a ref'd handle the
  // process would end in the middle of emitting when another process holds the lock.
  const keepAlive = setInterval(() => {}, 1000)
  if (sequential) for (let i = from; i < from + n; i++) await m.emit(topic, { i }, { sender: process.pid })
  else await Promise.all(Array.from({ length: n }, (_, k) => m.emit(topic, { i: from + k }, { sender: process.pid })))
  clearInterval(keepAlive)
  console.log(JSON.stringify({ emitted: n, ms: Date.now() - t0 }))
  // A short-lived script: leave right away, without shutdown hooks.
  if (exit) process.exit(0)
}

async function receive(m) {
  const { n, topic = 'reviewed', idleMs = 3000, timeoutMs = 45000, delayMs = 0, progress = false, progressFile } = args
  const seen = new Map()
  let dup = 0
  let last = Date.now()
  const t0 = Date.now()
  m.on(topic, async msg => {
    const i = msg.data.i
    if (delayMs) await new Promise(r => setTimeout(r, delayMs))
    if (seen.has(i)) dup++
    seen.set(i, (seen.get(i) || 0) + 1)
    last = Date.now()
    // Progress for a test that kills this process: the message is processed (not yet acknowledged).
    if (progress) console.log(`got ${i}`)
    // The same, written with a system call before the handler returns: a SIGKILL right after the
    // acknowledgement cannot lose it (stdout to a pipe is asynchronous in Node).
    if (progressFile) fs.appendFileSync(progressFile, `${i}\n`)
  })
  if (typeof m.startListening === 'function') m.startListening()
  else m.startWatching() // @sap/cds file-based-messaging
  await new Promise(resolve => {
    const t = setInterval(() => {
      const done = seen.size >= n && Date.now() - last > Math.min(idleMs, 500)
      if (done || Date.now() - last > idleMs * 4 || Date.now() - t0 > timeoutMs) {
        clearInterval(t)
        resolve()
      }
    }, 50)
  })
  // Handlers still run while disconnect drains the deliveries in flight: count what they process.
  if (typeof m.disconnect === 'function') await m.disconnect()
  const ids = [...seen.keys()].sort((a, b) => a - b)
  console.log(JSON.stringify({ received: seen.size, dup, ids, ms: last - t0 }))
  process.exit(0)
}

cds
  .connect.to('messaging')
  .then(m => (role === 'emit' ? emit(m) : receive(m)))
  .catch(e => {
    console.error('peer failed:', e)
    process.exit(2)
  })
