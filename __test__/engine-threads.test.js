'use strict'
// CDS_NATIVE_THREADS sets the number of the engine's worker threads (README: Engine threads). A child
// process per case: the runtime is made when the addon loads, once per process.
const { spawnSync } = require('node:child_process')
const path = require('node:path')

const ROOT = path.join(__dirname, '..')
const SCRIPT = `
const fs = require('node:fs')
const cds = require('@sap/cds')
;(async () => {
  const srv = await cds.connect.to({ kind: 'native-local-messaging' })
  const seen = []
  srv.on('t', msg => seen.push(msg.data))
  await srv.emit('t', { a: 1 })
  for (let i = 0; i < 100 && !seen.length; i++) await new Promise(r => setTimeout(r, 20))
  const names = fs.readdirSync('/proc/self/task').map(t => fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim())
  console.log(JSON.stringify({ seen, engine: names.filter(n => n.startsWith('cds-native-mes')).length }))
  await srv.disconnect()
  process.exit(0)
})()
`

function run(env) {
  const r = spawnSync(process.execPath, ['-e', SCRIPT], { cwd: path.join(__dirname, 'apps', 'reviews'), env: { ...process.env, NODE_PATH: path.join(ROOT, 'node_modules'), ...env, CDS_CONFIG: '{}' }, encoding: 'utf8', timeout: 30000 })
  const line = r.stdout.trim().split('\n').filter(l => l.startsWith('{')).pop()
  if (!line) throw new Error(`the child failed (exit ${r.status}):\n${r.stderr}`)
  return JSON.parse(line)
}

describe('CDS_NATIVE_THREADS', () => {
  test.each([1, 3])('%i: that many engine worker threads, and messages flow', n => {
    const r = run({ CDS_NATIVE_THREADS: String(n) })
    expect(r.seen).toEqual([{ a: 1 }])
    expect(r.engine).toBe(n)
  })

  test('unset or not a number: napi-rs default runtime, messages flow', () => {
    // '' stands for unset: it overrides a value this process may have inherited
    for (const v of ['', 'many']) {
      const r = run({ CDS_NATIVE_THREADS: v })
      expect(r.seen).toEqual([{ a: 1 }])
      expect(r.engine).toBe(0)
    }
  })
})
