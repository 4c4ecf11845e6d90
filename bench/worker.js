'use strict'
// One benchmark participant, run as a child process by bench/run.js.
//
//   node bench/worker.js <role> <json spec>
//
// role: `both` (producer and consumer in this process), `produce`, or `consume`.
// spec: { driver, impl: 'ours'|'ours-batched'|'ours-pubsub'|'cds'|'cds-default'|'floor'|'raw'|'raw-…', size, inflight, n, config, timeoutMs, idleMs }
//   --soak adds { soak: true, sampleMs, slowMs, prefilled } (slowMs > 0: the consumer handles one message at a time,
//   slowMs each; prefilled: all n were emitted by an earlier `produce` run, so the backlog starts at n).
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

// CPU of the measured window only: from the first emit (producer) or from READY (consumer) to the
// last emit's confirmation (producer) or the n-th message received (consumer; the end of the run if
// some never came). Without it every participant's CPU per message carried its start-up (loading
// @sap/cds, connecting) and its close, counted twice in two processes and once for the floor:
// measured at 5,000 Redis messages in one process, 74 µs per message for @sap/cds's kind, 51 for
// node-redis, 19 for ours, 14 for the floor (README, "CPU without start-up").
let windowStart = null
let windowEnd = null
const cpuSeconds = c => (c.user + c.system) / 1e6
const startWindow = () => (windowStart ??= process.cpuUsage())
const endWindow = () => (windowEnd ??= process.cpuUsage())

function resources() {
  clearInterval(rssTimer)
  peakRss = Math.max(peakRss, process.memoryUsage.rss())
  const c = process.cpuUsage(cpu0)
  const run = windowStart ? cpuSeconds(windowEnd ?? process.cpuUsage()) - cpuSeconds(windowStart) : null
  return { cpuSeconds: cpuSeconds(c), cpuWindowSeconds: run, peakRss }
}

