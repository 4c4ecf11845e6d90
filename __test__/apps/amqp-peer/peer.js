'use strict'
// One side of a multi-process AMQP scenario, configured by CDS_CONFIG (requires.messaging).
//   emit:    emits args.n messages {i} on args.topic, in chunks of args.chunk (all at once by default)
//   receive: subscribes args.topic, prints READY once its queue is bound, `P <count>` every 500
//            messages, and last one JSON line {received, dup, ids, ...}; args.n = 0 only provisions.
const cds = require('@sap/cds')
const [role, argsJson] = process.argv.slice(2)
const args = JSON.parse(argsJson || '{}')

async function emit(m) {
  const { n, from = 0, topic, chunk = n } = args
  const t0 = Date.now()
  const codes = {}
  let failed = 0
  for (let start = from; start < from + n; start += chunk) {
    const end = Math.min(start + chunk, from + n)
    const all = []
    for (let i = start; i < end; i++)
      all.push(
        m.emit(topic, { i }, { sender: process.pid }).catch(e => {
          failed++
          codes[e.code] = (codes[e.code] || 0) + 1
          if (failed < 5) console.error('emit failed:', e.code, e.message)
        })
      )
    await Promise.all(all)
    if (args.pauseMs) await new Promise(r => setTimeout(r, args.pauseMs))
  }
  console.log(JSON.stringify({ emitted: n - failed, failed, codes, ms: Date.now() - t0 }))
  await m.disconnect()
  process.exit(0)
}

async function receive(m) {
  const { n, topic, idleMs = 2000, timeoutMs = 50000 } = args
  const seen = new Map()
  let dup = 0
  let last = Date.now()
  let t0 = 0
  let ready = false
  const info = m.LOG.info
  m.LOG.info = function (...a) {
    if (!ready && typeof a[0] === 'string' && a[0].includes('is bound to')) {
      ready = true
      console.log('READY')
    }
    return info.apply(this, a)
  }
  m.on(topic, msg => {
    const i = msg.data.i
    if (!t0) t0 = Date.now()
    if (seen.has(i)) dup++
    seen.set(i, (seen.get(i) || 0) + 1)
    last = Date.now()
    if (seen.size % 500 === 0 && seen.get(i) === 1) console.log(`P ${seen.size}`)
  })
  await m.startListening()
  // A queue created beforehand (e.g. behind a WebSocket gateway, provision: false) is ready at once.
  if (args.readyAtStart) {
    ready = true
    console.log('READY')
  }
  const start = Date.now()
  await new Promise(resolve => {
    const t = setInterval(() => {
      const done = ready && seen.size >= n && Date.now() - last > Math.min(idleMs, 500)
      if (done || (n > 0 && seen.size > 0 && Date.now() - last > idleMs * 4) || Date.now() - start > timeoutMs) {
        clearInterval(t)
        resolve()
      }
    }, 50)
  })
  const ids = [...seen.keys()].sort((a, b) => a - b)
  await m.disconnect()
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
