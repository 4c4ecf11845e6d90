'use strict'
// One benchmark participant, run as a child process by bench/run.js.
//
//   node bench/worker.js <role> <json spec>
//
// role: `both` (producer and consumer in this process), `produce`, or `consume`.
// spec: { driver, impl: 'ours'|'cds'|'raw', size, inflight, n, config, timeoutMs, idleMs }
// Prints `READY` when a consumer is subscribed, and one JSON line with its measurements at the end.
const { performance } = require('node:perf_hooks')

const [role, specJson] = process.argv.slice(2)
const spec = JSON.parse(specJson)
const now = () => performance.timeOrigin + performance.now()

// --- resource sampling --------------------------------------------------------------------
let peakRss = process.memoryUsage.rss()
const rssTimer = setInterval(() => {
  peakRss = Math.max(peakRss, process.memoryUsage.rss())
}, 25)
const cpu0 = process.cpuUsage()

function resources() {
  clearInterval(rssTimer)
  peakRss = Math.max(peakRss, process.memoryUsage.rss())
  const c = process.cpuUsage(cpu0)
  return { cpuSeconds: (c.user + c.system) / 1e6, peakRss }
}

// --- clients: the CAP API (ours / @sap/cds) or a raw JS client ------------------------------
async function capClient() {
  const cds = require('@sap/cds')
  const m = await cds.connect.to('messaging') // configured through CDS_CONFIG by run.js
  return {
    emit: (topic, data) => m.emit(topic, data),
    on: (topic, fn) => m.on(topic, msg => fn(msg.data)),
    listen: async () => {
      if (typeof m.startListening === 'function') await Promise.race([m.startListening(), sleep(50)])
      else if (typeof m.startWatching === 'function') m.startWatching()
    },
    close: async () => {
      if (typeof m.disconnect === 'function') await m.disconnect()
    }
  }
}

async function rawClient() {
  return require(`./raw/${spec.driver}.js`)(spec.config)
}

const sleep = ms => new Promise(r => setTimeout(r, ms))

function payload(i) {
  const base = { i, t: 0, pad: '' }
  const overhead = JSON.stringify({ data: base, headers: {} }).length + 16
  base.pad = 'x'.repeat(Math.max(0, spec.size - overhead))
  return base
}

async function produce(client, topic) {
  const template = payload(0)
  let next = 0
  let failed = 0
  const t0 = now()
  const lane = async () => {
    while (next < spec.n) {
      const i = next++
      try {
        await client.emit(topic, { ...template, i, t: now() })
      } catch {
        failed++
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(spec.inflight, spec.n) }, lane))
  const t1 = now()
  return { t0, t1, failed }
}

function consumer(client, topic) {
  const seen = new Uint8Array(spec.n)
  const lat = []
  let received = 0
  let dup = 0
  let last = 0
  let first = 0
  const soak = { rssStart: process.memoryUsage.rss(), rss10: 0, rssEnd: 0 }
  client.on(topic, data => {
    const t = now()
    if (spec.soak && received === Math.floor(spec.n / 10)) soak.rss10 = process.memoryUsage.rss()
    if (!first) first = t
    last = t
    if (seen[data.i]) dup++
    else received++
    seen[data.i] = 1
    if (!spec.soak || received % 100 === 0) lat.push(t - data.t)
  })
  const done = () =>
    new Promise(resolve => {
      const started = now()
      const tick = setInterval(() => {
        const idle = last ? now() - last : now() - started
        if (received >= spec.n || idle > spec.idleMs || now() - started > spec.timeoutMs) {
          clearInterval(tick)
          resolve()
        }
      }, 5)
    })
  return { done, stats: () => ({ received, dup, first, last, lat, ...(spec.soak ? { ...soak, rssEnd: process.memoryUsage.rss() } : {}) }) }
}

function summarize(lat) {
  if (!lat.length) return { p50: null, p99: null }
  const s = Float64Array.from(lat).sort()
  const q = p => s[Math.min(s.length - 1, Math.floor(p * s.length))]
  return { p50: q(0.5), p99: q(0.99) }
}

async function main() {
  const client = spec.impl === 'raw' ? await rawClient() : await capClient()
  const topic = spec.topic
  let out = {}
  if (role === 'both') {
    const c = consumer(client, topic)
    await client.listen()
    await sleep(100)
    const p = await produce(client, topic)
    await c.done()
    const s = c.stats()
    out = { ...p, received: s.received, dup: s.dup, last: s.last, ...summarize(s.lat) }
    if (spec.soak) Object.assign(out, { rssStart: s.rssStart, rss10: s.rss10, rssEnd: s.rssEnd })
  } else if (role === 'consume') {
    const c = consumer(client, topic)
    await client.listen()
    await sleep(100)
    console.log('READY')
    await c.done()
    const s = c.stats()
    out = { received: s.received, dup: s.dup, first: s.first, last: s.last, ...summarize(s.lat) }
  } else {
    out = await produce(client, topic)
  }
  await Promise.race([client.close(), sleep(3000)])
  console.log(JSON.stringify({ ...out, ...resources() }))
  process.exit(0)
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
