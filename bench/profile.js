#!/usr/bin/env node
'use strict'
// `node bench/profile.js <kind> [n]`: runs one benchmark participant (ours, producer and consumer in
// one process, 1 KiB, 100 in flight) under `--cpu-prof` and prints where its main thread spends CPU,
// grouped by package (self time), plus the share of time the thread was idle (waiting on I/O or on
// the native engine's threads).
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const drivers = require('./drivers')

const [kind = 'redis', n = '10000'] = process.argv.slice(2)
const d = drivers[kind]
if (!d) throw new Error(`unknown kind '${kind}'`)
main().catch(e => {
  console.error(e)
  process.exitCode = 1
})

async function main() {
  const ctx = d.prepare ? await d.prepare({ topic: `prof.${Date.now()}` }) : {}
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cds-native-prof-'))
  const spec = { driver: kind, impl: 'ours', size: 1024, inflight: 100, n: Number(n), topic: `prof.${Date.now()}`, config: d.ours(ctx), timeoutMs: 60000, idleMs: 3000 }
  const r = spawnSync(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, path.join(__dirname, 'worker.js'), 'both', JSON.stringify(spec)], {
    cwd: path.join(__dirname, 'app'),
    env: { ...process.env, CDS_CONFIG: JSON.stringify({ requires: { messaging: spec.config } }), NODE_ENV: 'production' },
    encoding: 'utf8'
  })
  if (d.cleanup) d.cleanup(ctx)
  if (d.finish) await d.finish()
  if (r.status !== 0) throw new Error(r.stderr)
  const result = JSON.parse(r.stdout.trim().split('\n').filter(l => l.startsWith('{')).pop())
  const file = fs.readdirSync(dir).find(f => f.endsWith('.cpuprofile'))
  const prof = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'))
  const byId = new Map(prof.nodes.map(n => [n.id, n]))
  const self = new Map()
  const dt = prof.timeDeltas
  for (let i = 0; i < prof.samples.length; i++) {
    const node = byId.get(prof.samples[i])
    self.set(node, (self.get(node) || 0) + (dt[i] || 0))
  }
  const groups = new Map()
  let total = 0
  for (const [node, us] of self) {
    const url = node.callFrame.url || ''
    const fn = node.callFrame.functionName
    let g
    if (fn === '(idle)') g = '(idle: waiting for I/O or the engine)'
    else if (fn === '(garbage collector)') g = '(garbage collector)'
    else if (fn === '(program)') g = '(native code: V8, napi calls into Rust)'
    else if (url.includes('@sap/cds')) g = '@sap/cds'
    else if (url.includes('/srv/') || url.includes('/lib/')) g = 'cds-native-messaging JS'
    else if (url.includes('node_modules/')) g = url.replace(/.*node_modules\/((@[^/]+\/)?[^/]+).*/, '$1')
    else if (url.startsWith('node:')) g = 'node core'
    else g = url ? path.relative(path.join(__dirname, '..'), url.replace('file://', '')) : fn || '(anonymous)'
    groups.set(g, (groups.get(g) || 0) + us)
    total += us
  }
  console.log(`${kind}: ${result.received} messages, ${(result.received / ((result.last - result.t0) / 1000)).toFixed(0)} msgs/s e2e, CPU ${result.cpuSeconds.toFixed(2)} s (main thread + engine threads)`)
  console.log('main-thread time by group (self time):')
  for (const [g, us] of [...groups].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`  ${((100 * us) / total).toFixed(1).padStart(5)} %  ${g}`)
  // The hottest functions outside @sap/cds (self time), to see what our own JS and the boundary cost.
  const fns = new Map()
  for (const [node, us] of self) {
    const f = node.callFrame
    if ((f.url || '').includes('@sap/cds') || f.functionName === '(idle)') continue
    const k = `${f.functionName || '(anonymous)'} ${(f.url || '').replace(/.*node_modules\//, '').replace(path.join(__dirname, '..') + '/', '')}:${f.lineNumber + 1}`
    fns.set(k, (fns.get(k) || 0) + us)
  }
  console.log('hottest functions outside @sap/cds (self time, share of main-thread time):')
  for (const [k, us] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`  ${((100 * us) / total).toFixed(1).padStart(5)} %  ${k}`)
  fs.rmSync(dir, { recursive: true, force: true })
}
