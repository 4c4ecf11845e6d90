#!/usr/bin/env node
'use strict'
// `npm run bench [-- --kinds local,file --size 1024,16384 --procs 1,2 --inflight 100,1 --reps 3 --n 10000]`
// `npm run bench -- --soak [--kinds file] [--n 1000000]`
//
// For every transport: our kind, @sap/cds's own kind and (where there is one) the raw JS client on the
// same backend, repetitions interleaved (A B C A B C …). Every participant runs in a fresh child
// process (bench/worker.js) so CPU time and peak RSS are its own. Reports medians and per-repetition
// ratios (ours / theirs) to bench/results/latest.md and bench/results/ratios.svg.
const { spawn, execSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const drivers = require('./drivers')

const args = parseArgs(process.argv.slice(2))
const RESULTS = path.join(__dirname, 'results')
const APP = path.join(__dirname, 'app')

function parseArgs(argv) {
  const a = { kinds: null, size: [1024, 16384], procs: [1, 2], inflight: [100, 1], reps: 3, n: 10000, soak: false, out: null }
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '')
    const v = argv[i + 1]
    const list = () => (i++, v.split(',').map(s => s.trim()).filter(Boolean))
    if (k === 'kinds') a.kinds = list()
    else if (k === 'size') a.size = list().map(Number)
    else if (k === 'procs') a.procs = list().map(Number)
    else if (k === 'inflight') a.inflight = list().map(Number)
    else if (k === 'reps') (a.reps = Number(v)), i++
    else if (k === 'n') (a.n = Number(v)), i++
    else if (k === 'out') (a.out = v), i++
    else if (k === 'soak') a.soak = true
    else throw new Error(`unknown option --${k}`)
  }
  if (!a.kinds) a.kinds = a.soak ? ['file'] : Object.keys(drivers)
  for (const k of a.kinds) if (!drivers[k]) throw new Error(`unknown kind '${k}' (known: ${Object.keys(drivers).join(', ')})`)
  return a
}

function runWorker(role, spec, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'worker.js'), role, JSON.stringify(spec)], {
      cwd: APP,
      env: { ...process.env, ...env, CDS_CONFIG: JSON.stringify({ requires: { messaging: spec.config } }), NODE_ENV: 'production' },
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
    child.result = new Promise(res => {
      child.on('exit', code => {
        clearTimeout(timer)
        const line = out.trim().split('\n').filter(l => l.startsWith('{')).pop()
        if (code !== 0 || !line) return reject(new Error(`${spec.impl} ${role} failed (exit ${code}):\n${err.slice(-2000)}`))
        res(JSON.parse(line))
      })
    })
    resolve(child)
  })
}

