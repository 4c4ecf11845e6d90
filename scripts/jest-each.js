#!/usr/bin/env node
'use strict'
// Runs every jest suite in its own process, one after the other. Suites of one jest process share
// the native addon and @sap/cds's process-wide state (cds.on listeners, global.cds); a CAP app
// booted by one suite must not see what an earlier suite left behind.
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.resolve(__dirname, '..')
const jest = path.join(root, 'node_modules', 'jest', 'bin', 'jest.js')
const filter = process.argv.slice(2)
const suites = fs
  .readdirSync(path.join(root, '__test__'))
  .filter(f => f.endsWith('.test.js'))
  .filter(f => !filter.length || filter.some(x => f.includes(x)))
  .sort()
const failed = []
const t0 = Date.now()
for (const f of suites) {
  const r = spawnSync(process.execPath, [jest, '--runInBand', '--silent', path.join('__test__', f)], { cwd: root, stdio: 'inherit' })
  if (r.status !== 0) failed.push(f)
}
console.log(`\njest: ${suites.length - failed.length}/${suites.length} suites passed in ${((Date.now() - t0) / 1000).toFixed(0)} s`)
if (failed.length) {
  console.log(`failed: ${failed.join(', ')}`)
  process.exit(1)
}