// --- clients: the CAP API (ours / @sap/cds) or a raw JS client ------------------------------
async function capClient() {
  const cds = require('@sap/cds')
  const m = await cds.connect.to('messaging') // configured through CDS_CONFIG by run.js
  if (spec.impl === 'ours-batched') return batchedClient(m)
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

/**
 * `ours-batched`: the emits of one tick (the producer's lanes) go out in one `srv.emitMany`; the
 * consumer's handler is an `srv.onBatch` handler.
 */
function batchedClient(m) {
  let queued = []
  const flush = () => {
    const batch = queued
    queued = []
    m.emitMany(batch.map(q => q.msg)).then(results => {
      for (let i = 0; i < batch.length; i++) {
        if (results[i].status === 'fulfilled') batch[i].resolve()
        else batch[i].reject(results[i].reason)
      }
    })
  }
  return {
    emit: (topic, data) =>
      new Promise((resolve, reject) => {
        if (queued.push({ msg: { event: topic, data }, resolve, reject }) === 1) queueMicrotask(flush)
      }),
    on: (topic, fn) =>
      m.onBatch(topic, msgs => {
        for (const msg of msgs) fn(msg.data)
      }),
    listen: async () => {
      await Promise.race([m.startListening(), sleep(50)])
    },
    close: () => m.disconnect()
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

/** Emits started so far (--soak --slow counts the backlog as emitted − received). */
let emitted = spec.prefilled ? spec.n : 0

async function produce(client, topic) {
  const template = payload(0)
  let next = 0
  let failed = 0
  startWindow()
  const t0 = now()
  const lane = async () => {
    while (next < spec.n) {
      const i = next++
      emitted = next
      try {
        await client.emit(topic, { ...template, i, t: now() })
      } catch {
        failed++
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(spec.inflight, spec.n) }, lane))
  const t1 = now()
  if (role === 'produce') endWindow()
  return { t0, t1, failed }
}

function consumer(client, topic) {
  const seen = new Uint8Array(spec.n)
  const lat = []
  let received = 0
  let dup = 0
  let last = 0
  let first = 0
  const soak = spec.soak ? soakSampler(() => received) : null
  // --soak --slow: one message at a time, each taking spec.slowMs (the handler's promise settles
  // then), so a backlog builds up wherever the transport keeps it.
  let gate = Promise.resolve()
  const slow = spec.slowMs > 0
  client.on(topic, data => {
    const t = now()
    if (soak && received === Math.floor(spec.n / 10)) soak.mark10()
    if (!first) first = t
    last = t
    if (seen[data.i]) dup++
    else if (++received === spec.n) endWindow()
    seen[data.i] = 1
    if (!spec.soak || received % 100 === 0) lat.push(t - data.t)
    if (slow) return (gate = gate.then(() => sleep(spec.slowMs)))
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
  return { done, stats: () => ({ received, dup, first, last, lat, ...(soak ? soak.end() : {}) }) }
}

/**
 * --soak: memory at the start, when 10 % of the messages were received, at the end, and a sample
 * (RSS, V8 heap used/total, external, array buffers) every spec.sampleMs with the count received then.
 */
function soakSampler(received) {
  const t0 = now()
  const mem = () => {
    const m = process.memoryUsage()
    return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers }
  }
  const samples = []
  const sample = () => samples.push({ t: Math.round(now() - t0), emitted, received: received(), ...mem() })
  const timer = setInterval(sample, spec.sampleMs || 1000)
  const start = mem()
  let at10 = null
  let smaps10 = null
  // BENCH_HEAP_SNAPSHOTS=<dir>: V8 heap snapshots at 10 % and at the end, to diff (diagnosis only).
  const snap = name => process.env.BENCH_HEAP_SNAPSHOTS && require('node:v8').writeHeapSnapshot(require('node:path').join(process.env.BENCH_HEAP_SNAPSHOTS, `${spec.driver}-${name}.heapsnapshot`))
  return {
    mark10: () => {
      at10 = mem()
      smaps10 = smaps()
      snap('10')
    },
    end: () => {
      clearInterval(timer)
      sample()
      const end = mem()
      snap('end')
      return { rssStart: start.rss, rss10: at10?.rss || 0, rssEnd: end.rss, memStart: start, mem10: at10, memEnd: end, smaps10, smapsEnd: smaps(), samples }
    }
  }
}

/**
 * Resident memory by kind of mapping (Linux): `brk` = glibc's main arena ([heap]), `anon` = other
 * anonymous mappings (V8's heap, glibc's thread arenas, thread stacks), `file` = mapped files.
 */
function smaps() {
  let text
  try {
    text = require('node:fs').readFileSync('/proc/self/smaps', 'utf8')
  } catch {
    return null
  }
  const out = { brk: 0, anon: 0, file: 0, anonMappings: 0 }
  let kind = 'anon'
  for (const line of text.split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line)
    if (head) {
      const name = head[2]
      kind = name === '[heap]' ? 'brk' : !name || name.startsWith('[anon') ? 'anon' : name.startsWith('[') ? 'anon' : 'file'
      if (kind === 'anon') out.anonMappings++
      continue
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line)
    if (rss) out[kind] += Number(rss[1]) * 1024
  }
  return out
}

const pickSoak = s => ({ smaps10: s.smaps10, smapsEnd: s.smapsEnd, rssStart: s.rssStart, rss10: s.rss10, rssEnd: s.rssEnd, memStart: s.memStart, mem10: s.mem10, memEnd: s.memEnd, samples: s.samples })

function summarize(lat) {
  if (!lat.length) return { p50: null, p99: null }
  const s = Float64Array.from(lat).sort()
  const q = p => s[Math.min(s.length - 1, Math.floor(p * s.length))]
  return { p50: q(0.5), p99: q(0.99) }
}

async function main() {
  const client = spec.impl.startsWith('raw') ? await rawClient() : await capClient()
  const topic = spec.topic
  let out = {}
  if (role === 'both') {
    const c = consumer(client, topic)
    await client.listen()
    await sleep(100)
    // BENCH_MARKERS=1 (bench/threads.js): the window it reads /proc/<pid>/task over
    if (process.env.BENCH_MARKERS) console.log('WINDOW-START')
    const p = await produce(client, topic)
    await c.done()
    if (process.env.BENCH_MARKERS) console.log('WINDOW-END')
    const s = c.stats()
    out = { ...p, received: s.received, dup: s.dup, last: s.last, ...summarize(s.lat) }
    if (spec.soak) Object.assign(out, pickSoak(s))
  } else if (role === 'consume') {
    const c = consumer(client, topic)
    await client.listen()
    await sleep(100)
    startWindow()
    console.log('READY')
    await c.done()
    const s = c.stats()
    out = { received: s.received, dup: s.dup, first: s.first, last: s.last, ...summarize(s.lat) }
    if (spec.soak) Object.assign(out, pickSoak(s))
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
