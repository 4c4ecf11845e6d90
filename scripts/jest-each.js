#!/usr/bin/env node
'use strict'
// Runs every jest suite in its own process, one after the other. Suites of one jest process share
// the native addon and @sap/cds's process-wide state (cds.on listeners, global.cds); a CAP app
// booted by one suite must not see what an earlier suite left behind.
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.resolve(__dirname, '..')
const jest = path.join(root, 'node_modules', 'jest', 'bin', 'jest.js')
// Arguments select suites whose path contains one of them; `!x` leaves out those containing x.
const args = process.argv.slice(2)
const filter = args.filter(a => !a.startsWith('!'))
const except = args.filter(a => a.startsWith('!')).map(a => a.slice(1))
// __test__/unit/: tests without a broker (lib/, option mapping, error codes); they run first.
// __test__/conformance/: one scenario table, one file per kind; they run last.
const list = dir => fs.readdirSync(path.join(root, '__test__', dir)).map(f => (dir ? `${dir}/${f}` : f))
const suites = [...list('unit').sort(), ...list('').sort(), ...list('conformance').sort()]
  .filter(f => f.endsWith('.test.js'))
  .filter(f => !filter.length || filter.some(x => f.includes(x)))
  .filter(f => !except.some(x => f.includes(x)))
// A suite gets SUITE_MINUTES (default 10) of wall-clock time. Each suite runs in its own process
// group; when it ends, whatever it left running (a peer process, a broker it started) is killed
// with the group, so a hung suite fails loudly instead of holding CI until its overall limit.
const limitMs = Number(process.env.SUITE_MINUTES || 10) * 60000
let current = null
/** Kills the process group of `child` (the suite and whatever it started). */
const killGroup = child => {
  try {
    process.kill(-child.pid, 'SIGKILL')
  } catch {
    // the group is already gone
  }
}
const runSuite = f =>
  new Promise(resolve => {
    const child = spawn(process.execPath, [jest, '--runInBand', '--silent', '--forceExit', path.join('__test__', f)], {
      cwd: root,
      stdio: 'inherit',
      detached: true
    })
    current = child
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      console.error(`\njest-each: ${f} still running after ${limitMs / 60000} min: killed (SUITE_MINUTES raises the limit)`)
      killGroup(child)
    }, limitMs)
    child.on('exit', code => {
      clearTimeout(timer)
      killGroup(child)
      resolve(timedOut ? 124 : code)
    })
  })
const stopAll = () => {
  if (current) killGroup(current)
  process.exit(130)
}
process.on('SIGINT', stopAll)
process.on('SIGTERM', stopAll)

;(async () => {
  const failed = []
  const t0 = Date.now()
  for (const f of suites) {
    const status = await runSuite(f)
    if (status !== 0) failed.push(f)
  }
  console.log(`\njest: ${suites.length - failed.length}/${suites.length} suites passed in ${((Date.now() - t0) / 1000).toFixed(0)} s`)
  if (failed.length) {
    console.log(`failed: ${failed.join(', ')}`)
    process.exit(1)
  }
})()
