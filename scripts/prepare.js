#!/usr/bin/env node
// Runs on `npm install` in a clone of this repository (and as `npm run build`): builds the native
// addon into native/ (cds-native-messaging.<platform>.node plus the generated loader native.js and
// native.d.ts). On Linux x64 the release build goes through zig against glibc 2.17, so the same
// binary serves the tests and the published platform package npm/linux-x64-gnu. `prepare` is not in
// the published manifest (scripts/pack-manifest.js). (The CAP test apps under __test__/apps resolve
// the package by name through the devDependency `file:.`.)
'use strict'
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { GLIBC_TARGET, isLinuxX64Gnu, zigEnv } = require('./zig')

const root = path.resolve(__dirname, '..')
if (!fs.existsSync(path.join(root, 'Cargo.toml'))) process.exit(0) // not a clone

const napi = path.join(root, 'node_modules', '.bin', 'napi')
if (!fs.existsSync(napi)) {
  console.error('prepare: @napi-rs/cli is missing; run `npm install` in the repository root')
  process.exit(1)
}
const out = ['--output-dir', 'native', '--js', 'native.js', '--dts', 'native.d.ts']
let args = ['build', '--platform', ...out]
let env = process.env
if (!process.env.CDS_NATIVE_DEBUG) {
  args = ['build', '--platform', '--release', ...out]
  if (isLinuxX64Gnu()) {
    const zig = zigEnv(line => console.log(`prepare: ${line}`))
    if (zig.env) {
      args.push('--cross-compile', '--target', GLIBC_TARGET)
      env = zig.env
    } else {
      console.warn(`prepare: ${zig.error}; building against this machine's glibc instead (the release check will refuse that binary)`)
    }
  }
}
console.log(`prepare: napi ${args.join(' ')}`)
const r = spawnSync(napi, args, { cwd: root, stdio: 'inherit', env })
if (r.status !== 0) {
  console.error('prepare: building the native addon failed (see above); Rust 1.88+ and gcc are required')
  process.exit(r.status || 1)
}