async function measure(driver, impl, { size, procs, inflight }) {
  const d = drivers[driver]
  const n = impl === 'cds' && d.cdsN ? d.cdsN({ n: args.n, inflight }) : args.n
  const ctx = d.prepare ? d.prepare() : {}
  const spec = {
    driver,
    impl,
    size,
    inflight,
    n,
    topic: `bench.${driver}.${process.pid}.${Date.now()}`,
    config: d[impl](ctx),
    timeoutMs: 60000,
    idleMs: impl === 'cds' ? 8000 : 4000
  }
  try {
    if (procs === 1) {
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
  const cpu = procs.reduce((a, r) => a + r.cpuSeconds, 0)
  return {
    n,
    publish: n / ((prod.t1 - prod.t0) / 1000),
    e2e: cons.received / ((cons.last - prod.t0) / 1000),
    p50: cons.p50,
    p99: cons.p99,
    cpuPer10k: (cpu / Math.max(1, cons.received)) * 10000,
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
  v['cds-native-messaging'] = require('../package.json').version
  tryRun('rustc', 'rustc --version')
  for (const d of Object.values(drivers)) if (d.versions) Object.assign(v, d.versions())
  return v
}

async function bench() {
  const rows = []
  const started = Date.now()
  for (const driver of args.kinds) {
    const d = drivers[driver]
    const impls = ['ours', 'cds', 'raw'].filter(i => typeof d[i] === 'function')
    for (const size of args.size)
      for (const procs of args.procs) {
        if (d.procs && !d.procs.includes(procs)) continue
        for (const inflight of args.inflight) {
          const cell = { driver, size, procs, inflight, reps: Object.fromEntries(impls.map(i => [i, []])) }
          for (let rep = 0; rep < args.reps; rep++)
            for (const impl of impls) {
              process.stderr.write(`bench ${driver} ${impl} size=${size} procs=${procs} inflight=${inflight} rep=${rep + 1}/${args.reps} … `)
              try {
                const m = await measure(driver, impl, { size, procs, inflight })
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
  const report = render(rows, Date.now() - started)
  fs.mkdirSync(RESULTS, { recursive: true })
  const out = args.out || path.join(RESULTS, 'latest.md')
  fs.writeFileSync(out, report.md)
  fs.writeFileSync(path.join(path.dirname(out), 'ratios.svg'), report.svg)
  fs.writeFileSync(path.join(path.dirname(out), 'latest.json'), JSON.stringify({ versions: versions(), args, rows }, null, 2))
  console.log(report.md)
  console.error(`wrote ${out} and ratios.svg`)
}

const fmt = x => (Number.isFinite(x) ? (x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(x >= 10 ? 1 : 2)) : '–')
const mb = x => (Number.isFinite(x) ? `${(x / 1048576).toFixed(0)} MB` : '–')

function ratioMedian(cell, other, key) {
  const ours = cell.reps.ours || []
  const theirs = cell.reps[other] || []
  const r = []
  for (let i = 0; i < Math.min(ours.length, theirs.length); i++) {
    const a = ours[i][key]
    const b = theirs[i][key]
    if (Number.isFinite(a) && Number.isFinite(b) && b > 0) r.push(a / b)
  }
  return median(r)
}

function render(rows, ms) {
  const v = versions()
  const lines = []
  lines.push('# Benchmark results', '')
  lines.push(`Command: \`npm run bench -- ${process.argv.slice(2).join(' ')}\` — ${new Date().toISOString()}, ${(ms / 1000).toFixed(0)} s in all.`, '')
  lines.push('Medians over interleaved repetitions (A B C A B C …); every participant in a fresh process.')
  lines.push('Ratios are computed per repetition pair, then the median is taken. `e2e` = messages received per second from the first emit to the last receive. CPU = user + system seconds of all participating processes per 10,000 messages received. Lost = emitted and acknowledged, never received; failed = emits that rejected.', '')
  lines.push('| kind | impl | size | procs | in flight | n | publish msgs/s | e2e msgs/s | p50 ms | p99 ms | CPU s/10k | peak RSS | lost | failed | dup |')
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  for (const c of rows)
    for (const [impl, reps] of Object.entries(c.reps)) {
      const ok = reps.filter(r => !r.error)
      const med = k => median(ok.map(r => r[k]))
      const sum = k => ok.reduce((a, r) => a + r[k], 0)
      const label = drivers[c.driver].label[impl]
      if (!ok.length) {
        lines.push(`| ${c.driver} | ${label} | ${c.size} | ${c.procs} | ${c.inflight} | – | failed: ${reps[0]?.error || 'n/a'} |||||||||`)
        continue
      }
      lines.push(
        `| ${c.driver} | ${label} | ${c.size} | ${c.procs} | ${c.inflight} | ${ok[0].n} | ${fmt(med('publish'))} | ${fmt(med('e2e'))} | ${fmt(med('p50'))} | ${fmt(med('p99'))} | ${fmt(med('cpuPer10k'))} | ${mb(med('peakRss'))} | ${sum('lost')} | ${sum('failed')} | ${sum('dup')} |`
      )
    }
  lines.push('', '## Ratios (ours / other, median of per-repetition ratios)', '')
  lines.push('| kind | size | procs | in flight | e2e vs @sap/cds | e2e vs raw client | publish vs @sap/cds | CPU/msg vs @sap/cds |')
  lines.push('|---|---|---|---|---|---|---|---|')
  const bars = []
  for (const c of rows) {
    const eCds = ratioMedian(c, 'cds', 'e2e')
    const eRaw = ratioMedian(c, 'raw', 'e2e')
    const pCds = ratioMedian(c, 'cds', 'publish')
    const cpuCds = ratioMedian(c, 'cds', 'cpuPer10k')
    const x = r => (Number.isFinite(r) ? `${fmt(r)}×` : '–')
    lines.push(`| ${c.driver} | ${c.size} | ${c.procs} | ${c.inflight} | ${x(eCds)} | ${x(eRaw)} | ${x(pCds)} | ${x(cpuCds)} |`)
    bars.push({ label: `${c.driver} ${c.size / 1024}KiB p${c.procs} f${c.inflight}`, cds: eCds, raw: eRaw })
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

async function soak() {
  const driver = args.kinds[0]
  const d = drivers[driver]
  const ctx = d.prepare ? d.prepare() : {}
  const n = args.n === 10000 ? 1000000 : args.n
  const spec = { driver, impl: 'ours', size: args.size[0], inflight: args.inflight[0], n, topic: `soak.${Date.now()}`, config: d.ours(ctx), timeoutMs: 3600000, idleMs: 10000 }
  console.error(`soak: ${n} messages through ${d.label.ours} (${spec.size} B, ${spec.inflight} in flight, one process)`)
  const w = await runWorker('both', { ...spec, soak: true })
  const r = await w.result
  if (d.cleanup) d.cleanup(ctx)
  const md = [
    '# Soak', '',
    `${n} messages through ${d.label.ours}, ${spec.size} B, ${spec.inflight} in flight: received ${r.received}, dup ${r.dup}, lost ${n - r.received - r.failed}.`,
    `RSS at start ${mb(r.rssStart)}, after 10 % ${mb(r.rss10)}, at end ${mb(r.rssEnd)}, peak ${mb(r.peakRss)} (end/10 % = ${(r.rssEnd / r.rss10).toFixed(2)}).`,
    `e2e ${fmt(r.received / ((r.last - r.t0) / 1000))} msgs/s, CPU ${r.cpuSeconds.toFixed(1)} s.`, ''
  ].join('\n')
  fs.mkdirSync(RESULTS, { recursive: true })
  fs.writeFileSync(path.join(RESULTS, 'soak.md'), md)
  console.log(md)
}

;(args.soak ? soak() : bench()).catch(e => {
  console.error(e)
  process.exit(1)
})
