#!/usr/bin/env node
'use strict'
// `node bench/threads.js <kind> [impl] [inflight] [n] [reps]`: runs one benchmark participant with
// producer and consumer in one process (bench/worker.js `both`, 1 KiB, @sap/cds 9 on this Node) and
// prints, per thread group of that process, the CPU and the context switches per message between
// "subscribed" and "n-th message received", read from /proc/<pid>/task; for AMQP and Redis also the
// shared broker's CPU per message (beam.smp, the redis-server on 6379) over the same window.
// impl: ours (default), floor, raw, raw-durable, cds, … as in bench/drivers.js. The README's
// per-thread figures ("Where the time goes") come from this script. Linux only.
const { spawn, execSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const drivers = require('./drivers')
const { APP, FLOOR, cdsConfig } = require('./participant')

const [kind = 'redis', impl = 'ours', inflight = '100', n = '10000', reps = '1'] = process.argv.slice(2)
const d = drivers[kind]
if (!d || (impl !== 'floor' && !d[impl])) throw new Error(`unknown kind or participant '${kind}' '${impl}'`)
const BROKER = { amqp: 'pgrep -o beam.smp', redis: "pgrep -o -f 'redis-server .*:6379'" }

/** utime + stime in ms of a `/proc/…/stat` file (clock ticks of 10 ms: Linux's USER_HZ of 100). */
function cpuMs(file) {
  const stat = fs.readFileSync(file, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) * 10
}

/** CPU in ms and the context switches of every thread of `pid`, by thread id. */
function threads(pid) {
  const out = {}
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const ms = cpuMs(`/proc/${pid}/task/${tid}/stat`)
      const status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8')
      const cs = Number(/\nvoluntary_ctxt_switches:\s+(\d+)/.exec(status)[1]) + Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(status)[1])
      const name = Number(tid) === pid ? 'main (JS)' : fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim().replace(/[-\d]+$/, '').replace(/^node$/, 'V8 and libuv helpers')
      out[tid] = { name, ms, cs }
    } catch {
      // the thread ended meanwhile
    }
  }
  return out
}

async function once() {
  const topic = `threads.${kind}.${process.pid}.${Date.now()}`
  const ctx = d.prepare ? await d.prepare({ topic }) : {}
  const config = impl === 'floor' ? FLOOR : d[impl](ctx)
  const spec = { driver: kind, impl, size: 1024, inflight: Number(inflight), n: Number(n), topic, config, timeoutMs: 120000, idleMs: 3000 }
  let broker = null
  try {
    broker = BROKER[kind] ? Number(execSync(BROKER[kind], { encoding: 'utf8' }).trim()) || null : null
  } catch {
    broker = null
  }
  const child = spawn(process.execPath, [path.join(__dirname, 'worker.js'), 'both', JSON.stringify(spec)], {
    cwd: APP,
    env: { ...process.env, BENCH_MARKERS: '1', CDS_CONFIG: cdsConfig(spec), NODE_ENV: 'production' },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  let out = ''
  let start = null
  let end = null
  let brokerStart = 0
  let brokerEnd = 0
  child.stdout.on('data', chunk => {
    out += chunk
    if (!start && out.includes('WINDOW-START')) {
      start = threads(child.pid)
      if (broker) brokerStart = cpuMs(`/proc/${broker}/stat`)
    }
    if (!end && out.includes('WINDOW-END')) {
      end = threads(child.pid)
      if (broker) brokerEnd = cpuMs(`/proc/${broker}/stat`)
    }
  })
  const code = await new Promise(resolve => child.on('exit', resolve))
  if (d.cleanup) d.cleanup(ctx)
  const line = out.split('\n').filter(l => l.startsWith('{')).pop()
  if (code !== 0 || !line || !start || !end) throw new Error(`the participant failed (exit ${code})`)
  const r = JSON.parse(line)
  const groups = {}
  for (const [tid, t] of Object.entries(end)) {
    const s = start[tid] || { ms: 0, cs: 0 }
    const g = (groups[t.name] ??= { ms: 0, cs: 0, threads: 0 })
    g.ms += t.ms - s.ms
    g.cs += t.cs - s.cs
    g.threads++
  }
  const N = Number(n)
  console.log(`${kind} ${impl}, ${inflight} in flight, ${N} messages: ${Math.round((N / (r.last - r.t0)) * 1000)} msgs/s e2e, p50 ${r.p50?.toFixed(3)} ms`)
  for (const [name, g] of Object.entries(groups).sort((a, b) => b[1].ms - a[1].ms)) {
    console.log(`  ${name.padEnd(22)} ${String(g.threads).padStart(2)} thread(s) ${((g.ms * 1000) / N).toFixed(1).padStart(7)} µs/msg ${(g.cs / N).toFixed(2).padStart(6)} switches/msg`)
  }
  if (broker) console.log(`  ${`broker (pid ${broker})`.padEnd(33)}${(((brokerEnd - brokerStart) * 1000) / N).toFixed(1).padStart(7)} µs/msg`)
}

;(async () => {
  for (let i = 0; i < Number(reps); i++) await once()
  if (d.finish) await d.finish()
})().catch(e => {
  console.error(e.message)
  process.exitCode = 1
})
